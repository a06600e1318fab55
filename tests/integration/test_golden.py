"""Embedding fidelity against sentence-transformers: fixtures in tests/golden were produced by
tools/make_golden.py (sentence-transformers, CPU fp32) on tests/golden/texts.json. Every text:
cosine >= 0.99999 and max |delta| <= 1e-4. Models: the real all-MiniLM-L6-v2 (mean pooling) and a
random-initialised BERT at bge-small-en-v1.5's config with CLS pooling (regenerated bit-identically
by tools/make_random_bert.py --seed 0)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
COS_MIN, ABS_MAX = 0.99999, 1e-4


@pytest.fixture(scope="module")
def texts():
    t = json.loads((GOLDEN / "texts.json").read_text(encoding="utf-8"))
    assert len(t) >= 300
    return t


@pytest.fixture(scope="module")
def random_bert_dir():
    out = ROOT / "build" / "models" / "random-bert-cls"
    if not (out / "model.safetensors").exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_random_bert.py"), "--out", str(out), "--seed", "0"],
                       check=True)
    return out


def embed(embedkit_bin, model_dir, texts, tmp_path, *extra, env=None):
    inp = tmp_path / "texts.jsonl"
    with open(inp, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    out = tmp_path / "out.npy"
    res = subprocess.run([str(embedkit_bin), "embed", "-m", str(model_dir), "--jsonl", "-i", str(inp), "-f", "npy",
                          "-o", str(out), *extra], capture_output=True, text=True,
                         env={**os.environ, **env} if env else None)
    assert res.returncode == 0, res.stderr
    return np.load(out)


def compare(ours, ref, texts):
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    dmax = np.abs(ours - ref).max(1)
    worst = int(np.argmin(cos))
    print(f"{len(texts)} texts: min cosine {cos.min():.8f}, max |delta| {dmax.max():.2e} (worst text {worst})")
    bad = [(i, texts[i][:60], float(cos[i]), float(dmax[i])) for i in range(len(texts))
           if cos[i] < COS_MIN or dmax[i] > ABS_MAX]
    assert not bad, f"{len(bad)} texts outside the bars, first: {bad[:5]}"


def test_minilm_matches_sentence_transformers(embedkit_bin, minilm_dir, texts, tmp_path):
    compare(embed(embedkit_bin, minilm_dir, texts, tmp_path), np.load(GOLDEN / "all-MiniLM-L6-v2.npy"), texts)


def test_cls_pooling_bert_matches_sentence_transformers(embedkit_bin, random_bert_dir, texts, tmp_path):
    compare(embed(embedkit_bin, random_bert_dir, texts, tmp_path), np.load(GOLDEN / "random-bert-cls.npy"), texts)


def test_prompt_name_matches_sentence_transformers(embedkit_bin, random_bert_dir, texts, tmp_path):
    ours = embed(embedkit_bin, random_bert_dir, texts, tmp_path, "--prompt-name", "query")
    compare(ours, np.load(GOLDEN / "random-bert-cls.query.npy"), texts)


def test_pipelined_batches_match(embedkit_bin, random_bert_dir, texts, tmp_path):
    # The batcher's pipelined executor (batch i+1 submitted before batch i is collected: the GPU
    # default), forced on the CPU with EMBEDKIT_PIPELINE=2, over many small batches with a prompt
    # that pooling skips: every row where it belongs, equal to the one-batch-at-a-time run. Full
    # batches go beside the one in flight; with EMBEDKIT_OVERLAP_MIN_TOKENS=0 any batch does.
    extra = ("--batch-tokens", "512", "--prompt-name", "query")
    piped = embed(embedkit_bin, random_bert_dir, texts, tmp_path, *extra, env={"EMBEDKIT_PIPELINE": "2"})
    eager = embed(embedkit_bin, random_bert_dir, texts, tmp_path, *extra,
                  env={"EMBEDKIT_PIPELINE": "2", "EMBEDKIT_OVERLAP_MIN_TOKENS": "0"})
    serial = embed(embedkit_bin, random_bert_dir, texts, tmp_path, *extra, env={"EMBEDKIT_PIPELINE": "1"})
    compare(piped, np.load(GOLDEN / "random-bert-cls.query.npy"), texts)
    assert np.array_equal(piped, serial)
    assert np.array_equal(eager, serial)


def test_text_alone_equals_text_in_batch(embedkit_bin, minilm_dir, texts, tmp_path):
    batch = embed(embedkit_bin, minilm_dir, texts, tmp_path)
    for i in (0, 7, len(texts) // 2, len(texts) - 1):
        alone = embed(embedkit_bin, minilm_dir, [texts[i]], tmp_path)[0]
        assert float(alone @ batch[i]) / np.linalg.norm(alone) / np.linalg.norm(batch[i]) >= 0.999999


def test_matryoshka_dimensions_truncate_then_renormalize(embedkit_bin, minilm_dir, texts, tmp_path):
    full = embed(embedkit_bin, minilm_dir, texts[:20], tmp_path)
    short = embed(embedkit_bin, minilm_dir, texts[:20], tmp_path, "--dimensions", "64")
    assert short.shape == (20, 64)
    ref = full[:, :64] / np.maximum(np.linalg.norm(full[:, :64], axis=1, keepdims=True), 1e-12)
    assert np.abs(short - ref).max() < 1e-6
