#!/usr/bin/env python3
"""Server throughput against offline throughput on the same texts (issue 4's bar: at
concurrency >= 64 the server reaches >= 90% of `embedkit embed` on CPU, >= 80% on the GPU).

Runs, interleaved `--reps` times: `embedkit embed` on the texts (texts/s from its own "embed
total", model load excluded), then `embedkit serve` under bench/server_load.py at each
concurrency and request size (texts/s over the timed window). Prints a table with medians,
ratios and the machine's load average (others' work skews small machines). `--client wrk` loads
the server with wrk (bench/server_wrk.py) instead of the Python clients, whose CPU time shares the
server's cores on a small machine.

  python3 bench/server_vs_offline.py --bin build/embedkit --texts lines.txt -n 3000 --reps 3
"""
import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))
import server_load  # noqa: E402
from server_util import Server  # noqa: E402


def offline(binary, model, path, extra):
    out = subprocess.run([binary, "embed", "-m", model, "-i", path, "-f", "npy", "-o", os.devnull, "--timings", *extra],
                         capture_output=True, text=True, check=True).stderr
    m = re.search(r"embed total\s+([\d.]+) s\s+\((\d+) texts/s", out)
    return float(m.group(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="build/embedkit")
    ap.add_argument("--model", default=str(Path.home() / ".cache/embedkit/models/sentence-transformers/all-MiniLM-L6-v2"))
    ap.add_argument("--texts", required=True)
    ap.add_argument("-n", type=int, default=3000, help="texts (non-empty lines) used")
    ap.add_argument("--concurrency", default="64,256")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--route", default="openai", choices=["openai", "tei"])
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--client", choices=["python", "wrk"], default="python",
                    help="load generator: bench/server_load.py (asyncio; ~0.2 ms of CPU a request, on the "
                         "server's cores) or wrk through bench/server_wrk.py (a few µs a request)")
    ap.add_argument("--wrk-threads", type=int, default=2)
    args = ap.parse_args()
    lines = [l for l in open(args.texts, encoding="utf-8").read().split("\n") if l.strip()][:args.n]
    tmp = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8")
    tmp.write("\n".join(lines) + "\n")
    tmp.close()
    dev = ["--device", args.device]
    off, srv = [], {}
    for rep in range(args.reps):
        off.append(offline(args.bin, args.model, tmp.name, dev))
        print(f"rep {rep}: offline {off[-1]:.0f} texts/s (load {os.getloadavg()[0]:.2f})", flush=True)
        with Server(args.bin, args.model, "--auto-truncate", "--log-level", "warn", *dev) as s:
            if args.client == "wrk":
                with tempfile.NamedTemporaryFile(suffix=".json") as js:
                    subprocess.run([sys.executable, str(HERE / "server_wrk.py"), "--url", s.url, "--texts", tmp.name,
                                    "--route", args.route, "--concurrency", args.concurrency, "--batch", args.batch,
                                    "--duration", str(args.duration), "--threads", str(args.wrk_threads),
                                    "--server-pid", str(s.proc.pid), "--json", js.name],
                                   check=True, capture_output=True, text=True)
                    levels = [(row["concurrency"], row["batch"], row["texts_per_s"],
                               {k: v for k, v in (("non-2xx", row["non2xx"]), ("socket", row["socket_errors"])) if v})
                              for row in json.load(open(js.name))["rows"]]
            else:
                levels = []
                for conc in map(int, args.concurrency.split(",")):
                    for batch in map(int, args.batch.split(",")):
                        la = argparse.Namespace(url=s.url, route=args.route, batch_now=batch, sigterm_after=None,
                                                processes=args.processes, duration=args.duration, server_pid=None)
                        stats, wall = server_load.run_level_processes(la, lines, None, conc, batch)
                        levels.append((conc, batch, stats.texts / wall, stats.errors or {}))
            for conc, batch, tps, errors in levels:
                srv.setdefault((conc, batch), []).append((tps, errors))
                print(f"rep {rep}: server c={conc} b={batch}: {tps:.0f} texts/s, errors {sum(errors.values())} "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
            assert s.stop() == 0
    # One more offline run closes the last rep: each rep's server runs sit between two offline runs.
    off.append(offline(args.bin, args.model, tmp.name, dev))
    print(f"offline {off[-1]:.0f} texts/s (load {os.getloadavg()[0]:.2f})", flush=True)
    base = statistics.median(off)
    print(f"\noffline `embedkit embed`: median {base:.0f} texts/s over {len(off)} runs ({', '.join(f'{x:.0f}' for x in off)})")
    # A shared VM's speed drifts by tens of per cent within minutes: besides the ratio of medians,
    # each server run is divided by the mean of the offline runs just before and just after its rep
    # (paired), and the median of those ratios is reported — the figure the drift moves least.
    print("| concurrency | texts/request | server texts/s (median) | runs | ÷ offline median | ÷ neighbouring offline runs (median; each rep) | errors |")
    print("|---:|---:|---:|---|---:|---|---|")
    for (conc, batch), runs in srv.items():
        med = statistics.median(r[0] for r in runs)
        errs = sum(sum(r[1].values()) for r in runs)
        paired = [r[0] / ((off[i] + off[i + 1]) / 2) for i, r in enumerate(runs)]
        print(f"| {conc} | {batch} | {med:.0f} | {', '.join(f'{r[0]:.0f}' for r in runs)} | {med / base:.2f}× | "
              f"**{statistics.median(paired):.2f}×** ({', '.join(f'{x:.2f}' for x in paired)}) | {errs} |")
    os.unlink(tmp.name)


if __name__ == "__main__":
    main()
