// `embedkit serve`: the HTTP server (src/server) over one model, its batcher and worker pool.
// Start-up order: listen first (health answers 503 while the model loads), load, serve; SIGTERM
// or SIGINT: stop accepting, finish every accepted request, exit 0.
#include "cli/serve_command.h"

#include <pthread.h>

#include <algorithm>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "pipeline/engine.h"
#include "scheduler/batcher.h"
#include "server/http_server.h"
#include "server/service.h"
#include "util/cpus.h"
#include "util/error.h"

namespace embedkit {

namespace {

struct ServeArgs {
  EmbedderOptions model;
  server::HttpServerOptions http;
  server::ServiceOptions service;
  size_t max_batch_tokens = 0, max_batch_requests = 0, batch_split = 4;
  double max_wait_ms = 0, read_timeout_s = 30, shutdown_grace_s = 0;
  int busy_poll_us = -1;  // -1: kDefaultGpuBusyPollUs on a GPU, 0 on the CPU
  std::string log_format = "text", log_level = "info";
};

constexpr int kDefaultGpuBusyPollUs = 200;

void log_line(const ServeArgs& a, const std::string& level, const std::string& msg) {
  if (a.log_format == "json") {
    std::string m;
    for (char c : msg) {
      if (c == '"' || c == '\\') m += '\\';
      m += c;
    }
    std::fprintf(stderr, "{\"level\":\"%s\",\"message\":\"%s\"}\n", level.c_str(), m.c_str());
  } else {
    std::fprintf(stderr, "%s %s\n", level.c_str(), msg.c_str());
  }
}

int serve(ServeArgs& a) {
  // Signals are taken by sigwait in this thread only: block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // I/O threads (HTTP and request parsing): half the usable cores, at most 8. The pool
  // (tokenization, response formatting) gets the rest, at least 2: one thread per core in all, so
  // the batcher's executor thread, the one serial stage, is not queued behind them. H100 host (16
  // cores, C++ client on the same machine): 16 pool threads → 8 gave +7…18% single-text and
  // +2…15% 32-text requests/s at c64…c1024 (docs/benchmarks.md).
  if (a.http.threads <= 0) a.http.threads = std::clamp(usable_cpus() / 2, 1, 8);
  if (a.service.tokenization_workers <= 0)
    a.service.tokenization_workers = std::max(2, usable_cpus() - a.http.threads);
  a.http.read_timeout = std::chrono::milliseconds(int64_t(a.read_timeout_s * 1000));
  a.service.model_id = a.model.model;
  a.service.log_requests = a.log_level == "info" || a.log_level == "debug";
  a.service.log_json = a.log_format == "json";
  if (a.max_batch_tokens) a.model.batch_tokens = a.max_batch_tokens;

  server::EmbeddingService service(a.service);
  server::HttpServer http(a.http, [&service](server::HttpRequest&& r, server::Responder respond,
                                             std::shared_ptr<std::atomic<bool>> gone) {
    service.handle(std::move(r), std::move(respond), std::move(gone));
  });
  http.start();
  log_line(a, "INFO", "listening on http://" + a.http.host + ":" + std::to_string(http.port()) + " (loading " +
                          a.model.model + ")");

  const auto t0 = std::chrono::steady_clock::now();
  EmbeddingEngine engine(a.model);
  BatcherOptions bo;
  bo.max_batch_tokens = engine.batch_tokens();
  bo.max_batch_requests = a.max_batch_requests;
  bo.max_wait = std::chrono::microseconds(int64_t(a.max_wait_ms * 1000));
  bo.max_inputs = a.service.max_concurrent_inputs;
  bo.split_ways = a.batch_split;
  bo.deliver = [&service](std::function<void()> fn) { service.post(std::move(fn)); };
  // EMBEDKIT_DELIVER_TASKS=n overrides the cap (0: none), for measuring.
  const char* dt = std::getenv("EMBEDKIT_DELIVER_TASKS");
  bo.deliver_tasks = dt ? size_t(std::max(0, std::atoi(dt))) : size_t(a.service.tokenization_workers);
  // Busy polling (--busy-poll-us): on a GPU a small batch is over in ~0.2 ms and a single-text
  // request's round trip is ~0.4 ms, so the wake-ups of sleeping threads (a request arriving, the
  // next batch's submission, the answer going out) are a visible share of it; polling them away
  // gave +7-15% requests/s for 1 and 16 clients (p50 0.22 → 0.19 ms for one), +1-4% at 64, the
  // rest within ±5%, on two H100 machines (docs/benchmarks.md, "ninth session"). On the CPU the
  // cores run the model.
  const int poll_us = a.busy_poll_us >= 0 ? a.busy_poll_us : engine.on_gpu() ? kDefaultGpuBusyPollUs : 0;
  bo.submit_spin = std::chrono::microseconds(poll_us);
  http.set_busy_poll(std::chrono::microseconds(poll_us));
  server::Metrics& m = service.metrics();
  Batcher batcher(engine, bo, [&m](size_t inputs, size_t tokens, double s) {
    m.batch_inference_count++;
    m.batch_inference_success++;
    m.batch_size.observe(double(inputs));
    m.batch_tokens.observe(double(tokens));
    m.batch_inference_duration.observe(s);
  });
  service.attach(engine, batcher);
  const ModelInfo info = engine.info();
  char buf[256];
  std::snprintf(buf, sizeof buf, "ready in %.2f s: %s on %s, %zu dims, max %zu tokens/input, batches of %zu tokens",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), info.architecture.c_str(),
                info.device.c_str(), info.dim, info.max_seq_length, bo.max_batch_tokens);
  log_line(a, "INFO", buf);

  int sig = 0;
  sigwait(&sigs, &sig);
  log_line(a, "INFO", std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
                          ": no new connections; finishing " + std::to_string(http.requests_in_flight()) +
                          " accepted requests");
  // Grace 0: wait for every accepted request however long the queue is (an orchestrator that
  // cannot wait that long sends SIGKILL on its own schedule).
  http.drain(a.shutdown_grace_s > 0 ? std::chrono::milliseconds(int64_t(a.shutdown_grace_s * 1000))
                                    : std::chrono::milliseconds::max());
  const size_t left = http.requests_in_flight();
  http.stop();
  batcher.wait_idle();
  service.join_workers();
  if (left) {
    log_line(a, "WARN", std::to_string(left) + " requests were still running after the grace period");
    return 1;
  }
  log_line(a, "INFO", "all requests answered; bye");
  return 0;
}

}  // namespace

void add_serve_command(CLI::App& app, std::function<int()>& run) {
  auto* cmd = app.add_subcommand("serve", "HTTP server: TEI- and OpenAI-compatible embedding routes with adaptive batching");
  auto a = std::make_shared<ServeArgs>();
  a->service.max_concurrent_inputs = 8192;
  a->service.tokenization_workers = 0;
  a->http.threads = 0;
  cmd->add_option("-m,--model", a->model.model,
                  "Model directory, or hub id resolved offline from EmbedKit's store and the HF cache")
      ->capture_default_str();
  cmd->add_option("--device", a->model.device, "cpu | cuda | auto")->capture_default_str();
  cmd->add_option("--dtype", a->model.dtype, "auto (GPU: fp16, bf16 for Qwen3; CPU: fp32) | fp16 | bf16 | fp32")->capture_default_str();
  cmd->add_option("-t,--threads", a->model.threads, "CPU threads for the model (0 = all cores)")->capture_default_str();
  cmd->add_option("--host", a->http.host, "Address to listen on")->capture_default_str();
  cmd->add_option("-p,--port", a->http.port, "Port to listen on (0 = any free port)")->capture_default_str();
  cmd->add_option("--max-batch-tokens", a->max_batch_tokens,
                  "Token budget of one model batch (0 = auto: CPU 8192, GPU 65536)")
      ->capture_default_str();
  cmd->add_option("--max-batch-requests", a->max_batch_requests, "Inputs per model batch (0 = no limit)")
      ->capture_default_str();
  cmd->add_option("--batch-split", a->batch_split,
                  "A batch takes at most 1/N of the tokens waiting (at least 8192): requests that arrive "
                  "together leave in several batches, so the first answers go out sooner (0 = whole budgets)")
      ->capture_default_str();
  cmd->add_option("--max-wait", a->max_wait_ms,
                  "Milliseconds a partial batch may wait for more inputs when the model is free (0 = dispatch at once)")
      ->capture_default_str();
  cmd->add_option("--max-concurrent-inputs", a->service.max_concurrent_inputs,
                  "Inputs queued or running at once; beyond it requests get 429")
      ->capture_default_str();
  cmd->add_option("--max-client-batch-size", a->service.max_client_batch_size, "Inputs per request (more: 422)")
      ->capture_default_str();
  cmd->add_option("--payload-limit", a->http.payload_limit, "Largest request body in bytes (more: 413)")->capture_default_str();
  cmd->add_option("--read-timeout", a->read_timeout_s,
                  "Seconds a connection may take to send a whole request, keep-alive idle time included")
      ->capture_default_str();
  cmd->add_option("--shutdown-grace", a->shutdown_grace_s, "Seconds to finish accepted requests after SIGTERM (0 = until all are answered)")
      ->capture_default_str();
  cmd->add_flag("--auto-truncate", a->service.auto_truncate,
                "Truncate inputs longer than the model's maximum when the request does not say (TEI's flag)");
  cmd->add_option("--api-key", a->service.api_key, "Require \"Authorization: Bearer KEY\" on inference routes")
      ->envname("EMBEDKIT_API_KEY");
  cmd->add_option("--tokenization-workers", a->service.tokenization_workers,
                  "Threads that tokenize and format responses (0 = the usable cores left after --http-threads, at least 2)")
      ->capture_default_str();
  cmd->add_option("--http-threads", a->http.threads, "Threads for HTTP I/O (0 = half the usable cores, at most 8)")
      ->capture_default_str();
  cmd->add_option("--busy-poll-us", a->busy_poll_us,
                  "After their last request or answer, the I/O threads and the batch submitter poll this many "
                  "microseconds before they sleep: no thread wake-ups on a request's path, CPU spent while busy "
                  "(-1 = 200 when the model runs on a GPU, 0 on the CPU, whose cores run the model)")
      ->check(CLI::Range(-1, 1000000))
      ->capture_default_str();
  cmd->add_option("--log-format", a->log_format, "text | json")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  cmd->add_option("--log-level", a->log_level, "info (a line per request) | warn")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
  cmd->callback([a, &run] { run = [a] { return serve(*a); }; });
}

}  // namespace embedkit
