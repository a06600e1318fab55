"""Shared fixtures: the embedkit binary and the default model's directory."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def embedkit_bin():
    b = Path(os.environ.get("EMBEDKIT_BIN", ROOT / "build" / "embedkit"))
    if not b.exists():
        pytest.fail(f"{b} not built: run scripts/test.sh (or cmake + ninja)")
    return b


@pytest.fixture(scope="session")
def minilm_dir():
    home = Path(os.environ.get("EMBEDKIT_HOME", Path.home() / ".cache" / "embedkit"))
    d = home / "models" / "sentence-transformers" / "all-MiniLM-L6-v2"
    if not (d / "model.safetensors").exists():
        pytest.fail(f"{d} missing: run scripts/fetch-default-model.sh")
    return d
