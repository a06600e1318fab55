#!/usr/bin/env python3
"""End-to-end Qwen3 checks on the GPU machine (scripts/gpu-check.sh qwen3-checks), against
transformers in fp32 (Qwen3Model, SDPA, TF32 off) on the same weights, last-token pooling + L2
normalize (Qwen3-Embedding's sentence-transformers modules):

  ids      equal token ids in: random ids ending in <|endoftext|> at lengths 1 .. 8192, embedded by
           embedkit_gpu_bench --check-ids (packed batches of up to 8,192 tokens: short sequences
           share a batch, positions restart per sequence) in bf16 (bar: cosine >= 0.999 for every
           length) and fp16 (reported, not a bar).
  text     the whole path through `embedkit embed` (tokenizer, engine, batcher): the golden texts
           plus long texts (~1k, 4k, 8k tokens) on --device cuda (bf16 default; bar >= 0.999),
           --device auto (must pick the GPU: identical to cuda), and the first --cpu-texts texts on
           --device cpu (fp32; bar >= 0.9999). Token ids are compared with HF tokenizers first.
  serve    `embedkit serve --device cuda`: POST /embed for 8 texts vs `embedkit embed` (>= 0.9999).

Prints one line per check (with the worst case and by how much it missed) and a summary line
starting with "qwen3 e2e"; exits non-zero when a bar is missed."""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

EOS = 151643


def log(msg):
    print(msg, flush=True)


def cosines(a, b):
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def write_ids(path, seqs):
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(seqs)))
        for s in seqs:
            f.write(struct.pack("<i", len(s)))
            f.write(np.asarray(s, dtype="<i4").tobytes())


class Reference:
    """transformers Qwen3Model in fp32 on the GPU, one sequence at a time (no padding)."""

    def __init__(self, model_dir, device="cuda"):
        import torch
        from transformers import AutoModel
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.torch = torch
        m = AutoModel.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="sdpa")
        self.device = device
        self.model = m.to(device=device, dtype=torch.float32).eval()

    def embed(self, ids):
        torch = self.torch
        with torch.inference_mode():
            x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
            h = self.model(input_ids=x).last_hidden_state[0, -1].float()
            return torch.nn.functional.normalize(h, dim=-1).cpu().numpy()


def run(cmd, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        log(f"FAILED: {' '.join(cmd)}\n{res.stderr[-3000:]}")
        return None
    return res


def cli_embed(binary, model, path, *extra):
    with tempfile.NamedTemporaryFile(suffix=".npy") as out:
        t0 = time.time()
        res = run([binary, "embed", "-m", model, "--jsonl", "-i", path, "-f", "npy", "-o", out.name, *extra])
        if res is None:
            return None
        arr = np.load(out.name)
        log(f"    embedkit embed {' '.join(extra)}: {len(arr)} texts in {time.time() - t0:.1f} s")
        return arr


def cli_tokenize(binary, model, path):
    res = run([binary, "tokenize", "-m", model, "--jsonl", "-i", path])
    if res is None:
        return None
    return [json.loads(l)["ids"] for l in res.stdout.splitlines() if l.startswith("{")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="embedkit")
    ap.add_argument("--bench", required=True, help="embedkit_gpu_bench")
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", default="qwen3")
    ap.add_argument("--texts", required=True, help="JSON list of texts (tests/golden/texts.json)")
    ap.add_argument("--corpus", help="lines to build long texts from (.device/lines.txt)")
    ap.add_argument("--lengths", default="1,2,3,5,8,16,17,31,64,65,100,128,255,256,511,512,1000,1024,2047,2048,4096,8192")
    ap.add_argument("--long-texts", default="1000,4000,8000", help="approximate token counts of extra long texts")
    ap.add_argument("--cpu-texts", type=int, default=24, help="texts checked on --device cpu (0: skip)")
    ap.add_argument("--serve", action="store_true", help="also check `embedkit serve --device cuda`")
    ap.add_argument("--port", type=int, default=18091)
    args = ap.parse_args()

    ok = True
    summary = []
    t_start = time.time()
    ref = Reference(args.model)
    log(f"[{args.name}] reference loaded ({time.time() - t_start:.1f} s)")

    # ---------------------------------------------------------------- ids: lengths 1 .. 8192
    lengths = [int(x) for x in args.lengths.split(",")]
    rng = np.random.default_rng(0)
    seqs = [np.concatenate([rng.integers(0, EOS, size=L - 1), [EOS]]).astype(np.int32) for L in lengths]
    want = np.stack([ref.embed(s) for s in seqs])
    ids_path = f"/tmp/qwen3_check_ids_{args.name}.bin"
    write_ids(ids_path, seqs)
    got = {}
    for dtype in ("bf16", "fp16"):
        out = f"/tmp/qwen3_check_{args.name}_{dtype}.f32"
        if run([args.bench, "--model", args.model, "--check-ids", ids_path, "--out", out, "--dtype", dtype]) is None:
            ok = False
            summary.append(f"ids {dtype}: embedkit_gpu_bench FAILED")
            continue
        got[dtype] = np.fromfile(out, dtype=np.float32).reshape(len(seqs), -1)
    log(f"  {'length':>6} | " + " | ".join(f"cos {d} vs fp32" for d in got))
    for i, L in enumerate(lengths):
        log(f"  {L:>6} | " + " | ".join(f"{cosines(got[d][i:i + 1], want[i:i + 1])[0]:.6f}      " for d in got))
    for dtype, bar in (("bf16", 0.999), ("fp16", 0.999)):
        if dtype not in got:
            continue
        c = cosines(got[dtype], want)
        w = int(c.argmin())
        passed = bool(c.min() >= bar) and np.isfinite(got[dtype]).all()
        is_bar = dtype == "bf16"
        if is_bar:
            ok &= passed
        line = (f"ids {dtype} vs transformers fp32, lengths {lengths[0]}..{lengths[-1]}: min cosine {c.min():.6f} "
                f"(length {lengths[w]}), bar {bar}{'' if is_bar else ' (not a bar)'} -> "
                f"{'PASS' if passed else 'FAIL by %.2e' % (bar - c.min())}")
        log(line)
        summary.append(line)

    # ---------------------------------------------------------------- text: the whole CLI path
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    texts = list(json.load(open(args.texts, encoding="utf-8")))
    if args.corpus and os.path.exists(args.corpus):
        lines = [l.rstrip("\n") for l in open(args.corpus, encoding="utf-8") if l.strip()]
        k = 0
        for target in [int(x) for x in args.long_texts.split(",") if x]:
            parts, n = [], 0
            while n < target and k < len(lines):
                parts.append(lines[k])
                n += len(tok.encode(lines[k], add_special_tokens=False).ids) + 1
                k += 1
            texts.append("\n".join(parts))
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
        path = f.name
    # sentence-transformers truncates to max_seq_length (tokenizers keeps room for the EOS the
    # post-processor appends); the tiny model's 2,048 is shorter than the longest text here.
    st_cfg = os.path.join(args.model, "sentence_bert_config.json")
    if os.path.exists(st_cfg) and json.load(open(st_cfg)).get("max_seq_length"):
        tok.enable_truncation(max_length=int(json.load(open(st_cfg))["max_seq_length"]))
    ref_ids = [tok.encode(t).ids for t in texts]
    ours_ids = cli_tokenize(args.bin, args.model, path)
    if ours_ids is not None:
        diff = [i for i, (a, b) in enumerate(zip(ref_ids, ours_ids)) if list(a) != list(b)]
        line = (f"text token ids vs HF tokenizers: {len(texts)} texts (longest {max(map(len, ref_ids))} tokens), "
                f"{len(diff)} differ{(' (first: text %d)' % diff[0]) if diff else ''} -> {'PASS' if not diff else 'FAIL'}")
        ok &= not diff
        log(line)
        summary.append(line)
    t0 = time.time()
    want_t = np.stack([ref.embed(ids) for ids in ref_ids])
    log(f"    reference: {len(texts)} texts in {time.time() - t0:.1f} s")
    gpu = cli_embed(args.bin, args.model, path, "--device", "cuda")
    if gpu is None:
        ok = False
        summary.append("text cuda: embedkit embed FAILED")
    else:
        c = cosines(gpu, want_t)
        w = int(c.argmin())
        passed = bool(c.min() >= 0.999)
        ok &= passed
        line = (f"text cuda (bf16 default) vs transformers fp32: {len(texts)} texts, min cosine {c.min():.6f} "
                f"(text {w}, {len(ref_ids[w])} tokens), mean {c.mean():.6f} -> "
                f"{'PASS' if passed else 'FAIL by %.2e' % (0.999 - c.min())}")
        log(line)
        summary.append(line)
        auto = cli_embed(args.bin, args.model, path, "--device", "auto")
        if auto is not None:
            same = bool(np.array_equal(auto, gpu))
            ok &= same
            line = f"text --device auto identical to --device cuda (picks the GPU, bf16): {'PASS' if same else 'FAIL (max |diff| %.2e)' % np.abs(auto - gpu).max()}"
            log(line)
            summary.append(line)
        fp16 = cli_embed(args.bin, args.model, path, "--device", "cuda", "--dtype", "fp16")
        if fp16 is not None:
            c16 = cosines(fp16, want_t)
            line = f"text cuda --dtype fp16 vs transformers fp32: min cosine {c16.min():.6f} (not a bar)"
            log(line)
            summary.append(line)
    if args.cpu_texts > 0:
        n = min(args.cpu_texts, len(texts))
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
            for t in texts[:n]:
                f.write(json.dumps({"text": t}) + "\n")
            cpu_path = f.name
        cpu = cli_embed(args.bin, args.model, cpu_path, "--device", "cpu")
        if cpu is None:
            ok = False
            summary.append("text cpu: embedkit embed FAILED")
        else:
            c = cosines(cpu, want_t[:n])
            passed = bool(c.min() >= 0.9999)
            ok &= passed
            line = (f"text cpu fp32 vs transformers fp32: {n} texts, min cosine {c.min():.7f} -> "
                    f"{'PASS' if passed else 'FAIL by %.2e' % (0.9999 - c.min())}")
            log(line)
            summary.append(line)

    # ---------------------------------------------------------------- serve
    if args.serve and gpu is not None:
        srv = subprocess.Popen([args.bin, "serve", "-m", args.model, "--device", "cuda", "--port", str(args.port),
                                "--log-level", "warn"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            up = False
            for _ in range(600):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{args.port}/health", timeout=1)
                    up = True
                    break
                except Exception:
                    if srv.poll() is not None:
                        break
                    time.sleep(0.1)
            if not up:
                out = srv.stdout.read().decode(errors="replace") if srv.poll() is not None else ""
                line = f"serve --device cuda: server did not come up -> FAIL {out[-500:]}"
                ok = False
            else:
                body = json.dumps({"inputs": texts[:8]}).encode()
                req = urllib.request.Request(f"http://127.0.0.1:{args.port}/embed", data=body,
                                             headers={"Content-Type": "application/json"})
                res = np.array(json.loads(urllib.request.urlopen(req, timeout=60).read()), dtype=np.float32)
                c = cosines(res, gpu[:8])
                passed = bool(c.min() >= 0.9999)
                ok &= passed
                line = f"serve --device cuda POST /embed vs embedkit embed: min cosine {c.min():.6f} -> {'PASS' if passed else 'FAIL'}"
        finally:
            srv.terminate()
            srv.wait(timeout=30)
        log(line)
        summary.append(line)

    log(f"qwen3 e2e {args.name}: {'PASS' if ok else 'FAIL'} ({time.time() - t_start:.0f} s)")
    for s in summary:
        log(f"  {s}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
