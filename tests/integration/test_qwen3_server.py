"""`embedkit serve` with the tiny random Qwen3-Embedding model (tests/integration/test_qwen3_golden.py):
per-request prompt_name and dimensions (TEI and OpenAI routes) against sentence-transformers' golden
fixtures, and /tokenize + /decode against HF tokenizers on the byte-level BPE tokenizer."""
import json
from pathlib import Path

import numpy as np
import pytest

from server_util import Server, cos_rows
from test_qwen3_golden import qwen3_tiny_dir  # noqa: F401 (fixture)
from test_qwen3_tokenizer import qwen3_tokenizer_dir  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
COS_MIN = 0.99999


@pytest.fixture(scope="module")
def sample():
    texts = json.loads((GOLDEN / "texts.json").read_text(encoding="utf-8"))
    keep = [i for i, t in enumerate(texts) if t != ""][:32]  # no empty strings, <= 32 per request (server limits)
    return ([texts[i] for i in keep], np.load(GOLDEN / "random-qwen3-tiny.npy")[keep],
            np.load(GOLDEN / "random-qwen3-tiny.query.npy")[keep])


@pytest.fixture(scope="module")
def server(embedkit_bin, qwen3_tiny_dir):
    with Server(embedkit_bin, qwen3_tiny_dir, "--max-wait", "2") as s:
        yield s
        assert s.stop() == 0, s.log()


def test_embed_prompt_name_and_dimensions(server, sample):
    texts, plain, query = sample
    s, got, _ = server.post_json("/embed", {"inputs": texts})
    assert s == 200 and cos_rows(got, plain).min() >= COS_MIN
    s, got, _ = server.post_json("/embed", {"inputs": texts, "prompt_name": "query"})
    assert s == 200 and cos_rows(got, query).min() >= COS_MIN
    s, got, _ = server.post_json("/embed", {"inputs": texts, "prompt_name": "query", "dimensions": 32})
    ref = query[:, :32] / np.linalg.norm(query[:, :32], axis=1, keepdims=True)
    assert s == 200 and np.asarray(got).shape == (len(texts), 32)
    assert np.abs(np.asarray(got) - ref).max() < 1e-5
    s, got, _ = server.post_json("/v1/embeddings", {"model": "m", "input": texts[:8], "dimensions": 16})
    ref = plain[:8, :16] / np.linalg.norm(plain[:8, :16], axis=1, keepdims=True)
    assert s == 200 and cos_rows([d["embedding"] for d in got["data"]], ref).min() >= COS_MIN


def test_tokenize_and_decode_match_hf(server, qwen3_tiny_dir, sample):
    from tokenizers import Tokenizer
    hf = Tokenizer.from_file(str(qwen3_tiny_dir / "tokenizer.json"))
    texts = sample[0][:30] + ["<|im_start|>user\nhi 👍🏽<|im_end|>", "e\u0301t\u00e9   x"]
    s, toks, _ = server.post_json("/tokenize", {"inputs": texts})
    assert s == 200
    for text, got in zip(texts, toks):
        assert [t["id"] for t in got] == hf.encode(text).ids, text[:60]
    ids = [hf.encode(t).ids for t in texts]
    s, decoded, _ = server.post_json("/decode", {"ids": ids})
    assert s == 200 and decoded == [hf.decode(i) for i in ids]
    s, decoded, _ = server.post_json("/decode", {"ids": ids[-2], "skip_special_tokens": False})
    assert decoded == [hf.decode(ids[-2], skip_special_tokens=False)]
