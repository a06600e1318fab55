// EmbedBench remote mode: the scenarios' requests sent to a TEI- (POST /embed) or OpenAI-
// (POST /v1/embeddings) compatible endpoint by `concurrency` keep-alive connections, with the
// server's Prometheus /metrics read before and after each level.
#include <sys/resource.h>

#include <simdjson.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "bench/bench.h"
#include "bench/http_client.h"
#include "bench/monitors.h"
#include "embedkit/profiling.h"
#include "util/error.h"

namespace embedkit::bench {

namespace {

// Prometheus text format: sums every sample of a metric name over its label sets.
std::map<std::string, double> parse_prometheus(const std::string& text) {
  std::map<std::string, double> m;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t name_end = line.find_first_of("{ ");
    if (name_end == std::string::npos) continue;
    std::string name = line.substr(0, name_end);
    size_t value_at = name_end;
    if (line[name_end] == '{') {
      value_at = line.find('}', name_end);
      if (value_at == std::string::npos) continue;
      ++value_at;
    }
    try {
      m[name] += std::stod(line.substr(value_at));
    } catch (const std::exception&) {
    }
  }
  return m;
}

struct MetricsRead {
  bool ok = false;
  std::string error;
  std::map<std::string, double> values;
};

MetricsRead read_metrics(const Url& url, double timeout_s) {
  MetricsRead r;
  try {
    HttpConnection c(url, timeout_s);
    HttpResponse res = c.request("GET", "/metrics");
    if (res.status != 200) {
      r.error = "GET /metrics answered HTTP " + std::to_string(res.status);
      return r;
    }
    r.values = parse_prometheus(res.body);
    r.ok = true;
  } catch (const Error& e) {
    r.error = e.what();
  }
  return r;
}

void append_str(std::string& s, const std::string& v) { append_json_string(s, v); }

std::string request_body(const std::string& api, const std::vector<std::string>& texts, const std::string& model) {
  std::string b;
  if (api == "tei") {
    b = "{\"inputs\": [";
    for (size_t i = 0; i < texts.size(); ++i) {
      if (i) b += ", ";
      append_str(b, texts[i]);
    }
    b += "], \"truncate\": true}";
  } else {
    b = "{\"input\": [";
    for (size_t i = 0; i < texts.size(); ++i) {
      if (i) b += ", ";
      append_str(b, texts[i]);
    }
    b += "], \"model\": ";
    append_str(b, model);
    b += "}";
  }
  return b;
}

// Candidate metrics holding the tokens the server embedded (TEI names first).
const char* kTokenMetrics[] = {"te_request_input_length_sum", "te_batch_next_tokens_sum", "te_batch_next_tokens"};

}  // namespace

// Checks a response: HTTP 200, JSON of the expected shape, one embedding per input, every
// embedding of the same non-zero length. Returns "" when fine, else what was wrong; `tokens` gets
// OpenAI's usage.prompt_tokens (-1 when absent). simdjson's on-demand API walks the structure
// and counts each embedding's values without converting them: a 32-text MiniLM answer is
// ~12,000 floats, and converting them all cost this load generator ~1.5 ms of CPU per answer
// (7 of the GPU machine's 16 cores at 4,700 answers/s), cores the server under test then lacked.
// The values themselves are checked against offline output by bench/server_load.py.
std::string check_response(const std::string& api, const HttpResponse& res, size_t n_inputs, long long& tokens) {
  thread_local simdjson::ondemand::parser parser;
  tokens = -1;
  if (res.status != 200)
    return "HTTP " + std::to_string(res.status) + ": " + res.body.substr(0, 200);
  const simdjson::padded_string body(res.body);
  simdjson::ondemand::document doc;
  if (auto err = parser.iterate(body).get(doc))
    return std::string("response is not valid JSON (") + simdjson::error_message(err) + ")";
  simdjson::ondemand::array rows;
  if (api == "tei") {
    if (doc.get_array().get(rows)) return "TEI response: expected a JSON array of embeddings";
  } else {
    if (doc["data"].get_array().get(rows)) return "OpenAI response: no \"data\" array";
  }
  size_t n = 0, dim = 0;
  for (auto row : rows) {
    simdjson::ondemand::array emb;
    if (api == "tei" ? row.get_array().get(emb) : row["embedding"].get_array().get(emb))
      return "response row " + std::to_string(n) + ": no embedding array";
    size_t d = 0;
    if (emb.count_elements().get(d)) return "response row " + std::to_string(n) + ": malformed embedding array";
    if (n == 0) dim = d;
    if (d == 0 || d != dim) return "response row " + std::to_string(n) + ": embedding of " + std::to_string(d) + " values";
    ++n;
  }
  if (n != n_inputs)
    return std::to_string(n) + " embeddings for " + std::to_string(n_inputs) + " inputs";
  if (api != "tei") {
    int64_t pt = 0;
    if (!doc["usage"]["prompt_tokens"].get_int64().get(pt)) tokens = pt;
  }
  return "";
}

Value run_remote(const BenchOptions& opt, Value report) {
  if (opt.api != "tei" && opt.api != "openai") throw Error("--api \"" + opt.api + "\": expected tei or openai");
  const Url url = parse_url(opt.url);
  const std::string model = opt.remote_model.empty() ? opt.engine.model : opt.remote_model;
  report["remote"]["url"] = url.text();
  report["remote"]["api"] = opt.api;
  report["remote"]["route"] = opt.api == "tei" ? "POST /embed" : "POST /v1/embeddings";
  report["remote"]["model"] = model;
  report["device"]["name"] = "remote: " + url.text();

  // A local tokenizer for client-side token counts (TEI answers carry none).
  std::unique_ptr<Embedder> local;
  std::string local_note;
  if (opt.local_tokens) {
    try {
      EmbedderOptions eo = opt.engine;
      eo.device = "cpu";
      eo.dtype = "auto";
      local = Embedder::load(eo);
      local_note = "tokenized here with " + local->info().dir;
    } catch (const Error& e) {
      local_note = std::string("no local token count: ") + e.what();
    }
  }
  report["remote"]["client_tokens"] = local_note.empty() ? "off (--no-local-tokens)" : local_note;

  Value scenarios = Value::array();
  for (const ScenarioSpec& s : opt.scenarios) {
    if (s.kind == "comparison" || s.kind == "sweep")
      throw Error("scenario \"" + s.name + "\" (" + s.kind +
                  ") runs in-process only; in remote mode use latency, throughput or memory with --concurrency levels");
    if (s.batch_size == 0 || s.iterations < 1) throw Error(s.name + ": batch size and iterations must be at least 1");
    const auto corpus = load_corpus(s.corpus, opt.corpus_dir);
    Value sv = Value::object();
    sv["name"] = s.name;
    sv["spec"]["kind"] = s.kind;
    sv["spec"]["corpus"] = s.corpus;
    sv["spec"]["batch_size"] = s.batch_size;
    sv["spec"]["iterations"] = s.iterations;
    sv["spec"]["warmup"] = s.warmup;
    sv["corpus_texts"] = corpus.size();
    // Requests for index i: texts [i*batch, (i+1)*batch) round the corpus (the same for every level).
    auto texts_of = [&](size_t i) {
      std::vector<std::string> t;
      for (size_t k = 0; k < s.batch_size; ++k) t.push_back(corpus[(i * s.batch_size + k) % corpus.size()]);
      return t;
    };
    Value levels = Value::array();
    for (int conc : opt.concurrency) {
      if (conc < 1) throw Error("--concurrency " + std::to_string(conc) + ": must be at least 1");
      // One descriptor per connection: raise the soft open-files limit to the hard one, and say
      // so up front where even that is too small (else connections fail part-way through).
      rlimit rl{};
      if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) rl.rlim_cur = rl.rlim_max, setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur != RLIM_INFINITY && rlim_t(conc) + 64 > rl.rlim_cur)
          throw Error("--concurrency " + std::to_string(conc) + ": needs about " + std::to_string(conc + 64) +
                      " open files, the limit is " + std::to_string(rl.rlim_cur) + " (raise it: ulimit -n)");
      }
      // Every connection gets at least two requests so each level measures steady traffic.
      const size_t requests = std::max<size_t>(size_t(s.iterations), 2 * size_t(conc));
      {  // warm-up, one connection
        HttpConnection c(url, opt.timeout_s);
        for (int i = 0; i < s.warmup; ++i) c.request("POST", opt.api == "tei" ? "/embed" : "/v1/embeddings",
                                                     request_body(opt.api, texts_of(size_t(i)), model));
      }
      long long local_tokens = 0;
      if (local)
        for (size_t i = 0; i < requests; ++i)
          for (auto& t : texts_of(i)) local_tokens += (long long)local->tokenize(t).ids.size();

      MetricsRead before = read_metrics(url, opt.timeout_s);
      std::atomic<size_t> next{0}, done{0};
      std::mutex mu;
      std::vector<double> latency_ms;
      std::map<std::string, size_t> errors;
      size_t n_errors = 0;
      long long usage_tokens = 0;
      bool usage_seen = false;
      ProgressBar bar(opt.progress, s.name + " c=" + std::to_string(conc), requests);
      const double t0 = now_s();
      std::vector<std::thread> workers;
      for (int w = 0; w < conc; ++w)
        workers.emplace_back([&] {
          HttpConnection c(url, opt.timeout_s);
          std::vector<double> mine;
          for (size_t i; (i = next++) < requests;) {
            const auto texts = texts_of(i);
            const std::string body = request_body(opt.api, texts, model);
            std::string err;
            long long tokens = -1;
            const double a = now_s();
            try {
              HttpResponse res = c.request("POST", opt.api == "tei" ? "/embed" : "/v1/embeddings", body);
              err = check_response(opt.api, res, texts.size(), tokens);
            } catch (const Error& e) {
              err = e.what();
            }
            const double ms = (now_s() - a) * 1e3;
            {
              std::lock_guard<std::mutex> lock(mu);
              if (err.empty()) {
                mine.push_back(ms);
                if (tokens >= 0) usage_tokens += tokens, usage_seen = true;
              } else {
                ++n_errors;
                if (errors.size() < 8 || errors.count(err)) errors[err] += 1;  // first 8 distinct messages
              }
            }
            bar.update(++done);
          }
          std::lock_guard<std::mutex> lock(mu);
          latency_ms.insert(latency_ms.end(), mine.begin(), mine.end());
        });
      for (auto& t : workers) t.join();
      const double wall = now_s() - t0;
      bar.finish();
      MetricsRead after = read_metrics(url, opt.timeout_s);

      Value lv = Value::object();
      lv["concurrency"] = conc;
      lv["requests"] = requests;
      lv["texts"] = requests * s.batch_size;
      lv["errors"] = n_errors;
      Value err_list = Value::array();
      for (auto& [msg, n] : errors) {
        Value e = Value::object();
        e["message"] = msg;
        e["count"] = n;
        err_list.push_back(e);
      }
      lv["error_samples"] = err_list;
      lv["wall_s"] = wall;
      lv["requests_per_s"] = double(requests - n_errors) / wall;
      lv["texts_per_s"] = double((requests - n_errors) * s.batch_size) / wall;
      lv["latency_ms"] = dist_value(summarize(latency_ms));
      if (usage_seen) lv["client_tokens_usage"] = usage_tokens;
      if (local) lv["client_tokens_local"] = local_tokens;
      Value& sm = lv["server_metrics"];
      sm["available"] = before.ok && after.ok;
      if (!before.ok || !after.ok) {
        sm["error"] = before.ok ? after.error : before.error;
      } else {
        auto delta = [&](const std::string& k) -> double {
          auto a = before.values.find(k), b = after.values.find(k);
          if (b == after.values.end()) return NAN;
          return b->second - (a == before.values.end() ? 0.0 : a->second);
        };
        const double req = delta("te_request_count");
        if (std::isfinite(req)) sm["te_request_count"] = req;
        std::string tm = opt.tokens_metric;
        if (tm.empty())
          for (const char* k : kTokenMetrics)
            if (after.values.count(k)) {
              tm = k;
              break;
            }
        if (!tm.empty() && std::isfinite(delta(tm))) {
          sm["tokens_metric"] = tm;
          sm["tokens"] = delta(tm);
          // Our tokenizer's count is the independent one; OpenAI's usage field is the server's own.
          if (usage_seen) sm["tokens_match_usage"] = std::fabs(double(usage_tokens) - delta(tm)) < 0.5;
          if (local) sm["tokens_match_local"] = std::fabs(double(local_tokens) - delta(tm)) < 0.5;
          if (local || usage_seen)
            sm["tokens_match_client"] = sm.flag("tokens_match_local", true) && sm.flag("tokens_match_usage", true);
        } else {
          sm["tokens_metric"] = "none found (looked for te_request_input_length_sum, te_batch_next_tokens_sum)";
        }
        // Server-side phase means per request (TEI histograms are in seconds).
        for (const char* phase : {"tokenization", "queue", "inference"}) {
          const std::string k = std::string("te_request_") + phase + "_duration";
          const double sum = delta(k + "_sum"), cnt = delta(k + "_count");
          if (std::isfinite(sum) && std::isfinite(cnt) && cnt > 0) sm[std::string(phase) + "_mean_ms"] = sum / cnt * 1e3;
        }
        const double dsum = delta("te_request_duration_sum"), dcnt = delta("te_request_duration_count");
        if (std::isfinite(dsum) && std::isfinite(dcnt) && dcnt > 0) sm["request_mean_ms"] = dsum / dcnt * 1e3;
      }
      levels.push_back(lv);
    }
    sv["remote_levels"] = levels;
    scenarios.push_back(sv);
  }
  report["scenarios"] = scenarios;
  return report;
}

}  // namespace embedkit::bench
