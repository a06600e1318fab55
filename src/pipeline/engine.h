// EmbeddingEngine: one loaded model (files, tokenizer, CPU or GPU forward, Dense modules) with
// per-call options, shared by the offline Embedder (src/pipeline/embedder.cpp), the adaptive
// batcher (src/scheduler) and the HTTP server (src/server).
//
//   encode(text, prompt, truncate, side)  → Encoding           thread-safe (any worker thread)
//   run(seqs[n])                           → pooled [n, full_dim] after Dense, not normalized
//   finish(row, normalize, dims)           → what the user gets (normalize, Matryoshka truncation)
//
// run() is not thread-safe: one caller at a time (the batcher's executor or Embedder::embed).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "embedkit/embedkit.h"
#include "loader/model_files.h"
#include "models/bert.h"
#include "models/model.h"
#include "ops/cpu_ops.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace embedkit {

namespace cuda {
class BertEncoder;
class Qwen3Encoder;
}

enum class TruncateSide { Right, Left };

// A prompt as it reaches the model: its text and how many of its tokens pooling skips
// (sentence-transformers' include_prompt=false).
struct Prompt {
  std::string text;
  int32_t pool_skip = 0;
};

struct EngineRunTimes {  // of the last run() (device phases from CUDA events, ms)
  double h2d_ms = 0, forward_ms = 0, pool_ms = 0, d2h_ms = 0;
  // Host clock, for EmbedBench's phase split: packing the batch, the CPU forward, CPU pooling plus
  // Dense modules; graph_replay: the GPU pass was one CUDA-graph replay, timed whole (forward_ms).
  double pack_ms = 0, cpu_forward_ms = 0, cpu_pool_ms = 0;
  bool graph_replay = false;
};

class EmbeddingEngine {
 public:
  explicit EmbeddingEngine(const EmbedderOptions& opt);
  ~EmbeddingEngine();

  // Tokenizes as sentence-transformers does: prompt + text (not stripped, as in sentence-transformers 6), lower-casing when
  // the model asks, truncation at max_seq_length (side = which end loses tokens; special tokens
  // stay). With truncate=false a longer input throws InputTooLong. Validates ids against the
  // model (vocabulary, positions, type ids). Thread-safe.
  Encoding encode(std::string_view text, const Prompt& prompt, bool truncate = true,
                  TruncateSide side = TruncateSide::Right) const;
  // lower-case + tokenize, no length limit and no checks against the model (inspection).
  Encoding tokenize_unchecked(std::string_view text) const;
  // Pre-tokenized input (OpenAI token-id arrays): used as given, validated against the model.
  Encoding encode_ids(const std::vector<int64_t>& ids, bool truncate) const;

  // Forward + pool + Dense for n sequences in one pass (a batch: the caller keeps it under
  // batch_tokens(), or a single longer sequence). out: [n, full_dim()] fp32, not normalized.
  // pool_skip[k]: leading tokens of sequence k that pooling skips (may be null).
  void run(const Encoding* const* seqs, const int32_t* pool_skip, size_t n, float* out);
  const EngineRunTimes& last_run_times() const { return run_times_; }

  // full: one row of run()'s output; out: dims floats (dims ≤ full_dim), normalized if asked.
  void finish(const float* full, bool normalize, size_t dims, float* out) const;

  // The prompt a name or text stands for (options.prompt / prompt_name / the model's default).
  // `option` names the field in errors ("--prompt-name", "prompt_name").
  Prompt resolve_prompt(const std::optional<std::string>& text, const std::optional<std::string>& name,
                        const char* option = "prompt_name") const;
  const Prompt& default_prompt() const { return default_prompt_; }

  size_t full_dim() const { return full_dim_; }
  size_t default_dim() const { return out_dim_; }
  bool default_normalize() const { return normalize_; }
  size_t batch_tokens() const { return batch_tokens_; }
  size_t max_input_tokens() const { return files_.max_seq_length; }
  bool on_gpu() const { return gpu_ != nullptr || qwen3_gpu_ != nullptr; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ModelFiles& files() const { return files_; }
  ModelInfo info() const;

 private:
  struct DenseLayer {
    DenseConfig cfg;
    std::vector<float> w, b;
    cpu::Activation act;
  };
  Encoding tokenize_text(std::string_view s, size_t max_length) const;
  void validate(const Encoding& e) const;

  EmbedderOptions opt_;
  ModelFiles files_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<WeightStore> weights_;
  std::unique_ptr<TextModel> model_;
  std::unique_ptr<cuda::BertEncoder> gpu_;      // BERT-family encoders on the GPU
  std::unique_ptr<cuda::Qwen3Encoder> qwen3_gpu_;  // Qwen3 decoders on the GPU
  std::string device_;
  std::vector<DenseLayer> dense_;
  size_t full_dim_ = 0, out_dim_ = 0, batch_tokens_ = 0;
  bool normalize_ = false;
  Prompt default_prompt_;
  std::map<std::string, Prompt> named_prompts_;
  EngineRunTimes run_times_;
  // run() scratch, reused across calls (no allocation once warm).
  PackedBatch batch_;
  std::vector<float> hidden_, pooled_, tmp_;
  std::vector<int32_t> skip_;
};

// Thrown by encode() for an input longer than the model accepts when truncation is off.
class InputTooLong : public Error {
 public:
  InputTooLong(size_t tokens, size_t max)
      : Error("input has " + std::to_string(tokens) + " tokens, more than the model's maximum of " +
              std::to_string(max) + "; shorten it or enable truncation"),
        tokens_(tokens), max_(max) {}
  size_t tokens() const { return tokens_; }
  size_t max() const { return max_; }

 private:
  size_t tokens_, max_;
};

}  // namespace embedkit
