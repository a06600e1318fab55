// Embedder (the offline API): texts → tokenize (in chunks, the next chunk overlapping the model)
// → sort by length → pack under the token budget → EmbeddingEngine::run → finish → rows back in
// input order.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <future>
#include <mutex>
#include <numeric>

#include "embedkit/embedkit.h"
#include "embedkit/profiling.h"
#include "pipeline/engine.h"
#include "scheduler/batcher.h"
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

  // Texts go through the same adaptive batcher as the server's requests: one job per chunk,
  // its inputs longest first, so the batcher's oldest-first filling packs batches of similar
  // lengths up to the token budget, and assembles batch k+1 while batch k runs (on the GPU,
  // submits it before batch k is collected). Chunk c+1 is queued behind chunk c before chunk c is
  // waited for, so the batcher does not run dry between chunks either.
  Embeddings embed(const std::vector<std::string>& texts, const std::function<void(size_t, size_t)>& progress) override {
    using Clock = std::chrono::steady_clock;
    auto secs = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
    const auto t_start = Clock::now();
    timings_ = EmbedTimings{};
    const size_t n = texts.size(), out_dim = engine_.default_dim();
    Embeddings out;
    out.count = n;
    out.dim = out_dim;
    out.data.assign(n * out_dim, 0.f);
    out.token_counts.assign(n, 0);
    if (n == 0) return out;

    // Batch statistics arrive on the batcher's executor thread, right after each batch.
    std::mutex stats_mu;
    size_t done = 0;
    batch_observer_ = [&](size_t inputs, size_t tokens, double seconds) {
      std::lock_guard<std::mutex> lock(stats_mu);
      const EngineRunTimes& rt = engine_.last_run_times();
      timings_.device_h2d_ms += rt.h2d_ms;
      timings_.device_forward_ms += rt.forward_ms;
      timings_.device_pool_ms += rt.pool_ms;
      timings_.device_d2h_ms += rt.d2h_ms;
      timings_.encode_s += seconds;
      // For EmbedBench's phase split (include/embedkit/profiling.h). A batch packed while the
      // previous one ran on the device (pipelined) cost the call no time: its packing is hidden.
      const double pack_ms = rt.overlapped ? 0.0 : rt.pack_ms;
      timings_.pack_s += pack_ms * 1e-3;
      timings_.cpu_forward_s += rt.cpu_forward_ms * 1e-3;
      timings_.cpu_pool_s += rt.cpu_pool_ms * 1e-3;
      timings_.device_graph_batches += rt.graph_replay ? 1 : 0;
      // `seconds` is the batch's share of the executor's wall time (batcher.cpp); pipelined, the
      // device work can fill all of it, so what the events do not cover is at least zero.
      if (engine_.on_gpu())
        timings_.device_launch_s += std::max(
            0.0, seconds - 1e-3 * (pack_ms + rt.cpu_pool_ms + rt.h2d_ms + rt.forward_ms + rt.pool_ms + rt.d2h_ms));
      timings_.tokens += tokens;
      timings_.batches += 1;
      done += inputs;
      if (progress) progress(done, n);
    };
    if (!batcher_) {
      BatcherOptions bo;
      bo.max_batch_tokens = engine_.batch_tokens();
      batcher_ = std::make_unique<Batcher>(engine_, bo, [this](size_t i, size_t t, double s) {
        if (batch_observer_) batch_observer_(i, t, s);
      });
    }

    // A chunk's job in the batcher. The promise lives on the heap: the job's on_done may run
    // after this call left by an exception (the guard below waits for it anyway).
    struct Chunk {
      std::shared_ptr<EmbedJob> job;
      std::vector<size_t> order;  // job input k is texts[order[k]]
      std::shared_ptr<std::promise<void>> finished;
      std::future<void> finished_f;
      Clock::time_point submitted;
    };
    std::deque<Chunk> chunks;  // submitted, oldest first (at most 2)
    // Leaving early (an error): cancel what is still queued and wait for every job's on_done, so
    // no batch runs on this call's inputs or reports to its observer after it returns.
    struct Drain {
      std::deque<Chunk>& chunks;
      std::function<void(size_t, size_t, double)>& observer;
      ~Drain() {
        for (auto& c : chunks) c.job->cancelled = true;
        for (auto& c : chunks) c.finished_f.wait();
        observer = nullptr;
      }
    } drain{chunks, batch_observer_};

    // On the GPU, chunk c+1 is tokenized on the CPU while the model runs chunk c; on the CPU the
    // cores are the model's, so everything is tokenized first.
    const size_t chunk = engine_.on_gpu() ? kGpuChunkTexts : n;
    std::vector<Encoding> enc(n);
    auto submit_chunk = [&](size_t c0, size_t c1) {
      Chunk c;
      c.order.resize(c1 - c0);
      std::iota(c.order.begin(), c.order.end(), c0);
      std::stable_sort(c.order.begin(), c.order.end(), [&](size_t a, size_t b) { return enc[a].size() > enc[b].size(); });
      c.job = std::make_shared<EmbedJob>();
      c.job->inputs.reserve(c.order.size());
      for (size_t i : c.order) {
        out.token_counts[i] = uint32_t(enc[i].size());
        c.job->inputs.push_back(std::move(enc[i]));
      }
      c.job->pool_skip = engine_.default_prompt().pool_skip;
      c.job->normalize = engine_.default_normalize();
      c.job->dims = out_dim;
      c.finished = std::make_shared<std::promise<void>>();
      c.finished_f = c.finished->get_future();
      c.job->on_done = [f = c.finished](const std::shared_ptr<EmbedJob>&) { f->set_value(); };
      c.submitted = Clock::now();
      chunks.push_back(std::move(c));
      if (!batcher_->submit(chunks.back().job)) {  // only with max_inputs, which this batcher has not
        chunks.pop_back();
        throw Error("embed: the batcher refused a chunk");
      }
    };

    auto t0 = Clock::now();
    tokenize_range(texts, 0, std::min(chunk, n), enc);
    timings_.tokenize_s += secs(t0, Clock::now());
    timings_.tokenize_first_s = timings_.tokenize_s;
    const auto t_sort = Clock::now();
    submit_chunk(0, std::min(chunk, n));
    // Sorting and packing the first chunk holds the model up; later chunks are sorted while it runs.
    timings_.pack_s += secs(t_sort, Clock::now());
    const auto t_first_submit = chunks.front().submitted;
    Clock::time_point t_back;  // the last job's answer
    for (size_t c1 = std::min(chunk, n); !chunks.empty();) {
      if (c1 < n) {  // tokenize the next chunk while the batcher works, then queue it behind
        const size_t c2 = std::min(n, c1 + chunk);
        const auto a = Clock::now();
        tokenize_range(texts, c1, c2, enc);
        timings_.tokenize_s += secs(a, Clock::now());
        submit_chunk(c1, c2);
        c1 = c2;
      }
      Chunk& c = chunks.front();
      c.finished_f.wait();
      t_back = Clock::now();
      // The model idles when the next chunk came after this chunk's last batch.
      if (chunks.size() > 1 && chunks[1].submitted > c.job->last_batch_end)
        timings_.tokenize_wait_s += secs(c.job->last_batch_end, chunks[1].submitted);
      if (!c.job->error.empty()) throw Error(c.job->error);
      const auto tp = Clock::now();
      for (size_t k = 0; k < c.order.size(); ++k)
        std::copy_n(c.job->out.data() + k * out_dim, out_dim, out.data.data() + c.order[k] * out_dim);
      timings_.postprocess_s += secs(tp, Clock::now());
      chunks.pop_front();
    }
    // Time in the batcher outside the model: from the first submission to the last job's answer,
    // less the batches' shares of the executor (encode_s) and the waits for tokenization.
    timings_.queue_s = std::max(0.0, secs(t_first_submit, t_back) - timings_.encode_s - timings_.tokenize_wait_s);
    timings_.total_s = secs(t_start, Clock::now());
    detail::record_embed_call(timings_, n);
    return out;
  }

  EmbedTimings last_timings() const override { return timings_; }
  ModelInfo info() const override { return engine_.info(); }

 private:
  EmbeddingEngine engine_;
  std::unique_ptr<Batcher> batcher_;  // started on the first embed(); after engine_ so it stops first
  std::function<void(size_t, size_t, double)> batch_observer_;
  EmbedTimings timings_;
  static constexpr size_t kGpuChunkTexts = 16384;
};

}  // namespace

std::unique_ptr<Embedder> Embedder::load(const EmbedderOptions& options) {
  return std::make_unique<OfflineEmbedder>(options);
}

}  // namespace embedkit
