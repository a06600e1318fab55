#include "tokenizer/decoder.h"

#include "util/error.h"
#include "util/json.h"
#include "util/utf8.h"

namespace embedkit {

namespace {

// HF's clean_up_tokenization: spaces before punctuation and English contractions.
std::string cleanup(std::string s) {
  static const std::pair<const char*, const char*> rules[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (auto [from, to] : rules) {
    std::string out;
    const std::string f = from;
    size_t pos = 0, hit;
    while ((hit = s.find(f, pos)) != std::string::npos) {
      out.append(s, pos, hit - pos).append(to);
      pos = hit + f.size();
    }
    out.append(s, pos);
    s = std::move(out);
  }
  return s;
}

// GPT-2's bytes_to_unicode, inverted: code point → byte (-1 if not a byte's image).
std::vector<int> byte_level_inverse() {
  std::vector<int> inv(512, -1);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    inv[printable ? b : 256 + extra++] = b;
  }
  return inv;
}

}  // namespace

TokenDecoder::TokenDecoder(const std::string& path, const Tokenizer& tok) : tok_(tok) {
  auto doc = json::load_file(path);
  auto dec = json::field(doc.root, "decoder");
  if (!dec || dec->is_null()) {
    type_ = "none";
  } else {
    type_ = json::get_string(*dec, "type", path + ": decoder");
    if (type_ == "WordPiece") {
      prefix_ = json::opt_string(*dec, "prefix", path + ": decoder").value_or("##");
      cleanup_ = json::opt_bool(*dec, "cleanup", path + ": decoder").value_or(true);
    }
  }
  special_.assign(tok.vocab_size(), 0);
  for (auto& a : tok.added_tokens())
    if (a.special && a.id >= 0 && size_t(a.id) < special_.size()) special_[size_t(a.id)] = 1;
}

std::string TokenDecoder::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  if (type_ != "WordPiece" && type_ != "ByteLevel")
    throw Error("decoding is not supported for this tokenizer's decoder \"" + type_ + "\" (supported: WordPiece, ByteLevel)");
  std::vector<const std::string*> tokens;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || size_t(ids[i]) >= tok_.vocab_size())
      throw Error("id " + std::to_string(ids[i]) + " at position " + std::to_string(i) + " is outside the vocabulary [0, " +
                  std::to_string(tok_.vocab_size()) + ")");
    if (skip_special_tokens && special_[size_t(ids[i])]) continue;
    tokens.push_back(&tok_.id_to_token(int32_t(ids[i])));
  }
  std::string out;
  if (type_ == "WordPiece") {
    // Per token, as HF's WordPiece decode_chain: "##x" → "x", else " x" (not for the first);
    // the clean-up then applies to each piece alone.
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string& t = *tokens[i];
      std::string piece = t.starts_with(prefix_) ? t.substr(prefix_.size()) : (i ? " " + t : t);
      out += cleanup_ ? cleanup(std::move(piece)) : piece;
    }
    return out;
  }
  static const std::vector<int> inv = byte_level_inverse();
  std::string bytes;
  for (const std::string* t : tokens) {
    size_t k = 0;
    while (k < t->size()) {
      const size_t at = k;
      const int32_t cp = utf8::decode(*t, k);
      if (cp < 0) k = at + 1;
      else if (cp >= 0 && cp < int32_t(inv.size()) && inv[size_t(cp)] >= 0) bytes += char(inv[size_t(cp)]);
      else if (cp >= 0) utf8::append(bytes, cp);  // not a byte image (e.g. an added token): keep as is
    }
  }
  // Lossy UTF-8 (as String::from_utf8_lossy): invalid sequences become U+FFFD.
  size_t k = 0;
  while (k < bytes.size()) {
    const size_t before = k;
    const int32_t cp = utf8::decode(bytes, k);
    if (cp < 0) {
      out += "\xEF\xBF\xBD";
      if (k == before) ++k;
    } else {
      out.append(bytes, before, k - before);
    }
  }
  return out;
}

}  // namespace embedkit
