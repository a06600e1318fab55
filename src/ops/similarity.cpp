// Cosine similarity matrix: rows L2-normalized, then one GEMM  out[n, m] = â[n, dim] · b̂[m, dim]ᵀ.
#include <cblas.h>

#include <vector>

#include "cuda/bert_cuda.h"
#include "embedkit/embedkit.h"
#include "util/error.h"

namespace embedkit {

void cosine_similarity(const float* a, size_t n, const float* b, size_t m, size_t dim, float* out,
                       const std::string& device) {
  if (device == "cuda") return cuda::cosine_similarity(a, n, b, m, dim, out);
  if (device != "cpu") throw Error("similarity: --device \"" + device + "\": expected cpu or cuda");
  if (n == 0 || m == 0) return;
  std::vector<float> an(a, a + n * dim), bn(b, b + m * dim);
  l2_normalize_rows(an.data(), n, dim);
  l2_normalize_rows(bn.data(), m, dim);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(m), int(dim), 1.0f, an.data(), int(dim), bn.data(),
              int(dim), 0.0f, out, int(m));
}

}  // namespace embedkit
