// Asynchronous HTTP/1.1 server on epoll: keep-alive, pipelining-safe (one request read,
// answered, then the next), body and header limits, read/write timeouts, detection of clients
// that leave while their request is being served, graceful shutdown. Knows nothing about
// embeddings: requests go to a Handler, which answers through a Responder from any thread.
//
// Threads: N I/O threads, each with its own epoll set; a connection lives on one of them for its
// whole life (dealt round-robin at accept), so its state needs no lock. A request is parsed and
// handed to the Handler on that thread; an answer from another thread reaches it through the
// thread's task queue (one eventfd wake-up however many answers are queued while it sleeps).
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace embedkit::server {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path, query string stripped
  std::string body;
  std::string authorization;  // the Authorization header, if any
  std::string remote;         // peer address, for logs
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

class Connection;  // one client connection (http_server.cpp)

// How a Handler answers its request: call the responder exactly once, from any thread. post()
// runs a function on the connection's I/O thread: work queued there (formatting a small answer)
// skips a hand-over to another pool, and the answer it sends goes out without one more.
class Responder {
 public:
  Responder() = default;
  explicit Responder(std::shared_ptr<Connection> c) : conn_(std::move(c)) {}
  void operator()(HttpResponse response) const;
  void post(std::function<void()> fn) const;
  explicit operator bool() const { return bool(conn_); }
  void reset() { conn_.reset(); }

 private:
  std::shared_ptr<Connection> conn_;
};
// `client_gone` turns true if the client disconnects before the answer (drop its work).
using Handler = std::function<void(HttpRequest&&, Responder, std::shared_ptr<std::atomic<bool>> client_gone)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  size_t payload_limit = 2 * 1024 * 1024;  // request body bytes (→ 413)
  // From the moment a connection waits for a request until the whole request is read (keep-alive
  // idle time included): a slow or silent client is closed after this.
  std::chrono::milliseconds read_timeout{30000};
  std::chrono::milliseconds write_timeout{60000};
  int threads = 1;
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, Handler handler);
  ~HttpServer();
  // Binds and starts serving on `threads` threads; throws Error if the address is unusable.
  void start();
  uint16_t port() const;  // the bound port (useful with port 0)
  // Stops accepting, closes idle connections, lets requests already read finish and be answered
  // (Connection: close), then returns once none is left (or after `grace`; milliseconds::max()
  // waits without limit).
  void drain(std::chrono::milliseconds grace);
  void stop();  // stops the I/O threads (after drain())
  size_t open_connections() const;
  // After its last event or answer, an I/O thread polls (epoll_wait without a timeout) this long
  // before it sleeps: no wake-up on a request's way in or its answer's way out, for CPU while
  // busy. 0 (the default): sleeps at once. Takes effect while serving.
  void set_busy_poll(std::chrono::microseconds us);
  size_t requests_in_flight() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace embedkit::server
