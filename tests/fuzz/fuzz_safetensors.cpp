// libFuzzer target: the safetensors parser on arbitrary bytes.
//
// parse_safetensors() must either throw embedkit::Error or return tensors whose byte ranges lie
// inside the input and agree with dtype x shape. Every tensor's bytes are read (summed), so a
// range that escaped the input is an ASan report; a broken invariant is a trap. Any other
// exception type escapes and libFuzzer reports it as a crash.
//
//   scripts/fuzz.sh [SECONDS]      (builds with -DEMBEDKIT_FUZZ=ON and runs this on a corpus copy)
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "loader/safetensors.h"
#include "util/error.h"

using embedkit::DType;

namespace {

[[noreturn]] void invariant_failed(const char* what, const std::string& name) {
  std::fprintf(stderr, "fuzz_safetensors: invariant broken for tensor \"%s\": %s\n", name.c_str(), what);
  __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto tensors = embedkit::parse_safetensors(data, size, "fuzz.safetensors");
    uint64_t sum = 0;
    float fsum = 0.f;
    for (const auto& [name, t] : tensors) {
      if (name != t.name) invariant_failed("map key differs from TensorInfo::name", name);
      if (t.nbytes > 0) {
        if (t.data < data + 8 || t.data > data + size || t.nbytes > size_t(data + size - t.data))
          invariant_failed("byte range outside the input", name);
      }
      // nbytes == numel * dtype_size, computed without overflow.
      uint64_t numel = 1;
      for (int64_t d : t.shape) {
        if (d < 0) invariant_failed("negative dimension", name);
        if (__builtin_mul_overflow(numel, uint64_t(d), &numel)) invariant_failed("numel overflows", name);
      }
      if (int64_t(numel) != t.numel()) invariant_failed("numel() disagrees with the shape", name);
      uint64_t want = 0;
      if (__builtin_mul_overflow(numel, uint64_t(embedkit::dtype_size(t.dtype)), &want) || want != t.nbytes)
        invariant_failed("nbytes != numel x dtype size", name);
      (void)t.shape_str();
      (void)embedkit::dtype_name(t.dtype);
      // Touch every byte (ASan catches a range past the input), and decode half floats as
      // load_f32 would.
      for (size_t i = 0; i < t.nbytes; ++i) sum += t.data[i];
      if (t.dtype == DType::F16 || t.dtype == DType::BF16) {
        for (size_t i = 0; i + 1 < t.nbytes; i += 2) {
          uint16_t h;
          std::memcpy(&h, t.data + i, 2);
          fsum += t.dtype == DType::F16 ? embedkit::half_to_float(h) : embedkit::bf16_to_float(h);
        }
      }
    }
    volatile uint64_t sink = sum;
    volatile float fsink = fsum;
    (void)sink;
    (void)fsink;
  } catch (const embedkit::Error&) {
    // Rejected with a message: the expected outcome for most inputs.
  }
  return 0;
}
