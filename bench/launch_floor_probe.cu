// What a small batch's pass pays per step, without any work (docs/benchmarks.md, seventh session):
// the floor under a pass of N dependent kernels, against the same N steps as grid-wide barriers
// inside one persistent kernel (the alternative to many launches for small batches).
//
//   1. N empty kernels (132 CTAs × 256 threads each) captured into one CUDA graph, replayed
//   2. the same with programmatic dependent launch (each waits with griddepcontrol.wait)
//   3. one cooperative kernel (132 CTAs) that crosses N grid-wide barriers
//   4. the same, one CTA per SM doing a dependent 8 KB read-modify-write of global memory per step
//      (so each barrier also publishes data, as a layer's phases would)
//
// Build and run on the GPU machine:
//   nvcc -O3 -arch=sm_90 -o /tmp/launch_floor_probe bench/launch_floor_probe.cu && /tmp/launch_floor_probe
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace cg = cooperative_groups;

#define CHECK(x)                                                                            \
  do {                                                                                      \
    cudaError_t e_ = (x);                                                                   \
    if (e_ != cudaSuccess) {                                                                \
      std::fprintf(stderr, "%s failed: %s (line %d)\n", #x, cudaGetErrorString(e_), __LINE__); \
      std::exit(1);                                                                         \
    }                                                                                       \
  } while (0)

__global__ void empty_step(float* x) {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  if (threadIdx.x == 0 && blockIdx.x == 0 && x[0] == 12345.f) x[1] = 1.f;  // never true: keeps x live
}

__global__ void persistent(float* x, int steps, int touch) {
  cg::grid_group grid = cg::this_grid();
  for (int s = 0; s < steps; ++s) {
    if (touch) {  // 8 KB per CTA: read the neighbour's slice from the last step, write our own
      const int n = 2048, b = blockIdx.x, nb = (b + 1) % gridDim.x;
      for (int i = threadIdx.x; i < n; i += blockDim.x) x[size_t(b) * n + i] = x[size_t(nb) * n + i] * 0.5f + 1.f;
    }
    grid.sync();
  }
}

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 44, reps = 2000;
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  float* x;
  CHECK(cudaMalloc(&x, size_t(sms) * 2048 * sizeof(float)));
  CHECK(cudaMemset(x, 0, size_t(sms) * 2048 * sizeof(float)));
  cudaStream_t st;
  CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));

  auto time_graph = [&](bool pdl) {
    cudaGraph_t g;
    CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int s = 0; s < steps; ++s) {
      cudaLaunchConfig_t cfg{};
      cfg.gridDim = dim3(sms);
      cfg.blockDim = dim3(256);
      cfg.stream = st;
      cudaLaunchAttribute attr{};
      attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attr.val.programmaticStreamSerializationAllowed = 1;
      cfg.attrs = &attr;
      cfg.numAttrs = pdl ? 1 : 0;
      CHECK(cudaLaunchKernelEx(&cfg, empty_step, x));
    }
    CHECK(cudaStreamEndCapture(st, &g));
    cudaGraphExec_t ge;
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    for (int i = 0; i < 50; ++i) CHECK(cudaGraphLaunch(ge, st));
    CHECK(cudaEventRecord(e0, st));
    for (int i = 0; i < reps; ++i) CHECK(cudaGraphLaunch(ge, st));
    CHECK(cudaEventRecord(e1, st));
    CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    CHECK(cudaGraphExecDestroy(ge));
    CHECK(cudaGraphDestroy(g));
    return ms * 1000.f / reps;  // µs a graph
  };
  auto time_persistent = [&](int touch) {
    void* args[] = {&x, const_cast<int*>(&steps), &touch};
    for (int i = 0; i < 50; ++i)
      CHECK(cudaLaunchCooperativeKernel((void*)persistent, dim3(sms), dim3(256), args, 0, st));
    CHECK(cudaEventRecord(e0, st));
    for (int i = 0; i < reps; ++i)
      CHECK(cudaLaunchCooperativeKernel((void*)persistent, dim3(sms), dim3(256), args, 0, st));
    CHECK(cudaEventRecord(e1, st));
    CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    return ms * 1000.f / reps;
  };
  for (int round = 0; round < 2; ++round) {
    const float g = time_graph(false), gp = time_graph(true), p = time_persistent(0), pt = time_persistent(1);
    std::printf("%d steps, %d CTAs: graph of empty kernels %.1f us (%.2f a step), with PDL %.1f us (%.2f); "
                "persistent kernel, grid barriers %.1f us (%.2f), with 8 KB a CTA a step %.1f us (%.2f)\n",
                steps, sms, g, g / steps, gp, gp / steps, p, p / steps, pt, pt / steps);
  }
  return 0;
}
