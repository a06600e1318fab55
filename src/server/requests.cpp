// Request bodies of the embedding routes (see requests.h).
#include "server/requests.h"

#include <simdjson.h>

#include <cctype>

#include "util/json.h"

namespace embedkit::server {

namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

RequestError validation(std::string m) { return {422, std::move(m), Metrics::Validation}; }

std::string json_type(const element& e) {
  switch (e.type()) {
    case element_type::ARRAY: return "an array";
    case element_type::OBJECT: return "an object";
    case element_type::INT64:
    case element_type::UINT64:
    case element_type::DOUBLE: return "a number";
    case element_type::STRING: return "a string";
    case element_type::BOOL: return "a boolean";
    case element_type::NULL_VALUE: return "null";
  }
  return "unknown";
}

// Request fields. Absent or null → nullopt; a wrong type → 422 naming the field.
std::optional<element> field(const element& obj, const char* key) {
  auto r = json::object_of(obj)[key];
  if (r.error() || r.value_unsafe().is_null()) return std::nullopt;
  return r.value_unsafe();
}

std::optional<bool> opt_bool(const element& obj, const char* key) {
  auto f = field(obj, key);
  if (!f) return std::nullopt;
  if (!f->is_bool()) throw validation(std::string("`") + key + "` must be a boolean, found " + json_type(*f));
  return f->get_bool().value_unsafe();
}

std::optional<std::string> opt_string(const element& obj, const char* key) {
  auto f = field(obj, key);
  if (!f) return std::nullopt;
  if (!f->is_string()) throw validation(std::string("`") + key + "` must be a string, found " + json_type(*f));
  return std::string(f->get_string().value_unsafe());
}

std::optional<int64_t> opt_int(const element& obj, const char* key) {
  auto f = field(obj, key);
  if (!f) return std::nullopt;
  int64_t v;
  if (f->get_int64().get(v)) {
    std::string what = f->is_number() ? "an integer in range" : "an integer";
    throw validation(std::string("`") + key + "` must be " + what + ", found " + json_type(*f));
  }
  return v;
}

// `inputs`/`input` as a list of strings: a string, or a non-empty array of strings.
std::vector<std::string> string_inputs(const element& v, const char* name, size_t max_batch, bool& batch) {
  std::vector<std::string> out;
  if (v.is_string()) {
    out.emplace_back(v.get_string().value_unsafe());
    batch = false;
  } else if (v.is_array()) {
    batch = true;
    for (element e : json::array_of(v)) {
      if (!e.is_string())
        throw validation(std::string("`") + name + "` must be a string or a list of strings; item " +
                         std::to_string(out.size()) + " is " + json_type(e));
      if (out.size() >= max_batch) break;
      out.emplace_back(e.get_string().value_unsafe());
    }
    const size_t n = json::array_of(v).size();
    if (n > max_batch)
      throw validation("batch size " + std::to_string(n) + " > maximum allowed batch size " + std::to_string(max_batch));
  } else {
    throw validation(std::string("`") + name + "` must be a string or a list of strings, found " + json_type(v));
  }
  if (out.empty()) throw RequestError{422, std::string("`") + name + "` cannot be empty", Metrics::Empty};
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i].empty())
      throw RequestError{422, std::string("`") + name + "` item " + std::to_string(i) + " is an empty string", Metrics::Empty};
  return out;
}

std::vector<int64_t> id_list(const element& v, const char* what) {
  std::vector<int64_t> ids;
  for (element e : json::array_of(v)) {
    int64_t id;
    if (e.get_int64().get(id))
      throw validation(std::string(what) + ": token ids must be integers, found " + json_type(e));
    ids.push_back(id);
  }
  return ids;
}

// A list of token-id lists (at most max_batch), each non-empty when `allow_empty` is false.
std::vector<std::vector<int64_t>> id_lists(const element& v, const char* what, size_t max_batch, bool allow_empty) {
  const size_t n = json::array_of(v).size();
  if (n > max_batch)
    throw validation("batch size " + std::to_string(n) + " > maximum allowed batch size " + std::to_string(max_batch));
  std::vector<std::vector<int64_t>> out;
  for (element e : json::array_of(v)) {
    if (!e.is_array()) throw validation(std::string(what) + " mixes token id lists with " + json_type(e));
    out.push_back(id_list(e, what));
    if (out.back().empty() && !allow_empty)
      throw RequestError{422, std::string(what) + " has an empty token id list", Metrics::Empty};
  }
  return out;
}

// Parses the body; it must be a JSON object.
element parse_object(std::string_view body) {
  thread_local simdjson::dom::parser parser;
  element root;
  if (auto err = parser.parse(body.data(), body.size()).get(root))
    throw RequestError{400, std::string("malformed JSON body: ") + simdjson::error_message(err), Metrics::Validation};
  if (!root.is_object()) throw validation("the request body must be a JSON object, found " + json_type(root));
  return root;
}

// TEI's `inputs` (required): a string or a non-empty list of strings.
std::vector<std::string> tei_inputs(const element& root, size_t max_batch, bool& batch) {
  auto inputs = field(root, "inputs");
  if (!inputs) throw validation("missing field `inputs` (a string or a list of strings)");
  return string_inputs(*inputs, "inputs", max_batch, batch);
}

void common_embed_fields(const element& root, EmbedRequest& r) {
  r.prompt_name = opt_string(root, "prompt_name");
  r.dimensions = opt_int(root, "dimensions");
}

}  // namespace

EmbedRequest parse_tei_embed(std::string_view body, size_t max_batch) {
  element root = parse_object(body);
  EmbedRequest r;
  r.texts = tei_inputs(root, max_batch, r.batch);
  r.normalize = opt_bool(root, "normalize");
  r.truncate = opt_bool(root, "truncate");
  if (auto dir = opt_string(root, "truncation_direction")) {
    std::string d = *dir;
    for (char& ch : d) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    if (d == "left") r.truncate_left = true;
    else if (d != "right") throw validation("`truncation_direction` must be \"Left\" or \"Right\", found \"" + *dir + "\"");
  }
  common_embed_fields(root, r);
  return r;
}

EmbedRequest parse_openai_embed(std::string_view body, size_t max_batch) {
  element root = parse_object(body);
  EmbedRequest r;
  auto input = field(root, "input");
  if (!input) throw validation("missing field `input` (a string, a list of strings, or token id lists)");
  const element& v = *input;
  r.batch = true;
  if (v.is_array() && json::array_of(v).size() > 0) {
    element first = json::array_of(v).at(0).value_unsafe();
    if (first.is_number()) {  // one pre-tokenized input
      r.token_ids.push_back(id_list(v, "`input`"));
      r.batch = false;
    } else if (first.is_array()) {
      r.token_ids = id_lists(v, "`input`", max_batch, /*allow_empty=*/false);
    }
  }
  if (r.token_ids.empty()) r.texts = string_inputs(v, "input", max_batch, r.batch);
  auto fmt = opt_string(root, "encoding_format").value_or("float");
  if (fmt == "base64") r.base64 = true;
  else if (fmt != "float") throw validation("`encoding_format` must be \"float\" or \"base64\", found \"" + fmt + "\"");
  r.model = opt_string(root, "model");
  opt_string(root, "user");  // accepted, unused; checked for type only
  common_embed_fields(root, r);
  return r;
}

TokenizeRequest parse_tokenize(std::string_view body, size_t max_batch) {
  element root = parse_object(body);
  TokenizeRequest r;
  bool batch = false;
  r.texts = tei_inputs(root, max_batch, batch);
  r.add_special_tokens = opt_bool(root, "add_special_tokens").value_or(true);
  r.prompt_name = opt_string(root, "prompt_name");
  return r;
}

DecodeRequest parse_decode(std::string_view body, size_t max_batch) {
  element root = parse_object(body);
  DecodeRequest r;
  auto ids = field(root, "ids");
  if (!ids || !ids->is_array()) throw validation("`ids` must be a list of token ids or a list of such lists");
  r.skip_special_tokens = opt_bool(root, "skip_special_tokens").value_or(true);
  auto arr = json::array_of(*ids);
  if (arr.size() > 0 && arr.at(0).value_unsafe().is_array()) {
    r.ids = id_lists(*ids, "`ids`", max_batch, /*allow_empty=*/true);
  } else {
    r.ids.push_back(id_list(*ids, "`ids`"));
  }
  return r;
}

}  // namespace embedkit::server
