"""Bad input against a live `embedkit serve`: every case gets the right 4xx (or a closed
connection), and the server keeps answering /health and real requests throughout (a background
client checks that while the cases run)."""
import json
import socket
import threading
import time

import pytest

from server_util import Server, raw_exchange

READ_TIMEOUT = 2  # seconds; the slow-client case waits for it


@pytest.fixture(scope="module")
def server(embedkit_bin, minilm_dir):
    with Server(embedkit_bin, minilm_dir, "--read-timeout", READ_TIMEOUT) as s:
        stop = threading.Event()
        failures, checks = [], [0]

        def watchdog():  # health and a real request, all the time
            while not stop.is_set():
                st, _, _ = s.request("/health")
                st2, body, _ = s.request("/embed", {"inputs": "still alive?"})
                if st != 200 or st2 != 200 or len(json.loads(body)[0]) != 384:
                    failures.append((st, st2))
                checks[0] += 1
                time.sleep(0.05)
        t = threading.Thread(target=watchdog, daemon=True)
        t.start()
        yield s
        stop.set()
        t.join(30)
        print(f"watchdog: {checks[0]} health+embed checks during the bad-input cases, {len(failures)} failed")
        assert not failures, failures
        assert checks[0] > 5
        assert s.stop() == 0, s.log()


def post_raw(server, path, data: bytes, content_type="application/json"):
    return server.request(path, raw=data, headers={"Content-Type": content_type})


def error_of(body):
    e = json.loads(body)
    assert "error" in e and "error_type" in e, e
    return e


@pytest.mark.parametrize("path", ["/embed", "/v1/embeddings", "/tokenize", "/decode"])
def test_malformed_json_is_400(server, path):
    for data in (b"{", b"{\"inputs\": [\"a\",]}", b"not json", b"", b"\"inputs\"", b"{\"inputs\": \"a\"} trailing"):
        status, body, _ = post_raw(server, path, data)
        assert status in (400, 422), (data, status, body)
        error_of(body)


@pytest.mark.parametrize("payload,needle", [
    ({"inputs": 5}, "inputs"),
    ({"inputs": [1, 2]}, "inputs"),
    ({"inputs": ["a", None]}, "inputs"),
    ({"inputs": {"text": "a"}}, "inputs"),
    ({"inputs": "a", "normalize": "yes"}, "normalize"),
    ({"inputs": "a", "truncate": 1}, "truncate"),
    ({"inputs": "a", "dimensions": "8"}, "dimensions"),
    ({"inputs": "a", "dimensions": 8.5}, "dimensions"),
    ({"inputs": "a", "dimensions": 0}, "dimensions"),
    ({"inputs": "a", "dimensions": 385}, "dimensions"),
    ({"inputs": "a", "truncation_direction": "up"}, "truncation_direction"),
    ({"inputs": "a", "prompt_name": 3}, "prompt_name"),
    ({"inputs": "a", "prompt_name": "nope"}, "prompt"),
    ({"text": "a"}, "inputs"),
    ([{"inputs": "a"}], "object"),
])
def test_wrong_types_are_422(server, payload, needle):
    status, e, _ = server.post_json("/embed", payload)
    assert status == 422, (payload, status, e)
    assert needle in e["error"] and e["error_type"] == "Validation"


@pytest.mark.parametrize("payload", [
    {"input": 5}, {"input": [[1, 2], "a"]}, {"input": [1, "a"]}, {"input": [[]]}, {"input": []},
    {"input": "a", "encoding_format": "hex"}, {"input": [[999999999]]}, {"input": [[-1]]},
])
def test_openai_validation_is_422_in_openai_shape(server, payload):
    status, e, _ = server.post_json("/v1/embeddings", payload)
    assert status == 422, (payload, status, e)
    assert isinstance(e["error"], dict) and e["error"]["message"] and e["error"]["code"] == 422


def test_empty_list_and_empty_string(server):
    for payload in ({"inputs": []}, {"inputs": ""}, {"inputs": ["a", ""]}):
        status, e, _ = server.post_json("/embed", payload)
        assert status == 422 and e["error_type"] == "Empty", (payload, e)


def test_invalid_utf8_is_400(server):
    status, body, _ = post_raw(server, "/embed", b'{"inputs": "caf\xc3\x28 \xff"}')
    assert status == 400 and "UTF-8" in error_of(body)["error"]


def test_10mb_body_is_413_and_connection_closed(server):
    body = b'{"inputs": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    head = (f"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(head + body[:65536])
    answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"payload limit" in answer
    s.close()


def test_10000_inputs_is_422(server):
    status, e, _ = server.post_json("/embed", {"inputs": ["word"] * 10000})
    assert status == 422 and "batch size 10000" in e["error"]


def test_unknown_fields_are_ignored(server):
    status, e, _ = server.post_json("/embed", {"inputs": "a", "frobnicate": [1, {"x": None}], "user": "u"})
    assert status == 200 and len(e[0]) == 384


def test_deeply_nested_json(server):
    for depth in (100, 5000, 500000):
        data = b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"
        status, body, _ = post_raw(server, "/embed", data)
        assert status in (400, 422), (depth, status)
        error_of(body)


def test_huge_numbers(server):
    for num in (b"1e400", b"123456789012345678901234567890", b"-1e-400", b"9223372036854775808", b"NaN"):
        status, body, _ = post_raw(server, "/embed", b'{"inputs": "a", "dimensions": ' + num + b"}")
        assert status in (400, 422), (num, status)
        error_of(body)
    status, body, _ = post_raw(server, "/v1/embeddings", b'{"input": [[101, 1e30, 102]]}')
    assert status == 422


def test_truncated_body_then_close(server):
    # Content-Length promises 100 bytes, 10 arrive, the client leaves: nothing is answered and
    # the server goes on.
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    s.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inputs\":")
    s.close()
    # ...or stays: closed after the read timeout without an answer.
    t0 = time.time()
    answer = raw_exchange(server.port, b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"in",
                          read_timeout=READ_TIMEOUT + 5)
    assert answer == b"" and time.time() - t0 < READ_TIMEOUT + 3
    assert server.request("/health")[0] == 200


def test_slow_client_one_byte_per_second_is_closed(server):
    req = b'POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n{"inputs":"a"}'
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    t0, closed = time.time(), False
    for b in req:
        try:
            s.sendall(bytes([b]))
            s.settimeout(1.0)
            if s.recv(1024) == b"":
                closed = True
                break
        except socket.timeout:
            continue
        except OSError:
            closed = True
            break
    s.close()
    assert closed, "a client sending one byte per second was never cut off"
    assert time.time() - t0 < READ_TIMEOUT + 3


def test_http_garbage_and_huge_headers(server):
    answer = raw_exchange(server.port, b"GARBAGE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") or answer == b""
    answer = raw_exchange(server.port, b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431") or answer == b""


def test_pipelined_requests_are_answered_in_order(server):
    one = b'POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n{"inputs":"one"}\n'
    two = b'POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n{"inputs":"two"}\n'
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(one + two + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    assert data.count(b"HTTP/1.1 200") == 3
    assert data.index(b'"one"') < data.index(b'"two"')


def test_wrong_method_and_route(server):
    assert server.request("/embed", method="GET")[0] == 405
    assert server.request("/health", body={}, method="POST")[0] == 405
    assert server.request("/v2/nothing", body={})[0] == 404


def test_connection_churn_leaves_no_descriptor_behind(server):
    # 600 clients that leave in every way: right after connecting, in the middle of their
    # headers, in the middle of their body, right after a whole request (before its answer), and
    # 1,200 idle keep-alive connections at once. The server must keep answering and end with the
    # descriptors it had before (no connection left open, none leaked).
    import os
    import random
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:  # this process holds 1,200 sockets at once
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    n_idle = min(1200, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200)

    def fds():
        return len(os.listdir(f"/proc/{server.proc.pid}/fd"))
    time.sleep(0.5)
    before = fds()
    body = b'{"inputs": "a text whose client will not wait for its embedding"}'
    whole = (b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
             + str(len(body)).encode() + b"\r\n\r\n" + body)
    rng = random.Random(7)
    socks = []
    for i in range(600):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        cut = [0, rng.randrange(5, 40), rng.randrange(len(whole) - len(body), len(whole) - 1), len(whole)][i % 4]
        if cut:
            s.sendall(whole[:cut])
        socks.append(s)
        if len(socks) >= 50:
            for c in socks:
                c.close()
            socks = []
    for c in socks:
        c.close()
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(n_idle)]
    assert server.request("/health")[0] == 200  # with ~1,200 idle connections open
    for c in idle:
        c.close()
    # Within the 2-s read timeout: each connection must close on its client's FIN, not by timing out.
    deadline = time.time() + 1.5
    while time.time() < deadline and fds() > before + 2:
        time.sleep(0.2)
    assert fds() <= before + 2, (before, fds())
    st, b, _ = server.request("/embed", {"inputs": "still serving"})
    assert st == 200 and len(json.loads(b)[0]) == 384
