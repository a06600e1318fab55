// json::write_float: every float32 it writes must read back to the same bits (strtof, correctly
// rounded) and stay valid JSON; on embedding-like values it is at most about a character longer
// than the shortest form on average.
#include <gtest/gtest.h>

#include <charconv>
#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "util/json_writer.h"

namespace {

using embedkit::json::append_float;

float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
uint32_t to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// Checks one value; returns the written text.
std::string check_round_trip(float v) {
  std::string s;
  append_float(s, v);
  char* end = nullptr;
  const float back = std::strtof(s.c_str(), &end);
  EXPECT_EQ(size_t(end - s.c_str()), s.size()) << "unparsed tail in \"" << s << "\"";
  EXPECT_EQ(to_bits(back), to_bits(v)) << "\"" << s << "\" reads back as " << back << ", wrote " << v;
  // JSON number grammar: -?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?
  size_t i = s[0] == '-' ? 1 : 0;
  EXPECT_TRUE(i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) << s;
  if (s[i] == '0') EXPECT_TRUE(i + 1 == s.size() || s[i + 1] == '.') << "leading zero: " << s;
  return s;
}

TEST(JsonWriter, FloatsReadBackExactlyOverEveryExponent) {
  std::mt19937 rng(7);
  // Random bit patterns: every exponent (normal and subnormal), every mantissa shape.
  for (int i = 0; i < 300000; ++i) {
    const float v = from_bits(rng());
    if (std::isfinite(v)) check_round_trip(v);
  }
}

TEST(JsonWriter, EmbeddingLikeValues) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 0.05f);
  size_t ours = 0, shortest = 0;
  for (int i = 0; i < 200000; ++i) {
    const float v = nd(rng);
    ours += check_round_trip(v).size();
    char buf[32];
    shortest += size_t(std::to_chars(buf, buf + sizeof buf, v).ptr - buf);
  }
  EXPECT_LE(double(ours) / double(shortest), 1.12) << ours << " vs " << shortest << " characters";
}

TEST(JsonWriter, BoundariesAndFormats) {
  EXPECT_EQ(check_round_trip(0.5f), "0.5");
  EXPECT_EQ(check_round_trip(-0.25f), "-0.25");
  EXPECT_EQ(check_round_trip(1.f), "1");
  EXPECT_EQ(check_round_trip(100.f), "100");
  EXPECT_EQ(check_round_trip(123456.f), "123456");
  EXPECT_EQ(check_round_trip(1.5e-5f).substr(0, 7), "0.00001");
  EXPECT_NE(check_round_trip(1e-6f).find('e'), std::string::npos);
  EXPECT_NE(check_round_trip(1e10f).find("e+10"), std::string::npos);
  EXPECT_EQ(check_round_trip(0.f), "0");
  EXPECT_EQ(check_round_trip(-0.f), "-0");
  // Decade boundaries, where the decimal exponent estimate is off by one and rounding carries.
  for (int e = -38; e <= 38; ++e)
    for (float v : {std::pow(10.f, float(e)), std::nextafter(std::pow(10.f, float(e)), 0.f),
                    std::nextafter(std::pow(10.f, float(e)), INFINITY), 9.99999999e8f, 999999.9f})
      if (std::isfinite(v) && v != 0.f) check_round_trip(v), check_round_trip(-v);
  for (uint32_t b = 0x7F7FFFF0u; b <= 0x7F7FFFFFu; ++b) check_round_trip(from_bits(b));  // up to FLT_MAX
  for (uint32_t b = 0x00800000u; b <= 0x00800010u; ++b) check_round_trip(from_bits(b));  // smallest normals
}

}  // namespace
