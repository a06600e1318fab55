// Byte-level BPE pieces of a tokenizer.json (GPT-2, RoBERTa, Qwen2/Qwen3 style), as HF
// `tokenizers` defines them:
//   Split      pre-tokenizer: regex (PCRE2, JIT) or literal pattern; behaviours Isolated, Removed,
//              MergedWithPrevious, MergedWithNext (tokenizers/src/pre_tokenizers/split.rs)
//   ByteLevel  pre-tokenizer: optional GPT-2 regex split, then every UTF-8 byte of a word becomes
//              one char of GPT-2's printable byte alphabet (pre_tokenizers/byte_level.rs)
//   BPE        model: merges by rank over the chars of a word, with a word cache (models/bpe/)
#pragma once
#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"
#include "util/json.h"

namespace embedkit {

// model {"type": "BPE", "vocab": {token: id}, "merges": ["a b", …] or [["a", "b"], …], …}.
// Adds the model's vocabulary to `vocab` (which also receives added tokens later).
std::unique_ptr<TokenModel> make_bpe_model(const json::Element& model, const std::string& what, Vocab& vocab);

// pre_tokenizer {"type": "Split", "pattern": {"Regex": …} | {"String": …}, "behavior": …, "invert": false}
std::unique_ptr<PreTokenizer> make_split_pre_tokenizer(const json::Element& e, const std::string& where);

// pre_tokenizer {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true|false, …}
std::unique_ptr<PreTokenizer> make_byte_level_pre_tokenizer(const json::Element& e, const std::string& where);

// GPT-2's byte → printable char map (bytes_to_unicode()): the alphabet of byte-level vocabularies.
int32_t byte_level_char(uint8_t byte);

}  // namespace embedkit
