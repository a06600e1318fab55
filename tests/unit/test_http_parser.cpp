// The server's HTTP/1.1 request parser (src/server/http_parser.cpp): framing by Content-Length
// and chunked coding, pipelining, keep-alive rules, limits and the errors of RFC 9112's
// smuggling-prone cases. Expected values follow the RFC's rules, written out by hand.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "server/http_parser.h"

using embedkit::server::ParsedRequest;
using embedkit::server::RequestParser;
using Status = RequestParser::Status;

namespace {

constexpr size_t kHeaders = 16 * 1024, kBody = 1000;

struct Result {
  std::vector<ParsedRequest> requests;
  int error = 0;
  std::string message;
  size_t left = 0;  // bytes not consumed when the input ran out
};

// Feeds `bytes` `step` bytes at a time (0: all at once), as a socket would deliver them.
Result parse_all(const std::string& bytes, size_t step = 0) {
  Result r;
  RequestParser p(kHeaders, kBody);
  size_t start = 0, visible = 0;
  while (start < bytes.size()) {
    visible = step ? std::min(bytes.size(), visible + step) : bytes.size();
    const Status s = p.parse(bytes.data() + start, visible - start);
    if (s == Status::Error) {
      r.error = p.error_status();
      r.message = p.error_message();
      return r;
    }
    if (s == Status::NeedMore) {
      if (visible == bytes.size()) break;
      continue;
    }
    r.requests.push_back(p.request());
    start += p.consumed();
    visible = std::max(visible, start);
    p.reset();
  }
  r.left = bytes.size() - start;
  return r;
}

TEST(HttpParser, GetWithoutBody) {
  auto r = parse_all("GET /health?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_EQ(r.error, 0);
  ASSERT_EQ(r.requests.size(), 1u);
  EXPECT_EQ(r.requests[0].method, "GET");
  EXPECT_EQ(r.requests[0].target, "/health");  // query stripped
  EXPECT_TRUE(r.requests[0].keep_alive);
  EXPECT_TRUE(r.requests[0].body.empty());
  EXPECT_EQ(r.left, 0u);
}

TEST(HttpParser, ContentLengthBodyAndPipelinedRequests) {
  const std::string one = "POST /embed HTTP/1.1\r\nContent-Length: 5\r\nAuthorization: Bearer k\r\n\r\nhello";
  const std::string two = "POST /v1/embeddings HTTP/1.1\r\ncontent-length:3\r\nConnection: close\r\n\r\nabc";
  for (size_t step : {0, 1, 2, 7}) {
    auto r = parse_all(one + two + "GET /x HT", step);
    ASSERT_EQ(r.error, 0) << step;
    ASSERT_EQ(r.requests.size(), 2u) << step;
    EXPECT_EQ(r.requests[0].body, "hello");
    EXPECT_EQ(r.requests[0].authorization, "Bearer k");
    EXPECT_TRUE(r.requests[0].keep_alive);
    EXPECT_EQ(r.requests[1].target, "/v1/embeddings");
    EXPECT_EQ(r.requests[1].body, "abc");
    EXPECT_FALSE(r.requests[1].keep_alive);
    EXPECT_EQ(r.left, 9u) << "a partial third request stays unconsumed";
  }
}

TEST(HttpParser, ChunkedBodyWithExtensionsAndTrailers) {
  const std::string req =
      "POST /embed HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4;name=value\r\n{\"in\r\nA\r\nputs\":\"a\"}\r\n0\r\nX-Trailer: t\r\n\r\n"
      "GET / HTTP/1.1\r\n\r\n";
  for (size_t step : {0, 1, 3}) {
    auto r = parse_all(req, step);
    ASSERT_EQ(r.error, 0) << r.message;
    ASSERT_EQ(r.requests.size(), 2u) << step;
    EXPECT_EQ(r.requests[0].body, "{\"inputs\":\"a\"}");
    EXPECT_EQ(r.requests[1].target, "/");
  }
}

TEST(HttpParser, KeepAliveRules) {
  EXPECT_FALSE(parse_all("GET / HTTP/1.0\r\n\r\n").requests.at(0).keep_alive);
  auto r = parse_all("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
  EXPECT_TRUE(r.requests.at(0).keep_alive);
  EXPECT_TRUE(r.requests.at(0).http10);
  EXPECT_FALSE(parse_all("GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n").requests.at(0).keep_alive);
}

TEST(HttpParser, AbsoluteFormTargetAndLeadingEmptyLines) {
  auto r = parse_all("\r\n\r\nPOST http://host:8080/v1/embeddings?a#f HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  ASSERT_EQ(r.error, 0) << r.message;
  EXPECT_EQ(r.requests.at(0).target, "/v1/embeddings");
  EXPECT_EQ(parse_all("GET http://host HTTP/1.1\r\n\r\n").requests.at(0).target, "/");
}

TEST(HttpParser, ExpectContinueIsReportedOnceTheHeadersAreIn) {
  RequestParser p(kHeaders, kBody);
  const std::string head = "POST /embed HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
  EXPECT_EQ(p.parse(head.data(), head.size() - 2), Status::NeedMore);
  EXPECT_FALSE(p.wants_continue());
  EXPECT_EQ(p.parse(head.data(), head.size()), Status::NeedMore);
  EXPECT_TRUE(p.wants_continue());
  const std::string all = head + "body";
  EXPECT_EQ(p.parse(all.data(), all.size()), Status::Done);
  EXPECT_EQ(p.request().body, "body");
}

TEST(HttpParser, Errors) {
  struct Case {
    std::string bytes;
    int status;
  } cases[] = {
      {"GARBAGE\r\n\r\n", 400},
      {"GET /\r\n\r\n", 400},
      {"GET / HTTP/2.0\r\n\r\n", 505},
      {"GET / HTTX/1.1\r\n\r\n", 400},
      {"G(T / HTTP/1.1\r\n\r\n", 400},
      {"POST #https:///]embeddings HTTP/1.1\r\n\r\n", 400},  // found by the fuzzer: an empty path
      {"GET embed HTTP/1.1\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
      {"POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
      {"POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", 413},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3E9\r\n", 413},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", 400},
      {"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n", 431},
      {"GET / HTTP/1.1\r\nX-Big: " + std::string(20000, 'a'), 431},  // no end of headers yet
  };
  for (const auto& c : cases)
    for (size_t step : {0, 1}) {
      auto r = parse_all(c.bytes, step);
      EXPECT_EQ(r.error, c.status) << "bytes: " << c.bytes.substr(0, 80) << " step " << step;
      if (r.error) {
        EXPECT_FALSE(r.message.empty());
      }
    }
}

TEST(HttpParser, IncompleteRequestNeedsMore) {
  auto r = parse_all("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
  EXPECT_EQ(r.error, 0);
  EXPECT_TRUE(r.requests.empty());
  RequestParser p(kHeaders, kBody);
  EXPECT_FALSE(p.started());
  const std::string part = "PO";
  EXPECT_EQ(p.parse(part.data(), part.size()), Status::NeedMore);
  EXPECT_TRUE(p.started());
}

}  // namespace
