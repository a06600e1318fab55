#include "util/json.h"

#include <fstream>
#include <sstream>

namespace embedkit::json {

static Document parse_padded(const simdjson::padded_string& buf, const std::string& what) {
  Document d;
  d.parser = std::make_unique<simdjson::dom::parser>();
  d.path = what;
  auto res = d.parser->parse(buf);
  if (res.error()) {
    throw Error(what + ": not valid JSON (" + simdjson::error_message(res.error()) + ")");
  }
  d.root = res.value_unsafe();
  return d;
}

Document load_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open file");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  return parse_padded(simdjson::padded_string(s), path);
}

Document parse_string(const std::string& text, const std::string& what) {
  return parse_padded(simdjson::padded_string(text), what);
}

std::string type_name(const Element& e) {
  switch (e.type()) {
    case simdjson::dom::element_type::ARRAY: return "array";
    case simdjson::dom::element_type::OBJECT: return "object";
    case simdjson::dom::element_type::INT64:
    case simdjson::dom::element_type::UINT64: return "integer";
    case simdjson::dom::element_type::DOUBLE: return "number";
    case simdjson::dom::element_type::STRING: return "string";
    case simdjson::dom::element_type::BOOL: return "boolean";
    case simdjson::dom::element_type::NULL_VALUE: return "null";
  }
  return "unknown";
}

std::optional<Element> field(const Element& obj, const char* key) {
  if (!obj.is_object()) return std::nullopt;
  auto r = obj.get_object().value_unsafe()[key];
  if (r.error()) return std::nullopt;
  return r.value_unsafe();
}

static Error wrong_type(const std::string& where, const char* key, const char* want, const Element& e) {
  return Error(where + ": field \"" + key + "\" must be " + want + ", found " + type_name(e));
}

std::optional<std::string> opt_string(const Element& obj, const char* key, const std::string& where) {
  auto e = field(obj, key);
  if (!e || e->is_null()) return std::nullopt;
  if (!e->is_string()) throw wrong_type(where, key, "a string", *e);
  return std::string(e->get_string().value_unsafe());
}

std::string get_string(const Element& obj, const char* key, const std::string& where) {
  auto s = opt_string(obj, key, where);
  if (!s) throw Error(where + ": missing string field \"" + key + "\"");
  return *s;
}

std::optional<int64_t> opt_int(const Element& obj, const char* key, const std::string& where) {
  auto e = field(obj, key);
  if (!e || e->is_null()) return std::nullopt;
  if (e->is_int64()) return e->get_int64().value_unsafe();
  if (e->is_uint64()) {
    uint64_t v = e->get_uint64().value_unsafe();
    if (v > uint64_t(INT64_MAX)) throw Error(where + ": field \"" + key + "\" is too large");
    return int64_t(v);
  }
  throw wrong_type(where, key, "an integer", *e);
}

int64_t get_int(const Element& obj, const char* key, const std::string& where) {
  auto v = opt_int(obj, key, where);
  if (!v) throw Error(where + ": missing integer field \"" + key + "\"");
  return *v;
}

std::optional<double> opt_double(const Element& obj, const char* key, const std::string& where) {
  auto e = field(obj, key);
  if (!e || e->is_null()) return std::nullopt;
  if (e->is_double()) return e->get_double().value_unsafe();
  if (e->is_int64()) return double(e->get_int64().value_unsafe());
  if (e->is_uint64()) return double(e->get_uint64().value_unsafe());
  throw wrong_type(where, key, "a number", *e);
}

std::optional<bool> opt_bool(const Element& obj, const char* key, const std::string& where) {
  auto e = field(obj, key);
  if (!e || e->is_null()) return std::nullopt;
  if (!e->is_bool()) throw wrong_type(where, key, "true or false", *e);
  return e->get_bool().value_unsafe();
}

}  // namespace embedkit::json
