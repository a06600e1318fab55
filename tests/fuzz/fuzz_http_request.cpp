// libFuzzer target: the server's request parsing — raw bytes through the server's incremental
// HTTP/1.1 parser (src/server/http_parser.cpp, with the server's header and body limits), then
// each parsed body through the route's JSON parser (src/server/requests.cpp). Each must either
// succeed or report an error; a parsed request must respect the limits (≤ 32 inputs, none
// empty, token-id lists not empty). The parser is also fed the same bytes in pieces (sizes
// taken from the input) and must reach the same requests as when fed them whole. Anything else
// — a crash, a sanitizer report, another exception, a difference — is a finding.
//
//   scripts/fuzz.sh [SECONDS]
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "server/http_parser.h"

#include "server/requests.h"

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

  // ...and as a raw HTTP request stream (may hold several pipelined requests): once fed whole,
  // once fed in pieces of 1..16 bytes (sizes from the data itself), as a socket would deliver it.
  struct Outcome {
    std::vector<std::string> requests;  // method target body keep-alive, per request
    int error = 0;
  };
  auto run = [&](bool pieces) {
    Outcome o;
    RequestParser parser(16 * 1024, 2 * 1024 * 1024);
    size_t start = 0, visible = 0, step = 0;
    for (int requests = 0; requests < 4 && start < size;) {
      visible = pieces ? std::min(size, visible + 1 + (data[step++ % size] & 15)) : size;
      const auto st = parser.parse(bytes.data() + start, visible - start);
      if (st == RequestParser::Status::Error) {
        check(parser.error_status() >= 400 && parser.error_status() <= 505, "error status outside 4xx/5xx");
        check(!parser.error_message().empty(), "parse error without a message");
        o.error = parser.error_status();
        break;
      }
      if (st == RequestParser::Status::NeedMore) {
        if (visible == size) break;  // the input ends inside a request
        continue;
      }
      ParsedRequest& r = parser.request();
      check(parser.consumed() > 0 && parser.consumed() <= visible - start, "consumed outside the bytes given");
      check(r.body.size() <= 2 * 1024 * 1024, "body over the limit accepted");
      check(!r.method.empty() && !r.target.empty(), "request without method or target");
      route(r.target, r.body);
      o.requests.push_back(r.method + ' ' + r.target + ' ' + r.body + (r.keep_alive ? " k" : " c"));
      start += parser.consumed();
      visible = std::max(visible, start);
      parser.reset();
      ++requests;
    }
    return o;
  };
  const Outcome whole = run(false), split = run(true);
  check(whole.requests == split.requests, "fed in pieces, the parser found other requests than fed whole");
  check(whole.error == split.error, "fed in pieces, the parser gave another error than fed whole");
  return 0;
}
