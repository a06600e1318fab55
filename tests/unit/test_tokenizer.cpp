// Tokenizer pieces on a tiny hand-written tokenizer.json (whole-pipeline parity with HF tokenizers
// on real text lives in tests/integration/test_tokenizer_parity.py).
#include <gtest/gtest.h>

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
