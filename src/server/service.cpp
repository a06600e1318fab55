// Routes of `embedkit serve` (see service.h for the flow and the error codes).
#include "server/service.h"

#include "server/requests.h"

#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <optional>

#include "pipeline/engine.h"
#include "scheduler/batcher.h"
#include "tokenizer/decoder.h"
#include "util/error.h"
#include "util/json.h"
#include "util/json_writer.h"

namespace embedkit::server {

namespace {

using Clock = std::chrono::steady_clock;

double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

using ApiError = RequestError;

const char* type_label(Metrics::Err e) {
  static const char* names[] = {"Validation", "Tokenizer", "Overloaded", "Backend", "Unhealthy", "Empty"};
  return names[e];
}

ApiError validation(std::string m) { return {422, std::move(m), Metrics::Validation}; }

void append_ms_header(HttpResponse& r, const char* name, double seconds) {
  r.headers.emplace_back(name, std::to_string(int64_t(std::llround(seconds * 1000))));
}

std::string utc_now() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
                t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000000);
  return buf;
}

}  // namespace

// Everything one request carries through the threads.
struct RequestContext {
  HttpRequest req;
  Responder respond;
  std::shared_ptr<std::atomic<bool>> client_gone;
  Clock::time_point start = Clock::now();
  bool openai = false, counted = false, count_recorded = false;
  int method = 0;  // TEI label: 0 single, 1 batch
  size_t inputs = 0, tokens = 0, chars = 0;
  double tokenize_s = 0, queue_s = 0, inference_s = 0;
};
using Ctx = std::shared_ptr<RequestContext>;

struct EmbeddingService::Impl {
  ServiceOptions opt;
  Metrics& metrics;
  boost::asio::thread_pool pool;
  std::atomic<EmbeddingEngine*> engine{nullptr};
  Batcher* batcher = nullptr;
  bool done_on_pool = false;  // the batcher delivers finished jobs on our pool (BatcherOptions::deliver)
  std::unique_ptr<TokenDecoder> decoder;
  std::string compute_type;

  Impl(ServiceOptions o, Metrics& m) : opt(std::move(o)), metrics(m), pool(size_t(std::max(1, opt.tokenization_workers))) {}

  // EMBEDKIT_REQUEST_PROFILE=1: where answered embedding requests spent their time on the server,
  // summed over requests and printed at exit (measuring; TEI's metrics give queue and inference
  // only): parsed → queued (tokenizing), queued → first batch submitted, → last batch collected
  // (submission, device, collection), → formatting starts (rows finished, hand-over to the thread
  // that formats), → answer handed to the connection.
  struct RequestProfile {
    bool on = std::getenv("EMBEDKIT_REQUEST_PROFILE") && std::string(std::getenv("EMBEDKIT_REQUEST_PROFILE")) == "1";
    std::atomic<int64_t> ns[5] = {}, count{0};
    void add(int i, Clock::time_point a, Clock::time_point b) {
      ns[i] += std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
    }
    ~RequestProfile() {
      const int64_t n = count.load();
      if (!on || n == 0) return;
      std::fprintf(stderr,
                   "request profile: %lld requests; mean µs: tokenize+queue %.1f, wait for a batch %.1f, in the engine "
                   "%.1f, rows to formatting %.1f, formatting %.1f\n",
                   static_cast<long long>(n), ns[0] / 1e3 / double(n), ns[1] / 1e3 / double(n), ns[2] / 1e3 / double(n),
                   ns[3] / 1e3 / double(n), ns[4] / 1e3 / double(n));
    }
  } request_profile;

  void count_request(const Ctx& c) {
    if (c->counted && !c->count_recorded) metrics.request_count[c->method]++;
    c->count_recorded = true;
  }

  // ---- answers --------------------------------------------------------------------------
  void log(const Ctx& c, int status) {
    if (!opt.log_requests) return;
    const double ms = secs(c->start, Clock::now()) * 1000;
    std::string line;
    if (opt.log_json) {
      line = "{\"timestamp\":\"" + utc_now() + "\",\"level\":\"" + (status >= 500 ? "ERROR" : "INFO") +
             "\",\"method\":\"" + c->req.method + "\",\"route\":";
      json::append_string(line, c->req.target);
      char buf[160];
      std::snprintf(buf, sizeof buf, ",\"status\":%d,\"inputs\":%zu,\"tokens\":%zu,\"time_ms\":%.3f,\"remote\":\"", status,
                    c->inputs, c->tokens, ms);
      line += buf;
      line += c->req.remote + "\"}\n";
    } else {
      char buf[160];
      std::snprintf(buf, sizeof buf, " %d inputs=%zu tokens=%zu time_ms=%.3f remote=", status, c->inputs, c->tokens, ms);
      line = utc_now() + (status >= 500 ? " ERROR " : " INFO ") + c->req.method + " " + c->req.target + buf +
             c->req.remote + "\n";
    }
    ssize_t ignored = ::write(2, line.data(), line.size());
    (void)ignored;
  }

  void send(const Ctx& c, HttpResponse r) {
    const int status = r.status;
    Responder respond = std::move(c->respond);  // answered once; drops the connection reference
    c->respond.reset();
    if (respond) respond(std::move(r));
    log(c, status);
  }

  void fail(const Ctx& c, const ApiError& e) {
    count_request(c);
    if (c->counted && e.status != 499) metrics.request_failure[e.type]++;  // 499: the client left, no fault
    HttpResponse r;
    r.status = e.status;
    r.body = "{\"error\":";
    if (c->openai) {
      // OpenAI clients read error.message / error.type / error.code.
      r.body += "{\"message\":";
      json::append_string(r.body, e.message);
      r.body += ",\"type\":\"";
      r.body += error_type_name(e.type);
      r.body += "\",\"param\":null,\"code\":" + std::to_string(e.status) + "}";
    } else {
      json::append_string(r.body, e.message);
    }
    r.body += ",\"error_type\":\"";
    r.body += type_label(e.type);
    r.body += "\"}";
    if (e.status == 429 || e.status == 503) r.headers.emplace_back("Retry-After", "1");  // seconds (RFC 9110 §10.2.3)
    send(c, std::move(r));
  }

  void succeed(const Ctx& c, std::string body) {
    HttpResponse r;
    r.body = std::move(body);
    if (c->counted) {
      const double total = secs(c->start, Clock::now());
      metrics.request_success[c->method]++;
      metrics.request_duration.observe(total);
      metrics.tokenization_duration.observe(c->tokenize_s);
      metrics.queue_duration.observe(c->queue_s);
      metrics.inference_duration.observe(c->inference_s);
      r.headers.emplace_back("x-compute-type", compute_type);
      append_ms_header(r, "x-compute-time", total);
      r.headers.emplace_back("x-compute-characters", std::to_string(c->chars));
      r.headers.emplace_back("x-compute-tokens", std::to_string(c->tokens));
      append_ms_header(r, "x-total-time", total);
      append_ms_header(r, "x-tokenization-time", c->tokenize_s);
      append_ms_header(r, "x-queue-time", c->queue_s);
      append_ms_header(r, "x-inference-time", c->inference_s);
    }
    send(c, std::move(r));
  }

  // Runs fn here; an ApiError it throws becomes the answer, any other exception a 500.
  template <class F>
  void guarded(const Ctx& c, F& fn) {
    try {
      fn();
    } catch (const ApiError& e) {
      fail(c, e);
    } catch (const std::exception& e) {
      fail(c, {500, std::string("internal error: ") + e.what(), Metrics::Backend});
    }
  }
  // Runs fn on the worker pool, guarded.
  template <class F>
  void on_pool(const Ctx& c, F fn) {
    boost::asio::post(pool, [this, c, fn = std::move(fn)]() mutable { guarded(c, fn); });
  }

  // ---- embedding ------------------------------------------------------------------------
  struct EmbedSpec {
    std::vector<std::string> texts;
    std::vector<std::vector<int64_t>> ids;  // OpenAI pre-tokenized input (instead of texts)
    Prompt prompt;
    bool truncate = false, normalize = true, base64 = false;
    TruncateSide side = TruncateSide::Right;
    size_t dims = 0;
    std::string model_name;
  };

  size_t dims_from(const std::optional<int64_t>& d) {
    EmbeddingEngine& eng = *engine.load();
    if (!d) return eng.default_dim();
    if (*d < 1 || size_t(*d) > eng.full_dim())
      throw validation("`dimensions` must be between 1 and " + std::to_string(eng.full_dim()) + ", found " +
                       std::to_string(*d));
    return size_t(*d);
  }

  Prompt prompt_from(const std::optional<std::string>& name) {
    if (!name) return engine.load()->default_prompt();
    try {
      return engine.load()->resolve_prompt(std::nullopt, name, "prompt_name");
    } catch (const Error& e) {
      throw validation(e.what());
    }
  }

  static constexpr size_t kInlineMaxInputs = 4, kInlineMaxChars = 2048;  // see embed()
  ApiError overloaded() const {
    return {429, "model is overloaded: too many inputs in flight (--max-concurrent-inputs " +
                     std::to_string(opt.max_concurrent_inputs) + "); retry later",
            Metrics::Overloaded};
  }
  void embed(const Ctx& c, EmbedSpec&& spec);
  void route_embed(const Ctx& c, EmbedRequest&& r);
  void route_tokenize(const Ctx& c, TokenizeRequest&& r);
  void route_decode(const Ctx& c, const DecodeRequest& r);
  void route_info(const Ctx& c);
};

// TEI's /embed and OpenAI's /v1/embeddings: the model-dependent checks, then embed().
void EmbeddingService::Impl::route_embed(const Ctx& c, EmbedRequest&& r) {
  EmbedSpec s;
  c->method = r.batch ? 1 : 0;
  s.texts = std::move(r.texts);
  s.ids = std::move(r.token_ids);
  s.normalize = r.normalize.value_or(c->openai ? engine.load()->default_normalize() : true);
  s.truncate = r.truncate.value_or(opt.auto_truncate);
  s.side = r.truncate_left ? TruncateSide::Left : TruncateSide::Right;
  s.base64 = r.base64;
  s.model_name = r.model.value_or(opt.model_id);
  s.prompt = prompt_from(r.prompt_name);
  s.dims = dims_from(r.dimensions);
  embed(c, std::move(s));
}

void EmbeddingService::Impl::embed(const Ctx& c, EmbedSpec&& spec_in) {
  auto spec = std::make_shared<EmbedSpec>(std::move(spec_in));
  count_request(c);
  c->inputs = spec->ids.empty() ? spec->texts.size() : spec->ids.size();
  for (auto& t : spec->texts) c->chars += t.size();
  // A small request (a query, a few short texts: a few µs of tokenization and of formatting) stays
  // on its connection's I/O thread at both ends: tokenized there, and its finished job handed by
  // the batcher's executor straight back there to be formatted and written (a lock and a push;
  // one eventfd wake-up per I/O thread however many answers it gets). Bigger ones go to the pool
  // so that no I/O thread stalls the other connections it serves.
  const bool small = c->inputs <= kInlineMaxInputs && c->chars <= kInlineMaxChars;
  auto tokenize_and_queue = [this, c, spec, small] {
    EmbeddingEngine& eng = *engine.load();
    auto job = std::make_shared<EmbedJob>();
    job->inputs.resize(c->inputs);
    job->pool_skip = spec->ids.empty() ? spec->prompt.pool_skip : 0;
    job->normalize = spec->normalize;
    job->dims = spec->dims;
    job->client_gone = c->client_gone;
    job->deliver_here = small;
    const auto t0 = Clock::now();
    for (size_t i = 0; i < c->inputs; ++i) {
      const std::string where = std::string(c->openai ? "`input`" : "`inputs`") + (c->method ? " item " + std::to_string(i) : "");
      try {
        job->inputs[i] = spec->ids.empty() ? eng.encode(spec->texts[i], spec->prompt, spec->truncate, spec->side)
                                           : eng.encode_ids(spec->ids[i], spec->truncate);
      } catch (const InputTooLong& e) {
        throw validation(where + ": " + e.what() + (c->openai ? "" : " (or send \"truncate\": true)"));
      } catch (const Error& e) {
        throw ApiError{422, where + ": " + e.what(), Metrics::Tokenizer};
      }
      c->tokens += job->inputs[i].size();
      metrics.input_length.observe(double(job->inputs[i].size()));
    }
    c->tokenize_s = secs(t0, Clock::now());
    job->on_done = [this, c, spec, small](const std::shared_ptr<EmbedJob>& j) {
      // Formatting (floats to text) never runs on the model's executor thread: a small job's on
      // the connection's I/O thread; a bigger one's on the pool (here already when the batcher
      // delivers on the pool, else one hop there).
      auto format = [this, c, spec, j] {
        const auto t_format = request_profile.on ? Clock::now() : Clock::time_point{};
        c->queue_s = j->first_batch_start > j->enqueued ? secs(j->enqueued, j->first_batch_start) : 0;
        c->inference_s = j->inference_s;
        if (!j->error.empty()) {
          // Nobody is listening any more (nginx's 499 "client closed request"); the answer still
          // goes through the connection so it finishes its request and closes.
          if (c->client_gone->load()) throw ApiError{499, "client closed the connection; its queued inputs were dropped", Metrics::Backend};
          throw ApiError{500, j->error, Metrics::Backend};
        }
        metrics.embed_count += j->inputs.size();
        const size_t n = j->inputs.size(), d = j->dims;
        std::string body;
        body.reserve(n * d * (spec->base64 ? 6 : 16) + 256);
        if (c->openai) {
          body += "{\"object\":\"list\",\"data\":[";
          for (size_t i = 0; i < n; ++i) {
            body += i ? ",{\"object\":\"embedding\",\"index\":" : "{\"object\":\"embedding\",\"index\":";
            body += std::to_string(i) + ",\"embedding\":";
            if (spec->base64) {
              body += '"';
              json::append_base64(body, j->out.data() + i * d, d * sizeof(float));  // little-endian float32
              body += '"';
            } else {
              body += '[';
              json::append_floats(body, j->out.data() + i * d, d);
              body += ']';
            }
            body += '}';
          }
          body += "],\"model\":";
          json::append_string(body, spec->model_name);
          body += ",\"usage\":{\"prompt_tokens\":" + std::to_string(c->tokens) +
                  ",\"total_tokens\":" + std::to_string(c->tokens) + "}}";
        } else {
          body += '[';
          for (size_t i = 0; i < n; ++i) {
            body += i ? ",[" : "[";
            json::append_floats(body, j->out.data() + i * d, d);
            body += ']';
          }
          body += ']';
        }
        if (request_profile.on && j->inference_s > 0) {
          RequestProfile& p = request_profile;
          p.add(0, c->start, j->enqueued);
          p.add(1, j->enqueued, j->first_batch_start);
          p.add(2, j->first_batch_start, j->last_batch_end);
          p.add(3, j->last_batch_end, t_format);
          p.add(4, t_format, Clock::now());
          ++p.count;
        }
        succeed(c, std::move(body));
      };
      if (small) {
        c->respond.post([this, c, format = std::move(format)]() mutable { guarded(c, format); });
      } else if (done_on_pool) {
        guarded(c, format);
      } else {
        on_pool(c, std::move(format));
      }
    };
    if (!batcher->submit(job)) throw overloaded();
  };
  // A bigger request is refused before tokenization when the queue is already full: a client
  // retrying at once should not cost the server a tokenization per refusal. (Small ones are
  // tokenized in a few µs: one lock fewer per request is worth more to them.)
  if (!small && !batcher->has_room(c->inputs)) throw overloaded();
  if (small) {
    guarded(c, tokenize_and_queue);
  } else {
    on_pool(c, std::move(tokenize_and_queue));
  }
}

// ---- tokenize / decode / info ---------------------------------------------------------------

void EmbeddingService::Impl::route_tokenize(const Ctx& c, TokenizeRequest&& r) {
  auto texts = std::make_shared<std::vector<std::string>>(std::move(r.texts));
  const bool add_special = r.add_special_tokens;
  const Prompt prompt = prompt_from(r.prompt_name);
  c->inputs = texts->size();
  on_pool(c, [this, c, texts, add_special, prompt] {
    const Tokenizer& tok = engine.load()->tokenizer();
    std::string body = "[";
    for (size_t i = 0; i < texts->size(); ++i) {
      const std::string full = prompt.text + (*texts)[i];
      Encoding e;
      try {
        e = tok.encode(full, add_special, 0);
      } catch (const Error& err) {
        throw ApiError{422, "`inputs` item " + std::to_string(i) + ": " + err.what(), Metrics::Tokenizer};
      }
      c->tokens += e.size();
      body += i ? ",[" : "[";
      for (size_t k = 0; k < e.size(); ++k) {
        if (k) body += ',';
        body += "{\"id\":" + std::to_string(e.ids[k]) + ",\"text\":";
        const auto [s, t] = e.offsets[k];
        const bool special = e.special[k] != 0;
        json::append_string(body, special ? std::string_view(tok.id_to_token(e.ids[k]))
                                          : std::string_view(full).substr(s, t - s));
        body += special ? ",\"special\":true,\"start\":null,\"stop\":null}"
                        : ",\"special\":false,\"start\":" + std::to_string(s) + ",\"stop\":" + std::to_string(t) + "}";
      }
      body += ']';
    }
    body += ']';
    succeed(c, std::move(body));
  });
}

void EmbeddingService::Impl::route_decode(const Ctx& c, const DecodeRequest& r) {
  const auto& seqs = r.ids;
  const bool skip = r.skip_special_tokens;
  if (!decoder) throw ApiError{422, "this model's tokenizer has no decoder", Metrics::Validation};
  std::string body = "[";
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (i) body += ',';
    try {
      json::append_string(body, decoder->decode(seqs[i], skip));
    } catch (const Error& e) {
      throw validation("`ids`: " + std::string(e.what()));
    }
  }
  body += ']';
  c->inputs = seqs.size();
  succeed(c, std::move(body));
}

void EmbeddingService::Impl::route_info(const Ctx& c) {
  const ModelInfo i = engine.load()->info();
  std::string b = "{\"model_id\":";
  json::append_string(b, opt.model_id);
  b += ",\"model_sha\":null,\"model_dtype\":";
  json::append_string(b, i.device.substr(i.device.rfind(' ') + 1));
  b += ",\"model_type\":{\"embedding\":{\"pooling\":";
  json::append_string(b, i.pooling);
  b += "}},\"device\":";
  json::append_string(b, i.device);
  b += ",\"architecture\":";
  json::append_string(b, i.architecture);
  b += ",\"dimensions\":" + std::to_string(i.dim) + ",\"max_input_length\":" + std::to_string(i.max_seq_length) +
       ",\"max_concurrent_requests\":" + std::to_string(opt.max_concurrent_inputs) +
       ",\"max_batch_tokens\":" + std::to_string(batcher->options().max_batch_tokens) +
       ",\"max_batch_requests\":" +
       (batcher->options().max_batch_requests ? std::to_string(batcher->options().max_batch_requests) : "null") +
       ",\"max_client_batch_size\":" + std::to_string(opt.max_client_batch_size) +
       ",\"auto_truncate\":" + (opt.auto_truncate ? "true" : "false") +
       ",\"tokenization_workers\":" + std::to_string(opt.tokenization_workers) + ",\"prompts\":{";
  bool first = true;
  for (auto& [k, v] : i.prompts) {
    if (!first) b += ',';
    first = false;
    json::append_string(b, k);
    b += ':';
    json::append_string(b, v);
  }
  b += "},\"version\":\"0.1.0\"}";
  succeed(c, std::move(b));
}

// ---- dispatch -------------------------------------------------------------------------------

EmbeddingService::EmbeddingService(ServiceOptions options) : impl_(std::make_unique<Impl>(std::move(options), metrics_)) {}

EmbeddingService::~EmbeddingService() { join_workers(); }

void EmbeddingService::join_workers() { impl_->pool.join(); }

void EmbeddingService::post(std::function<void()> fn) { boost::asio::post(impl_->pool, std::move(fn)); }

void EmbeddingService::attach(EmbeddingEngine& engine, Batcher& batcher) {
  impl_->batcher = &batcher;
  impl_->done_on_pool = bool(batcher.options().deliver);
  impl_->compute_type = engine.on_gpu() ? "gpu+optimized" : "cpu";
  try {
    impl_->decoder = std::make_unique<TokenDecoder>(engine.files().transformer_dir + "/tokenizer.json", engine.tokenizer());
  } catch (const Error&) {
    impl_->decoder.reset();  // /decode answers that this tokenizer cannot decode
  }
  impl_->engine.store(&engine);
}

void EmbeddingService::handle(HttpRequest&& req, Responder respond, std::shared_ptr<std::atomic<bool>> client_gone) {
  auto c = std::make_shared<RequestContext>();
  c->req = std::move(req);
  c->respond = std::move(respond);
  c->client_gone = std::move(client_gone);
  Impl& s = *impl_;
  const std::string& path = c->req.target;
  const bool get = c->req.method == "GET", post = c->req.method == "POST";
  try {
    if (path == "/health") {
      if (!get) throw ApiError{405, "use GET /health", Metrics::Validation};
      if (!s.engine.load()) throw ApiError{503, "model is loading", Metrics::Unhealthy};
      HttpResponse r;
      r.content_type = "text/plain";
      return s.send(c, std::move(r));
    }
    if (path == "/metrics") {
      if (!get) throw ApiError{405, "use GET /metrics", Metrics::Validation};
      if (s.batcher) {
        auto st = s.batcher->stats();
        metrics_.queue_size = int64_t(st.queued_inputs + st.running_inputs);
      }
      HttpResponse r;
      r.content_type = "text/plain; version=0.0.4";
      r.body = metrics_.render();
      return s.send(c, std::move(r));
    }
    enum class Route { Embed, OpenAI, Tokenize, Decode, Info, None } route = Route::None;
    if (path == "/embed" || path == "/") route = Route::Embed;
    else if (path == "/v1/embeddings" || path == "/embeddings" || path == "/openai") route = Route::OpenAI;
    else if (path == "/tokenize") route = Route::Tokenize;
    else if (path == "/decode") route = Route::Decode;
    else if (path == "/info") route = Route::Info;
    c->openai = route == Route::OpenAI;
    if (route == Route::None) throw ApiError{404, "no route " + c->req.method + " " + path, Metrics::Validation};
    if (!s.opt.api_key.empty()) {
      const std::string want = "Bearer " + s.opt.api_key;
      const std::string& got = c->req.authorization;
      unsigned diff = got.size() != want.size();
      for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) diff |= unsigned(got[i] ^ want[i]);
      if (diff) throw ApiError{401, "missing or wrong API key (send \"Authorization: Bearer <key>\")", Metrics::Validation};
    }
    if (route == Route::Info) {
      if (!get) throw ApiError{405, "use GET /info", Metrics::Validation};
      if (!s.engine.load()) throw ApiError{503, "model is loading", Metrics::Unhealthy};
      return s.route_info(c);
    }
    if (!post) throw ApiError{405, "use POST " + path, Metrics::Validation};
    if (route == Route::Embed || route == Route::OpenAI) {
      c->counted = true;
      c->method = 1;  // refined once the input is parsed
    }
    if (!s.engine.load()) throw ApiError{503, "model is loading", Metrics::Unhealthy};
    const size_t max_batch = s.opt.max_client_batch_size;
    switch (route) {
      case Route::Embed: return s.route_embed(c, parse_tei_embed(c->req.body, max_batch));
      case Route::OpenAI: return s.route_embed(c, parse_openai_embed(c->req.body, max_batch));
      case Route::Tokenize: return s.route_tokenize(c, parse_tokenize(c->req.body, max_batch));
      case Route::Decode: return s.route_decode(c, parse_decode(c->req.body, max_batch));
      default: return;
    }
  } catch (const ApiError& e) {
    s.fail(c, e);
  } catch (const std::exception& e) {
    s.fail(c, {500, std::string("internal error: ") + e.what(), Metrics::Backend});
  }
}

}  // namespace embedkit::server
