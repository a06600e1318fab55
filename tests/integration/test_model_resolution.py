"""--model resolution as documented: local directory, EmbedKit's store ($EMBEDKIT_HOME/models/org/name),
and the Hugging Face hub cache layout ($HF_HOME/hub/models--org--name/snapshots/<refs/main>), offline."""
import os
import subprocess
from pathlib import Path


def link_model(src: Path, dst: Path):
    dst.mkdir(parents=True)
    for f in src.rglob("*"):
        if f.is_file():
            target = dst / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(f)


def info(embedkit_bin, model, env):
    res = subprocess.run([str(embedkit_bin), "info", "-m", model], capture_output=True, text=True,
                         env={**os.environ, **env})
    return res


def test_hf_cache_layout_with_refs_main(embedkit_bin, minilm_dir, tmp_path):
    repo = tmp_path / "hf" / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    link_model(Path(minilm_dir), repo / "snapshots" / "0123abcd")
    (repo / "snapshots" / "older").mkdir()  # a stale snapshot that refs/main does not name
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    res = info(embedkit_bin, "sentence-transformers/all-MiniLM-L6-v2",
               {"HF_HOME": str(tmp_path / "hf"), "EMBEDKIT_HOME": str(tmp_path / "empty")})
    assert res.returncode == 0, res.stderr
    assert "snapshots/0123abcd" in res.stdout


def test_embedkit_store_comes_before_hf_cache(embedkit_bin, minilm_dir, tmp_path):
    link_model(Path(minilm_dir), tmp_path / "ek" / "models" / "org" / "name")
    res = info(embedkit_bin, "org/name", {"EMBEDKIT_HOME": str(tmp_path / "ek"), "HF_HOME": str(tmp_path / "none")})
    assert res.returncode == 0, res.stderr
    assert str(tmp_path / "ek" / "models" / "org" / "name") in res.stdout


def test_missing_model_lists_the_places_searched(embedkit_bin, tmp_path):
    res = info(embedkit_bin, "org/absent", {"EMBEDKIT_HOME": str(tmp_path / "ek"), "HF_HOME": str(tmp_path / "hf")})
    assert res.returncode == 1
    assert str(tmp_path / "ek" / "models" / "org" / "absent") in res.stderr
    assert "models--org--absent" in res.stderr
