#include "loader/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "util/error.h"
#include "util/json.h"

namespace embedkit {

namespace fs = std::filesystem;

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    default: return 1;
  }
}

static bool parse_dtype(std::string_view s, DType& out) {
  static const std::pair<const char*, DType> table[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"F64", DType::F64},
      {"I64", DType::I64}, {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},
      {"U8", DType::U8}, {"BOOL", DType::BOOL}};
  for (auto& [name, t] : table)
    if (s == name) { out = t; return true; }
  return false;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::map<std::string, TensorInfo> parse_safetensors(const uint8_t* data, size_t size, const std::string& what) {
  if (size < 8) throw Error(what + ": file is " + std::to_string(size) + " bytes; a safetensors file starts with an 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > size - 8)
    throw Error(what + ": header length " + std::to_string(n) + " runs past the end of the file (" +
                std::to_string(size) + " bytes): truncated or not a safetensors file");
  if (n > (100u << 20)) throw Error(what + ": header length " + std::to_string(n) + " exceeds the 100 MiB limit");
  const uint8_t* data_start = data + 8 + n;
  const uint64_t data_size = size - 8 - n;
  std::string header(reinterpret_cast<const char*>(data + 8), n);
  json::Document doc;
  try {
    doc = json::parse_string(header, what + " (header at byte offset 8)");
  } catch (const Error& e) {
    throw;
  }
  if (!doc.root.is_object()) throw Error(what + ": header must be a JSON object, found " + json::type_name(doc.root));
  std::map<std::string, TensorInfo> out;
  for (auto [key, val] : json::object_of(doc.root)) {
    std::string name(key);
    if (name == "__metadata__") continue;
    std::string where = what + ": tensor \"" + name + "\"";
    if (!val.is_object()) throw Error(where + ": entry must be an object, found " + json::type_name(val));
    TensorInfo t;
    t.name = name;
    t.file = what;
    std::string dt = json::get_string(val, "dtype", where);
    if (!parse_dtype(dt, t.dtype)) throw Error(where + ": unknown dtype \"" + dt + "\"");
    auto shape = json::field(val, "shape");
    if (!shape || !shape->is_array()) throw Error(where + ": \"shape\" must be an array of integers");
    uint64_t numel = 1;
    for (auto d : json::array_of(*shape)) {
      if (!d.is_int64() || d.get_int64().value_unsafe() < 0)
        throw Error(where + ": \"shape\" must hold non-negative integers");
      int64_t v = d.get_int64().value_unsafe();
      if (v > 0 && numel > (uint64_t(1) << 62) / uint64_t(v)) throw Error(where + ": shape is too large");
      numel *= uint64_t(v);
      t.shape.push_back(v);
    }
    auto offs = json::field(val, "data_offsets");
    if (!offs || !offs->is_array() || json::array_of(*offs).size() != 2)
      throw Error(where + ": \"data_offsets\" must be [begin, end]");
    uint64_t be[2];
    int k = 0;
    for (auto o : json::array_of(*offs)) {
      if (!o.is_uint64() && !(o.is_int64() && o.get_int64().value_unsafe() >= 0))
        throw Error(where + ": \"data_offsets\" must hold non-negative integers");
      be[k++] = o.is_uint64() ? o.get_uint64().value_unsafe() : uint64_t(o.get_int64().value_unsafe());
    }
    if (be[0] > be[1]) throw Error(where + ": data_offsets begin " + std::to_string(be[0]) + " > end " + std::to_string(be[1]));
    if (be[1] > data_size)
      throw Error(where + ": data_offsets end " + std::to_string(be[1]) + " is past the end of the data block (" +
                  std::to_string(data_size) + " bytes, file offset " + std::to_string(8 + n + be[1]) +
                  "): file truncated?");
    if (numel > (uint64_t(1) << 62) / dtype_size(t.dtype)) throw Error(where + ": shape is too large");  // bytes must not wrap
    uint64_t expect = numel * dtype_size(t.dtype);
    if (be[1] - be[0] != expect)
      throw Error(where + ": holds " + std::to_string(be[1] - be[0]) + " bytes but dtype " + dt + " x shape " +
                  t.shape_str() + " needs " + std::to_string(expect));
    t.data = data_start + be[0];
    t.nbytes = be[1] - be[0];
    out.emplace(name, std::move(t));
  }
  return out;
}

MappedFile::MappedFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error(path + ": cannot stat");
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw Error(path + ": cannot mmap (" + std::strerror(errno) + ")");
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

WeightStore WeightStore::open_file(const std::string& path) {
  WeightStore ws;
  auto f = std::make_shared<MappedFile>(path);
  ws.tensors_ = parse_safetensors(f->data(), f->size(), path);
  ws.files_.push_back(f);
  ws.paths_.push_back(path);
  return ws;
}

WeightStore WeightStore::open_dir(const std::string& dir) {
  fs::path single = fs::path(dir) / "model.safetensors";
  fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(single)) return open_file(single.string());
  if (!fs::exists(index)) {
    std::string hint = fs::exists(fs::path(dir) / "pytorch_model.bin")
                           ? " (only pytorch_model.bin is present: convert it to safetensors, e.g. with "
                             "transformers' save_pretrained(safe_serialization=True))"
                           : "";
    throw Error(dir + ": no model.safetensors or model.safetensors.index.json" + hint);
  }
  auto doc = json::load_file(index.string());
  auto wm = json::field(doc.root, "weight_map");
  if (!wm || !wm->is_object()) throw Error(index.string() + ": missing object \"weight_map\"");
  WeightStore ws;
  std::map<std::string, std::map<std::string, TensorInfo>> shards;
  for (auto [key, val] : json::object_of(*wm)) {
    if (!val.is_string()) throw Error(index.string() + ": weight_map[\"" + std::string(key) + "\"] must be a file name");
    std::string shard(val.get_string().value_unsafe());
    if (shard.find('/') != std::string::npos || shard == "..")
      throw Error(index.string() + ": shard name \"" + shard + "\" must be a plain file name");
    if (!shards.count(shard)) {
      std::string p = (fs::path(dir) / shard).string();
      auto f = std::make_shared<MappedFile>(p);
      shards[shard] = parse_safetensors(f->data(), f->size(), p);
      ws.files_.push_back(f);
      ws.paths_.push_back(p);
    }
    auto& m = shards[shard];
    auto it = m.find(std::string(key));
    if (it == m.end())
      throw Error(index.string() + ": tensor \"" + std::string(key) + "\" is mapped to " + shard + " but that shard lacks it");
    ws.tensors_.emplace(it->first, it->second);
  }
  return ws;
}

std::string WeightStore::describe() const {
  std::string s;
  for (size_t i = 0; i < paths_.size(); ++i) s += (i ? ", " : "") + paths_[i];
  return s;
}

const TensorInfo& WeightStore::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error(describe() + ": missing tensor \"" + name + "\"");
  return it->second;
}

float half_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) u = sign;
    else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) { mant <<= 1; --exp; }
      mant &= 0x3FF;
      u = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) u = sign | 0x7F800000u | (mant << 13);
  else u = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::vector<float> WeightStore::load_f32(const std::string& name, const std::vector<int64_t>& expect) const {
  const TensorInfo& t = get(name);
  bool ok = t.shape.size() == expect.size();
  for (size_t i = 0; ok && i < expect.size(); ++i) ok = expect[i] < 0 || expect[i] == t.shape[i];
  if (!ok) {
    TensorInfo e;
    e.shape = expect;
    throw Error(t.file + ": tensor \"" + name + "\" has shape " + t.shape_str() + ", expected " + e.shape_str() +
                " (from config.json)");
  }
  std::vector<float> out(size_t(t.numel()));
  switch (t.dtype) {
    case DType::F32: std::memcpy(out.data(), t.data, t.nbytes); break;
    case DType::F16:
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = half_to_float(h);
      }
      break;
    case DType::BF16:
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = bf16_to_float(h);
      }
      break;
    default:
      throw Error(t.file + ": tensor \"" + name + "\" has dtype " + dtype_name(t.dtype) +
                  ", expected a floating-point weight (F32, F16 or BF16)");
  }
  return out;
}

}  // namespace embedkit
