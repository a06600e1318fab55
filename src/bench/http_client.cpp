#include "bench/http_client.h"

#include <chrono>
#include <optional>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "util/error.h"

namespace embedkit::bench {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

Url parse_url(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind("https://", 0) == 0)
    throw Error("--url " + url + ": https is not supported by the benchmark client; use http:// (or a local TLS proxy)");
  if (url.rfind(scheme, 0) != 0) throw Error("--url " + url + ": expected http://HOST[:PORT][/PREFIX]");
  std::string rest = url.substr(scheme.size());
  Url u;
  const size_t slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  u.base = slash == std::string::npos ? "" : rest.substr(slash);
  while (!u.base.empty() && u.base.back() == '/') u.base.pop_back();
  const size_t colon = hostport.rfind(':');
  u.host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
  u.port = colon == std::string::npos ? "80" : hostport.substr(colon + 1);
  if (u.host.empty()) throw Error("--url " + url + ": no host");
  if (u.port.empty() || u.port.find_first_not_of("0123456789") != std::string::npos)
    throw Error("--url " + url + ": port \"" + u.port + "\" is not a number");
  return u;
}

// Each operation runs on the connection's own io_context with a beast::tcp_stream deadline: a
// blocking asio socket ignores SO_RCVTIMEO (it polls again on EAGAIN), so a response that never
// comes would hang the worker for ever instead of counting as a timeout.
struct HttpConnection::Impl {
  Url url;
  double timeout_s;
  asio::io_context io;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
  bool connected = false;

  std::chrono::milliseconds deadline() const { return std::chrono::milliseconds(int64_t(timeout_s * 1000)); }
  // Runs the queued operation to completion (or to its deadline).
  void run() {
    io.restart();
    io.run();
  }

  void connect() {
    tcp::resolver resolver(io);
    beast::error_code ec;
    auto endpoints = resolver.resolve(url.host, url.port, ec);
    if (ec) throw Error(url.text() + ": cannot resolve host (" + ec.message() + ")");
    stream.emplace(io);
    stream->expires_after(deadline());
    stream->async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
    run();
    if (ec) throw Error(url.text() + ": cannot connect (" + (ec == beast::error::timeout ? "timed out" : ec.message()) + ")");
    stream->socket().set_option(tcp::no_delay(true), ec);
    buffer.clear();
    connected = true;
  }

  HttpResponse once(const std::string& method, const std::string& path, const std::string& body,
                    const std::string& content_type, beast::error_code& ec) {
    http::request<http::string_body> req{http::string_to_verb(method), url.base + path, 11};
    req.set(http::field::host, url.host + ":" + url.port);
    req.set(http::field::user_agent, "embedkit-bench");
    req.keep_alive(true);
    if (!body.empty() || method == "POST") {
      req.set(http::field::content_type, content_type);
      req.body() = body;
      req.prepare_payload();
    }
    stream->expires_after(deadline());  // one deadline for the whole exchange
    http::async_write(*stream, req, [&](beast::error_code e, size_t) { ec = e; });
    run();
    if (ec) return {};
    http::response_parser<http::string_body> parser;
    parser.body_limit(size_t(1) << 30);
    http::async_read(*stream, buffer, parser, [&](beast::error_code e, size_t) { ec = e; });
    run();
    if (ec) return {};
    auto res = parser.release();
    if (!res.keep_alive()) connected = false;
    return HttpResponse{int(res.result_int()), std::move(res.body())};
  }
};

HttpConnection::HttpConnection(Url url, double timeout_s) : impl_(std::make_unique<Impl>()) {
  impl_->url = std::move(url);
  impl_->timeout_s = timeout_s;
}
HttpConnection::~HttpConnection() {
  beast::error_code ec;
  if (impl_->connected && impl_->stream) impl_->stream->socket().shutdown(tcp::socket::shutdown_both, ec);
}

HttpResponse HttpConnection::request(const std::string& method, const std::string& path, const std::string& body,
                                     const std::string& content_type) {
  Impl& m = *impl_;
  const bool reused = m.connected;
  if (!m.connected) m.connect();
  beast::error_code ec;
  HttpResponse r = m.once(method, path, body, content_type, ec);
  if (ec && reused && (ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
                       ec == asio::error::broken_pipe || ec == asio::error::eof)) {
    m.connect();  // the server closed an idle keep-alive connection: retry once on a fresh one
    r = m.once(method, path, body, content_type, ec);
  }
  if (ec) {
    m.connected = false;
    const bool timeout = ec == beast::error::timeout || ec == asio::error::timed_out;
    throw Error(m.url.text() + path + ": " + (timeout ? "timed out" : ec.message()));
  }
  return r;
}

}  // namespace embedkit::bench
