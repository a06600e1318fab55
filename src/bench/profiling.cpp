// Process-wide profiler behind include/embedkit/profiling.h: every Embedder::embed() call
// reports its EmbedTimings here; while profiling is on they are kept as per-call phase samples.
#include "embedkit/profiling.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>

#include "util/error.h"

namespace embedkit {

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  // numpy.percentile(method="linear"): rank = q/100 * (n-1), interpolate between neighbours.
  const double rank = std::clamp(q, 0.0, 100.0) / 100.0 * double(sorted.size() - 1);
  const size_t lo = size_t(std::floor(rank)), hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (rank - double(lo)) * (sorted[hi] - sorted[lo]);
}

Distribution summarize(std::vector<double> v) {
  Distribution d;
  d.count = v.size();
  if (v.empty()) return d;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  d.mean = sum / double(v.size());
  double ss = 0;
  for (double x : v) ss += (x - d.mean) * (x - d.mean);
  d.stddev = std::sqrt(ss / double(v.size()));
  d.p50 = percentile(v, 50);
  d.p95 = percentile(v, 95);
  d.p99 = percentile(v, 99);
  d.min = v.front();
  d.max = v.back();
  return d;
}

CallPhases phases_of(const EmbedTimings& t, size_t texts) {
  CallPhases p;
  p.texts = texts;
  p.tokens = t.tokens;
  p.batches = t.batches;
  p.graph_batches = t.device_graph_batches;
  p.total = t.total_s * 1e3;
  // Only the first chunk's tokenization and the waits for later chunks hold the model up.
  p.tokenize = (t.tokenize_first_s + t.tokenize_wait_s) * 1e3;
  p.queue = (t.pack_s + t.queue_s) * 1e3;
  p.device_timed = t.device_forward_ms > 0;
  if (p.device_timed) {
    p.h2d = t.device_h2d_ms;
    p.inference = t.device_forward_ms;
    p.d2h = t.device_d2h_ms;
    p.pool = t.device_pool_ms + (t.cpu_pool_s + t.postprocess_s) * 1e3;  // cpu_pool_s: Dense on the host
    p.launch = t.device_launch_s * 1e3;
  } else {
    p.inference = t.cpu_forward_s * 1e3;
    p.pool = (t.cpu_pool_s + t.postprocess_s) * 1e3;
  }
  p.other = p.total - (p.tokenize + p.queue + p.h2d + p.inference + p.pool + p.d2h + p.launch);
  return p;
}

namespace {

double CallPhases::*member_of(const std::string& name) {
  if (name == "tokenize") return &CallPhases::tokenize;
  if (name == "queue") return &CallPhases::queue;
  if (name == "h2d") return &CallPhases::h2d;
  if (name == "inference") return &CallPhases::inference;
  if (name == "pool") return &CallPhases::pool;
  if (name == "d2h") return &CallPhases::d2h;
  if (name == "launch") return &CallPhases::launch;
  if (name == "other") return &CallPhases::other;
  if (name == "total") return &CallPhases::total;
  std::string known;
  for (const char* k : kProfilePhases) known += std::string(known.empty() ? "" : ", ") + k;
  throw Error("profile phase \"" + name + "\": unknown (known: " + known + ")");
}

struct Recorder {
  std::atomic<bool> active{false};
  std::mutex mu;
  std::vector<CallPhases> calls;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

  Profile snapshot() {
    std::lock_guard<std::mutex> lock(mu);
    Profile p;
    p.calls = calls;
    p.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    for (auto& c : calls) {
      p.texts += c.texts;
      p.tokens += c.tokens;
      p.batches += c.batches;
      p.graph_batches += c.graph_batches;
    }
    return p;
  }
};

Recorder& recorder() {
  static Recorder r;
  return r;
}

}  // namespace

std::vector<double> Profile::samples(const std::string& name) const {
  auto m = member_of(name);
  std::vector<double> v;
  v.reserve(calls.size());
  for (auto& c : calls) v.push_back(c.*m);
  return v;
}

Distribution Profile::phase(const std::string& name) const { return summarize(samples(name)); }

void start_profiling() {
  auto& r = recorder();
  std::lock_guard<std::mutex> lock(r.mu);
  if (!r.active.exchange(true)) r.started = std::chrono::steady_clock::now();
}

Profile stop_profiling() {
  auto& r = recorder();
  r.active = false;
  return r.snapshot();
}

Profile profile_snapshot() { return recorder().snapshot(); }

void reset_metrics() {
  auto& r = recorder();
  std::lock_guard<std::mutex> lock(r.mu);
  r.calls.clear();
  r.started = std::chrono::steady_clock::now();
}

bool profiling_active() { return recorder().active.load(std::memory_order_relaxed); }

namespace detail {
void record_embed_call(const EmbedTimings& t, size_t texts) {
  auto& r = recorder();
  if (!r.active.load(std::memory_order_relaxed)) return;
  CallPhases p = phases_of(t, texts);
  std::lock_guard<std::mutex> lock(r.mu);
  r.calls.push_back(p);
}
}  // namespace detail

}  // namespace embedkit
