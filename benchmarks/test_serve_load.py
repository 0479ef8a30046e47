"""Smoke test of the serving load generator against the FastAPI + onnxruntime baseline.

    pytest benchmarks/test_serve_load.py

The baseline runs in its own process (stopped by the fixture); the load generator runs here for
0.5 s at concurrency 2. Expected outputs come from the numpy forward pass of benchmarks/models.py.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

for mod in ("fastapi", "uvicorn", "onnxruntime", "onnx"):
    pytest.importorskip(mod)

from benchmarks import models as M  # noqa: E402
from benchmarks.serve_bench import baseline_server  # noqa: E402
from benchmarks.serve_load import VerifyError, Workload, run_load  # noqa: E402

DURATION, CONCURRENCY = 0.5, 2


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve_load")
    weights = M.make_weights("cnn")
    model_file = d / "cnn.onnx"
    model_file.write_bytes(M.onnx_model("cnn", weights, batch=None).SerializeToString())
    x = M.make_input("cnn", 1)
    srv = baseline_server(model_file, threads=1, mode="async")
    yield srv, x, M.numpy_forward("cnn", weights, x)
    srv.stop()


def _workload(srv, x, model="cnn"):
    host, port = srv.info["address"].rsplit(":", 1)
    return Workload("v2json", host, int(port), model, "x", "probs", x)


def test_counts_answers_without_errors(baseline):
    srv, x, expect = baseline
    r = run_load(_workload(srv, x), concurrency=CONCURRENCY, duration=DURATION, warmup=0.2, expect=expect)
    assert r["verified"] and r["errors"] == 0, r
    assert r["requests"] > 10
    assert r["rps"] == pytest.approx(r["requests"] / DURATION)
    assert 0 < r["p50_us"] <= r["p90_us"] <= r["p99_us"]
    # Little's law, independent of the counter: CONCURRENCY clients kept busy for DURATION s
    # answer about CONCURRENCY * DURATION / mean latency requests.
    busy_s = r["requests"] * r["mean_us"] / 1e6
    assert 0.5 * CONCURRENCY * DURATION <= busy_s <= 1.05 * CONCURRENCY * DURATION, r


def test_wrong_reference_stops_before_timing(baseline):
    srv, x, expect = baseline
    with pytest.raises(VerifyError, match="differs from the reference"):
        run_load(_workload(srv, x), concurrency=CONCURRENCY, duration=DURATION, expect=np.roll(expect, 1, axis=1))


def test_error_answers_are_counted_not_timed(baseline):
    srv, x, _ = baseline
    r = run_load(_workload(srv, x, model="nope"), concurrency=CONCURRENCY, duration=DURATION, warmup=0.1)
    assert r["requests"] == 0 and r["p99_us"] is None
    assert r["errors"] > 0 and set(r["error_reasons"]) == {"HTTP 404"}, r
