// `embedkit bench [SCENARIO...]`: runs EmbedBench scenarios (latency, throughput, memory,
// comparison, sweep) in-process or against an HTTP endpoint, and writes JSON / Markdown / HTML
// reports. Settings: built-in defaults < --config FILE (JSON) < flags.
#include "cli/bench_command.h"

#include <cstdio>
#include <iostream>
#include <set>

#include "bench/bench.h"
#include "util/error.h"
#include "util/json.h"

namespace embedkit::cli {

namespace {

struct Flags {
  std::vector<std::string> scenarios;
  std::string config, out = "embedbench-report", corpus, corpus_dir;
  EmbedderOptions engine;
  size_t batch_size = 0;
  int iterations = 0, warmup = -1;
  std::vector<std::string> models, devices, dtypes;
  std::vector<int> threads_list;
  std::vector<size_t> sweep_batch_sizes, sweep_token_budgets;
  double sweep_tolerance = -1, warmup_seconds = -1, min_seconds = -1;
  size_t sweep_min_texts = 0;
  int sweep_rounds = 0;
  bool no_progress = false, quiet = false, no_local_tokens = false;
  int sample_ms = 20;
  double cpu_watts = 10.0, timeout_s = 120;
  std::string url, api = "openai", remote_model, tokens_metric;
  std::vector<int> concurrency{1};
  CLI::App* cmd = nullptr;
};

Flags& flags() {
  static Flags f;
  return f;
}

bool given(const char* name) { return flags().cmd->count(name) > 0; }

std::vector<std::string> strings_of(const json::Element& arr, const std::string& where) {
  std::vector<std::string> v;
  if (!arr.is_array()) throw Error(where + ": expected an array of strings");
  for (auto x : json::array_of(arr)) {
    if (!x.is_string()) throw Error(where + ": expected strings, found " + json::type_name(x));
    v.emplace_back(x.get_string().value_unsafe());
  }
  return v;
}
template <typename T>
std::vector<T> ints_of(const json::Element& arr, const std::string& where) {
  std::vector<T> v;
  if (!arr.is_array()) throw Error(where + ": expected an array of integers");
  for (auto x : json::array_of(arr)) {
    int64_t i = 0;
    if (x.get(i) || i < 0) throw Error(where + ": expected non-negative integers, found " + json::type_name(x));
    v.push_back(T(i));
  }
  return v;
}

// Reads a scenario file: {"model", "device", "dtype", "threads", "batch_tokens", "scenarios": [
// {"kind", "name", "corpus", "batch_size", "iterations", "warmup", "warmup_seconds", "min_seconds", "models", "devices", "dtypes",
// "threads", "sweep_batch_sizes", "sweep_token_budgets", "sweep_min_texts", "sweep_tolerance"}]}.
void read_config(const std::string& path, bench::BenchOptions& opt) {
  if (path.ends_with(".yaml") || path.ends_with(".yml"))
    throw Error(path + ": YAML is not supported; write the scenario file as JSON (see `embedkit bench --help`)");
  json::Document doc = json::load_file(path);
  if (!doc.root.is_object()) throw Error(path + ": expected a JSON object at the top level");
  const std::set<std::string> top = {"model", "device", "dtype", "threads", "batch_tokens", "scenarios", "corpus_dir"};
  for (auto [k, v] : json::object_of(doc.root))
    if (!top.count(std::string(k))) throw Error(path + ": unknown field \"" + std::string(k) + "\" (known: model, device, dtype, threads, batch_tokens, corpus_dir, scenarios)");
  if (auto s = json::opt_string(doc.root, "model", path)) opt.engine.model = *s;
  if (auto s = json::opt_string(doc.root, "device", path)) opt.engine.device = *s;
  if (auto s = json::opt_string(doc.root, "dtype", path)) opt.engine.dtype = *s;
  if (auto s = json::opt_string(doc.root, "corpus_dir", path)) opt.corpus_dir = *s;
  if (auto i = json::opt_int(doc.root, "threads", path)) opt.engine.threads = int(*i);
  if (auto i = json::opt_int(doc.root, "batch_tokens", path)) opt.engine.batch_tokens = size_t(*i);
  auto sc = json::field(doc.root, "scenarios");
  if (!sc) return;
  if (!sc->is_array()) throw Error(path + ": \"scenarios\" must be an array of objects");
  opt.scenarios.clear();
  size_t idx = 0;
  for (auto e : json::array_of(*sc)) {
    const std::string where = path + ": scenarios[" + std::to_string(idx++) + "]";
    if (!e.is_object()) throw Error(where + ": expected an object");
    const std::string kind = json::get_string(e, "kind", where);
    bench::ScenarioSpec s = bench::default_scenario(kind);
    const std::set<std::string> known = {"kind", "name", "corpus", "batch_size", "iterations", "warmup",
                                         "warmup_seconds", "min_seconds", "models",
                                         "devices", "dtypes", "threads", "sweep_batch_sizes", "sweep_token_budgets",
                                         "sweep_min_texts", "sweep_tolerance", "sweep_rounds"};
    for (auto [k, v] : json::object_of(e))
      if (!known.count(std::string(k))) throw Error(where + ": unknown field \"" + std::string(k) + "\"");
    if (auto v = json::opt_string(e, "name", where)) s.name = *v;
    if (auto v = json::opt_string(e, "corpus", where)) s.corpus = *v;
    if (auto v = json::opt_int(e, "batch_size", where)) s.batch_size = size_t(*v);
    if (auto v = json::opt_int(e, "iterations", where)) s.iterations = int(*v);
    if (auto v = json::opt_int(e, "warmup", where)) s.warmup = int(*v);
    if (auto v = json::opt_double(e, "warmup_seconds", where)) s.warmup_seconds = *v;
    if (auto v = json::opt_double(e, "min_seconds", where)) s.min_seconds = *v;
    if (auto v = json::opt_int(e, "sweep_min_texts", where)) s.sweep_min_texts = size_t(*v);
    if (auto v = json::opt_double(e, "sweep_tolerance", where)) s.sweep_tolerance = *v;
    if (auto v = json::opt_int(e, "sweep_rounds", where)) {
      if (*v < 1) throw Error(where + ".sweep_rounds: must be at least 1, got " + std::to_string(*v));
      s.sweep_rounds = int(*v);
    }
    if (auto v = json::field(e, "models")) s.models = strings_of(*v, where + ".models");
    if (auto v = json::field(e, "devices")) s.devices = strings_of(*v, where + ".devices");
    if (auto v = json::field(e, "dtypes")) s.dtypes = strings_of(*v, where + ".dtypes");
    if (auto v = json::field(e, "threads")) s.threads = ints_of<int>(*v, where + ".threads");
    if (auto v = json::field(e, "sweep_batch_sizes")) s.sweep_batch_sizes = ints_of<size_t>(*v, where + ".sweep_batch_sizes");
    if (auto v = json::field(e, "sweep_token_budgets")) {
      s.sweep_token_budgets = ints_of<size_t>(*v, where + ".sweep_token_budgets");
      if (!s.sweep_token_budgets.empty()) s.sweep_batch_sizes.clear();
    }
    opt.scenarios.push_back(s);
  }
}

}  // namespace

CLI::App* add_bench_command(CLI::App& app) {
  Flags& f = flags();
  auto* b = app.add_subcommand("bench", "EmbedBench: latency, throughput, memory, comparison and sweep scenarios with "
                                        "time / memory / energy profiles; JSON, Markdown and HTML reports");
  f.cmd = b;
  b->footer(
      "Scenarios (defaults; override with flags or --config FILE.json):\n"
      "  latency     batch 1, 1000 iterations after 100 warm-up, short texts\n"
      "  throughput  batch 128, 10 iterations after 2 warm-up, mixed-length texts\n"
      "  memory      batch 256, 5 iterations after 1 warm-up, long texts (memory and energy)\n"
      "  comparison  batch 32, 100 iterations: --models x --devices x --dtypes x --threads-list side by side\n"
      "  sweep       batch sizes 1..512 (or --sweep-token-budgets): picks the best setting\n"
      "On a GPU, warm-up lasts at least 1 s and the timed part at least 2 s (more iterations than asked where needed:\n"
      "clocks settle, and NVML's energy counter resolves the window); --warmup-seconds / --min-seconds change that.\n"
      "Remote mode (--url http://HOST:PORT): latency/throughput/memory requests to a TEI (--api tei, POST /embed) or\n"
      "OpenAI-compatible (--api openai, POST /v1/embeddings) server at each --concurrency level; /metrics is read\n"
      "before and after each level for server-side token counts.\n"
      "Corpora: bench/corpora/{short,mixed,long}.txt (real text; tools/make_bench_corpora.py), or --corpus FILE.");
  b->add_option("scenario", f.scenarios, "Scenarios to run: latency throughput memory comparison sweep, or all (default)");
  b->add_option("--config", f.config, "JSON scenario file (model, device, dtype, threads, batch_tokens, scenarios[])");
  b->add_option("-m,--model", f.engine.model, "Model directory or hub id (resolved offline)")->capture_default_str();
  b->add_option("--device", f.engine.device, "cpu | cuda | auto")->capture_default_str();
  b->add_option("--dtype", f.engine.dtype, "auto | fp16 | bf16 | fp32")->capture_default_str();
  b->add_option("-t,--threads", f.engine.threads, "CPU threads (0 = all cores)")->capture_default_str();
  b->add_option("--batch-tokens", f.engine.batch_tokens, "Token budget of one forward pass (0 = auto)")->capture_default_str();
  b->add_option("--batch-size", f.batch_size, "Texts per call / request, for every chosen scenario");
  b->add_option("--iterations", f.iterations, "Timed iterations, for every chosen scenario");
  b->add_option("--warmup", f.warmup, "Warm-up iterations, for every chosen scenario");
  b->add_option("--warmup-seconds", f.warmup_seconds, "Warm-up lasts at least this long (default: 1 on GPU, 0 on CPU)");
  b->add_option("--min-seconds", f.min_seconds, "Timed part lasts at least this long (default: 2 on GPU, 0 on CPU)");
  b->add_option("--corpus", f.corpus, "short | mixed | long, or a text file (one text per line), for every chosen scenario");
  b->add_option("--corpus-dir", f.corpus_dir, "Directory holding short.txt, mixed.txt, long.txt (default: bench/corpora)");
  b->add_option("--models", f.models, "comparison: models side by side")->delimiter(',');
  b->add_option("--devices", f.devices, "comparison: devices (cpu, cuda)")->delimiter(',');
  b->add_option("--dtypes", f.dtypes, "comparison: dtypes (auto, fp32, fp16, bf16)")->delimiter(',');
  b->add_option("--threads-list", f.threads_list, "comparison: CPU thread counts")->delimiter(',');
  b->add_option("--sweep-batch-sizes", f.sweep_batch_sizes, "sweep: batch sizes")->delimiter(',');
  b->add_option("--sweep-token-budgets", f.sweep_token_budgets, "sweep: token budgets instead of batch sizes (batch = --batch-size)")
      ->delimiter(',');
  b->add_option("--sweep-tolerance", f.sweep_tolerance, "sweep: choose the smallest setting within this share of the best (0.02)");
  b->add_option("--sweep-min-texts", f.sweep_min_texts, "sweep: texts embedded per point, at least (512)");
  b->add_option("--sweep-rounds", f.sweep_rounds,
                "sweep: rounds the points take turns in; each point keeps its best round (3)");
  b->add_option("-o,--out", f.out, "Report directory: embedbench.json, embedbench.md, embedbench.html")->capture_default_str();
  b->add_flag("--no-progress", f.no_progress, "No progress bar");
  b->add_flag("-q,--quiet", f.quiet, "Do not print the Markdown report to stdout");
  b->add_option("--sample-ms", f.sample_ms, "Memory / power sampling interval")->capture_default_str();
  b->add_option("--cpu-watts-per-core", f.cpu_watts, "CPU energy estimate where RAPL is unreadable: watts per busy core")
      ->capture_default_str();
  b->add_option("--url", f.url, "Remote mode: the server's base URL (http://HOST:PORT)");
  b->add_option("--api", f.api, "Remote mode: tei | openai")->check(CLI::IsMember({"tei", "openai"}))->capture_default_str();
  b->add_option("--concurrency", f.concurrency, "Remote mode: concurrent connections per level, e.g. 1,16,256")->delimiter(',');
  b->add_option("--remote-model", f.remote_model, "Remote mode: \"model\" of OpenAI requests (default --model)");
  b->add_option("--timeout", f.timeout_s, "Remote mode: seconds per request before it counts as an error")->capture_default_str();
  b->add_option("--tokens-metric", f.tokens_metric, "Remote mode: Prometheus metric with the server's token count (default: te_request_input_length_sum, else te_batch_next_tokens_sum)");
  b->add_flag("--no-local-tokens", f.no_local_tokens, "Remote mode: do not count tokens with the local tokenizer");
  return b;
}

int run_bench_command(int argc, char** argv) {
  Flags& f = flags();
  bench::BenchOptions opt;
  opt.engine = f.engine;
  for (int i = 0; i < argc; ++i) opt.command_line += (i ? " " : "") + std::string(argv[i]);
  // Scenario list: config file, or the positional names (default all).
  if (!f.config.empty()) {
    EmbedderOptions from_flags = opt.engine;
    read_config(f.config, opt);
    if (given("--model")) opt.engine.model = from_flags.model;
    if (given("--device")) opt.engine.device = from_flags.device;
    if (given("--dtype")) opt.engine.dtype = from_flags.dtype;
    if (given("--threads")) opt.engine.threads = from_flags.threads;
    if (given("--batch-tokens")) opt.engine.batch_tokens = from_flags.batch_tokens;
  }
  if (!f.scenarios.empty() || opt.scenarios.empty()) {
    std::vector<std::string> names = f.scenarios;
    if (names.empty() || (names.size() == 1 && names[0] == "all"))
      names = f.url.empty() ? std::vector<std::string>{"latency", "throughput", "memory", "comparison", "sweep"}
                            : std::vector<std::string>{"latency", "throughput", "memory"};
    std::vector<bench::ScenarioSpec> chosen;
    for (auto& n : names) {
      bool from_config = false;
      for (auto& s : opt.scenarios)
        if (s.name == n || s.kind == n) chosen.push_back(s), from_config = true;
      if (!from_config) chosen.push_back(bench::default_scenario(n));
    }
    opt.scenarios = chosen;
  }
  for (auto& s : opt.scenarios) {
    if (given("--batch-size")) s.batch_size = f.batch_size;
    if (given("--iterations")) s.iterations = f.iterations;
    if (given("--warmup")) s.warmup = f.warmup;
    if (given("--warmup-seconds")) s.warmup_seconds = f.warmup_seconds;
    if (given("--min-seconds")) s.min_seconds = f.min_seconds;
    if (given("--corpus")) s.corpus = f.corpus;
    if (given("--models")) s.models = f.models;
    if (given("--devices")) s.devices = f.devices;
    if (given("--dtypes")) s.dtypes = f.dtypes;
    if (given("--threads-list")) s.threads = f.threads_list;
    if (given("--sweep-batch-sizes")) s.sweep_batch_sizes = f.sweep_batch_sizes, s.sweep_token_budgets.clear();
    if (given("--sweep-token-budgets")) s.sweep_token_budgets = f.sweep_token_budgets, s.sweep_batch_sizes.clear();
    if (given("--sweep-tolerance")) s.sweep_tolerance = f.sweep_tolerance;
    if (given("--sweep-min-texts")) s.sweep_min_texts = f.sweep_min_texts;
    if (given("--sweep-rounds")) {
      if (f.sweep_rounds < 1) throw Error("--sweep-rounds must be at least 1");
      s.sweep_rounds = f.sweep_rounds;
    }
    if (s.sweep_tolerance < 0 || s.sweep_tolerance >= 1) throw Error("--sweep-tolerance must be in [0, 1)");
  }
  if (!f.corpus_dir.empty()) opt.corpus_dir = f.corpus_dir;
  if (f.sample_ms < 1) throw Error("--sample-ms must be at least 1");
  if (f.cpu_watts <= 0) throw Error("--cpu-watts-per-core must be positive");
  if (f.timeout_s <= 0) throw Error("--timeout must be positive");
  opt.progress = !f.no_progress;
  opt.sample_ms = f.sample_ms;
  opt.cpu_watts_per_core = f.cpu_watts;
  opt.url = f.url;
  opt.api = f.api;
  opt.concurrency = f.concurrency;
  opt.remote_model = f.remote_model;
  opt.timeout_s = f.timeout_s;
  opt.tokens_metric = f.tokens_metric;
  opt.local_tokens = !f.no_local_tokens;

  bench::Value report = bench::run_bench(opt);
  auto paths = bench::write_reports(report, f.out);
  if (!f.quiet) std::fputs(bench::render_markdown(report).c_str(), stdout);
  std::fflush(stdout);
  for (auto& p : paths) std::fprintf(stderr, "wrote %s\n", p.c_str());
  return 0;
}

}  // namespace embedkit::cli
