#include "loader/model_files.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "util/error.h"
#include "util/json.h"

namespace embedkit {

namespace fs = std::filesystem;

static std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

static std::string home() { return env_or("HOME", "/root"); }

std::string default_model_store() {
  return env_or("EMBEDKIT_HOME", home() + "/.cache/embedkit") + "/models";
}

static std::string hf_hub_cache() {
  if (const char* v = std::getenv("HF_HUB_CACHE"); v && *v) return v;
  return env_or("HF_HOME", home() + "/.cache/huggingface") + "/hub";
}

std::string resolve_model_dir(const std::string& model) {
  if (model.empty()) throw Error("--model: empty model name");
  std::vector<std::string> tried;
  if (fs::is_directory(model)) return model;
  tried.push_back(model + " (local directory)");
  if (model.find("..") == std::string::npos && model[0] != '/') {
    fs::path store = fs::path(default_model_store()) / model;
    if (fs::is_directory(store)) return store.string();
    tried.push_back(store.string());
    std::string repo = model;
    for (auto& c : repo)
      if (c == '/') c = '-';
    // HF cache folder name: models--org--name ('/' → '--').
    std::string folder = "models--";
    for (char c : model) folder += c == '/' ? std::string("--") : std::string(1, c);
    fs::path base = fs::path(hf_hub_cache()) / folder;
    tried.push_back(base.string() + "/snapshots/*");
    if (fs::is_directory(base / "snapshots")) {
      std::string ref;
      std::ifstream rf(base / "refs" / "main");
      if (rf && std::getline(rf, ref) && fs::is_directory(base / "snapshots" / ref))
        return (base / "snapshots" / ref).string();
      fs::path newest;
      fs::file_time_type newest_t{};
      for (auto& e : fs::directory_iterator(base / "snapshots")) {
        if (!e.is_directory()) continue;
        auto t = e.last_write_time();
        if (newest.empty() || t > newest_t) { newest = e.path(); newest_t = t; }
      }
      if (!newest.empty()) return newest.string();
    }
  }
  std::string msg = "model \"" + model + "\" not found; looked in:";
  for (auto& t : tried) msg += "\n  " + t;
  msg += "\n(EmbedKit never downloads at run time: put the model files in one of these places)";
  throw Error(msg);
}

std::string PoolingConfig::describe() const {
  std::string s;
  auto add = [&](bool on, const char* n) {
    if (on) s += (s.empty() ? "" : "+") + std::string(n);
  };
  add(cls, "cls");
  add(max, "max");
  add(mean, "mean");
  add(mean_sqrt_len, "mean_sqrt_len_tokens");
  add(weighted_mean, "weightedmean");
  add(last_token, "lasttoken");
  return s;
}

static TransformerConfig read_config(const std::string& dir) {
  std::string path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(path)) throw Error(path + ": missing (every Hugging Face model has a config.json)");
  auto doc = json::load_file(path);
  const auto& r = doc.root;
  TransformerConfig c;
  c.model_type = json::opt_string(r, "model_type", path).value_or("");
  if (auto a = json::field(r, "architectures"); a && a->is_array()) {
    for (auto x : json::array_of(*a))
      if (x.is_string()) { c.architecture = std::string(x.get_string().value_unsafe()); break; }
  }
  const bool bert_like = c.model_type == "bert" || c.model_type == "roberta" || c.model_type == "xlm-roberta";
  if (!bert_like && !c.is_decoder())
    throw Error(path + ": unsupported architecture (model_type \"" + c.model_type + "\", architectures \"" +
                c.architecture + "\"); supported: bert, roberta, xlm-roberta, qwen3");
  c.vocab_size = json::get_int(r, "vocab_size", path);
  c.hidden_size = json::get_int(r, "hidden_size", path);
  c.num_layers = json::get_int(r, "num_hidden_layers", path);
  c.num_heads = json::get_int(r, "num_attention_heads", path);
  c.intermediate_size = json::get_int(r, "intermediate_size", path);
  c.max_position_embeddings = json::get_int(r, "max_position_embeddings", path);
  if (c.is_decoder()) {
    // Qwen3 (transformers' Qwen3Config): every shape the model needs must be in the file.
    c.type_vocab_size = 0;
    c.pad_token_id = 0;
    c.num_kv_heads = json::get_int(r, "num_key_value_heads", path);
    c.head_dim = json::get_int(r, "head_dim", path);
    c.hidden_act = json::get_string(r, "hidden_act", path);
    if (c.hidden_act != "silu") throw Error(path + ": \"hidden_act\" must be \"silu\" for qwen3, found \"" + c.hidden_act + "\"");
    auto theta = json::opt_double(r, "rope_theta", path);
    if (!theta) throw Error(path + ": missing number \"rope_theta\" (RoPE base)");
    c.rope_theta = *theta;
    auto eps = json::opt_double(r, "rms_norm_eps", path);
    if (!eps) throw Error(path + ": missing number \"rms_norm_eps\"");
    c.rms_norm_eps = *eps;
    c.attention_bias = json::opt_bool(r, "attention_bias", path).value_or(false);
    if (auto rs = json::field(r, "rope_scaling"); rs && !rs->is_null())
      throw Error(path + ": \"rope_scaling\" is set; EmbedKit supports plain RoPE only (rope_scaling null)");
    if (json::opt_bool(r, "use_sliding_window", path).value_or(false))
      throw Error(path + ": \"use_sliding_window\": true is not supported (full causal attention only)");
    if (!(c.rope_theta > 0)) throw Error(path + ": \"rope_theta\" must be positive");
    if (!(c.rms_norm_eps > 0)) throw Error(path + ": \"rms_norm_eps\" must be positive");
    auto in_range = [&](int64_t v, const char* name) {
      if (v <= 0 || v > (1 << 20)) throw Error(path + ": \"" + std::string(name) + "\" must be in 1..2^20, found " + std::to_string(v));
    };
    in_range(c.num_kv_heads, "num_key_value_heads");
    in_range(c.head_dim, "head_dim");
    if (c.head_dim % 2 != 0) throw Error(path + ": \"head_dim\" must be even (RoPE rotates pairs), found " + std::to_string(c.head_dim));
    if (c.num_heads % c.num_kv_heads != 0)
      throw Error(path + ": num_attention_heads " + std::to_string(c.num_heads) + " is not a multiple of num_key_value_heads " +
                  std::to_string(c.num_kv_heads));
  } else {
    c.type_vocab_size = json::opt_int(r, "type_vocab_size", path).value_or(2);
    c.pad_token_id = json::opt_int(r, "pad_token_id", path).value_or(0);
    c.layer_norm_eps = json::opt_double(r, "layer_norm_eps", path).value_or(1e-12);
    c.hidden_act = json::opt_string(r, "hidden_act", path).value_or("gelu");
    if (c.model_type != "bert") c.position_offset = c.pad_token_id + 1;
  }
  auto positive = [&](int64_t v, const char* name) {
    if (v <= 0 || v > (1 << 20)) throw Error(path + ": \"" + std::string(name) + "\" must be in 1..2^20, found " + std::to_string(v));
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden_size");
  positive(c.num_layers, "num_hidden_layers");
  positive(c.num_heads, "num_attention_heads");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.max_position_embeddings, "max_position_embeddings");
  if (!c.is_decoder() && c.hidden_size % c.num_heads != 0)
    throw Error(path + ": hidden_size " + std::to_string(c.hidden_size) + " is not a multiple of num_attention_heads " +
                std::to_string(c.num_heads));
  if (c.position_offset >= c.max_position_embeddings) throw Error(path + ": pad_token_id leaves no positions");
  return c;
}

static PoolingConfig read_pooling(const std::string& dir) {
  std::string path = (fs::path(dir) / "config.json").string();
  auto doc = json::load_file(path);
  const auto& r = doc.root;
  PoolingConfig p;
  p.mean = false;
  // Newer files may carry a single "pooling_mode" string.
  if (auto mode = json::opt_string(r, "pooling_mode", path)) {
    const std::string& m = *mode;
    if (m == "cls") p.cls = true;
    else if (m == "mean") p.mean = true;
    else if (m == "max") p.max = true;
    else if (m == "mean_sqrt_len_tokens") p.mean_sqrt_len = true;
    else if (m == "weightedmean") p.weighted_mean = true;
    else if (m == "lasttoken") p.last_token = true;
    else throw Error(path + ": unknown pooling_mode \"" + m + "\"");
  }
  p.cls = json::opt_bool(r, "pooling_mode_cls_token", path).value_or(p.cls);
  p.mean = json::opt_bool(r, "pooling_mode_mean_tokens", path).value_or(p.mean);
  p.max = json::opt_bool(r, "pooling_mode_max_tokens", path).value_or(p.max);
  p.mean_sqrt_len = json::opt_bool(r, "pooling_mode_mean_sqrt_len_tokens", path).value_or(p.mean_sqrt_len);
  p.weighted_mean = json::opt_bool(r, "pooling_mode_weightedmean_tokens", path).value_or(p.weighted_mean);
  p.last_token = json::opt_bool(r, "pooling_mode_lasttoken", path).value_or(p.last_token);
  p.include_prompt = json::opt_bool(r, "include_prompt", path).value_or(true);
  if (p.describe().empty()) throw Error(path + ": no pooling mode is enabled");
  return p;
}

static DenseConfig read_dense(const std::string& dir) {
  std::string path = (fs::path(dir) / "config.json").string();
  auto doc = json::load_file(path);
  DenseConfig d;
  d.in_features = json::get_int(doc.root, "in_features", path);
  d.out_features = json::get_int(doc.root, "out_features", path);
  d.bias = json::opt_bool(doc.root, "bias", path).value_or(true);
  d.activation = json::opt_string(doc.root, "activation_function", path).value_or("torch.nn.modules.activation.Tanh");
  d.dir = dir;
  if (d.in_features <= 0 || d.out_features <= 0 || d.in_features > (1 << 20) || d.out_features > (1 << 20))
    throw Error(path + ": in_features/out_features must be positive");
  return d;
}

static bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

ModelFiles read_model_files(const std::string& dir) {
  ModelFiles m;
  m.dir = dir;
  m.transformer_dir = dir;
  fs::path modules = fs::path(dir) / "modules.json";
  bool have_pooling = false;
  if (fs::exists(modules)) {
    auto doc = json::load_file(modules.string());
    if (!doc.root.is_array()) throw Error(modules.string() + ": must be a JSON array of modules");
    for (auto mod : json::array_of(doc.root)) {
      std::string type = json::get_string(mod, "type", modules.string());
      std::string sub = json::opt_string(mod, "path", modules.string()).value_or("");
      if (sub.find("..") != std::string::npos) throw Error(modules.string() + ": module path \"" + sub + "\" leaves the model");
      std::string mdir = (fs::path(dir) / sub).string();
      if (!sub.empty() && mdir.back() == '/') mdir.pop_back();
      m.module_types.push_back(type);
      if (ends_with(type, ".Transformer")) m.transformer_dir = sub.empty() ? dir : mdir;
      else if (ends_with(type, ".Pooling")) { m.pooling = read_pooling(mdir); have_pooling = true; }
      else if (ends_with(type, ".Dense")) m.dense.push_back(read_dense(mdir));
      else if (ends_with(type, ".Normalize")) m.normalize = true;
      else throw Error(modules.string() + ": unsupported sentence-transformers module \"" + type +
                       "\" (supported: Transformer, Pooling, Dense, Normalize)");
    }
  } else {
    m.module_types = {"(no modules.json: Transformer + mean Pooling, as sentence-transformers does)"};
  }
  if (!have_pooling) m.pooling = PoolingConfig{};  // mean
  m.config = read_config(m.transformer_dir);

  // max_seq_length: sentence_bert_config.json, else min(tokenizer model_max_length, positions).
  int64_t max_len = m.config.max_position_embeddings - m.config.position_offset;
  fs::path sb = fs::path(m.transformer_dir) / "sentence_bert_config.json";
  bool have_sb_len = false;
  if (fs::exists(sb)) {
    auto doc = json::load_file(sb.string());
    if (auto v = json::opt_int(doc.root, "max_seq_length", sb.string())) {
      if (*v <= 0) throw Error(sb.string() + ": max_seq_length must be positive");
      max_len = std::min<int64_t>(*v, max_len);
      have_sb_len = true;
    }
    m.do_lower_case = json::opt_bool(doc.root, "do_lower_case", sb.string()).value_or(false);
  }
  if (!have_sb_len) {
    fs::path tc = fs::path(m.transformer_dir) / "tokenizer_config.json";
    if (fs::exists(tc)) {
      auto doc = json::load_file(tc.string());
      auto v = json::field(doc.root, "model_max_length");
      if (v && v->is_int64() && v->get_int64().value_unsafe() > 0)
        max_len = std::min<int64_t>(max_len, v->get_int64().value_unsafe());
    }
  }
  m.max_seq_length = size_t(max_len);

  fs::path cst = fs::path(dir) / "config_sentence_transformers.json";
  if (fs::exists(cst)) {
    auto doc = json::load_file(cst.string());
    if (auto p = json::field(doc.root, "prompts"); p && p->is_object()) {
      for (auto [k, v] : json::object_of(*p)) {
        if (!v.is_string()) throw Error(cst.string() + ": prompts[\"" + std::string(k) + "\"] must be a string");
        m.prompts[std::string(k)] = std::string(v.get_string().value_unsafe());
      }
    }
    m.default_prompt_name = json::opt_string(doc.root, "default_prompt_name", cst.string()).value_or("");
  }
  return m;
}

}  // namespace embedkit
