// EmbedBench local runner: scenarios executed in-process through the public Embedder API, timed
// by the library's profiling hooks (include/embedkit/profiling.h), with resource monitors.
#include <omp.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "bench/bench.h"
#include "bench/monitors.h"
#include "ops/blas_kernels.h"
#include "cuda/bert_cuda.h"
#include "embedkit/profiling.h"
#include "util/error.h"
#include "util/utf8.h"

#if __has_include("embedkit_git_commit.h")
#include "embedkit_git_commit.h"
#endif
#ifndef EMBEDKIT_GIT_COMMIT
#define EMBEDKIT_GIT_COMMIT "unknown"
#endif
#ifndef EMBEDKIT_SOURCE_DIR
#define EMBEDKIT_SOURCE_DIR "."
#endif

namespace embedkit::bench {

namespace fs = std::filesystem;

ScenarioSpec default_scenario(const std::string& kind) {
  ScenarioSpec s;
  s.name = s.kind = kind;
  if (kind == "latency") {
    s.corpus = "short", s.batch_size = 1, s.iterations = 1000, s.warmup = 100;
  } else if (kind == "throughput") {
    s.corpus = "mixed", s.batch_size = 128, s.iterations = 10, s.warmup = 2;
  } else if (kind == "memory") {
    s.corpus = "long", s.batch_size = 256, s.iterations = 5, s.warmup = 1;
  } else if (kind == "comparison") {
    s.corpus = "mixed", s.batch_size = 32, s.iterations = 100, s.warmup = 5;
  } else if (kind == "sweep") {
    s.corpus = "mixed", s.batch_size = 1024, s.iterations = 3, s.warmup = 1;
    s.sweep_batch_sizes = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
  } else {
    std::string known;
    for (const char* k : kScenarioKinds) known += std::string(known.empty() ? "" : ", ") + k;
    throw Error("scenario \"" + kind + "\": unknown (known: " + known + ")");
  }
  return s;
}

std::string git_commit() { return EMBEDKIT_GIT_COMMIT; }

std::vector<std::string> load_corpus(const std::string& name, const std::string& corpus_dir) {
  std::vector<std::string> tried;
  std::string path;
  const bool named = name == "short" || name == "mixed" || name == "long";
  if (!named) {
    path = name;
    tried.push_back(name);
  } else {
    std::vector<std::string> dirs;
    if (!corpus_dir.empty()) dirs.push_back(corpus_dir);
    if (const char* env = std::getenv("EMBEDKIT_BENCH_CORPORA")) dirs.push_back(env);
    if (corpus_dir.empty()) {
      dirs.push_back("bench/corpora");
      std::error_code ec;
      fs::path exe = fs::read_symlink("/proc/self/exe", ec);
      if (!ec) dirs.push_back((exe.parent_path().parent_path() / "bench" / "corpora").string());
      dirs.push_back(std::string(EMBEDKIT_SOURCE_DIR) + "/bench/corpora");
    }
    for (auto& d : dirs) {
      std::string p = d + "/" + name + ".txt";
      tried.push_back(p);
      if (fs::exists(p)) {
        path = p;
        break;
      }
    }
  }
  std::ifstream f(path);
  if (path.empty() || !f) {
    std::string t;
    for (auto& p : tried) t += (t.empty() ? "" : ", ") + p;
    throw Error("corpus \"" + name + "\": cannot open (tried " + t +
                "); give --corpus-dir DIR holding short.txt, mixed.txt and long.txt, or a text file with one text per line");
  }
  std::vector<std::string> lines;
  std::string line;
  size_t no = 0;
  while (std::getline(f, line)) {
    ++no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    size_t bad = utf8::first_invalid(line);
    if (bad != std::string::npos)
      throw Error(path + ":" + std::to_string(no) + ": invalid UTF-8 at byte " + std::to_string(bad + 1) + " of the line");
    lines.push_back(line);
  }
  if (lines.empty()) throw Error(path + ": corpus has no non-blank lines");
  return lines;
}

// ---- environment --------------------------------------------------------------------------
static std::string first_match(const std::string& file, const std::string& key) {
  std::ifstream f(file);
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) {
      std::string v = line.substr(line.find_first_of(":=", key.size()) + 1);
      v.erase(0, v.find_first_not_of(" \t\""));
      while (!v.empty() && (v.back() == '"' || v.back() == ' ')) v.pop_back();
      return v;
    }
  return "";
}

Value machine_info() {
  Value m = Value::object();
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  utsname u{};
  uname(&u);
  m["hostname"] = std::string(host);
  m["cpu"] = first_match("/proc/cpuinfo", "model name");
  m["logical_cores"] = int(std::thread::hardware_concurrency());
  m["openblas_kernels"] = openblas_core();  // the CPU path's GEMMs (ops/blas_kernels.h)
  std::string mem = first_match("/proc/meminfo", "MemTotal");
  m["memory_gib"] = mem.empty() ? 0.0 : std::round(std::stod(mem) / (1024.0 * 1024.0) * 10) / 10;
  m["os"] = first_match("/etc/os-release", "PRETTY_NAME");
  m["kernel"] = std::string(u.release);
  m["arch"] = std::string(u.machine);
  return m;
}

static std::string utc_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// ---- progress -----------------------------------------------------------------------------
ProgressBar::ProgressBar(bool enabled, std::string label, size_t total)
    : on_(enabled && isatty(2)), label_(std::move(label)), total_(std::max<size_t>(total, 1)), t0_(now_s()) {}

void ProgressBar::update(size_t done) {
  if (!on_) return;
  const double t = now_s();
  if (done < total_ && t - last_ < 0.1) return;
  last_ = t;
  const int width = 28, fill = int(double(width) * double(std::min(done, total_)) / double(total_));
  std::fprintf(stderr, "\r  %-22s [%.*s%*s] %zu/%zu  %.1f s", label_.c_str(), fill, "############################",
               width - fill, "", done, total_, t - t0_);
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (!on_) return;
  last_ = 0;
  update(total_);
  std::fprintf(stderr, "\n");
}

// A distribution as a report value: count, mean, stddev, p50, p95, p99, min, max.
Value dist_value(const Distribution& d) {
  Value v = Value::object();
  v["count"] = d.count;
  v["mean"] = d.mean;
  v["stddev"] = d.stddev;
  v["p50"] = d.p50;
  v["p95"] = d.p95;
  v["p99"] = d.p99;
  v["min"] = d.min;
  v["max"] = d.max;
  return v;
}

// ---- measurement --------------------------------------------------------------------------
namespace {


struct Engine {
  std::unique_ptr<Embedder> embedder;
  EmbedderOptions options;
  ModelInfo info;
  bool gpu = false;
};

Engine load_engine(const EmbedderOptions& o) {
  Engine e;
  e.options = o;
  e.embedder = Embedder::load(o);
  e.info = e.embedder->info();
  e.gpu = e.info.device.rfind("cpu", 0) != 0;
  return e;
}

Value engine_value(const Engine& e) {
  Value v = Value::object();
  v["model"] = e.options.model;
  v["model_dir"] = e.info.dir;
  v["architecture"] = e.info.architecture;
  v["layers"] = e.info.num_layers;
  v["hidden_size"] = e.info.hidden_size;
  v["dim"] = e.info.dim;
  v["max_seq_length"] = e.info.max_seq_length;
  v["device"] = e.info.device;
  v["dtype"] = e.options.dtype;
  v["threads"] = e.options.threads;
  v["batch_tokens"] = e.options.batch_tokens;
  return v;
}

// Texts for consecutive calls: slices of `batch` texts walking round the corpus.
class BatchSource {
 public:
  BatchSource(const std::vector<std::string>& corpus, size_t batch) : corpus_(corpus), batch_(batch) {}
  const std::vector<std::string>& next() {
    cur_.clear();
    for (size_t i = 0; i < batch_; ++i) cur_.push_back(corpus_[pos_++ % corpus_.size()]);
    return cur_;
  }
  void rewind() { pos_ = 0; }

 private:
  const std::vector<std::string>& corpus_;
  size_t batch_, pos_ = 0;
  std::vector<std::string> cur_;
};

struct Measured {
  Value v;
  double texts_per_s = 0;
};

// Warm-up, then `iterations` timed embed() calls under the profiler and the resource monitor,
// each phase stretched to its time floor (see ScenarioSpec::warmup_seconds / min_seconds).
Measured measure(Engine& eng, const std::vector<std::string>& corpus, size_t batch, int iterations, int warmup,
                 double warmup_s, double min_s, const BenchOptions& opt, const std::string& label, bool keep_samples) {
  if (batch == 0) throw Error(label + ": batch size must be at least 1");
  if (iterations < 1) throw Error(label + ": iterations must be at least 1");
  if (warmup < 0) throw Error(label + ": warm-up iterations must be >= 0");
  if (warmup_s < 0) warmup_s = eng.gpu ? kGpuWarmupSeconds : 0.0;
  if (min_s < 0) min_s = eng.gpu ? kGpuMinSeconds : 0.0;
  BatchSource src(corpus, batch);
  ProgressBar bar(opt.progress, label, size_t(warmup + iterations));
  int warmup_run = 0;
  for (const double w0 = now_s(); warmup_run < warmup || now_s() - w0 < warmup_s; ++warmup_run) {
    // Past the first `iterations` batches, start again: warm exactly what will be timed.
    if (warmup_run > 0 && warmup_run % iterations == 0) src.rewind();
    eng.embedder->embed(src.next());
    bar.update(size_t(std::min(warmup_run + 1, warmup)));
  }
  src.rewind();
  ResourceMonitor::Options mo;
  mo.interval_ms = opt.sample_ms;
  mo.gpu = eng.gpu;
  mo.cpu_watts_per_busy_core = opt.cpu_watts_per_core;
  ResourceMonitor monitor(mo);
  std::vector<double> wall_ms, iter_tput;
  size_t texts = 0;
  monitor.start();
  reset_metrics();
  start_profiling();
  int run = 0;
  for (const double t_start = now_s(); run < iterations || now_s() - t_start < min_s; ++run) {
    const auto& texts_in = src.next();
    const double t0 = now_s();
    Embeddings e = eng.embedder->embed(texts_in);
    const double dt = now_s() - t0;
    EK_CHECK(e.count == texts_in.size(), "embed() returned a wrong row count");
    wall_ms.push_back(dt * 1e3);
    iter_tput.push_back(double(texts_in.size()) / dt);
    texts += texts_in.size();
    bar.update(size_t(warmup + std::min(run + 1, iterations)));
  }
  Profile prof = stop_profiling();
  MonitorSummary mem = monitor.stop();
  bar.finish();
  EK_CHECK(prof.calls.size() == size_t(run), "profiler missed calls");

  double wall_sum = 0;
  for (double w : wall_ms) wall_sum += w;
  Value r = Value::object();
  r["batch_size"] = batch;
  r["iterations"] = run;
  r["iterations_requested"] = iterations;
  r["warmup"] = warmup_run;
  r["warmup_requested"] = warmup;
  r["warmup_seconds_floor"] = warmup_s;
  r["min_seconds_floor"] = min_s;
  r["texts"] = texts;
  r["tokens"] = prof.tokens;
  r["batches"] = prof.batches;
  r["wall_s"] = wall_sum / 1e3;
  Value& tp = r["throughput"];
  tp["texts_per_s"] = double(texts) / (wall_sum / 1e3);
  tp["tokens_per_s"] = double(prof.tokens) / (wall_sum / 1e3);
  tp["per_iteration_texts_per_s"] = dist_value(summarize(iter_tput));
  r["latency_ms"] = dist_value(summarize(wall_ms));

  // Phase breakdown: one distribution per phase; the named phases (all but "other") must add up
  // to the independently measured wall time around embed().
  Value& ph = r["phases_ms"];
  double named_sum = 0;
  for (const char* name : kProfilePhases) {
    ph[name] = dist_value(prof.phase(name));
    if (std::string(name) != "other" && std::string(name) != "total")
      for (double x : prof.samples(name)) named_sum += x;
  }
  ph["wall"] = dist_value(summarize(wall_ms));
  Value& chk = r["phase_check"];
  chk["phases_sum_ms"] = named_sum;
  chk["measured_total_ms"] = wall_sum;
  chk["ratio"] = named_sum / wall_sum;
  chk["within_5pct"] = std::fabs(named_sum / wall_sum - 1.0) <= 0.05;
  chk["device_timed"] = !prof.calls.empty() && prof.calls.front().device_timed;
  chk["graph_batches"] = prof.graph_batches;
  chk["note"] = prof.graph_batches
                    ? "batches replayed from CUDA graphs are timed whole: their copies and pooling are inside inference"
                    : "h2d/inference/pool/d2h from CUDA events on the GPU, host clock on the CPU";

  // Memory.
  Value& m = r["memory"];
  m["rss_peak_mb"] = mem.rss_peak_mb;
  m["rss_peak_scope"] = mem.rss_peak_since_start ? "this scenario (VmHWM reset at its start)" : "whole process (VmHWM)";
  m["rss_avg_mb"] = mem.rss_avg_mb;
  m["rss_start_mb"] = mem.rss_start_mb;
  if (mem.gpu) {
    m["gpu_used_avg_mb"] = mem.gpu_used_avg_mb;
    m["gpu_used_peak_mb"] = mem.gpu_used_peak_mb;
    m["gpu_used_start_mb"] = mem.gpu_used_start_mb;
    m["gpu_scope"] = "whole device, sampled (cudaMemGetInfo total - free)";
  }
  Value& bpe = m["bytes_per_embedding"];
  const double d = double(eng.info.dim);
  bpe["float32"] = 4 * d;
  bpe["float16"] = 2 * d;
  bpe["int8"] = d;
  bpe["binary"] = std::ceil(d / 8);
  m["bytes_per_embedding_note"] = "dim x element size (binary: 1 bit per dimension, packed); calibration ranges of int8 "
                                  "are per dimension, shared by all rows";

  // Energy.
  Value& en = r["energy"];
  if (eng.gpu) {
    en["gpu_counter"] = mem.gpu_energy;
    en["gpu_note"] = mem.gpu_energy_note;
    if (mem.gpu_energy) {
      en["gpu_j"] = mem.gpu_energy_j;
      en["gpu_j_per_1000_embeddings"] = mem.gpu_energy_j / double(texts) * 1000.0;
    }
    if (mem.gpu_power_avg_w >= 0) {
      en["gpu_power_avg_w"] = mem.gpu_power_avg_w;
      en["gpu_power_source"] = mem.gpu_power_source;
      en["gpu_power_x_time_j"] = mem.gpu_energy_from_power_j;
      if (mem.gpu_energy && mem.gpu_energy_from_power_j > 0) {
        en["gpu_counter_vs_power_ratio"] = mem.gpu_energy_j / mem.gpu_energy_from_power_j;
        en["gpu_counter_vs_power_within_10pct"] = std::fabs(mem.gpu_energy_j / mem.gpu_energy_from_power_j - 1) <= 0.10;
      }
    }
    if (mem.gpu_util_avg_pct >= 0) en["gpu_util_avg_pct"] = mem.gpu_util_avg_pct;
  }
  en["cpu_method"] = mem.cpu_energy_method;
  en["cpu_note"] = mem.cpu_energy_note;
  en["cpu_j"] = mem.cpu_energy_j;
  en["cpu_j_per_1000_embeddings"] = mem.cpu_energy_j / double(texts) * 1000.0;
  en["cpu_seconds"] = mem.cpu_seconds;
  en["monitor_wall_s"] = mem.wall_s;

  if (keep_samples) {
    Value& s = r["samples"];
    std::vector<double> lat = wall_ms;
    if (lat.size() > 5000) lat.resize(5000);
    s["latency_ms"] = Value::array_of(lat);
    std::vector<double> t, rss, gpu, power, util;
    const size_t step = std::max<size_t>(1, mem.timeline.size() / 400);
    for (size_t i = 0; i < mem.timeline.size(); i += step) {
      auto& p = mem.timeline[i];
      t.push_back(std::round(p.t_s * 1e3) / 1e3);
      rss.push_back(std::round(p.rss_mb * 10) / 10);
      gpu.push_back(std::round(p.gpu_used_mb * 10) / 10);
      power.push_back(std::round(p.gpu_power_w * 10) / 10);
      util.push_back(p.gpu_util_pct);
    }
    s["timeline"]["t_s"] = Value::array_of(t);
    s["timeline"]["rss_mb"] = Value::array_of(rss);
    if (eng.gpu) {
      s["timeline"]["gpu_used_mb"] = Value::array_of(gpu);
      s["timeline"]["gpu_power_w"] = Value::array_of(power);
      s["timeline"]["gpu_util_pct"] = Value::array_of(util);
    }
  }
  return Measured{r, double(texts) / (wall_sum / 1e3)};
}

int resolved_threads(int t) { return t > 0 ? t : omp_get_num_procs(); }

Value run_sweep(Engine& eng, const ScenarioSpec& s, const std::vector<std::string>& corpus, const BenchOptions& opt) {
  Value r = Value::object();
  const bool budgets = !s.sweep_token_budgets.empty();
  const std::vector<size_t>& settings = budgets ? s.sweep_token_budgets : s.sweep_batch_sizes;
  if (settings.empty()) throw Error(s.name + ": nothing to sweep (give --sweep-batch-sizes or --sweep-token-budgets)");
  r["swept"] = budgets ? "token_budget" : "batch_size";
  for (size_t x : settings)
    if (x == 0) throw Error(s.name + ": sweep values must be at least 1");
  if (s.sweep_rounds < 1) throw Error(s.name + ": sweep rounds must be at least 1");
  // Other work on the machine comes in spells of seconds: with one point measured after the other, a
  // slow spell lands on one setting and makes it lose (CI once chose batch 128 at 5% under batch 32).
  // So the points take turns over sweep_rounds rounds (forward, then backward, ...), and each point
  // keeps its best round: interference only ever lowers a figure. A best-of is fair only between
  // equal work, and the corpus mixes lengths, so in every round every point embeds the same texts:
  // the corpus's first T, T a multiple of the largest batch (every batch of a power-of-two sweep
  // divides it; another size walks up to one batch further) and at least sweep_min_texts / rounds.
  const size_t n = settings.size();
  const int rounds = s.sweep_rounds;
  std::vector<size_t> batch(n);
  for (size_t k = 0; k < n; ++k) batch[k] = budgets ? s.batch_size : settings[k];
  const size_t max_batch = *std::max_element(batch.begin(), batch.end());
  const size_t min_round_texts = (s.sweep_min_texts + size_t(rounds) - 1) / size_t(rounds);
  const size_t round_texts = std::max<size_t>(1, (min_round_texts + max_batch - 1) / max_batch) * max_batch;
  std::vector<int> round_calls(n);
  for (size_t k = 0; k < n; ++k)  // and `iterations` calls a point over all rounds
    round_calls[k] = std::max<int>(int((round_texts + batch[k] - 1) / batch[k]), (s.iterations + rounds - 1) / rounds);
  std::vector<std::optional<Measured>> best_round(n);
  std::vector<std::vector<double>> round_tput(n);
  std::vector<int> calls_run(n, 0);  // past round_calls where a time floor stretched a round
  // The time floor is shared out over the rounds; warm-up comes once per engine (below).
  const double round_min_s = (s.min_seconds >= 0 ? s.min_seconds : eng.gpu ? kGpuMinSeconds : 0.0) / rounds;
  for (int round = 0; round < rounds; ++round) {
    for (size_t i = 0; i < n; ++i) {
      const size_t k = round % 2 == 0 ? i : n - 1 - i;
      Engine owned;
      Engine* e = &eng;
      if (budgets) {
        // An engine for this token budget, loaded for this round only (the load is not timed; keeping
        // one a budget would hold every copy of a large model's weights at once).
        EmbedderOptions o = eng.options;
        o.batch_tokens = settings[k];
        owned = load_engine(o);
        e = &owned;
      }
      const bool first = round == 0 || budgets;  // a fresh engine, or this point's first round
      Measured m = measure(*e, corpus, batch[k], round_calls[k], first ? s.warmup : 0, first ? s.warmup_seconds : 0.0,
                           round_min_s, opt,
                           s.name + (budgets ? " budget " : " batch ") + std::to_string(settings[k]) + " round " +
                               std::to_string(round + 1) + "/" + std::to_string(rounds),
                           false);
      round_tput[k].push_back(m.texts_per_s);
      calls_run[k] += int(m.v.num("iterations"));
      if (!best_round[k] || m.texts_per_s > best_round[k]->texts_per_s) best_round[k] = std::move(m);
    }
  }
  Value points = Value::array();
  std::vector<double> tput;
  for (size_t k = 0; k < n; ++k) {
    const Measured& m = *best_round[k];
    Value p = Value::object();
    p[budgets ? "token_budget" : "batch_size"] = settings[k];
    p["batch_size"] = batch[k];
    p["iterations"] = calls_run[k];
    p["rounds"] = rounds;
    p["round_texts_per_s"] = Value::array_of(round_tput[k]);
    // The figures below are the best round's.
    p["texts_per_s"] = m.texts_per_s;
    p["tokens_per_s"] = m.v.at("throughput").num("tokens_per_s");
    p["latency_p50_ms"] = m.v.at("latency_ms").num("p50");
    p["latency_p99_ms"] = m.v.at("latency_ms").num("p99");
    p["rss_peak_mb"] = m.v.at("memory").num("rss_peak_mb");
    p["phase_check"] = m.v.at("phase_check");
    points.push_back(p);
    tput.push_back(m.texts_per_s);
  }
  const size_t best = size_t(std::max_element(tput.begin(), tput.end()) - tput.begin());
  // The smallest setting within the tolerance of the best: same throughput, less latency and memory.
  size_t chosen = best;
  for (size_t k = 0; k < settings.size(); ++k)
    if (tput[k] >= (1.0 - s.sweep_tolerance) * tput[best] && settings[k] < settings[chosen]) chosen = k;
  r["points"] = points;
  r["best"] = settings[best];
  r["best_texts_per_s"] = tput[best];
  r["chosen"] = settings[chosen];
  r["chosen_texts_per_s"] = tput[chosen];
  r["tolerance"] = s.sweep_tolerance;
  r["rounds"] = rounds;
  r["round_texts"] = round_texts;
  r["rule"] = "smallest " + std::string(budgets ? "token budget" : "batch size") +
              " whose throughput (its best of " + std::to_string(rounds) +
              " interleaved rounds) is within the tolerance of the best point's";
  return r;
}

Value run_comparison(const Engine& base, const ScenarioSpec& s, const std::vector<std::string>& corpus,
                     const BenchOptions& opt) {
  std::vector<std::string> models = s.models, devices = s.devices, dtypes = s.dtypes;
  std::vector<int> threads = s.threads;
  std::string why;
  const bool have_gpu = cuda::available(&why);
  if (models.empty()) models = {base.options.model};
  if (devices.empty()) devices = have_gpu ? std::vector<std::string>{"cpu", "cuda"} : std::vector<std::string>{"cpu"};
  if (dtypes.empty()) dtypes = {"auto"};
  if (threads.empty()) {
    threads = {resolved_threads(base.options.threads)};
    // On a CPU-only machine the side-by-side is one core against all of them.
    if (!have_gpu && threads[0] > 1 && s.devices.empty()) threads.insert(threads.begin(), 1);
  }
  Value rows = Value::array();
  std::vector<Value> skipped;
  for (auto& model : models)
    for (auto& device : devices)
      for (auto& dtype : dtypes)
        for (int th : threads) {
          if (device != "cpu" && threads.size() > 1 && th != threads.back()) continue;  // threads: CPU knob
          EmbedderOptions o = base.options;
          o.model = model;
          o.device = device;
          o.dtype = dtype;
          o.threads = resolved_threads(th);
          // A combination the engine refuses (cpu + fp16, cuda without a GPU, ...) stays in the
          // table with the engine's reason; the run fails only when nothing could run.
          Engine e;
          try {
            e = load_engine(o);
          } catch (const Error& err) {
            Value row = Value::object();
            row["engine"]["model"] = model;
            row["engine"]["device"] = device;
            row["engine"]["dtype"] = dtype;
            row["engine"]["threads"] = o.threads;
            row["skipped"] = std::string(err.what());
            std::fprintf(stderr, "embedkit bench: comparison: skipping %s / %s / %s: %s\n", model.c_str(), device.c_str(),
                         dtype.c_str(), err.what());
            skipped.push_back(row);
            continue;
          }
          const std::string label = s.name + " " + device + " " + dtype + (device == "cpu" ? " t" + std::to_string(o.threads) : "");
          Measured m = measure(e, corpus, s.batch_size, s.iterations, s.warmup, s.warmup_seconds, s.min_seconds, opt,
                               label, false);
          Value row = Value::object();
          row["engine"] = engine_value(e);
          row["result"] = m.v;
          rows.push_back(row);
        }
  if (rows.size() == 0)
    throw Error(s.name + ": no combination of --models / --devices / --dtypes could run (" +
                (skipped.empty() ? std::string("none given") : skipped[0].str("skipped")) + ")");
  for (auto& row : skipped) rows.push_back(row);
  // Leave the thread pools as the rest of the run expects them.
  omp_set_num_threads(resolved_threads(base.options.threads));
  Value r = Value::object();
  r["rows"] = rows;
  return r;
}

Value spec_value(const ScenarioSpec& s) {
  Value v = Value::object();
  v["kind"] = s.kind;
  v["corpus"] = s.corpus;
  v["batch_size"] = s.batch_size;
  v["iterations"] = s.iterations;
  v["warmup"] = s.warmup;
  v["warmup_seconds"] = s.warmup_seconds;
  v["min_seconds"] = s.min_seconds;
  if (s.kind == "comparison") {
    v["models"] = Value::array_of(s.models);
    v["devices"] = Value::array_of(s.devices);
    v["dtypes"] = Value::array_of(s.dtypes);
    v["threads"] = Value::array_of(s.threads);
  }
  if (s.kind == "sweep") {
    v["sweep_batch_sizes"] = Value::array_of(s.sweep_batch_sizes);
    v["sweep_token_budgets"] = Value::array_of(s.sweep_token_budgets);
    v["sweep_min_texts"] = s.sweep_min_texts;
    v["sweep_tolerance"] = s.sweep_tolerance;
    v["sweep_rounds"] = s.sweep_rounds;
  }
  return v;
}

}  // namespace

Value run_bench(const BenchOptions& opt) {
  Value report = Value::object();
  report["schema"] = "embedkit-bench/1";
  report["created_utc"] = utc_now();
  report["commit"] = git_commit();
  report["command"] = opt.command_line;
  report["machine"] = machine_info();
  Value& settings = report["settings"];
  settings["model"] = opt.engine.model;
  settings["device"] = opt.engine.device;
  settings["dtype"] = opt.engine.dtype;
  settings["threads"] = resolved_threads(opt.engine.threads);
  settings["batch_tokens"] = opt.engine.batch_tokens;
  settings["sample_ms"] = opt.sample_ms;
  settings["mode"] = opt.url.empty() ? "local" : "remote";
  if (!opt.url.empty()) return run_remote(opt, std::move(report));

  EmbedderOptions eo = opt.engine;
  eo.threads = resolved_threads(eo.threads);
  Engine eng = load_engine(eo);
  report["engine"] = engine_value(eng);
  Value& dev = report["device"];
  dev["name"] = eng.info.device;
  if (eng.gpu) {
    Nvml& n = Nvml::get();
    dev["nvml"] = n.available();
    if (n.available()) {
      dev["gpu"] = n.device_name();
      dev["driver"] = n.driver_version();
      if (auto t = n.memory_total()) dev["gpu_memory_gib"] = double(*t) / double(1ull << 30);
    } else {
      dev["nvml_note"] = n.why_unavailable();
    }
  }
  Value scenarios = Value::array();
  for (const ScenarioSpec& s : opt.scenarios) {
    const auto corpus = load_corpus(s.corpus, opt.corpus_dir);
    Value sv = Value::object();
    sv["name"] = s.name;
    sv["spec"] = spec_value(s);
    sv["corpus_texts"] = corpus.size();
    if (s.kind == "sweep") {
      sv["sweep"] = run_sweep(eng, s, corpus, opt);
    } else if (s.kind == "comparison") {
      sv["comparison"] = run_comparison(eng, s, corpus, opt);
    } else {
      sv["result"] = measure(eng, corpus, s.batch_size, s.iterations, s.warmup, s.warmup_seconds, s.min_seconds, opt,
                             s.name, true).v;
    }
    scenarios.push_back(sv);
  }
  report["scenarios"] = scenarios;
  return report;
}

}  // namespace embedkit::bench
