// Embedder: text → tokenize → sort by length → pack under a token budget → forward → pool →
// Dense → Normalize → Matryoshka truncation → rows back in input order.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>
#include <numeric>

#include "embedkit/embedkit.h"
#include "cuda/bert_cuda.h"
#include "loader/model_files.h"
#include "loader/safetensors.h"
#include "models/bert.h"
#include "models/model.h"
#include "ops/cpu_ops.h"
#include "pipeline/pooling.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/utf8.h"

namespace embedkit {

namespace fs = std::filesystem;

void l2_normalize_rows(float* x, size_t rows, size_t dim) {
  for (size_t r = 0; r < rows; ++r) {
    float* v = x + r * dim;
    double ss = 0;
    for (size_t i = 0; i < dim; ++i) ss += double(v[i]) * v[i];
    const float inv = 1.0f / std::max(float(std::sqrt(ss)), 1e-12f);  // torch F.normalize eps
    for (size_t i = 0; i < dim; ++i) v[i] *= inv;
  }
}

namespace {

struct DenseLayer {
  DenseConfig cfg;
  std::vector<float> w, b;
  cpu::Activation act;
};

class CpuEmbedder final : public Embedder {
 public:
  explicit CpuEmbedder(const EmbedderOptions& opt) : opt_(opt) {
    if (opt.device != "cpu" && opt.device != "auto" && opt.device != "cuda")
      throw Error("--device \"" + opt.device + "\": expected cpu, cuda or auto");
    if (opt.dtype != "auto" && opt.dtype != "fp16" && opt.dtype != "bf16" && opt.dtype != "fp32")
      throw Error("--dtype \"" + opt.dtype + "\": expected auto, fp16, bf16 or fp32");
    std::string why;
    bool gpu = opt.device == "cuda" || (opt.device == "auto" && opt.dtype != "fp32" && cuda::available(&why));
    if (opt.device == "cuda" && !cuda::available(&why)) throw Error("--device cuda: " + why);
    if (gpu && opt.dtype == "fp32")
      throw Error("--dtype fp32 is not available on the GPU yet; use fp16 or bf16 there, or --device cpu");
    if (!gpu && (opt.dtype == "fp16" || opt.dtype == "bf16"))
      throw Error("--dtype " + opt.dtype + " needs --device cuda; the CPU path computes in fp32");
    if (opt.threads < 0) throw Error("--threads must be >= 0");
    if (opt.threads > 0) {
      omp_set_num_threads(opt.threads);
      openblas_set_num_threads(opt.threads);
    }
    std::string dir = resolve_model_dir(opt.model);
    files_ = read_model_files(dir);
    fs::path tok = fs::path(files_.transformer_dir) / "tokenizer.json";
    if (!fs::exists(tok))
      throw Error(tok.string() + ": missing; EmbedKit needs the fast-tokenizer file tokenizer.json "
                                 "(save it with transformers' AutoTokenizer.save_pretrained)");
    tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::from_file(tok.string()));
    if (int64_t(tokenizer_->vocab_size()) > files_.config.vocab_size)
      throw Error(tok.string() + ": tokenizer has ids up to " + std::to_string(tokenizer_->vocab_size() - 1) +
                  " but config.json vocab_size is " + std::to_string(files_.config.vocab_size));
    weights_ = std::make_unique<WeightStore>(WeightStore::open_dir(files_.transformer_dir));
    if (gpu && files_.config.is_decoder()) {  // the CUDA backend runs BERT-family encoders only, so far
      if (opt.device == "cuda")
        throw Error("--device cuda: " + files_.config.model_type + " models run on the CPU only in this version; use --device cpu");
      if (opt.dtype == "fp16" || opt.dtype == "bf16")
        throw Error("--dtype " + opt.dtype + ": " + files_.config.model_type + " models run on the CPU (fp32) only in this version");
      gpu = false;
    }
    model_ = load_text_model(files_.config, *weights_);
    device_ = "cpu fp32";
    // Default budgets measured: CPU throughput is flat from 4k to 16k tokens (docs/benchmarks.md);
    // on the H100 64k tokens per pass is fastest (bench/gpu_vs_pytorch.py budget sweep).
    if (opt_.batch_tokens == 0) opt_.batch_tokens = gpu ? 65536 : 8192;
    if (gpu) {
      auto p = opt.dtype == "bf16" ? cuda::Precision::BF16 : cuda::Precision::F16;
      gpu_ = std::make_unique<cuda::BertEncoder>(files_.config, dynamic_cast<BertModel&>(*model_).weights(), p,
                                                 opt_.batch_tokens);
      device_ = gpu_->device_name() + (p == cuda::Precision::BF16 ? " bf16" : " fp16");
    }

    int64_t dim = pooled_dim(files_.config.hidden_size, files_.pooling);
    for (auto& dc : files_.dense) {
      if (dc.in_features != dim)
        throw Error(dc.dir + "/config.json: in_features " + std::to_string(dc.in_features) +
                    " does not match the previous module's output " + std::to_string(dim));
      DenseLayer dl;
      dl.cfg = dc;
      auto ws = WeightStore::open_dir(dc.dir);
      dl.w = ws.load_f32("linear.weight", {dc.out_features, dc.in_features});
      if (dc.bias) dl.b = ws.load_f32("linear.bias", {dc.out_features});
      if (dc.activation.ends_with("Tanh")) dl.act = cpu::Activation::Tanh;
      else if (dc.activation.ends_with("Identity")) dl.act = cpu::Activation::None;
      else if (dc.activation.ends_with("ReLU")) dl.act = cpu::Activation::Relu;
      else throw Error(dc.dir + "/config.json: unsupported activation_function \"" + dc.activation + "\"");
      dense_.push_back(std::move(dl));
      dim = dc.out_features;
    }
    full_dim_ = size_t(dim);
    out_dim_ = full_dim_;
    if (opt.dimensions < 0 || size_t(opt.dimensions) > full_dim_)
      throw Error("--dimensions " + std::to_string(opt.dimensions) + ": must be between 1 and the model's " +
                  std::to_string(full_dim_));
    if (opt.dimensions > 0) out_dim_ = size_t(opt.dimensions);
    normalize_ = opt.normalize.value_or(files_.normalize);

    if (opt.prompt && opt.prompt_name) throw Error("give either --prompt or --prompt-name, not both");
    if (opt.prompt) prompt_ = *opt.prompt;
    else {
      std::string name = opt.prompt_name.value_or(files_.default_prompt_name);
      if (!name.empty()) {
        auto it = files_.prompts.find(name);
        if (it == files_.prompts.end()) {
          std::string known;
          for (auto& [k, v] : files_.prompts) known += (known.empty() ? "" : ", ") + k;
          throw Error("--prompt-name \"" + name + "\": the model defines no such prompt (known: " +
                      (known.empty() ? "none" : known) + ")");
        }
        prompt_ = it->second;
      }
    }
    if (!prompt_.empty() && utf8::first_invalid(prompt_) != std::string::npos)
      throw Error("prompt: invalid UTF-8 at byte offset " + std::to_string(utf8::first_invalid(prompt_)));
    if (!files_.pooling.include_prompt && !prompt_.empty()) {
      // ST: prompt_length = len(tokenize([prompt]).input_ids) - 1 (the trailing [SEP] dropped).
      prompt_tokens_ = int32_t(encode_text(prompt_).size()) - 1;
    }
  }

  Encoding encode_text(const std::string& text) const {
    // Texts go to the tokenizer unchanged, as in sentence-transformers 6 (tools/requirements-reference.txt);
    // sentence-transformers <= 5 stripped them, which only BPE tokenizers can tell apart (leading spaces
    // are tokens there; BERT normalizers drop them).
    std::string_view s = text;
    if (files_.do_lower_case) {
      std::string low;
      size_t i = 0;
      std::vector<int32_t> buf;
      while (i < s.size()) {
        int32_t cp = utf8::decode(s, i);
        if (cp < 0) break;
        buf.clear();
        unicode::lowercase(cp, buf);
        for (int32_t c : buf) utf8::append(low, c);
      }
      return tokenizer_->encode(low, true, files_.max_seq_length);
    }
    return tokenizer_->encode(s, true, files_.max_seq_length);
  }

  TokenizedText tokenize(const std::string& text, bool truncate) const override {
    std::string full = prompt_ + text;
    Encoding e = truncate ? encode_text(full) : tokenizer_->encode(full, true, 0);
    TokenizedText t;
    t.ids = e.ids;
    t.offsets = e.offsets;
    for (int32_t id : e.ids) t.tokens.push_back(tokenizer_->id_to_token(id));
    return t;
  }

  // Tokenizes texts[begin, end) in parallel into enc[begin, end); reports the first failure by index.
  void tokenize_range(const std::vector<std::string>& texts, size_t begin, size_t end, std::vector<Encoding>& enc) const {
    std::string first_error;
    size_t first_error_index = end;
    std::mutex mu;
#pragma omp parallel for schedule(dynamic, 16)
    for (size_t i = begin; i < end; ++i) {
      try {
        enc[i] = encode_text(prompt_.empty() ? texts[i] : prompt_ + texts[i]);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu);
        if (i < first_error_index) {
          first_error_index = i;
          first_error = e.what();
        }
      }
    }
    if (first_error_index < end) {
      std::string msg = first_error;
      if (!prompt_.empty() && msg.find("byte offset") != std::string::npos) msg += " (offsets count the prompt)";
      throw Error("input " + std::to_string(first_error_index) + ": " + msg);
    }
    // tokenizer.json's post-processor decides the type ids and how many specials are added: check
    // them against config.json here (the model only EK_CHECKs them).
    const int64_t max_tokens = files_.config.max_position_embeddings - files_.config.position_offset;
    for (size_t i = begin; i < end; ++i) {
      for (int32_t id : enc[i].ids)
        if (id < 0 || id >= files_.config.vocab_size)
          throw Error("input " + std::to_string(i) + ": token id " + std::to_string(id) + " outside the model's vocabulary");
      if (int64_t(enc[i].size()) > max_tokens)
        throw Error("input " + std::to_string(i) + ": " + std::to_string(enc[i].size()) + " tokens after truncation, more than the model's " +
                    std::to_string(max_tokens) + " positions (tokenizer.json's post_processor adds too many special tokens)");
      if (files_.config.type_vocab_size > 0)
        for (int32_t t : enc[i].type_ids)
          if (t < 0 || t >= files_.config.type_vocab_size)
            throw Error("input " + std::to_string(i) + ": token type id " + std::to_string(t) +
                        " outside config.json's type_vocab_size " + std::to_string(files_.config.type_vocab_size) +
                        " (check the type_id values of tokenizer.json's post_processor)");
    }
  }

  Embeddings embed(const std::vector<std::string>& texts, const std::function<void(size_t, size_t)>& progress) override {
    using Clock = std::chrono::steady_clock;
    auto secs = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
    const auto t_start = Clock::now();
    timings_ = EmbedTimings{};
    const size_t n = texts.size();
    Embeddings out;
    out.count = n;
    out.dim = out_dim_;
    out.data.assign(n * out_dim_, 0.f);
    out.token_counts.assign(n, 0);
    if (n == 0) return out;

    // Work goes in chunks: while the model runs chunk c, chunk c+1 is tokenized on the other
    // cores, so the device does not wait for the CPU. Within a chunk, texts run longest first
    // so each batch holds similar lengths and the token budget is well used.
    const size_t chunk = gpu_ ? kGpuChunkTexts : n;
    std::vector<Encoding> enc(n);
    auto t0 = Clock::now();
    tokenize_range(texts, 0, std::min(chunk, n), enc);
    timings_.tokenize_s += secs(t0, Clock::now());

    PackedBatch batch;
    std::vector<float> hidden, pooled, tmp;
    std::vector<int32_t> skip;
    std::vector<size_t> order;
    size_t done = 0;
    for (size_t c0 = 0; c0 < n; c0 += chunk) {
      const size_t c1 = std::min(n, c0 + chunk);
      std::future<double> next;
      if (c1 < n)
        next = std::async(std::launch::async, [&, c1] {
          auto a = Clock::now();
          tokenize_range(texts, c1, std::min(n, c1 + chunk), enc);
          return secs(a, Clock::now());
        });
      order.resize(c1 - c0);
      std::iota(order.begin(), order.end(), c0);
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return enc[a].size() > enc[b].size(); });
      for (size_t i = c0; i < c1; ++i) out.token_counts[i] = uint32_t(enc[i].size());

      for (size_t start = 0; start < order.size();) {
        // Fill a batch under the token budget (at least one sequence).
        size_t end = start, tokens = 0;
        while (end < order.size() && (end == start || tokens + enc[order[end]].size() <= opt_.batch_tokens))
          tokens += enc[order[end++]].size();
        batch.ids.clear();
        batch.type_ids.clear();
        batch.positions.clear();
        batch.cu_seqlens.assign(1, 0);
        skip.clear();
        for (size_t k = start; k < end; ++k) {
          const Encoding& e = enc[order[k]];
          batch.ids.insert(batch.ids.end(), e.ids.begin(), e.ids.end());
          batch.type_ids.insert(batch.type_ids.end(), e.type_ids.begin(), e.type_ids.end());
          for (size_t p = 0; p < e.size(); ++p) batch.positions.push_back(int32_t(p));
          batch.cu_seqlens.push_back(int32_t(batch.ids.size()));
          skip.push_back(prompt_tokens_);
        }
        if (prompt_tokens_ == 0) skip.clear();
        // Forward and pool (on the GPU: normalized there too when nothing follows), then Dense,
        // normalize, truncate on the host.
        const auto te = Clock::now();
        const int64_t S = int64_t(end - start);
        int64_t dim = pooled_dim(files_.config.hidden_size, files_.pooling);
        pooled.resize(size_t(S * dim));
        const bool normalize_on_device = gpu_ && normalize_ && dense_.empty() && out_dim_ == full_dim_;
        if (gpu_) {
          gpu_->encode(batch, files_.pooling, skip, normalize_on_device, pooled.data());
          const auto& pt = gpu_->last_times();
          timings_.device_h2d_ms += pt.h2d;
          timings_.device_forward_ms += pt.forward;
          timings_.device_pool_ms += pt.pool;
          timings_.device_d2h_ms += pt.d2h;
        } else {
          model_->forward(batch, hidden);
          pool(hidden.data(), files_.config.hidden_size, batch.cu_seqlens, files_.pooling, skip, pooled.data());
        }
        const auto tp = Clock::now();
        timings_.encode_s += secs(te, tp);
        for (auto& dl : dense_) {
          tmp.resize(size_t(S * dl.cfg.out_features));
          cpu::linear(pooled.data(), S, dim, dl.w.data(), dl.b.empty() ? nullptr : dl.b.data(), dl.cfg.out_features,
                      tmp.data(), dl.act);
          pooled.swap(tmp);
          dim = dl.cfg.out_features;
        }
        for (int64_t s = 0; s < S; ++s) {
          float* dst = out.data.data() + order[start + size_t(s)] * out_dim_;
          std::copy(pooled.data() + s * dim, pooled.data() + s * dim + int64_t(out_dim_), dst);
          if (normalize_ && !normalize_on_device) l2_normalize_rows(dst, 1, out_dim_);
        }
        timings_.postprocess_s += secs(tp, Clock::now());
        timings_.tokens += tokens;
        timings_.batches += 1;
        done += end - start;
        if (progress) progress(done, n);
        start = end;
      }
      if (next.valid()) {
        const auto tw = Clock::now();
        timings_.tokenize_s += next.get();  // rethrows a tokenization error
        timings_.tokenize_wait_s += secs(tw, Clock::now());
      }
    }
    timings_.total_s = secs(t_start, Clock::now());
    return out;
  }

  EmbedTimings last_timings() const override { return timings_; }

  ModelInfo info() const override {
    ModelInfo i;
    i.dir = files_.dir;
    i.architecture = files_.config.architecture;
    i.model_type = files_.config.model_type;
    i.hidden_size = files_.config.hidden_size;
    i.num_layers = files_.config.num_layers;
    i.num_heads = files_.config.num_heads;
    i.vocab_size = files_.config.vocab_size;
    i.max_seq_length = files_.max_seq_length;
    i.dim = out_dim_;
    i.pooling = files_.pooling.describe();
    i.normalize = normalize_;
    i.modules = files_.module_types;
    i.device = device_;
    i.prompts = files_.prompts;
    i.default_prompt_name = files_.default_prompt_name;
    return i;
  }

 private:
  EmbedderOptions opt_;
  ModelFiles files_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<WeightStore> weights_;
  std::unique_ptr<TextModel> model_;
  std::unique_ptr<cuda::BertEncoder> gpu_;
  std::string device_;
  std::vector<DenseLayer> dense_;
  size_t full_dim_ = 0, out_dim_ = 0;
  bool normalize_ = false;
  std::string prompt_;
  int32_t prompt_tokens_ = 0;
  EmbedTimings timings_;
  static constexpr size_t kGpuChunkTexts = 16384;
};

}  // namespace

std::unique_ptr<Embedder> Embedder::load(const EmbedderOptions& options) {
  return std::make_unique<CpuEmbedder>(options);
}

}  // namespace embedkit
