// Incremental HTTP/1.1 request parser (see http_parser.h).
#include "server/http_parser.h"

#include <algorithm>

namespace embedkit::server {

namespace {

// RFC 9110 §5.6.2 tchar.
bool is_tchar(unsigned char c) {
  if (c >= '0' && c <= '9') return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-': case '.':
    case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return is_tchar((unsigned char)c); });
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = char(x + 32);
    if (y >= 'A' && y <= 'Z') y = char(y + 32);
    if (x != y) return false;
  }
  return true;
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// True if any comma-separated element of a list-valued field equals `token` (case-insensitive).
bool list_has(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    if (iequals(trim_ows(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

constexpr size_t kMaxLeadingEmptyLines = 8;   // RFC 9112 §2.2: a server SHOULD ignore at least one
constexpr size_t kMaxChunkLine = 1024;        // chunk size + extensions
constexpr uint64_t kNoLength = ~uint64_t(0);

}  // namespace

void RequestParser::reset() {
  state_ = State::Head;
  scanned_ = pos_ = 0;
  content_length_ = 0;
  request_ = ParsedRequest{};
  error_status_ = 0;
  error_message_.clear();
}

RequestParser::Status RequestParser::fail(int status, std::string message) {
  error_status_ = status;
  error_message_ = std::move(message);
  return Status::Error;
}

RequestParser::Status RequestParser::parse(const char* data, size_t size) {
  if (error_status_) return Status::Error;
  if (state_ == State::Done) return Status::Done;
  if (state_ == State::Head) {
    // Empty lines before the request line are skipped (a client's stray CRLF after a body).
    // (Only before the request line: once it starts, data[pos_] is a method character.)
    while (size >= pos_ + 2 && data[pos_] == '\r' && data[pos_ + 1] == '\n') {
      pos_ += 2;
      if (pos_ > 2 * kMaxLeadingEmptyLines) return fail(400, "malformed HTTP request: empty lines instead of a request line");
    }
    const std::string_view all(data, size);
    const size_t from = std::max(pos_, scanned_ >= 3 ? scanned_ - 3 : size_t(0));
    const size_t end = all.find("\r\n\r\n", from);
    if (end == std::string_view::npos) {
      scanned_ = size;
      if (size - pos_ > header_limit_)
        return fail(431, "request header section larger than " + std::to_string(header_limit_) + " bytes");
      return Status::NeedMore;
    }
    if (end + 4 - pos_ > header_limit_)
      return fail(431, "request header section larger than " + std::to_string(header_limit_) + " bytes");
    if (Status s = parse_head(all.substr(pos_, end + 2 - pos_)); s == Status::Error) return s;
    pos_ = end + 4;
    if (state_ == State::FixedBody && content_length_ == 0) state_ = State::Done;
    if (state_ == State::Head) state_ = State::Done;  // no body
  }
  if (state_ == State::FixedBody) {
    if (size - pos_ < content_length_) return Status::NeedMore;
    request_.body.assign(data + pos_, size_t(content_length_));
    pos_ += size_t(content_length_);
    state_ = State::Done;
  }
  if (state_ != State::Done && state_ != State::FixedBody) {
    if (Status s = parse_chunked(data, size); s != Status::Done) return s;
  }
  return state_ == State::Done ? Status::Done : Status::NeedMore;
}

// `head`: request line and header fields, each ending in CRLF.
RequestParser::Status RequestParser::parse_head(std::string_view head) {
  ParsedRequest& r = request_;
  size_t eol = head.find("\r\n");
  const std::string_view line = head.substr(0, eol);
  head.remove_prefix(eol + 2);
  // request-line = method SP request-target SP HTTP-version
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos)
    return fail(400, "malformed HTTP request: the request line is not \"METHOD target HTTP/1.1\"");
  const std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                         version = line.substr(sp2 + 1);
  if (!is_token(method)) return fail(400, "malformed HTTP request: bad method");
  if (target.empty() || std::any_of(target.begin(), target.end(), [](char c) { return (unsigned char)c <= 0x20 || c == 0x7f; }))
    return fail(400, "malformed HTTP request: bad request target");
  bool http10 = false;
  if (version == "HTTP/1.0") {
    http10 = true;
  } else if (version != "HTTP/1.1") {
    const auto digit = [](char c) { return c >= '0' && c <= '9'; };
    if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || !digit(version[5]) || version[6] != '.' || !digit(version[7]))
      return fail(400, "malformed HTTP request: bad HTTP version");
    if (version[5] != '1') return fail(505, "HTTP version " + std::string(version.substr(5)) + " not supported (HTTP/1.1 only)");
    // HTTP/1.x, x > 1: answered as HTTP/1.1 (RFC 9110 §6.2).
  }
  r.method.assign(method);
  // origin-form "/path?query", absolute-form "http://host/path?query" (RFC 9112 §3.2.2), or "*".
  std::string_view path = target;
  if (path.substr(0, 7) == "http://" || path.substr(0, 8) == "https://") {
    const size_t slash = path.find('/', path.find("//") + 2);
    path = slash == std::string_view::npos ? std::string_view("/") : path.substr(slash);
  } else if (path.front() != '/' && path != "*") {
    return fail(400, "malformed HTTP request: the request target must start with '/'");
  }
  path = path.substr(0, std::min(path.find('?'), path.find('#')));
  if (path.empty()) path = "/";  // "http://host?query"
  r.target.assign(path);

  bool has_length = false, chunked = false, conn_close = false, conn_keep_alive = false;
  uint64_t length = kNoLength;
  while (!head.empty()) {
    eol = head.find("\r\n");
    const std::string_view field = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    if (field.front() == ' ' || field.front() == '\t')
      return fail(400, "malformed HTTP request: obsolete header line folding");
    const size_t colon = field.find(':');
    if (colon == std::string_view::npos) return fail(400, "malformed HTTP request: a header line without ':'");
    const std::string_view name = field.substr(0, colon);
    if (!is_token(name)) return fail(400, "malformed HTTP request: bad header name \"" + std::string(name.substr(0, 64)) + "\"");
    const std::string_view value = trim_ows(field.substr(colon + 1));
    if (std::any_of(value.begin(), value.end(), [](char c) { return c == '\0' || c == '\r' || c == '\n'; }))
      return fail(400, "malformed HTTP request: a control character in header " + std::string(name));
    if (iequals(name, "content-length")) {
      if (value.empty() || value.size() > 18 || !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return fail(400, "malformed HTTP request: Content-Length \"" + std::string(value.substr(0, 32)) + "\" is not a number");
      uint64_t v = 0;
      for (char c : value) v = v * 10 + uint64_t(c - '0');
      if (has_length && v != length) return fail(400, "malformed HTTP request: conflicting Content-Length headers");
      has_length = true;
      length = v;
    } else if (iequals(name, "transfer-encoding")) {
      if (chunked || !iequals(value, "chunked"))
        return fail(501, "Transfer-Encoding \"" + std::string(value.substr(0, 64)) + "\" not supported (only chunked)");
      chunked = true;
    } else if (iequals(name, "connection")) {
      conn_close |= list_has(value, "close");
      conn_keep_alive |= list_has(value, "keep-alive");
    } else if (iequals(name, "expect")) {
      r.expect_continue = iequals(value, "100-continue");
    } else if (iequals(name, "authorization")) {
      r.authorization.assign(value);
    }
  }
  if (has_length && chunked) return fail(400, "malformed HTTP request: both Content-Length and Transfer-Encoding");
  r.http10 = http10;
  r.keep_alive = http10 ? conn_keep_alive && !conn_close : !conn_close;
  if (has_length && length > body_limit_)
    return fail(413, "request body of " + std::to_string(length) + " bytes is larger than the server's payload limit of " +
                         std::to_string(body_limit_) + " bytes");
  if (chunked) state_ = State::ChunkSize;
  else if (has_length) {
    state_ = State::FixedBody;
    content_length_ = length;
  }
  return Status::NeedMore;  // (not an answer: parse() goes on to the body)
}

RequestParser::Status RequestParser::parse_chunked(const char* data, size_t size) {
  const std::string_view all(data, size);
  for (;;) {
    switch (state_) {
      case State::ChunkSize: {
        const size_t eol = all.find("\r\n", pos_);
        // The same limit whether the line came whole or in pieces (a piece may end in its CR).
        if (eol == std::string_view::npos ? size - pos_ > kMaxChunkLine + 1 : eol - pos_ > kMaxChunkLine)
          return fail(400, "malformed HTTP request: chunk size line too long");
        if (eol == std::string_view::npos) return Status::NeedMore;
        std::string_view line = all.substr(pos_, eol - pos_);
        line = trim_ows(line.substr(0, line.find(';')));  // chunk extensions are ignored
        if (line.empty() || line.size() > 15) return fail(400, "malformed HTTP request: bad chunk size");
        uint64_t n = 0;
        for (char c : line) {
          int d = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;
          if (d < 0) return fail(400, "malformed HTTP request: bad chunk size");
          n = n * 16 + uint64_t(d);
        }
        if (request_.body.size() + n > body_limit_)
          return fail(413, "chunked request body larger than the server's payload limit of " + std::to_string(body_limit_) +
                               " bytes");
        pos_ = eol + 2;
        content_length_ = n;
        state_ = n == 0 ? State::Trailers : State::ChunkData;
        break;
      }
      case State::ChunkData: {
        const size_t take = size_t(std::min<uint64_t>(content_length_, size - pos_));
        request_.body.append(data + pos_, take);
        pos_ += take;
        content_length_ -= take;
        if (content_length_) return Status::NeedMore;
        state_ = State::ChunkDataEnd;
        break;
      }
      case State::ChunkDataEnd:
        if (size - pos_ < 2) return Status::NeedMore;
        if (data[pos_] != '\r' || data[pos_ + 1] != '\n') return fail(400, "malformed HTTP request: chunk not followed by CRLF");
        pos_ += 2;
        state_ = State::ChunkSize;
        break;
      case State::Trailers: {
        const size_t eol = all.find("\r\n", pos_);
        if (eol == std::string_view::npos ? size - pos_ > header_limit_ + 1 : eol - pos_ > header_limit_)
          return fail(431, "request trailer line too large");
        if (eol == std::string_view::npos) return Status::NeedMore;
        const bool last = eol == pos_;
        pos_ = eol + 2;
        if (last) {
          state_ = State::Done;
          return Status::Done;
        }
        break;  // a trailer field: ignored
      }
      default:
        return Status::Done;
    }
  }
}

}  // namespace embedkit::server
