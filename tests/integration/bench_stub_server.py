#!/usr/bin/env python3
"""A stand-in embedding server for testing `embedkit bench --url` (remote mode) without the real
server: TEI's POST /embed, OpenAI's POST /v1/embeddings and a Prometheus GET /metrics with
TEI-named counters. It is a test double, not a benchmark target: embeddings are hash-derived
unit vectors, not a model's output.

Token counts come from HF `tokenizers` (an independent implementation) with the model's
tokenizer.json, truncated at the sentence-transformers max_seq_length, so the bench's
client-side counts (EmbedKit's tokenizer) are checked against another tokenizer.

  python3 tests/integration/bench_stub_server.py --model-dir DIR --port 0   # prints "PORT <n>"
"""
import argparse
import hashlib
import json
import math
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tokenizers import Tokenizer


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.values = {
            "te_request_count": 0,
            "te_request_success": 0,
            "te_request_failure": 0,
            "te_request_input_length_sum": 0,
            "te_request_input_length_count": 0,
            "te_request_tokenization_duration_sum": 0.0,
            "te_request_tokenization_duration_count": 0,
            "te_request_duration_sum": 0.0,
            "te_request_duration_count": 0,
        }

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                self.values[k] += v

    def text(self):
        with self.lock:
            lines = []
            for k, v in self.values.items():
                lines.append(f"# TYPE {k} counter")
                # Labels, as TEI sets them, exercise the client's label handling.
                lines.append(f'{k}{{method="embed"}} {v}')
            return "\n".join(lines) + "\n"


def fake_embedding(text, dim):
    h = hashlib.sha256(text.encode()).digest()
    v = [((h[i % len(h)] + i) % 17) - 8.0 for i in range(dim)]
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


def make_handler(tok, max_len, dim, metrics):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def setup(self):
            super().setup()
            # Headers and body go out as two writes: without this, Nagle + delayed ACK add 40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def reply(self, code, body, ctype="application/json"):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/metrics":
                self.reply(200, metrics.text(), "text/plain; version=0.0.4")
            else:
                self.reply(404, json.dumps({"error": "not found"}))

        def do_POST(self):
            t0 = time.perf_counter()
            n = int(self.headers.get("Content-Length", 0))
            try:
                req = json.loads(self.rfile.read(n))
            except ValueError:
                metrics.add(te_request_count=1, te_request_failure=1)
                return self.reply(422, json.dumps({"error": "invalid JSON"}))
            if self.path == "/embed":
                texts = req.get("inputs")
            elif self.path == "/v1/embeddings":
                texts = req.get("input")
            else:
                return self.reply(404, json.dumps({"error": "not found"}))
            if isinstance(texts, str):
                texts = [texts]
            if not isinstance(texts, list) or not texts:
                metrics.add(te_request_count=1, te_request_failure=1)
                return self.reply(422, json.dumps({"error": "no inputs"}))
            tt = time.perf_counter()
            # sentence-transformers strips each text before tokenizing.
            encs = tok.encode_batch([t.strip() for t in texts])
            counts = [min(len(e.ids), max_len) for e in encs]
            tok_s = time.perf_counter() - tt
            embs = [fake_embedding(t, dim) for t in texts]
            if self.path == "/embed":
                body = json.dumps(embs)
            else:
                body = json.dumps({
                    "object": "list",
                    "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embs)],
                    "model": req.get("model", ""),
                    "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts)},
                })
            metrics.add(te_request_count=1, te_request_success=1, te_request_input_length_sum=sum(counts),
                        te_request_input_length_count=len(counts), te_request_tokenization_duration_sum=tok_s,
                        te_request_tokenization_duration_count=1,
                        te_request_duration_sum=time.perf_counter() - t0, te_request_duration_count=1)
            self.reply(200, body)

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    d = Path(a.model_dir)
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    max_len = json.loads((d / "sentence_bert_config.json").read_text())["max_seq_length"]
    dim = json.loads((d / "config.json").read_text())["hidden_size"]
    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024  # listen backlog: 256 clients connect at once

    srv = Server(("127.0.0.1", a.port), make_handler(tok, max_len, dim, Metrics()))
    print(f"PORT {srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
