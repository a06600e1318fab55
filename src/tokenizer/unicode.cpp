#include "tokenizer/unicode.h"

#include <utf8proc.h>

#include <algorithm>
#include <iterator>

#include "util/utf8.h"

namespace embedkit::unicode {
namespace {

struct CodeRange {
  int32_t lo, hi;
};
struct LowerEntry {
  int32_t cp;
  const char* utf8;
};

#include "tokenizer/unicode_tables.inc"

template <size_t N>
bool in(const CodeRange (&table)[N], int32_t cp) {
  auto it = std::upper_bound(std::begin(table), std::end(table), cp,
                             [](int32_t v, const CodeRange& r) { return v < r.lo; });
  if (it == std::begin(table)) return false;
  --it;
  return cp <= it->hi;
}

}  // namespace

bool bert_clean_remove(int32_t cp) { return in(kCleanRemove, cp); }
bool bert_clean_space(int32_t cp) { return in(kCleanSpace, cp); }
bool is_whitespace(int32_t cp) { return in(kPreTokSpace, cp); }
bool bert_punctuation(int32_t cp) { return in(kPreTokPunct, cp); }
bool is_chinese(int32_t cp) { return in(kChinese, cp); }
bool is_nonspacing_mark(int32_t cp) { return in(kNonspacingMark, cp); }

void lowercase(int32_t cp, std::vector<int32_t>& out) {
  if (cp < 0x80) {
    out.push_back(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
    return;
  }
  auto it = std::lower_bound(std::begin(kLowerMap), std::end(kLowerMap), cp,
                             [](const LowerEntry& e, int32_t v) { return e.cp < v; });
  if (it == std::end(kLowerMap) || it->cp != cp) {
    out.push_back(cp);
    return;
  }
  std::string_view s(it->utf8);
  size_t i = 0;
  while (i < s.size()) out.push_back(utf8::decode(s, i));
}

void decompose(int32_t cp, std::vector<int32_t>& out) {
  utf8proc_int32_t buf[32];
  int last = 0;
  utf8proc_ssize_t n = utf8proc_decompose_char(cp, buf, 32, UTF8PROC_DECOMPOSE, &last);
  if (n < 0 || n > 32) {
    out.push_back(cp);
    return;
  }
  out.insert(out.end(), buf, buf + n);
}

int combining_class(int32_t cp) { return utf8proc_get_property(cp)->combining_class; }

int32_t compose(int32_t starter, int32_t next) {
  // utf8proc composes a decomposed buffer in place (Hangul syllables included); one code point
  // left means the pair has a primary composite.
  utf8proc_int32_t buf[2] = {starter, next};
  utf8proc_ssize_t n = utf8proc_normalize_utf32(buf, 2, utf8proc_option_t(UTF8PROC_COMPOSE | UTF8PROC_STABLE));
  return n == 1 ? buf[0] : -1;
}

bool may_compose_second(int32_t cp) {
  if (cp < 0x300) return false;
  if ((cp >= 0x1161 && cp <= 0x1175) || (cp >= 0x11A8 && cp <= 0x11C2)) return true;  // Hangul V, T
  const utf8proc_property_t* p = utf8proc_get_property(cp);
  return p->combining_class != 0 || p->category == UTF8PROC_CATEGORY_MN || p->category == UTF8PROC_CATEGORY_MC ||
         p->category == UTF8PROC_CATEGORY_ME;
}

bool is_python_space(int32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

}  // namespace embedkit::unicode
