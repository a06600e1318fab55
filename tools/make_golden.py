#!/usr/bin/env python3
"""Compute golden sentence embeddings with sentence-transformers (reference implementation).

Produces FILE.npy (float32, shape n x dim) and FILE.meta.json for the texts
in a JSON list (tests/golden/texts.json).  EmbedKit's C++ engine is tested
against these vectors: it must load the same model directory and reproduce
the embeddings (tokenisation, truncation, pooling, normalisation, prompts)
within a small tolerance.

The reference is plain sentence-transformers on CPU in fp32:
``SentenceTransformer(DIR, device="cpu").encode(texts, batch_size=32,
convert_to_numpy=True[, prompt_name=NAME])`` -- everything else at its
defaults, so pooling and normalisation come from the model's own
modules.json.  The meta file records the library versions, n, dim, the
prompt, and for each text the number of tokens the model actually sees
(after prompt prepending and truncation to max_seq_length, special tokens
included) plus the untruncated count.

Only needed to (re)generate fixtures; requires tools/requirements-reference.txt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def token_counts(model, texts, prompt, batch_size=32):
    """Tokens per text as fed to the model (truncated) via the model's own preprocessing."""
    pre = getattr(model, "preprocess", None)
    counts = []
    for i in range(0, len(texts), batch_size):
        batch = texts[i:i + batch_size]
        if pre is not None:
            feats = pre(batch, prompt=prompt) if prompt else pre(batch)
        else:  # sentence-transformers < 5: tokenize() without prompt support
            feats = model.tokenize([(prompt or "") + t for t in batch])
        counts += [int(x) for x in feats["attention_mask"].sum(dim=1).tolist()]
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Encode golden texts with sentence-transformers (CPU, fp32) and write "
                    "FILE.npy (float32 n x dim) plus FILE.meta.json (versions, token counts).",
        epilog="Example: python3 tools/make_golden.py --model build/models/random-bert-cls "
               "--texts tests/golden/texts.json --out tests/golden/random-bert-cls.query.npy "
               "--prompt-name query")
    ap.add_argument("--model", required=True, metavar="DIR", help="sentence-transformers model directory")
    ap.add_argument("--texts", default="tests/golden/texts.json", metavar="FILE",
                    help="JSON list of strings (default tests/golden/texts.json)")
    ap.add_argument("--out", required=True, metavar="FILE.npy", help="output .npy path (meta goes to FILE.meta.json)")
    ap.add_argument("--prompt-name", metavar="NAME",
                    help="use the model's named prompt (config_sentence_transformers.json 'prompts')")
    ap.add_argument("--model-name", metavar="NAME",
                    help="name recorded in the meta file (default: the model dir's name)")
    ap.add_argument("--batch-size", type=int, default=32, help="encode batch size (default 32)")
    args = ap.parse_args(argv)

    try:
        import numpy as np
        import sentence_transformers
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        sys.exit("error: %s; install the reference stack: pip install -r tools/requirements-reference.txt" % e)

    model_dir = Path(args.model)
    if not (model_dir / "modules.json").is_file():
        sys.exit("error: %s is not a sentence-transformers model dir (no modules.json)" % model_dir)
    try:
        raw = Path(args.texts).read_bytes()
        texts = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        sys.exit("error: cannot read texts %s: %s" % (args.texts, e))
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        sys.exit("error: %s must be a JSON list of strings" % args.texts)

    torch.manual_seed(0)
    model = SentenceTransformer(str(model_dir), device="cpu")
    prompt = None
    if args.prompt_name:
        prompts = getattr(model, "prompts", {}) or {}
        if args.prompt_name not in prompts:
            sys.exit("error: model has no prompt %r (available: %s)"
                     % (args.prompt_name, ", ".join(sorted(prompts)) or "none"))
        prompt = prompts[args.prompt_name]

    kwargs = {"batch_size": args.batch_size, "convert_to_numpy": True}
    if args.prompt_name:
        kwargs["prompt_name"] = args.prompt_name
    with torch.inference_mode():
        emb = model.encode(texts, **kwargs)
    emb = np.ascontiguousarray(np.asarray(emb, dtype=np.float32))
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        sys.exit("error: unexpected embedding shape %s" % (emb.shape,))
    if not np.isfinite(emb).all():
        sys.exit("error: non-finite values in embeddings")

    with torch.inference_mode():
        counts = token_counts(model, texts, prompt, args.batch_size)
    tok = model.tokenizer
    full_counts = [len(tok((prompt or "") + t, add_special_tokens=True, truncation=False,
                       verbose=False)["input_ids"])
                   for t in texts]

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, emb)
    norms = np.linalg.norm(emb, axis=1)
    meta = {
        "model": args.model_name or model_dir.resolve().name,
        "texts": Path(args.texts).name,
        "texts_sha256": hashlib.sha256(raw).hexdigest(),
        "prompt_name": args.prompt_name,
        "prompt": prompt,
        "n": int(emb.shape[0]),
        "dim": int(emb.shape[1]),
        "dtype": "float32",
        "max_seq_length": int(model.max_seq_length),
        "modules": [type(m).__name__ for m in model],
        "device": "cpu",
        "batch_size": args.batch_size,
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "norm_min": float(norms.min()),
        "norm_max": float(norms.max()),
        "token_counts": counts,
        "token_counts_untruncated": full_counts,
    }
    meta_path = out.with_name(out.name[:-4] + ".meta.json" if out.name.endswith(".npy") else out.name + ".meta.json")
    meta_path.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote %s %s and %s (norms %.6f..%.6f, tokens %d..%d)"
          % (out, emb.shape, meta_path, norms.min(), norms.max(), min(counts), max(counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
