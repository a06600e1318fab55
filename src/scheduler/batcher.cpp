// Adaptive batcher (see batcher.h for the picture).
#include "scheduler/batcher.h"

#include <algorithm>

#include "util/error.h"

namespace embedkit {

Batcher::Batcher(EmbeddingEngine& engine, BatcherOptions options, std::function<void(size_t, size_t, double)> on_batch)
    : engine_(engine), opt_(options), on_batch_(std::move(on_batch)) {
  if (opt_.max_batch_tokens == 0) opt_.max_batch_tokens = engine.batch_tokens();
  if (opt_.max_batch_tokens > engine.batch_tokens())
    throw Error("--max-batch-tokens " + std::to_string(opt_.max_batch_tokens) + ": more than the engine was sized for (" +
                std::to_string(engine.batch_tokens()) + ")");
  assembler_ = std::thread([this] { assembler_loop(); });
  executor_ = std::thread([this] { executor_loop(); });
}

Batcher::~Batcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  assembler_cv_.notify_all();
  executor_cv_.notify_all();
  assembler_.join();
  executor_.join();
}

bool Batcher::submit(const std::shared_ptr<EmbedJob>& job) {
  const size_t n = job->inputs.size();
  job->enqueued = EmbedJob::Clock::now();
  job->out.assign(n * job->dims, 0.f);
  if (n == 0) {
    if (job->on_done) job->on_done(job);
    return true;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    // A job larger than the limit alone is still taken when nothing else is in flight.
    if (opt_.max_inputs && in_flight_inputs_ > 0 && in_flight_inputs_ + n > opt_.max_inputs) return false;
    job->remaining_ = n;
    for (uint32_t i = 0; i < n; ++i) pending_.push_back({job, i});
    in_flight_inputs_ += n;
    dirty_ = true;
  }
  assembler_cv_.notify_one();
  return true;
}

void Batcher::complete_locked(const std::shared_ptr<EmbedJob>& job, std::vector<std::shared_ptr<EmbedJob>>& done) {
  EK_CHECK(job->remaining_ > 0);
  EK_CHECK(in_flight_inputs_ > 0);
  --in_flight_inputs_;
  if (--job->remaining_ == 0) done.push_back(job);
}

bool Batcher::fill_next_locked() {
  bool moved = false;
  std::vector<std::shared_ptr<EmbedJob>> dropped_done;
  const size_t budget = opt_.max_batch_tokens;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (opt_.max_batch_requests && next_.items.size() >= opt_.max_batch_requests) break;
    if (!next_.items.empty() && next_.tokens + 2 > budget) break;  // nothing shorter than [CLS] [SEP] fits
    EmbedJob& job = *it->job;
    if (job.dropped()) {  // client gone or job failed: drop
      complete_locked(it->job, dropped_done);
      it = pending_.erase(it);
      continue;
    }
    const size_t len = job.inputs[it->index].size();
    // An input longer than the budget runs alone (the engine accepts one over-budget sequence).
    if (next_.tokens + len <= budget || next_.items.empty()) {
      if (next_.items.empty()) next_.oldest = job.enqueued;
      next_.tokens += len;
      next_.items.push_back(std::move(*it));
      it = pending_.erase(it);
      moved = true;
      if (next_.tokens > budget) break;
    } else {
      ++it;  // does not fit: leave it for a later batch, keep looking for shorter ones
    }
  }
  if (!dropped_done.empty()) {
    // Callbacks outside the lock would be nicer; cancelled jobs have nobody waiting on speed.
    for (auto& j : dropped_done) {
      if (j->error.empty()) j->error = "cancelled";
      if (j->on_done) j->on_done(j);
    }
    idle_cv_.notify_all();
  }
  return moved;
}

void Batcher::assembler_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    assembler_cv_.wait(lock, [&] { return dirty_ || (stopping_ && pending_.empty()); });
    if (!dirty_ && stopping_ && pending_.empty()) return;
    dirty_ = false;
    if (fill_next_locked()) executor_cv_.notify_one();
  }
}

void Batcher::executor_loop() {
  std::vector<const Encoding*> seqs;
  std::vector<int32_t> skip;
  std::vector<float> rows;
  std::vector<std::shared_ptr<EmbedJob>> done;
  const size_t full_dim = engine_.full_dim();
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    // Wait for a batch; with max_wait, a partial batch waits for company until its oldest
    // input has waited max_wait.
    for (;;) {
      if (next_.items.empty()) {
        if (stopping_ && pending_.empty()) return;
        executor_cv_.wait(lock);
        continue;
      }
      const bool full = next_.tokens + 2 > opt_.max_batch_tokens ||
                        (opt_.max_batch_requests && next_.items.size() >= opt_.max_batch_requests);
      if (opt_.max_wait.count() == 0 || full || stopping_) break;
      const auto deadline = next_.oldest + opt_.max_wait;
      if (EmbedJob::Clock::now() >= deadline) break;
      executor_cv_.wait_until(lock, deadline);
    }
    Batch batch = std::move(next_);
    next_ = Batch{};
    running_inputs_ = batch.items.size();
    dirty_ = true;  // the assembler starts on the next batch while this one runs
    assembler_cv_.notify_one();
    lock.unlock();

    const size_t n = batch.items.size();
    seqs.resize(n);
    skip.resize(n);
    for (size_t k = 0; k < n; ++k) {
      seqs[k] = &batch.items[k].job->inputs[batch.items[k].index];
      skip[k] = batch.items[k].job->pool_skip;
    }
    rows.resize(n * full_dim);
    std::string error;
    const auto t0 = EmbedJob::Clock::now();
    try {
      engine_.run(seqs.data(), skip.data(), n, rows.data());
    } catch (const std::exception& e) {
      error = std::string("inference failed: ") + e.what();
    }
    const auto t1 = EmbedJob::Clock::now();
    const double secs = std::chrono::duration<double>(t1 - t0).count();
    if (error.empty())
      for (size_t k = 0; k < n; ++k) {
        EmbedJob& job = *batch.items[k].job;
        engine_.finish(rows.data() + k * full_dim, job.normalize, job.dims, job.out.data() + batch.items[k].index * job.dims);
      }

    lock.lock();
    done.clear();
    EmbedJob* last = nullptr;
    for (auto& item : batch.items) {
      EmbedJob& job = *item.job;
      if (&job != last) {  // count each job's share of inference once per batch
        if (job.inference_s == 0) job.first_batch_start = t0;
        job.inference_s += secs;
        job.last_batch_end = t1;
        last = &job;
      }
      if (!error.empty() && job.error.empty()) {
        job.error = error;
        job.cancelled = true;  // its queued inputs are dropped
      }
      complete_locked(item.job, done);
    }
    running_inputs_ = 0;
    ++batches_;
    batch_inputs_ += n;
    batch_tokens_total_ += batch.tokens;
    lock.unlock();
    // The batch observer first: a job's on_done may end its owner's wait (Embedder::embed returns,
    // its observer and the timings it fills go away), so the batch must be accounted before.
    if (on_batch_) on_batch_(n, batch.tokens, secs);
    for (auto& j : done)
      if (j->on_done) j->on_done(j);
    done.clear();  // a finished job must not outlive its answer (it holds the connection)
    batch = Batch{};  // drop job references before waiting again
    lock.lock();
    idle_cv_.notify_all();
  }
}

void Batcher::wait_idle() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [&] { return in_flight_inputs_ == 0; });
}

BatcherStats Batcher::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  BatcherStats s;
  s.queued_inputs = in_flight_inputs_ - running_inputs_;
  s.running_inputs = running_inputs_;
  s.batches = batches_;
  s.batch_inputs = batch_inputs_;
  s.batch_tokens = batch_tokens_total_;
  return s;
}

}  // namespace embedkit
