#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "tokenizer/bpe.h"
#include "tokenizer/flat_vocab.h"
#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/json.h"
#include "util/utf8.h"

namespace embedkit {
namespace {

using json::Element;

// ---------------------------------------------------------------- normalizers

// Canonical decomposition of the whole text with canonical reordering of combining marks,
// as unicode-normalization's nfd() does. Each produced char keeps its source range.
void nfd(NormalizedText& t) {
  NormalizedText out;
  out.reserve(t.size() + t.size() / 4);
  std::vector<int32_t> buf;
  for (const auto& c : t) {
    if (c.cp < 0xC0) { out.push_back(c); continue; }  // nothing below U+00C0 decomposes
    buf.clear();
    unicode::decompose(c.cp, buf);
    for (int32_t d : buf) out.push_back({d, c.start, c.end});
  }
  // Canonical ordering: stable-sort each run of non-starters by combining class.
  size_t i = 0;
  while (i < out.size()) {
    if (out[i].cp < 0x300 || unicode::combining_class(out[i].cp) == 0) { ++i; continue; }
    size_t j = i;
    while (j < out.size() && out[j].cp >= 0x300 && unicode::combining_class(out[j].cp) != 0) ++j;
    if (j - i > 1)
      std::stable_sort(out.begin() + i, out.begin() + j, [](const NormChar& a, const NormChar& b) {
        return unicode::combining_class(a.cp) < unicode::combining_class(b.cp);
      });
    i = j;
  }
  t.swap(out);
}

// NFC: canonical decomposition, canonical ordering, then canonical composition (UAX #15): a char
// composes with the last starter unless a char in between has combining class 0 or >= its own.
// Source ranges follow HF tokenizers' alignments, which are positional: each output char records
// how many input chars it consumes (a composite: all it absorbed; a char added by a decomposition:
// none), and output char k takes the range of the input char where its consumption starts (one that
// consumes none: the input char before). So reordered marks take the ranges of the positions they
// moved to, and a composite takes its first input char's range.
void nfc(NormalizedText& t) {
  if (std::all_of(t.begin(), t.end(), [](const NormChar& c) { return c.cp < 0x300; })) return;  // nothing below U+0300 changes
  struct Out {
    int32_t cp;
    uint32_t consumed;
  };
  std::vector<Out> d;  // decomposed
  d.reserve(t.size() + t.size() / 4);
  std::vector<int32_t> buf;
  for (const auto& c : t) {
    if (c.cp < 0xC0) { d.push_back({c.cp, 1}); continue; }
    buf.clear();
    unicode::decompose(c.cp, buf);
    for (size_t k = 0; k < buf.size(); ++k) d.push_back({buf[k], k == 0 ? 1u : 0u});
  }
  auto ccc = [](int32_t cp) { return cp < 0x300 ? 0 : unicode::combining_class(cp); };
  for (size_t i = 0; i < d.size();) {  // canonical ordering: stable sort of each run of non-starters
    if (ccc(d[i].cp) == 0) { ++i; continue; }
    size_t j = i;
    while (j < d.size() && ccc(d[j].cp) != 0) ++j;
    if (j - i > 1) std::stable_sort(d.begin() + i, d.begin() + j, [&](const Out& a, const Out& b) { return ccc(a.cp) < ccc(b.cp); });
    i = j;
  }
  std::vector<Out> out;
  out.reserve(d.size());
  int64_t starter = -1;
  int last_cc = 0;
  for (const auto& c : d) {
    const int cc = ccc(c.cp);
    if (starter >= 0 && unicode::may_compose_second(c.cp)) {
      const bool adjacent = int64_t(out.size()) - 1 == starter;
      if (adjacent || (last_cc != 0 && last_cc < cc)) {
        int32_t composed = unicode::compose(out[size_t(starter)].cp, c.cp);
        if (composed >= 0) {
          out[size_t(starter)].cp = composed;
          out[size_t(starter)].consumed += c.consumed;
          continue;
        }
      }
    }
    if (cc == 0) starter = int64_t(out.size());
    last_cc = cc;
    out.push_back(c);
  }
  NormalizedText res;
  res.reserve(out.size());
  size_t p = 0;  // input position
  for (const auto& o : out) {
    if (o.consumed == 0) {
      res.push_back(p > 0 ? NormChar{o.cp, t[p - 1].start, t[p - 1].end} : NormChar{o.cp, t[0].start, t[0].start});
    } else {
      res.push_back({o.cp, t[p].start, t[p].end});
      p += o.consumed;
    }
  }
  t.swap(res);
}

void lowercase(NormalizedText& t) {
  NormalizedText out;
  out.reserve(t.size());
  std::vector<int32_t> buf;
  for (const auto& c : t) {
    buf.clear();
    unicode::lowercase(c.cp, buf);
    for (int32_t l : buf) out.push_back({l, c.start, c.end});
  }
  t.swap(out);
}

// HF tokenizers BertNormalizer: clean_text → handle_chinese_chars → strip_accents → lowercase.
class BertNormalizer final : public Normalizer {
 public:
  bool clean_text = true, chinese = true, strip_accents = true, lower = true;
  void apply(NormalizedText& t) const override {
    NormalizedText out;
    out.reserve(t.size() + 8);
    for (auto c : t) {
      if (clean_text) {
        if (unicode::bert_clean_remove(c.cp)) continue;
        if (unicode::bert_clean_space(c.cp)) c.cp = ' ';
      }
      if (chinese && c.cp >= 0x3400 && unicode::is_chinese(c.cp)) {
        out.push_back({' ', c.start, c.end});
        out.push_back(c);
        out.push_back({' ', c.start, c.end});
      } else {
        out.push_back(c);
      }
    }
    if (strip_accents) {
      nfd(out);
      std::erase_if(out, [](const NormChar& c) { return c.cp >= 0x300 && unicode::is_nonspacing_mark(c.cp); });
    }
    if (lower) lowercase(out);
    t.swap(out);
  }
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void apply(NormalizedText& t) const override { lowercase(t); }
};

class NfdNormalizer final : public Normalizer {
 public:
  void apply(NormalizedText& t) const override { nfd(t); }
};

class NfcNormalizer final : public Normalizer {
 public:
  void apply(NormalizedText& t) const override { nfc(t); }
};

class SequenceNormalizer final : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> steps;
  void apply(NormalizedText& t) const override {
    for (auto& s : steps) s->apply(t);
  }
};

// ---------------------------------------------------------------- pre-tokenizers

// BertPreTokenizer: split on whitespace (dropped) and isolate each punctuation char.
class BertPreTokenizer final : public PreTokenizer {
 public:
  void split(const NormalizedText& t, std::vector<std::pair<uint32_t, uint32_t>>& words) const override {
    uint32_t start = 0;
    bool in_word = false;
    for (uint32_t i = 0; i < t.size(); ++i) {
      int32_t cp = t[i].cp;
      if (unicode::is_whitespace(cp)) {
        if (in_word) words.push_back({start, i});
        in_word = false;
      } else if (unicode::bert_punctuation(cp)) {
        if (in_word) words.push_back({start, i});
        words.push_back({i, i + 1});
        in_word = false;
      } else if (!in_word) {
        start = i;
        in_word = true;
      }
    }
    if (in_word) words.push_back({start, uint32_t(t.size())});
  }
};

class WhitespaceSplit final : public PreTokenizer {
 public:
  void split(const NormalizedText& t, std::vector<std::pair<uint32_t, uint32_t>>& words) const override {
    uint32_t start = 0;
    bool in_word = false;
    for (uint32_t i = 0; i < t.size(); ++i) {
      if (unicode::is_whitespace(t[i].cp)) {
        if (in_word) words.push_back({start, i});
        in_word = false;
      } else if (!in_word) {
        start = i;
        in_word = true;
      }
    }
    if (in_word) words.push_back({start, uint32_t(t.size())});
  }
};

// A sequence applies each pre-tokenizer to every word the previous one produced.
class SequencePreTokenizer final : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  void split(const NormalizedText& t, std::vector<std::pair<uint32_t, uint32_t>>& words) const override {
    std::vector<std::pair<uint32_t, uint32_t>> cur{{0u, uint32_t(t.size())}}, next, sub;
    for (auto& s : steps) {
      next.clear();
      for (auto [b, e] : cur) {
        NormalizedText piece(t.begin() + b, t.begin() + e);
        sub.clear();
        s->split(piece, sub);
        for (auto [sb, se] : sub) next.push_back({b + sb, b + se});
      }
      cur.swap(next);
    }
    words.insert(words.end(), cur.begin(), cur.end());
  }
  bool transforms() const override {
    return std::any_of(steps.begin(), steps.end(), [](auto& s) { return s->transforms(); });
  }
  void transform(NormalizedText& word) const override {
    for (auto& s : steps)
      if (s->transforms()) s->transform(word);
  }
};

// ---------------------------------------------------------------- models

// WordPiece: greedy longest-match-first over each word; a word with any unmatched part, or longer
// than max_input_chars_per_word chars, becomes a single unk token.
class WordPiece final : public TokenModel {
 public:
  FlatVocab vocab;  // the model's own vocabulary (added tokens are matched before the model runs)
  int32_t unk_id = 0;
  std::string prefix = "##";
  size_t max_chars = 100;

  void tokenize(const NormalizedText& t, uint32_t begin, uint32_t end, Encoding& out) const override {
    size_t n = end - begin;
    auto push_unk = [&] {
      out.ids.push_back(unk_id);
      out.offsets.push_back({t[begin].start, t[end - 1].end});
    };
    if (n > max_chars) return push_unk();
    // UTF-8 of the word with the byte position of each char.
    std::string word;
    std::vector<uint32_t> pos(n + 1);
    for (size_t i = 0; i < n; ++i) {
      pos[i] = uint32_t(word.size());
      utf8::append(word, t[begin + i].cp);
    }
    pos[n] = uint32_t(word.size());
    size_t first = out.ids.size();
    size_t start = 0;
    while (start < n) {
      size_t stop = n;
      int32_t found = -1;
      const std::string_view pre = start > 0 ? std::string_view(prefix) : std::string_view();
      while (stop > start) {
        found = vocab.find(pre, std::string_view(word).substr(pos[start], pos[stop] - pos[start]));
        if (found >= 0) break;
        --stop;
      }
      if (found < 0) {
        out.ids.resize(first);
        out.offsets.resize(first);
        return push_unk();
      }
      out.ids.push_back(found);
      out.offsets.push_back({t[begin + start].start, t[begin + stop - 1].end});
      start = stop;
    }
  }
};

// ---------------------------------------------------------------- parsing

std::unique_ptr<TokenModel> parse_wordpiece(const Element& model, const std::string& what, Vocab& vocab_out) {
  auto vocab = json::field(model, "vocab");
  if (!vocab || !vocab->is_object()) throw Error(what + ": model.vocab must be an object {token: id}");
  for (auto [k, v] : json::object_of(*vocab)) {
    if (!v.is_int64() || v.get_int64().value_unsafe() < 0 || v.get_int64().value_unsafe() > (1 << 24))
      throw Error(what + ": model.vocab[\"" + std::string(k) + "\"] must be a non-negative integer id below 2^24");
    vocab_out.emplace(std::string(k), int32_t(v.get_int64().value_unsafe()));
  }
  auto wp = std::make_unique<WordPiece>();
  wp->vocab.build(vocab_out);
  std::string unk = json::opt_string(model, "unk_token", what + ": model").value_or("[UNK]");
  wp->prefix = json::opt_string(model, "continuing_subword_prefix", what + ": model").value_or("##");
  auto mc = json::opt_int(model, "max_input_chars_per_word", what + ": model").value_or(100);
  if (mc < 0) throw Error(what + ": model.max_input_chars_per_word must be >= 0");
  wp->max_chars = size_t(mc);
  auto unk_it = vocab_out.find(std::string_view(unk));
  if (unk_it == vocab_out.end()) throw Error(what + ": model.unk_token \"" + unk + "\" is not in the vocabulary");
  wp->unk_id = unk_it->second;
  return wp;
}

std::string component_type(const Element& e, const std::string& where) {
  return json::get_string(e, "type", where);
}

std::unique_ptr<Normalizer> parse_normalizer(const Element& e, const std::string& what) {
  if (e.is_null()) return nullptr;
  std::string where = what + ": normalizer";
  std::string type = component_type(e, where);
  where += " " + type;
  if (type == "BertNormalizer") {
    auto n = std::make_unique<BertNormalizer>();
    n->clean_text = json::opt_bool(e, "clean_text", where).value_or(true);
    n->chinese = json::opt_bool(e, "handle_chinese_chars", where).value_or(true);
    n->lower = json::opt_bool(e, "lowercase", where).value_or(true);
    n->strip_accents = json::opt_bool(e, "strip_accents", where).value_or(n->lower);  // null → follows lowercase
    return n;
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "NFD") return std::make_unique<NfdNormalizer>();
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  if (type == "Sequence") {
    auto s = std::make_unique<SequenceNormalizer>();
    auto arr = json::field(e, "normalizers");
    if (!arr || !arr->is_array()) throw Error(where + ": \"normalizers\" must be an array");
    for (auto x : json::array_of(*arr))
      if (auto n = parse_normalizer(x, what)) s->steps.push_back(std::move(n));
    return s;
  }
  throw Error(where + ": unsupported normalizer type \"" + type +
              "\" (supported: BertNormalizer, Lowercase, NFD, NFC, Sequence)");
}

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const Element& e, const std::string& what) {
  if (e.is_null()) return nullptr;
  std::string where = what + ": pre_tokenizer";
  std::string type = component_type(e, where);
  if (type == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplit>();
  if (type == "Split") return make_split_pre_tokenizer(e, where);
  if (type == "ByteLevel") return make_byte_level_pre_tokenizer(e, where);
  if (type == "Sequence") {
    auto s = std::make_unique<SequencePreTokenizer>();
    auto arr = json::field(e, "pretokenizers");
    if (!arr || !arr->is_array()) throw Error(where + " Sequence: \"pretokenizers\" must be an array");
    for (auto x : json::array_of(*arr))
      if (auto p = parse_pre_tokenizer(x, what)) {
        // Words are rewritten (ByteLevel) only after all splitting: a split after a rewrite would
        // see the rewritten text in HF, which EmbedKit does not model.
        if (!s->steps.empty() && s->steps.back()->transforms())
          throw Error(where + " Sequence: a pre-tokenizer after ByteLevel is not supported");
        s->steps.push_back(std::move(p));
      }
    return s;
  }
  throw Error(where + ": unsupported pre-tokenizer type \"" + type +
              "\" (supported: BertPreTokenizer, WhitespaceSplit, Split, ByteLevel, Sequence)");
}

std::vector<TemplatePiece> parse_template(const Element& arr, const std::optional<Element>& specials, const std::string& where,
                                          const Vocab& vocab) {
  std::vector<TemplatePiece> out;
  if (!arr.is_array()) throw Error(where + ": template must be an array");
  for (auto item : json::array_of(arr)) {
    TemplatePiece p{};
    if (auto seq = json::field(item, "Sequence")) {
      p.is_sequence = true;
      std::string id = json::get_string(*seq, "id", where + " Sequence");
      if (id != "A" && id != "B") throw Error(where + ": Sequence id must be \"A\" or \"B\", found \"" + id + "\"");
      p.which = id == "A" ? 0 : 1;
      p.type_id = int32_t(json::opt_int(*seq, "type_id", where).value_or(0));
    } else if (auto sp = json::field(item, "SpecialToken")) {
      p.is_sequence = false;
      std::string id = json::get_string(*sp, "id", where + " SpecialToken");
      p.type_id = int32_t(json::opt_int(*sp, "type_id", where).value_or(0));
      auto entry = specials ? json::field(*specials, id.c_str()) : std::nullopt;
      if (entry) {
        auto ids = json::field(*entry, "ids");
        if (!ids || !ids->is_array()) throw Error(where + ": special_tokens[\"" + id + "\"].ids must be an array");
        for (auto x : json::array_of(*ids)) {
          if (!x.is_int64()) throw Error(where + ": special_tokens[\"" + id + "\"].ids must hold integers");
          p.ids.push_back(int32_t(x.get_int64().value_unsafe()));
        }
      } else {
        auto it = vocab.find(std::string_view(id));
        if (it == vocab.end()) throw Error(where + ": special token \"" + id + "\" is not defined");
        p.ids.push_back(it->second);
      }
    } else {
      throw Error(where + ": template items must be {\"Sequence\":…} or {\"SpecialToken\":…}");
    }
    out.push_back(std::move(p));
  }
  // A repeated sequence would break encode()'s max_length guarantee (truncation budgets one copy).
  for (int which : {0, 1})
    if (std::count_if(out.begin(), out.end(), [&](const TemplatePiece& p) { return p.is_sequence && p.which == which; }) > 1)
      throw Error(where + ": sequence " + (which ? "B" : "A") + " appears more than once; EmbedKit supports each at most once");
  return out;
}

std::vector<int32_t> decode_codepoints(std::string_view s) {
  std::vector<int32_t> out;
  size_t i = 0;
  while (i < s.size()) {
    int32_t cp = utf8::decode(s, i);
    if (cp < 0) throw Error("invalid UTF-8 in added token");
    out.push_back(cp);
  }
  return out;
}

bool is_word_char(int32_t cp) {
  return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_' ||
         (cp >= 0x80 && !unicode::is_whitespace(cp) && !unicode::bert_punctuation(cp));
}

}  // namespace

// ---------------------------------------------------------------- Tokenizer

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open tokenizer file");
  std::stringstream ss;
  ss << f.rdbuf();
  return from_json(ss.str(), path);
}

Tokenizer Tokenizer::from_json(const std::string& text, const std::string& what) {
  auto doc = json::parse_string(text, what);
  const Element& root = doc.root;
  if (!root.is_object()) throw Error(what + ": must be a JSON object");
  Tokenizer tk;

  // Model and vocabulary.
  auto model = json::field(root, "model");
  if (!model || !model->is_object()) throw Error(what + ": missing object \"model\"");
  std::string mtype = json::opt_string(*model, "type", what + ": model").value_or("");
  int32_t max_id = -1;
  if (mtype == "BPE") {
    tk.model_ = make_bpe_model(*model, what, tk.vocab_);
    for (auto& [tok, id] : tk.vocab_) max_id = std::max(max_id, id);
  } else if (mtype == "WordPiece") {
    tk.model_ = parse_wordpiece(*model, what, tk.vocab_);
    for (auto& [tok, id] : tk.vocab_) max_id = std::max(max_id, id);
  } else {
    throw Error(what + ": unsupported tokenizer model type \"" + mtype + "\" (supported: WordPiece, BPE)");
  }

  // Added tokens (matched in the text before the model runs).
  if (auto added = json::field(root, "added_tokens"); added && !added->is_null()) {
    if (!added->is_array()) throw Error(what + ": \"added_tokens\" must be an array");
    for (auto a : json::array_of(*added)) {
      std::string where = what + ": added_tokens entry";
      AddedToken t;
      int64_t id = json::get_int(a, "id", where);
      if (id < 0 || id > (1 << 24)) throw Error(where + ": id out of range");
      t.id = int32_t(id);
      t.content = json::get_string(a, "content", where);
      if (t.content.empty()) throw Error(where + " id " + std::to_string(id) + ": empty content");
      if (utf8::first_invalid(t.content) != std::string_view::npos) throw Error(where + ": content is not UTF-8");
      t.special = json::opt_bool(a, "special", where).value_or(false);
      t.single_word = json::opt_bool(a, "single_word", where).value_or(false);
      t.lstrip = json::opt_bool(a, "lstrip", where).value_or(false);
      t.rstrip = json::opt_bool(a, "rstrip", where).value_or(false);
      t.normalized = json::opt_bool(a, "normalized", where).value_or(!t.special);
      tk.vocab_.emplace(t.content, t.id);
      max_id = std::max(max_id, t.id);
      tk.added_.push_back(std::move(t));
    }
  }
  tk.id_to_token_.assign(size_t(max_id + 1), std::string());
  for (auto& [tok, id] : tk.vocab_) tk.id_to_token_[size_t(id)] = tok;
  for (auto& a : tk.added_) tk.id_to_token_[size_t(a.id)] = a.content;

  if (auto n = json::field(root, "normalizer")) tk.normalizer_ = parse_normalizer(*n, what);
  if (auto p = json::field(root, "pre_tokenizer")) tk.pre_tokenizer_ = parse_pre_tokenizer(*p, what);

  // Post-processor → templates for one and two sequences.
  if (auto pp = json::field(root, "post_processor"); pp && !pp->is_null()) {
    std::string where = what + ": post_processor";
    std::string type = component_type(*pp, where);
    if (type == "TemplateProcessing") {
      auto specials = json::field(*pp, "special_tokens");
      auto single = json::field(*pp, "single");
      auto pair = json::field(*pp, "pair");
      if (!single || !pair) throw Error(where + ": TemplateProcessing needs \"single\" and \"pair\"");
      tk.single_ = parse_template(*single, specials, where + ".single", tk.vocab_);
      tk.pair_ = parse_template(*pair, specials, where + ".pair", tk.vocab_);
    } else if (type == "BertProcessing" || type == "RobertaProcessing") {
      auto tok_id = [&](const char* key) {
        auto e = json::field(*pp, key);
        if (!e || !e->is_array() || json::array_of(*e).size() != 2)
          throw Error(where + ": \"" + std::string(key) + "\" must be [token, id]");
        auto v = json::array_of(*e).at(1);
        if (v.error() || !v.value_unsafe().is_int64()) throw Error(where + ": \"" + std::string(key) + "\" id must be an integer");
        return int32_t(v.value_unsafe().get_int64().value_unsafe());
      };
      int32_t cls = tok_id("cls"), sep = tok_id("sep");
      if (type == "BertProcessing") {
        tk.single_ = {{false, 0, {cls}, 0}, {true, 0, {}, 0}, {false, 0, {sep}, 0}};
        tk.pair_ = {{false, 0, {cls}, 0}, {true, 0, {}, 0}, {false, 0, {sep}, 0}, {true, 1, {}, 1}, {false, 0, {sep}, 1}};
      } else {  // RobertaProcessing: <s> A </s> and <s> A </s></s> B </s>, all type id 0
        tk.single_ = {{false, 0, {cls}, 0}, {true, 0, {}, 0}, {false, 0, {sep}, 0}};
        tk.pair_ = {{false, 0, {cls}, 0}, {true, 0, {}, 0}, {false, 0, {sep, sep}, 0}, {true, 1, {}, 0}, {false, 0, {sep}, 0}};
        tk.trim_offsets_ = json::opt_bool(*pp, "trim_offsets", where).value_or(true);
      }
    } else if (type == "ByteLevel") {  // adds no tokens; at most trims offsets
      tk.single_ = {{true, 0, {}, 0}};
      tk.pair_ = {{true, 0, {}, 0}, {true, 1, {}, 1}};
      tk.trim_offsets_ = json::opt_bool(*pp, "trim_offsets", where).value_or(true);
    } else {
      throw Error(where + ": unsupported post-processor type \"" + type +
                  "\" (supported: TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel)");
    }
  } else {
    tk.single_ = {{true, 0, {}, 0}};
    tk.pair_ = {{true, 0, {}, 0}, {true, 1, {}, 1}};
  }
  for (auto* tpl : {&tk.single_, &tk.pair_})
    for (auto& p : *tpl)
      for (int32_t id : p.ids)
        if (id < 0 || size_t(id) >= tk.id_to_token_.size())
          throw Error(what + ": post_processor special token id " + std::to_string(id) + " is outside the vocabulary");
  return tk;
}

// Splits chars [0, t.size()) on occurrences of added tokens (leftmost-longest, as HF's
// Aho-Corasick matcher), for those whose `normalized` flag equals `normalized_pass`.
// Emits pieces [b,e) with piece_ids = token id, or -1 for text between tokens.
static void split_on_added(const NormalizedText& t, const std::vector<AddedToken>& added,
                           const std::vector<std::vector<int32_t>>& added_cps, bool normalized_pass,
                           std::vector<std::pair<uint32_t, uint32_t>>& pieces, std::vector<int32_t>& ids) {
  uint32_t n = uint32_t(t.size()), last = 0, i = 0;
  // First code points of this pass's added tokens: most positions start none (BERT's all start
  // with '['), and are skipped with one test instead of a loop over the added tokens.
  uint64_t ascii_first[2] = {0, 0};
  std::vector<int32_t> other_first;
  for (size_t k = 0; k < added.size(); ++k) {
    if (added[k].normalized != normalized_pass || added_cps[k].empty()) continue;
    const int32_t c = added_cps[k][0];
    if (c >= 0 && c < 128) ascii_first[c / 64] |= uint64_t(1) << (c % 64);
    else other_first.push_back(c);
  }
  auto may_start = [&](int32_t c) {
    if (c >= 0 && c < 128) return (ascii_first[c / 64] >> (c % 64) & 1) != 0;
    return std::find(other_first.begin(), other_first.end(), c) != other_first.end();
  };
  while (i < n) {
    if (!may_start(t[i].cp)) { ++i; continue; }
    int best = -1;
    size_t best_len = 0;
    for (size_t k = 0; k < added.size(); ++k) {
      if (added[k].normalized != normalized_pass) continue;
      const auto& cps = added_cps[k];
      if (cps.size() <= best_len || cps[0] != t[i].cp || i + cps.size() > n) continue;
      bool ok = true;
      for (size_t j = 1; ok && j < cps.size(); ++j) ok = t[i + j].cp == cps[j];
      if (!ok) continue;
      if (added[k].single_word) {
        uint32_t e = i + uint32_t(cps.size());
        if ((i > 0 && is_word_char(t[i - 1].cp)) || (e < n && is_word_char(t[e].cp))) continue;
      }
      best = int(k);
      best_len = cps.size();
    }
    if (best < 0) { ++i; continue; }
    uint32_t s = i, e = i + uint32_t(best_len);
    if (added[best].lstrip) while (s > last && unicode::is_whitespace(t[s - 1].cp)) --s;
    if (added[best].rstrip) while (e < n && unicode::is_whitespace(t[e].cp)) ++e;
    if (s > last) { pieces.push_back({last, s}); ids.push_back(-1); }
    pieces.push_back({s, e});
    ids.push_back(added[best].id);
    last = i = e;
  }
  if (last < n) { pieces.push_back({last, n}); ids.push_back(-1); }
}

Encoding Tokenizer::encode_raw(std::string_view text) const {
  // Decode (validating) into chars that carry their byte range.
  NormalizedText raw;
  raw.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    size_t at = i;
    int32_t cp = utf8::decode(text, i);
    if (cp < 0) throw Error("invalid UTF-8 at byte offset " + std::to_string(at));
    raw.push_back({cp, uint32_t(at), uint32_t(i)});
  }
  // Added tokens as code points (small; computed per call to keep Tokenizer trivially movable).
  // Cached per thread, keyed by the contents: a tokenizer built where a destroyed one lived has
  // the same `this`, so the address alone would reuse the old tokenizer's added tokens.
  thread_local std::vector<std::string> cached_contents;
  thread_local std::vector<std::vector<int32_t>> added_cps;
  bool stale = cached_contents.size() != added_.size();
  for (size_t k = 0; !stale && k < added_.size(); ++k) stale = cached_contents[k] != added_[k].content;
  if (stale) {
    added_cps.clear();
    cached_contents.clear();
    for (auto& a : added_) {
      added_cps.push_back(decode_codepoints(a.content));
      cached_contents.push_back(a.content);
    }
  }
  Encoding out;
  std::vector<std::pair<uint32_t, uint32_t>> pieces, pieces2, words;
  std::vector<int32_t> ids, ids2;
  split_on_added(raw, added_, added_cps, false, pieces, ids);
  NormalizedText norm;
  for (size_t p = 0; p < pieces.size(); ++p) {
    auto [b, e] = pieces[p];
    if (ids[p] >= 0) {
      out.ids.push_back(ids[p]);
      out.offsets.push_back({raw[b].start, raw[e - 1].end});
      continue;
    }
    norm.assign(raw.begin() + b, raw.begin() + e);
    if (normalizer_) normalizer_->apply(norm);
    pieces2.clear();
    ids2.clear();
    split_on_added(norm, added_, added_cps, true, pieces2, ids2);
    for (size_t q = 0; q < pieces2.size(); ++q) {
      auto [b2, e2] = pieces2[q];
      if (ids2[q] >= 0) {
        out.ids.push_back(ids2[q]);
        out.offsets.push_back({norm[b2].start, norm[e2 - 1].end});
        continue;
      }
      NormalizedText sub(norm.begin() + b2, norm.begin() + e2);
      words.clear();
      if (pre_tokenizer_) pre_tokenizer_->split(sub, words);
      else if (!sub.empty()) words.push_back({0u, uint32_t(sub.size())});
      if (pre_tokenizer_ && pre_tokenizer_->transforms()) {
        NormalizedText word;
        for (auto [wb, we] : words) {
          if (we <= wb) continue;
          word.assign(sub.begin() + wb, sub.begin() + we);
          pre_tokenizer_->transform(word);
          model_->tokenize(word, 0, uint32_t(word.size()), out);
        }
      } else {
        for (auto [wb, we] : words)
          if (we > wb) model_->tokenize(sub, wb, we, out);
      }
    }
  }
  if (trim_offsets_) {
    // HF ByteLevel process_offsets: leading/trailing spaces (Ġ, U+0120) of a token leave its offsets.
    for (size_t k = 0; k < out.ids.size(); ++k) {
      std::string_view tok = id_to_token(out.ids[k]);
      constexpr std::string_view kSpace = "\xC4\xA0";  // U+0120, ByteLevel's char for ' '
      size_t lead = 0, trail = 0;
      for (std::string_view r = tok; r.starts_with(kSpace); r.remove_prefix(2)) ++lead;
      for (std::string_view r = tok; r.ends_with(kSpace); r.remove_suffix(2)) ++trail;
      auto& [b, e] = out.offsets[k];
      if (lead > 0) b = std::min<uint32_t>(b + uint32_t(lead), e);
      if (trail > 0 && e >= trail) e = std::max<uint32_t>(e - uint32_t(trail), b);
    }
  }
  out.type_ids.assign(out.ids.size(), 0);
  out.special.assign(out.ids.size(), 0);
  return out;
}

size_t Tokenizer::num_special_tokens(bool pair) const {
  size_t n = 0;
  for (auto& p : pair ? pair_ : single_) n += p.ids.size();
  return n;
}

static void truncate_to(Encoding& e, size_t n) {
  if (e.size() <= n) return;
  e.ids.resize(n);
  e.type_ids.resize(n);
  e.offsets.resize(n);
  e.special.resize(n);
}

void Tokenizer::post_process(Encoding* a, Encoding* b, Encoding& out) const {
  const auto& tpl = b ? pair_ : single_;
  for (const auto& p : tpl) {
    if (p.is_sequence) {
      Encoding* src = p.which == 0 ? a : b;
      if (!src) continue;
      out.ids.insert(out.ids.end(), src->ids.begin(), src->ids.end());
      out.offsets.insert(out.offsets.end(), src->offsets.begin(), src->offsets.end());
      out.type_ids.insert(out.type_ids.end(), src->ids.size(), p.type_id);
      out.special.insert(out.special.end(), src->ids.size(), 0);
    } else {
      for (int32_t id : p.ids) {
        out.ids.push_back(id);
        out.offsets.push_back({0, 0});
        out.type_ids.push_back(p.type_id);
        out.special.push_back(1);
      }
    }
  }
}

Encoding Tokenizer::encode(std::string_view text, bool add_special_tokens, size_t max_length) const {
  Encoding a = encode_raw(text);
  if (max_length > 0) {
    size_t extra = add_special_tokens ? num_special_tokens(false) : 0;
    truncate_to(a, max_length > extra ? max_length - extra : 0);
  }
  if (!add_special_tokens) return a;
  Encoding out;
  post_process(&a, nullptr, out);
  return out;
}

Encoding Tokenizer::encode_pair(std::string_view ta, std::string_view tb, bool add_special_tokens,
                                size_t max_length) const {
  Encoding a = encode_raw(ta), b = encode_raw(tb);
  if (max_length > 0) {
    // "longest_first" as HF tokenizers' truncate_encodings: share the budget, trimming the longer.
    size_t extra = add_special_tokens ? num_special_tokens(true) : 0;
    size_t budget = max_length > extra ? max_length - extra : 0;
    if (a.size() + b.size() > budget) {
      size_t n1 = a.size(), n2 = b.size();
      bool swapped = n1 > n2;
      if (swapped) std::swap(n1, n2);
      n2 = n1 > budget ? n1 : std::max(n1, budget - n1);
      if (n1 + n2 > budget) {
        n1 = budget / 2;
        n2 = n1 + budget % 2;
      }
      if (swapped) std::swap(n1, n2);
      truncate_to(a, n1);
      truncate_to(b, n2);
    }
  }
  b.type_ids.assign(b.size(), 1);
  if (!add_special_tokens) {
    Encoding out = a;
    out.ids.insert(out.ids.end(), b.ids.begin(), b.ids.end());
    out.type_ids.insert(out.type_ids.end(), b.type_ids.begin(), b.type_ids.end());
    out.offsets.insert(out.offsets.end(), b.offsets.begin(), b.offsets.end());
    out.special.insert(out.special.end(), b.special.begin(), b.special.end());
    return out;
  }
  Encoding out;
  post_process(&a, &b, out);
  return out;
}

const std::string& Tokenizer::id_to_token(int32_t id) const {
  static const std::string empty;
  if (id < 0 || size_t(id) >= id_to_token_.size()) return empty;
  return id_to_token_[size_t(id)];
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

}  // namespace embedkit
