// Helpers over simdjson's DOM for reading model files (config.json, tokenizer.json, ...):
// every accessor names the file and field in its error.
#pragma once
#include <simdjson.h>

#include <cstdint>
#include <optional>
#include <string>

#include "util/error.h"

namespace embedkit::json {

using Element = simdjson::dom::element;

// Parses a whole file; the returned document keeps the parser alive.
struct Document {
  std::unique_ptr<simdjson::dom::parser> parser;
  Element root;
  std::string path;  // for messages
};

Document load_file(const std::string& path);
Document parse_string(const std::string& text, const std::string& what);

std::optional<Element> field(const Element& obj, const char* key);
std::string get_string(const Element& obj, const char* key, const std::string& where);
std::optional<std::string> opt_string(const Element& obj, const char* key, const std::string& where);
int64_t get_int(const Element& obj, const char* key, const std::string& where);
std::optional<int64_t> opt_int(const Element& obj, const char* key, const std::string& where);
std::optional<double> opt_double(const Element& obj, const char* key, const std::string& where);
std::optional<bool> opt_bool(const Element& obj, const char* key, const std::string& where);
std::string type_name(const Element& e);

}  // namespace embedkit::json

namespace embedkit::json {
// By-value access (a reference into simdjson's temporary result would dangle in a range-for).
inline simdjson::dom::array array_of(const Element& e) {
  simdjson::dom::array a;
  if (e.get(a)) throw Error("internal: JSON value is not an array");
  return a;
}
inline simdjson::dom::object object_of(const Element& e) {
  simdjson::dom::object o;
  if (e.get(o)) throw Error("internal: JSON value is not an object");
  return o;
}
}  // namespace embedkit::json
