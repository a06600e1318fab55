#!/usr/bin/env python3
"""Build EmbedBench's short / mixed / long corpora (bench/corpora/*.txt) from real text.

Input is the real-text corpus of tools/build_corpus.py (gettext catalogs, man pages, Debian
docs, licenses, Python sources of this machine; one text per line). The three sets are small
enough to ship in the repository, so benchmark numbers from different machines use the same
texts:

* short.txt  2,000 lines of 20-100 characters with at least 3 words (UI messages, man-page
             sentences): the `latency` scenario's queries.
* mixed.txt  2,000 lines drawn by length band (50% under 100 characters, 30% 100-300,
             20% over 300) so a batch mixes short and long texts: the `throughput` scenario.
* long.txt   400 texts of at least 1,000 characters (about 256+ tokens, the MiniLM limit),
             each one long line or consecutive long lines of the shuffled corpus joined with a
             space: the `memory` scenario.

Deterministic for a given input (fixed seed).
Usage: python3 tools/make_bench_corpora.py [--lines build/corpus/lines.txt] [--out bench/corpora]
"""
import argparse
import random
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", default="build/corpus/lines.txt")
    ap.add_argument("--out", default="bench/corpora")
    a = ap.parse_args()
    lines = [l for l in Path(a.lines).read_text(encoding="utf-8").split("\n") if l.strip()]
    rng = random.Random(20261125)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    short = [l for l in lines if 20 <= len(l) <= 100 and len(l.split()) >= 3]
    rng.shuffle(short)
    short = short[:2000]

    bands = {
        "short": [l for l in lines if len(l) < 100 and len(l.split()) >= 2],
        "medium": [l for l in lines if 100 <= len(l) < 300],
        "long": [l for l in lines if len(l) >= 300],
    }
    mixed = []
    for band, share in (("short", 0.5), ("medium", 0.3), ("long", 0.2)):
        pool = bands[band][:]
        rng.shuffle(pool)
        mixed += pool[: int(2000 * share)]
    rng.shuffle(mixed)

    long_src = [l for l in lines if len(l) >= 200]
    rng.shuffle(long_src)
    long_texts, cur = [], ""
    for l in long_src:
        cur = f"{cur} {l}" if cur else l
        if len(cur) >= 1000:
            long_texts.append(cur)
            cur = ""
        if len(long_texts) == 400:
            break

    for name, texts in (("short", short), ("mixed", mixed), ("long", long_texts)):
        (out / f"{name}.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        print(f"{name}: {len(texts)} texts, {sum(map(len, texts)) / max(1, len(texts)):.0f} chars on average")


if __name__ == "__main__":
    main()
