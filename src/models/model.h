// What the pipeline needs from an architecture: the last hidden state of every token of a packed
// batch. One implementation per architecture (bert.cpp, qwen3.cpp), chosen from config.json.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "loader/model_files.h"
#include "loader/safetensors.h"

namespace embedkit {

// A packed batch: S sequences laid end to end, no padding.
struct PackedBatch {
  std::vector<int32_t> ids;        // [T]
  std::vector<int32_t> type_ids;   // [T]
  std::vector<int32_t> positions;  // [T] position within its sequence
  std::vector<int32_t> cu_seqlens; // [S+1]
  int64_t tokens() const { return int64_t(ids.size()); }
  int64_t sequences() const { return int64_t(cu_seqlens.size()) - 1; }
};

class TextModel {
 public:
  virtual ~TextModel() = default;
  // hidden[T, d] ← last hidden state for every token of the batch.
  virtual void forward(const PackedBatch& batch, std::vector<float>& hidden) = 0;
  virtual int64_t hidden_size() const = 0;
};

// Dispatches on config.json's model_type: bert/roberta/xlm-roberta → BertModel, qwen3 → Qwen3Model.
std::unique_ptr<TextModel> load_text_model(const TransformerConfig& cfg, const WeightStore& weights);

}  // namespace embedkit
