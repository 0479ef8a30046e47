"""CPU a paced caller costs, measured for one framework in a fresh process.

    python -m benchmarks.cpu_usage --framework ort --model mlp [--threads 2] [--duration 2] [--idle 1]

The process loads exactly one framework, checks its output against the numpy reference, warms
up, and then calls ``predict`` on a batch-1 input once per period (default 1 ms, absolute
deadlines, sleeping in between) for ``--duration`` seconds. It prints one JSON line:

* ``busy_cores`` -- process CPU time (all threads, user + system) / wall time during the paced
  phase, as a fraction of one core. This includes the caller's own loop, which costs the same
  for every framework (the ``none`` framework measures that floor alone).
* ``idle_cores`` -- the same ratio over the ``--idle`` seconds after the last request, with the
  process doing nothing: a runtime whose workers spin while idle shows up here.
* ``rate_hz`` and ``latency_us`` (median of the paced calls) to show the pace was kept.

:func:`measure_in_subprocess` runs this module and returns the parsed row; ``run.py`` calls it
once per framework so that one library's spinning threads never pollute another's figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

FRAMEWORKS = ("none", "engine", "ort", "ort_nospin", "openvino", "torch")


def _paced(predict, x, period: float, duration: float, idle: float) -> dict:
    perf, cpu = time.perf_counter, time.process_time
    lat: list[float] = []
    n = max(1, int(round(duration / period)))
    t0, c0 = perf(), cpu()
    deadline = t0
    for _ in range(n):
        s = perf()
        predict(x)
        e = perf()
        lat.append(e - s)
        deadline += period
        rem = deadline - e
        if rem > 0:
            time.sleep(rem)
    t1, c1 = perf(), cpu()
    time.sleep(idle)
    t2, c2 = perf(), cpu()
    lat.sort()
    return {
        "requests": n,
        "wall_s": t1 - t0,
        "rate_hz": n / (t1 - t0),
        "latency_us": lat[len(lat) // 2] * 1e6,
        "busy_cores": (c1 - c0) / (t1 - t0),
        "idle_cores": (c2 - c1) / (t2 - t1),
    }


def run_one(framework: str, model: str, threads: int, duration: float, idle: float,
            period: float = 1e-3, batch: int = 1) -> dict:
    import numpy as np

    from . import models as M

    weights = M.make_weights(model)
    x = M.make_input(model, batch)
    # numpy's BLAS limited to the caller's thread for the reference, so that it leaves no
    # worker threads busy in this process.
    try:
        from threadpoolctl import threadpool_limits
        with threadpool_limits(1, user_api="blas"):
            ref = M.numpy_forward(model, weights, x)
    except ImportError:
        ref = M.numpy_forward(model, weights, x)

    if framework == "none":
        def predict(x):
            return x
        max_diff = 0.0
    else:
        predict = M.build_predict(framework, model, weights, threads, batch)
        y = np.asarray(predict(x))
        max_diff = float(np.abs(y - ref).max()) if y.shape == ref.shape else float("inf")
        if not max_diff <= 1e-4:
            return {"framework": framework, "model": model, "batch": batch, "threads": threads,
                    "error": f"output mismatch vs numpy reference: max abs diff {max_diff:g}, shape {y.shape}"}
    warm_end = time.perf_counter() + 0.2
    while time.perf_counter() < warm_end:
        predict(x)
    row = {"framework": framework, "model": model, "batch": batch, "threads": threads,
           "period_us": period * 1e6, "max_abs_diff": max_diff}
    row.update(_paced(predict, x, period, duration, idle))
    return row


def measure_in_subprocess(framework: str, model: str, threads: int, duration: float = 2.0,
                          idle: float = 1.0, period: float = 1e-3, timeout: float = 120.0) -> dict:
    """Run :func:`run_one` in a fresh ``python -m benchmarks.cpu_usage`` and return its row."""
    env = dict(os.environ)
    env["ENGINE_NUM_THREADS"] = str(threads)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "benchmarks.cpu_usage", "--framework", framework, "--model", model,
           "--threads", str(threads), "--duration", str(duration), "--idle", str(idle),
           "--period", str(period)]
    base = {"framework": framework, "model": model, "batch": 1, "threads": threads}
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=root)
    except subprocess.TimeoutExpired:
        return {**base, "error": f"timed out after {timeout:g} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
        return {**base, "error": f"exit {p.returncode}: {tail[0][:200]}"}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cpu_usage", description=__doc__.split("\n\n")[0])
    ap.add_argument("--framework", required=True, choices=FRAMEWORKS)
    ap.add_argument("--model", required=True, choices=("mlp", "cnn"))
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--duration", type=float, default=2.0, help="seconds of paced calls")
    ap.add_argument("--idle", type=float, default=1.0, help="seconds measured after the last call")
    ap.add_argument("--period", type=float, default=1e-3, help="seconds between request starts")
    a = ap.parse_args(argv)
    os.environ.setdefault("ENGINE_NUM_THREADS", str(a.threads))
    row = run_one(a.framework, a.model, a.threads, a.duration, a.idle, a.period)
    print(json.dumps(row), flush=True)
    return 0 if "error" not in row else 1


if __name__ == "__main__":
    if not __package__:  # run as a file: make `benchmarks` importable
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        __package__ = "benchmarks"  # noqa: A001
    raise SystemExit(main())
