// EmbeddingEngine: one loaded model (files, tokenizer, CPU or GPU forward, Dense modules) with
// per-call options, shared by the offline Embedder (src/pipeline/embedder.cpp), the adaptive
// batcher (src/scheduler) and the HTTP server (src/server).
//
//   encode(text, prompt, truncate, side)  → Encoding           thread-safe (any worker thread)
//   run(seqs[n])                           → pooled [n, full_dim] after Dense, not normalized
//   submit(seqs[n]) … collect(ticket)      → the same, pipelined: up to pipeline_depth() batches
//                                            in flight (GPU: batch i+1 queued before batch i is
//                                            collected; small ones run beside each other)
//   finish(row, normalize, dims)           → what the user gets (normalize, Matryoshka truncation)
//
// One thread may submit() while another collect()s (the batcher's submitter and collector);
// otherwise one caller at a time.
#pragma once
#include <atomic>
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
  // The batch was submitted while an earlier one was still in flight: its packing and submission
  // ran while the device worked on that batch (host time off the critical path).
  bool overlapped = false;
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
  // Pipelined form of run() (run = collect(submit)). submit() packs the batch and, on the GPU,
  // queues its whole pass (H2D, forward, pooling, D2H) without waiting; `seqs` are not needed
  // afterwards. collect() waits for that batch, applies the Dense modules and writes out [n,
  // full_dim()]; last_run_times() are then that batch's. At most pipeline_depth() batches may be
  // submitted and not collected (submit throws beyond kMaxInFlight); collect in any order.
  using RunTicket = uint64_t;
  static constexpr size_t kMaxInFlight = 4;
  RunTicket submit(const Encoding* const* seqs, const int32_t* pool_skip, size_t n);
  void collect(RunTicket ticket, float* out);
  // How many batches a caller should keep in flight: 2 for BERT-family models on the GPU (the host
  // side of one batch hides behind the device work of the other, and two small batches run at once
  // on the device); 1 on the CPU and for the Qwen3 GPU encoder, where the whole pass runs inside
  // collect() and there is nothing to overlap. EMBEDKIT_PIPELINE=n (1 to 4) overrides (measuring;
  // tests run the pipelined path on CPU-only machines with 2).
  size_t pipeline_depth() const { return pipeline_depth_; }
  // The smallest batch (tokens) worth submitting beside one in flight (BatcherOptions::overlap_min_tokens).
  size_t overlap_min_tokens() const;
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
  // One per batch in flight: the packed inputs (the CPU forward reads them in collect) and what
  // collect() reports. Reused across calls (no allocation once warm).
  struct RunSlot {
    // Set by submit() once the slot is filled, cleared by collect() once it is read out: one thread
    // may submit while another collects (the batcher's submitter and collector threads).
    std::atomic<bool> busy{false};
    RunTicket ticket = 0;
    uint64_t gpu_ticket = 0;  // cuda::BertEncoder::Ticket
    size_t n = 0;
    PackedBatch batch;
    std::vector<int32_t> skip;  // empty when no sequence skips tokens
    double pack_ms = 0;
    bool overlapped = false;
  };
  RunSlot slots_[kMaxInFlight];
  RunTicket next_ticket_ = 0;
  size_t pipeline_depth_ = 1;
  // collect() scratch.
  std::vector<float> hidden_, pooled_, tmp_;
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
