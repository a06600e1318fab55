#include "bench/value.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "util/error.h"
#include "util/json_writer.h"

namespace embedkit::bench {

Value& Value::operator[](const std::string& key) {
  if (kind_ == Kind::Null) kind_ = Kind::Object;
  EK_CHECK(kind_ == Kind::Object, "member access on a non-object Value: " + key);
  for (auto& [k, v] : obj_)
    if (k == key) return v;
  obj_.emplace_back(key, Value());
  return obj_.back().second;
}

const Value* Value::find(const std::string& key) const {
  if (kind_ != Kind::Object) return nullptr;
  for (auto& [k, v] : obj_)
    if (k == key) return &v;
  return nullptr;
}

const Value& Value::at(const std::string& key) const {
  static const Value null;
  const Value* v = find(key);
  return v ? *v : null;
}

double Value::num(const std::string& key, double fallback) const {
  const Value* v = find(key);
  return v && v->kind_ == Kind::Number ? v->num_ : fallback;
}
std::string Value::str(const std::string& key, const std::string& fallback) const {
  const Value* v = find(key);
  return v && v->kind_ == Kind::String ? v->str_ : fallback;
}
bool Value::flag(const std::string& key, bool fallback) const {
  const Value* v = find(key);
  return v && v->kind_ == Kind::Bool ? v->b_ : fallback;
}

void Value::push_back(Value v) {
  if (kind_ == Kind::Null) kind_ = Kind::Array;
  EK_CHECK(kind_ == Kind::Array, "push_back on a non-array Value");
  arr_.push_back(std::move(v));
}

void append_json_string(std::string& out, const std::string& s) { json::append_string(out, s); }

std::string format_number(double x) {
  if (!std::isfinite(x)) return "null";
  if (x == std::floor(x) && std::fabs(x) < 1e15) return std::to_string((long long)x);
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

void Value::dump_to(std::string& out, int indent, int depth) const {
  auto newline = [&](int d) {
    if (indent <= 0) return;
    out += '\n';
    out.append(size_t(indent * d), ' ');
  };
  switch (kind_) {
    case Kind::Null: out += "null"; break;
    case Kind::Bool: out += b_ ? "true" : "false"; break;
    case Kind::Number: out += format_number(num_); break;
    case Kind::String: append_json_string(out, str_); break;
    case Kind::Array: {
      // Arrays of plain numbers stay on one line (samples, timelines): readable and compact.
      bool flat = true;
      for (auto& v : arr_) flat = flat && (v.kind_ == Kind::Number || v.kind_ == Kind::Null || v.kind_ == Kind::Bool);
      out += '[';
      for (size_t i = 0; i < arr_.size(); ++i) {
        if (i) out += flat || indent <= 0 ? "," : ",";
        if (!flat) newline(depth + 1);
        arr_[i].dump_to(out, indent, depth + 1);
      }
      if (!flat && !arr_.empty()) newline(depth);
      out += ']';
      break;
    }
    case Kind::Object: {
      out += '{';
      for (size_t i = 0; i < obj_.size(); ++i) {
        if (i) out += ',';
        newline(depth + 1);
        append_json_string(out, obj_[i].first);
        out += indent > 0 ? ": " : ":";
        obj_[i].second.dump_to(out, indent, depth + 1);
      }
      if (!obj_.empty()) newline(depth);
      out += '}';
      break;
    }
  }
}

std::string Value::dump(int indent) const {
  std::string s;
  dump_to(s, indent, 0);
  return s;
}

}  // namespace embedkit::bench
