// safetensors parsing: valid files round-trip; every malformed header is an Error that says why.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "loader/safetensors.h"
#include "util/error.h"

using namespace embedkit;

static std::vector<uint8_t> make_file(const std::string& header, size_t data_bytes, uint8_t fill = 0) {
  std::vector<uint8_t> f(8 + header.size() + data_bytes, fill);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f[size_t(i)] = uint8_t(n >> (8 * i));
  std::memcpy(f.data() + 8, header.data(), header.size());
  return f;
}

static std::string error_of(const std::vector<uint8_t>& f) {
  try {
    parse_safetensors(f.data(), f.size(), "x.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, ParsesTensorsAndMetadata) {
  auto f = make_file(R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                     R"("b":{"dtype":"F16","shape":[4],"data_offsets":[24,32]}})",
                     32);
  float vals[6] = {1, 2, 3, 4, 5, 6};
  size_t base = f.size() - 32;
  std::memcpy(f.data() + base, vals, 24);
  auto t = parse_safetensors(f.data(), f.size(), "x");
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t.at("a").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.at("a").nbytes, 24u);
  float got[6];
  std::memcpy(got, t.at("a").data, 24);
  EXPECT_EQ(got[5], 6.0f);
  EXPECT_EQ(t.at("b").dtype, DType::F16);
}

TEST(Safetensors, RejectsMalformed) {
  EXPECT_NE(error_of({1, 2, 3}).find("8-byte header length"), std::string::npos);
  auto big = make_file("{}", 0);
  big[0] = 0xFF;
  EXPECT_NE(error_of(big).find("runs past the end"), std::string::npos);
  EXPECT_NE(error_of(make_file("{not json", 0)).find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(make_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8)).find("past the end of the data block"),
            std::string::npos);
  EXPECT_NE(error_of(make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16)).find("needs 12"),
            std::string::npos);
  EXPECT_NE(error_of(make_file(R"({"a":{"dtype":"Q4","shape":[3],"data_offsets":[0,12]}})", 16)).find("unknown dtype"),
            std::string::npos);
  EXPECT_NE(error_of(make_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)).find("non-negative"),
            std::string::npos);
  EXPECT_NE(error_of(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8)).find("begin 8 > end 4"),
            std::string::npos);
  EXPECT_NE(error_of(make_file(R"([1,2])", 0)).find("must be a JSON object"), std::string::npos);
  // The tensor name is in the message.
  EXPECT_NE(error_of(make_file(R"({"enc.w":{"dtype":"F32","shape":[1]}})", 4)).find("\"enc.w\""), std::string::npos);
}

TEST(Safetensors, HalfAndBfloatConversion) {
  EXPECT_EQ(half_to_float(0x3C00), 1.0f);
  EXPECT_EQ(half_to_float(0xC000), -2.0f);
  EXPECT_EQ(half_to_float(0x7BFF), 65504.0f);
  EXPECT_EQ(half_to_float(0x0001), 5.9604644775390625e-08f);  // smallest subnormal
  EXPECT_TRUE(std::isinf(half_to_float(0x7C00)));
  EXPECT_EQ(bf16_to_float(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_float(0xC040), -3.0f);
}
