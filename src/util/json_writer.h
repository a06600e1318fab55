// Small JSON/text writers for hot output paths (CLI JSON lines, HTTP responses): round-trip
// floats, string escaping, base64 of raw float32 bytes.
#pragma once
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

namespace embedkit::json {

// Writes v as a JSON number that reads back to exactly v: nine significant digits (enough for
// any float32), trailing zeros dropped, fixed notation for 1e-5 <= |v| < 1e9 and scientific
// otherwise ("-0.0123456789", "0.5", "1.25e-07"). Not always the shortest such form (0.1f prints
// as 0.100000001), but ~5x faster than std::to_chars' shortest search (Ryu, ~39 ns a float): a
// server answer for 32 MiniLM texts is 12,288 floats. Why nine digits always read back: the
// digits are within one unit of the 9th digit of v (double arithmetic: <= 2.3e-16 relative
// error before rounding), i.e. within 1e-8·|v|, and half a float32 ulp is > 2.98e-8·|v|.
// Non-finite and subnormal values go through std::to_chars. p needs 40 bytes of room (at most 15
// are kept).
inline char* write_float(char* p, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const int biased = int((bits >> 23) & 0xFF);
  if (biased == 0 || biased == 0xFF) return std::to_chars(p, p + 32, v).ptr;  // ±0, subnormal, inf, nan
  // 10^k for k in [-31, 47]: 10^(8 - e10) over float32's decimal exponents e10 in [-38, 39].
  static const double kPow10[] = {
      1e-31, 1e-30, 1e-29, 1e-28, 1e-27, 1e-26, 1e-25, 1e-24, 1e-23, 1e-22, 1e-21, 1e-20, 1e-19, 1e-18,
      1e-17, 1e-16, 1e-15, 1e-14, 1e-13, 1e-12, 1e-11, 1e-10, 1e-9,  1e-8,  1e-7,  1e-6,  1e-5,  1e-4,
      1e-3,  1e-2,  1e-1,  1e0,   1e1,   1e2,   1e3,   1e4,   1e5,   1e6,   1e7,   1e8,   1e9,   1e10,
      1e11,  1e12,  1e13,  1e14,  1e15,  1e16,  1e17,  1e18,  1e19,  1e20,  1e21,  1e22,  1e23,  1e24,
      1e25,  1e26,  1e27,  1e28,  1e29,  1e30,  1e31,  1e32,  1e33,  1e34,  1e35,  1e36,  1e37,  1e38,
      1e39,  1e40,  1e41,  1e42,  1e43,  1e44,  1e45,  1e46,  1e47};
  static const char kPairs[] =
      "0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849"
      "5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
  *p = '-';  // kept only for negative values (no branch: signs are random)
  p += bits >> 31;
  const double d = std::fabs(double(v));
  // floor(log10 d) is e10 or e10 + 1 with e10 = floor(log2(d)·log10(2)) = (E·78913) >> 18.
  int e10 = ((biased - 127) * 78913) >> 18;
  double scaled = d * kPow10[8 - e10 + 31];
  if (scaled >= 999999999.5) scaled = d * kPow10[8 - ++e10 + 31];
  uint64_t digits = uint64_t(scaled + 0.5);  // 9 significant digits, [1e8, 1e9]
  if (digits >= 1000000000u) digits = 100000000u, ++e10;
  // The nine digits, most significant first; the copies below are fixed-size (16 bytes, the
  // caller's buffer has room), the pointer moves by the real length.
  char dg[16] = {};
  dg[0] = char('0' + digits / 100000000u);
  uint32_t rest = uint32_t(digits % 100000000u);
  for (int i = 3; i >= 0; --i, rest /= 100) std::memcpy(dg + 1 + 2 * i, kPairs + 2 * (rest % 100), 2);
  int nd = 9;
  while (nd > 1 && dg[nd - 1] == '0') --nd;
  if (e10 >= -5 && e10 < 0) {  // 0.000ddd
    std::memcpy(p, "0.000000", 8);
    p += 1 - e10;
    std::memcpy(p, dg, 16);
    return p + nd;
  }
  if (e10 >= 0 && e10 < 9) {  // ddd.ddd or ddd
    if (nd <= e10 + 1) {
      std::memcpy(p, dg, 16);
      std::memset(p + nd, '0', size_t(e10 + 1 - nd));
      return p + e10 + 1;
    }
    std::memcpy(p, dg, 16);
    p += e10 + 1;
    *p = '.';
    std::memcpy(p + 1, dg + e10 + 1, 8);
    return p + 1 + (nd - e10 - 1);
  }
  *p = dg[0];  // d.ddde±XX
  p[1] = '.';
  std::memcpy(p + 2, dg + 1, 8);
  p += nd > 1 ? nd + 1 : 1;
  *p++ = 'e';
  *p++ = e10 < 0 ? '-' : '+';
  const int ae = e10 < 0 ? -e10 : e10;
  std::memcpy(p, kPairs + 2 * ae, 2);
  return p + 2;
}

inline void append_float(std::string& s, float v) {
  char buf[48];
  s.append(buf, write_float(buf, v));
}

// Appends "v0,v1,…" (n floats, comma-separated, no brackets), written in place.
inline void append_floats(std::string& s, const float* v, size_t n) {
  const size_t start = s.size();
  s.resize(start + n * 16 + 40);
  char* const base = s.data();
  char* p = base + start;
  for (size_t i = 0; i < n; ++i) {
    p = write_float(p, v[i]);
    *p++ = ',';
  }
  s.resize(size_t(p - base) - (n ? 1 : 0));
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
