#!/usr/bin/env python3
"""End-to-end GPU checks (run on the GPU machine by scripts/gpu-check.sh):
  * GPU fp16 and bf16 vs the CPU fp32 path on the golden texts: cosine >= 0.9999 for every text;
  * batch independence: each text embedded alone (--batch-tokens 1: one sequence per batch) vs
    all texts batched together: cosine >= 0.99999.
Prints one line per check and exits non-zero on failure."""
import argparse
import json
import subprocess
import sys
import tempfile

import numpy as np


def embed(binary, model, texts_path, *extra):
    with tempfile.NamedTemporaryFile(suffix=".npy") as out:
        res = subprocess.run([binary, "embed", "-m", model, "--jsonl", "-i", texts_path, "-f", "npy", "-o", out.name,
                              *extra], capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"embedkit failed: {res.stderr}")
        return np.load(out.name)


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--texts", required=True)
    args = ap.parse_args()
    texts = json.load(open(args.texts, encoding="utf-8"))
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
        path = f.name
    ok = True
    cpu = embed(args.bin, args.model, path, "--device", "cpu")
    for dtype in ("fp16", "bf16"):
        gpu = embed(args.bin, args.model, path, "--device", "cuda", "--dtype", dtype)
        c = cosines(gpu, cpu)
        passed = bool(c.min() >= 0.9999)
        ok &= passed
        print(f"e2e {dtype} vs cpu fp32: {len(texts)} texts, min cosine {c.min():.6f}, mean {c.mean():.6f}, "
              f"worst text {int(c.argmin())} -> {'PASS' if passed else 'FAIL'}")
        if dtype == "fp16":
            import os
            os.environ["EMBEDKIT_EXACT_GELU"] = "1"
            exact = embed(args.bin, args.model, path, "--device", "cuda", "--dtype", dtype)
            del os.environ["EMBEDKIT_EXACT_GELU"]
            c3 = cosines(exact, cpu)
            print(f"e2e {dtype} with exact erf-GELU pass vs cpu fp32: min cosine {c3.min():.6f}")
        alone = embed(args.bin, args.model, path, "--device", "cuda", "--dtype", dtype, "--batch-tokens", "1")
        c2 = cosines(alone, gpu)
        passed = bool(c2.min() >= 0.99999)
        ok &= passed
        print(f"batch independence {dtype}: min cosine alone vs batched {c2.min():.7f} -> {'PASS' if passed else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
