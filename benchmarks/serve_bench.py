"""Serving benchmark: the engine's socket and HTTP fronts against FastAPI + uvicorn + onnxruntime.

    python -m benchmarks.serve_bench [--threads 2] [--quick] [--duration 3] [--only main,reload,libs,loadgen]
                                     [--json PATH]

One ONNX file, the seed-000 CNN (benchmarks/models.py, symbolic batch dim), is served by the
engine (``<repo>/cnn/1/model.onnx``, ``engine.serve.server.Server``, default config: dynamic
batching up to 64 rows) and by the baseline (benchmarks/serve_baseline.py, the same file).
Each server runs in its own process, and so does the load generator (benchmarks/serve_load.py):
closed loop, batch-1 requests, ``--duration`` seconds per cell after a warm-up, the first answer
of each kind decoded and compared with a numpy forward pass before anything is timed.

Sections:

* ``main``: rps, p50, p90, p99 and errors at concurrency 1, 16, 64 for the engine socket, HTTP v2
  JSON and HTTP v2 binary fronts and the baseline in three forms (``async def`` endpoint; plain
  ``def``, run in FastAPI's thread pool; ``async def`` with onnxruntime's thread spinning off): the
  form with the most rps at concurrency 64 is the baseline. Then the ratios at 64 and the
  issue's targets, with two floors for context: the model call alone in-process, and the
  loopback round trip to a canned-answer server.
* ``reload``: load at concurrency 16 (HTTP JSON, then socket) against a server polling its
  repository every 0.5 s, while version 2 is copied in and version 1 removed; p99 inside the
  window around the reload and outside it, and the failed requests (must be 0).
* ``libs``: the engine's ASGI app (``engine.serve.http.create_app``) under uvicorn (httptools +
  uvloop), uvicorn (h11 + asyncio) and granian (embedded, in-process) at concurrency 64.
* ``loadgen``: the load generator against a trivial canned-answer server: what it can drive and
  the CPU it spends per request (it shares the machine's cores with the servers).

Same threads for all: ENGINE_NUM_THREADS and onnxruntime's intra_op_num_threads = ``--threads``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

if not __package__:  # run as a file: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"  # noqa: A001

import numpy as np  # noqa: E402

from . import models as M  # noqa: E402
from .serve_load import load_in_subprocess, window_stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 16, 64)
MODEL, INPUT, OUTPUT = "cnn", "x", "probs"
ENGINE_FRONTS = (("socket", "engine socket"), ("v2json", "engine HTTP v2 JSON"),
                 ("v2binary", "engine HTTP v2 binary"))
BASELINE_MODES = (("async", "FastAPI+ORT (async def)"), ("sync", "FastAPI+ORT (def, threadpool)"),
                  ("async-nospin", "FastAPI+ORT (async def, ORT no spin)"))
HTTP_LIBS = (("uvicorn", "uvicorn (httptools + uvloop)"), ("uvicorn-h11", "uvicorn (h11 + asyncio)"),
             ("granian", "granian (embedded, ASGI)"))
POLL_INTERVAL = 0.5
TARGETS = {"http_rps_ratio": 4.0, "socket_rps_ratio": 10.0, "socket_p50_c1_us": 150.0}


# ----------------------------------------------------------------------------- server processes

class ServerProcess:
    """A server in its own process: it prints one JSON line (its addresses and pid) when ready and
    stops when its stdin closes."""

    def __init__(self, cmd: list, env: dict, what: str, start_timeout: float = 120.0):
        self.what = what
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=start_timeout)
        except queue.Empty:
            line = ""
        if not line.startswith("{"):
            self.stop()
            raise RuntimeError(f"{what} did not start: {self.stderr_tail()}")
        self.info = json.loads(line)
        self.pid = self.info["pid"]

    def stderr_tail(self, n: int = 800) -> str:
        self.err.seek(0)
        return self.err.read().decode(errors="replace").strip()[-n:] or f"exit status {self.proc.poll()}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()  # our own child, by its handle
                self.proc.wait()
        self.err.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _env(threads: int) -> dict:
    env = dict(os.environ)
    env["ENGINE_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def engine_server(repo: Path, threads: int, control: str = "explicit", http_lib: Optional[str] = None) -> ServerProcess:
    cmd = [sys.executable, "-m", "benchmarks.serve_bench", "--serve-engine", str(repo), "--control", control,
           "--threads", str(threads)]
    if http_lib:
        cmd += ["--http-lib", http_lib]
    return ServerProcess(cmd, _env(threads), f"engine server ({http_lib or 'Server'})")


def baseline_server(model_file: Path, threads: int, mode: str) -> ServerProcess:
    cmd = [sys.executable, "-m", "benchmarks.serve_baseline", "--model-file", str(model_file), "--name", MODEL,
           "--threads", str(threads), "--mode", mode.split("-")[0]]
    if mode.endswith("-nospin"):
        cmd.append("--no-spinning")
    return ServerProcess(cmd, _env(threads), f"baseline ({mode})")


def _serve_engine(repo: str, control: str, threads: int, http_lib: Optional[str]) -> int:
    """The child side of engine_server: Server, or the ASGI app under one HTTP library."""
    os.environ["ENGINE_NUM_THREADS"] = str(threads)
    if http_lib is None:
        from engine.serve.server import Server
        with Server(repo, host="127.0.0.1", http_port=0, socket_port=0, control=control,
                    poll_interval=POLL_INTERVAL) as s:
            print(json.dumps({"http": s.http_address, "socket": s.socket_address, "pid": os.getpid()}), flush=True)
            sys.stdin.read()
        return 0
    from engine.serve.http import create_app
    from engine.serve.limits import Limits
    from engine.serve.manager import ModelManager
    manager = ModelManager(repo, control=control, poll_interval=POLL_INTERVAL)
    manager.start()
    app = create_app(manager, token=None, limits=Limits())
    try:
        if http_lib == "granian":
            _run_granian(app)
        else:
            _run_uvicorn(app, http_lib)
    finally:
        manager.close(5.0)
    return 0


def _run_uvicorn(app, http_lib: str) -> None:
    import uvicorn
    h11 = http_lib == "uvicorn-h11"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    server = uvicorn.Server(uvicorn.Config(app, loop="asyncio" if h11 else "uvloop", http="h11" if h11 else "httptools",
                                           lifespan="off", log_level="warning", access_log=False))

    def stop_when_stdin_closes() -> None:
        sys.stdin.read()
        server.should_exit = True
    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    print(json.dumps({"http": f"127.0.0.1:{sock.getsockname()[1]}", "pid": os.getpid()}), flush=True)
    server.run(sockets=[sock])


def _run_granian(app) -> None:
    """Granian's embedded server (experimental in granian 2) runs the app in this process, on
    this process's asyncio loop; it binds a port itself, so a free one is picked first."""
    import asyncio

    from granian.constants import Interfaces
    from granian.server.embed import Server as Granian
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Granian(app, address="127.0.0.1", port=port, interface=Interfaces.ASGINL, log_enabled=False)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(server.serve())
        for _ in range(500):  # until it answers
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.01)
        print(json.dumps({"http": f"127.0.0.1:{port}", "pid": os.getpid()}), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        server.stop()
        await task
    try:
        import uvloop
        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def _floor_child(framework: str, model_file: str, x_path: str, threads: int) -> int:
    """The model call alone, in this process, as the servers make it: its median latency."""
    from .timing import measure
    x = np.load(x_path)
    if framework == "engine":
        os.environ["ENGINE_NUM_THREADS"] = str(threads)
        import engine
        predict = engine.load(model_file).predict
    else:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(model_file, so, providers=["CPUExecutionProvider"])

        def predict(x):
            return sess.run(None, {INPUT: x})[0]
    t = measure(lambda: predict(x), min_time=0.5)
    print(json.dumps({"framework": framework, "median_us": t.median_us, "p90_us": t.p90_us}))
    return 0


def run_floor(w: dict, threads: int, log) -> dict:
    """In-process batch-1 model call latency, engine and onnxruntime, each in a fresh process."""
    out = {}
    for fw in ("engine", "ort"):
        cmd = [sys.executable, "-m", "benchmarks.serve_bench", "--floor", fw, "--model-file", str(w["model_file"]),
               "--input", w["x"], "--threads", str(threads)]
        p = subprocess.run(cmd, cwd=ROOT, env=_env(threads), capture_output=True, text=True, timeout=120)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        out[fw] = json.loads(lines[-1])["median_us"] if lines else None
        log(f"  model call alone, {fw}: {_us(out[fw])} us")
    return out


# ----------------------------------------------------------------------------- the workload

def prepare(tmp: Path) -> dict:
    """The repository with cnn/1/model.onnx, the request input and the numpy reference output."""
    weights = M.make_weights(MODEL)
    x = M.make_input(MODEL, 1)
    expect = M.numpy_forward(MODEL, weights, x)
    repo = tmp / "repo"
    (repo / MODEL / "1").mkdir(parents=True)
    model_file = repo / MODEL / "1" / "model.onnx"
    model_file.write_bytes(M.onnx_model(MODEL, weights, batch=None).SerializeToString())
    shutil.copy(model_file, tmp / "model_v2.onnx")  # the bytes the reload copies in as version 2
    np.save(tmp / "x.npy", x)
    np.save(tmp / "expect.npy", expect)
    # The export itself, checked against numpy by an independent runtime before anything is timed.
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    y = ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"]).run(None, {INPUT: x})[0]
    if not np.allclose(y, expect, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"the ONNX export disagrees with numpy by {np.abs(y - expect).max():.3g}")
    return {"repo": repo, "model_file": model_file, "v2_file": tmp / "model_v2.onnx",
            "x": str(tmp / "x.npy"), "expect": str(tmp / "expect.npy"), "tmp": tmp}


def _load(w: dict, kind: str, address: str, c: int, duration: float, warmup: float, pid: Optional[int],
          verify: bool = True, samples: Optional[str] = None) -> dict:
    return load_in_subprocess(kind=kind, address=address, model=MODEL, input_path=w["x"],
                              expect_path=w["expect"] if verify else None, input_name=INPUT, output_name=OUTPUT,
                              concurrency=c, duration=duration, warmup=warmup, server_pid=pid, samples=samples)


# ----------------------------------------------------------------------------- sections

def run_main(w: dict, threads: int, duration: float, warmup: float, log) -> list:
    rows = []
    for mode, name in BASELINE_MODES:
        with baseline_server(w["model_file"], threads, mode) as srv:
            for c in CONCURRENCY:
                r = _load(w, "v2json", srv.info["address"], c, duration, warmup, srv.pid)
                rows.append({"front": name, "baseline_mode": mode, **r})
                log(_line(name, r))
    try:
        srv = engine_server(w["repo"], threads)
    except Exception as e:  # the baseline rows above still stand
        log(f"  engine server: {e}")
        return rows + [{"front": name, "kind": kind, "concurrency": c, "error": f"server did not start: {e}"}
                       for kind, name in ENGINE_FRONTS for c in CONCURRENCY]
    with srv:
        for kind, name in ENGINE_FRONTS:
            address = srv.info["socket"] if kind == "socket" else srv.info["http"]
            for c in CONCURRENCY:
                r = _load(w, kind, address, c, duration, warmup, srv.pid)
                rows.append({"front": name, **r})
                log(_line(name, r))
    return rows


def run_loadgen(w: dict, duration: float, warmup: float, log) -> list:
    rows = []
    cmd = [sys.executable, "-m", "benchmarks.serve_load", "--trivial-server"]
    with ServerProcess(cmd, _env(1), "trivial server") as srv:
        for c in (1, 64):
            r = _load(w, "v2json", srv.info["address"], c, duration, warmup, srv.pid, verify=False)
            rows.append({"front": "trivial server", **r})
            log(_line("trivial server", r))
    return rows


def run_libs(w: dict, threads: int, duration: float, warmup: float, log, c: int = 64) -> list:
    rows = []
    for lib, name in HTTP_LIBS:
        try:
            with engine_server(w["repo"], threads, http_lib=lib) as srv:
                r = _load(w, "v2json", srv.info["http"], c, duration, warmup, srv.pid)
        except Exception as e:  # one library failing to host the app leaves the other rows
            r = {"kind": "v2json", "concurrency": c, "error": f"{type(e).__name__}: {e}"}
        rows.append({"front": name, "lib": lib, **r})
        log(_line(name, r))
    return rows


def _version_ready(http_address: str, version: int) -> bool:
    host, port = http_address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", f"/v2/models/{MODEL}/versions/{version}/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _wait_for(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def run_reload(w: dict, threads: int, log, c: int = 16, warmup: float = 0.5, before: float = 1.5,
               duration: float = 6.0) -> list:
    """Copy version 2 in, `before` seconds into the timed window, then remove version 1, under load."""
    rows = []
    for kind, name in (("v2json", "engine HTTP v2 JSON"), ("socket", "engine socket")):
        tmp = Path(tempfile.mkdtemp(prefix=f"reload_{kind}_", dir=w["tmp"]))
        repo = tmp / "repo"
        shutil.copytree(w["repo"], repo)
        samples = str(tmp / "samples.npz")
        with engine_server(repo, threads, control="poll") as srv:
            address = srv.info["socket"] if kind == "socket" else srv.info["http"]
            result: dict = {}

            def load(result=result, kind=kind, address=address, pid=srv.pid, samples=samples) -> None:
                result.update(_load(w, kind, address, c, duration, warmup, pid, samples=samples))
            t = threading.Thread(target=load)
            t.start()
            time.sleep(warmup + before + 1.0)  # the load generator's own start-up and check take ~1 s
            # Copied under a hidden name, then renamed: the poller never sees a half-written file.
            staging = repo / ".staging"
            (staging / "2").mkdir(parents=True)
            shutil.copy(w["v2_file"], staging / "2" / "model.onnx")
            t_copy = time.monotonic()
            os.rename(staging / "2", repo / MODEL / "2")
            v2 = _wait_for(lambda: _version_ready(srv.info["http"], 2), 10.0)
            t_v2 = time.monotonic()
            v1_gone = _wait_for(lambda: not _version_ready(srv.info["http"], 1), 10.0)
            shutil.rmtree(repo / MODEL / "1")
            t_removed = time.monotonic()
            t.join()
        row = {"front": name, "reload": True, **result, "v2_ready": v2, "v1_retired": v1_gone,
               "t_v2_ready_s": t_v2 - t_copy}
        if "error" not in result and os.path.exists(samples):
            s = np.load(samples)
            lo, hi = t_copy - 0.05, t_removed + POLL_INTERVAL + 0.25  # up to the scan after the removal
            timed = (s["t0"] >= s["t_warm"]) & (s["t0"] + s["latency_us"] / 1e6 <= s["t_end"])
            row.update(window_stats(s["t0"][timed], s["latency_us"][timed], s["ok"][timed], lo, hi),
                       window_s=hi - lo)
            if not s["t_warm"] <= lo < hi <= s["t_end"]:
                row["note"] = "the reload window does not lie inside the timed window"
        rows.append(row)
        log(f"  reload {name}: " + (result.get("error") or
                                   f"p99 in {_us(row.get('p99_in_us'))} out {_us(row.get('p99_out_us'))} us, "
                                   f"failed {result.get('errors')}"))
    return rows


# ----------------------------------------------------------------------------- tables

def _us(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def _line(name: str, r: dict) -> str:
    if "error" in r:
        return f"  {name} c={r.get('concurrency')}: FAILED: {r['error']}"
    return (f"  {name} c={r['concurrency']}: {r['rps']:.0f} rps, p50 {_us(r['p50_us'])} us, "
            f"p99 {_us(r['p99_us'])} us, errors {r['errors']}")


def _row_cells(r: dict) -> list:
    if "error" in r:
        return [r["front"], r.get("concurrency"), "FAIL", "", "", "", "", "", r["error"][:90]]
    return [r["front"], r["concurrency"], f"{r['rps']:.0f}", _us(r["p50_us"]), _us(r["p90_us"]), _us(r["p99_us"]),
            r["errors"], f"{r['loadgen_cores']:.2f}", _us(r.get("server_cpu_us_per_req"))]


HEADERS = ["front end", "concurrency", "rps", "p50 us", "p90 us", "p99 us", "errors", "load gen CPU (cores)",
           "server CPU us/req"]


def baseline_rows(rows: list) -> tuple[str, list]:
    """The baseline mode with the higher rps at concurrency 64, and its rows."""
    def rps64(mode):
        r = [x for x in rows if x.get("baseline_mode") == mode and x.get("concurrency") == 64 and "rps" in x]
        return r[0]["rps"] if r else -1.0
    best = max((m for m, _ in BASELINE_MODES), key=rps64)
    return best, [r for r in rows if r.get("baseline_mode") == best]


def ratios(rows: list) -> dict:
    """Each engine front's rps and p99 against the baseline at concurrency 64, and the targets."""
    mode, base = baseline_rows(rows)
    b64 = next((r for r in base if r["concurrency"] == 64 and "rps" in r), None)

    def at(front, c):
        return next((r for r in rows if r["front"] == front and r["concurrency"] == c and "rps" in r), None)
    out = {"baseline_mode": mode, "fronts": {}}
    if b64 is None:
        return out
    for _, name in ENGINE_FRONTS:
        r = at(name, 64)
        if r is not None:
            out["fronts"][name] = {"rps_ratio": r["rps"] / b64["rps"], "p99_us": r["p99_us"],
                                   "baseline_p99_us": b64["p99_us"]}
    http = out["fronts"].get("engine HTTP v2 JSON")
    sock = out["fronts"].get("engine socket")
    s1 = at("engine socket", 1)
    out["targets"] = {
        "HTTP v2 JSON >= 4x baseline rps at c=64, lower p99":
            None if http is None else (http["rps_ratio"] >= TARGETS["http_rps_ratio"]
                                       and http["p99_us"] < http["baseline_p99_us"]),
        "socket >= 10x baseline rps at c=64":
            None if sock is None else sock["rps_ratio"] >= TARGETS["socket_rps_ratio"],
        "socket p50 at c=1 <= 150 us":
            None if s1 is None else s1["p50_us"] <= TARGETS["socket_p50_c1_us"],
    }
    return out


def report(result: dict, format_table) -> str:
    out = []
    rows = result.get("main") or []
    if rows:
        mode, _ = baseline_rows(rows)
        order = [n for _, n in ENGINE_FRONTS] + [n for _, n in BASELINE_MODES]
        body = [_row_cells(r) for n in order for r in rows if r["front"] == n]
        out.append(format_table(HEADERS, body, "Serving the seed-000 CNN (batch-1 requests, closed loop; "
                                               "higher rps, lower latency are better)"))
        rt = ratios(rows)
        base_name = dict(BASELINE_MODES)[mode]
        floor = result.get("floor_us") or {}
        if floor:
            out.append(f"The model call alone (batch 1, in-process, median): engine {_us(floor.get('engine'))} us, "
                       f"onnxruntime {_us(floor.get('ort'))} us")
        trivial = next((r for r in result.get("loadgen") or [] if r.get("concurrency") == 1 and "p50_us" in r), None)
        if trivial:
            out.append(f"Loopback HTTP round trip to a canned-answer server (c=1 p50): {_us(trivial['p50_us'])} us")
        out.append("")
        out.append(f"Against the baseline at concurrency 64 (baseline = {base_name}, the best of its "
                   f"{len(BASELINE_MODES)} forms there):")
        for name, f in rt["fronts"].items():
            out.append(f"  {name}: {f['rps_ratio']:.1f}x the rps; p99 {_us(f['p99_us'])} us vs "
                       f"{_us(f['baseline_p99_us'])} us")
        for what, ok in rt.get("targets", {}).items():
            out.append(f"  target {what}: {'met' if ok else ('MISSED' if ok is not None else 'not measured')}")
    rel = result.get("reload") or []
    if rel:
        body = []
        for r in rel:
            if "error" in r:
                body.append([r["front"], r.get("concurrency"), "FAIL", "", "", "", "", r["error"][:90]])
                continue
            note = r.get("note", "") if r.get("v2_ready") and r.get("v1_retired") else "reload not observed"
            body.append([r["front"], r["concurrency"], f"{r['rps']:.0f}", _us(r.get("p99_out_us")),
                         _us(r.get("p99_in_us")), f"{r.get('window_s', 0):.2f}", f"{r.get('t_v2_ready_s', 0):.2f}",
                         r.get("errors"), note])
        out.append("")
        out.append(format_table(["front end", "concurrency", "rps", "p99 outside us", "p99 in window us",
                                 "window s", "v2 ready after s", "failed", "note"], body,
                                "Hot reload under load: version 2 copied in, version 1 removed "
                                f"(poll every {POLL_INTERVAL} s)", left=(0, -1)))
    libs = result.get("libs") or []
    if libs:
        out.append("")
        out.append(format_table(HEADERS, [_row_cells(r) for r in libs],
                                "HTTP server library under the engine's ASGI app, v2 JSON, concurrency 64",
                                left=(0, -1) if any("error" in r for r in libs) else (0,)))
    lg = result.get("loadgen") or []
    if lg:
        body = [[r["front"], r.get("concurrency"), f"{r.get('rps', 0):.0f}", _us(r.get("p50_us")),
                 f"{r.get('loadgen_cores', 0):.2f}", _us(r.get("loadgen_cpu_us_per_req")),
                 _us(r.get("server_cpu_us_per_req"))] for r in lg if "error" not in r]
        out.append("")
        out.append(format_table(["server", "concurrency", "rps", "p50 us", "load gen CPU (cores)",
                                 "load gen CPU us/req", "server CPU us/req"], body,
                                "The load generator against a canned-answer server (its own ceiling and cost)"))
    return "\n".join(out)


# ----------------------------------------------------------------------------- entry points

def run(threads: int, quick: bool, log, sections=("main", "reload", "libs", "loadgen"),
        duration: Optional[float] = None) -> dict:
    duration = duration or (1.0 if quick else 3.0)
    warmup = 0.3 if quick else 0.5
    result: dict = {"threads": threads, "duration_s": duration, "warmup_s": warmup,
                    "cores": len(os.sched_getaffinity(0))}
    with tempfile.TemporaryDirectory(prefix="serve_bench_") as d:
        w = prepare(Path(d))
        if "loadgen" in sections:
            log("[serve] load generator against a trivial server ...")
            result["loadgen"] = run_loadgen(w, duration, warmup, log)
        if "main" in sections:
            log("[serve] model call alone ...")
            result["floor_us"] = run_floor(w, threads, log)
            log("[serve] fronts and baseline ...")
            result["main"] = run_main(w, threads, duration, warmup, log)
            result["ratios"] = ratios(result["main"])
        if "reload" in sections:
            log("[serve] hot reload under load ...")
            result["reload"] = run_reload(w, threads, log, duration=4.0 if quick else 6.0)
        if "libs" in sections:
            log("[serve] HTTP server libraries ...")
            result["libs"] = run_libs(w, threads, duration, warmup, log)
    return result


def main(argv: Optional[list] = None) -> int:
    from .run import format_table
    ap = argparse.ArgumentParser(prog="python -m benchmarks.serve_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="engine and onnxruntime threads (default: all cores, %(default)s)")
    ap.add_argument("--quick", action="store_true", help="1 s per cell instead of 3")
    ap.add_argument("--duration", type=float, help="seconds per cell (after the warm-up)")
    ap.add_argument("--only", default="main,reload,libs,loadgen", help="sections (default: %(default)s)")
    ap.add_argument("--json", metavar="PATH", help="also save every row as JSON")
    # the child side of engine_server()
    ap.add_argument("--serve-engine", metavar="REPO", help=argparse.SUPPRESS)
    ap.add_argument("--control", default="explicit", help=argparse.SUPPRESS)
    ap.add_argument("--http-lib", help=argparse.SUPPRESS)
    # the child side of run_floor()
    ap.add_argument("--floor", choices=("engine", "ort"), help=argparse.SUPPRESS)
    ap.add_argument("--model-file", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve_engine:
        return _serve_engine(a.serve_engine, a.control, max(1, a.threads), a.http_lib)
    if a.floor:
        return _floor_child(a.floor, a.model_file, a.input, max(1, a.threads))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    threads = max(1, a.threads)
    sections = tuple(s.strip() for s in a.only.split(",") if s.strip())
    cores = len(os.sched_getaffinity(0))
    print(f"# serving benchmark -- {cores} cores, {threads} threads for the engine and onnxruntime; the load "
          f"generator runs on the same cores (its CPU is in the tables)")
    load = os.getloadavg()[0]
    if load > 0.5 * cores:
        print(f"# WARNING: load average {load:.1f} on {cores} cores at start: figures are noisy")
    t0 = time.perf_counter()
    result = run(threads, a.quick, log, sections, a.duration)
    result["elapsed_s"] = time.perf_counter() - t0
    print(report(result, format_table))
    print(f"# done in {result['elapsed_s']:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1, default=float)
    failed = any("error" in r or r.get("errors") for r in result.get("main", []) + result.get("reload", []))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
