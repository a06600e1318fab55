// Cosine similarity matrix on the GPU: normalize rows (kernel), then out = â · b̂ᵀ as one fp32
// cuBLASLt GEMM.
#include "cuda/bert_cuda.h"
#include "cuda/kernels.cuh"

namespace embedkit::cuda {

void cosine_similarity(const float* a, size_t n, const float* b, size_t m, size_t dim, float* out) {
  std::string why;
  if (!available(&why)) throw Error("--device cuda: " + why);
  if (n == 0 || m == 0) return;
  float *da = nullptr, *db = nullptr, *dout = nullptr;
  void* ws = nullptr;
  const size_t ws_bytes = 32u << 20;
  cublasLtHandle_t lt = nullptr;
  auto cleanup = [&] {
    cudaFree(da);
    cudaFree(db);
    cudaFree(dout);
    cudaFree(ws);
    if (lt) cublasLtDestroy(lt);
  };
  try {
    EK_CUDA(cudaMalloc(&da, n * dim * sizeof(float)));
    EK_CUDA(cudaMalloc(&db, m * dim * sizeof(float)));
    EK_CUDA(cudaMalloc(&dout, n * m * sizeof(float)));
    EK_CUDA(cudaMalloc(&ws, ws_bytes));
    EK_CUDA(cudaMemcpy(da, a, n * dim * sizeof(float), cudaMemcpyHostToDevice));
    EK_CUDA(cudaMemcpy(db, b, m * dim * sizeof(float), cudaMemcpyHostToDevice));
    l2_normalize_rows_kernel<<<unsigned((n + 7) / 8), 256>>>(da, int(n), int(dim));
    l2_normalize_rows_kernel<<<unsigned((m + 7) / 8), 256>>>(db, int(m), int(dim));
    EK_CUDA(cudaGetLastError());
    EK_CUBLAS(cublasLtCreate(&lt));
    // out[n, m] = â[n, dim] · b̂[m, dim]ᵀ: a "linear" with b̂ as the weight and no bias.
    lt_linear(lt, CUDA_R_32F, da, int(n), int(dim), db, nullptr, int(m), dout, CUBLASLT_EPILOGUE_DEFAULT, ws, ws_bytes,
              0, nullptr);
    EK_CUDA(cudaMemcpy(out, dout, n * m * sizeof(float), cudaMemcpyDeviceToHost));
  } catch (...) {
    cleanup();
    throw;
  }
  cleanup();
}

}  // namespace embedkit::cuda
