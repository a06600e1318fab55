// Stand-in for builds without the CUDA toolkit: the backend reports itself unavailable.
#include "cuda/bert_cuda.h"
#include "cuda/qwen3_cuda.h"
#include "util/error.h"

namespace embedkit::cuda {

bool available(std::string* why) {
  if (why) *why = "this build of EmbedKit has no CUDA backend (built without the CUDA toolkit)";
  return false;
}

size_t free_memory_bytes() { return 0; }

struct BertEncoder::Impl {};
BertEncoder::BertEncoder(const TransformerConfig&, const BertWeights&, Precision, size_t) {
  throw Error("CUDA backend not built");
}
BertEncoder::~BertEncoder() = default;
void BertEncoder::encode(const PackedBatch&, const PoolingConfig&, const std::vector<int32_t>&, bool, float*) {}
BertEncoder::Ticket BertEncoder::submit(const PackedBatch&, const PoolingConfig&, const std::vector<int32_t>&, bool) {
  throw Error("CUDA backend not built");
}
void BertEncoder::collect(Ticket, float*) { throw Error("CUDA backend not built"); }
int BertEncoder::in_flight() const { return 0; }
int BertEncoder::pipeline_depth() { return 1; }
size_t BertEncoder::overlap_min_tokens() const { return kOverlapMinTokens; }
int BertEncoder::layernorm_pairs() const { return 0; }
int layernorm_pairs_for(int) { return 0; }
const PhaseTimes& BertEncoder::last_times() const {
  static PhaseTimes t;
  return t;
}
std::string BertEncoder::device_name() const { return ""; }

struct Qwen3Encoder::Impl {};
Qwen3Encoder::Qwen3Encoder(const TransformerConfig&, const Qwen3Weights&, Precision, size_t) {
  throw Error("CUDA backend not built");
}
Qwen3Encoder::~Qwen3Encoder() = default;
void Qwen3Encoder::encode(const PackedBatch&, const PoolingConfig&, const std::vector<int32_t>&, bool, float*) {}
const PhaseTimes& Qwen3Encoder::last_times() const {
  static PhaseTimes t;
  return t;
}
std::string Qwen3Encoder::device_name() const { return ""; }
size_t Qwen3Encoder::workspace_bytes_per_token(const TransformerConfig&) { return 0; }

void cosine_similarity(const float*, size_t, const float*, size_t, size_t, float*) {
  std::string why;
  available(&why);
  throw Error("--device cuda: " + why);
}

}  // namespace embedkit::cuda
