#include "models/model.h"

#include "models/bert.h"
#include "models/qwen3.h"

namespace embedkit {

std::unique_ptr<TextModel> load_text_model(const TransformerConfig& cfg, const WeightStore& weights) {
  // read_model_files() has already rejected any other model_type with a message naming it.
  if (cfg.model_type == "qwen3") return std::make_unique<Qwen3Model>(cfg, weights);
  return std::make_unique<BertModel>(cfg, weights);
}

}  // namespace embedkit
