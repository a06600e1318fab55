// Minimal blocking HTTP/1.1 client (Boost.Beast) for EmbedBench's remote mode: one keep-alive
// connection per worker thread.
#pragma once
#include <memory>
#include <string>

namespace embedkit::bench {

struct Url {
  std::string host, port, base;  // base: path prefix without a trailing '/', may be ""
  std::string text() const { return "http://" + host + ":" + port + base; }
};
Url parse_url(const std::string& url);  // http://host[:port][/prefix]; throws Error otherwise

struct HttpResponse {
  int status = 0;
  std::string body;
};

class HttpConnection {
 public:
  HttpConnection(Url url, double timeout_s);
  ~HttpConnection();
  // Sends one request (reconnecting once when a kept-alive connection was closed by the peer);
  // throws Error on connection/timeout failures, naming the URL.
  HttpResponse request(const std::string& method, const std::string& path, const std::string& body = "",
                       const std::string& content_type = "application/json");

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace embedkit::bench
