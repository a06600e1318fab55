"""The CPU path's GEMM kernels: OpenBLAS's own CPU detection falls back to generic SSE3 kernels
("Prescott") on CPUs newer than the library (Debian 12's 0.3.21 on an Emerald Rapids VM: ~4x
slower), and `embedkit` then re-executes itself with OPENBLAS_CORETYPE set (src/ops/blas_kernels.h).
`embedkit info` reports the kernel set in use.
"""
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

AVX2_OR_BETTER = {"Haswell", "Excavator", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"}


def cpu_flags():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def kernels(embedkit_bin, model_dir, env):
    r = subprocess.run([str(embedkit_bin), "info", "-m", str(model_dir)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    m = re.search(r"^cpu kernels:\s+OpenBLAS (\S+)", r.stdout, re.M)
    assert m, r.stdout
    return m.group(1)


# Without AVX2+FMA, OpenBLAS's generic kernels are the right ones (and its Haswell set cannot run).
needs_avx2 = pytest.mark.skipif(not {"avx2", "fma"} <= cpu_flags(), reason="this CPU has no AVX2+FMA")


def env_without_coretype():
    return {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}


@needs_avx2
def test_openblas_runs_kernels_the_cpu_supports(embedkit_bin, minilm_dir):
    core = kernels(embedkit_bin, minilm_dir, env_without_coretype())
    assert core in AVX2_OR_BETTER, f"OpenBLAS runs its {core} kernels on a CPU with AVX2+FMA"


@needs_avx2
def test_users_openblas_coretype_is_kept_and_results_agree(embedkit_bin, minilm_dir, tmp_path):
    # The user's choice stands (no re-execution over it), and the kernel set changes no result.
    texts = ["A man is eating food.", "The new movie is awesome, a long review " * 20, "x"]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n")
    out = {}
    for core in ["Haswell", None]:
        env = env_without_coretype()
        if core:
            env["OPENBLAS_CORETYPE"] = core
            assert kernels(embedkit_bin, minilm_dir, env) == core
        npy = tmp_path / f"{core}.npy"
        r = subprocess.run([str(embedkit_bin), "embed", "-m", str(minilm_dir), "-i", str(src), "-f", "npy", "-o", str(npy)],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        out[core] = np.load(npy)
    cos = (out["Haswell"] * out[None]).sum(1)
    assert cos.min() >= 0.99999, cos
