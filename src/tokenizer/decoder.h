// Token ids → text, as HF tokenizers' `decode` does with tokenizer.json's "decoder" section.
// Supported decoders: WordPiece (prefix "##", optional clean-up of spaces before punctuation)
// and ByteLevel (GPT-2 byte↔unicode map); others are rejected by name when decode is asked for.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace embedkit {

class TokenDecoder {
 public:
  // Reads the "decoder" of tokenizer.json at `path`; `tok` gives the id → token map.
  TokenDecoder(const std::string& path, const Tokenizer& tok);
  // Throws Error for ids outside the vocabulary (naming the position) or an unsupported decoder.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const;

 private:
  const Tokenizer& tok_;
  std::string type_;  // "WordPiece", "ByteLevel", or the unsupported type's name
  std::string prefix_ = "##";
  bool cleanup_ = true;
  std::vector<uint8_t> special_;  // by id
};

}  // namespace embedkit
