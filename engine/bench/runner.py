"""The coordinator: one worker process per framework, driven round-robin.

    result = bench_model("model.onnx", peers=["onnxruntime"], batches=[1, 8], threads=2, runs=50)

For each batch size every framework first computes the outputs once (compared with engine's
before anything is timed), then warms up, then the timed runs go in rounds: each framework does
a slice of its runs in turn, so a burst of machine noise lands on all of them alike rather than
on whichever ran at that moment. A worker that crashes or errors marks its framework "failed"
with the reason; the others go on.
"""

from __future__ import annotations

import math
import os
import platform
import select
import subprocess
import sys
import tempfile

import numpy as np

from ..errors import EngineError
from . import inputs as inp
from .peers import PEERS, Peer
from .worker import _HEADER, read_msg, write_msg  # noqa: F401

ROUNDS = 10  # slices per batch size: enough interleaving, little IPC


class WorkerFailed(Exception):
    pass


class Worker:
    """A `python -m engine.bench.worker` process; call() sends one command and waits for its answer."""

    def __init__(self, name: str, threads: int = 1):
        self.name = name
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  closed in close(); outlives __init__
        env = dict(os.environ)
        # Thread pools that read the environment at start-up get the same count as the rest.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
        env.setdefault("KERAS_BACKEND", "torch")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.bench.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=env)

    def call(self, *msg, timeout: float = 300.0):
        try:
            write_msg(self.proc.stdin, msg)
            if not select.select([self.proc.stdout], [], [], timeout)[0]:
                raise WorkerFailed(f"no answer to {msg[0]!r} within {timeout:.0f} s")
            status, value = read_msg(self.proc.stdout)
        except (EOFError, BrokenPipeError, OSError) as e:
            code = self.proc.poll()
            raise WorkerFailed(f"worker process ended (exit code {code}; {type(e).__name__}); "
                               f"its last words: {self.stderr_tail() or '(none)'}") from None
        if status != "ok":
            raise WorkerFailed(value)
        return value

    def stderr_tail(self, n: int = 400) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace").strip()[-n:]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def machine() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def bench_model(model: str, *, peers, batches, threads: int = 1, warmup: int = 3, runs: int | None = 20,
                seconds: float | None = None, shapes: dict | None = None, seed: int = 0,
                input_file: str | None = None, peer_model: str | None = None, progress=None) -> dict:
    """Time engine and each peer on `model`; the result dict documented in docs/bench.md."""
    if runs is None and seconds is None:
        raise EngineError("bench: give --runs or --seconds")
    peer_file = peer_model or model
    frameworks = [{"name": "engine", "status": "ok", "reason": None, "install": None, "version": None}]
    workers = {}
    try:
        workers["engine"] = w = Worker("engine", threads)
        try:
            frameworks[0]["version"] = w.call("load", "engine", str(model), threads)["version"]
            signature = w.call("signature")
        except WorkerFailed as e:
            raise EngineError(f"bench: engine could not load {model}: {e}") from None
        for name in peers:
            if name not in PEERS:
                raise EngineError(f"bench: unknown peer {name!r}; known: {', '.join(PEERS)}")
            frameworks.append(_start_peer(PEERS[name], peer_file, threads, workers))

        if input_file is not None:
            fixed = inp.read_inputs(input_file, signature)
            batches = [int(next(iter(fixed.values())).shape[0]) if fixed and next(iter(fixed.values())).ndim else 1]
        results = []
        total = len(batches) * (ROUNDS + 1)
        for bi, batch in enumerate(batches):
            feeds = fixed if input_file is not None else inp.make_inputs(signature, batch, shapes or {}, seed)
            rows = _bench_batch(workers, frameworks, batch, feeds, warmup, runs, seconds, progress,
                                bi * (ROUNDS + 1), total)
            results.extend(rows)
        for f in frameworks:
            f["peak_rss_mib"] = None
            if f["name"] in workers and f["status"] == "ok":
                try:
                    f["peak_rss_mib"] = workers[f["name"]].call("stats")["peak_rss_bytes"] / 2**20
                except WorkerFailed as e:
                    _fail(f, workers, e)
        return {"schema": "engine-bench/1", "mode": "model", "model": str(model),
                "peer_model": None if peer_model is None else str(peer_model),
                "settings": {"batches": list(batches), "threads": threads, "warmup": warmup, "runs": runs,
                             "seconds": seconds, "seed": seed, "shapes": {k: list(v) for k, v in (shapes or {}).items()},
                             "input_file": input_file},
                "machine": machine(), "frameworks": frameworks, "results": _speedups(results, frameworks)}
    finally:
        for w in workers.values():
            w.close()


def _start_peer(peer: Peer, path: str, threads: int, workers: dict) -> dict:
    f = {"name": peer.name, "status": "ok", "reason": None, "install": None, "version": None}
    why = peer.unavailable(path)
    if why is not None:
        f["status"], f["reason"] = why.split(":", 1)[0].replace(" ", "_"), why
        if f["status"] == "missing":
            f["install"] = "pip install 'engine[bench]'"
        return f
    workers[peer.name] = w = Worker(peer.name, threads)
    try:
        f["version"] = w.call("load", peer.name, str(path), threads)["version"]
    except WorkerFailed as e:
        _fail(f, workers, e)
    return f


def _fail(f: dict, workers: dict, e: Exception) -> None:
    f["status"], f["reason"] = "failed", str(e)
    w = workers.pop(f["name"], None)
    if w is not None:
        w.close()


def _bench_batch(workers, frameworks, batch, feeds, warmup, runs, seconds, progress, step0, total) -> list:
    live = [f for f in frameworks if f["status"] == "ok"]
    outputs = {}
    for f in list(live):  # correctness first: outputs once, before any timing
        w = workers[f["name"]]
        try:
            w.call("feeds", batch, feeds)
            outputs[f["name"]] = w.call("outputs", batch)
            w.call("run", batch, warmup, None)
        except WorkerFailed as e:
            _fail(f, workers, e)
            live.remove(f)
    if progress:
        progress(step0 + 1, total)
    timed = {f["name"]: {"latencies_s": [], "cpu_s": 0.0, "wall_s": 0.0} for f in live}
    for r in range(ROUNDS):
        n = None if runs is None else runs * (r + 1) // ROUNDS - runs * r // ROUNDS
        for f in list(live):
            if n == 0:
                break
            try:
                got = workers[f["name"]].call("run", batch, n, None if seconds is None else seconds / ROUNDS,
                                              timeout=300 + (seconds or 0))
            except WorkerFailed as e:
                _fail(f, workers, e)
                live.remove(f)
                continue
            t = timed[f["name"]]
            t["latencies_s"] += got["latencies_s"]
            t["cpu_s"] += got["cpu_s"]
            t["wall_s"] += got["wall_s"]
        if progress:
            progress(step0 + 2 + r, total)
    ours = outputs.get("engine")
    rows = []
    for f in live:
        t = timed[f["name"]]
        lat = np.asarray(t["latencies_s"]) * 1e3
        abs_d, rel_d = _differences(outputs[f["name"]], ours) if f["name"] != "engine" else (0.0, 0.0)
        rows.append({"framework": f["name"], "batch": batch, "runs": int(lat.size),
                     "p50_ms": float(np.percentile(lat, 50)), "p90_ms": float(np.percentile(lat, 90)),
                     "p99_ms": float(np.percentile(lat, 99)), "mean_ms": float(lat.mean()),
                     "throughput_per_s": batch * lat.size / (lat.sum() / 1e3),
                     "cpu_cores": t["cpu_s"] / t["wall_s"] if t["wall_s"] > 0 else None,
                     "max_abs_diff": abs_d, "max_rel_diff": rel_d,
                     "speedup_vs_best_peer": None, "best_peer": None,
                     "latencies_ms": [round(float(v), 6) for v in lat]})
    return rows


def _differences(theirs: list, ours: list) -> tuple:
    """Largest |theirs - ours| over all outputs, and the same divided by max(|ours|, 1e-6)
    element-wise (so near-zero outputs do not blow it up past 1e6 x the absolute difference)."""
    if len(theirs) != len(ours):
        return math.inf, math.inf
    abs_d = rel_d = 0.0
    for a, b in zip(theirs, ours):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            if a.size != b.size:
                return math.inf, math.inf
            a = a.reshape(b.shape)  # e.g. a (n,) against (n, 1)
        d = np.abs(a - b)
        if d.size:
            abs_d = max(abs_d, float(d.max()))
            rel_d = max(rel_d, float((d / np.maximum(np.abs(b), 1e-6)).max()))
    return abs_d, rel_d


def _speedups(rows: list, frameworks: list) -> list:
    """On each engine row: the best peer's p50 over ours (2.0: engine takes half the time)."""
    for r in rows:
        if r["framework"] != "engine":
            continue
        peers = [p for p in rows if p["batch"] == r["batch"] and p["framework"] != "engine"]
        if peers:
            best = min(peers, key=lambda p: p["p50_ms"])
            r["best_peer"] = best["framework"]
            r["speedup_vs_best_peer"] = best["p50_ms"] / r["p50_ms"]
    return rows
