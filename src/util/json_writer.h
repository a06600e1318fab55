// Small JSON/text writers for hot output paths (CLI JSON lines, HTTP responses): shortest
// round-trip floats via std::to_chars, string escaping, base64 of raw float32 bytes.
#pragma once
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

namespace embedkit::json {

inline void append_float(std::string& s, float v) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest form that reads back to v
  s.append(buf, r.ptr);
}

// Appends v as a JSON string literal (input must be valid UTF-8; control characters escaped).
inline void append_string(std::string& s, std::string_view v) {
  s += '"';
  for (unsigned char c : v) {
    switch (c) {
      case '"': s += "\\\""; break;
      case '\\': s += "\\\\"; break;
      case '\n': s += "\\n"; break;
      case '\r': s += "\\r"; break;
      case '\t': s += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          s += buf;
        } else {
          s += char(c);
        }
    }
  }
  s += '"';
}

// Standard base64 (RFC 4648, with padding) of n bytes.
inline void append_base64(std::string& s, const void* data, size_t n) {
  static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* p = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    const uint32_t v = (uint32_t(p[i]) << 16) | (uint32_t(p[i + 1]) << 8) | p[i + 2];
    s += tbl[v >> 18];
    s += tbl[(v >> 12) & 63];
    s += tbl[(v >> 6) & 63];
    s += tbl[v & 63];
  }
  if (i < n) {
    uint32_t v = uint32_t(p[i]) << 16;
    if (i + 1 < n) v |= uint32_t(p[i + 1]) << 8;
    s += tbl[v >> 18];
    s += tbl[(v >> 12) & 63];
    s += i + 1 < n ? tbl[(v >> 6) & 63] : '=';
    s += '=';
  }
}

}  // namespace embedkit::json
