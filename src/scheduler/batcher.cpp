// Adaptive batcher (see batcher.h for the picture).
#include "scheduler/batcher.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <deque>
#include <string>

#include "util/error.h"

namespace embedkit {

Batcher::Batcher(EmbeddingEngine& engine, BatcherOptions options, std::function<void(size_t, size_t, double)> on_batch)
    : engine_(engine), opt_(options), on_batch_(std::move(on_batch)) {
  if (opt_.max_batch_tokens == 0) opt_.max_batch_tokens = engine.batch_tokens();
  if (opt_.max_batch_tokens > engine.batch_tokens())
    throw Error("--max-batch-tokens " + std::to_string(opt_.max_batch_tokens) + ": more than the engine was sized for (" +
                std::to_string(engine.batch_tokens()) + ")");
  const size_t depth = std::min(engine.pipeline_depth(), EmbeddingEngine::kMaxInFlight);
  depth_ = std::max<size_t>(1, depth);
  if (opt_.overlap_min_tokens == 0) opt_.overlap_min_tokens = engine.overlap_min_tokens();
  if (const char* e = std::getenv("EMBEDKIT_OVERLAP_MIN_TOKENS"); e && *e) opt_.overlap_min_tokens = size_t(std::atoll(e));
  assembler_ = std::thread([this] { assembler_loop(); });
  collector_ = std::thread([this] { collect_loop(); });
  executor_ = std::thread([this] { submit_loop(); });
}

Batcher::~Batcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  assembler_cv_.notify_all();
  executor_cv_.notify_all();
  assembler_.join();
  executor_.join();  // the submitter stops once nothing is queued; the collector once all is delivered
  collector_.join();
}

bool Batcher::submit(const std::shared_ptr<EmbedJob>& job) {
  const size_t n = job->inputs.size();
  job->enqueued = EmbedJob::Clock::now();
  job->out.assign(n * job->dims, 0.f);
  if (n == 0) {
    if (job->on_done) job->on_done(job);
    return true;
  }
  bool executor_waiting;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!room_locked(n)) return false;
    job->remaining_ = n;
    for (uint32_t i = 0; i < n; ++i) {
      pending_.push_back({job, i});
      pending_tokens_ += job->inputs[i].size();
    }
    in_flight_inputs_ += n;
    dirty_ = true;
    events_.fetch_add(1, std::memory_order_release);
    executor_waiting = executor_waiting_;
  }
  // An idle executor takes the input itself (one thread wake-up between the request and the
  // device instead of two); a busy one leaves it to the assembler.
  if (executor_waiting) executor_cv_.notify_one();
  else assembler_cv_.notify_one();
  return true;
}

bool Batcher::room_locked(size_t n) {
  // A job larger than the limit alone is still taken when nothing else is in flight.
  if (!opt_.max_inputs || in_flight_inputs_ == 0 || in_flight_inputs_ + n <= opt_.max_inputs) return true;
  // Full: inputs whose clients left still count until a batch is assembled past them, which a
  // refusal does not trigger; have the assembler drop them now, so that a wave of abandoned
  // requests (a load generator stopping, clients timing out) frees its room at once rather than
  // after the batches ahead of them.
  if (!purge_requested_) {
    purge_requested_ = dirty_ = true;
    assembler_cv_.notify_one();
  }
  return false;
}

bool Batcher::has_room(size_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  return room_locked(n);
}

void Batcher::complete_locked(const std::shared_ptr<EmbedJob>& job, std::vector<std::shared_ptr<EmbedJob>>& done) {
  EK_CHECK(job->remaining_ > 0);
  EK_CHECK(in_flight_inputs_ > 0);
  --in_flight_inputs_;
  if (--job->remaining_ == 0) done.push_back(job);
}

// Drops queued inputs (pending and the batch being assembled) whose job was cancelled or whose
// client left; their jobs complete with an error once all their inputs are accounted for.
void Batcher::purge_dropped_locked() {
  std::vector<std::shared_ptr<EmbedJob>> done;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (!it->job->dropped()) {
      ++it;
      continue;
    }
    pending_tokens_ -= it->job->inputs[it->index].size();
    complete_locked(it->job, done);
    it = pending_.erase(it);
  }
  drop_abandoned_locked(next_, done);
  finish_dropped_locked(done);
}

void Batcher::drop_abandoned_locked(Batch& batch, std::vector<std::shared_ptr<EmbedJob>>& done) {
  size_t kept = 0;
  for (auto& item : batch.items) {
    if (item.job->dropped()) {
      batch.tokens -= item.job->inputs[item.index].size();
      complete_locked(item.job, done);
    } else {
      batch.items[kept++] = std::move(item);
    }
  }
  batch.items.resize(kept);
}

// Callbacks under the lock (outside would be nicer; cancelled jobs have nobody waiting on speed).
void Batcher::finish_dropped_locked(std::vector<std::shared_ptr<EmbedJob>>& done) {
  if (done.empty()) return;
  for (auto& j : done) {
    if (j->error.empty()) j->error = "cancelled";
    if (j->on_done) j->on_done(j);
  }
  done.clear();
  idle_cv_.notify_all();
}

size_t Batcher::batch_cap_locked() const { return batch_token_cap(opt_, pending_tokens_ + next_.tokens); }

bool Batcher::fill_next_locked() {
  bool moved = false;
  std::vector<std::shared_ptr<EmbedJob>> dropped_done;
  const size_t budget = batch_cap_locked();
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (opt_.max_batch_requests && next_.items.size() >= opt_.max_batch_requests) break;
    if (!next_.items.empty() && next_.tokens + 2 > budget) break;  // nothing shorter than [CLS] [SEP] fits
    EmbedJob& job = *it->job;
    const size_t len = job.inputs[it->index].size();
    if (job.dropped()) {  // client gone or job failed: drop
      complete_locked(it->job, dropped_done);
      pending_tokens_ -= len;
      it = pending_.erase(it);
      continue;
    }
    // An input longer than the budget runs alone (the engine accepts one over-budget sequence).
    if (next_.tokens + len <= budget || next_.items.empty()) {
      if (next_.items.empty()) next_.oldest = job.enqueued;
      next_.tokens += len;
      next_.items.push_back(std::move(*it));
      pending_tokens_ -= len;
      it = pending_.erase(it);
      moved = true;
      if (next_.tokens > budget) break;
    } else {
      ++it;  // does not fit: leave it for a later batch, keep looking for shorter ones
    }
  }
  finish_dropped_locked(dropped_done);
  return moved;
}

void Batcher::assembler_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    assembler_cv_.wait(lock, [&] { return dirty_ || (stopping_ && pending_.empty()); });
    if (!dirty_ && stopping_ && pending_.empty()) return;
    dirty_ = false;
    if (purge_requested_) {
      purge_requested_ = false;
      purge_dropped_locked();
    }
    if (fill_next_locked()) executor_cv_.notify_one();
  }
}

bool Batcher::full_locked() const {
  return next_.tokens + 2 > batch_cap_locked() ||
         (opt_.max_batch_requests && next_.items.size() >= opt_.max_batch_requests);
}

bool Batcher::ready_locked() const {
  if (next_.items.empty()) return false;
  return opt_.max_wait.count() == 0 || full_locked() || stopping_ ||
         EmbedJob::Clock::now() >= next_.oldest + opt_.max_wait;
}

// Where the submitter's and the collector's time goes (EMBEDKIT_BATCHER_PROFILE=1): seconds in
// each step, summed over batches, printed when the thread stops.
namespace {
struct StepProfile {
  using Clock = std::chrono::steady_clock;
  const char* who;
  std::vector<std::pair<const char*, double>> steps;
  size_t batches = 0, jobs = 0;
  bool on = std::getenv("EMBEDKIT_BATCHER_PROFILE") && std::string(std::getenv("EMBEDKIT_BATCHER_PROFILE")) == "1";
  Clock::time_point t = Clock::now();
  StepProfile(const char* w, std::initializer_list<const char*> names) : who(w) {
    for (const char* n : names) steps.push_back({n, 0.0});
  }
  void lap(size_t step) {
    if (!on) return;
    const auto now = Clock::now();
    steps[step].second += std::chrono::duration<double>(now - t).count();
    t = now;
  }
  ~StepProfile() {
    if (!on) return;
    std::string line = std::string("batcher ") + who + ": " + std::to_string(batches) + " batches, " +
                       std::to_string(jobs) + " jobs; seconds:";
    for (auto& [name, secs] : steps) line += " " + std::string(name) + " " + std::to_string(secs);
    std::fprintf(stderr, "%s\n", line.c_str());
  }
};
}  // namespace

// Whether the submitter may hand one more batch to the engine now: up to engine_.pipeline_depth()
// batches are in flight (submitted, not yet collected; 2 on the GPU). Batch i+1 is queued on the
// device before batch i is collected, so the device goes from one to the next without waiting for
// the host to finish rows, run callbacks and pack again — but only once it holds
// overlap_min_tokens (or is full: waiting would not grow it). A smaller one waits for the batch
// ahead and grows meanwhile: sent at once, 64 clients' single texts went as two batches of 15
// sharing the device instead of one of 29 after the other, 118k instead of 140k requests/s on the
// H100 (docs/benchmarks.md). Deeper pipelines split the same way: with 4 in flight, 256 clients'
// requests went in batches of 28 instead of 43 inputs and throughput fell from 234k to 180k/s.
bool Batcher::room_to_submit_locked() const {
  const size_t in_flight = running_.size() + collecting_;
  if (in_flight >= depth_) return false;
  return in_flight == 0 || next_.tokens >= opt_.overlap_min_tokens || full_locked() || stopping_;
}

// The submitter: takes the next batch as soon as it may go (ready_locked) and there is room in
// flight, drops inputs whose client left meanwhile, and submits it to the engine (on the GPU the
// whole pass is queued; nothing waits for the device here). The collector thread collects.
void Batcher::submit_loop() {
  using Clock = EmbedJob::Clock;
  std::vector<const Encoding*> seqs;
  std::vector<int32_t> skip;
  std::vector<std::shared_ptr<EmbedJob>> done;
  StepProfile prof("submitter", {"waiting", "submit"});
  std::unique_lock<std::mutex> lock(mu_);
  // With submit_spin (BatcherOptions): before sleeping, poll once for a new input or a collected
  // batch (events_), then look again under the lock; sleep only if that found nothing to do.
  bool spun = false;
  auto spin = [&] {
    if (opt_.submit_spin.count() == 0 || spun) return false;
    spun = true;
    const uint64_t seen = events_.load(std::memory_order_acquire);
    lock.unlock();
    const auto until = Clock::now() + opt_.submit_spin;
    while (events_.load(std::memory_order_acquire) == seen && Clock::now() < until) {
#if defined(__x86_64__)
      __builtin_ia32_pause();  // leaves the core's other hardware thread its issue slots
#endif
    }
    lock.lock();
    return true;
  };
  for (;;) {
    // Fill the next batch here rather than wait for the assembler thread to get the lock.
    if (next_.items.empty() && !pending_.empty()) fill_next_locked();
    if (next_.items.empty()) {
      if (stopping_ && pending_.empty()) break;
      if (spin()) continue;
      executor_waiting_ = true;
      executor_cv_.wait(lock);
      executor_waiting_ = false;
      spun = false;
      continue;
    }
    if (!room_to_submit_locked()) {  // the collector wakes us when a batch leaves the engine
      if (spin()) continue;
      executor_cv_.wait(lock);
      spun = false;
      continue;
    }
    spun = false;
    if (!ready_locked()) {  // with max_wait: a partial batch waits for company a while
      executor_waiting_ = true;
      executor_cv_.wait_until(lock, next_.oldest + opt_.max_wait);
      executor_waiting_ = false;
      continue;
    }
    prof.lap(0);
    Running r;
    r.batch = std::move(next_);
    next_ = Batch{};
    // Inputs whose client left since they joined the batch are not computed.
    done.clear();
    drop_abandoned_locked(r.batch, done);
    finish_dropped_locked(done);
    if (r.batch.items.empty()) continue;
    running_inputs_ += r.batch.items.size();
    dirty_ = true;  // the assembler starts on the next batch while this one runs
    assembler_cv_.notify_one();
    lock.unlock();
    const size_t n = r.batch.items.size();
    seqs.resize(n);
    skip.resize(n);
    for (size_t k = 0; k < n; ++k) {
      seqs[k] = &r.batch.items[k].job->inputs[r.batch.items[k].index];
      skip[k] = r.batch.items[k].job->pool_skip;
    }
    r.t0 = Clock::now();
    try {
      r.ticket = engine_.submit(seqs.data(), skip.data(), n);
    } catch (const std::exception& e) {
      r.error = std::string("inference failed: ") + e.what();
    }
    prof.lap(1);
    ++prof.batches;
    lock.lock();
    running_.push_back(std::move(r));
    collector_cv_.notify_one();
  }
  submitter_done_ = true;
  collector_cv_.notify_one();
}

// The collector: waits for the oldest batch in flight, finishes its rows into the jobs and
// delivers the jobs it completed. Each batch is delivered on its own and in order: its rows, then
// on_batch, then the on_done of the jobs it completed. A batch leaves the engine (room for the
// submitter) as soon as collect() returns, before its rows are finished and delivered.
void Batcher::collect_loop() {
  using Clock = EmbedJob::Clock;
  std::vector<float> rows;
  std::vector<std::shared_ptr<EmbedJob>> done;
  const size_t full_dim = engine_.full_dim();
  Clock::time_point last_end{};  // when the previous batch was collected
  StepProfile prof("collector", {"waiting", "collect", "finish", "complete", "deliver"});
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    collector_cv_.wait(lock, [&] { return !running_.empty() || submitter_done_; });
    if (running_.empty()) return;  // the submitter stopped and everything is delivered
    Running r = std::move(running_.front());
    running_.pop_front();
    ++collecting_;
    lock.unlock();
    prof.lap(0);
    Batch& batch = r.batch;
    const size_t n = batch.items.size();
    rows.resize(n * full_dim);
    std::string error = r.error;
    if (error.empty()) {
      try {
        engine_.collect(r.ticket, rows.data());
      } catch (const std::exception& e) {
        error = std::string("inference failed: ") + e.what();
      }
    }
    const auto t1 = Clock::now();
    {  // out of the engine: the submitter may send another batch while this one is delivered
      std::lock_guard<std::mutex> g(mu_);
      --collecting_;
      events_.fetch_add(1, std::memory_order_release);
    }
    executor_cv_.notify_one();
    prof.lap(1);
    // This batch's share of the engine's time: from its submission, or from the previous
    // batch's collection when it was submitted before that (pipelined): the shares add up to the
    // wall time, not to more.
    const auto t0 = std::max(r.t0, last_end);
    last_end = t1;
    const double secs = std::chrono::duration<double>(t1 - t0).count();
    if (error.empty())
      for (size_t k = 0; k < n; ++k) {
        EmbedJob& job = *batch.items[k].job;
        engine_.finish(rows.data() + k * full_dim, job.normalize, job.dims, job.out.data() + batch.items[k].index * job.dims);
      }
    prof.lap(2);

    lock.lock();
    done.clear();
    EmbedJob* last = nullptr;
    for (auto& item : batch.items) {
      EmbedJob& job = *item.job;
      if (&job != last) {  // count each job's share of inference once per batch
        if (job.inference_s == 0) job.first_batch_start = r.t0;
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
    running_inputs_ -= n;
    ++batches_;
    batch_inputs_ += n;
    batch_tokens_total_ += batch.tokens;
    lock.unlock();
    prof.lap(3);
    ++prof.batches;
    prof.jobs += done.size();
    // The batch observer first: a job's on_done may end its owner's wait (Embedder::embed returns,
    // its observer and the timings it fills go away), so the batch must be accounted before.
    if (on_batch_) on_batch_(n, batch.tokens, secs);
    if (opt_.deliver) {
      // Jobs whose on_done only passes them on go first, from here. The rest: one pool task per
      // ~8 inputs of finished jobs (eight single-text jobs share a task: one hand-over instead of
      // eight; a 32-text job gets its own, its answer's formatting being the task's work), but no
      // more tasks than BatcherOptions::deliver_tasks: past the pool's threads, more tasks only
      // add hand-overs to the collector's serial time.
      size_t total = 0, kept = 0;
      for (auto& j : done) {
        if (j->deliver_here) {
          if (j->on_done) j->on_done(j);
        } else {
          total += j->inputs.size();
          done[kept++] = std::move(j);
        }
      }
      done.resize(kept);
      constexpr size_t kInputsPerTask = 8;
      const size_t tasks = std::max<size_t>(1, std::min((total + kInputsPerTask - 1) / kInputsPerTask,
                                                        opt_.deliver_tasks ? opt_.deliver_tasks : SIZE_MAX));
      const size_t per_task = (total + tasks - 1) / tasks;  // inputs per task
      for (size_t i = 0; i < done.size();) {
        size_t end = i, inputs = 0;
        while (end < done.size() && inputs < per_task) inputs += done[end++]->inputs.size();
        auto chunk = std::make_shared<std::vector<std::shared_ptr<EmbedJob>>>(done.begin() + ptrdiff_t(i),
                                                                              done.begin() + ptrdiff_t(end));
        i = end;
        opt_.deliver([chunk] {
          for (auto& j : *chunk)
            if (j->on_done) j->on_done(j);
        });
      }
    } else {
      for (auto& j : done)
        if (j->on_done) j->on_done(j);
    }
    done.clear();  // a finished job must not outlive its answer (it holds the connection)
    r = Running{};  // drop job references before waiting again
    prof.lap(4);
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
