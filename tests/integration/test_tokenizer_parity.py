"""Tokenizer parity: `embedkit tokenize --raw` gives the same ids (and the same offsets, once
converted from our byte offsets to Python's character offsets) as HF `tokenizers` on every line
of a real-text corpus built from text on this machine (tools/build_corpus.py), >= 20,000 lines."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
MIN_LINES = 20_000


@pytest.fixture(scope="module")
def corpus_lines():
    out = ROOT / "build" / "corpus" / "lines.txt"
    if not out.exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / "build_corpus.py"), "--out", str(out.parent)], check=True)
    lines = [l for l in out.read_text(encoding="utf-8").split("\n") if l]
    assert len(lines) >= MIN_LINES, f"corpus has only {len(lines)} lines"
    return lines


def byte_to_char_offsets(text):
    """Map from UTF-8 byte offset to character index."""
    table = {}
    pos = 0
    for i, ch in enumerate(text):
        table[pos] = i
        pos += len(ch.encode("utf-8"))
    table[pos] = len(text)
    return table


def run_tokenize(embedkit_bin, model_dir, texts, tmp_path):
    inp = tmp_path / "in.jsonl"
    with open(inp, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    res = subprocess.run([str(embedkit_bin), "tokenize", "--raw", "-m", str(model_dir), "--jsonl", "-i", str(inp)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return [json.loads(l) for l in res.stdout.splitlines()]


def test_ids_and_offsets_match_hf_tokenizers(embedkit_bin, minilm_dir, corpus_lines, tmp_path):
    ref_tok = Tokenizer.from_file(str(Path(minilm_dir) / "tokenizer.json"))
    ref_tok.no_truncation()
    ref_tok.no_padding()
    refs = ref_tok.encode_batch(corpus_lines)
    ours = run_tokenize(embedkit_bin, minilm_dir, corpus_lines, tmp_path)
    assert len(ours) == len(corpus_lines)
    id_mismatch, off_mismatch = [], []
    for i, (text, ref, got) in enumerate(zip(corpus_lines, refs, ours)):
        if got["ids"] != ref.ids:
            id_mismatch.append((i, text[:80], got["ids"][:12], ref.ids[:12]))
            continue
        b2c = byte_to_char_offsets(text)
        got_off = [(b2c[s], b2c[e]) for s, e in got["offsets"]]
        if got_off != [tuple(o) for o in ref.offsets]:
            off_mismatch.append((i, text[:80]))
    print(f"{len(corpus_lines)} lines, {sum(len(r.ids) for r in refs)} tokens, "
          f"{len(id_mismatch)} id mismatches, {len(off_mismatch)} offset mismatches")
    assert not id_mismatch, f"{len(id_mismatch)} lines differ, first: {id_mismatch[:5]}"
    assert not off_mismatch, f"{len(off_mismatch)} lines with different offsets, first: {off_mismatch[:5]}"


def test_truncation_matches_transformers_call(embedkit_bin, minilm_dir, corpus_lines, tmp_path):
    """sentence-transformers (6.2) passes each text as is (no strip) and truncates to max_seq_length
    (256) with specials; surrounding whitespace is dropped by the BERT pre-tokenizer."""
    ref_tok = Tokenizer.from_file(str(Path(minilm_dir) / "tokenizer.json"))
    ref_tok.enable_truncation(max_length=256)
    ref_tok.no_padding()
    long_lines = sorted(corpus_lines, key=len, reverse=True)[:300] + [" padded text \t", "\u3000x\u2003"]
    refs = ref_tok.encode_batch(long_lines)
    inp = tmp_path / "long.jsonl"
    with open(inp, "w", encoding="utf-8") as f:
        for t in long_lines:
            f.write(json.dumps({"text": t}) + "\n")
    res = subprocess.run([str(embedkit_bin), "tokenize", "-m", str(minilm_dir), "--jsonl", "-i", str(inp)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ours = [json.loads(l)["ids"] for l in res.stdout.splitlines()]
    assert any(len(r.ids) == 256 for r in refs)
    for t, r, o in zip(long_lines, refs, ours):
        assert o == r.ids, t[:80]
