#!/usr/bin/env python3
"""CPU throughput, side by side in one run: EmbedKit (CLI) vs ONNX Runtime fp32, all-MiniLM-L6-v2.

Workload: the first N lines (default 10,000) of a real-text corpus (build/corpus/lines.txt from
tools/build_corpus.py), one text per line.

ONNX Runtime (the transformer exported by bench/export_onnx.py; exported here when missing):
  InferenceSession, ORT_ENABLE_ALL, intra_op_num_threads = THREADS, inter_op_num_threads = 1.
  Texts .strip()-ed as sentence-transformers does, tokenized with HF `tokenizers` (Rust, fast;
  truncation at max_seq_length, RAYON_NUM_THREADS = THREADS), sorted longest first by token count
  (its best case: at least as good as sentence-transformers' sort by characters), padded per
  batch, mean pooling + L2 normalize in numpy. Timed: tokenization + inference + pooling, not
  session creation. Every batch size in --ort-batch-sizes is run; the best counts.
EmbedKit: `embedkit embed -i FILE -f npy -o OUT -t THREADS --batch-tokens B`; timed: the whole
  process (start, model load, tokenization, forward, npy write). Every budget in --batch-tokens
  is run; the best counts.

Each engine gets a warm-up run before timing; each timed config runs --reps times (default 3)
and the median counts. The repetitions run in rounds, every config once per round with ORT and
EmbedKit alternating, so that load from other processes (shared machine) hits both engines alike;
the CPU time other processes took during each timed run is measured (/proc/stat) and reported.
Before each timed run the script waits (up to --quiet-wait s) for a quiet 3 s window, and a run
during which other processes used more than --max-others cores is discarded and repeated. Outputs must agree: per-text cosine EmbedKit vs ORT, min >= 0.99999.
Tokens = real tokens after truncation, special tokens included (padding not counted).
Prints a Markdown table and writes it, with the run's details, as JSON to bench/out/.

  python3 bench/cpu_vs_onnxruntime.py                      # defaults: 10,000 lines, 2 threads
  python3 bench/cpu_vs_onnxruntime.py -n 2000 --reps 1     # quick look
"""
import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.expanduser("~/.cache/embedkit/models/sentence-transformers/all-MiniLM-L6-v2")
COS_BAR = 0.99999


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=os.path.join(ROOT, "build/corpus/lines.txt"))
    ap.add_argument("-n", "--lines", type=int, default=10000, help="first N lines of the corpus")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model directory (HF layout)")
    ap.add_argument("--onnx", default=os.path.join(ROOT, "bench/out/all-MiniLM-L6-v2.onnx"),
                    help="exported transformer (made with bench/export_onnx.py when missing)")
    ap.add_argument("--embedkit", default=os.path.join(ROOT, "build/embedkit"))
    ap.add_argument("--ort-batch-sizes", default="8,16,32,64,128")
    ap.add_argument("--batch-tokens", default="2048,4096,8192,16384")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "bench/out"))
    ap.add_argument("--max-others", type=float, default=0.15,
                    help="a timed run during which other processes used more CPU than this (cores) is discarded "
                         "and repeated (shared machines); a large value turns this off")
    ap.add_argument("--max-retries", type=int, default=4, help="repeats of a discarded run before keeping it")
    ap.add_argument("--quiet-wait", type=float, default=900,
                    help="before each timed run, wait up to this many seconds for other processes to go quiet")
    ap.add_argument("--note", default="", help="free text stored with the result (e.g. 'shared machine')")
    return ap.parse_args()


def read_lines(path, n):
    # Split on "\n" only, as the CLI's std::getline does (str.splitlines would also split on
    # \x0b, \x1c, U+2028, ...).
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if len(lines) < n:
        sys.exit(f"{path}: {len(lines)} lines, fewer than the {n} asked for")
    return lines[:n]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    fl = set(line.split(":", 1)[1].split())
                    return [x for x in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if x in fl]
    except OSError:
        pass
    return []


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def git_commit():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def file_identity(path):
    """mtime and sha256 prefix: others may rebuild the binary while a run is going on."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path)).astimezone().isoformat(timespec="seconds")
    return {"path": path, "mtime": mtime, "sha256": h.hexdigest()[:16]}


class ForeignLoad:
    """CPU time used by other processes during a timed run, in cores (0 = the machine was ours).

    /proc/stat's busy ticks minus this process's and its waited-for children's CPU time."""

    HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _busy():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / ForeignLoad.HZ
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _own():
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    def __enter__(self):
        self.b0, self.o0, self.t0 = self._busy(), self._own(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        b1, o1 = self._busy(), self._own()
        self.cores = None if self.b0 is None or wall <= 0 else max(0.0, ((b1 - self.b0) - (o1 - self.o0)) / wall)
        return False


def wait_for_quiet(max_cores, limit_s, window_s=3.0):
    """Waits until other processes use at most max_cores over a window; returns seconds waited, None on timeout."""
    t0 = time.perf_counter()
    while True:
        with ForeignLoad() as fl:
            time.sleep(window_s)
        if fl.cores is None or fl.cores <= max_cores:
            return time.perf_counter() - t0 - window_s
        if time.perf_counter() - t0 > limit_s:
            return None


def load_npy(path):
    import numpy as np
    return np.load(path)


# ---------------------------------------------------------------- ONNX Runtime

class OrtEngine:
    def __init__(self, onnx_path, model_dir, threads, max_len):
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.np = np
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.sess.get_inputs()}
        self.tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(max_len)

    def run(self, texts, batch_size):
        """Returns (embeddings in input order [n, dim], seconds). Timed: tokenize → sort → batches → pool."""
        np = self.np
        t0 = time.perf_counter()
        enc = self.tok.encode_batch([t.strip() for t in texts])
        lens = np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(enc))
        order = np.argsort(-lens, kind="stable")
        out = None
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            L = int(lens[idx].max())
            ids = np.zeros((len(idx), L), dtype=np.int64)
            tt = np.zeros((len(idx), L), dtype=np.int64)
            mask = np.zeros((len(idx), L), dtype=np.int64)
            for r, i in enumerate(idx):
                e = enc[i]
                n = len(e.ids)
                ids[r, :n] = e.ids
                tt[r, :n] = e.type_ids
                mask[r, :n] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.input_names:
                feed["token_type_ids"] = tt
            h = self.sess.run(["last_hidden_state"], feed)[0]
            m = mask[:, :, None].astype(np.float32)
            emb = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
        return out, time.perf_counter() - t0


# ---------------------------------------------------------------- EmbedKit

def run_embedkit(binary, model_dir, input_path, out_path, threads, batch_tokens):
    cmd = [binary, "embed", "-m", model_dir, "-i", input_path, "-f", "npy", "-o", out_path, "-t", str(threads),
           "--batch-tokens", str(batch_tokens)]
    if os.path.exists(out_path):
        os.remove(out_path)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"embedkit failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return dt


def make_row(engine, config, times, others, n_texts, tokens, **extra):
    med = statistics.median(times)
    known = [o for o in others if o is not None]
    return {"engine": engine, "config": config, **extra, "times_s": times, "median_s": med, "min_s": min(times),
            "sentences_per_s": n_texts / med, "tokens_per_s": tokens / med,
            "others_cpu_cores": others, "others_cpu_cores_median": statistics.median(known) if known else None}


def fmt_times(times, others):
    o = " ".join("?" if x is None else f"{x:.2f}" for x in others)
    return f"{' '.join(f'{t:.2f}' for t in times)} s (other processes' CPU, cores: {o})"


def fmt_int(x):
    return f"{x:,.0f}"


def main():
    args = parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))  # HF tokenizers' thread pool
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import numpy as np
    import onnxruntime as ort
    import tokenizers

    model_dir = os.path.expanduser(args.model)
    with open(os.path.join(model_dir, "sentence_bert_config.json")) as f:
        max_len = int(json.load(f).get("max_seq_length", 256))
    ort_bs = [int(x) for x in args.ort_batch_sizes.split(",") if x]
    ek_bt = [int(x) for x in args.batch_tokens.split(",") if x]
    os.makedirs(args.out_dir, exist_ok=True)

    if not os.path.exists(args.onnx):
        print(f"[export] {args.onnx} missing: running bench/export_onnx.py", flush=True)
        subprocess.run([sys.executable, os.path.join(ROOT, "bench/export_onnx.py"), "--model", model_dir,
                        "--out", args.onnx], check=True)
    if not os.path.exists(args.embedkit):
        sys.exit(f"{args.embedkit}: not built (ninja -C build embedkit)")

    raw = read_lines(args.corpus, args.lines)
    texts = [b.decode("utf-8") for b in raw]
    input_path = os.path.join(args.out_dir, f"cpu_bench_input_{args.lines}.txt")
    with open(input_path, "wb") as f:
        f.write(b"\n".join(raw) + b"\n")

    load_start = loadavg()
    commit = git_commit()
    binary_start = file_identity(args.embedkit)
    ek_version = subprocess.run([args.embedkit, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"{len(texts)} texts from {args.corpus}; {args.threads} threads; CPU {cpu_model()}; "
          f"load average {load_start}", flush=True)

    # ---- ONNX Runtime
    ort_engine = OrtEngine(args.onnx, model_dir, args.threads, max_len)
    enc = ort_engine.tok.encode_batch([t.strip() for t in texts])
    lengths = np.array([len(e.ids) for e in enc])
    tokens = int(lengths.sum())
    print(f"tokens: {tokens:,} (mean {lengths.mean():.1f}, max {lengths.max()}, "
          f"{(lengths >= max_len).sum()} truncated at {max_len})", flush=True)

    # Warm-ups, then rounds: every round runs every config once (ORT and EmbedKit alternating),
    # so load from other processes on a shared machine falls on both engines alike.
    print("[ort] warm-up", flush=True)
    ort_engine.run(texts, ort_bs[len(ort_bs) // 2])
    one = os.path.join(args.out_dir, "cpu_bench_one.txt")
    with open(one, "wb") as f:
        f.write(raw[0] + b"\n")
    npy = os.path.join(args.out_dir, "cpu_bench_embedkit.npy")
    print("[embedkit] warm-up", flush=True)
    run_embedkit(args.embedkit, model_dir, input_path, npy, args.threads, ek_bt[len(ek_bt) // 2])
    # Start-up cost (process + model load + one text), for reading the whole-process times.
    wait_for_quiet(args.max_others, min(args.quiet_wait, 120))
    startup = statistics.median(run_embedkit(args.embedkit, model_dir, one, npy, args.threads, ek_bt[0])
                                for _ in range(max(3, args.reps)))
    print(f"[embedkit] start-up (1 text, model load included): {startup * 1000:.0f} ms", flush=True)

    configs = [("ort", bs) for bs in ort_bs] + [("ek", bt) for bt in ek_bt]
    times = {c: [] for c in configs}
    others = {c: [] for c in configs}
    ort_emb, ek_emb = {}, {}
    discarded = []
    for rep in range(args.reps):
        # ORT and EmbedKit configs alternate within a round: ort, ek, ort, ek, ...
        ort_c = [c for c in configs if c[0] == "ort"]
        ek_c = [c for c in configs if c[0] == "ek"]
        order = [c for pair in zip(ort_c, ek_c) for c in pair] + ort_c[len(ek_c):] + ek_c[len(ort_c):]
        if rep % 2:
            order.reverse()
        for c in order:
            name = f"[ort] batch {c[1]:4d}" if c[0] == "ort" else f"[embedkit] batch-tokens {c[1]:5d}"
            for attempt in range(args.max_retries + 1):
                waited = wait_for_quiet(args.max_others, args.quiet_wait)
                if waited is None:
                    print(f"  (no quiet window within {args.quiet_wait:.0f} s; running anyway)", flush=True)
                elif waited > 1:
                    print(f"  (waited {waited:.0f} s for other processes to go quiet)", flush=True)
                with ForeignLoad() as fl:
                    if c[0] == "ort":
                        emb, dt = ort_engine.run(texts, c[1])
                        ort_emb[c[1]] = emb
                    else:
                        dt = run_embedkit(args.embedkit, model_dir, input_path, npy, args.threads, c[1])
                        ek_emb[c[1]] = load_npy(npy)
                busy = fl.cores is not None and fl.cores > args.max_others
                print(f"round {rep + 1}/{args.reps} {name}: {dt:.2f} s, {len(texts) / dt:,.0f} sent/s "
                      f"(other processes' CPU: {'?' if fl.cores is None else format(fl.cores, '.2f')} cores"
                      f"{'; discarded, retrying' if busy and attempt < args.max_retries else ''})", flush=True)
                if not busy or attempt == args.max_retries:
                    break
                discarded.append({"config": name.strip(), "time_s": dt, "others_cpu_cores": fl.cores})
            times[c].append(dt)
            others[c].append(fl.cores)
    del ort_engine

    rows = []
    for c in configs:
        if c[0] == "ort":
            rows.append(make_row("ONNX Runtime fp32", f"batch {c[1]}", times[c], others[c], len(texts), tokens,
                                 batch_size=c[1]))
        else:
            rows.append(make_row("EmbedKit", f"--batch-tokens {c[1]}", times[c], others[c], len(texts), tokens,
                                 batch_tokens=c[1]))
        print(f"{rows[-1]['engine']} {rows[-1]['config']}: {fmt_times(times[c], others[c])} -> "
              f"{rows[-1]['sentences_per_s']:,.0f} sent/s (median)", flush=True)
    load_end = loadavg()
    binary_end = file_identity(args.embedkit)
    if binary_end != binary_start:
        print(f"WARNING: {args.embedkit} changed during the run ({binary_start} -> {binary_end}); "
              f"EmbedKit rows may mix two builds", file=sys.stderr)

    # ---- agreement
    ort_rows = [r for r in rows if r["engine"] != "EmbedKit"]
    ek_rows = [r for r in rows if r["engine"] == "EmbedKit"]
    best_ort = max(ort_rows, key=lambda r: r["sentences_per_s"])
    best_ek = max(ek_rows, key=lambda r: r["sentences_per_s"])
    ref = ort_emb[best_ort["batch_size"]]
    agreement = {}
    for bt, e in ek_emb.items():
        if e.shape != ref.shape:
            sys.exit(f"EmbedKit output shape {e.shape} != ORT {ref.shape}")
        cos = (e * ref).sum(1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(ref, axis=1))
        agreement[bt] = {"min": float(cos.min()), "mean": float(cos.mean()), "argmin": int(cos.argmin())}
    for r in rows:
        r["vs_best_ort"] = r["sentences_per_s"] / best_ort["sentences_per_s"]
    worst = min(a["min"] for a in agreement.values())
    best_agree = agreement[best_ek["batch_tokens"]]

    # ---- report
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git_commit": commit,
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "threads": args.threads,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "note": args.note,
        "corpus": os.path.relpath(args.corpus, ROOT) if args.corpus.startswith(ROOT) else args.corpus,
        "texts": len(texts),
        "tokens": tokens,
        "mean_tokens": float(lengths.mean()),
        "max_seq_length": max_len,
        "reps": args.reps,
        "embedkit_version": ek_version,
        "embedkit_binary": binary_start,
        "embedkit_binary_changed_during_run": binary_end != binary_start,
        "embedkit_startup_s": startup,
        "versions": {"python": platform.python_version(), "onnxruntime": ort.__version__,
                     "tokenizers": tokenizers.__version__, "numpy": np.__version__},
        "ort_best_batch_size": best_ort["batch_size"],
        "embedkit_best_batch_tokens": best_ek["batch_tokens"],
        "ratio_embedkit_over_best_ort": best_ek["sentences_per_s"] / best_ort["sentences_per_s"],
        "cosine_vs_ort": {str(k): v for k, v in agreement.items()},
        "cosine_bar": COS_BAR,
        "cosine_ok": worst >= COS_BAR,
        "max_others_cores": args.max_others,
        "discarded_runs": discarded,
        "rows": rows,
    }

    lines = [
        "| engine | config | sentences/s | tokens/s | ÷ best ORT | others' CPU |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        star = " **(best)**" if r is best_ort or r is best_ek else ""
        lines.append(f"| {r['engine']} | {r['config']}{star} | {fmt_int(r['sentences_per_s'])} | "
                     f"{fmt_int(r['tokens_per_s'])} | {r['vs_best_ort']:.2f}× | "
                     f"{'?' if r['others_cpu_cores_median'] is None else format(r['others_cpu_cores_median'], '.2f')} |")
    table = "\n".join(lines)
    summary = (
        f"**EmbedKit ÷ best ORT: {info['ratio_embedkit_over_best_ort']:.2f}×** "
        f"(EmbedKit --batch-tokens {best_ek['batch_tokens']} vs ORT batch {best_ort['batch_size']}).  \n"
        f"Cosine EmbedKit vs ORT, per text: min {best_agree['min']:.7f}, mean {best_agree['mean']:.8f} "
        f"(worst over all EmbedKit configs {worst:.7f}; bar {COS_BAR}: {'OK' if worst >= COS_BAR else 'FAIL'}).  \n"
        f"{len(texts):,} texts, {tokens:,} tokens (mean {lengths.mean():.1f}, truncation at {max_len}); "
        f"median of {args.reps}; \"others' CPU\" = cores used by other processes during the timed runs "
        f"(median; 0 = quiet machine); EmbedKit times are whole-process (start-up incl. model load "
        f"{startup * 1000:.0f} ms), ORT times exclude session creation.  \n"
        f"CPU: {info['cpu']} ({os.cpu_count()} logical CPUs; {', '.join(info['cpu_flags'])}), "
        f"{args.threads} threads; load average {load_start} → {load_end}"
        f"{'; ' + args.note if args.note else ''}.  \n"
        f"{info['date']}, commit {info['git_commit']}, {ek_version}, onnxruntime {ort.__version__}, "
        f"tokenizers {tokenizers.__version__}, numpy {np.__version__}, Python {platform.python_version()}."
    )
    info["markdown"] = table + "\n\n" + summary
    print()
    print(table)
    print()
    print(summary)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_json = os.path.join(args.out_dir, f"cpu_vs_onnxruntime-{stamp}.json")
    with open(out_json, "w") as f:
        json.dump(info, f, indent=2, ensure_ascii=False)
    print(f"\nwrote {out_json}")
    return 0 if worst >= COS_BAR else 1


if __name__ == "__main__":
    sys.exit(main())
