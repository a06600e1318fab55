// HTTP/1.1 server on epoll (see http_server.h for the threads).
//
// Why not a general framework (it was Boost.Beast until 2026-11-26): a single-text embedding
// request costs the model a few µs of a GPU batch, so the request path itself is what bounds such
// requests. Per request this server makes one recv, one sendmsg and, when the answer comes from
// another thread, at most one eventfd write per I/O thread and epoll round; no timers (deadlines
// are checked by a 100-ms sweep), no strands, no per-operation handler allocations. Measured on
// one core with wrk: 54 → 27 µs of server CPU per request against the Beast version (with the
// service changes of the same commit; docs/benchmarks.md, "fifth session").
#include "server/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "server/http_parser.h"
#include "util/error.h"
#include "util/json_writer.h"

namespace embedkit::server {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kHeaderLimit = 16 * 1024;
constexpr int kSweepMs = 100;               // deadlines are checked this often
constexpr size_t kReadChunk = 64 * 1024;    // bytes per recv
constexpr auto kLinger = std::chrono::seconds(2);  // reading (and dropping) after an error answer
constexpr int kMaxEvents = 256;
constexpr int kAcceptsPerWake = 64;

// Thousands of keep-alive connections need thousands of descriptors: raise the soft limit to
// the hard one.
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

const char* reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

// {"error": message, "error_type": type}: the server's own answers (malformed HTTP, a handler
// that threw). Messages can quote the client's bytes, so they are escaped.
HttpResponse error_response(int status, std::string_view message, const char* type) {
  HttpResponse r;
  r.status = status;
  r.body = "{\"error\":";
  json::append_string(r.body, message);
  r.body += ",\"error_type\":\"";
  r.body += type;
  r.body += "\"}";
  return r;
}

std::string peer_name(const sockaddr_storage& a) {
  char ip[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (a.ss_family == AF_INET) {
    auto* s = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
    port = ntohs(s->sin_port);
  } else if (a.ss_family == AF_INET6) {
    auto* s = reinterpret_cast<const sockaddr_in6*>(&a);
    inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
    port = ntohs(s->sin6_port);
  }
  return std::string(ip) + ":" + std::to_string(port);
}

}  // namespace

class Loop;

// One client connection. Every member function runs on its loop's thread.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(int fd, std::string remote, Loop& loop);
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
  }
  void start();
  void on_event(uint32_t events);
  void answer(HttpResponse&& r);  // the handler's answer to the request being served
  void sweep(Clock::time_point now);
  void close_if_idle();           // drain: a connection not serving a request is closed
  Loop& loop() { return loop_; }

  std::atomic<bool> gone{false};  // the client left while its request was served

 private:
  void read_input(uint32_t events);
  void process();  // parse and dispatch buffered requests, one at a time
  void send_response(HttpResponse&& r, bool keep_alive, bool counted);
  void flush();
  void after_flush();
  void close();
  bool writing() const { return out_done_ < out_head_.size() + out_body_.size(); }
  size_t input_cap() const;  // received bytes buffered at most (two whole requests)

  int fd_;
  std::string remote_;
  Loop& loop_;
  std::string in_;       // received bytes; in_[in_off_, end) not consumed yet
  size_t in_off_ = 0;
  RequestParser parser_{kHeaderLimit, 0};
  std::string out_head_, out_body_;  // the answer being written
  size_t out_done_ = 0;              // bytes of out_head_ + out_body_ written
  Clock::time_point deadline_ = Clock::time_point::max();  // read / write timeout, or end of linger
  bool serving_ = false;       // a request is with the handler
  bool counted_ = false;       // in the server's in-flight count until its answer is written
  bool keep_alive_ = true;     // of the request being served
  bool http10_ = false, head_ = false;
  bool close_after_ = false;   // close once the answer is written
  bool lingering_ = false;     // answered with close: dropping input until the peer closes
  bool peer_eof_ = false;
  bool want_out_ = false;      // EPOLLOUT registered
  bool read_capped_ = false;   // stopped reading at the buffer cap; bytes may wait in the socket
  bool in_process_ = false, sent_continue_ = false, closed_ = false;
};

class Loop {
 public:
  Loop(HttpServer::Impl& server, size_t index);
  ~Loop();
  void run();
  void post(std::function<void()> fn);
  void add_connection(int fd, std::string remote);
  void watch_listener(int fd);
  void remove(Connection& c, int fd);  // c closed fd: forget it (destroyed after this round)
  void set_events(Connection& c, int fd, bool want_out);

  HttpServer::Impl& server;
  const size_t index;
  static thread_local Loop* current;  // the loop running on this thread, if any

 private:
  void accept_connections();
  void sweep();
  void run_tasks(std::vector<std::function<void()>>& tasks);  // what other threads posted, in order

  int epfd_ = -1, evfd_ = -1, listen_fd_ = -1;
  char listen_tag_ = 0;  // epoll data for the listener (eventfd: nullptr; connections: themselves)
  std::mutex mu_;
  std::vector<std::function<void()>> tasks_;  // guarded by mu_
  std::atomic<bool> has_tasks_{false};        // tasks_ is not empty (read without mu_ while polling)
  std::atomic<bool> sleeping_{false};
  bool stop_ = false;
  Clock::time_point accept_paused_until_{};
  bool accept_paused_ = false;
  std::unordered_map<Connection*, std::shared_ptr<Connection>> conns_;
  std::vector<std::shared_ptr<Connection>> graveyard_;  // closed this round; freed after it

  friend class HttpServer;
};

thread_local Loop* Loop::current = nullptr;

struct HttpServer::Impl {
  HttpServerOptions opt;
  Handler handler;
  int listen_fd = -1;
  uint16_t bound_port = 0;
  std::vector<std::unique_ptr<Loop>> loops;
  std::vector<std::thread> threads;
  std::atomic<size_t> next_loop{0};
  std::atomic<bool> draining{false};
  std::atomic<int64_t> open{0}, in_flight{0}, accept_failures{0};
  std::atomic<int> poll_us{0};  // set_busy_poll
  Loop& loop_for_next_connection() { return *loops[next_loop++ % loops.size()]; }
};

// ---- Responder ------------------------------------------------------------------------------

void Responder::operator()(HttpResponse response) const {
  if (!conn_) return;
  if (Loop::current == &conn_->loop()) return conn_->answer(std::move(response));
  conn_->loop().post([c = conn_, r = std::move(response)]() mutable { c->answer(std::move(r)); });
}

void Responder::post(std::function<void()> fn) const {
  if (conn_) conn_->loop().post(std::move(fn));
}

// ---- Loop -----------------------------------------------------------------------------------

Loop::Loop(HttpServer::Impl& s, size_t i) : server(s), index(i) {
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  evfd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epfd_ < 0 || evfd_ < 0) throw Error(std::string("cannot create the server's event loop: ") + std::strerror(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  epoll_ctl(epfd_, EPOLL_CTL_ADD, evfd_, &ev);
}

Loop::~Loop() {
  conns_.clear();
  graveyard_.clear();
  if (epfd_ >= 0) ::close(epfd_);
  if (evfd_ >= 0) ::close(evfd_);
}

// From any thread. The loop marks itself sleeping before it looks at the queue one last time and
// waits; a poster that finds it sleeping wakes it (once: the flag is cleared by whoever sees it).
void Loop::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> l(mu_);
    tasks_.push_back(std::move(fn));
    has_tasks_.store(true, std::memory_order_release);
  }
  if (sleeping_.exchange(false)) {
    const uint64_t one = 1;
    ssize_t ignored = ::write(evfd_, &one, sizeof one);
    (void)ignored;
  }
}

void Loop::watch_listener(int fd) {
  listen_fd_ = fd;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &listen_tag_;
  epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
}

void Loop::add_connection(int fd, std::string remote) {
  if (server.draining) {
    ::close(fd);
    return;
  }
  auto c = std::make_shared<Connection>(fd, std::move(remote), *this);
  conns_[c.get()] = c;
  server.open++;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = c.get();
  epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
  c->start();
}

void Loop::set_events(Connection& c, int fd, bool want_out) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (want_out ? EPOLLOUT : 0u);
  ev.data.ptr = &c;
  epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev);
}

void Loop::remove(Connection& c, int fd) {
  epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
  auto it = conns_.find(&c);
  if (it != conns_.end()) {
    graveyard_.push_back(std::move(it->second));
    conns_.erase(it);
    server.open--;
  }
}

void Loop::accept_connections() {
  for (int k = 0; k < kAcceptsPerWake; ++k) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    const int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      // EMFILE/ENFILE/ENOBUFS/ENOMEM: the connection stays in the listen backlog. Accepting again
      // at once would fail at once (a busy loop): stop watching the listener for a while.
      if (server.accept_failures++ % 1000 == 0)
        std::fprintf(stderr, "WARN accept failed (%s): %lld so far; raise the open-files limit (ulimit -n) for more connections\n",
                     std::strerror(errno), (long long)server.accept_failures.load());
      epoll_ctl(epfd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
      accept_paused_ = true;
      accept_paused_until_ = Clock::now() + std::chrono::milliseconds(20);
      return;
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::string remote = peer_name(addr);
    Loop& target = server.loop_for_next_connection();
    if (&target == this) add_connection(fd, std::move(remote));
    else target.post([fd, &target, remote = std::move(remote)]() mutable { target.add_connection(fd, std::move(remote)); });
  }
}

void Loop::sweep() {
  const auto now = Clock::now();
  if (accept_paused_ && now >= accept_paused_until_ && listen_fd_ >= 0 && !server.draining) {
    accept_paused_ = false;
    watch_listener(listen_fd_);
  }
  std::vector<Connection*> all;
  all.reserve(conns_.size());
  for (auto& [p, sp] : conns_) all.push_back(p);
  for (Connection* c : all) c->sweep(now);
}

void Loop::run_tasks(std::vector<std::function<void()>>& tasks) {
  {
    std::lock_guard<std::mutex> l(mu_);
    tasks.swap(tasks_);
    has_tasks_.store(false, std::memory_order_relaxed);
  }
  for (auto& t : tasks) t();
  tasks.clear();
}

void Loop::run() {
  current = this;
  epoll_event events[kMaxEvents];
  auto next_sweep = Clock::now() + std::chrono::milliseconds(kSweepMs);
  std::vector<std::function<void()>> tasks;
  // Busy polling (HttpServer::set_busy_poll): for that long after the last event or task the
  // loop polls instead of sleeping in epoll_wait, so an answer posted by the batcher or a request
  // arriving is picked up without a wake-up (a few to tens of µs each, twice per request).
  auto last_work = Clock::now();
  auto sweep_when_due = [&] {
    if (const auto now = Clock::now(); now >= next_sweep) {
      sweep();
      next_sweep = now + std::chrono::milliseconds(kSweepMs);
    }
  };
  while (!stop_) {
    int n;
    const auto poll_for = std::chrono::microseconds(server.poll_us.load(std::memory_order_relaxed));
    if (poll_for.count() > 0 && Clock::now() - last_work < poll_for) {
      // Awake (sleeping_ stays false): posters only queue; their tasks are seen through has_tasks_.
      n = epoll_wait(epfd_, events, kMaxEvents, 0);
      if (n == 0 && !has_tasks_.load(std::memory_order_acquire)) {
        sweep_when_due();
        continue;
      }
    } else {
      sleeping_.store(true);
      bool pending;
      {
        std::lock_guard<std::mutex> l(mu_);
        pending = !tasks_.empty();
      }
      n = epoll_wait(epfd_, events, kMaxEvents, pending ? 0 : kSweepMs);
      sleeping_.store(false);
    }
    if (n > 0 || has_tasks_.load(std::memory_order_relaxed)) last_work = Clock::now();
    // Answers first: a posted task is mostly a finished request being formatted and written, and
    // its client sends nothing more until it has it; new requests read below only join the queue.
    run_tasks(tasks);
    for (int i = 0; i < n; ++i) {
      void* p = events[i].data.ptr;
      if (p == nullptr) {
        uint64_t v;
        ssize_t ignored = ::read(evfd_, &v, sizeof v);
        (void)ignored;
      } else if (p == &listen_tag_) {
        accept_connections();
      } else {
        static_cast<Connection*>(p)->on_event(events[i].events);
      }
    }
    run_tasks(tasks);  // those posted while the events ran
    sweep_when_due();
    graveyard_.clear();
  }
  current = nullptr;
}

// ---- Connection -----------------------------------------------------------------------------

Connection::Connection(int fd, std::string remote, Loop& loop)
    : fd_(fd), remote_(std::move(remote)), loop_(loop), parser_(kHeaderLimit, loop.server.opt.payload_limit) {}

size_t Connection::input_cap() const { return 2 * (kHeaderLimit + loop_.server.opt.payload_limit); }

void Connection::start() {
  deadline_ = Clock::now() + loop_.server.opt.read_timeout;
  on_event(EPOLLIN);  // bytes that came with the connection
}

void Connection::on_event(uint32_t events) {
  if (closed_) return;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) read_input(events);
  if (closed_) return;
  if ((events & EPOLLOUT) && writing()) {
    flush();
    if (closed_ || writing()) return;
    after_flush();
    if (closed_) return;
  }
  process();
}

// Reads what the socket has. Edge-triggered: a short read means the socket is drained for now
// (any later byte raises a new edge), unless the peer's FIN came with it (then read up to EOF).
void Connection::read_input(uint32_t events) {
  static thread_local char scratch[kReadChunk];
  const bool hup = events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
  for (;;) {
    const ssize_t n = ::recv(fd_, scratch, sizeof scratch, 0);
    if (n > 0) {
      if (!lingering_) in_.append(scratch, size_t(n));
      if (size_t(n) < sizeof scratch && !hup) break;
      // A client that keeps pipelining while its first request is served: stop buffering at
      // two requests' worth (the rest waits in the socket).
      if (in_.size() - in_off_ > input_cap()) {
        read_capped_ = true;
        break;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    peer_eof_ = true;  // 0: FIN; < 0: reset or another error
    break;
  }
  if (!peer_eof_) return;
  if (lingering_) return close();
  if (serving_) {
    gone = true;  // its queued work is dropped; the answer still completes the request
    close_after_ = true;
    return;
  }
  if (!writing()) close();  // idle, or a partial request that will never complete
  else close_after_ = true;
}

void Connection::process() {
  if (in_process_ || closed_) return;
  in_process_ = true;
  auto& server = loop_.server;
  while (!closed_ && !serving_ && !writing() && !close_after_) {
    if (server.draining) {
      close();
      break;
    }
    if (read_capped_ && in_.size() - in_off_ <= input_cap()) {  // room again: read what waits
      read_capped_ = false;
      read_input(EPOLLIN);
      if (closed_ || close_after_) break;
    }
    const size_t avail = in_.size() - in_off_;
    if (avail == 0 && !parser_.started()) {
      in_.clear();
      in_off_ = 0;
      break;
    }
    const auto status = parser_.parse(in_.data() + in_off_, avail);
    if (status == RequestParser::Status::NeedMore) {
      if (parser_.wants_continue() && !sent_continue_) {
        // curl sends "Expect: 100-continue" for bodies over 1 KB and waits for this first.
        sent_continue_ = true;
        static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (::send(fd_, kContinue, sizeof kContinue - 1, MSG_NOSIGNAL) != ssize_t(sizeof kContinue - 1)) close();
      }
      break;
    }
    if (status == RequestParser::Status::Error) {
      send_response(error_response(parser_.error_status(), parser_.error_message(), "Validation"), false, false);
      break;
    }
    // A whole request: hand it over.
    ParsedRequest& p = parser_.request();
    HttpRequest req;
    req.method = std::move(p.method);
    req.target = std::move(p.target);
    req.body = std::move(p.body);
    req.authorization = std::move(p.authorization);
    req.remote = remote_;
    keep_alive_ = p.keep_alive;
    http10_ = p.http10;
    head_ = req.method == "HEAD";
    in_off_ += parser_.consumed();
    parser_.reset();
    sent_continue_ = false;
    if (in_off_ == in_.size()) {
      in_.clear();
      in_off_ = 0;
    } else if (in_off_ > kReadChunk) {
      in_.erase(0, in_off_);
      in_off_ = 0;
    }
    deadline_ = Clock::time_point::max();  // no timeout while the model works
    serving_ = counted_ = true;
    server.in_flight++;
    auto self = shared_from_this();
    try {
      server.handler(std::move(req), Responder(self), std::shared_ptr<std::atomic<bool>>(self, &gone));
    } catch (const std::exception&) {
      if (serving_) answer(error_response(500, "internal error", "Backend"));
    }
  }
  in_process_ = false;
}

void Connection::answer(HttpResponse&& r) {
  if (!serving_) return;  // answered already
  serving_ = false;
  if (closed_) {
    if (counted_) loop_.server.in_flight--;
    counted_ = false;
    return;
  }
  const bool keep = keep_alive_ && !close_after_ && !loop_.server.draining;
  send_response(std::move(r), keep, true);
  if (!in_process_ && !closed_ && !writing() && !close_after_) process();
}

void Connection::send_response(HttpResponse&& r, bool keep_alive, bool counted) {
  std::string& h = out_head_;
  h.clear();
  h += "HTTP/1.1 ";
  h += std::to_string(r.status);
  h += ' ';
  h += reason_phrase(r.status);
  h += "\r\nServer: embedkit\r\nContent-Type: ";
  h += r.content_type;
  h += "\r\nContent-Length: ";
  h += std::to_string(r.body.size());
  h += "\r\n";
  for (auto& [k, v] : r.headers) {
    h += k;
    h += ": ";
    h += v;
    h += "\r\n";
  }
  if (!keep_alive) h += "Connection: close\r\n";
  else if (http10_) h += "Connection: keep-alive\r\n";
  h += "\r\n";
  out_body_ = head_ ? std::string() : std::move(r.body);
  out_done_ = 0;
  counted_ = counted;
  if (!keep_alive) close_after_ = true;
  deadline_ = Clock::now() + loop_.server.opt.write_timeout;
  flush();
  if (!closed_ && !writing()) after_flush();
}

void Connection::flush() {
  while (writing()) {
    iovec v[2];
    int cnt = 0;
    if (out_done_ < out_head_.size()) {
      v[cnt++] = {out_head_.data() + out_done_, out_head_.size() - out_done_};
      if (!out_body_.empty()) v[cnt++] = {out_body_.data(), out_body_.size()};
    } else {
      const size_t b = out_done_ - out_head_.size();
      v[cnt++] = {out_body_.data() + b, out_body_.size() - b};
    }
    msghdr m{};
    m.msg_iov = v;
    m.msg_iovlen = size_t(cnt);
    const ssize_t n = ::sendmsg(fd_, &m, MSG_NOSIGNAL);
    if (n > 0) {
      out_done_ += size_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!want_out_) {
        want_out_ = true;
        loop_.set_events(*this, fd_, true);
      }
      return;
    }
    return close();  // EPIPE, ECONNRESET: the client is gone
  }
}

// The answer is written: count it done, then wait for the next request or close.
void Connection::after_flush() {
  out_head_.clear();
  if (out_body_.capacity() > 64 * 1024) out_body_ = std::string();
  else out_body_.clear();
  out_done_ = 0;
  if (want_out_) {
    want_out_ = false;
    loop_.set_events(*this, fd_, false);
  }
  if (counted_) {
    counted_ = false;
    loop_.server.in_flight--;
  }
  if (close_after_) {
    if (peer_eof_) return close();
    // Close after an answer without keep-alive: send FIN, then read and drop whatever the client
    // still sends until it closes (closing with unread input would reset the connection, and the
    // client could lose the answer, e.g. the 413 for a body it is still sending).
    ::shutdown(fd_, SHUT_WR);
    lingering_ = true;
    deadline_ = Clock::now() + kLinger;
    in_.clear();
    in_off_ = 0;
    return;
  }
  deadline_ = Clock::now() + loop_.server.opt.read_timeout;  // waiting for the next request
}

void Connection::sweep(Clock::time_point now) {
  if (closed_ || now < deadline_) return;
  if (serving_) return;  // (no deadline while serving)
  close();               // read timeout, write timeout or end of linger
}

void Connection::close_if_idle() {
  if (!closed_ && !serving_ && !writing()) close();
}

void Connection::close() {
  if (closed_) return;
  closed_ = true;
  const int fd = fd_;
  fd_ = -1;
  loop_.remove(*this, fd);
  ::close(fd);
  if (counted_ && !serving_) {  // an answer that could not be written
    counted_ = false;
    loop_.server.in_flight--;
  }
  in_ = std::string();
  out_head_ = std::string();
  out_body_ = std::string();
}

// ---- HttpServer -----------------------------------------------------------------------------

HttpServer::HttpServer(HttpServerOptions options, Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(options);
  impl_->handler = std::move(handler);
}

void HttpServer::set_busy_poll(std::chrono::microseconds us) {
  impl_->poll_us = int(std::clamp<int64_t>(us.count(), 0, 1000000));
}

HttpServer::~HttpServer() {
  stop();
  if (impl_->listen_fd >= 0) ::close(impl_->listen_fd);
}

void HttpServer::start() {
  raise_fd_limit();
  auto& s = *impl_;
  sockaddr_storage addr{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, s.opt.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(s.opt.port);
    len = sizeof *v4;
  } else if (inet_pton(AF_INET6, s.opt.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(s.opt.port);
    len = sizeof *v6;
  } else {
    throw Error("--host \"" + s.opt.host + "\": not an IP address (use e.g. 127.0.0.1, 0.0.0.0 or ::)");
  }
  const int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd, 4096) != 0) {
    const std::string why = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    throw Error("cannot listen on " + s.opt.host + ":" + std::to_string(s.opt.port) + ": " + why);
  }
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen);
  s.bound_port = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                                  : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  s.listen_fd = fd;
  const int n = std::max(1, s.opt.threads);
  for (int i = 0; i < n; ++i) s.loops.push_back(std::make_unique<Loop>(s, size_t(i)));
  s.loops[0]->watch_listener(fd);
  for (auto& l : s.loops) s.threads.emplace_back([l = l.get()] { l->run(); });
}

uint16_t HttpServer::port() const { return impl_->bound_port; }

void HttpServer::drain(std::chrono::milliseconds grace) {
  auto& s = *impl_;
  if (s.loops.empty()) return;
  s.draining = true;
  Loop& first = *s.loops[0];
  first.post([&first] {
    if (first.listen_fd_ >= 0) {
      epoll_ctl(first.epfd_, EPOLL_CTL_DEL, first.listen_fd_, nullptr);
      ::close(first.listen_fd_);
      first.listen_fd_ = -1;
      first.server.listen_fd = -1;
    }
  });
  for (auto& l : s.loops)
    l->post([l = l.get()] {
      std::vector<Connection*> all;
      for (auto& [p, sp] : l->conns_) all.push_back(p);
      for (Connection* c : all) c->close_if_idle();
    });
  const auto start = Clock::now();
  while (s.in_flight.load() > 0 || s.open.load() > 0) {
    if (grace != std::chrono::milliseconds::max() && Clock::now() - start >= grace) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void HttpServer::stop() {
  auto& s = *impl_;
  for (auto& l : s.loops) l->post([l = l.get()] { l->stop_ = true; });
  for (auto& t : s.threads) t.join();
  s.threads.clear();
}

size_t HttpServer::open_connections() const { return size_t(std::max<int64_t>(0, impl_->open.load())); }

size_t HttpServer::requests_in_flight() const { return size_t(std::max<int64_t>(0, impl_->in_flight.load())); }

}  // namespace embedkit::server
