// Tokenizer pieces on a tiny hand-written tokenizer.json (whole-pipeline parity with HF tokenizers
// on real text lives in tests/integration/test_tokenizer_parity.py).
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <unordered_map>

#include "tokenizer/flat_vocab.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "util/error.h"

using namespace embedkit;

static const char* kTiny = R"({
  "added_tokens": [
    {"id": 0, "content": "[PAD]", "special": true, "normalized": false},
    {"id": 1, "content": "[UNK]", "special": true, "normalized": false},
    {"id": 2, "content": "[CLS]", "special": true, "normalized": false},
    {"id": 3, "content": "[SEP]", "special": true, "normalized": false}
  ],
  "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                 "strip_accents": null, "lowercase": true},
  "pre_tokenizer": {"type": "BertPreTokenizer"},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
               {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
    "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
             {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
             {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
    "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                       "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
  "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 10,
    "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "un": 4, "##aff": 5, "##able": 6,
              "cafe": 7, ",": 8, "中": 9, "!": 10, "a": 11, "##a": 12}}
})";

static std::vector<int32_t> ids(const char* text, size_t max_len = 0) {
  static Tokenizer tk = Tokenizer::from_json(kTiny, "tiny");
  return tk.encode(text, true, max_len).ids;
}

TEST(Tokenizer, WordPieceGreedyLongestMatch) {
  EXPECT_EQ(ids("unaffable"), (std::vector<int32_t>{2, 4, 5, 6, 3}));
  EXPECT_EQ(ids("UNAFFABLE"), (std::vector<int32_t>{2, 4, 5, 6, 3}));  // lowercased
  EXPECT_EQ(ids("unaffablex"), (std::vector<int32_t>{2, 1, 3}));       // unmatched tail → whole word [UNK]
  EXPECT_EQ(ids("aaaaaaaaaaa"), (std::vector<int32_t>{2, 1, 3}));      // 11 chars > max 10 → [UNK]
  EXPECT_EQ(ids("aaaaaaaaaa").size(), 12u);                            // 10 chars: a ##a ×9
}

TEST(Tokenizer, NormalizerAndPreTokenizer) {
  EXPECT_EQ(ids("Café,中!"), (std::vector<int32_t>{2, 7, 8, 9, 10, 3}));   // accent stripped, punctuation and CJK split
  EXPECT_EQ(ids("Cafe\xCC\x81"), (std::vector<int32_t>{2, 7, 3}));        // NFD input: combining acute removed
  EXPECT_EQ(ids("\x01" "cafe\xE2\x80\x8B"), (std::vector<int32_t>{2, 7, 3}));  // control and zero-width removed
  EXPECT_EQ(ids(""), (std::vector<int32_t>{2, 3}));
}

TEST(Tokenizer, AddedTokensMatchedInRawText) {
  EXPECT_EQ(ids("cafe[SEP]cafe"), (std::vector<int32_t>{2, 7, 3, 7, 3}));
  // Added tokens are not normalized: lowercase "[sep]" is plain text, split into punctuation + word.
  EXPECT_EQ(ids("[sep]"), (std::vector<int32_t>{2, 1, 1, 1, 3}));
}

TEST(Tokenizer, TruncationKeepsRoomForSpecials) {
  EXPECT_EQ(ids("cafe cafe cafe cafe", 4), (std::vector<int32_t>{2, 7, 7, 3}));
  EXPECT_EQ(ids("cafe cafe", 2), (std::vector<int32_t>{2, 3}));
}

TEST(Tokenizer, PairTemplateAndTypeIds) {
  Tokenizer tk = Tokenizer::from_json(kTiny, "tiny");
  Encoding e = tk.encode_pair("cafe", "un", true, 0);
  EXPECT_EQ(e.ids, (std::vector<int32_t>{2, 7, 3, 4, 3}));
  EXPECT_EQ(e.type_ids, (std::vector<int32_t>{0, 0, 0, 1, 1}));
}

TEST(Tokenizer, OffsetsAreSourceByteRanges) {
  Tokenizer tk = Tokenizer::from_json(kTiny, "tiny");
  Encoding e = tk.encode("  Café,x", false, 0);
  ASSERT_EQ(e.ids.size(), 3u);
  EXPECT_EQ(e.offsets[0], (std::pair<uint32_t, uint32_t>{2, 7}));  // "Café" is 5 bytes
  EXPECT_EQ(e.offsets[1], (std::pair<uint32_t, uint32_t>{7, 8}));
}

TEST(Tokenizer, InvalidUtf8NamesTheOffset) {
  Tokenizer tk = Tokenizer::from_json(kTiny, "tiny");
  try {
    tk.encode("ab\xC3(", true, 0);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("byte offset 2"), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, UnsupportedComponentsAreNamed) {
  std::string j = kTiny;
  auto at = j.find("\"WordPiece\"");
  j.replace(at, 11, "\"Unigram\"");
  try {
    Tokenizer::from_json(j, "t.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Unigram"), std::string::npos);
  }
  j = kTiny;
  at = j.find("\"BertPreTokenizer\"");
  j.replace(at, 18, "\"Metaspace\"");
  EXPECT_THROW(Tokenizer::from_json(j, "t.json"), Error);
}

TEST(Unicode, ClassesFromTheReferenceTables) {
  EXPECT_TRUE(unicode::bert_punctuation('$'));  // ASCII symbols count as punctuation for BERT
  EXPECT_TRUE(unicode::bert_punctuation(0x3001));
  EXPECT_FALSE(unicode::bert_punctuation('a'));
  EXPECT_TRUE(unicode::is_whitespace(0x3000));
  EXPECT_TRUE(unicode::bert_clean_remove(0x200B));
  EXPECT_TRUE(unicode::is_chinese(0x4E2D));
  EXPECT_FALSE(unicode::is_chinese(0x3042));  // hiragana is not "Chinese"
  std::vector<int32_t> low;
  unicode::lowercase(0x130, low);  // İ → i + combining dot above
  EXPECT_EQ(low, (std::vector<int32_t>{0x69, 0x307}));
}

// ---------------------------------------------------------------- byte-level BPE
// A tiny byte-level BPE tokenizer.json built here: the 256 byte chars (id = byte value) and a few
// merges. Expected ids and offsets were produced by HF tokenizers 0.23.3 on the same JSON.

#include "tokenizer/bpe.h"
#include "util/utf8.h"

static std::string tiny_bpe_json(const std::string& pre_tokenizer_extra = "") {
  std::string vocab = "{";
  auto add = [&](const std::string& tok, int id) {
    if (vocab.size() > 1) vocab += ", ";
    vocab += '"';
    for (char c : tok) {
      if (c == '"' || c == '\\') vocab += '\\';
      vocab += c;
    }
    vocab += "\": " + std::to_string(id);
  };
  auto ch = [](int b) { std::string s; utf8::append(s, byte_level_char(uint8_t(b))); return s; };
  for (int b = 0; b < 256; ++b) add(ch(b), b);
  const char* merges[][2] = {{"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"a", "a"}, {"aa", "a"}, {"aa", "aa"}, {"Ã", "©"}};
  std::string merge_list;
  int id = 256;
  for (auto& m : merges) {
    add(std::string(m[0]) + m[1], id++);
    merge_list += std::string(merge_list.empty() ? "" : ", ") + "\"" + m[0] + " " + m[1] + "\"";
  }
  vocab += "}";
  return R"({"added_tokens": [{"id": 263, "content": "<|eos|>", "special": true, "normalized": false,
                              "single_word": false, "lstrip": false, "rstrip": false}],
    "normalizer": {"type": "NFC"},
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
       {"type": "Split", "pattern": {"Regex": "\\s+(?!\\S)|\\s+|\\S+"}, "behavior": "Isolated", "invert": false},
       {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false)" +
         pre_tokenizer_extra + R"(}]},
    "post_processor": {"type": "TemplateProcessing",
      "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|eos|>", "type_id": 0}}],
      "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|eos|>", "type_id": 0}},
               {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "<|eos|>", "type_id": 1}}],
      "special_tokens": {"<|eos|>": {"id": "<|eos|>", "ids": [263], "tokens": ["<|eos|>"]}}},
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
              "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
              "vocab": )" + vocab + R"(, "merges": [)" + merge_list + "]}}";
}

TEST(BytePairEncoding, MergesByRankLikeHfTokenizers) {
  Tokenizer tk = Tokenizer::from_json(tiny_bpe_json(), "tiny-bpe");
  EXPECT_EQ(tk.encode("the theaaaaa").ids, (std::vector<int32_t>{116, 257, 32, 116, 257, 259, 260, 263}));
  EXPECT_EQ(tk.encode("aaaaaaa").ids, (std::vector<int32_t>{261, 260, 263}));
  Encoding e = tk.encode("a  the<|eos|>x");  // the added token is matched in the raw text
  EXPECT_EQ(e.ids, (std::vector<int32_t>{97, 32, 32, 116, 257, 263, 120, 263}));
  EXPECT_EQ(e.offsets[4], (std::pair<uint32_t, uint32_t>{4, 6}));
  EXPECT_EQ(e.offsets[5], (std::pair<uint32_t, uint32_t>{6, 13}));
}

TEST(BytePairEncoding, NfcComposesAndOffsetsFollowHfAlignments) {
  Tokenizer tk = Tokenizer::from_json(tiny_bpe_json(), "tiny-bpe");
  // "e" + U+0301 composes to "é" (bytes C3 A9, merged to 262), which keeps the range of its first char.
  Encoding e = tk.encode("e\xCC\x81 \xC3\xA9");
  EXPECT_EQ(e.ids, (std::vector<int32_t>{262, 32, 262, 263}));
  EXPECT_EQ(e.offsets[0], (std::pair<uint32_t, uint32_t>{0, 1}));
  EXPECT_EQ(e.offsets[1], (std::pair<uint32_t, uint32_t>{3, 4}));
  EXPECT_EQ(e.offsets[2], (std::pair<uint32_t, uint32_t>{4, 6}));
  // Every byte of a multi-byte char carries the char's range.
  Encoding m = tk.encode("q\xE1\x80\xB7\xE1\x80\xBA");
  EXPECT_EQ(m.ids, (std::vector<int32_t>{113, 225, 128, 183, 225, 128, 186, 263}));
  EXPECT_EQ(m.offsets[3], (std::pair<uint32_t, uint32_t>{1, 4}));
  EXPECT_EQ(m.offsets[4], (std::pair<uint32_t, uint32_t>{4, 7}));
}

TEST(BytePairEncoding, UnsupportedSettingsAreNamed) {
  std::string j = tiny_bpe_json();
  auto expect_error = [](const std::string& json, const std::string& needle) {
    try {
      Tokenizer::from_json(json, "bad.json");
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  std::string prefix_space = j;
  prefix_space.replace(prefix_space.find("\"add_prefix_space\": false"), 25, "\"add_prefix_space\": true ");
  expect_error(prefix_space, "add_prefix_space");
  std::string bad_merge = j;
  bad_merge.replace(bad_merge.find("\"h e\""), 5, "\"h Z\"");
  expect_error(bad_merge, "merges[1]");
  std::string bad_regex = j;
  bad_regex.replace(bad_regex.find("\\\\s+(?!"), 3, "(((");
  expect_error(bad_regex, "cannot compile regex");
}

// FlatVocab (WordPiece's lookup table) against std::unordered_map: every key found with its id,
// whether asked whole or as prefix + rest; absent strings (near misses included) not found.
TEST(Tokenizer, FlatVocabAgreesWithAMap) {
  std::mt19937 rng(5);
  const std::string alphabet = "abcdefgh#\xc3\xa9";  // includes '#' and the bytes of "é"
  auto random_string = [&](size_t max_len) {
    std::string s(1 + rng() % max_len, ' ');
    for (auto& c : s) c = alphabet[rng() % alphabet.size()];
    return s;
  };
  std::unordered_map<std::string, int32_t> map;
  while (map.size() < 5000) map.emplace(random_string(12), int32_t(map.size()));
  map.emplace("##", 5000);
  embedkit::FlatVocab flat;
  flat.build(map);
  for (const auto& [k, id] : map) {
    ASSERT_EQ(flat.find({}, k), id) << k;
    for (size_t cut = 0; cut <= k.size(); ++cut)
      ASSERT_EQ(flat.find(std::string_view(k).substr(0, cut), std::string_view(k).substr(cut)), id) << k << " cut " << cut;
  }
  size_t absent = 0;
  for (int i = 0; i < 200000; ++i) {
    const std::string s = random_string(14);
    const auto it = map.find(s);
    ASSERT_EQ(flat.find("", s), it == map.end() ? -1 : it->second) << s;
    absent += it == map.end();
  }
  EXPECT_GT(absent, 100000u);
  EXPECT_EQ(flat.find("", ""), -1);
}
