"""Qwen3-Embedding path against sentence-transformers 6.2 / transformers (CPU fp32): a tiny
random-initialised Qwen3 (tools/make_random_qwen3.py --preset tiny --seed 0: 2 layers, GQA 4/2
heads, head_dim 32, RoPE θ 1e6, the real Qwen3 tokenizer, last-token pooling, Normalize,
max_seq_length 2048) on tests/golden/texts.json (1 to 4,419 tokens, so truncation too). Fixtures
from tools/make_golden.py. Bars: cosine >= 0.99999 and max |delta| <= 1e-4 per text."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_golden import GOLDEN, compare, embed, texts  # noqa: F401 (fixture)
from test_qwen3_tokenizer import qwen3_tokenizer_dir  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
EOS = 151643


def make_model(out, tokenizer_dir, *extra):
    if not (out / "model.safetensors").exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_random_qwen3.py"), "--out", str(out), "--preset", "tiny",
                        "--seed", "0", "--tokenizer-dir", str(tokenizer_dir), *extra], check=True)
    return out


@pytest.fixture(scope="module")
def qwen3_tiny_dir(qwen3_tokenizer_dir):
    return make_model(ROOT / "build" / "models" / "random-qwen3-tiny", qwen3_tokenizer_dir)


def test_qwen3_matches_sentence_transformers(embedkit_bin, qwen3_tiny_dir, texts, tmp_path):
    compare(embed(embedkit_bin, qwen3_tiny_dir, texts, tmp_path), np.load(GOLDEN / "random-qwen3-tiny.npy"), texts)


def test_qwen3_query_prompt_matches_sentence_transformers(embedkit_bin, qwen3_tiny_dir, texts, tmp_path):
    ours = embed(embedkit_bin, qwen3_tiny_dir, texts, tmp_path, "--prompt-name", "query")
    compare(ours, np.load(GOLDEN / "random-qwen3-tiny.query.npy"), texts)


def test_qwen3_matryoshka_dimensions(embedkit_bin, qwen3_tiny_dir, texts, tmp_path):
    """--dimensions keeps the first N dims of sentence-transformers' embedding and re-normalizes."""
    ref = np.load(GOLDEN / "random-qwen3-tiny.npy")[:, :32]
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    ours = embed(embedkit_bin, qwen3_tiny_dir, texts, tmp_path, "--dimensions", "32")
    assert ours.shape == (len(texts), 32)
    compare(ours, ref, texts)


def test_qwen3_token_counts_and_eos_after_truncation(embedkit_bin, qwen3_tiny_dir, texts, tmp_path):
    """Every input ends with <|endoftext|> (151643), also when truncated to max_seq_length; the counts
    are those sentence-transformers fed its model (meta file)."""
    meta = json.loads((GOLDEN / "random-qwen3-tiny.meta.json").read_text(encoding="utf-8"))
    inp = tmp_path / "t.jsonl"
    inp.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    res = subprocess.run([str(embedkit_bin), "tokenize", "-m", str(qwen3_tiny_dir), "--jsonl", "-i", str(inp)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ours = [json.loads(l)["ids"] for l in res.stdout.splitlines()]
    assert [len(i) for i in ours] == meta["token_counts"]
    assert all(i[-1] == EOS for i in ours)
    assert max(meta["token_counts_untruncated"]) > 2048 and max(meta["token_counts"]) == 2048


def test_qwen3_causal_lm_prefix_and_batch_independence(embedkit_bin, qwen3_tiny_dir, qwen3_tokenizer_dir, texts,
                                                       tmp_path):
    """Qwen3ForCausalLM checkpoints name tensors "model.…": same weights, same embeddings. And a text
    embedded alone equals the same text inside a packed batch (sequences never see each other)."""
    prefixed = make_model(ROOT / "build" / "models" / "random-qwen3-tiny-prefixed", qwen3_tokenizer_dir, "--prefix", "model.")
    golden = np.load(GOLDEN / "random-qwen3-tiny.npy")
    compare(embed(embedkit_bin, prefixed, texts[:50], tmp_path), golden[:50], texts[:50])
    batch = embed(embedkit_bin, qwen3_tiny_dir, texts, tmp_path)
    by_len = np.argsort([len(t) for t in texts])
    for i in (int(by_len[0]), int(by_len[len(texts) // 2]), int(by_len[-1])):
        alone = embed(embedkit_bin, qwen3_tiny_dir, [texts[i]], tmp_path)[0]
        assert float(alone @ batch[i]) >= 0.999999


def test_qwen3_config_errors_name_the_field(embedkit_bin, qwen3_tiny_dir, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(qwen3_tiny_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    del cfg["num_key_value_heads"]
    (bad / "config.json").write_text(json.dumps(cfg))
    res = subprocess.run([str(embedkit_bin), "embed", "-m", str(bad), "hi"], capture_output=True, text=True)
    assert res.returncode != 0 and "num_key_value_heads" in res.stderr and "config.json" in res.stderr, res.stderr
