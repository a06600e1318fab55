#include "tokenizer/bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <atomic>
#include <queue>
#include <unordered_map>

#include "util/error.h"
#include "util/utf8.h"

namespace embedkit {

// ---------------------------------------------------------------- byte-level alphabet

namespace {

struct ByteAlphabet {
  int32_t to_char[256];
  ByteAlphabet() {
    // Printable Latin-1 bytes stand for themselves; the other 68 bytes take U+0100, U+0101, … in order.
    int32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_char[b] = printable ? b : next++;
    }
  }
};
const ByteAlphabet kBytes;

}  // namespace

int32_t byte_level_char(uint8_t byte) { return kBytes.to_char[byte]; }

// ---------------------------------------------------------------- regex (PCRE2)

namespace {

// HF tokenizers compiles patterns with Oniguruma, where \s is Unicode White_Space; PCRE2's UCP \s
// differs (e.g. U+0085), so \s and \S are spelled out as that exact set.
constexpr const char* kWhiteSpace =
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

std::string oniguruma_to_pcre2(const std::string& pat, const std::string& where) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pat.size(); ++i) {
    char c = pat[i];
    if (c == '\\' && i + 1 < pat.size()) {
      char n = pat[++i];
      if (n == 's') out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
      else if (n == 'S') {
        if (in_class) throw Error(where + ": \\S inside a character class is not supported in pattern " + pat);
        out += "[^" + std::string(kWhiteSpace) + "]";
      } else {
        out += c;
        out += n;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      if (i + 1 < pat.size() && pat[i + 1] == '^') out += pat[++i];
      if (i + 1 < pat.size() && pat[i + 1] == ']') out += pat[++i];  // a literal ']' first in the class
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

std::string quote_literal(const std::string& s) {
  std::string out = "\\Q";
  for (size_t i = 0; i < s.size(); ++i) {
    if (s.compare(i, 2, "\\E") == 0) { out += "\\E\\\\E\\Q"; ++i; continue; }
    out += s[i];
  }
  return out + "\\E";
}

// A compiled pattern shared by all threads; match data and JIT stacks are per thread.
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) : where_(where) {
    int err = 0;
    PCRE2_SIZE at = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                          &at, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw Error(where + ": cannot compile regex at offset " + std::to_string(at) + ": " +
                  reinterpret_cast<const char*>(msg) + " (pattern " + pattern + ")");
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is unavailable
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls on_match(begin, end) for every non-overlapping match in s, left to right (byte offsets).
  template <class F>
  void for_each_match(std::string_view s, F&& on_match) const {
    struct PerThread {
      pcre2_match_data* md = nullptr;
      pcre2_match_context* ctx = nullptr;
      pcre2_jit_stack* stack = nullptr;
      ~PerThread() {
        if (md) pcre2_match_data_free(md);
        if (ctx) pcre2_match_context_free(ctx);
        if (stack) pcre2_jit_stack_free(stack);
      }
    };
    thread_local PerThread pt;
    if (!pt.ctx) {
      pt.ctx = pcre2_match_context_create(nullptr);
      pt.stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
      pcre2_jit_stack_assign(pt.ctx, nullptr, pt.stack);
      pt.md = pcre2_match_data_create(1, nullptr);  // only the whole match is read (rc 0 = groups not stored)
    }
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t pos = 0;
    while (pos <= s.size()) {
      int rc = pcre2_match(code_, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, pt.md, pt.ctx);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        throw Error(where_ + ": regex match failed: " + reinterpret_cast<const char*>(msg));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(pt.md);
      size_t b = ov[0], e = ov[1];
      if (e == b) {  // empty match: produces no split; step over one code point
        if (b >= s.size()) break;
        pos = b + 1;
        while (pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) ++pos;
        continue;
      }
      on_match(b, e);
      pos = e;
    }
  }

 private:
  pcre2_code* code_ = nullptr;
  std::string where_;
};

enum class SplitBehavior { Isolated, Removed, MergedWithPrevious, MergedWithNext };

// Splits the chars of t at the matches of a regex: each char's UTF-8 is laid out, matches are found
// in bytes and mapped back to char indices.
void regex_split(const Regex& re, SplitBehavior behavior, const NormalizedText& t,
                 std::vector<std::pair<uint32_t, uint32_t>>& words) {
  thread_local std::string text;
  thread_local std::vector<uint32_t> char_at;  // byte offset → char index (at char starts)
  text.clear();
  char_at.clear();
  for (uint32_t i = 0; i < t.size(); ++i) {
    utf8::append(text, t[i].cp);
    char_at.resize(text.size(), i);
  }
  char_at.push_back(uint32_t(t.size()));
  // Pieces as (begin, end, is_match), in order, covering the whole text.
  std::vector<std::pair<uint32_t, uint32_t>> pieces;
  std::vector<uint8_t> is_match;
  uint32_t last = 0;
  re.for_each_match(text, [&](size_t b, size_t e) {
    uint32_t cb = char_at[b], ce = char_at[e];
    if (cb > last) { pieces.push_back({last, cb}); is_match.push_back(0); }
    pieces.push_back({cb, ce});
    is_match.push_back(1);
    last = ce;
  });
  if (last < t.size()) { pieces.push_back({last, uint32_t(t.size())}); is_match.push_back(0); }
  switch (behavior) {
    case SplitBehavior::Isolated:
      words.insert(words.end(), pieces.begin(), pieces.end());
      break;
    case SplitBehavior::Removed:
      for (size_t k = 0; k < pieces.size(); ++k)
        if (!is_match[k]) words.push_back(pieces[k]);
      break;
    case SplitBehavior::MergedWithPrevious: {  // a match joins the piece before it, unless that is a match too
      const size_t first = words.size();
      bool previous_match = false;
      for (size_t k = 0; k < pieces.size(); ++k) {
        if (is_match[k] && !previous_match && words.size() > first) words.back().second = pieces[k].second;
        else words.push_back(pieces[k]);
        previous_match = is_match[k];
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {  // a match joins the piece after it, unless that is a match too
      std::vector<std::pair<uint32_t, uint32_t>> rev;
      bool next_match = false;
      for (size_t k = pieces.size(); k-- > 0;) {
        if (is_match[k] && !next_match && !rev.empty()) rev.back().first = pieces[k].first;
        else rev.push_back(pieces[k]);
        next_match = is_match[k];
      }
      words.insert(words.end(), rev.rbegin(), rev.rend());
      break;
    }
  }
}

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(const std::string& pattern, SplitBehavior b, const std::string& where) : re_(pattern, where), behavior_(b) {}
  void split(const NormalizedText& t, std::vector<std::pair<uint32_t, uint32_t>>& words) const override {
    regex_split(re_, behavior_, t, words);
  }

 private:
  Regex re_;
  SplitBehavior behavior_;
};

// GPT-2's pre-tokenizer regex, used by ByteLevel when use_regex is true.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool use_regex, const std::string& where) {
    if (use_regex) re_ = std::make_unique<Regex>(oniguruma_to_pcre2(kGpt2Pattern, where), where);
  }
  void split(const NormalizedText& t, std::vector<std::pair<uint32_t, uint32_t>>& words) const override {
    if (re_) regex_split(*re_, SplitBehavior::Isolated, t, words);
    else if (!t.empty()) words.push_back({0u, uint32_t(t.size())});
  }
  bool transforms() const override { return true; }
  // Each char → its UTF-8 bytes → one alphabet char per byte, all keeping the char's source range.
  void transform(NormalizedText& word) const override {
    NormalizedText out;
    out.reserve(word.size() * 2);
    std::string bytes;
    for (const auto& c : word) {
      bytes.clear();
      utf8::append(bytes, c.cp);
      for (unsigned char b : bytes) out.push_back({kBytes.to_char[b], c.start, c.end});
    }
    word.swap(out);
  }

 private:
  std::unique_ptr<Regex> re_;
};

// ---------------------------------------------------------------- BPE model

// HF tokenizers' BPE (models/bpe/word.rs merge_all): the chars of a word are the initial symbols;
// repeatedly the adjacent pair with the lowest merge rank (leftmost among equals) is replaced by
// its merged token, until no pair has a merge.
class BpeModel final : public TokenModel {
 public:
  struct Merge {
    int32_t rank, new_id;
  };
  std::unordered_map<uint64_t, Merge> merges;  // (left id << 32 | right id) → rank, result
  Vocab vocab;                                 // the model's own vocabulary
  std::vector<int32_t> small_char_id;          // id of single chars below U+0200 (-1: not in vocab)
  std::optional<int32_t> unk_id;
  bool ignore_merges = false;
  uint64_t instance = next_instance_++;  // tells apart BPE models in the per-thread word cache

  void tokenize(const NormalizedText& t, uint32_t begin, uint32_t end, Encoding& out) const override {
    // Cache: word (UTF-8) → tokens with the number of chars each covers.
    struct Cache {
      uint64_t owner = ~0ull;
      std::unordered_map<std::string, std::vector<std::pair<int32_t, uint32_t>>> words;
    };
    thread_local Cache cache;
    if (cache.owner != instance) {
      cache.words.clear();
      cache.owner = instance;
    }
    thread_local std::string key;
    key.clear();
    for (uint32_t i = begin; i < end; ++i) utf8::append(key, t[i].cp);
    const bool cacheable = end - begin <= kMaxCachedChars;
    const std::vector<std::pair<int32_t, uint32_t>>* toks = nullptr;
    thread_local std::vector<std::pair<int32_t, uint32_t>> fresh;
    if (cacheable) {
      auto it = cache.words.find(key);
      if (it != cache.words.end()) toks = &it->second;
    }
    if (!toks) {
      fresh.clear();
      merge_word(t, begin, end, fresh);
      if (cacheable) {
        if (cache.words.size() >= kCacheCapacity) cache.words.clear();
        toks = &cache.words.emplace(key, fresh).first->second;
      } else {
        toks = &fresh;
      }
    }
    uint32_t at = begin;
    for (auto [id, n] : *toks) {
      if (id >= 0) {
        out.ids.push_back(id);
        out.offsets.push_back({t[at].start, t[at + n - 1].end});
      }
      at += n;
    }
  }

 private:
  static constexpr size_t kMaxCachedChars = 256, kCacheCapacity = 1 << 16;
  static inline std::atomic<uint64_t> next_instance_{0};

  int32_t char_id(int32_t cp) const {
    if (size_t(cp) < small_char_id.size()) return small_char_id[size_t(cp)];
    std::string s;
    utf8::append(s, cp);
    auto it = vocab.find(std::string_view(s));
    return it == vocab.end() ? -1 : it->second;
  }

  // Appends (id, chars covered) per token; id -1 marks chars dropped (unknown, no unk token).
  void merge_word(const NormalizedText& t, uint32_t begin, uint32_t end,
                  std::vector<std::pair<int32_t, uint32_t>>& toks) const {
    const uint32_t n = end - begin;
    if (ignore_merges) {
      std::string w;
      for (uint32_t i = begin; i < end; ++i) utf8::append(w, t[i].cp);
      if (auto it = vocab.find(std::string_view(w)); it != vocab.end()) {
        toks.push_back({it->second, n});
        return;
      }
    }
    struct Symbol {
      int32_t id;
      int32_t prev, next;
      uint32_t chars;
    };
    std::vector<Symbol> sym;
    sym.reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
      int32_t id = char_id(t[begin + i].cp);
      if (id < 0 && unk_id) {
        // HF fuses nothing here (fuse_unk false is enforced at load): each unknown char is one unk.
        id = *unk_id;
      }
      sym.push_back({id, int32_t(i) - 1, i + 1 < n ? int32_t(i) + 1 : -1, 1});
    }
    // Candidate merges: (rank, position of the left symbol, resulting id); lowest rank first, then leftmost.
    using Cand = std::tuple<int32_t, int32_t, int32_t>;
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto push = [&](int32_t i) {
      if (i < 0 || sym[size_t(i)].next < 0) return;
      const Symbol& a = sym[size_t(i)];
      const Symbol& b = sym[size_t(a.next)];
      if (a.id < 0 || b.id < 0) return;
      auto it = merges.find(uint64_t(uint32_t(a.id)) << 32 | uint32_t(b.id));
      if (it != merges.end()) heap.push({it->second.rank, i, it->second.new_id});
    };
    for (uint32_t i = 0; i + 1 < n; ++i) push(int32_t(i));
    while (!heap.empty()) {
      auto [rank, i, new_id] = heap.top();
      heap.pop();
      Symbol& a = sym[size_t(i)];
      if (a.chars == 0 || a.next < 0) continue;  // merged away, or now last
      Symbol& b = sym[size_t(a.next)];
      auto it = merges.find(uint64_t(uint32_t(a.id)) << 32 | uint32_t(b.id));
      if (a.id < 0 || b.id < 0 || it == merges.end() || it->second.new_id != new_id) continue;  // stale
      a.id = new_id;
      a.chars += b.chars;
      b.chars = 0;
      a.next = b.next;
      if (a.next >= 0) sym[size_t(a.next)].prev = i;
      push(a.prev);
      push(i);
    }
    for (int32_t i = 0; i >= 0 && size_t(i) < sym.size(); i = sym[size_t(i)].next) toks.push_back({sym[size_t(i)].id, sym[size_t(i)].chars});
  }
};

std::string opt_string_or_empty(const json::Element& e, const char* key, const std::string& where) {
  auto f = json::field(e, key);
  if (!f || f->is_null()) return "";
  if (!f->is_string()) throw Error(where + ": \"" + key + "\" must be a string or null");
  return std::string(f->get_string().value_unsafe());
}

}  // namespace

std::unique_ptr<TokenModel> make_bpe_model(const json::Element& model, const std::string& what, Vocab& vocab_out) {
  const std::string where = what + ": model (BPE)";
  auto bpe = std::make_unique<BpeModel>();
  auto vocab = json::field(model, "vocab");
  if (!vocab || !vocab->is_object()) throw Error(where + ": \"vocab\" must be an object {token: id}");
  for (auto [k, v] : json::object_of(*vocab)) {
    if (!v.is_int64() || v.get_int64().value_unsafe() < 0 || v.get_int64().value_unsafe() > (1 << 24))
      throw Error(where + ": vocab[\"" + std::string(k) + "\"] must be a non-negative integer id below 2^24");
    int32_t id = int32_t(v.get_int64().value_unsafe());
    bpe->vocab.emplace(std::string(k), id);
    vocab_out.emplace(std::string(k), id);
  }
  for (const char* unsupported : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!opt_string_or_empty(model, unsupported, where).empty())
      throw Error(where + ": \"" + std::string(unsupported) + "\" is not supported (only \"\" or null, as in byte-level BPE files)");
  if (json::opt_bool(model, "byte_fallback", where).value_or(false))
    throw Error(where + ": \"byte_fallback\": true is not supported");
  if (json::opt_bool(model, "fuse_unk", where).value_or(false))
    throw Error(where + ": \"fuse_unk\": true is not supported");
  if (auto d = json::field(model, "dropout"); d && !d->is_null() && !(d->is_number() && double(*d) == 0.0))
    throw Error(where + ": \"dropout\" must be null (dropout is a training-time option)");
  bpe->ignore_merges = json::opt_bool(model, "ignore_merges", where).value_or(false);
  if (std::string unk = opt_string_or_empty(model, "unk_token", where); !unk.empty()) {
    auto it = bpe->vocab.find(std::string_view(unk));
    if (it == bpe->vocab.end()) throw Error(where + ": unk_token \"" + unk + "\" is not in the vocabulary");
    bpe->unk_id = it->second;
  }
  bpe->small_char_id.assign(0x200, -1);
  for (int32_t cp = 0; cp < 0x200; ++cp) {
    std::string s;
    utf8::append(s, cp);
    if (auto it = bpe->vocab.find(std::string_view(s)); it != bpe->vocab.end()) bpe->small_char_id[size_t(cp)] = it->second;
  }

  auto merges = json::field(model, "merges");
  if (!merges || !merges->is_array()) throw Error(where + ": \"merges\" must be an array");
  int32_t rank = 0;
  auto id_of = [&](std::string_view tok, int32_t r) {
    auto it = bpe->vocab.find(tok);
    if (it == bpe->vocab.end())
      throw Error(where + ": merges[" + std::to_string(r) + "] uses \"" + std::string(tok) + "\", which is not in the vocabulary");
    return it->second;
  };
  std::string joined;
  for (auto m : json::array_of(*merges)) {
    std::string_view a, b;
    if (m.is_string()) {  // "left right" (one space; tokens never contain ' ' in byte-level files)
      std::string_view s = m.get_string().value_unsafe();
      size_t sp = s.find(' ', 1);
      if (sp == std::string_view::npos)
        throw Error(where + ": merges[" + std::to_string(rank) + "] \"" + std::string(s) + "\" must be two tokens separated by a space");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && json::array_of(m).size() == 2 && json::array_of(m).at(0).value_unsafe().is_string() &&
               json::array_of(m).at(1).value_unsafe().is_string()) {
      a = json::array_of(m).at(0).value_unsafe().get_string().value_unsafe();
      b = json::array_of(m).at(1).value_unsafe().get_string().value_unsafe();
    } else {
      throw Error(where + ": merges[" + std::to_string(rank) + "] must be \"a b\" or [\"a\", \"b\"]");
    }
    joined.assign(a);
    joined.append(b);
    int32_t ia = id_of(a, rank), ib = id_of(b, rank), inew = id_of(joined, rank);
    // The first occurrence of a pair wins, as in HF (later duplicates cannot be reached).
    bpe->merges.emplace(uint64_t(uint32_t(ia)) << 32 | uint32_t(ib), BpeModel::Merge{rank, inew});
    ++rank;
  }
  return bpe;
}

std::unique_ptr<PreTokenizer> make_split_pre_tokenizer(const json::Element& e, const std::string& where0) {
  const std::string where = where0 + " Split";
  auto pat = json::field(e, "pattern");
  if (!pat || !pat->is_object()) throw Error(where + ": \"pattern\" must be {\"Regex\": …} or {\"String\": …}");
  std::string pcre;
  if (auto r = json::opt_string(*pat, "Regex", where + ".pattern")) pcre = oniguruma_to_pcre2(*r, where);
  else if (auto s = json::opt_string(*pat, "String", where + ".pattern")) pcre = quote_literal(*s);
  else throw Error(where + ": \"pattern\" must be {\"Regex\": …} or {\"String\": …}");
  if (json::opt_bool(e, "invert", where).value_or(false)) throw Error(where + ": \"invert\": true is not supported");
  std::string b = json::get_string(e, "behavior", where);
  SplitBehavior behavior;
  if (b == "Isolated") behavior = SplitBehavior::Isolated;
  else if (b == "Removed") behavior = SplitBehavior::Removed;
  else if (b == "MergedWithPrevious") behavior = SplitBehavior::MergedWithPrevious;
  else if (b == "MergedWithNext") behavior = SplitBehavior::MergedWithNext;
  else throw Error(where + ": unsupported behavior \"" + b + "\" (supported: Isolated, Removed, MergedWithPrevious, MergedWithNext)");
  return std::make_unique<SplitPreTokenizer>(pcre, behavior, where);
}

std::unique_ptr<PreTokenizer> make_byte_level_pre_tokenizer(const json::Element& e, const std::string& where0) {
  const std::string where = where0 + " ByteLevel";
  if (json::opt_bool(e, "add_prefix_space", where).value_or(true))
    throw Error(where + ": \"add_prefix_space\": true is not supported (EmbedKit supports the false setting that "
                        "GPT-2, RoBERTa and Qwen tokenizer.json files use)");
  return std::make_unique<ByteLevelPreTokenizer>(json::opt_bool(e, "use_regex", where).value_or(true), where);
}

}  // namespace embedkit
