// EmbedKit profiling hooks: per-phase time distributions of every Embedder::embed() call in
// this process, for any program that embeds EmbedKit (the `embedkit bench` command uses them).
//
//   embedkit::start_profiling();
//   for (...) embedder->embed(batch);
//   embedkit::Profile p = embedkit::stop_profiling();
//   p.phase("inference").p95;   // milliseconds
//
// Phases of one embed() call (milliseconds, one sample per call):
//   tokenize   tokenization on the critical path (the model waited for it)
//   queue      sort by length, then time in the batcher outside the model: batch assembly,
//              hand-offs, packing, rows finished (normalized) on the executor thread
//   h2d        host→device copy        (GPU: CUDA events; 0 on the CPU)
//   inference  the encoder's forward   (GPU: CUDA events; CPU: host clock around the forward)
//   pool       pooling, Dense, normalize, truncation, rows back in input order
//   d2h        device→host copy        (GPU: CUDA events; 0 on the CPU)
//   launch     host time of the GPU calls that their events do not cover: staging the inputs,
//              submitting the work, waiting for it (host clock minus events; 0 on the CPU). Batches
//              are pipelined on the GPU (batch i+1 queued before batch i is collected), so once the
//              device is busy this is ~0, and packing a batch while the previous one runs is not
//              counted in `queue` either
//   other      total minus the phases above (allocation, bookkeeping)
//   total      host wall time of the call
// On the GPU a batch replayed from a CUDA graph is timed by one event pair around the whole
// replay; its h2d/pool/d2h fall into `inference` (Profile::graph_batches counts them; set
// EMBEDKIT_CUDA_GRAPHS=0 for a split of every batch).
//
// The profiler is process-wide and thread-safe; when it is stopped, embed() pays one atomic load.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "embedkit/embedkit.h"

namespace embedkit {

// Summary of a sample set. Percentiles interpolate linearly between order statistics (numpy's
// default "linear" method); stddev is the population standard deviation. Empty → count 0, zeros.
struct Distribution {
  size_t count = 0;
  double mean = 0, stddev = 0, p50 = 0, p95 = 0, p99 = 0, min = 0, max = 0;
};
Distribution summarize(std::vector<double> samples);
double percentile(const std::vector<double>& sorted, double q);  // q in [0, 100]

inline constexpr const char* kProfilePhases[] = {"tokenize", "queue", "h2d",    "inference", "pool",
                                                 "d2h",      "launch", "other", "total"};

// Phase times of one embed() call in milliseconds (see the phase list above).
struct CallPhases {
  double tokenize = 0, queue = 0, h2d = 0, inference = 0, pool = 0, d2h = 0, launch = 0, other = 0, total = 0;
  size_t texts = 0, tokens = 0, batches = 0, graph_batches = 0;
  bool device_timed = false;  // h2d/inference/pool/d2h came from CUDA events
};
CallPhases phases_of(const EmbedTimings& t, size_t texts);

struct Profile {
  std::vector<CallPhases> calls;  // in completion order
  double wall_s = 0;              // from start_profiling() to stop/snapshot
  size_t texts = 0, tokens = 0, batches = 0, graph_batches = 0;
  // Distribution of one phase over the calls (name from kProfilePhases; throws Error otherwise).
  Distribution phase(const std::string& name) const;
  std::vector<double> samples(const std::string& name) const;
};

void start_profiling();  // starts (or keeps) collecting; samples collected so far are kept
Profile stop_profiling();  // stops and returns what was collected
Profile profile_snapshot();  // what was collected so far, without stopping
void reset_metrics();  // drops the collected samples and restarts the wall clock
bool profiling_active();

namespace detail {
// Called by Embedder::embed() at the end of every call.
void record_embed_call(const EmbedTimings& t, size_t texts);
}  // namespace detail

}  // namespace embedkit
