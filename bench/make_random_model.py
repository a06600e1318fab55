#!/usr/bin/env python3
"""Random-initialised BERT sentence-transformers models at real configurations, for GPU speed
and parity runs where real weights cannot travel (the device machine takes 64 MiB of tree).

Weights come from transformers' own initialisation under torch.manual_seed(SEED), saved as
safetensors; the tokenizer files are copied from a real BERT-uncased model (same 30522 vocab);
sentence-transformers modules: mean pooling + Normalize, max_seq_length 512.

  python3 bench/make_random_model.py --preset minilm --tokenizer-from DIR --out DIR
Presets: minilm (all-MiniLM-L6-v2: 6 layers, 384 hidden, 12 heads, 1536 inter),
         bge-base (bge-base-en-v1.5: 12 layers, 768 hidden, 12 heads, 3072 inter),
         thin (1 layer, 384 hidden, 384 inter: the server's request path without model cost).
"""
import argparse
import json
import os
import shutil

PRESETS = {
    "minilm": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
    "bge-base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    # MiniLM's output size with one thin layer: the model's cost is negligible, so a server run on
    # it measures the request path (HTTP, JSON, tokenization, batching) alone.
    "thin": dict(num_hidden_layers=1, hidden_size=384, num_attention_heads=12, intermediate_size=384),
    # Smaller still (32 dims): a request rate that a 2-core machine's server can sustain under load.
    "micro": dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=32),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--tokenizer-from", required=True, help="directory with tokenizer.json, vocab.txt, ...")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(args.seed)
    cfg = BertConfig(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
                     layer_norm_eps=1e-12, **PRESETS[args.preset])
    model = BertModel(cfg, add_pooling_layer=False).eval()
    # BERT's init leaves LayerNorm at (1, 0) and biases at 0: perturb them so the test sees them.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.02)
            elif "LayerNorm.weight" in name:
                p.add_(torch.randn_like(p) * 0.05)
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        src = os.path.join(args.tokenizer_from, f)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(args.out, f))
    with open(os.path.join(args.out, "modules.json"), "w") as f:
        json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                   {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}], f)
    os.makedirs(os.path.join(args.out, "1_Pooling"), exist_ok=True)
    with open(os.path.join(args.out, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": cfg.hidden_size, "pooling_mode_mean_tokens": True,
                   "pooling_mode_cls_token": False, "pooling_mode_max_tokens": False,
                   "pooling_mode_mean_sqrt_len_tokens": False}, f)
    with open(os.path.join(args.out, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": 512, "do_lower_case": False}, f)
    print(f"wrote {args.out}: {args.preset}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
