// libFuzzer target: the server's request parsing — raw bytes through Beast's HTTP/1.1 request
// parser (with the server's header and body limits), then the body through the route's JSON
// parser (src/server/requests.cpp). Each must either succeed or report a RequestError / parse
// error; a parsed request must respect the limits (≤ 32 inputs, none empty, token-id lists not
// empty). Anything else — a crash, a sanitizer report, another exception — is a finding.
//
//   scripts/fuzz.sh [SECONDS]
#include <boost/beast/http.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string_view>

#include "server/requests.h"

namespace http = boost::beast::http;
using namespace embedkit::server;

namespace {

constexpr size_t kMaxBatch = 32;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_http_request: invariant broken: %s\n", what);
    __builtin_trap();
  }
}

void check_embed(const EmbedRequest& r) {
  const size_t n = r.texts.size() + r.token_ids.size();
  check(n >= 1 && n <= kMaxBatch, "input count outside [1, 32]");
  check(r.texts.empty() || r.token_ids.empty(), "texts and token ids both set");
  for (auto& t : r.texts) check(!t.empty(), "empty text accepted");
  for (auto& ids : r.token_ids) check(!ids.empty(), "empty token id list accepted");
  check(r.batch || n == 1, "single input with several items");
}

void route(std::string_view target, std::string_view body) {
  try {
    if (target == "/embed" || target == "/") check_embed(parse_tei_embed(body, kMaxBatch));
    else if (target == "/v1/embeddings") check_embed(parse_openai_embed(body, kMaxBatch));
    else if (target == "/tokenize") {
      auto r = parse_tokenize(body, kMaxBatch);
      check(!r.texts.empty() && r.texts.size() <= kMaxBatch, "tokenize input count");
    } else if (target == "/decode") {
      auto r = parse_decode(body, kMaxBatch);
      check(!r.ids.empty(), "decode without sequences");
    }
  } catch (const RequestError& e) {
    check(e.status == 400 || e.status == 422, "RequestError status not 400/422");
    check(!e.message.empty(), "RequestError without a message");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // As a whole body for each route (the JSON parsers see arbitrary bytes)...
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (std::string_view t : {"/embed", "/v1/embeddings", "/tokenize", "/decode"}) route(t, bytes);

  // ...and as a raw HTTP request stream (may hold several pipelined requests).
  size_t pos = 0;
  for (int requests = 0; requests < 4 && pos < size; ++requests) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(2 * 1024 * 1024);
    parser.header_limit(16 * 1024);
    parser.eager(true);
    boost::system::error_code ec;
    size_t used = parser.put(boost::asio::buffer(data + pos, size - pos), ec);
    if (ec == http::error::need_more) {
      parser.put_eof(ec);
      if (ec) return 0;
    } else if (ec) {
      return 0;
    }
    pos += used;
    if (!parser.is_done()) return 0;
    const auto& req = parser.get();
    std::string_view target = req.target();
    route(target.substr(0, target.find('?')), req.body());
    if (used == 0) break;
  }
  return 0;
}
