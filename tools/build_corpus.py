#!/usr/bin/env python3
"""Build a multilingual real-text corpus from files already present on a Debian machine.

Produces ``DIR/lines.txt``: one text per line (UTF-8, ``\\n``-terminated), every
line unique and non-blank, at most 2,000 characters.  The corpus is the input
for EmbedKit's tokenizer / embedding fidelity tests, fuzzing seeds and
benchmarks, so it deliberately mixes:

* translated UI messages from gettext catalogs
  (``/usr/share/locale/*/LC_MESSAGES/*.mo``, parsed by a small pure-Python
  .mo reader, no ``msgunfmt`` needed) -- many languages and scripts
  (Latin with diacritics, Cyrillic, Greek, CJK, kana, Hangul, Arabic, Hebrew,
  Devanagari, Thai, Georgian, ...);
* localized and English man pages (``/usr/share/man``, troff markup stripped);
* Debian changelogs / READMEs / NEWS (``/usr/share/doc``);
* license texts (``/usr/share/common-licenses``);
* Python standard-library source lines (code, docstrings, comments);
* small numeric tables (``/etc/services``, ``/etc/protocols``, tz tables).

Why not download a corpus?  CI and developer machines may be offline; every
Debian 12 machine with the ``gettext`` package installed has enough text for
>= 25,000 lines.  The output is deterministic: sources are visited in sorted
order, lines are de-duplicated in first-seen order, capped per source with a
fixed-seed sample and finally shuffled with a fixed seed, so two runs on the
same machine give a byte-identical file.  (Different machines with different
installed packages will of course give different corpora.)

At the end it prints the number of lines taken from each source and the
number of lines containing each Unicode script.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import re
import struct
import sys
import sysconfig
import time
import unicodedata
from collections import Counter
from pathlib import Path

MAX_LINE_CHARS = 2000
MIN_LINES = 25_000

# Default maximum number of lines kept from each source (after de-duplication).
DEFAULT_CAPS = {
    "mo": 70_000,
    "man": 25_000,
    "doc": 15_000,
    "licenses": 5_000,
    "python": 15_000,
    "tables": 3_000,
}

# Characters that would make the file ambiguous for line-based readers
# (anything Python's str.splitlines() treats as a break, NUL, other C0/C1
# controls except TAB).  Lines containing them are dropped.
_BAD_CHARS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ufffd\ud800-\udfff]")


# Filesystem root the sources are read from (see --root).
ROOT = Path("/")


def R(abs_path: str) -> Path:
    """Path of an absolute system path below ROOT."""
    return ROOT / abs_path.lstrip("/")


# --------------------------------------------------------------------------
# helpers


def clean_lines(text: str):
    """Split text on '\\n' and yield acceptable lines (capped, not blank)."""
    for line in text.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS]
        if _BAD_CHARS.search(line):
            continue
        yield line


def decode_bytes(data: bytes) -> str:
    """Decode UTF-8; undecodable lines are dropped (not guessed)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        out = []
        for raw in data.split(b"\n"):
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                pass
        return "\n".join(out)


def read_maybe_gz(path: Path, limit: int = 4 << 20) -> bytes:
    """Read up to `limit` bytes of a plain or gzip-compressed file."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read(limit)
        with open(path, "rb") as f:
            return f.read(limit)
    except (OSError, EOFError, gzip.BadGzipFile):
        return b""


def sorted_files(root: Path, patterns):
    """All regular files below root matching any glob pattern, sorted."""
    found = set()
    if not root.is_dir():
        return []
    for pat in patterns:
        for p in root.glob(pat):
            try:
                if p.is_file() and not p.is_symlink():
                    found.add(p)
            except OSError:
                pass
    return sorted(found)


def fair_sample(groups: dict, k: int, seed: int):
    """Pick at most k lines spread as evenly as possible over the groups.

    `groups` maps a group name (language, package, file) to its line list.
    Small groups are taken whole; the remaining budget is split equally
    among the larger ones ("water filling"), so that e.g. a language with
    few translations is not drowned out by one with huge catalogs.
    """
    names = sorted(groups, key=lambda g: (len(groups[g]), g))
    out = []
    budget = k
    for i, g in enumerate(names):
        share = budget // (len(names) - i)
        take = spread_sample(groups[g], share, seed + i)
        budget -= len(take)
        out.extend(take)
    return out


def spread_sample(items, k: int, seed: int):
    """Deterministic subset of at most k items (keeps original order)."""
    items = list(items)
    if len(items) <= k:
        return items
    rng = random.Random(seed)
    idx = sorted(rng.sample(range(len(items)), k))
    return [items[i] for i in idx]


# --------------------------------------------------------------------------
# gettext .mo parser (format: GNU gettext manual, "The Format of GNU MO Files")

_CHARSET_RE = re.compile(rb"charset=([A-Za-z0-9_.:-]+)", re.I)


def parse_mo(data: bytes):
    """Return a list of (msgid, msgstr) byte pairs and the catalog charset.

    Raises ValueError for files that are not .mo catalogs.
    """
    if len(data) < 28:
        raise ValueError("too short for a .mo file")
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0x950412DE:
        end = "<"
    elif magic == 0xDE120495:
        end = ">"
    else:
        raise ValueError("bad .mo magic 0x%08x" % magic)
    _rev, n, orig_off, trans_off = struct.unpack(end + "4I", data[4:20])
    if orig_off + 8 * n > len(data) or trans_off + 8 * n > len(data):
        raise ValueError("truncated .mo tables")
    pairs = []
    charset = "utf-8"
    for i in range(n):
        olen, opos = struct.unpack_from(end + "2I", data, orig_off + 8 * i)
        tlen, tpos = struct.unpack_from(end + "2I", data, trans_off + 8 * i)
        if opos + olen > len(data) or tpos + tlen > len(data):
            raise ValueError("string out of bounds")
        msgid = data[opos:opos + olen]
        msgstr = data[tpos:tpos + tlen]
        if not msgid:  # header entry
            m = _CHARSET_RE.search(msgstr)
            if m:
                charset = m.group(1).decode("ascii").lower()
            continue
        pairs.append((msgid, msgstr))
    if charset in ("charset", "", "none"):
        charset = "utf-8"
    return pairs, charset


def source_mo(caps_seed: int):
    """Translated strings (msgstr) and, once, their English msgids."""
    roots = [R("/usr/share/locale"), R("/usr/share/locale-langpack")]
    files = []
    for root in roots:
        files += sorted_files(root, ["*/LC_MESSAGES/*.mo"])
    for path in files:
        lang = path.parent.parent.name
        try:
            data = path.read_bytes()
            pairs, charset = parse_mo(data)
        except (OSError, ValueError):
            continue
        try:
            "".encode(charset)
        except LookupError:
            charset = "utf-8"
        for msgid, msgstr in pairs:
            # msgctxt is "ctx\x04msgid"; plural forms are NUL-separated.
            if b"\x04" in msgid:
                msgid = msgid.split(b"\x04", 1)[1]
            for part in msgstr.split(b"\x00"):
                try:
                    for line in clean_lines(part.decode(charset)):
                        yield lang, line
                except (UnicodeDecodeError, LookupError):
                    pass
            for part in msgid.split(b"\x00"):
                try:
                    for line in clean_lines(part.decode("utf-8")):
                        yield "msgid", line
                except UnicodeDecodeError:
                    pass


# --------------------------------------------------------------------------
# man pages (troff source -> plain-ish text)

_TROFF_ACCENTS = {":": "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302",
                  "~": "\u0303", ",": "\u0327", "o": "\u030a", "v": "\u030c"}
_TROFF_SPECIAL = {"ss": "\u00df", "ae": "\u00e6", "AE": "\u00c6", "o/": "\u00f8",
                  "O/": "\u00d8", "Fo": "\u00ab", "Fc": "\u00bb", "de": "\u00b0",
                  "mu": "\u00d7", "rg": "\u00ae", "tm": "\u2122", "hy": "-", "ti": "~",
                  "ha": "^", "rs": "\\", "dq": '"', "lq": "\u201c", "rq": "\u201d",
                  "oq": "\u2018", "cq": "\u2019", "aq": "'", "em": "\u2014", "en": "\u2013",
                  "bu": "\u2022", "co": "\u00a9", "<=": "\u2264", ">=": "\u2265",
                  "->": "\u2192", "<-": "\u2190", "pl": "+", "mi": "\u2212", "eq": "="}


def _troff_glyph(name: str) -> str:
    """Map a troff special-character name (\\(xx or \\[name]) to text."""
    if name in _TROFF_SPECIAL:
        return _TROFF_SPECIAL[name]
    if len(name) == 2 and name[0] in _TROFF_ACCENTS and name[1].isalpha():
        return unicodedata.normalize("NFC", name[1] + _TROFF_ACCENTS[name[0]])
    m = re.fullmatch(r"u([0-9A-Fa-f]{4,6})(_[0-9A-Fa-f]{4,6})*", name)
    if m:
        try:
            return unicodedata.normalize(
                "NFC", "".join(chr(int(h, 16)) for h in name[1:].split("_")))
        except (ValueError, OverflowError):
            return ""
    return ""


_TROFF_SUBS = [
    (re.compile(r"\\\((..)"), lambda m: _troff_glyph(m.group(1))),
    (re.compile(r"\\\[([^\]\s]*)\]"), lambda m: _troff_glyph(m.group(1))),
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),      # font changes
    (re.compile(r"\\s[+-]?\d+"), ""),                  # size changes
    (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\[ ~0]"), " "),
    (re.compile(r"\\[&|^%:]"), ""),
    (re.compile(r"\\[/,)]"), ""),                     # italic corrections
    (re.compile(r"\\(?=[^\x00-\x7f])"), ""),           # stray escape before non-ASCII
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\c$"), ""),
    (re.compile(r"\\\*\(..|\\\*\[[^\]]*\]|\\\*."), ""),  # string registers
    (re.compile(r"\\n\(..|\\n\[[^\]]*\]|\\n."), ""),     # number registers
]
_MACRO_WITH_TEXT = re.compile(r"^[.'](SH|SS|B|I|BI|BR|IB|IR|RB|RI|SM|TP|IP|Nm|Nd|Sh|Ss)\s+(.*)$")


def troff_to_text(src: str) -> str:
    out = []
    for line in src.split("\n"):
        if line.startswith(('.\\"', "'\\\"", '\\"')):
            continue
        if line.startswith((".", "'")):
            m = _MACRO_WITH_TEXT.match(line)
            if not m:
                continue
            line = m.group(2).replace('"', "")
        for rx, rep in _TROFF_SUBS:
            line = rx.sub(rep, line)
        out.append(line)
    return "\n".join(out)


def source_man(seed: int, max_files: int = 4000):
    root = R("/usr/share/man")
    if not root.is_dir():
        return
    # Localized pages first (language directories), then a sample of English.
    localized, english = [], []
    for p in sorted_files(root, ["*/man*/*", "man*/*"]):
        rel = p.relative_to(root).parts
        (english if rel[0].startswith("man") else localized).append(p)
    files = spread_sample(localized, max_files // 2, seed) + spread_sample(
        english, max_files // 2, seed + 1)
    for path in files:
        data = read_maybe_gz(path, 1 << 20)
        if not data or data.startswith(b".so "):
            continue
        rel = path.relative_to(root).parts
        lang = "en" if rel[0].startswith("man") else rel[0]
        for line in clean_lines(troff_to_text(decode_bytes(data))):
            yield lang, line


# --------------------------------------------------------------------------
# /usr/share/doc


def source_doc(seed: int, max_files: int = 1500):
    root = R("/usr/share/doc")
    names = re.compile(r"^(changelog(\.Debian)?(\.\w+)?|NEWS(\.Debian)?|README(\.Debian|\.md|\.txt)?|"
                       r"TODO|AUTHORS|THANKS|FAQ|copyright)(\.gz)?$", re.I)
    files = [p for p in sorted_files(root, ["*/*", "*/*/*"]) if names.match(p.name)]
    for path in spread_sample(files, max_files, seed):
        data = read_maybe_gz(path, 256 << 10)
        for line in clean_lines(decode_bytes(data)):
            yield path.parent.name, line


def source_licenses(_seed: int):
    for path in sorted_files(R("/usr/share/common-licenses"), ["*"]):
        for line in clean_lines(decode_bytes(read_maybe_gz(path))):
            yield path.name, line


def source_python(seed: int, max_files: int = 600):
    if ROOT == Path("/"):
        stdlib = Path(sysconfig.get_paths()["stdlib"])
    else:
        cands = sorted(R("/usr/lib").glob("python3.*"))
        if not cands:
            return
        stdlib = cands[-1]
    files = [p for p in sorted_files(stdlib, ["*.py", "*/*.py", "*/*/*.py"])
             if "site-packages" not in p.parts and "dist-packages" not in p.parts]
    for path in spread_sample(files, max_files, seed):
        data = read_maybe_gz(path, 512 << 10)
        for line in clean_lines(decode_bytes(data)):
            yield path.parent.name, line


def source_tables(_seed: int):
    paths = [R("/etc/services"), R("/etc/protocols"), R("/etc/ethertypes"),
             R("/usr/share/zoneinfo/zone1970.tab"), R("/usr/share/zoneinfo/zone.tab"),
             R("/usr/share/zoneinfo/iso3166.tab"), R("/usr/share/zoneinfo/tzdata.zi")]
    for path in paths:
        if path.is_file():
            for line in clean_lines(decode_bytes(read_maybe_gz(path))):
                yield path.name, line


SOURCES = [
    ("mo", source_mo),
    ("man", source_man),
    ("doc", source_doc),
    ("licenses", source_licenses),
    ("python", source_python),
    ("tables", source_tables),
]


# --------------------------------------------------------------------------
# script statistics

_SCRIPT_PREFIXES = [
    ("CJK", "CJK_HAN"), ("HIRAGANA", "KANA"), ("KATAKANA", "KANA"),
    ("HANGUL", "HANGUL"), ("LATIN", "LATIN"), ("CYRILLIC", "CYRILLIC"),
    ("GREEK", "GREEK"), ("ARABIC", "ARABIC"), ("HEBREW", "HEBREW"),
    ("DEVANAGARI", "DEVANAGARI"), ("BENGALI", "BENGALI"), ("GURMUKHI", "GURMUKHI"),
    ("GUJARATI", "GUJARATI"), ("ORIYA", "ORIYA"), ("TAMIL", "TAMIL"),
    ("TELUGU", "TELUGU"), ("KANNADA", "KANNADA"), ("MALAYALAM", "MALAYALAM"),
    ("SINHALA", "SINHALA"), ("THAI", "THAI"), ("LAO", "LAO"), ("TIBETAN", "TIBETAN"),
    ("MYANMAR", "MYANMAR"), ("GEORGIAN", "GEORGIAN"), ("ARMENIAN", "ARMENIAN"),
    ("ETHIOPIC", "ETHIOPIC"), ("KHMER", "KHMER"), ("MONGOLIAN", "MONGOLIAN"),
    ("THAANA", "THAANA"), ("SYRIAC", "SYRIAC"), ("CHEROKEE", "CHEROKEE"),
    ("CANADIAN", "CANADIAN_SYLLABICS"), ("TIFINAGH", "TIFINAGH"), ("SHAVIAN", "SHAVIAN"),
    ("OL CHIKI", "OL_CHIKI"), ("NKO", "NKO"), ("VAI", "VAI"),
]


def char_script(ch: str):
    """Coarse script name of a letter, or None for non-letters/unknown."""
    if ch < "\u0080":
        return "ASCII_LETTER" if ch.isalpha() else None
    cat = unicodedata.category(ch)
    if cat[0] not in "LM":
        if cat == "So" and ord(ch) >= 0x1F000:
            return "EMOJI"
        return None
    name = unicodedata.name(ch, "")
    for prefix, script in _SCRIPT_PREFIXES:
        if name.startswith(prefix):
            if script == "LATIN":
                return "LATIN_NON_ASCII"
            return script
    return "OTHER_LETTER"


def script_stats(lines):
    per_script = Counter()
    ascii_only = 0
    cache = {}
    for line in lines:
        scripts = set()
        for ch in line:
            s = cache.get(ch)
            if s is None and ch not in cache:
                s = cache[ch] = char_script(ch)
            if s:
                scripts.add(s)
        if line.isascii():
            ascii_only += 1
        per_script.update(scripts)
    return per_script, ascii_only


# --------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="Build DIR/lines.txt, a deterministic multilingual real-text corpus "
                    "(>= 25,000 unique lines) from gettext catalogs, man pages, "
                    "/usr/share/doc, licenses and Python stdlib sources of this Debian machine.",
        epilog="Example: python3 tools/build_corpus.py --out build/corpus",
    )
    ap.add_argument("--out", required=True, metavar="DIR",
                    help="output directory (created if missing); writes DIR/lines.txt")
    ap.add_argument("--seed", type=int, default=1234,
                    help="seed for file sampling, per-source capping and final shuffle (default 1234)")
    ap.add_argument("--cap", action="append", default=[], metavar="SOURCE=N",
                    help="override the per-source line cap, e.g. --cap mo=100000 "
                         "(sources: %s; defaults: %s)" % (
                             ", ".join(n for n, _ in SOURCES),
                             ", ".join("%s=%d" % kv for kv in DEFAULT_CAPS.items())))
    ap.add_argument("--root", default="/", metavar="DIR",
                    help="read system files below DIR instead of / (e.g. an unpacked "
                         "debootstrap tree; default /)")
    ap.add_argument("--min-lines", type=int, default=MIN_LINES,
                    help="fail (exit 1) if fewer unique lines are found (default %d)" % MIN_LINES)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    caps = dict(DEFAULT_CAPS)
    for item in args.cap:
        name, _, val = item.partition("=")
        if name not in caps or not val.isdigit():
            sys.exit("error: bad --cap %r; expected SOURCE=N with SOURCE in %s"
                     % (item, ", ".join(caps)))
        caps[name] = int(val)

    global ROOT
    ROOT = Path(args.root)
    if not ROOT.is_dir():
        sys.exit("error: --root %s is not a directory" % ROOT)

    t0 = time.time()
    seen = set()
    collected = {}
    for i, (name, fn) in enumerate(SOURCES):
        ts = time.time()
        groups = {}
        found = 0
        for group, line in fn(args.seed + 101 * i):
            if line not in seen:
                seen.add(line)
                groups.setdefault(group, []).append(line)
                found += 1
        collected[name] = (groups, found, time.time() - ts)

    # Sources that have fewer lines than their cap (small machines) pass the
    # unused budget on to sources that have more, so the total stays near
    # sum(caps) whenever the machine has that much text.
    quota = {name: min(found, caps[name]) for name, (_, found, _) in collected.items()}
    deficit = sum(caps.values()) - sum(quota.values())
    hungry = sorted((found - quota[name], name) for name, (_, found, _) in collected.items()
                    if found > quota[name] and caps[name] > 0)
    for j, (leftover, name) in enumerate(hungry):
        extra = min(leftover, deficit // (len(hungry) - j))
        quota[name] += extra
        deficit -= extra

    kept_per_source = {}
    all_lines = []
    for i, (name, (groups, found, secs)) in enumerate(collected.items()):
        fresh = fair_sample(groups, quota[name], args.seed + 7 * i)
        kept_per_source[name] = (found, len(fresh), secs)
        all_lines.extend(fresh)

    random.Random(args.seed).shuffle(all_lines)

    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / "lines.txt.tmp"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for line in all_lines:
                f.write(line)
                f.write("\n")
        os.replace(tmp, out_dir / "lines.txt")
    except OSError as e:
        sys.exit("error: cannot write %s/lines.txt: %s" % (out_dir, e))

    print("source      unique-found      kept   seconds")
    for name, (found, kept, secs) in kept_per_source.items():
        print("%-10s %13d %9d %9.1f" % (name, found, kept, secs))
    print("%-10s %13s %9d %9.1f" % ("TOTAL", "", len(all_lines), time.time() - t0))

    per_script, ascii_only = script_stats(all_lines)
    print("\nlines containing each script (a line may count for several):")
    print("  %-20s %8d" % ("(pure ASCII lines)", ascii_only))
    for script, n in sorted(per_script.items(), key=lambda kv: (-kv[1], kv[0])):
        print("  %-20s %8d" % (script, n))
    print("\nwrote %s/lines.txt (%d lines)" % (out_dir, len(all_lines)))

    if len(all_lines) < args.min_lines:
        print("error: only %d unique lines found, need >= %d. Install more text "
              "(e.g. apt-get install gettext man-db manpages) or lower --min-lines."
              % (len(all_lines), args.min_lines), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
