// A small ordered JSON value: EmbedBench builds its results as one tree, writes it as the JSON
// report and renders the Markdown and HTML reports from it (one source of truth).
#pragma once
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace embedkit::bench {

class Value {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Value() = default;
  Value(bool b) : kind_(Kind::Bool), b_(b) {}
  Value(double x) : kind_(Kind::Number), num_(x) {}
  Value(int x) : Value(double(x)) {}
  Value(long x) : Value(double(x)) {}
  Value(unsigned long x) : Value(double(x)) {}
  Value(long long x) : Value(double(x)) {}
  Value(unsigned long long x) : Value(double(x)) {}
  Value(const char* s) : kind_(Kind::String), str_(s) {}
  Value(std::string s) : kind_(Kind::String), str_(std::move(s)) {}
  static Value array() { Value v; v.kind_ = Kind::Array; return v; }
  static Value object() { Value v; v.kind_ = Kind::Object; return v; }
  template <typename T>
  static Value array_of(const std::vector<T>& xs) {
    Value v = array();
    for (auto& x : xs) v.push_back(Value(x));
    return v;
  }

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::Null; }
  // Object access: inserts a null member when missing (keys keep insertion order).
  Value& operator[](const std::string& key);
  const Value* find(const std::string& key) const;
  // Typed reads for the renderers; a missing/mistyped member reads as the fallback.
  double num(const std::string& key, double fallback = 0) const;
  std::string str(const std::string& key, const std::string& fallback = "") const;
  bool flag(const std::string& key, bool fallback = false) const;
  const Value& at(const std::string& key) const;  // null Value when missing
  double number() const { return kind_ == Kind::Number ? num_ : 0; }
  const std::string& string() const { return str_; }
  bool boolean() const { return b_; }

  void push_back(Value v);
  size_t size() const { return kind_ == Kind::Array ? arr_.size() : obj_.size(); }
  const Value& operator[](size_t i) const { return arr_[i]; }
  const std::vector<Value>& items() const { return arr_; }
  const std::vector<std::pair<std::string, Value>>& members() const { return obj_; }

  std::string dump(int indent = 2) const;

 private:
  void dump_to(std::string& out, int indent, int depth) const;
  Kind kind_ = Kind::Null;
  bool b_ = false;
  double num_ = 0;
  std::string str_;
  std::vector<Value> arr_;
  std::vector<std::pair<std::string, Value>> obj_;
};

void append_json_string(std::string& out, const std::string& s);
std::string format_number(double x);  // shortest round-trip; NaN/inf → null

}  // namespace embedkit::bench
