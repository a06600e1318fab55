// Request bodies of the embedding routes, parsed and checked for shape and types (no model
// needed: checks against the model, such as `dimensions` ≤ the model's width, happen in
// service.cpp). Every problem is a RequestError naming the field: 400 for malformed JSON, 422
// for a valid JSON document with wrong content. Fuzzed by tests/fuzz/fuzz_http_request.cpp.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/metrics.h"

namespace embedkit::server {

struct RequestError {
  int status;
  std::string message;
  Metrics::Err type;
};

struct EmbedRequest {
  std::vector<std::string> texts;               // or, OpenAI only:
  std::vector<std::vector<int64_t>> token_ids;  // pre-tokenized inputs
  bool batch = false;                           // a list was sent (TEI's method="batch")
  std::optional<bool> normalize, truncate;
  bool truncate_left = false;
  std::optional<std::string> prompt_name, model;
  std::optional<int64_t> dimensions;
  bool base64 = false;  // OpenAI encoding_format
};

struct TokenizeRequest {
  std::vector<std::string> texts;
  bool add_special_tokens = true;
  std::optional<std::string> prompt_name;
};

struct DecodeRequest {
  std::vector<std::vector<int64_t>> ids;
  bool skip_special_tokens = true;
};

// TEI POST /embed: inputs, normalize, truncate, truncation_direction, prompt_name, dimensions.
EmbedRequest parse_tei_embed(std::string_view body, size_t max_batch);
// OpenAI POST /v1/embeddings: input (string | [string] | [int] | [[int]]), model,
// encoding_format, dimensions, user; prompt_name as an extension.
EmbedRequest parse_openai_embed(std::string_view body, size_t max_batch);
TokenizeRequest parse_tokenize(std::string_view body, size_t max_batch);
DecodeRequest parse_decode(std::string_view body, size_t max_batch);

}  // namespace embedkit::server
