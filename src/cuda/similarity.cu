// Cosine similarity matrix on the GPU: normalize rows (kernel), then out = â · b̂ᵀ as one fp32
// cuBLASLt GEMM (column-major view: outᵀ[m, n] = b̂[m, dim] · âᵀ).
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
    cublasLtMatmulDesc_t op;
    EK_CUBLAS(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    EK_CUBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    EK_CUBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    // Column-major: A = b̂ᵀ stored as [dim, m] (ld dim) transposed → [m, dim]; B = âᵀ [dim, n].
    cublasLtMatrixLayout_t la, lb, lc;
    EK_CUBLAS(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, dim, m, dim));
    EK_CUBLAS(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, dim, n, dim));
    EK_CUBLAS(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, m));
    const float one = 1.f, zero = 0.f;
    EK_CUBLAS(cublasLtMatmul(lt, op, &one, db, la, da, lb, &zero, dout, lc, dout, lc, nullptr, ws, ws_bytes, 0));
    EK_CUDA(cudaMemcpy(out, dout, n * m * sizeof(float), cudaMemcpyDeviceToHost));
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op);
  } catch (...) {
    cleanup();
    throw;
  }
  cleanup();
}

}  // namespace embedkit::cuda
