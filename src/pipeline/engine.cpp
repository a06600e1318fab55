// EmbeddingEngine: loading a model and the per-call steps shared by every front end (engine.h).
#include "pipeline/engine.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <mutex>

#include "cuda/bert_cuda.h"
#include "cuda/qwen3_cuda.h"
#include "models/qwen3.h"
#include "ops/blas_kernels.h"
#include "loader/safetensors.h"
#include "pipeline/pooling.h"
#include "tokenizer/unicode.h"
#include "util/utf8.h"

namespace embedkit {

namespace fs = std::filesystem;

namespace {

// Keeps the last `keep` non-special tokens (HF truncation_side="left": tokens are cut before the
// post-processor adds the special tokens, so the specials survive).
void truncate_left(Encoding& e, size_t max_length) {
  size_t specials = 0;
  for (uint8_t s : e.special) specials += s;
  if (e.size() <= max_length || max_length <= specials) return;
  size_t drop = e.size() - max_length;
  Encoding out;
  for (size_t i = 0; i < e.size(); ++i) {
    if (!e.special[i] && drop > 0) {
      --drop;
      continue;
    }
    out.ids.push_back(e.ids[i]);
    out.type_ids.push_back(e.type_ids[i]);
    out.offsets.push_back(e.offsets[i]);
    out.special.push_back(e.special[i]);
  }
  e = std::move(out);
}

}  // namespace

EmbeddingEngine::EmbeddingEngine(const EmbedderOptions& opt) : opt_(opt) {
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
  if (!gpu) {
    // Only the environment can fix this (OpenBLAS reads it at load); the embedkit command does so itself.
    static std::once_flag warned;
    std::call_once(warned, [] {
      if (const std::string core = openblas_core_override(); !core.empty())
        std::fprintf(stderr,
                     "WARN OpenBLAS runs its generic %s kernels on this CPU, which runs its %s ones: start the "
                     "program with OPENBLAS_CORETYPE=%s for ~4x faster CPU inference\n",
                     openblas_core().c_str(), core.c_str(), core.c_str());
    });
  }
  if (opt.threads > 0) {
    omp_set_num_threads(opt.threads);
    openblas_set_num_threads(opt.threads);
  }
  files_ = read_model_files(resolve_model_dir(opt.model));
  fs::path tok = fs::path(files_.transformer_dir) / "tokenizer.json";
  if (!fs::exists(tok))
    throw Error(tok.string() + ": missing; EmbedKit needs the fast-tokenizer file tokenizer.json "
                               "(save it with transformers' AutoTokenizer.save_pretrained)");
  tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::from_file(tok.string()));
  if (int64_t(tokenizer_->vocab_size()) > files_.config.vocab_size)
    throw Error(tok.string() + ": tokenizer has ids up to " + std::to_string(tokenizer_->vocab_size() - 1) +
                " but config.json vocab_size is " + std::to_string(files_.config.vocab_size));
  weights_ = std::make_unique<WeightStore>(WeightStore::open_dir(files_.transformer_dir));
  model_ = load_text_model(files_.config, *weights_);
  device_ = "cpu fp32";
  const bool decoder = files_.config.is_decoder();
  // Default budgets measured: CPU throughput is flat from 4k to 16k tokens (docs/benchmarks.md);
  // on the H100 64k tokens per pass is fastest (bench/gpu_vs_pytorch.py budget sweep). A GPU
  // with less free memory gets the budget whose activations fit in half of it (BERT fp16: the
  // qkv, context, two hidden and the FFN buffers per token; Qwen3: its encoder's workspace).
  batch_tokens_ = opt.batch_tokens ? opt.batch_tokens : (gpu ? 65536 : 8192);
  if (gpu && !opt.batch_tokens) {
    const size_t per_token = decoder ? cuda::Qwen3Encoder::workspace_bytes_per_token(files_.config)
                                     : 2 * size_t(6 * files_.config.hidden_size + files_.config.intermediate_size) + 64;
    const size_t free_b = cuda::free_memory_bytes();
    if (free_b) batch_tokens_ = std::clamp<size_t>(free_b / 2 / per_token / 1024 * 1024, 2048, 65536);
  }
  if (gpu && decoder) {
    // Qwen3: bf16 by default (the model's native dtype; fp16 on request).
    auto p = opt.dtype == "fp16" ? cuda::Precision::F16 : cuda::Precision::BF16;
    qwen3_gpu_ = std::make_unique<cuda::Qwen3Encoder>(files_.config, dynamic_cast<Qwen3Model&>(*model_).weights(), p,
                                                      batch_tokens_);
    device_ = qwen3_gpu_->device_name() + (p == cuda::Precision::BF16 ? " bf16" : " fp16");
    model_.reset();  // the fp32 host copy of the weights (2.4 GB for 0.6B) is not used on the GPU path
  } else if (gpu) {
    auto p = opt.dtype == "bf16" ? cuda::Precision::BF16 : cuda::Precision::F16;
    gpu_ = std::make_unique<cuda::BertEncoder>(files_.config, dynamic_cast<BertModel&>(*model_).weights(), p, batch_tokens_);
    device_ = gpu_->device_name() + (p == cuda::Precision::BF16 ? " bf16" : " fp16");
  }
  static_assert(kMaxInFlight <= size_t(cuda::BertEncoder::kMaxInFlight));
  if (gpu_) {
    pipeline_depth_ = size_t(cuda::BertEncoder::pipeline_depth());
  } else {  // CPU, and the Qwen3 GPU encoder (synchronous): the pass runs inside collect()
    const char* pe = std::getenv("EMBEDKIT_PIPELINE");
    pipeline_depth_ = pe && std::atoi(pe) >= 2 ? std::min(size_t(std::atoi(pe)), kMaxInFlight) : 1;
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

  for (auto& [name, text] : files_.prompts) named_prompts_[name] = resolve_prompt(text, std::nullopt);
  if (opt.prompt && opt.prompt_name) throw Error("give either --prompt or --prompt-name, not both");
  std::optional<std::string> name = opt.prompt_name;
  if (!name && !opt.prompt && !files_.default_prompt_name.empty()) name = files_.default_prompt_name;
  default_prompt_ = resolve_prompt(opt.prompt, name, "--prompt-name");
}

EmbeddingEngine::~EmbeddingEngine() = default;

size_t EmbeddingEngine::overlap_min_tokens() const {
  // Without the BERT GPU encoder nothing runs beside anything (pipeline depth 1): the usual value.
  return gpu_ ? gpu_->overlap_min_tokens() : cuda::BertEncoder::kOverlapMinTokens;
}

Prompt EmbeddingEngine::resolve_prompt(const std::optional<std::string>& text, const std::optional<std::string>& name,
                                       const char* option) const {
  if (text && name) throw Error("give either a prompt or a prompt name, not both");
  if (name) {
    auto it = named_prompts_.find(*name);
    if (it != named_prompts_.end()) return it->second;
    std::string known;
    for (auto& [k, v] : files_.prompts) known += (known.empty() ? "" : ", ") + k;
    throw Error(std::string(option) + " \"" + *name + "\": the model defines no such prompt (known: " +
                (known.empty() ? "none" : known) + ")");
  }
  Prompt p;
  if (!text || text->empty()) return p;
  p.text = *text;
  if (utf8::first_invalid(p.text) != std::string::npos)
    throw Error("prompt: invalid UTF-8 at byte offset " + std::to_string(utf8::first_invalid(p.text)));
  // ST: prompt_length = len(tokenize([prompt]).input_ids) - 1 (the trailing [SEP] dropped).
  if (!files_.pooling.include_prompt)
    p.pool_skip = int32_t(tokenize_text(p.text, files_.max_seq_length).size()) - 1;
  return p;
}

// Texts go to the tokenizer unchanged, as in sentence-transformers 6 (tools/requirements-reference.txt);
// sentence-transformers <= 5 stripped them, which only BPE tokenizers can tell apart (leading spaces
// are tokens there; BERT normalizers drop them).
Encoding EmbeddingEngine::tokenize_text(std::string_view s, size_t max_length) const {
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
    return tokenizer_->encode(low, true, max_length);
  }
  return tokenizer_->encode(s, true, max_length);
}

Encoding EmbeddingEngine::tokenize_unchecked(std::string_view text) const {
  return tokenize_text(text, 0);
}

Encoding EmbeddingEngine::encode(std::string_view text, const Prompt& prompt, bool truncate, TruncateSide side) const {
  std::string joined;
  if (!prompt.text.empty()) {
    joined.reserve(prompt.text.size() + text.size());
    joined.append(prompt.text).append(text);
    text = joined;
  }
  const size_t max = files_.max_seq_length;
  Encoding e;
  if (truncate && side == TruncateSide::Right) {
    e = tokenize_text(text, max);
  } else {
    e = tokenize_text(text, 0);
    if (e.size() > max) {
      if (!truncate) throw InputTooLong(e.size(), max);
      truncate_left(e, max);
    }
  }
  validate(e);
  return e;
}

Encoding EmbeddingEngine::encode_ids(const std::vector<int64_t>& ids, bool truncate) const {
  if (ids.empty()) throw Error("empty token id list");
  const size_t max = files_.max_seq_length;
  if (ids.size() > max && !truncate) throw InputTooLong(ids.size(), max);
  Encoding e;
  const size_t n = std::min(ids.size(), max);
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= files_.config.vocab_size)
      throw Error("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                  " is outside the model's vocabulary [0, " + std::to_string(files_.config.vocab_size) + ")");
    e.ids.push_back(int32_t(ids[i]));
    e.type_ids.push_back(0);
    e.offsets.emplace_back(0, 0);
    e.special.push_back(0);
  }
  return e;
}

void EmbeddingEngine::validate(const Encoding& e) const {
  // tokenizer.json's post-processor decides the type ids and how many specials are added: check
  // them against config.json here (the model only EK_CHECKs them).
  const int64_t max_tokens = files_.config.max_position_embeddings - files_.config.position_offset;
  for (int32_t id : e.ids)
    if (id < 0 || id >= files_.config.vocab_size)
      throw Error("token id " + std::to_string(id) + " outside the model's vocabulary");
  if (int64_t(e.size()) > max_tokens)
    throw Error(std::to_string(e.size()) + " tokens after truncation, more than the model's " +
                std::to_string(max_tokens) + " positions (tokenizer.json's post_processor adds too many special tokens)");
  if (files_.config.type_vocab_size > 0)
    for (int32_t t : e.type_ids)
      if (t < 0 || t >= files_.config.type_vocab_size)
        throw Error("token type id " + std::to_string(t) + " outside config.json's type_vocab_size " +
                    std::to_string(files_.config.type_vocab_size) +
                    " (check the type_id values of tokenizer.json's post_processor)");
}

void EmbeddingEngine::run(const Encoding* const* seqs, const int32_t* pool_skip, size_t n, float* out) {
  collect(submit(seqs, pool_skip, n), out);
}

EmbeddingEngine::RunTicket EmbeddingEngine::submit(const Encoding* const* seqs, const int32_t* pool_skip, size_t n) {
  using Clock = std::chrono::steady_clock;
  const auto t_pack = Clock::now();
  // OpenMP's thread count is per calling thread: the constructor's omp_set_num_threads does not
  // reach the batcher's executor thread, which calls submit()/collect(); set it here.
  if (opt_.threads > 0 && omp_get_max_threads() != opt_.threads) omp_set_num_threads(opt_.threads);
  RunSlot* slot = nullptr;
  bool others_in_flight = false;
  for (RunSlot& s : slots_) {
    if (!s.busy && !slot) slot = &s;
    others_in_flight |= s.busy;
  }
  if (!slot) throw Error("engine: " + std::to_string(kMaxInFlight) + " batches already in flight; collect one first");
  RunSlot& s = *slot;
  PackedBatch& b = s.batch;
  b.ids.clear();
  b.type_ids.clear();
  b.positions.clear();
  b.cu_seqlens.assign(1, 0);
  s.skip.clear();
  bool any_skip = false;
  for (size_t k = 0; k < n; ++k) {
    const Encoding& e = *seqs[k];
    EK_CHECK(e.size() > 0, "empty sequence in a batch");
    b.ids.insert(b.ids.end(), e.ids.begin(), e.ids.end());
    b.type_ids.insert(b.type_ids.end(), e.type_ids.begin(), e.type_ids.end());
    for (size_t p = 0; p < e.size(); ++p) b.positions.push_back(int32_t(p));
    b.cu_seqlens.push_back(int32_t(b.ids.size()));
    const int32_t sk = pool_skip ? pool_skip[k] : 0;
    s.skip.push_back(sk);
    any_skip |= sk != 0;
  }
  EK_CHECK(n == 1 || size_t(b.tokens()) <= batch_tokens_, "batch over the token budget");
  if (!any_skip) s.skip.clear();
  s.n = n;
  s.pack_ms = std::chrono::duration<double, std::milli>(Clock::now() - t_pack).count();
  // On the GPU the whole pass is queued now, behind any batch in flight; the slot keeps nothing
  // the device needs (the encoder staged the inputs in its own pinned memory).
  if (gpu_) s.gpu_ticket = gpu_->submit(b, files_.pooling, s.skip, /*normalize=*/false);
  s.overlapped = others_in_flight && gpu_;
  s.busy = true;
  return s.ticket = ++next_ticket_;
}

void EmbeddingEngine::collect(RunTicket ticket, float* out) {
  using Clock = std::chrono::steady_clock;
  auto ms = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  RunSlot* slot = nullptr;
  for (RunSlot& s : slots_)
    if (s.busy && s.ticket == ticket) slot = &s;
  if (!slot) throw Error("engine: collect of a batch that is not in flight");
  RunSlot& s = *slot;
  struct Release {  // the slot is free again whatever happens below
    RunSlot& s;
    ~Release() { s.busy = false; }
  } release{s};
  if (opt_.threads > 0 && omp_get_max_threads() != opt_.threads) omp_set_num_threads(opt_.threads);
  const size_t n = s.n;
  int64_t dim = pooled_dim(files_.config.hidden_size, files_.pooling);
  // Without Dense modules the pooled rows are the output; otherwise they go through each layer.
  float* pooled = dense_.empty() ? out : (pooled_.resize(n * size_t(dim)), pooled_.data());
  run_times_ = EngineRunTimes{};
  run_times_.pack_ms = s.pack_ms;
  run_times_.overlapped = s.overlapped;
  const auto t_model = Clock::now();
  if (gpu_ || qwen3_gpu_) {
    // BERT: this batch was queued in submit(); wait for it. Qwen3 (no pipelined form yet): the
    // whole synchronous pass runs here.
    if (gpu_) gpu_->collect(s.gpu_ticket, pooled);
    else qwen3_gpu_->encode(s.batch, files_.pooling, s.skip, /*normalize=*/false, pooled);
    const auto& pt = gpu_ ? gpu_->last_times() : qwen3_gpu_->last_times();
    run_times_.h2d_ms = pt.h2d;
    run_times_.forward_ms = pt.forward;
    run_times_.pool_ms = pt.pool;
    run_times_.d2h_ms = pt.d2h;
    // A replayed graph is timed as a whole (the Qwen3 encoder leaves both copies at zero then).
    run_times_.graph_replay = gpu_ ? pt.graph_replay : pt.h2d == 0 && pt.d2h == 0;
  } else {
    model_->forward(s.batch, hidden_);
    run_times_.cpu_forward_ms = ms(t_model, Clock::now());
    pool(hidden_.data(), files_.config.hidden_size, s.batch.cu_seqlens, files_.pooling, s.skip, pooled);
  }
  const auto t_pool = Clock::now();
  for (const DenseLayer& dl : dense_) {  // [n, dim] → [n, out_features]
    tmp_.resize(n * size_t(dl.cfg.out_features));
    cpu::linear(pooled_.data(), int64_t(n), dim, dl.w.data(), dl.b.empty() ? nullptr : dl.b.data(),
                dl.cfg.out_features, tmp_.data(), dl.act);
    pooled_.swap(tmp_);
    dim = dl.cfg.out_features;
  }
  if (!dense_.empty()) std::copy(pooled_.begin(), pooled_.begin() + ptrdiff_t(n * size_t(dim)), out);
  // CPU: pooling + Dense; GPU: Dense only (pooling ran on the device).
  run_times_.cpu_pool_ms = ms(on_gpu() ? t_pool : t_model, Clock::now()) - run_times_.cpu_forward_ms;
}

void EmbeddingEngine::finish(const float* full, bool normalize, size_t dims, float* out) const {
  EK_CHECK(dims >= 1 && dims <= full_dim_);
  std::copy(full, full + dims, out);
  if (normalize) l2_normalize_rows(out, 1, dims);
}

ModelInfo EmbeddingEngine::info() const {
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

}  // namespace embedkit
