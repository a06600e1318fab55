// HTTP/1.1 server on Boost.Beast (see http_server.h).
#include "server/http_server.h"

#include <sys/resource.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "util/error.h"

namespace embedkit::server {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

// Thousands of keep-alive connections need thousands of descriptors: raise the soft limit to
// the hard one.
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

HttpResponse error_response(int status, const std::string& message, const char* type) {
  HttpResponse r;
  r.status = status;
  r.body = std::string("{\"error\":\"") + message + "\",\"error_type\":\"" + type + "\"}";
  return r;
}

}  // namespace

class Session;

struct HttpServer::Impl {
  HttpServerOptions opt;
  Handler handler;
  // One io_context per I/O thread, each run by its own thread, connections dealt round-robin:
  // one io_context shared by N threads serializes them on its one reactor (only one thread at a
  // time waits in epoll) and its one queue lock, which capped single-text requests near 40k/s
  // on 16 cores. ioc (the first) also holds the acceptor; a session lives on one context only,
  // so its handlers never run concurrently (the per-context thread is the strand).
  net::io_context ioc;
  std::vector<std::unique_ptr<net::io_context>> more_ioc;  // threads − 1 further contexts
  std::atomic<size_t> next_ioc{0};
  net::io_context& context_for_next_connection() {
    const size_t k = next_ioc++ % (more_ioc.size() + 1);
    return k == 0 ? ioc : *more_ioc[k - 1];
  }
  tcp::acceptor acceptor{ioc};
  net::steady_timer accept_retry{ioc};  // out of descriptors: accept again after a pause
  std::atomic<int64_t> accept_failures{0};
  std::vector<std::thread> threads;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> work;

  std::mutex mu;
  std::condition_variable cv;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;
  size_t in_flight = 0;  // requests read and not yet answered
  std::atomic<bool> draining{false};

  void accept();
  void request_started() {
    std::lock_guard<std::mutex> l(mu);
    ++in_flight;
  }
  void request_finished() {
    {
      std::lock_guard<std::mutex> l(mu);
      --in_flight;
    }
    cv.notify_all();
  }
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, HttpServer::Impl& server) : stream_(std::move(socket)), server_(server) {
    beast::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  ~Session() {
    std::lock_guard<std::mutex> l(server_.mu);
    server_.sessions.erase(this);
    server_.cv.notify_all();
  }

  void start() {
    {
      std::lock_guard<std::mutex> l(server_.mu);
      server_.sessions[this] = weak_from_this();
    }
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read(); });
  }

  // Drain: a connection waiting for a request is closed; one serving a request finishes it.
  void close_if_idle() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->reading_) self->close();
    });
  }

 private:
  void read() {
    if (server_.draining) return close();
    parser_.emplace();
    parser_->body_limit(server_.opt.payload_limit);
    parser_->header_limit(16 * 1024);
    reading_ = true;
    stream_.expires_after(server_.opt.read_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  // Headers are in: answer "Expect: 100-continue" (curl sends it for bodies over 1 KB) before
  // reading the body, so the client does not stall.
  void on_header(beast::error_code ec) {
    if (ec) return on_read(ec);
    auto& req = parser_->get();
    auto expect = req.find(http::field::expect);
    if (expect != req.end() && beast::iequals(expect->value(), "100-continue") && !parser_->is_done()) {
      continue_ = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
      return http::async_write(stream_, *continue_, [self = shared_from_this()](beast::error_code ec, size_t) {
        self->continue_.reset();
        if (ec) return self->close();
        self->read_body();
      });
    }
    read_body();
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    reading_ = false;
    if (ec == http::error::end_of_stream || ec == net::error::operation_aborted || ec == beast::error::timeout ||
        ec == net::error::connection_reset || ec == net::error::eof)
      return close();
    if (ec == http::error::body_limit)
      return write_error(413, "request body larger than the server's payload limit of " +
                                  std::to_string(server_.opt.payload_limit) + " bytes");
    if (ec == http::error::header_limit) return write_error(431, "request headers too large");
    if (ec) {
      // A malformed request: the stream position is unknown, so answer and close.
      if (buffer_.size() == 0 && !parser_->got_some()) return close();
      return write_error(400, std::string("malformed HTTP request: ") + ec.message());
    }
    auto& req = parser_->get();
    keep_alive_ = req.keep_alive();
    HttpRequest r;
    r.method = std::string(req.method_string());
    std::string_view target = req.target();
    r.target = std::string(target.substr(0, target.find('?')));
    r.body = std::move(req.body());
    if (auto it = req.find(http::field::authorization); it != req.end()) r.authorization = std::string(it->value());
    r.remote = remote_;
    server_.request_started();
    answered_ = false;
    client_gone_ = std::make_shared<std::atomic<bool>>(false);
    watch_client();
    auto self = shared_from_this();
    Responder respond = [self](HttpResponse res) {
      net::post(self->stream_.get_executor(), [self, res = std::move(res)]() mutable { self->write(std::move(res), true); });
    };
    try {
      server_.handler(std::move(r), std::move(respond), client_gone_);
    } catch (const std::exception& e) {
      write(error_response(500, "internal error", "Backend"), true);
    }
  }

  // While a request is served, end of stream on the socket means the peer closed: flag it so
  // queued work is dropped. A read, not a readiness wait: asio may complete an async_wait at
  // once (speculatively, right after the request's own bytes were read), and the blocking peek
  // that followed then held this connection's strand until the client gave up — the response
  // could never be written. Bytes that do arrive (a pipelined next request) go into buffer_,
  // where the next read() parses them, and end the watch.
  void watch_client() {
    stream_.socket().async_read_some(
        buffer_.prepare(4096), [self = shared_from_this(), flag = client_gone_](beast::error_code ec, size_t n) {
          if (n) self->buffer_.commit(n);
          if (ec == net::error::operation_aborted || self->answered_) return;
          if (ec) flag->store(true);  // eof, reset: nobody is waiting for the answer
        });
  }

  void write_error(int status, const std::string& message) {
    keep_alive_ = false;
    write(error_response(status, message, status == 413 ? "Validation" : "Validation"), false);
  }

  void write(HttpResponse res, bool counted) {
    answered_ = true;
    counted_ = counted;
    beast::error_code ignore;
    stream_.socket().cancel(ignore);  // ends watch_client's wait
    auto msg = std::make_shared<http::response<http::string_body>>();
    msg->version(11);
    msg->result(unsigned(res.status));
    msg->set(http::field::server, "embedkit");
    msg->set(http::field::content_type, res.content_type);
    for (auto& [k, v] : res.headers) msg->set(k, v);
    msg->body() = std::move(res.body);
    msg->keep_alive(keep_alive_ && !server_.draining);
    msg->prepare_payload();
    response_ = msg;
    stream_.expires_after(server_.opt.write_timeout);
    http::async_write(stream_, *msg, [self = shared_from_this()](beast::error_code ec, size_t) { self->on_write(ec); });
  }

  void on_write(beast::error_code ec) {
    const bool keep = response_ && response_->keep_alive();
    response_.reset();
    if (counted_) server_.request_finished();
    counted_ = false;
    if (ec || !keep) return close();
    read();
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  HttpServer::Impl& server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<http::response<http::string_body>> response_;
  std::shared_ptr<http::response<http::empty_body>> continue_;
  std::shared_ptr<std::atomic<bool>> client_gone_;
  std::string remote_;
  bool keep_alive_ = true, reading_ = false, answered_ = true, counted_ = false;
};

void HttpServer::Impl::accept() {
  acceptor.async_accept(context_for_next_connection().get_executor(), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      socket.set_option(tcp::no_delay(true), ec);
      std::make_shared<Session>(std::move(socket), *this)->start();
      accept();
      return;
    }
    // EMFILE/ENFILE/ENOBUFS and the like: the connection stays in the listen backlog. Accepting
    // again at once would fail at once (a busy loop); wait for descriptors to free up.
    if (accept_failures++ % 1000 == 0)
      std::fprintf(stderr, "WARN accept failed (%s): %lld so far; raise the open-files limit (ulimit -n) for more connections\n",
                   ec.message().c_str(), (long long)accept_failures.load());
    accept_retry.expires_after(std::chrono::milliseconds(20));
    accept_retry.async_wait([this](beast::error_code e) {
      if (!e && acceptor.is_open()) accept();
    });
  });
}

HttpServer::HttpServer(HttpServerOptions options, Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(options);
  impl_->handler = std::move(handler);
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  raise_fd_limit();
  auto& s = *impl_;
  beast::error_code ec;
  auto addr = net::ip::make_address(s.opt.host, ec);
  if (ec) throw Error("--host \"" + s.opt.host + "\": not an IP address (" + ec.message() + ")");
  tcp::endpoint ep(addr, s.opt.port);
  s.acceptor.open(ep.protocol(), ec);
  if (!ec) s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(ep, ec);
  if (!ec) s.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    throw Error("cannot listen on " + s.opt.host + ":" + std::to_string(s.opt.port) + ": " + ec.message());
  const int n = std::max(1, s.opt.threads);
  for (int i = 1; i < n; ++i) s.more_ioc.push_back(std::make_unique<net::io_context>(1));
  s.work.push_back(net::make_work_guard(s.ioc));
  for (auto& c : s.more_ioc) s.work.push_back(net::make_work_guard(*c));
  s.accept();
  s.threads.emplace_back([&s] { s.ioc.run(); });
  for (auto& c : s.more_ioc) s.threads.emplace_back([c = c.get()] { c->run(); });
}

uint16_t HttpServer::port() const {
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

void HttpServer::drain(std::chrono::milliseconds grace) {
  auto& s = *impl_;
  s.draining = true;
  net::post(s.ioc, [&s] {
    beast::error_code ec;
    s.acceptor.close(ec);
    s.accept_retry.cancel();
  });
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard<std::mutex> l(s.mu);
    for (auto& [p, w] : s.sessions)
      if (auto sp = w.lock()) live.push_back(sp);
  }
  for (auto& sp : live) sp->close_if_idle();
  live.clear();
  std::unique_lock<std::mutex> l(s.mu);
  auto all_done = [&] { return s.in_flight == 0 && s.sessions.empty(); };
  if (grace == std::chrono::milliseconds::max()) s.cv.wait(l, all_done);  // now + max would overflow
  else s.cv.wait_for(l, grace, all_done);
}

void HttpServer::stop() {
  auto& s = *impl_;
  s.work.clear();
  s.ioc.stop();
  for (auto& c : s.more_ioc) c->stop();
  for (auto& t : s.threads) t.join();
  s.threads.clear();
  s.more_ioc.clear();
}

size_t HttpServer::open_connections() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->sessions.size();
}

size_t HttpServer::requests_in_flight() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->in_flight;
}

}  // namespace embedkit::server
