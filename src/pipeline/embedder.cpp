// Embedder (the offline API): texts → tokenize (in chunks, the next chunk overlapping the model)
// → sort by length → pack under the token budget → EmbeddingEngine::run → finish → rows back in
// input order.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>
#include <mutex>
#include <numeric>

#include "embedkit/embedkit.h"
#include "pipeline/engine.h"
#include "util/error.h"

namespace embedkit {

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

class OfflineEmbedder final : public Embedder {
 public:
  explicit OfflineEmbedder(const EmbedderOptions& opt) : engine_(opt) {}

  TokenizedText tokenize(const std::string& text, bool truncate) const override {
    // Untruncated inspection may go past the model's maximum: every token is shown.
    Encoding e = truncate ? engine_.encode(text, engine_.default_prompt())
                          : engine_.tokenize_unchecked(engine_.default_prompt().text + text);
    TokenizedText t;
    t.ids = e.ids;
    t.offsets = e.offsets;
    for (int32_t id : e.ids) t.tokens.push_back(engine_.tokenizer().id_to_token(id));
    return t;
  }

  // Tokenizes texts[begin, end) in parallel into enc[begin, end); reports the first failure by index.
  void tokenize_range(const std::vector<std::string>& texts, size_t begin, size_t end, std::vector<Encoding>& enc) const {
    std::string first_error;
    size_t first_error_index = end;
    std::mutex mu;
    const Prompt& prompt = engine_.default_prompt();
#pragma omp parallel for schedule(dynamic, 16)
    for (size_t i = begin; i < end; ++i) {
      try {
        enc[i] = engine_.encode(texts[i], prompt);
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
      if (!prompt.text.empty() && msg.find("byte offset") != std::string::npos) msg += " (offsets count the prompt)";
      throw Error("input " + std::to_string(first_error_index) + ": " + msg);
    }
  }

  Embeddings embed(const std::vector<std::string>& texts, const std::function<void(size_t, size_t)>& progress) override {
    using Clock = std::chrono::steady_clock;
    auto secs = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
    const auto t_start = Clock::now();
    timings_ = EmbedTimings{};
    const size_t n = texts.size(), out_dim = engine_.default_dim(), full_dim = engine_.full_dim();
    const bool normalize = engine_.default_normalize();
    const int32_t pool_skip = engine_.default_prompt().pool_skip;
    Embeddings out;
    out.count = n;
    out.dim = out_dim;
    out.data.assign(n * out_dim, 0.f);
    out.token_counts.assign(n, 0);
    if (n == 0) return out;

    // Work goes in chunks: while the model runs chunk c, chunk c+1 is tokenized on the other
    // cores, so the device does not wait for the CPU. Within a chunk, texts run longest first
    // so each batch holds similar lengths and the token budget is well used.
    const size_t chunk = engine_.on_gpu() ? kGpuChunkTexts : n;
    std::vector<Encoding> enc(n);
    auto t0 = Clock::now();
    tokenize_range(texts, 0, std::min(chunk, n), enc);
    timings_.tokenize_s += secs(t0, Clock::now());

    std::vector<const Encoding*> seqs;
    std::vector<int32_t> skip;
    std::vector<float> rows;
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
        while (end < order.size() && (end == start || tokens + enc[order[end]].size() <= engine_.batch_tokens()))
          tokens += enc[order[end++]].size();
        seqs.clear();
        for (size_t k = start; k < end; ++k) seqs.push_back(&enc[order[k]]);
        skip.assign(seqs.size(), pool_skip);
        rows.resize(seqs.size() * full_dim);
        const auto te = Clock::now();
        engine_.run(seqs.data(), skip.data(), seqs.size(), rows.data());
        const auto tp = Clock::now();
        timings_.encode_s += secs(te, tp);
        const EngineRunTimes& rt = engine_.last_run_times();
        timings_.device_h2d_ms += rt.h2d_ms;
        timings_.device_forward_ms += rt.forward_ms;
        timings_.device_pool_ms += rt.pool_ms;
        timings_.device_d2h_ms += rt.d2h_ms;
        for (size_t s = 0; s < seqs.size(); ++s)
          engine_.finish(rows.data() + s * full_dim, normalize, out_dim, out.data.data() + order[start + s] * out_dim);
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
  ModelInfo info() const override { return engine_.info(); }

 private:
  EmbeddingEngine engine_;
  EmbedTimings timings_;
  static constexpr size_t kGpuChunkTexts = 16384;
};

}  // namespace

std::unique_ptr<Embedder> Embedder::load(const EmbedderOptions& options) {
  return std::make_unique<OfflineEmbedder>(options);
}

}  // namespace embedkit
