"""Starts `embedkit serve` on a free loopback port for tests and benchmarks."""
import json
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request


class Server:
    """`with Server(bin, model, *flags) as s:` → s.url, s.port; s.stop() → exit code."""

    def __init__(self, binary, model, *flags, env=None):
        self.cmd = [str(binary), "serve", "--model", str(model), "--port", "0", *map(str, flags)]
        self.env = env
        self.log_lines = []
        self.proc = None
        self.port = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                     env=self.env, errors="replace")
        port_seen = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.log_lines.append(line)
                m = re.search(r"listening on http://[\d.]+:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    port_seen.set()
        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        if not port_seen.wait(30):
            self.proc.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.log_lines))
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return self
            except urllib.error.HTTPError as e:
                assert e.code == 503, e.code  # loading
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server never became healthy:\n" + "".join(self.log_lines))

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self._pump.join(5)
        return rc

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self):
        return "".join(self.log_lines)

    # -- small HTTP helpers (urllib: one connection per call) --
    def request(self, path, body=None, method=None, headers=None, raw=None, timeout=60):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def post_json(self, path, body, **kw):
        status, data, headers = self.request(path, body, **kw)
        return status, json.loads(data) if data else None, headers


def raw_exchange(port, payload, read_timeout=10.0):
    """Sends raw bytes, returns what the server answered before closing (or the timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    try:
        s.sendall(payload)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
            if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" not in b"".join(chunks):
                # keep-alive answer complete when the body length is reached
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                m = re.search(rb"Content-Length: (\d+)", head, re.I)
                if m and len(body) >= int(m.group(1)):
                    break
        return b"".join(chunks)
    finally:
        s.close()


def cos_rows(a, b):
    """Row-wise cosine of two [n, d] arrays (float64)."""
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
