"""Closed-loop load generator for the serving benchmark (``benchmarks/serve_bench.py``).

    python -m benchmarks.serve_load --kind v2json --address 127.0.0.1:8000 --model cnn \\
        --input x.npy --expect y.npy --concurrency 16 --duration 3 --warmup 0.5

The generator itself (closed loop, the kinds v2json / v2binary / socket, the check of the first
answer) is `engine/bench/loadgen.py`, shared with `engine bench http://...`; this module is its
command line for the serving benchmark, plus the canned-answer server.

``--trivial-server`` runs a minimal HTTP server (a canned 200 answer to every request) to
show what this generator can drive and what it costs per request; ``--server-pid`` makes the
report include the server process's CPU over the same window. Clock: ``time.monotonic``
(CLOCK_MONOTONIC, the same in every process), so ``--samples`` stamps line up with events
another process records (the hot-reload window).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

if not __package__:  # run as a file: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

# The generator itself lives in the engine package (engine bench uses it too); re-exported here
# so existing callers (serve_bench.py, test_serve_load.py) keep their imports.
from engine.bench.loadgen import (  # noqa: F401
    KINDS,
    Run,
    VerifyError,
    Workload,
    clock,
    decode_v2_outputs,
    http_request,
    parse_http_response,
    run_load,
    serve_trivial,
    socket_frames,
    summarize,
    verify_http,
    verify_socket,
    window_stats,
)

# ----------------------------------------------------------------------------- subprocess entry

def load_in_subprocess(*, kind: str, address: str, model: str, input_path: str, expect_path: str | None,
                       input_name: str, output_name: str, concurrency: int, duration: float, warmup: float,
                       version: int | None = None, server_pid: int | None = None,
                       samples: str | None = None, connections: int = 4, env: dict | None = None) -> dict:
    """Run this module in a fresh process (so its CPU is its own) and return its JSON report; a
    failed verification or crash comes back as {"error": ...}."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "benchmarks.serve_load", "--kind", kind, "--address", address, "--model", model,
           "--input", input_path, "--input-name", input_name, "--output-name", output_name,
           "--concurrency", str(concurrency), "--duration", str(duration), "--warmup", str(warmup),
           "--connections", str(connections)]
    cmd += ["--expect", expect_path] if expect_path else ["--verify", "none"]
    if version is not None:
        cmd += ["--version", str(version)]
    if server_pid is not None:
        cmd += ["--server-pid", str(server_pid)]
    if samples:
        cmd += ["--samples", samples]
    e = dict(os.environ if env is None else env)
    e["PYTHONPATH"] = root + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    try:
        p = subprocess.run(cmd, check=False, cwd=root, env=e, capture_output=True, text=True, timeout=warmup + duration + 60)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "concurrency": concurrency, "error": "load generator timed out"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"kind": kind, "concurrency": concurrency,
                "error": f"load generator exited {p.returncode}: {p.stderr.strip()[-500:]}"}
    return json.loads(lines[-1])


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.split("\n\n")[0])
    ap.add_argument("--trivial-server", action="store_true", help="run the canned-answer HTTP server instead")
    ap.add_argument("--kind", choices=KINDS, default="v2json")
    ap.add_argument("--address", help="host:port of the server")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--version", type=int)
    ap.add_argument("--input", help=".npy file: the input tensor (batch dim included)")
    ap.add_argument("--expect", help=".npy file: the output the first answer must match")
    ap.add_argument("--verify", choices=("first", "none"), default="first")
    ap.add_argument("--input-name", default="x")
    ap.add_argument("--output-name", default="probs")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--connections", type=int, default=4, help="socket kind: connections the slots spread over")
    ap.add_argument("--server-pid", type=int, help="also report this process's CPU over the window")
    ap.add_argument("--samples", help="save every request's send time, latency and outcome (.npz)")
    a = ap.parse_args(argv)
    if a.trivial_server:
        serve_trivial()
        return 0
    if not a.address or not a.input:
        ap.error("--address and --input are required")
    host, _, port = a.address.rpartition(":")
    w = Workload(a.kind, host.strip("[]"), int(port), a.model, a.input_name, a.output_name, np.load(a.input),
                 a.version)
    expect = None
    if a.verify == "first":
        if not a.expect:
            ap.error("--expect is required unless --verify none")
        expect = np.load(a.expect)
    try:
        out = run_load(w, concurrency=max(1, a.concurrency), duration=a.duration, warmup=a.warmup, expect=expect,
                       connections=a.connections, server_pid=a.server_pid, samples=a.samples)
    except (VerifyError, OSError) as e:
        print(json.dumps({"kind": a.kind, "concurrency": a.concurrency, "error": f"{type(e).__name__}: {e}"}))
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
