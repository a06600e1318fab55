#include "bench/http_client.h"

#include <sys/socket.h>
#include <sys/time.h>

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

struct HttpConnection::Impl {
  Url url;
  double timeout_s;
  asio::io_context io;
  tcp::socket socket{io};
  beast::flat_buffer buffer;
  bool connected = false;

  void connect() {
    tcp::resolver resolver(io);
    beast::error_code ec;
    auto endpoints = resolver.resolve(url.host, url.port, ec);
    if (ec) throw Error(url.text() + ": cannot resolve host (" + ec.message() + ")");
    socket = tcp::socket(io);
    asio::connect(socket, endpoints, ec);
    if (ec) throw Error(url.text() + ": cannot connect (" + ec.message() + ")");
    socket.set_option(tcp::no_delay(true));
    // Blocking reads/writes give up after the timeout (SO_RCVTIMEO/SO_SNDTIMEO on the socket).
    timeval tv{};
    tv.tv_sec = long(timeout_s);
    tv.tv_usec = long((timeout_s - double(tv.tv_sec)) * 1e6);
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
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
    http::write(socket, req, ec);
    if (ec) return {};
    http::response_parser<http::string_body> parser;
    parser.body_limit(size_t(1) << 30);
    http::read(socket, buffer, parser, ec);
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
  if (impl_->connected) impl_->socket.shutdown(tcp::socket::shutdown_both, ec);
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
    const bool timeout = ec == asio::error::would_block || ec == asio::error::timed_out || ec == asio::error::try_again;
    throw Error(m.url.text() + path + ": " + (timeout ? "timed out" : ec.message()));
  }
  return r;
}

}  // namespace embedkit::bench
