// CUDA backend for BERT-family encoders: fp16/bf16 weights and activations, fp32 accumulation,
// padding-free packed batches end to end. Plain C++ header: no CUDA types leak out, so the rest
// of the engine compiles without nvcc.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loader/model_files.h"
#include "models/bert.h"

namespace embedkit::cuda {

// True when this build has CUDA and a usable GPU; otherwise *why says what is missing.
bool available(std::string* why);

enum class Precision { F16, BF16 };

// Device time of the phases of the last encode() call, from CUDA events (milliseconds).
struct PhaseTimes {
  float h2d = 0, forward = 0, pool = 0, d2h = 0;
};

class BertEncoder {
 public:
  BertEncoder(const TransformerConfig& cfg, const BertWeights& w, Precision p, size_t max_batch_tokens);
  ~BertEncoder();
  BertEncoder(const BertEncoder&) = delete;
  BertEncoder& operator=(const BertEncoder&) = delete;

  // Runs the encoder on `batch`, pools each sequence on the device (skip[s] leading tokens
  // excluded when non-empty), L2-normalizes rows when `normalize`, and copies the pooled
  // [S, pooled_dim] fp32 rows to `out` (host) with one device-to-host copy.
  void encode(const PackedBatch& batch, const PoolingConfig& pooling, const std::vector<int32_t>& skip,
              bool normalize, float* out);
  const PhaseTimes& last_times() const;
  std::string device_name() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace embedkit::cuda
