// EmbedBench: the scenarios behind `embedkit bench`, run in-process (library, CPU or GPU) or
// against an HTTP endpoint (TEI- or OpenAI-compatible), with time, memory and energy profiles,
// and JSON / Markdown / HTML reports.
#pragma once
#include <string>
#include <vector>

#include "bench/value.h"
#include "embedkit/embedkit.h"
#include "embedkit/profiling.h"

namespace embedkit::bench {

inline constexpr const char* kScenarioKinds[] = {"latency", "throughput", "memory", "comparison", "sweep"};

struct ScenarioSpec {
  std::string name;  // label in the reports (defaults to kind)
  std::string kind;  // one of kScenarioKinds
  std::string corpus;  // short | mixed | long (bench/corpora) or a file with one text per line
  size_t batch_size = 1;  // texts per embed() call / per HTTP request
  int iterations = 1, warmup = 0;
  // Time floors (seconds; < 0 = automatic: 0 on the CPU, GPU values below). Warm-up goes on past
  // `warmup` iterations until warmup_seconds have passed, walking the same batches the timed loop
  // will use (every batch shape seen, GPU clocks settled); the timed loop goes on past
  // `iterations` until min_seconds have passed, so NVML's energy counter and its 1-s power
  // average cover a window they can resolve. The report gives the iterations actually run.
  double warmup_seconds = -1, min_seconds = -1;
  // comparison: every model × device × dtype × threads combination side by side.
  std::vector<std::string> models, devices, dtypes;
  std::vector<int> threads;
  // sweep: batch sizes, or token budgets (EmbedderOptions::batch_tokens) at a fixed batch size.
  std::vector<size_t> sweep_batch_sizes, sweep_token_budgets;
  size_t sweep_min_texts = 512;   // each point embeds at least this many texts over the rounds (and 3 calls)
  double sweep_tolerance = 0.02;  // choose the smallest setting within this share of the best
  int sweep_rounds = 3;           // each point's calls split over this many interleaved rounds
};

// Automatic time floors on a GPU (ScenarioSpec::warmup_seconds / min_seconds < 0).
inline constexpr double kGpuWarmupSeconds = 1.0, kGpuMinSeconds = 2.0;

// The built-in scenarios (latency: batch 1 × 1,000 after 100 warm-up on short texts, ...).
ScenarioSpec default_scenario(const std::string& kind);

struct BenchOptions {
  EmbedderOptions engine;
  std::vector<ScenarioSpec> scenarios;
  std::string corpus_dir;  // where short/mixed/long.txt live ("" = search, see find_corpus)
  bool progress = true;
  int sample_ms = 20;
  double cpu_watts_per_core = 10.0;
  std::string command_line;
  // Remote mode (url non-empty): the scenarios go to an HTTP endpoint.
  std::string url, api = "openai";  // api: tei (POST /embed) | openai (POST /v1/embeddings)
  std::vector<int> concurrency{1};
  std::string remote_model;  // "model" field of OpenAI requests ("" = engine.model)
  double timeout_s = 120;
  std::string tokens_metric;  // Prometheus metric holding server-side token counts ("" = auto)
  bool local_tokens = true;   // count tokens with the local tokenizer too (when the model resolves)
};

// Runs every scenario and returns the report tree (the JSON report's content).
Value run_bench(const BenchOptions& options);
Value run_remote(const BenchOptions& options, Value report);  // fills report["scenarios"]
struct HttpResponse;
// Remote mode's check of one answer of `api` ("tei" or "openai") to a request of n_inputs
// texts: "" when it holds one embedding per input, all of one non-zero length; else what is
// wrong. tokens = OpenAI's usage.prompt_tokens, -1 when absent. (src/bench/remote.cpp)
std::string check_response(const std::string& api, const HttpResponse& res, size_t n_inputs, long long& tokens);

// Corpus: the named set's lines (short/mixed/long) or a file's; throws Error naming what was tried.
std::vector<std::string> load_corpus(const std::string& name_or_path, const std::string& corpus_dir);

// Environment of the run: machine, OS, commit, time.
Value machine_info();
// A distribution as a report value: count, mean, stddev, p50, p95, p99, min, max (runner.cpp).
Value dist_value(const Distribution& d);
std::string git_commit();

// Reports.
std::string render_markdown(const Value& report);
std::string render_html(const Value& report);
// Writes DIR/embedbench.{json,md,html}; returns the paths written.
std::vector<std::string> write_reports(const Value& report, const std::string& dir);

// Progress bar on stderr (only when stderr is a terminal and enabled).
class ProgressBar {
 public:
  ProgressBar(bool enabled, std::string label, size_t total);
  void update(size_t done);
  void finish();

 private:
  bool on_;
  std::string label_;
  size_t total_;
  double t0_, last_ = 0;
};

}  // namespace embedkit::bench
