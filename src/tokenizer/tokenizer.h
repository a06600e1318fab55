// A tokenizer.json implementation whose ids equal HF `tokenizers`.
// Pipeline (as in HF tokenizers' TokenizerImpl::encode):
//   raw text ──split on added tokens (non-normalized)──▶ pieces
//   piece ──normalize──▶ NormalizedText (each char remembers its source byte range)
//         ──split on added tokens (normalized)──▶ ──pre-tokenize──▶ words ──model──▶ tokens
//   tokens ──truncate──▶ ──post-process (template: [CLS] A [SEP] …)──▶ Encoding
// Supported now: normalizers BertNormalizer, Lowercase, NFD, NFC, Sequence;
// pre-tokenizers BertPreTokenizer, WhitespaceSplit, Split (PCRE2), ByteLevel, Sequence;
// models WordPiece, BPE (tokenizer/bpe.h); post-processors TemplateProcessing, BertProcessing,
// RobertaProcessing, ByteLevel. Anything else is rejected by name.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace embedkit {

struct Encoding {
  std::vector<int32_t> ids;
  std::vector<int32_t> type_ids;
  std::vector<std::pair<uint32_t, uint32_t>> offsets;  // byte range in the input text ([0,0) for specials)
  std::vector<uint8_t> special;                        // 1 for tokens added by the post-processor
  size_t size() const { return ids.size(); }
};

// A char of normalized text and the byte range of the original text it came from.
struct NormChar {
  int32_t cp;
  uint32_t start, end;
};
using NormalizedText = std::vector<NormChar>;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void apply(NormalizedText& t) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits [begin,end) of t into words, appended to out as [begin,end) index pairs.
  virtual void split(const NormalizedText& t, std::vector<std::pair<uint32_t, uint32_t>>& words) const = 0;
  // Pre-tokenizers that rewrite each word after splitting (ByteLevel: one char per UTF-8 byte)
  // say so here; transform() then rewrites one word, each new char keeping its source range.
  virtual bool transforms() const { return false; }
  virtual void transform(NormalizedText& word) const {}
};

class TokenModel {
 public:
  virtual ~TokenModel() = default;
  // Tokenizes one word (a range of normalized chars) and appends ids and source offsets.
  virtual void tokenize(const NormalizedText& t, uint32_t begin, uint32_t end, Encoding& out) const = 0;
};

struct AddedToken {
  int32_t id;
  std::string content;
  bool special, single_word, lstrip, rstrip, normalized;
};

// One piece of a post-processing template: a special token, or sequence A/B.
struct TemplatePiece {
  bool is_sequence;
  int which;  // 0 = A, 1 = B (for sequences)
  std::vector<int32_t> ids;  // for special tokens
  int32_t type_id;
};

class Tokenizer {
 public:
  static Tokenizer from_file(const std::string& path);
  // Parses tokenizer.json text; `what` names the source in errors (also the fuzz entry point).
  static Tokenizer from_json(const std::string& json_text, const std::string& what);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Encodes one text. max_length = 0: no truncation; else truncate (keeping the start) so that
  // the result, special tokens included, has at most max_length tokens.
  // Throws embedkit::Error on invalid UTF-8.
  Encoding encode(std::string_view text, bool add_special_tokens = true, size_t max_length = 0) const;
  Encoding encode_pair(std::string_view a, std::string_view b, bool add_special_tokens = true,
                       size_t max_length = 0) const;
  // Tokens without post-processing (no specials, no truncation).
  Encoding encode_raw(std::string_view text) const;

  size_t num_special_tokens(bool pair) const;
  const std::string& id_to_token(int32_t id) const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  size_t vocab_size() const { return id_to_token_.size(); }
  const std::vector<AddedToken>& added_tokens() const { return added_; }

 private:
  Tokenizer() = default;
  void post_process(Encoding* a, Encoding* b, Encoding& out) const;

  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<TokenModel> model_;
  std::vector<AddedToken> added_;
  std::vector<TemplatePiece> single_, pair_;
  bool trim_offsets_ = false;  // ByteLevel/RobertaProcessing trim_offsets: offsets exclude leading/trailing spaces
  Vocab vocab_;  // model vocab + added tokens
  std::vector<std::string> id_to_token_;
};

}  // namespace embedkit
