"""Bad input: every broken model file, option or input text makes `embedkit embed` exit with
status 1 (not a signal, not 0) and a message on stderr that starts with "embedkit: error:" and
names the file / tensor / field / line at fault and what was expected.

Each case builds a broken copy of all-MiniLM-L6-v2 in tmp_path: big unchanged files are
symlinked, small ones copied, and a file that a case changes is always unlinked before it is
written, so the real model is never touched.
"""
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

TEXT = "some text"
BIG = 1 << 20  # files above this are symlinked into the copies


# ------------------------------------------------------------------ helpers

def clone_model(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_dir():
            shutil.copytree(p, dst / p.name)
        elif p.stat().st_size > BIG:
            (dst / p.name).symlink_to(p.resolve())
        else:
            shutil.copy2(p, dst / p.name)
    return dst


def replace_file(path: Path, data) -> None:
    """Writes a new file at path; a symlink there is removed first (never written through)."""
    if path.is_symlink() or path.exists():
        path.unlink()
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)


def split_safetensors(raw: bytes):
    n = struct.unpack("<Q", raw[:8])[0]
    return n, json.loads(raw[8:8 + n]), raw[8 + n:]


def pack_safetensors(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def run(embedkit_bin, *args, stdin=None, env=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    res = subprocess.run([str(embedkit_bin), *[a if isinstance(a, bytes) else str(a) for a in args]],
                         input=stdin, capture_output=True, env=full_env, timeout=300)
    res.out = res.stdout.decode("utf-8", "replace")
    res.err = res.stderr.decode("utf-8", "replace")
    return res


def embed(embedkit_bin, model_dir, *extra, text=TEXT, **kw):
    args = ["embed", "-m", model_dir, *extra]
    if text is not None:
        args.append(text)
    return run(embedkit_bin, *args, **kw)


def assert_error(res, *needles):
    assert res.returncode >= 0, f"killed by signal {-res.returncode}; stderr:\n{res.err}"
    assert res.returncode == 1, f"exit {res.returncode}, expected 1; stderr:\n{res.err}"
    assert res.err.startswith("embedkit: error:"), f"stderr does not start with 'embedkit: error:':\n{res.err}"
    for n in needles:
        assert str(n) in res.err, f"{n!r} not in the message:\n{res.err}"
    assert res.out == "", f"nothing should reach stdout on error, got:\n{res.out[:500]}"


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def minilm_raw(minilm_dir):
    """The real model.safetensors: (header length, header, data block, whole file)."""
    raw = (minilm_dir / "model.safetensors").read_bytes()
    n, header, data = split_safetensors(raw)
    return n, header, data, raw


@pytest.fixture
def model(tmp_path, minilm_dir):
    return clone_model(minilm_dir, tmp_path / "model")


def rewrite_tensors(model: Path, change) -> None:
    """Loads the model's tensors with safetensors, lets `change(dict)` edit them, saves a new file."""
    st = pytest.importorskip("safetensors.numpy")
    tensors = st.load_file(str(model / "model.safetensors"))
    change(tensors)
    target = model / "model.safetensors"
    target.unlink()  # a symlink to the real model: never write through it
    st.save_file(tensors, str(target), metadata={"format": "pt"})


# ------------------------------------------------------------------ valid input still works

def check_valid_output(res, count=1):
    assert res.returncode == 0, res.err
    lines = res.out.splitlines()
    assert len(lines) == count
    for i, line in enumerate(lines):
        row = json.loads(line)
        assert row["index"] == i
        v = np.array(row["embedding"], dtype=np.float64)
        assert v.shape == (384,)
        assert np.all(np.isfinite(v))
        assert abs(np.linalg.norm(v) - 1.0) < 1e-4  # the model ends in Normalize


def test_valid_input_works(embedkit_bin, minilm_dir):
    check_valid_output(embed(embedkit_bin, minilm_dir))


def test_valid_input_works_on_a_cloned_model(embedkit_bin, model, tmp_path):
    # The copies the other cases break are themselves sound.
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"text": TEXT}) + "\n\n" + json.dumps({"text": "caf\u00e9 \u4e2d\u6587 \U0001F600"}) + "\n",
                   encoding="utf-8")
    check_valid_output(embed(embedkit_bin, model, "--jsonl", "-i", inp, text=None), count=2)


# ------------------------------------------------------------------ model.safetensors

@pytest.mark.parametrize("where", ["4 bytes", "mid-header", "mid-data"])
def test_truncated_safetensors(embedkit_bin, model, minilm_raw, where):
    n, _, data, raw = minilm_raw
    cut = {"4 bytes": 4, "mid-header": 8 + n // 2, "mid-data": 8 + n + len(data) // 2}[where]
    replace_file(model / "model.safetensors", raw[:cut])
    res = embed(embedkit_bin, model)
    expect = {
        "4 bytes": ["file is 4 bytes", "8-byte header length"],
        "mid-header": [f"header length {n} runs past the end of the file ({cut} bytes)"],
        "mid-data": ["tensor \"", "data_offsets end", "past the end of the data block", "truncated"],
    }[where]
    assert_error(res, model / "model.safetensors", *expect)


def test_safetensors_header_not_json(embedkit_bin, model, minilm_raw):
    n, _, data, raw = minilm_raw
    garbage = b'{"embeddings.word_embeddings.weight": {"dtype": F32'
    header = garbage + b" " * (n - len(garbage))
    replace_file(model / "model.safetensors", raw[:8] + header + data)
    res = embed(embedkit_bin, model)
    assert_error(res, model / "model.safetensors", "header", "not valid JSON")


def test_safetensors_header_length_past_end(embedkit_bin, model, minilm_raw):
    _, _, _, raw = minilm_raw
    huge = len(raw) * 4
    replace_file(model / "model.safetensors", struct.pack("<Q", huge) + raw[8:])
    res = embed(embedkit_bin, model)
    assert_error(res, model / "model.safetensors", f"header length {huge}", "runs past the end of the file")


def test_safetensors_data_offsets_past_end(embedkit_bin, model, minilm_raw):
    _, header, data, _ = minilm_raw
    header = json.loads(json.dumps(header))
    name = "encoder.layer.2.attention.self.value.bias"
    begin = header[name]["data_offsets"][0]
    header[name]["data_offsets"] = [begin, len(data) + 4096]
    replace_file(model / "model.safetensors", pack_safetensors(header, data))
    res = embed(embedkit_bin, model)
    assert_error(res, model / "model.safetensors", f'tensor "{name}"', f"data_offsets end {len(data) + 4096}",
                 "past the end of the data block")


def test_safetensors_missing_tensor(embedkit_bin, model):
    name = "encoder.layer.3.output.dense.weight"
    rewrite_tensors(model, lambda t: t.pop(name))
    res = embed(embedkit_bin, model)
    assert_error(res, model / "model.safetensors", f'missing tensor "{name}"')


def test_safetensors_wrong_dtype(embedkit_bin, model):
    name = "encoder.layer.2.intermediate.dense.weight"

    def to_int64(t):
        t[name] = t[name].astype(np.int64)

    rewrite_tensors(model, to_int64)
    res = embed(embedkit_bin, model)
    assert_error(res, model / "model.safetensors", f'tensor "{name}"', "dtype I64",
                 "expected a floating-point weight")


def test_safetensors_wrong_shape(embedkit_bin, model):
    name = "encoder.layer.1.attention.self.key.weight"

    def narrow(t):
        t[name] = np.ascontiguousarray(t[name][:, :300])

    rewrite_tensors(model, narrow)
    res = embed(embedkit_bin, model)
    assert_error(res, model / "model.safetensors", f'tensor "{name}"', "shape [384, 300]", "expected [384, 384]")


# ------------------------------------------------------------------ config.json

def edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text(encoding="utf-8"))
    change(obj)
    replace_file(path, json.dumps(obj, ensure_ascii=False, indent=1))


def test_unsupported_architecture(embedkit_bin, model):
    edit_json(model / "config.json", lambda c: c.update(model_type="t5", architectures=["T5EncoderModel"]))
    res = embed(embedkit_bin, model)
    assert_error(res, model / "config.json", "unsupported architecture", 'model_type "t5"', "T5EncoderModel",
                 "supported: bert")


def test_missing_config(embedkit_bin, model):
    (model / "config.json").unlink()
    res = embed(embedkit_bin, model)
    assert_error(res, model / "config.json", "missing")


def test_config_not_json(embedkit_bin, model):
    replace_file(model / "config.json", '{"model_type": "bert", "hidden_size": 384,\n')
    res = embed(embedkit_bin, model)
    assert_error(res, model / "config.json", "not valid JSON")


def test_config_field_of_wrong_type(embedkit_bin, model):
    edit_json(model / "config.json", lambda c: c.update(hidden_size="384"))
    res = embed(embedkit_bin, model)
    assert_error(res, model / "config.json", '"hidden_size"', "must be an integer", "found string")


# ------------------------------------------------------------------ tokenizer.json

def test_missing_tokenizer(embedkit_bin, model):
    (model / "tokenizer.json").unlink()
    res = embed(embedkit_bin, model)
    assert_error(res, model / "tokenizer.json", "missing", "tokenizer.json")


def test_tokenizer_unsupported_model_type(embedkit_bin, model):
    edit_json(model / "tokenizer.json",
              lambda t: t.update(model={"type": "Unigram", "unk_id": 0, "vocab": [["[UNK]", 0.0], ["\u2581a", -1.5]]}))
    res = embed(embedkit_bin, model)
    assert_error(res, model / "tokenizer.json", 'model type "Unigram"', "supported: WordPiece")


def test_tokenizer_unsupported_normalizer(embedkit_bin, model):
    edit_json(model / "tokenizer.json", lambda t: t.update(normalizer={"type": "NFKC"}))
    res = embed(embedkit_bin, model)
    assert_error(res, model / "tokenizer.json", "normalizer", '"NFKC"', "supported: BertNormalizer")


def test_tokenizer_template_repeats_a_sequence(embedkit_bin, model):
    # Would defeat truncation: [A, A, A] makes 3x max_seq_length tokens, past the position table.
    def triple(t):
        seq = next(p for p in t["post_processor"]["single"] if "Sequence" in p)
        t["post_processor"]["single"] = [seq, seq, seq]

    edit_json(model / "tokenizer.json", triple)
    res = embed(embedkit_bin, model, text="word " * 400)
    assert_error(res, model / "tokenizer.json", "post_processor.single", "sequence A appears more than once")


def test_tokenizer_template_too_many_specials(embedkit_bin, model):
    def pad(t):
        cls = t["post_processor"]["single"][0]
        t["post_processor"]["single"] = [cls] * 600 + t["post_processor"]["single"]

    edit_json(model / "tokenizer.json", pad)
    res = embed(embedkit_bin, model)
    assert_error(res, "input 0", "602 tokens", "512 positions")


def test_tokenizer_type_id_outside_type_vocab(embedkit_bin, model):
    def type7(t):
        for p in t["post_processor"]["single"]:
            if "Sequence" in p:
                p["Sequence"]["type_id"] = 7

    edit_json(model / "tokenizer.json", type7)
    res = embed(embedkit_bin, model)
    assert_error(res, "input 0", "token type id 7", "type_vocab_size 2")


def test_tokenizer_not_json(embedkit_bin, model):
    text = (model / "tokenizer.json").read_text(encoding="utf-8")
    replace_file(model / "tokenizer.json", text[: len(text) // 2])
    res = embed(embedkit_bin, model)
    assert_error(res, model / "tokenizer.json", "not valid JSON")


# ------------------------------------------------------------------ input texts

def test_invalid_utf8_in_input_file(embedkit_bin, minilm_dir, tmp_path):
    inp = tmp_path / "texts.txt"
    inp.write_bytes(b"first line\nsecond line\nbad \xc3( here\nfourth\n")
    res = embed(embedkit_bin, minilm_dir, "-i", inp, text=None)
    assert_error(res, f"{inp}:3", "invalid UTF-8", "byte 5")


def test_invalid_utf8_on_stdin(embedkit_bin, minilm_dir):
    res = embed(embedkit_bin, minilm_dir, "-i", "-", text=None, stdin=b"ok\n\xff\xfe\n")
    assert_error(res, "<stdin>:2", "invalid UTF-8")


def test_invalid_utf8_in_argument(embedkit_bin, minilm_dir):
    res = embed(embedkit_bin, minilm_dir, "ok", text=b"abc\xed\xa0\x80")  # an encoded UTF-16 surrogate
    assert_error(res, "argument 2", "invalid UTF-8", "byte offset 3")


def test_invalid_utf8_in_jsonl(embedkit_bin, minilm_dir, tmp_path):
    inp = tmp_path / "texts.jsonl"
    inp.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')  # Latin-1, not UTF-8
    res = embed(embedkit_bin, minilm_dir, "--jsonl", "-i", inp, text=None)
    assert_error(res, f"{inp}:2", "invalid UTF-8")


def test_jsonl_lone_surrogate_escape(embedkit_bin, minilm_dir, tmp_path):
    inp = tmp_path / "texts.jsonl"
    inp.write_text('{"text": "fine"}\n{"text": "a\\ud800b"}\n', encoding="utf-8")
    res = embed(embedkit_bin, minilm_dir, "--jsonl", "-i", inp, text=None)
    assert_error(res, f"{inp}:2", "not valid JSON")


def test_jsonl_line_without_text(embedkit_bin, minilm_dir, tmp_path):
    inp = tmp_path / "texts.jsonl"
    inp.write_text('{"text": "fine"}\n\n{"txt": "typo"}\n', encoding="utf-8")
    res = embed(embedkit_bin, minilm_dir, "--jsonl", "-i", inp, text=None)
    assert_error(res, f"{inp}:3", 'no "text" field')


@pytest.mark.parametrize("line,needle", [('{"text": 5}', '"text" must be a string'),
                                         ('["a", "b"]', 'expected a JSON object with a "text" field'),
                                         ('{"text": "unterminated}', "not valid JSON")])
def test_jsonl_bad_lines(embedkit_bin, minilm_dir, tmp_path, line, needle):
    inp = tmp_path / "texts.jsonl"
    inp.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    res = embed(embedkit_bin, minilm_dir, "--jsonl", "-i", inp, text=None)
    assert_error(res, f"{inp}:2", needle)


def test_missing_input_file(embedkit_bin, minilm_dir, tmp_path):
    res = embed(embedkit_bin, minilm_dir, "-i", tmp_path / "nope.txt", text=None)
    assert_error(res, tmp_path / "nope.txt", "cannot open")


def test_empty_input(embedkit_bin, minilm_dir, tmp_path):
    assert_error(embed(embedkit_bin, minilm_dir, text=None), "no input texts")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert_error(embed(embedkit_bin, minilm_dir, "-i", empty, text=None), "no input texts")


# ------------------------------------------------------------------ options and model names

def test_unknown_prompt_name(embedkit_bin, minilm_dir):
    res = embed(embedkit_bin, minilm_dir, "--prompt-name", "nope")
    assert_error(res, '--prompt-name "nope"', "no such prompt")


@pytest.mark.parametrize("dims,needles", [("0", ["--dimensions 0", "at least 1"]),
                                          ("9999", ["--dimensions 9999", "between 1 and", "384"])])
def test_bad_dimensions(embedkit_bin, minilm_dir, dims, needles):
    res = embed(embedkit_bin, minilm_dir, "--dimensions", dims)
    assert_error(res, *needles)


def test_device_cuda_without_gpu(embedkit_bin, minilm_dir):
    if shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0:
        pytest.skip("a GPU is present here")
    res = embed(embedkit_bin, minilm_dir, "--device", "cuda")
    assert_error(res, "--device cuda:")
    assert "CUDA" in res.err


def test_unknown_device(embedkit_bin, minilm_dir):
    res = embed(embedkit_bin, minilm_dir, "--device", "tpu")
    assert_error(res, '--device "tpu"', "expected cpu, cuda or auto")


def test_model_not_found_lists_places(embedkit_bin, tmp_path):
    home, hf = tmp_path / "ekhome", tmp_path / "hf"
    res = embed(embedkit_bin, "no-such-org/no-such-model",
                env={"EMBEDKIT_HOME": str(home), "HF_HOME": str(hf), "HF_HUB_CACHE": ""})
    assert_error(res, 'model "no-such-org/no-such-model" not found', "looked in",
                 home / "models" / "no-such-org" / "no-such-model",
                 hf / "hub" / "models--no-such-org--no-such-model")


def test_tiny_token_budget_runs_one_text_per_batch(embedkit_bin, minilm_dir, tmp_path):
    # --batch-tokens below one text's length: every text runs alone (the GPU end-to-end check
    # uses --batch-tokens 1 for its "alone vs batched" comparison); results equal the default's.
    import numpy as np
    texts = tmp_path / "t.txt"
    texts.write_text("one\ntwo words here\na somewhat longer third text for the batcher\n", encoding="utf-8")
    outs = []
    for budget in ("1", "3", "8192"):
        out = tmp_path / f"o{budget}.npy"
        res = run(embedkit_bin, "embed", "-m", str(minilm_dir), "-i", str(texts), "-f", "npy", "-o", str(out),
                  "--batch-tokens", budget)
        assert res.returncode == 0, res.err
        outs.append(np.load(out))
    assert np.allclose(outs[0], outs[2], atol=1e-5) and np.allclose(outs[1], outs[2], atol=1e-5)
