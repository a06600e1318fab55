// EmbedKit public C++ API.
//
//   embedkit::EmbedderOptions opt;           // model = default all-MiniLM-L6-v2
//   auto emb = embedkit::Embedder::load(opt);
//   embedkit::Embeddings out = emb->embed({"first text", "second text"});
//   const float* v0 = out.row(0);            // out.dim floats, same as sentence-transformers
//
// Errors in user input (model files, texts, options) throw embedkit::Error with a message
// naming the file / tensor / field / text at fault.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace embedkit {

class Error;  // std::runtime_error subclass (src/util/error.h; catch std::runtime_error)

inline constexpr const char* kDefaultModel = "sentence-transformers/all-MiniLM-L6-v2";

struct EmbedderOptions {
  std::string model = kDefaultModel;  // directory, EmbedKit store name or HF hub id (resolved offline)
  std::string device = "cpu";         // cpu | cuda | auto (cuda when a GPU is usable)
  std::string dtype = "auto";         // auto (GPU: fp16, bf16 for Qwen3; CPU: fp32) | fp16 | bf16 | fp32
  int threads = 0;                    // 0 = all cores
  size_t batch_tokens = 0;            // token budget of one forward pass; 0 = auto (CPU 8192, GPU 65536)
  std::optional<std::string> prompt;       // text prepended to every input
  std::optional<std::string> prompt_name;  // key of config_sentence_transformers.json "prompts"
  int dimensions = 0;                 // Matryoshka: keep the first N dims (then re-normalize); 0 = all
  std::optional<bool> normalize;      // override the model's Normalize module
};

struct Embeddings {
  size_t count = 0, dim = 0;
  std::vector<float> data;  // [count, dim], row i = input i
  std::vector<uint32_t> token_counts;  // tokens per input after truncation, special tokens included
  const float* row(size_t i) const { return data.data() + i * dim; }
};

struct ModelInfo {
  std::string dir, architecture, model_type;
  int64_t hidden_size, num_layers, num_heads, vocab_size;
  size_t max_seq_length, dim;
  std::string pooling;
  bool normalize;
  std::vector<std::string> modules;
  std::string device;  // what actually runs: "cpu" or the GPU's name, with the dtype
  std::map<std::string, std::string> prompts;
  std::string default_prompt_name;
};

struct TokenizedText {
  std::vector<int32_t> ids;
  std::vector<std::string> tokens;
  std::vector<std::pair<uint32_t, uint32_t>> offsets;
};

// Where the time of the last embed() call went (seconds; device phases in milliseconds from
// CUDA events). Tokenization of chunk c+1 overlaps the model on chunk c, so tokenize_s can exceed
// tokenize_wait_s, the part the model actually waited for.
struct EmbedTimings {
  double total_s = 0, tokenize_s = 0, tokenize_wait_s = 0, encode_s = 0, postprocess_s = 0;
  double device_h2d_ms = 0, device_forward_ms = 0, device_pool_ms = 0, device_d2h_ms = 0;
  size_t tokens = 0, batches = 0;
  // For EmbedBench's phase breakdown (include/embedkit/profiling.h): the first chunk's
  // tokenization (always on the critical path), sort + pack time, the CPU forward and CPU pooling
  // (with Dense modules; on the GPU: Dense only) separately (host clock), and how many GPU batches
  // ran as one CUDA-graph replay (timed whole).
  // device_launch_s: host time of GPU calls their CUDA events do not cover (staging, submit,
  // synchronize).
  // queue_s: time in the batcher outside the model (assembly, hand-offs, finishing rows): from
  // the first chunk's submission to the last chunk's answer, less encode_s (the batches' shares of
  // the executor's wall time, which add up without double counting when batches are pipelined) and
  // the waits for tokenization.
  double tokenize_first_s = 0, pack_s = 0, queue_s = 0, cpu_forward_s = 0, cpu_pool_s = 0, device_launch_s = 0;
  size_t device_graph_batches = 0;
};

class Embedder {
 public:
  static std::unique_ptr<Embedder> load(const EmbedderOptions& options);
  virtual ~Embedder() = default;

  // Embeds all texts: tokenized, sorted by length, packed under the token budget, run, pooled and
  // post-processed; row i of the result belongs to texts[i]. `progress(done, total)` is called
  // after each batch.
  virtual Embeddings embed(const std::vector<std::string>& texts,
                           const std::function<void(size_t, size_t)>& progress = {}) = 0;
  // Tokenizes as embed() would (prompt, strip, truncation, special tokens).
  virtual TokenizedText tokenize(const std::string& text, bool truncate = true) const = 0;
  virtual ModelInfo info() const = 0;
  virtual EmbedTimings last_timings() const = 0;
};

// Post-processing kernels.
void l2_normalize_rows(float* x, size_t rows, size_t dim);  // CPU, in place; zero rows stay zero
// out[n, m] = cosine(a[i], b[j]) for row-major a[n, dim], b[m, dim]; device "cpu" or "cuda"
// (GPU: fp32 GEMM through cuBLASLt, normalization in a kernel).
void cosine_similarity(const float* a, size_t n, const float* b, size_t m, size_t dim, float* out,
                       const std::string& device = "cpu");

}  // namespace embedkit
