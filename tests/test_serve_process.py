"""`engine serve` as a real process: the README's first command answers a v2 request, SIGTERM
drains in-flight requests and exits 0, and memory stays flat over 10k requests."""

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import engine
from serve_helpers import images, write_version

ROOT = Path(__file__).resolve().parent.parent
ENGINE = Path(sys.executable).parent / "engine"


class ServeProcess:
    """`cmd` in its own process group; reads stdout until the banner shows the addresses."""

    def __init__(self, cmd, cwd=None, timeout=240):
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines, self.http, self.socket = [], None, None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not (self.http and any("Ctrl-C" in ln for ln in self.lines)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError("engine serve did not start:\n" + "".join(self.lines[-40:]))
            time.sleep(0.05)

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"KServe v2 HTTP:\s+http://([\d.]+:\d+)", line)
            if m:
                self.http = m.group(1)
            m = re.search(r"socket protocol:\s+([\d.]+:\d+)", line)
            if m:
                self.socket = m.group(1)

    def signal(self, sig):
        os.killpg(self.proc.pid, sig)

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)

    def rss_kib(self) -> int:
        """Resident memory of the `engine serve` process (the group leader, or its child under make)."""
        pids = [self.proc.pid] + _children(self.proc.pid)
        best = 0
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"serve" in cmdline:
                best = max(best, int(re.search(r"VmRSS:\s+(\d+)", status).group(1)))
        return best


def _children(pid):
    try:
        out = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    kids = [int(p) for p in out]
    return kids + [g for k in kids for g in _children(k)]


def post(address, path, body: bytes, timeout=30):
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_make_serve_writes_the_demo_and_answers_v2_infer(tmp_path):
    repo = tmp_path / "models"
    s = ServeProcess(["make", "--no-print-directory", "serve",
                      f"ARGS=--repository {repo} --http-port 0 --socket-port 0"], cwd=ROOT)
    try:
        assert any("curl -s" in ln for ln in s.lines), "the banner shows a curl line"
        request = (repo / "digits" / "request.json").read_bytes()
        status, body = post(s.http, "/v2/models/digits/infer", request)
        assert status == 200, body
        reply = json.loads(body)
        x = np.array(json.loads(request)["inputs"][0]["data"], np.float32).reshape(1, 8, 8, 1)
        expected = engine.load(repo / "digits" / "1" / "model.engine").predict(x)
        got = np.array(reply["outputs"][0]["data"], np.float32).reshape(expected.shape)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        assert reply["model_name"] == "digits" and reply["model_version"] == "1"
        assert int(np.argmax(got)) == int(np.argmax(expected))
        for line in _readme_curl_lines():  # the README's own curl lines, as written
            cmd = line.replace("localhost:8000", s.http)
            out = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0 and out.stdout, (cmd, out.stderr)
            if "/metrics" in cmd:
                assert "engine_requests_total" in out.stdout
            else:
                assert "error" not in json.loads(out.stdout), out.stdout
            if "/chat/completions" in cmd:  # greedy (temperature 0): the model's own answer
                assert "Paris" in json.loads(out.stdout)["choices"][0]["message"]["content"], out.stdout
    finally:
        s.signal(signal.SIGTERM)
        s.proc.wait(60)


def _readme_curl_lines():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"call it with:\n\n```bash\n(.*?)```", text, flags=re.S).group(1)
    lines = [ln.split("  #")[0].strip() for ln in block.splitlines() if ln.startswith("curl ")]
    assert len(lines) >= 3
    return lines


def _slow_model_repo(repo: Path) -> Path:
    from engine import nn
    nn.set_random_seed(0)
    layers = [nn.Input((1024,), name="x")] + [nn.Dense(1024, activation="relu") for _ in range(6)] + \
             [nn.Dense(4, name="probs")]
    return write_version(repo, "slow", 1, model=nn.Sequential(layers),
                         config={"max_batch_size": 0, "warmup": {"batch_sizes": [1]}})


def test_sigterm_answers_in_flight_requests_then_exits(tmp_path):
    repo = tmp_path / "models"
    path = _slow_model_repo(repo)
    s = ServeProcess([str(ENGINE), "serve", "--repository", str(repo), "--http-port", "0", "--socket-port", "0",
                      "--control", "explicit", "--no-demo"], timeout=60)
    x = np.random.default_rng(0).random((256, 1024), dtype=np.float32)
    body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    results = []

    def client():
        try:
            results.append(post(s.http, "/v2/models/slow/infer", body, timeout=60))
        except Exception as e:  # a dropped request shows up as a failure below
            results.append((None, repr(e).encode()))

    try:
        threads = [threading.Thread(target=client) for _ in range(12)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # the requests are in: some computing, most queued
        s.signal(signal.SIGTERM)
        for t in threads:
            t.join(90)
        assert s.proc.wait(90) == 0
    finally:
        s.kill()
    assert len(results) == 12
    expected = engine.load(path).predict(x)
    for status, reply in results:
        assert status == 200, reply[:300]
        got = np.array(json.loads(reply)["outputs"][0]["data"], np.float32).reshape(expected.shape)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert any("draining" in ln for ln in s.lines)


def test_memory_is_flat_over_10k_requests(tmp_path):
    from engine.serve.client import Client
    repo = tmp_path / "models"
    write_version(repo, "digits", 1)
    s = ServeProcess([str(ENGINE), "serve", "--repository", str(repo), "--http-port", "0", "--socket-port", "0",
                      "--control", "explicit", "--no-demo"], timeout=60)
    try:
        x = images(4)
        body = json.dumps({"inputs": [{"name": "x", "shape": [4, 8, 8, 1], "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}).encode()
        host, port = s.http.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        client = Client(s.socket, timeout=30)

        def burst(n):
            for i in range(n):
                if i % 4 == 0:
                    conn.request("POST", "/v2/models/digits/infer", body=body)
                    r = conn.getresponse()
                    assert r.status == 200
                    r.read()
                else:
                    assert client.predict("digits", x).shape == (4, 10)

        burst(2000)  # warm: plans, allocator pools, metric children
        before = s.rss_kib()
        burst(10_000)
        after = s.rss_kib()
        conn.close()
        client.close()
        assert after - before < 16 * 1024, f"RSS grew {before} -> {after} KiB over 10k requests"
    finally:
        s.signal(signal.SIGTERM)
        s.proc.wait(60)
