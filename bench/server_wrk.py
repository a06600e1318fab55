#!/usr/bin/env python3
"""Loopback load on `embedkit serve` with wrk (an epoll HTTP load generator in C): requests/s,
texts/s, p50/p90/p99 latency and errors per concurrency and texts per request, beside an offline
reference rate, with the CPU seconds each side used and the server's own means (/metrics: request,
queue and inference ms per request, inputs per batch).

wrk costs a few µs per request, so a single-text run measures the server rather than the client
(EmbedBench's C++ client, a thread per connection, took ~40 µs of CPU per request). It checks
status codes, not embeddings: `bench/server_load.py --check` is the correctness run.

  python3 bench/server_wrk.py --url http://127.0.0.1:8080 --texts texts.txt --server-pid PID \\
      [--offline-texts-per-s 250000] [--concurrency 64,256,1024] [--batch 1,32] [--duration 8]

Each request carries `batch` consecutive lines of --texts (JSON-escaped here, ahead of the run)
to --route (openai: /v1/embeddings, base64 answers, inputs over the model's length refused as
OpenAI does; tei: /embed, float answers, "truncate": true).
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

LUA = r"""
local reqs = {}
local counter = 0
local idx = 0
setup = function(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
init = function(args)
  for line in io.lines(args[2]) do
    reqs[#reqs + 1] = wrk.format("POST", args[1], {["Content-Type"] = "application/json"}, line)
  end
  idx = (tid * 7919) % #reqs
end
request = function()
  idx = idx % #reqs + 1
  return reqs[idx]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def proc_cpu_s(pid):
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# Server-side means over a run, from /metrics before and after it (sums and counts of TEI's
# histograms): where a request's time goes on the server (ms) and how big the model batches were.
BREAKDOWN = {"request_ms": "te_request_duration", "tokenize_ms": "te_request_tokenization_duration",
             "queue_ms": "te_request_queue_duration", "inference_ms": "te_request_inference_duration",
             "batch_inputs": "te_batch_next_size", "batch_ms": "te_batch_inference_duration"}


def metrics(url):
    try:
        text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("te_") and ("_sum " in line or "_count " in line):
            name, value = line.split()
            out[name] = float(value)
    return out


def breakdown(before, after):
    out = {}
    for key, name in BREAKDOWN.items():
        n = after.get(name + "_count", 0) - before.get(name + "_count", 0)
        if n > 0:
            total = after.get(name + "_sum", 0) - before.get(name + "_sum", 0)
            out[key] = total / n * (1e3 if key.endswith("_ms") else 1)
    return out


def bodies(texts, batch, route):
    out = []
    for i in range(0, len(texts) - batch + 1, batch):
        chunk = texts[i:i + batch]
        if route == "openai":
            b = {"input": chunk[0] if batch == 1 else chunk, "model": "m", "encoding_format": "base64"}
        else:
            b = {"inputs": chunk[0] if batch == 1 else chunk, "truncate": True}
        out.append(json.dumps(b, ensure_ascii=False))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--texts", required=True, help="one text per line")
    ap.add_argument("--route", choices=["openai", "tei"], default="openai")
    ap.add_argument("--concurrency", default="64,256,1024")
    ap.add_argument("--batch", default="1,32", help="texts per request, comma-separated")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per level (after a 2-s warm-up)")
    ap.add_argument("--threads", type=int, default=4, help="wrk threads (at most the connections)")
    ap.add_argument("--server-pid", type=int, default=0, help="read the server's CPU seconds from /proc")
    ap.add_argument("--offline-texts-per-s", type=float, default=0, help="reference for the ÷ offline column")
    ap.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()

    texts = [l.rstrip("\n") for l in open(a.texts, encoding="utf-8") if l.strip()]
    path = "/v1/embeddings" if a.route == "openai" else "/embed"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lua = os.path.join(tmp, "load.lua")
        open(lua, "w").write(LUA)
        for batch in [int(b) for b in a.batch.split(",")]:
            bfile = os.path.join(tmp, f"bodies_{batch}.txt")
            with open(bfile, "w", encoding="utf-8") as f:
                f.write("\n".join(bodies(texts, batch, a.route)) + "\n")
            for conc in [int(c) for c in a.concurrency.split(",")]:
                threads = max(1, min(a.threads, conc))
                base = [a.wrk, "-t", str(threads), "-c", str(conc), "--timeout", "30s", "-s", lua, a.url + path, "--", path, bfile]
                subprocess.run(base[:5] + ["-d", "2s"] + base[5:], capture_output=True, text=True)  # warm-up
                m0 = metrics(a.url)
                s0, c0, t0 = proc_cpu_s(a.server_pid), children_cpu_s(), time.time()
                p = subprocess.run(base[:5] + ["-d", f"{a.duration:g}s"] + base[5:], capture_output=True, text=True)
                s1, c1, t1 = proc_cpu_s(a.server_pid), children_cpu_s(), time.time()
                server = breakdown(m0, metrics(a.url))
                line = next((l for l in p.stdout.splitlines() if l.startswith("WRK_JSON ")), None)
                if line is None:
                    print(f"wrk failed (rc {p.returncode}): {p.stdout[-500:]} {p.stderr[-500:]}", file=sys.stderr)
                    continue
                w = json.loads(line[len("WRK_JSON "):])
                secs = w["duration_us"] / 1e6
                errors = w["non2xx"] + w["connect"] + w["read"] + w["write"] + w["timeout"]
                ok = w["requests"] - w["non2xx"]
                row = dict(batch=batch, concurrency=conc, requests_per_s=w["requests"] / secs,
                           texts_per_s=ok * batch / secs, p50_ms=w["p50_us"] / 1e3, p90_ms=w["p90_us"] / 1e3,
                           p99_ms=w["p99_us"] / 1e3, mean_ms=w["mean_us"] / 1e3, non2xx=w["non2xx"],
                           socket_errors=errors - w["non2xx"], server_cpu_s=s1 - s0, client_cpu_s=c1 - c0,
                           wall_s=t1 - t0, requests=w["requests"], server=server)
                if a.offline_texts_per_s:
                    row["vs_offline"] = row["texts_per_s"] / a.offline_texts_per_s
                rows.append(row)
                print(f"batch {batch} c{conc}: {row['requests_per_s']:.0f} req/s, {row['texts_per_s']:.0f} texts/s"
                      + (f" ({row['vs_offline']:.2f}x offline)" if a.offline_texts_per_s else "")
                      + f", p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, non-2xx {w['non2xx']}, socket errors "
                      f"{row['socket_errors']}; server {row['server_cpu_s']:.1f} CPU-s, wrk {row['client_cpu_s']:.1f} CPU-s "
                      f"over {row['wall_s']:.1f} s; server means: "
                      + ", ".join(f"{k} {v:.3f}" if k.endswith("_ms") else f"{k} {v:.1f}" for k, v in server.items()),
                      flush=True)
    print("| texts/request | concurrency | requests/s | texts/s | ÷ offline | p50 ms | p99 ms | non-2xx | socket errors |"
          " server CPU µs/request | server ms: request / queue / inference | inputs per batch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        vs = f"{r['vs_offline']:.2f}×" if "vs_offline" in r else "–"
        per = 1e6 * r["server_cpu_s"] / max(1, r["requests"]) if a.server_pid else float("nan")
        print(f"| {r['batch']} | {r['concurrency']} | {r['requests_per_s']:,.0f} | {r['texts_per_s']:,.0f} | {vs} | "
              f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['non2xx']} | {r['socket_errors']} | {per:.1f} | "
              + (" / ".join(f"{r['server'].get(k, float('nan')):.3f}" for k in ("request_ms", "queue_ms", "inference_ms"))
                 + f" | {r['server'].get('batch_inputs', float('nan')):.1f} |"))
    if a.json:
        json.dump(dict(rows=rows, offline_texts_per_s=a.offline_texts_per_s, route=a.route), open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
