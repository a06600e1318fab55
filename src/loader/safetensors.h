// safetensors reader: memory-mapped, validated, zero-copy.
// Format (https://huggingface.co/docs/safetensors): u64 little-endian header length N, then
// N bytes of JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the data block; offsets are relative to the start of the data block.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace embedkit {

enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL };
const char* dtype_name(DType t);
size_t dtype_size(DType t);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapping
  size_t nbytes = 0;
  std::string file;  // for messages
  int64_t numel() const;
  std::string shape_str() const;
};

// Parses and validates a safetensors image held in memory (the fuzz target's entry point too).
// Throws embedkit::Error naming `what` and the field/tensor at fault.
std::map<std::string, TensorInfo> parse_safetensors(const uint8_t* data, size_t size, const std::string& what);

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// All tensors of a model: one model.safetensors, or the shards listed by
// model.safetensors.index.json ("weight_map": {tensor: shard file}).
class WeightStore {
 public:
  static WeightStore open_dir(const std::string& dir);
  static WeightStore open_file(const std::string& path);

  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& get(const std::string& name) const;
  // Copies tensor `name` to fp32, checking its shape against `expect` (-1 = any).
  std::vector<float> load_f32(const std::string& name, const std::vector<int64_t>& expect) const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  std::string describe() const;  // the files, for messages

 private:
  std::vector<std::shared_ptr<MappedFile>> files_;
  std::vector<std::string> paths_;
  std::map<std::string, TensorInfo> tensors_;
};

// IEEE half / bfloat16 → float.
float half_to_float(uint16_t h);
inline float bf16_to_float(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

}  // namespace embedkit
