#!/usr/bin/env python3
"""GPU throughput, side by side in one run: EmbedKit's CUDA encoder vs PyTorch eager
(transformers fp16, SDPA attention) and torch.compile(model, dynamic=True).

Equal token ids go into every engine (tokenization excluded). PyTorch gets what
sentence-transformers does: texts sorted by length, padded per batch, mean pooling + normalize;
each engine at its best batch size (PyTorch: sequences per batch; EmbedKit: token budget).
Workloads: short (8-32 tokens), medium (64-256), long (512). Prints a Markdown table with
tokens/s, the ratio EmbedKit / faster PyTorch form, and achieved TFLOP/s.

  python3 bench/gpu_vs_pytorch.py --model DIR --name minilm --embedkit-bench build/embedkit_gpu_bench
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np

WORKLOADS = {  # name: (number of sequences, min length, max length)
    "short": (40000, 8, 32),
    "medium": (6000, 64, 256),
    "long": (2000, 512, 512),
}


def make_ids(n, lo, hi, seed):
    rng = np.random.default_rng(seed)
    lens = rng.integers(lo, hi + 1, size=n)
    seqs = []
    for L in lens:
        body = rng.integers(1000, 30000, size=int(L) - 2)
        seqs.append(np.concatenate([[101], body, [102]]).astype(np.int32))
    return seqs


def write_ids(path, seqs):
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(seqs)))
        for s in seqs:
            f.write(struct.pack("<i", len(s)))
            f.write(s.astype("<i4").tobytes())


def flops_per_token(cfg, seqs):
    d, I, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    tokens = sum(len(s) for s in seqs)
    attn = sum(len(s) * len(s) for s in seqs) / tokens  # mean keys seen per token
    return layers * (2 * (4 * d * d + 2 * d * I) + 4 * attn * d)


def time_torch(model, seqs, batch_sizes, reps, torch):
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]), reverse=True)
    tokens = sum(len(s) for s in seqs)
    results = {}
    for bs in batch_sizes:
        batches = []
        for i in range(0, len(order), bs):
            chunk = [seqs[j] for j in order[i:i + bs]]
            L = max(len(s) for s in chunk)
            ids = np.zeros((len(chunk), L), dtype=np.int64)
            mask = np.zeros((len(chunk), L), dtype=np.int64)
            for r, s in enumerate(chunk):
                ids[r, :len(s)] = s
                mask[r, :len(s)] = 1
            batches.append((torch.from_numpy(ids).cuda(), torch.from_numpy(mask).cuda()))

        def run():
            with torch.inference_mode():
                for ids, mask in batches:
                    h = model(input_ids=ids, attention_mask=mask).last_hidden_state
                    m = mask.unsqueeze(-1).to(h.dtype)
                    e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
                    torch.nn.functional.normalize(e.float(), dim=-1).cpu()
            torch.cuda.synchronize()

        run()  # warm-up (and compilation for the compiled model)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        results[bs] = tokens / sorted(times)[len(times) // 2]
        print(f"    bs {bs}: {results[bs] / 1e6:.2f}M tokens/s", flush=True)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--embedkit-bench", required=True)
    ap.add_argument("--workloads", default="short,medium,long")
    ap.add_argument("--forms", default="eager,compiled")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--ceiling-tflops", type=float, default=770.0, help="measured bf16 GEMM ceiling of the device")
    args = ap.parse_args()

    import torch
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(args.model)
    form_names = [f for f in args.forms.split(",") if f in ("eager", "compiled")]
    forms = {}
    if form_names:
        eager = AutoModel.from_pretrained(args.model, torch_dtype=torch.float16, attn_implementation="sdpa").cuda().eval()
        forms["eager"] = eager
        if "compiled" in form_names:
            forms["compiled"] = torch.compile(eager, dynamic=True)
    rows = []
    for wl in args.workloads.split(","):
        n, lo, hi = WORKLOADS[wl]
        seqs = make_ids(n, lo, hi, seed={"short": 1, "medium": 2, "long": 3}[wl])
        ids_path = f"/tmp/ids_{args.name}_{wl}.bin"
        write_ids(ids_path, seqs)
        fpt = flops_per_token(cfg, seqs)
        # PyTorch is host-bound on short batches: sweep far enough that its best is inside the range.
        # Both sides reach ~262k tokens a batch (long: bs 512 x 512 tokens; EmbedKit: 256k budget).
        bss = [32, 64, 128, 256, 512] if wl == "long" else [128, 256, 512, 1024, 2048]
        best = {}
        for form in form_names:
            print(f"[{args.name} {wl}] torch {form}", flush=True)
            r = time_torch(forms[form], seqs, bss, args.reps, torch)
            b = max(r, key=r.get)
            best[form] = (r[b], f"bs {b}")
        print(f"[{args.name} {wl}] embedkit", flush=True)
        res = subprocess.run([args.embedkit_bench, "--model", args.model, "--ids", ids_path,
                              "--budgets", "8192,16384,32768,65536,131072,262144", "--reps", str(args.reps)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)
            sys.exit(1)
        ek = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
        for e in ek:
            print(f"    budget {e['budget']}: {e['tokens_per_s'] / 1e6:.2f}M tokens/s "
                  f"(batches in flight {e.get('pipeline', 1)}, LayerNorm pairs {e.get('ln_pairs', '?')})", flush=True)
        e = max(ek, key=lambda x: x["tokens_per_s"])
        best["embedkit"] = (e["tokens_per_s"], f"budget {e['budget']}")
        torch_best = [v[0] for k, v in best.items() if k != "embedkit"]
        rows.append(dict(model=args.name, workload=wl, fpt=fpt, **{k: v for k, v in best.items()},
                         ratio=best["embedkit"][0] / max(torch_best) if torch_best else float("nan")))
    print()
    print(f"| model | workload | torch eager tok/s | torch compiled tok/s | embedkit tok/s | ratio | embedkit TFLOP/s (% of {args.ceiling_tflops:.0f}) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        def fmt(k):
            return f"{r[k][0] / 1e6:.2f}M ({r[k][1]})" if k in r else "-"
        tf = r["embedkit"][0] * r["fpt"] / 1e12
        print(f"| {r['model']} | {r['workload']} | {fmt('eager')} | {fmt('compiled')} | {fmt('embedkit')} | "
              f"{r['ratio']:.2f}x | {tf:.0f} ({100 * tf / args.ceiling_tflops:.0f}%) |")
    with open(os.path.join(args.out, f"gpu_vs_pytorch_{args.name}.json"), "w") as f:
        json.dump([{k: v for k, v in r.items()} for r in rows], f, indent=1, default=str)


if __name__ == "__main__":
    main()
