// Character classes for the BERT normalizer and pre-tokenizer, as HF `tokenizers` defines them
// (tables probed from the reference by tools/gen_unicode_tables.py), plus NFD via utf8proc.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

namespace embedkit::unicode {

bool bert_clean_remove(int32_t cp);   // deleted by BertNormalizer.clean_text (controls, format, private use)
bool bert_clean_space(int32_t cp);    // turned into ' ' by clean_text
bool is_whitespace(int32_t cp);       // Rust char::is_whitespace (BertPreTokenizer / WhitespaceSplit)
bool bert_punctuation(int32_t cp);    // isolated by BertPreTokenizer
bool is_chinese(int32_t cp);          // padded with spaces by handle_chinese_chars
bool is_nonspacing_mark(int32_t cp);  // removed by strip_accents after NFD
// Appends the lowercase mapping of cp (one or more code points) to out.
void lowercase(int32_t cp, std::vector<int32_t>& out);
// Canonical decomposition (NFD) of one code point, appended to out (not reordered).
void decompose(int32_t cp, std::vector<int32_t>& out);
int combining_class(int32_t cp);
// Canonical composition of a starter and a following char (NFC's primary composite), or -1.
int32_t compose(int32_t starter, int32_t next);
// Whether cp can be the second char of a canonical composition (marks, Hangul V/T jamo).
bool may_compose_second(int32_t cp);
bool is_python_space(int32_t cp);     // Python str.isspace(): what sentence-transformers' strip() removes

}  // namespace embedkit::unicode
