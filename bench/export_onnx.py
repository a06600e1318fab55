#!/usr/bin/env python3
"""Export a BERT-family sentence-embedding model's transformer to ONNX (fp32, opset 17).

The graph is transformers' AutoModel as-is: inputs input_ids / attention_mask / token_type_ids
(int64, dynamic batch and sequence axes), output last_hidden_state [batch, seq, hidden].
Pooling and normalization stay outside (bench/cpu_vs_onnxruntime.py does them in numpy, as
sentence-transformers does in torch). After export the graph is checked with onnx.checker and
compared with PyTorch on a few padded batches of different shapes.

  python3 bench/export_onnx.py --model ~/.cache/embedkit/models/sentence-transformers/all-MiniLM-L6-v2 \\
      --out bench/out/all-MiniLM-L6-v2.onnx
"""
import argparse
import os
import sys

import numpy as np

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class Encoder:
    """Wraps AutoModel so the exported graph takes the three inputs positionally, returns one tensor."""

    def __new__(cls, model, torch):
        class _Wrap(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.model(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids, return_dict=True).last_hidden_state

        return _Wrap()


def sample_batches(tokenizer, max_len):
    texts = [
        ["Hello world."],
        ["A short one.", "A somewhat longer sentence with more words in it, to force padding.", "ok"],
        ["Ünïcödé tëxt, 日本語のテキスト, русский текст, العربية"] * 2 + ["x " * 400],  # one truncated
        [f"sentence number {i} " * (1 + i % 7) for i in range(9)],
    ]
    out = []
    for batch in texts:
        enc = tokenizer([t.strip() for t in batch], padding=True, truncation=True, max_length=max_len,
                        return_tensors="np")
        if "token_type_ids" not in enc:
            enc["token_type_ids"] = np.zeros_like(enc["input_ids"])
        out.append({k: enc[k].astype(np.int64) for k in INPUTS})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model directory (HF layout: config.json, model.safetensors)")
    ap.add_argument("--out", required=True, help="output .onnx file")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--dynamo", action="store_true",
                    help="use the torch.export-based exporter (default: the TorchScript exporter, dynamo=False)")
    ap.add_argument("--max-seq-length", type=int, default=256, help="truncation for the verification inputs")
    ap.add_argument("--atol", type=float, default=1e-4, help="max |ORT - PyTorch| allowed on last_hidden_state")
    args = ap.parse_args()

    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    model_dir = os.path.expanduser(args.model)
    # Eager attention: a plain MatMul/Softmax graph that every ORT version fuses (SDPA's export
    # pattern varies across transformers versions).
    try:
        model = AutoModel.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    except (TypeError, ValueError):
        model = AutoModel.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    wrap = Encoder(model, torch).eval()

    batches = sample_batches(tok, args.max_seq_length)
    ex = tuple(torch.from_numpy(batches[1][k]) for k in INPUTS)
    dyn = {k: {0: "batch", 1: "sequence"} for k in INPUTS}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    with torch.no_grad():
        if args.dynamo:
            torch.onnx.export(wrap, ex, args.out, input_names=list(INPUTS), output_names=["last_hidden_state"],
                              dynamic_shapes={k: {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
                                              for k in INPUTS},
                              opset_version=args.opset, dynamo=True, external_data=False)
        else:
            torch.onnx.export(wrap, ex, args.out, input_names=list(INPUTS), output_names=["last_hidden_state"],
                              dynamic_axes={**dyn, "last_hidden_state": {0: "batch", 1: "sequence"}},
                              opset_version=args.opset, do_constant_folding=True, dynamo=False)

    import onnx
    import onnxruntime as ort

    m = onnx.load(args.out)
    onnx.checker.check_model(m)
    print(f"wrote {args.out}: {os.path.getsize(args.out) / 2**20:.1f} MiB, opset "
          f"{max(o.version for o in m.opset_import if o.domain in ('', 'ai.onnx'))}, inputs "
          f"{[i.name for i in m.graph.input]}, outputs {[o.name for o in m.graph.output]}")

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(args.out, so, providers=["CPUExecutionProvider"])
    worst = 0.0
    for b in batches:
        got = sess.run(["last_hidden_state"], b)[0]
        with torch.no_grad():
            ref = wrap(*(torch.from_numpy(b[k]) for k in INPUTS)).numpy()
        mask = b["attention_mask"].astype(bool)  # padded positions are irrelevant to pooling
        diff = float(np.abs(got - ref)[mask].max())
        worst = max(worst, diff)
        print(f"  batch {tuple(b['input_ids'].shape)}: max |ORT - torch| over real tokens = {diff:.2e}")
    if worst > args.atol:
        print(f"FAIL: max abs difference {worst:.2e} > {args.atol:.0e}", file=sys.stderr)
        return 1
    print(f"OK: ONNX Runtime matches PyTorch (max abs diff {worst:.2e} <= {args.atol:.0e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
