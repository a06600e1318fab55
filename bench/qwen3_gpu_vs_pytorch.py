#!/usr/bin/env python3
"""Qwen3 GPU throughput, side by side in one run: EmbedKit's CUDA Qwen3 encoder (bf16) vs PyTorch
eager (transformers Qwen3Model, bf16, SDPA attention) and torch.compile(model, dynamic=True).

Equal token ids go into every engine (tokenization excluded; random ids ending in <|endoftext|>,
as Qwen3-Embedding inputs end). PyTorch gets what sentence-transformers does: sequences sorted by
length, padded per batch, last-token pooling + normalize, the result copied to the host; each
engine at its best batch size (PyTorch: sequences per batch, swept; EmbedKit: token budget, swept).
Workloads: short (8-32 tokens), medium (64-256), long512, long4096. Also the batch-1 p50 latency of
a 16-token query: EmbedKit through the library (Embedder::embed, tokenization included), PyTorch
eager and compiled on its token ids.

Prints a Markdown table: tokens/s, ratio EmbedKit / faster PyTorch form with the issue's target,
achieved TFLOP/s (useful FLOPs: causal attention counted per key actually seen, no padding) against
the measured bf16 GEMM ceiling.

  python3 bench/qwen3_gpu_vs_pytorch.py --model DIR --embedkit-bench .device/bin/embedkit_gpu_bench
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

EOS = 151643
WORKLOADS = {  # name: (sequences, min length, max length, torch batch sizes, embedkit budgets, target ratio)
    "short": (4096, 8, 32, [128, 512, 2048], "16384,32768,65536,131072", 1.6),
    "medium": (768, 64, 256, [64, 128, 256], "16384,32768,65536,131072", 1.5),
    "long512": (192, 512, 512, [16, 32, 64], "16384,32768,65536,131072", 1.4),
    "long4096": (24, 4096, 4096, [2, 4, 8], "8192,16384,32768,65536", 1.4),
}
# A 16-token query with Qwen3's tokenizer (15 BPE tokens + <|endoftext|>).
LATENCY_QUERY = "What is the capital city of France, and how many people live there?"


from gpu_vs_pytorch import write_ids  # noqa: E402  (the ids file format embedkit_gpu_bench reads)

def log(msg):
    print(msg, flush=True)


def make_ids(n, lo, hi, seed):
    rng = np.random.default_rng(seed)
    lens = rng.integers(lo, hi + 1, size=n)
    return [np.concatenate([rng.integers(0, EOS, size=int(L) - 1), [EOS]]).astype(np.int32) for L in lens]


def total_flops(cfg, seqs):
    """Useful FLOPs of a workload: 2 per weight per token (no lm_head) + causal attention
    (QKᵀ and PV: 4·H·dh per query-key pair, key j ≤ query i)."""
    d, I, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = getattr(cfg, "head_dim", None) or d // H
    per_token = 2 * (d * (H + 2 * KV) * dh + H * dh * d + 3 * d * I)
    tokens = sum(len(s) for s in seqs)
    pairs = sum(len(s) * (len(s) + 1) // 2 for s in seqs)
    return L * (per_token * tokens + 4 * H * dh * pairs)


def time_torch(model, seqs, batch_sizes, reps, torch):
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]), reverse=True)
    tokens = sum(len(s) for s in seqs)
    results = {}
    for bs in batch_sizes:
        batches = []
        for i in range(0, len(order), bs):
            chunk = [seqs[j] for j in order[i:i + bs]]
            L = max(len(s) for s in chunk)
            ids = np.full((len(chunk), L), EOS, dtype=np.int64)
            mask = np.zeros((len(chunk), L), dtype=np.int64)
            for r, s in enumerate(chunk):
                ids[r, :len(s)] = s
                mask[r, :len(s)] = 1
            last = torch.tensor([len(s) - 1 for s in chunk], device="cuda")
            batches.append((torch.from_numpy(ids).cuda(), torch.from_numpy(mask).cuda(), last))

        def run():
            with torch.inference_mode():
                for ids, mask, last in batches:
                    h = model(input_ids=ids, attention_mask=mask).last_hidden_state
                    e = h[torch.arange(h.shape[0], device="cuda"), last]  # last-token pooling (right padding)
                    torch.nn.functional.normalize(e.float(), dim=-1).cpu()
            torch.cuda.synchronize()

        try:
            run()  # warm-up (and compilation for the compiled model)
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
        except torch.cuda.OutOfMemoryError:
            log(f"    bs {bs}: out of memory")
            torch.cuda.empty_cache()
            continue
        results[bs] = tokens / sorted(times)[len(times) // 2]
        log(f"    bs {bs}: {results[bs] / 1e6:.3f}M tokens/s")
    return results


def torch_latency(model, ids, iters, torch):
    x = torch.tensor([ids], dtype=torch.long, device="cuda")
    ms = []
    with torch.inference_mode():
        for i in range(iters + 10):
            t0 = time.perf_counter()
            h = model(input_ids=x).last_hidden_state
            torch.nn.functional.normalize(h[:, -1].float(), dim=-1).cpu()
            if i >= 10:
                ms.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(ms))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", default="qwen3-0.6b")
    ap.add_argument("--embedkit-bench", required=True)
    ap.add_argument("--workloads", default="short,medium,long512,long4096")
    ap.add_argument("--forms", default="eager,compiled")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--latency-iters", type=int, default=1000)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--ceiling-tflops", type=float, default=770.0, help="measured bf16 GEMM ceiling of the device")
    args = ap.parse_args()

    import torch
    from transformers import AutoConfig, AutoModel

    t_start = time.time()
    cfg = AutoConfig.from_pretrained(args.model)
    form_names = [f for f in args.forms.split(",") if f in ("eager", "compiled")]
    forms = {}
    if form_names:
        # torch_dtype (renamed dtype in new transformers, still accepted) and an explicit cast, so
        # no version can silently leave the weights in fp32.
        eager = AutoModel.from_pretrained(args.model, torch_dtype=torch.bfloat16, attn_implementation="sdpa")
        eager = eager.to(device="cuda", dtype=torch.bfloat16).eval()
        log(f"torch model: {type(eager).__name__}, {next(eager.parameters()).dtype}, "
            f"attention {getattr(eager.config, '_attn_implementation', '?')}")
        forms["eager"] = eager
        if "compiled" in form_names:
            forms["compiled"] = torch.compile(eager, dynamic=True)
    log(f"torch {torch.__version__}, model loaded in {time.time() - t_start:.1f} s")

    rows = []
    for wl in args.workloads.split(","):
        n, lo, hi, bss, budgets, target = WORKLOADS[wl]
        seqs = make_ids(n, lo, hi, seed=list(WORKLOADS).index(wl) + 1)
        ids_path = f"/tmp/ids_{args.name}_{wl}.bin"
        write_ids(ids_path, seqs)
        flops = total_flops(cfg, seqs)
        tokens = sum(len(s) for s in seqs)
        best = {}
        for form in form_names:
            t0 = time.time()
            log(f"[{args.name} {wl}: {n} sequences, {tokens} tokens] torch {form}")
            r = time_torch(forms[form], seqs, bss, args.reps, torch)
            if r:
                b = max(r, key=r.get)
                best[form] = (r[b], f"bs {b}")
            log(f"    ({time.time() - t0:.0f} s)")
        log(f"[{args.name} {wl}] embedkit")
        t0 = time.time()
        res = subprocess.run([args.embedkit_bench, "--model", args.model, "--ids", ids_path, "--dtype", "bf16",
                              "--budgets", budgets, "--reps", str(args.reps)], capture_output=True, text=True)
        if res.returncode != 0:
            log(f"embedkit_gpu_bench FAILED on {wl}:\n{res.stderr[-3000:]}")
            rows.append(dict(workload=wl, tokens=tokens, flops=flops, target=target, failed=True, **best))
            continue
        ek = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
        for e in ek:
            log(f"    budget {e['budget']}: {e['tokens_per_s'] / 1e6:.3f}M tokens/s ({e['batches']} batches)")
        log(f"    ({time.time() - t0:.0f} s)")
        e = max(ek, key=lambda x: x["tokens_per_s"])
        best["embedkit"] = (e["tokens_per_s"], f"budget {e['budget']}")
        torch_best = [v[0] for k, v in best.items() if k != "embedkit"]
        rows.append(dict(workload=wl, tokens=tokens, flops=flops, target=target, **best,
                         ratio=best["embedkit"][0] / max(torch_best) if torch_best else float("nan")))

    # Batch-1 latency of a 16-token query.
    lat = {}
    res = subprocess.run([args.embedkit_bench, "--model", args.model, "--latency", LATENCY_QUERY, "--dtype", "bf16",
                          "--iters", str(args.latency_iters)], capture_output=True, text=True)
    if res.returncode == 0:
        lat["embedkit"] = json.loads(res.stdout.strip().splitlines()[-1])
        log(f"embedkit batch-1 latency: {lat['embedkit']}")
    else:
        log(f"embedkit latency FAILED:\n{res.stderr[-2000:]}")
    try:
        from tokenizers import Tokenizer
        q_ids = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json")).encode(LATENCY_QUERY).ids
        for form in form_names:
            lat[form] = torch_latency(forms[form], q_ids, 100, torch)
            log(f"torch {form} batch-1 latency ({len(q_ids)} tokens): p50 {lat[form]:.2f} ms")
    except Exception as ex:  # the latency of PyTorch is context, not a bar
        log(f"torch latency skipped: {ex}")

    log("")
    log(f"| {args.name} workload | tokens | torch eager tok/s | torch compiled tok/s | embedkit bf16 tok/s | ratio (target) | "
        f"embedkit TFLOP/s (% of {args.ceiling_tflops:.0f}) |")
    log("|---|---|---|---|---|---|---|")
    for r in rows:
        def fmt(k):
            return f"{r[k][0] / 1e6:.3f}M ({r[k][1]})" if k in r else "-"
        if "embedkit" in r:
            tf = r["flops"] / (r["tokens"] / r["embedkit"][0]) / 1e12
            verdict = "PASS" if r["ratio"] >= r["target"] else "MISS"
            ratio = f"{r['ratio']:.2f}x (>= {r['target']}x {verdict})"
            tfs = f"{tf:.0f} ({100 * tf / args.ceiling_tflops:.0f}%)"
        else:
            ratio, tfs = "embedkit FAILED", "-"
        log(f"| {r['workload']} | {r['tokens']} | {fmt('eager')} | {fmt('compiled')} | {fmt('embedkit')} | {ratio} | {tfs} |")
    if "embedkit" in lat:
        p50 = lat["embedkit"]["p50_ms"]
        extra = ", ".join(f"torch {k} p50 {v:.2f} ms" for k, v in lat.items() if k != "embedkit")
        log(f"| batch-1 latency ({lat['embedkit']['latency_tokens']} tokens, library) | | | | p50 {p50:.3f} ms, "
            f"p99 {lat['embedkit']['p99_ms']:.3f} ms | target <= 3 ms {'PASS' if p50 <= 3 else 'MISS'} | {extra} |")
    log(f"(whole run {time.time() - t_start:.0f} s)")
    with open(os.path.join(args.out, f"qwen3_gpu_vs_pytorch_{args.name}.json"), "w") as f:
        json.dump(dict(rows=rows, latency=lat), f, indent=1, default=str)


if __name__ == "__main__":
    main()
