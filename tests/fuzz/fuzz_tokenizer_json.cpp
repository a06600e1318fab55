// libFuzzer target: tokenizer.json parsing, then encoding with whatever tokenizer it describes.
//
// The input is tokenizer.json text. Tokenizer::from_json() must either throw embedkit::Error or
// build a tokenizer that encodes a fixed set of texts (ASCII, accents, CJK, emoji, added-token
// literals, long words) without crashing, with and without truncation, single and paired.
// Invalid UTF-8 must be rejected with embedkit::Error. The encodings are checked for basic
// invariants (parallel arrays, ids inside the vocabulary, offsets inside the text, truncation
// limits); a broken one is a trap. Any exception other than embedkit::Error escapes and libFuzzer
// reports it as a crash.
//
//   scripts/fuzz.sh [SECONDS]      (builds with -DEMBEDKIT_FUZZ=ON and runs this on a corpus copy)
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "tokenizer/tokenizer.h"
#include "util/error.h"

using embedkit::Encoding;
using embedkit::Tokenizer;

namespace {

[[noreturn]] void invariant_failed(const char* what, std::string_view text) {
  std::fprintf(stderr, "fuzz_tokenizer_json: invariant broken (%s) encoding \"%.*s\"\n", what, int(text.size()),
               text.data());
  __builtin_trap();
}

constexpr std::string_view kTexts[] = {
    "Hello, world! This is a test of the tokenizer.",
    "unaffable running tested THE Quick brown fox's jump-over (twice)...",
    "Caf\xc3\xa9 na\xc3\xafve r\xc3\xa9sum\xc3\xa9 \xc3\x85ngstr\xc3\xb6m e\xcc\x81\xcc\x96 \xc3\x9f \xc4\xb0stanbul",  // accents, NFD
    "\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97\xe7\xac\xa6 and \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x83\x86\xe3\x82\xad"
    "\xe3\x82\xb9\xe3\x83\x88 \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4",  // CJK, kana, hangul
    "emoji \xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd family \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80"
    "\x8d\xf0\x9f\x91\xa7!",
    "[CLS] hello [SEP] [MASK]world [UNK] [PAD]",
    "",
    "   \t\n  ",
    "ctrl\x01\x7f\xc2\xa0nbsp\xe2\x80\x8bzwsp\xef\xbb\xbf\xee\x80\x80pua\r\n",
    "supercalifragilisticexpialidocioussupercalifragilisticexpialidocioussupercalifragilisticexpialidocious"
    "supercalifragilisticexpialidocious",  // > 100 chars: max_input_chars_per_word
};

constexpr std::string_view kInvalidUtf8[] = {
    "\xff",
    "abc \xc3",                  // truncated sequence
    "ok \xed\xa0\x80 surrogate",  // UTF-16 surrogate
    "\xc0\xaf overlong",
    "\x80 stray continuation",
    "\xf4\x90\x80\x80 above U+10FFFF",
};

constexpr size_t kMaxLengths[] = {0, 1, 2, 5, 512};

void check(const Tokenizer& tk, const Encoding& e, std::string_view text, size_t text_bytes) {
  const size_t n = e.ids.size();
  if (e.type_ids.size() != n || e.offsets.size() != n || e.special.size() != n)
    invariant_failed("arrays of different lengths", text);
  for (size_t i = 0; i < n; ++i) {
    if (e.ids[i] < 0 || size_t(e.ids[i]) >= tk.vocab_size()) invariant_failed("id outside the vocabulary", text);
    (void)tk.id_to_token(e.ids[i]);
    if (e.offsets[i].first > text_bytes || e.offsets[i].second > text_bytes)
      invariant_failed("offset outside the text", text);
  }
}

void encode_all(const Tokenizer& tk, std::string_view text) {
  for (size_t max_len : kMaxLengths) {
    for (bool specials : {true, false}) {
      Encoding e = tk.encode(text, specials, max_len);
      check(tk, e, text, text.size());
      if (max_len > 0) {
        size_t limit = std::max(max_len, specials ? tk.num_special_tokens(false) : 0);
        if (e.size() > limit) invariant_failed("encode() exceeds max_length", text);
      }
    }
  }
  Encoding raw = tk.encode_raw(text);
  check(tk, raw, text, text.size());
  Encoding again = tk.encode(text, false, 0);
  if (again.ids != raw.ids) invariant_failed("encode(no specials) differs from encode_raw", text);
}

void encode_pairs(const Tokenizer& tk, std::string_view a, std::string_view b) {
  for (size_t max_len : kMaxLengths) {
    for (bool specials : {true, false}) {
      Encoding e = tk.encode_pair(a, b, specials, max_len);
      check(tk, e, a, std::max(a.size(), b.size()));
      if (max_len > 0) {
        size_t limit = std::max(max_len, specials ? tk.num_special_tokens(true) : 0);
        if (e.size() > limit) invariant_failed("encode_pair() exceeds max_length", a);
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string json(reinterpret_cast<const char*>(data), size);
  try {
    const Tokenizer tk = Tokenizer::from_json(json, "fuzz/tokenizer.json");
    for (std::string_view t : kTexts) encode_all(tk, t);
    encode_pairs(tk, kTexts[0], kTexts[3]);
    encode_pairs(tk, kTexts[9], kTexts[5]);
    encode_pairs(tk, kTexts[6], kTexts[2]);
    // The added tokens themselves, in context (exercises lstrip/rstrip/single_word matching).
    // Short ones only: a 60 KiB token would only measure WordPiece's quadratic word matching.
    size_t k = 0;
    for (const auto& a : tk.added_tokens()) {
      if (a.content.size() > 256) continue;
      if (k++ == 8) break;
      std::string s = "x " + a.content + "  y" + a.content + "z";
      encode_all(tk, s);
      (void)tk.token_to_id(a.content);
    }
    for (std::string_view bad : kInvalidUtf8) {
      bool threw = false;
      try {
        (void)tk.encode(bad, true, 0);
      } catch (const embedkit::Error&) {
        threw = true;
      }
      if (!threw) invariant_failed("invalid UTF-8 accepted", bad);
      threw = false;
      try {
        (void)tk.encode_pair(kTexts[0], bad, true, 16);
      } catch (const embedkit::Error&) {
        threw = true;
      }
      if (!threw) invariant_failed("invalid UTF-8 accepted by encode_pair", bad);
    }
  } catch (const embedkit::Error&) {
    // Rejected with a message: the expected outcome for most inputs.
  }
  return 0;
}
