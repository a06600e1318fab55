// The embedding service behind `embedkit serve`: TEI-compatible and OpenAI-compatible routes on
// top of the HTTP server, the tokenization worker pool and the adaptive batcher.
//
//   I/O thread: parse + validate JSON ──▶ tokenize (on the I/O thread for ≤ 4 inputs of ≤ 2 KB,
//               else on the pool) ──▶ Batcher (one queue item per input) ──▶ executor: model
//               batches ──▶ job done ──▶ format JSON (small jobs: handed straight back to their
//               connection's I/O thread; others: on the pool) ──▶ I/O thread: write
//
// Routes (TEI): POST /embed, POST / (alias), POST /tokenize, POST /decode, GET /info,
// GET /health, GET /metrics. (OpenAI): POST /v1/embeddings (also /embeddings, /openai).
// Errors: {"error": message, "error_type": type} with 400 malformed JSON, 401 bad API key,
// 404 unknown route, 405 wrong method, 413 payload too large, 422 validation, 429 overloaded,
// 503 loading; the OpenAI route adds OpenAI's {"error": {"message", "type", "code"}} shape.
#pragma once
#include <atomic>
#include <memory>
#include <string>

#include "server/http_server.h"
#include "server/metrics.h"

namespace embedkit {
class EmbeddingEngine;
class Batcher;
class TokenDecoder;
}  // namespace embedkit

namespace embedkit::server {

struct ServiceOptions {
  std::string model_id;               // as given to --model (reported by /info and OpenAI "model")
  size_t max_client_batch_size = 32;  // inputs per request (TEI's default)
  bool auto_truncate = false;         // default of the request's `truncate`
  std::string api_key;                // when set, inference routes need "Authorization: Bearer <key>"
  int tokenization_workers = 1;
  bool log_requests = true;           // one line per request on stderr
  bool log_json = false;
  size_t max_concurrent_inputs = 0;   // reported by /info (the batcher enforces it)
};

class EmbeddingService {
 public:
  explicit EmbeddingService(ServiceOptions options);
  ~EmbeddingService();
  // Until attach() every route but /health and /metrics answers 503 (model loading).
  void attach(EmbeddingEngine& engine, Batcher& batcher);
  void handle(HttpRequest&& req, Responder respond, std::shared_ptr<std::atomic<bool>> client_gone);
  Metrics& metrics() { return metrics_; }
  // Waits for the tokenization/formatting pool to finish queued work (shutdown).
  void join_workers();
  // Runs fn on the tokenization/formatting pool: pass it as BatcherOptions::deliver, so finished
  // jobs reach the service on the pool (where their answers are formatted) in a few hand-overs.
  void post(std::function<void()> fn);

  struct Impl;

 private:
  Metrics metrics_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace embedkit::server
