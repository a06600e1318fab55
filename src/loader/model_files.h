// Finding a model and reading what sentence-transformers would read from it.
//
// Resolution of --model (first hit wins):
//   1. an existing local directory;
//   2. EmbedKit's model store: $EMBEDKIT_HOME/models/<org>/<name> (default ~/.cache/embedkit);
//   3. the Hugging Face hub cache, offline: $HF_HUB_CACHE or $HF_HOME/hub (default
//      ~/.cache/huggingface/hub) / models--<org>--<name> / snapshots / <refs/main or newest>.
// Module layout (sentence-transformers modules.json): Transformer → Pooling → [Dense…] → [Normalize].
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace embedkit {

std::string default_model_store();  // $EMBEDKIT_HOME/models or ~/.cache/embedkit/models
// Returns the directory holding the model files, or throws Error listing the places searched.
std::string resolve_model_dir(const std::string& model);

struct PoolingConfig {
  bool cls = false, max = false, mean = true, mean_sqrt_len = false, weighted_mean = false, last_token = false;
  bool include_prompt = true;
  std::string describe() const;
};

struct DenseConfig {
  int64_t in_features = 0, out_features = 0;
  bool bias = true;
  std::string activation;  // e.g. "torch.nn.modules.activation.Tanh", "torch.nn.modules.linear.Identity"
  std::string dir;
};

struct TransformerConfig {  // config.json
  std::string model_type, architecture;
  int64_t vocab_size = 0, hidden_size = 0, num_layers = 0, num_heads = 0, intermediate_size = 0;
  int64_t max_position_embeddings = 0, type_vocab_size = 0, pad_token_id = 0;
  double layer_norm_eps = 1e-12;
  std::string hidden_act = "gelu";
  int64_t position_offset = 0;  // RoBERTa/XLM-R: positions start at pad_token_id + 1
  // Decoder models (model_type "qwen3"): grouped-query attention, RoPE, RMSNorm.
  int64_t num_kv_heads = 0, head_dim = 0;
  double rope_theta = 0, rms_norm_eps = 0;
  bool attention_bias = false;
  bool is_decoder() const { return model_type == "qwen3"; }
};

struct ModelFiles {
  std::string dir;           // resolved model directory
  std::string transformer_dir;
  TransformerConfig config;
  size_t max_seq_length = 0;  // tokens, special tokens included
  bool do_lower_case = false;
  PoolingConfig pooling;
  std::vector<DenseConfig> dense;
  bool normalize = false;
  std::map<std::string, std::string> prompts;
  std::string default_prompt_name;
  std::vector<std::string> module_types;  // for `info`
};

ModelFiles read_model_files(const std::string& dir);

}  // namespace embedkit
