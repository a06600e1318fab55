// Incremental HTTP/1.1 request parser (RFC 9112) for the server's connections: request line,
// header fields, a body framed by Content-Length or chunked transfer coding, with header and body
// size limits. It keeps no pointers into the caller's buffer between calls: feed it the whole
// unconsumed input each time (more bytes appended at the end), it resumes where it stopped.
//
// Strict where leniency is a request-smuggling risk (Content-Length and Transfer-Encoding
// together, conflicting Content-Lengths, a Transfer-Encoding other than chunked, whitespace
// before a header's colon, obsolete line folding): those are 400s.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace embedkit::server {

struct ParsedRequest {
  std::string method;         // "GET", "POST", ...
  std::string target;         // path only: query string and an absolute-form scheme://host removed
  std::string authorization;  // the Authorization field, if any
  std::string body;
  bool keep_alive = true;     // HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with "keep-alive"
  bool expect_continue = false;
  bool http10 = false;        // HTTP/1.0: a kept-alive answer must say "Connection: keep-alive"
};

class RequestParser {
 public:
  enum class Status { NeedMore, Done, Error };
  RequestParser(size_t header_limit, size_t body_limit) : header_limit_(header_limit), body_limit_(body_limit) {}

  // Parses data[0, size) — the connection's unconsumed bytes, the same prefix as the last call's
  // plus whatever arrived since. Done: request() holds the request and consumed() the bytes it
  // took (the rest belong to the next, pipelined request); call reset() before the next one.
  // Error: error_status() (400, 413, 431, 501, 505) and error_message() say why; the stream
  // position is lost, so the connection answers and closes.
  Status parse(const char* data, size_t size);
  // After NeedMore: the header section is complete, the body is not, and the client asked for
  // "Expect: 100-continue" (send "100 Continue" once so that it sends the body).
  bool wants_continue() const { return state_ != State::Head && request_.expect_continue; }
  bool started() const { return scanned_ > pos_ || state_ != State::Head; }  // some bytes of a request seen
  ParsedRequest& request() { return request_; }
  size_t consumed() const { return pos_; }
  int error_status() const { return error_status_; }
  const std::string& error_message() const { return error_message_; }
  void reset();

 private:
  enum class State { Head, FixedBody, ChunkSize, ChunkData, ChunkDataEnd, Trailers, Done };
  Status fail(int status, std::string message);
  Status parse_head(std::string_view head);  // request line + fields, without the final CRLF CRLF
  Status parse_chunked(const char* data, size_t size);

  size_t header_limit_, body_limit_;
  State state_ = State::Head;
  size_t scanned_ = 0;          // Head: bytes already searched for the end of the header section
  size_t pos_ = 0;              // bytes of data consumed by completed steps
  uint64_t content_length_ = 0; // FixedBody: body bytes expected; ChunkData: bytes left in the chunk
  ParsedRequest request_;
  int error_status_ = 0;
  std::string error_message_;
};

}  // namespace embedkit::server
