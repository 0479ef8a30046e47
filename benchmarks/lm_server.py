"""The engine's own server under concurrent streams (benchmarks/lm.py's server rows).

`python -m engine serve` in a subprocess on a temporary repository holding the GGUF file as
smollm2/1/model.gguf; N client threads each stream one /v1/completions request; aggregate tokens/s
from the first send to the last event. Standard library only on the client side.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "smollm2"
# Story openings (not instructions, which a plain completion often ends at once with the
# end-of-sequence token): each runs to max_tokens, so every stream decodes as many tokens.
STREAM_PROMPTS = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "The history of the bicycle begins in the early nineteenth century, when",
    "The market opened at dawn. Farmers unloaded their carts, and",
    "The lighthouse keeper climbed the spiral stairs every evening to",
    "Deep beneath the mountain, the volcano had been sleeping for a thousand years, until",
    "The cat sat by the window and watched the rain. She remembered the day when",
    "The river starts as a thin stream high in the mountains, then",
    "Long ago, sailors crossed the ocean using only the stars, and",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EngineServer:
    """`python -m engine serve` on a temporary repository holding smollm2/1/model.gguf (a symlink)."""

    def __init__(self, path: Path, threads: int, start_timeout: float = 300.0):
        self.tmp = Path(tempfile.mkdtemp(prefix="lmbench-"))
        version = self.tmp / MODEL_NAME / "1"
        version.mkdir(parents=True)
        (version / "model.gguf").symlink_to(path.resolve())
        self.port = _free_port()
        env = dict(os.environ, ENGINE_NUM_THREADS=str(threads))
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [sys.executable, "-m", "engine", "serve", "--repository", str(self.tmp), "--host", "127.0.0.1",
               "--http-port", str(self.port), "--socket-port", "-1", "--control", "explicit", "--no-demo",
               "--log-level", "warning"]
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.err)
        try:
            self._wait_ready(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine serve exited ({self.proc.returncode}): {self.stderr_tail()}")
            with contextlib.suppress(OSError):
                status, body = self.request("GET", f"/v2/models/{MODEL_NAME}/ready", timeout=5)
                if status == 200:
                    return
                state = self._state()
                if state and str(state[0]).upper() == "FAILED":  # the index spells states as Triton does
                    raise RuntimeError(f"engine serve: model {MODEL_NAME} {state[0]}: {state[1]}")
            time.sleep(0.5)
        raise RuntimeError(f"engine serve: {MODEL_NAME} not ready after {timeout:.0f} s: {self.stderr_tail()}")

    def _state(self):
        status, body = self.request("POST", "/v2/repository/index", b"{}", timeout=5)
        if status != 200:
            return None
        for row in json.loads(body):
            if row.get("name") == MODEL_NAME:
                return row.get("state"), row.get("reason", "")
        return None

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 60):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def stream_completion(self, prompt: str, max_tokens: int, timeout: float = 300) -> dict:
        """One streaming /v1/completions request: tokens received, time to first token, seconds."""
        body = json.dumps({"model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                           "stream": True, "stream_options": {"include_usage": True}}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            if r.status != 200:
                raise RuntimeError(f"/v1/completions: HTTP {r.status}: {r.read()[:300]!r}")
            return parse_stream(r, t0)
        finally:
            conn.close()

    def stderr_tail(self, n: int = 800) -> str:
        self.err.seek(0)
        return self.err.read().decode(errors="replace").strip()[-n:] or f"exit status {self.proc.poll()}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child: SIGTERM drains and exits
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def parse_stream(lines, t0: float) -> dict:
    """Read server-sent events (`data: {...}` lines up to `data: [DONE]`): chunks that carry text
    count one token each unless the final usage chunk says how many were generated."""
    chunks, usage, first = 0, None, None
    for raw in lines:
        line = raw.decode() if isinstance(raw, bytes) else raw
        line = line.strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        event = json.loads(data)
        if event.get("usage"):
            usage = event["usage"].get("completion_tokens")
        choice = (event.get("choices") or [{}])[0]
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            chunks += 1
            if first is None:
                first = time.perf_counter() - t0
    return {"tokens": usage if usage is not None else chunks, "ttft": first, "seconds": time.perf_counter() - t0}


def run_streams(server: EngineServer, n: int, max_tokens: int) -> dict:
    """n concurrent streams, one thread each: aggregate tokens/s from the first send to the last token."""
    results: list = [None] * n
    start = threading.Barrier(n + 1)

    def one(i: int) -> None:
        start.wait()
        try:
            results[i] = server.stream_completion(STREAM_PROMPTS[i % len(STREAM_PROMPTS)], max_tokens)
        except Exception as e:  # reported, not raised: the other streams still finish
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise RuntimeError(f"{len(errors)} of {n} streams failed: {errors[0]}")
    tokens = sum(r["tokens"] for r in results)
    return {"streams": n, "tokens": tokens, "seconds": wall, "tokens_per_s": tokens / wall,
            "ttft_ms": 1e3 * statistics.median([r["ttft"] for r in results if r["ttft"] is not None] or [float("nan")])}


def measure_server(path: Path, threads: int, streams, max_tokens: int, repeats: int, log) -> list[dict]:
    """Median run per stream count. The counts take turns, round after round (a first round
    unmeasured), so a slow minute on a shared machine lands on all of them, not on one."""
    server = EngineServer(path, threads)
    try:
        for n in streams:  # warm-up: every batch size's scratch and cache blocks
            run_streams(server, n, max_tokens)
        runs = {n: [] for n in streams}
        for _ in range(repeats):
            for n in streams:
                runs[n].append(run_streams(server, n, max_tokens))
        out = []
        for n in streams:
            best = sorted(runs[n], key=lambda r: r["tokens_per_s"])[len(runs[n]) // 2]  # the median run
            out.append(best)
            log(f"  lm server {n} streams: {best['tokens']} tokens in {best['seconds']:.2f} s, "
                f"{best['tokens_per_s']:.1f} tokens/s, median first token {best['ttft_ms']:.0f} ms")
        return out
    finally:
        server.stop()
