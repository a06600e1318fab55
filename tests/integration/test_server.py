"""`embedkit serve` with real clients on loopback: the official `openai` client, huggingface_hub's
InferenceClient (TEI routes) and curl. Embeddings are checked against sentence-transformers'
golden fixture (tests/golden, via tools/make_golden.py) and against `embedkit embed`."""
import base64
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from server_util import Server, cos_rows

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
COS_MIN = 0.99999


def _golden_pairs():
    texts = json.loads((GOLDEN / "texts.json").read_text(encoding="utf-8"))
    emb = np.load(GOLDEN / "all-MiniLM-L6-v2.npy")
    keep = [i for i, t in enumerate(texts) if t != ""]  # the server rejects empty strings (422), as TEI/OpenAI do
    return [texts[i] for i in keep], emb[keep]


@pytest.fixture(scope="module")
def texts():
    return _golden_pairs()[0]


@pytest.fixture(scope="module")
def golden():
    return _golden_pairs()[1]


@pytest.fixture(scope="module")
def server(embedkit_bin, minilm_dir):
    with Server(embedkit_bin, minilm_dir, "--auto-truncate", "--max-wait", "2") as s:
        yield s
        assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def offline(embedkit_bin, minilm_dir, texts, tmp_path_factory):
    d = tmp_path_factory.mktemp("offline")
    (d / "t.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    subprocess.run([str(embedkit_bin), "embed", "--model", str(minilm_dir), "--jsonl", "-i", str(d / "t.jsonl"),
                    "-f", "npy", "-o", str(d / "o.npy")], check=True)
    return np.load(d / "o.npy")


def batches(seq, n=32):
    return [seq[i:i + n] for i in range(0, len(seq), n)]


def test_openai_client_float_and_base64(server, texts, golden, offline):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    for fmt in ("float", "base64"):
        got, tokens = [], 0
        for chunk in batches(texts):
            r = client.embeddings.create(model="all-MiniLM-L6-v2", input=chunk, encoding_format=fmt)
            assert [d.index for d in r.data] == list(range(len(chunk)))
            for d in r.data:
                emb = d.embedding
                if isinstance(emb, str):  # the client leaves base64 to the caller when asked for it
                    emb = np.frombuffer(base64.b64decode(emb), dtype="<f4")
                got.append(emb)
            assert r.usage.prompt_tokens == r.usage.total_tokens > len(chunk)
            tokens += r.usage.prompt_tokens
        got = np.asarray(got)
        assert got.shape == golden.shape
        c = cos_rows(got, golden)
        print(f"openai {fmt}: {len(texts)} texts, {tokens} tokens, min cosine vs sentence-transformers {c.min():.8f}")
        assert c.min() >= COS_MIN
        assert cos_rows(got, offline).min() >= COS_MIN


def test_openai_client_default_and_dimensions(server, texts, golden):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    chunk = texts[:32]
    r = client.embeddings.create(model="m", input=chunk)  # the client's default (base64 under the hood)
    assert cos_rows([d.embedding for d in r.data], golden[:32]).min() >= COS_MIN
    r = client.embeddings.create(model="m", input=chunk, dimensions=64)
    got = np.asarray([d.embedding for d in r.data])
    assert got.shape == (32, 64)
    want = golden[:32, :64] / np.linalg.norm(golden[:32, :64], axis=1, keepdims=True)
    assert cos_rows(got, want).min() >= COS_MIN
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    # token ids in, as OpenAI allows: the ids /tokenize gives for a text embed like the text
    status, toks, _ = server.post_json("/tokenize", {"inputs": chunk[0]})
    ids = [t["id"] for t in toks[0]]
    r = client.embeddings.create(model="m", input=[ids])
    assert cos_rows([r.data[0].embedding], golden[:1]).min() >= COS_MIN


def test_huggingface_hub_inference_client(server, texts, golden):
    hub = pytest.importorskip("huggingface_hub")
    client = hub.InferenceClient(model=server.url)
    got = [np.asarray(client.feature_extraction(t, normalize=True, truncate=True)).reshape(-1) for t in texts[:40]]
    c = cos_rows(got, golden[:40])
    print(f"huggingface_hub feature_extraction: 40 texts, min cosine {c.min():.8f}")
    assert c.min() >= COS_MIN


def test_curl_embed_and_headers(server, texts, golden):
    body = json.dumps({"inputs": texts[:8], "truncate": True})
    out = subprocess.run(["curl", "-sS", "-i", server.url + "/embed", "-H", "Content-Type: application/json", "-d", body],
                         capture_output=True, check=True).stdout.decode()
    if out.startswith("HTTP/1.1 100"):  # curl's Expect: 100-continue for bodies over 1 KB, answered
        out = out.partition("\r\n\r\n")[2]
    head, _, payload = out.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200")
    for h in ("x-compute-type", "x-compute-time", "x-compute-tokens", "x-compute-characters", "x-total-time",
              "x-tokenization-time", "x-queue-time", "x-inference-time"):
        assert h in head.lower(), h
    assert cos_rows(json.loads(payload), golden[:8]).min() >= COS_MIN


def test_tei_embed_options(server, texts, golden):
    s, single, _ = server.post_json("/embed", {"inputs": texts[0]})
    assert s == 200 and len(single) == 1 and len(single[0]) == 384  # always a list of embeddings
    s, raw, _ = server.post_json("/embed", {"inputs": texts[:4], "normalize": False})
    raw = np.asarray(raw)
    assert s == 200 and not np.allclose(np.linalg.norm(raw, axis=1), 1, atol=1e-3)
    assert cos_rows(raw, golden[:4]).min() >= COS_MIN
    s, d, _ = server.post_json("/embed", {"inputs": texts[:4], "dimensions": 128})
    assert s == 200 and np.asarray(d).shape == (4, 128)
    long_text = " ".join(["embedding"] * 600)
    s, e, _ = server.post_json("/embed", {"inputs": long_text, "truncate": False})
    assert s == 422 and "tokens" in e["error"] and e["error_type"] == "Validation"
    s, right, _ = server.post_json("/embed", {"inputs": "start " + long_text + " end", "truncate": True})
    s2, left, _ = server.post_json("/embed", {"inputs": "start " + long_text + " end", "truncate": True,
                                              "truncation_direction": "Left"})
    assert s == s2 == 200 and cos_rows(right, left)[0] < 0.9999  # different ends kept
    s, e, _ = server.post_json("/embed", {"inputs": "x", "prompt_name": "query"})
    assert s == 422 and "prompt" in e["error"]


def test_tokenize_and_decode_match_hf(server, minilm_dir, texts):
    from tokenizers import Tokenizer
    hf = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    hf.no_padding()  # the file asks for padding/truncation at 128; /tokenize shows every token
    hf.no_truncation()
    sample = [t for t in texts if t.strip()][:32]
    s, toks, _ = server.post_json("/tokenize", {"inputs": sample})
    assert s == 200 and len(toks) == len(sample)
    for text, got in zip(sample, toks):
        want = hf.encode(text)
        assert [t["id"] for t in got] == want.ids
        for t, (a, b) in zip(got, want.offsets):
            if not t["special"]:
                assert text.encode()[t["start"]:t["stop"]].decode() == t["text"]
    ids = [hf.encode(t).ids for t in sample]
    s, decoded, _ = server.post_json("/decode", {"ids": ids})
    assert s == 200 and decoded == [hf.decode(i) for i in ids]
    s, decoded, _ = server.post_json("/decode", {"ids": ids[0], "skip_special_tokens": False})
    assert decoded == [hf.decode(ids[0], skip_special_tokens=False)]


def test_info_health_metrics(server):
    s, info, _ = server.post_json("/info", None, method="GET")
    assert s == 200 and info["max_input_length"] == 256 and info["model_type"]["embedding"]["pooling"] == "mean"
    assert server.request("/health")[0] == 200
    s, m, headers = server.request("/metrics")
    text = m.decode()
    for name in ("te_request_count", "te_request_success", "te_request_failure", "te_request_duration_bucket",
                 "te_request_tokenization_duration", "te_request_queue_duration", "te_request_inference_duration",
                 "te_batch_next_size", "te_batch_next_tokens", "te_queue_size"):
        assert name in text, name
    assert headers["Content-Type"].startswith("text/plain")
    assert server.request("/nope")[0] == 404
    assert server.request("/embed", method="GET")[0] == 405


def test_api_key(embedkit_bin, minilm_dir):
    with Server(embedkit_bin, minilm_dir, "--api-key", "sekret") as s:
        assert s.post_json("/embed", {"inputs": "a"})[0] == 401
        assert s.post_json("/embed", {"inputs": "a"}, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert s.post_json("/embed", {"inputs": "a"}, headers={"Authorization": "Bearer sekret"})[0] == 200
        assert s.request("/health")[0] == 200 and s.request("/metrics")[0] == 200
        openai = pytest.importorskip("openai")
        r = openai.OpenAI(base_url=s.url + "/v1", api_key="sekret").embeddings.create(model="m", input="a")
        assert len(r.data[0].embedding) == 384
        assert s.stop() == 0


def test_overload_gives_429_and_the_rest_succeed(embedkit_bin, minilm_dir, texts):
    with Server(embedkit_bin, minilm_dir, "--max-concurrent-inputs", "8", "--auto-truncate") as s:
        results = []

        def worker(i):
            results.append(s.post_json("/embed", {"inputs": texts[i * 4:(i + 1) * 4]})[0])
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(48)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert set(results) <= {200, 429}, results
        assert results.count(200) >= 2
        print(f"48 concurrent requests with 8 inputs in flight allowed: {results.count(429)} × 429")
        assert s.stop() == 0


def test_sigterm_finishes_accepted_requests(embedkit_bin, minilm_dir, texts, golden):
    with Server(embedkit_bin, minilm_dir, "--auto-truncate", "--threads", "1") as s:
        results = {}

        def worker(i):
            results[i] = s.post_json("/embed", {"inputs": texts[(i * 8) % 384:(i * 8) % 384 + 8]}, timeout=120)
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
        [t.start() for t in ts]
        time.sleep(0.3)
        s.proc.send_signal(signal.SIGTERM)
        [t.join() for t in ts]
        rc = s.stop()
        assert rc == 0, s.log()
    answered = {i: r for i, r in results.items() if r[0] == 200}
    for i, (status, emb, _) in answered.items():
        k = (i * 8) % 384
        assert cos_rows(emb, golden[k:k + 8]).min() >= COS_MIN
    print(f"SIGTERM during 64 requests: {len(answered)} answered 200, exit 0")
    assert len(answered) >= 1
    assert "all requests answered" in s.log()


def send_long_requests_and_leave(s, texts, n, gap=0.0):
    """Sends n raw requests of 32 long texts on n connections, then closes them all before their
    answers (0.2 s later). Returns the texts."""
    import socket
    long_texts = [t for t in texts if len(t) > 200][:32]
    body = json.dumps({"inputs": long_texts, "truncate": True}).encode()
    req = (f"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
           ).encode() + body
    socks = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", s.port))
        c.sendall(req)
        socks.append(c)
        time.sleep(gap)
    time.sleep(0.2)
    for c in socks:
        c.close()  # gone before their answers
    return long_texts


def test_client_that_leaves_has_its_queued_work_dropped(embedkit_bin, minilm_dir, texts):
    import re
    with Server(embedkit_bin, minilm_dir, "--threads", "1", "--max-batch-requests", "32") as s:
        send_long_requests_and_leave(s, texts, 20)
        deadline = time.time() + 60
        while time.time() < deadline and s.log().count("POST /embed") < 20:  # every request settled
            time.sleep(0.2)
        m = s.request("/metrics")[1].decode()
        embedded = int(re.search(r"^te_embed_count (\d+)", m, re.M).group(1))
        print(f"20 requests x 32 texts, clients gone: {embedded} texts embedded, {640 - embedded} dropped")
        assert embedded < 320
        assert s.post_json("/embed", {"inputs": "still serving"})[0] == 200
        assert s.stop() == 0
        assert " 499 " in s.log()


def test_json_logs(embedkit_bin, minilm_dir):
    with Server(embedkit_bin, minilm_dir, "--log-format", "json") as s:
        assert s.post_json("/embed", {"inputs": ["one", "two"]})[0] == 200
        assert s.stop() == 0
    lines = [json.loads(l) for l in s.log_lines if l.startswith("{")]
    req = [l for l in lines if l.get("route") == "/embed"]
    assert req and req[0]["status"] == 200 and req[0]["inputs"] == 2 and req[0]["tokens"] > 4
    assert "time_ms" in req[0]


def test_abandoned_requests_free_their_room_at_once(embedkit_bin, minilm_dir, texts):
    # The queue is full (3 × 32 inputs, --max-concurrent-inputs 96), then every client leaves. The
    # inputs queued behind the running batch must stop counting as soon as a request is refused,
    # not when that batch ends (~seconds here: 32 long texts on one thread).
    with Server(embedkit_bin, minilm_dir, "--threads", "1", "--max-batch-requests", "32",
                "--max-concurrent-inputs", "96") as s:
        long_texts = send_long_requests_and_leave(s, texts, 3, gap=0.05)
        time.sleep(0.1)
        t0 = time.time()
        first = s.post_json("/embed", {"inputs": long_texts, "truncate": True}, timeout=60)[0]
        time.sleep(0.05)
        second = s.post_json("/embed", {"inputs": long_texts, "truncate": True}, timeout=60)[0]
        print(f"after 3 abandoned requests: {first}, then {second} ({time.time() - t0:.2f} s)")
        assert first in (200, 429) and second == 200
        m = s.request("/metrics")[1].decode()
        assert "te_request_failure{err=\"overloaded\"}" in m
        assert s.stop() == 0


def test_busy_polling_answers_then_sleeps_and_stops(embedkit_bin, minilm_dir, texts, golden):
    """--busy-poll-us (the default with a GPU): I/O threads and the batch submitter that poll instead
    of sleeping answer concurrent requests correctly; after a quiet spell (every thread back asleep)
    a request still wakes them; SIGTERM still stops them."""
    with Server(embedkit_bin, minilm_dir, "--busy-poll-us", "300", "--http-threads", "2") as s:
        results = {}

        def worker(w):
            for k in range(6):
                i = (w * 6 + k) % len(texts)
                results[i] = s.post_json("/embed", {"inputs": texts[i], "truncate": True})
        ts = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert len(results) == 48
        for i, (status, emb, _) in results.items():
            assert status == 200, (i, emb)
            assert cos_rows(emb, golden[i:i + 1]).min() >= COS_MIN, i
        time.sleep(0.5)  # far past the polling window: the loops and the submitter sleep again
        status, emb, _ = s.post_json("/embed", {"inputs": [texts[1], texts[2]], "truncate": True}, timeout=10)
        assert status == 200 and cos_rows(emb, golden[1:3]).min() >= COS_MIN
        assert s.stop(timeout=30) == 0, s.log()
