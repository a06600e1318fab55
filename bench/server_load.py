#!/usr/bin/env python3
"""Loopback load generator for `embedkit serve` (or any TEI/OpenAI-compatible server).

Clients (asyncio, one keep-alive HTTP/1.1 connection each) send requests of `--batch` texts
drawn from a real corpus (mixed lengths) for `--duration` seconds at each `--concurrency`
level, and report requests/s, texts/s, tokens/s (from the responses' x-compute-tokens),
p50/p99 latency and errors by kind. With `--check EMB.npy` (the offline `embedkit embed -f npy`
output for the same corpus lines) every embedding received is compared with the offline one
(cosine >= 0.99999), so a lost, duplicated or misrouted result is caught. With
`--sigterm-after S --server-pid PID` the server gets SIGTERM mid-load: requests it accepted must
all complete; connections refused afterwards are counted apart.

  python3 bench/server_load.py --url http://127.0.0.1:8080 --texts lines.txt --check offline.npy \\
      --concurrency 1,16,256,1024 --batch 1,32 --duration 20
"""
import argparse
import asyncio
import base64
import json
import os
import random
import signal
import statistics
import sys
import time
from urllib.parse import urlparse

import numpy as np


class Stats:
    def __init__(self):
        self.lat, self.texts, self.tokens, self.errors, self.mismatch = [], 0, 0, {}, 0
        self.refused_after_sigterm = 0

    def err(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        if ":" in l:
            k, v = l.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    body = await reader.readexactly(n) if n else b""
    return status, headers, body


async def client(host, port, args, texts, check, stats, deadline, sigterm_state):
    reader = writer = None
    rng = random.Random(os.getpid() ^ id(stats) ^ random.getrandbits(32))
    while time.perf_counter() < deadline:
        idx = [rng.randrange(len(texts)) for _ in range(args.batch_now)]
        if args.route == "openai":
            path, payload = "/v1/embeddings", {"input": [texts[i] for i in idx], "encoding_format": "base64", "model": "m"}
        else:
            path, payload = "/embed", {"inputs": [texts[i] for i in idx], "truncate": True}
        body = json.dumps(payload).encode()
        req = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        t0 = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(req)
            await writer.drain()
            status, headers, data = await read_response(reader)
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
            if sigterm_state["sent"]:
                stats.refused_after_sigterm += 1
                return
            stats.err(type(e).__name__)
            writer = None
            await asyncio.sleep(0.01)
            continue
        dt = time.perf_counter() - t0
        if status != 200:
            stats.err(f"http {status}")
            if headers.get("connection", "").lower() == "close":
                writer.close()
                writer = None
            continue
        stats.lat.append(dt)
        stats.texts += len(idx)
        stats.tokens += int(headers.get("x-compute-tokens", 0))
        if check is not None:
            if args.route == "openai":
                got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in json.loads(data)["data"]])
            else:
                got = np.asarray(json.loads(data), np.float32)
            want = check[idx]
            cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
            if got.shape != want.shape or cos.min() < 0.99999:
                stats.mismatch += 1
        if headers.get("connection", "").lower() == "close":
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def run_level(args, texts, check, conc, batch):
    u = urlparse(args.url)
    args.batch_now = batch
    stats = Stats()
    sigterm_state = {"sent": False}
    deadline = time.perf_counter() + args.duration
    tasks = [asyncio.create_task(client(u.hostname, u.port, args, texts, check, stats, deadline, sigterm_state))
             for _ in range(conc)]
    if args.sigterm_after is not None:
        async def killer():
            await asyncio.sleep(args.sigterm_after)
            sigterm_state["sent"] = True
            os.kill(args.server_pid, signal.SIGTERM)
        asyncio.create_task(killer())
    t0 = time.perf_counter()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    return stats, wall


def _level_in_process(job):
    """One process's share of a level (--processes): returns plain data for aggregation."""
    args, texts, check, conc, batch = job
    stats, wall = asyncio.run(run_level(args, texts, check, conc, batch))
    return dict(lat=stats.lat, texts=stats.texts, tokens=stats.tokens, errors=stats.errors,
                mismatch=stats.mismatch, refused=stats.refused_after_sigterm, wall=wall)


def run_level_processes(args, texts, check, conc, batch):
    procs = max(1, min(args.processes, conc))
    shares = [conc // procs + (1 if i < conc % procs else 0) for i in range(procs)]
    if procs == 1:
        parts = [_level_in_process((args, texts, check, conc, batch))]
    else:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(procs) as pool:
            parts = pool.map(_level_in_process, [(args, texts, check, c, batch) for c in shares])
    stats = Stats()
    for p in parts:
        stats.lat += p["lat"]
        stats.texts += p["texts"]
        stats.tokens += p["tokens"]
        stats.mismatch += p["mismatch"]
        stats.refused_after_sigterm += p["refused"]
        for k, v in p["errors"].items():
            stats.errors[k] = stats.errors.get(k, 0) + v
    return stats, max(p["wall"] for p in parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--texts", required=True, help="one text per line (the lines the --check npy was made from)")
    ap.add_argument("--limit", type=int, default=0, help="use the first N lines")
    ap.add_argument("--check", help="offline embeddings (npy) of the same lines: verify every result")
    ap.add_argument("--concurrency", default="1,16,256")
    ap.add_argument("--batch", default="1,32", help="texts per request")
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--route", choices=["tei", "openai"], default="tei")
    ap.add_argument("--sigterm-after", type=float)
    ap.add_argument("--server-pid", type=int)
    ap.add_argument("--processes", type=int, default=1, help="client processes sharing the connections")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    texts = open(args.texts, encoding="utf-8").read().split("\n")
    if texts and texts[-1] == "":
        texts.pop()
    if args.limit:
        texts = texts[:args.limit]
    check = np.load(args.check) if args.check else None
    if check is not None:
        check = check[:len(texts)]
    keep = [i for i, t in enumerate(texts) if t.strip()]  # the server rejects empty inputs
    texts = [texts[i] for i in keep]
    if check is not None:
        check = check[keep]
    results = []
    print(f"| route | concurrency | texts/request | requests/s | texts/s | tokens/s | p50 ms | p99 ms | errors | wrong results |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for conc in [int(x) for x in args.concurrency.split(",")]:
        for batch in [int(x) for x in args.batch.split(",")]:
            stats, wall = run_level_processes(args, texts, check, conc, batch)
            n = len(stats.lat)
            p50 = statistics.median(stats.lat) * 1000 if n else float("nan")
            p99 = (sorted(stats.lat)[int(0.99 * (n - 1))] * 1000) if n else float("nan")
            r = dict(route=args.route, concurrency=conc, batch=batch, requests=n, wall_s=wall,
                     requests_per_s=n / wall, texts_per_s=stats.texts / wall, tokens_per_s=stats.tokens / wall,
                     p50_ms=p50, p99_ms=p99, errors=stats.errors, wrong_results=stats.mismatch,
                     refused_after_sigterm=stats.refused_after_sigterm)
            results.append(r)
            errs = ", ".join(f"{k}: {v}" for k, v in stats.errors.items()) or "0"
            print(f"| {args.route} | {conc} | {batch} | {r['requests_per_s']:.1f} | {r['texts_per_s']:.1f} | "
                  f"{r['tokens_per_s']:.0f} | {p50:.1f} | {p99:.1f} | {errs} | {stats.mismatch} |", flush=True)
            if args.sigterm_after is not None:
                print(f"SIGTERM after {args.sigterm_after}s: {n} requests completed, "
                      f"{stats.refused_after_sigterm} clients refused afterwards", flush=True)
                break
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    bad = sum(r["wrong_results"] for r in results) + sum(
        v for r in results for k, v in r["errors"].items() if k != "http 429")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
