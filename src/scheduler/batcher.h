// Adaptive batcher: turns a stream of small requests (many connections, one or a few texts each)
// into full, well-shaped model batches.
//
//   submit(job) ─▶ pending items (one per input, oldest first)
//                    │ assembler thread: moves items that fit into the *next* batch while the
//                    │ current one runs (token budget + max requests; an item that does not fit
//                    │ is skipped, not a wall: shorter ones behind it still go in)
//                    ▼
//                 next batch ─▶ submitter thread (executor_): EmbeddingEngine::submit, as soon as
//                    │            the engine has room (pipeline_depth(): 2 on the GPU, where two
//                    │            small batches run side by side on the device; 1 on the CPU)
//                    ▼
//                 batches in flight ─▶ collector thread: collect (oldest first) → finish → job rows;
//                                a job whose last input is done gets its on_done callback.
//
// Two threads, so that a batch is submitted the moment the engine has room instead of after the
// batch ahead of it is waited for and delivered. Dispatch is immediate when the engine has room
// (an optional max_wait lets a batch that is not yet full wait for company). Backpressure:
// submit() refuses a job that would take the inputs in flight past max_inputs. A cancelled job
// (client gone) has its queued inputs dropped.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/engine.h"

namespace embedkit {

struct BatcherOptions {
  size_t max_batch_tokens = 0;        // 0 = the engine's budget
  size_t max_batch_requests = 0;      // inputs per batch; 0 = no limit
  std::chrono::microseconds max_wait{0};  // how long a partial batch may wait for more inputs
  size_t max_inputs = 0;              // inputs queued or running at once; 0 = no limit
  // Where jobs' on_done callbacks run. Empty: on the executor thread, one after another. Set (the
  // server passes its worker pool): the executor hands them over ~8 inputs' worth of jobs per task, so a batch
  // of hundreds of single-text requests costs the executor a few dozen hand-overs instead of
  // hundreds (each a lock and a thread wake-up), and the device is fed again sooner.
  std::function<void(std::function<void()>)> deliver;
  // With deliver: at most this many tasks per batch (the pool's threads; 0 = no cap). Each
  // hand-over costs the executor a lock and a thread wake-up (~40 µs measured under load), so a
  // batch of 64 32-text jobs is handed over as 8 tasks of 8 jobs, not 64 of one.
  size_t deliver_tasks = 0;
  // A batch takes at most 1/split_ways of the tokens waiting (queued or being assembled), but no
  // less than split_min_tokens (and never more than max_batch_tokens); 0 = off (the default;
  // `embedkit serve --batch-split`, default 4). Without it, a wave of requests that arrive
  // together leaves as one batch, the whole wave waits for it, and the clients' next requests
  // arrive together again — a convoy. In quarters, the first answers go out while the device
  // works on the rest and the flow stays continuous (H100, 64 connections × 32 short texts:
  // +20%, p99 halved; docs/benchmarks.md, "Server on the H100"); a deep queue fills whole budgets.
  size_t split_ways = 0;
  size_t split_min_tokens = 8192;
  // While a batch is in the engine, the next one is submitted beside it (pipeline_depth() > 1)
  // only once it holds this many tokens; a smaller one waits for the batch ahead to be collected
  // and grows meanwhile. Two small batches at once each pay the pass's fixed cost and slow each
  // other down; one twice the size costs little more than one (EMBEDKIT_OVERLAP_MIN_TOKENS
  // overrides, where 0 means always beside). 0 here: the engine's choice,
  // EmbeddingEngine::overlap_min_tokens() — 320 on Hopper's small-batch CUTLASS GEMMs, else 2,048.
  size_t overlap_min_tokens = 0;
  // Before the submitter sleeps (waiting for inputs, or for room in the engine), it polls this
  // long for either: a GPU batch is over in ~0.2 ms, and a thread woken from its condition
  // variable starts it later than one that watches (`embedkit serve --busy-poll-us`; costs a core
  // while it polls, so off on the CPU, where the cores run the model). 0 = sleep at once.
  std::chrono::microseconds submit_spin{0};
};

// Tokens the batch being assembled may take while `waiting` tokens wait (queued or already in
// that batch): the budget, or with split_ways its share of what waits (see BatcherOptions).
inline size_t batch_token_cap(const BatcherOptions& o, size_t waiting) {
  if (o.split_ways == 0) return o.max_batch_tokens;
  return std::min(o.max_batch_tokens, std::max(o.split_min_tokens, waiting / o.split_ways));
}

// One request's inputs and where their embeddings go.
struct EmbedJob {
  using Clock = std::chrono::steady_clock;
  std::vector<Encoding> inputs;
  int32_t pool_skip = 0;   // prompt tokens excluded from pooling (same prompt for the whole job)
  bool normalize = true;
  size_t dims = 0;         // output dimensions (≤ the engine's full_dim)
  std::vector<float> out;  // [inputs, dims], filled by the batcher
  std::atomic<bool> cancelled{false};
  std::shared_ptr<std::atomic<bool>> client_gone;  // set by the server when the client leaves
  bool dropped() const { return cancelled.load(std::memory_order_relaxed) || (client_gone && client_gone->load()); }
  // Called once when every input is done (or the job failed: error non-empty): from the executor
  // thread (keep it short: hand the job to another thread for formatting), or through
  // BatcherOptions::deliver when set.
  std::function<void(const std::shared_ptr<EmbedJob>&)> on_done;
  // on_done only hands the job to another thread (a lock and a push): the executor calls it
  // itself even when BatcherOptions::deliver is set (the server's small requests, whose answers
  // are formatted on their connection's I/O thread).
  bool deliver_here = false;
  std::string error;

  // Timings, filled by the batcher.
  Clock::time_point enqueued, first_batch_start, last_batch_end;
  // Sum of the model times of the batches this job's inputs were in: each batch's share of the
  // executor's time, from its submission (or, pipelined, from the previous batch's collection)
  // to its collection. first_batch_start: when its first batch was submitted.
  double inference_s = 0;
  size_t tokens() const {
    size_t t = 0;
    for (auto& e : inputs) t += e.size();
    return t;
  }

 private:
  friend class Batcher;
  size_t remaining_ = 0;  // guarded by Batcher::mu_
};

struct BatcherStats {  // a snapshot, for /metrics and logs
  size_t queued_inputs = 0, running_inputs = 0, batches = 0, batch_inputs = 0, batch_tokens = 0;
};

class Batcher {
 public:
  // `on_batch(inputs, tokens, seconds)` after every batch (metrics); may be empty.
  Batcher(EmbeddingEngine& engine, BatcherOptions options,
          std::function<void(size_t, size_t, double)> on_batch = {});
  ~Batcher();  // finishes every accepted job, then stops the threads
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues a job; false (nothing queued) when it would exceed max_inputs. Jobs with no inputs
  // complete at once.
  bool submit(const std::shared_ptr<EmbedJob>& job);
  // Whether a job of n inputs would be taken now (submit() decides; this lets a server refuse a
  // request before spending time on tokenizing it).
  bool has_room(size_t n);
  // Blocks until nothing is queued or running.
  void wait_idle();
  BatcherStats stats() const;
  const BatcherOptions& options() const { return opt_; }

 private:
  struct Item {
    std::shared_ptr<EmbedJob> job;
    uint32_t index;  // input within the job
  };
  struct Batch {
    std::vector<Item> items;
    size_t tokens = 0;
    EmbedJob::Clock::time_point oldest;
  };
  // A batch handed to the engine and not yet collected.
  struct Running {
    Batch batch;
    EmbeddingEngine::RunTicket ticket = 0;
    EmbedJob::Clock::time_point t0;  // submitted
    std::string error;               // submit failed
  };
  void assembler_loop();
  void submit_loop();   // the executor_ thread: batches into the engine
  void collect_loop();  // the collector_ thread: batches out of the engine, rows to their jobs
  bool room_to_submit_locked() const;  // one more batch may enter the engine now
  bool fill_next_locked();  // moves fitting pending items into next_; true if any moved
  void purge_dropped_locked();  // drops cancelled / abandoned inputs from pending_ and next_
  // Moves a batch's cancelled / abandoned inputs out (their jobs to `done` once complete).
  void drop_abandoned_locked(Batch& batch, std::vector<std::shared_ptr<EmbedJob>>& done);
  void finish_dropped_locked(std::vector<std::shared_ptr<EmbedJob>>& done);  // error + on_done, clears
  bool room_locked(size_t n);   // max_inputs allows n more inputs (if not: asks for a purge)
  bool ready_locked() const;  // next_ may be dispatched now (non-empty; full, or no/expired max_wait)
  bool full_locked() const;   // next_ holds the batch's token cap or max_batch_requests
  size_t batch_cap_locked() const;  // tokens the batch being assembled may take (split_ways)
  void complete_locked(const std::shared_ptr<EmbedJob>& job, std::vector<std::shared_ptr<EmbedJob>>& done);

  EmbeddingEngine& engine_;
  BatcherOptions opt_;
  std::function<void(size_t, size_t, double)> on_batch_;

  mutable std::mutex mu_;
  std::condition_variable assembler_cv_, executor_cv_, collector_cv_, idle_cv_;
  std::list<Item> pending_;  // oldest first
  size_t pending_tokens_ = 0;  // tokens of pending_
  bool dirty_ = false;        // pending_ grew or next_ was taken: the assembler has work
  Batch next_;
  // running_inputs_: inputs of the batches submitted to the engine and not yet delivered.
  size_t in_flight_inputs_ = 0, running_inputs_ = 0, batches_ = 0, batch_inputs_ = 0, batch_tokens_total_ = 0;
  bool stopping_ = false;
  bool purge_requested_ = false;   // submit() refused a job: the assembler drops abandoned inputs
  bool executor_waiting_ = false;  // the submitter waits for inputs: submit() wakes it instead of the assembler
  // Batches in the engine: submitted and waiting for the collector (oldest first), and being
  // collected. At most depth_ (the engine's pipeline depth) at once.
  std::deque<Running> running_;
  size_t collecting_ = 0, depth_ = 1;
  std::atomic<uint64_t> events_{0};  // inputs queued plus batches collected: what the polling submitter watches
  bool submitter_done_ = false;  // submit_loop returned (stopping, nothing queued)
  std::thread assembler_, executor_, collector_;
};

}  // namespace embedkit
