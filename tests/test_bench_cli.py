"""`engine bench`: model mode against each installed peer, the output-difference columns on a
deliberately perturbed model, and server mode against a real server on loopback.

References: onnxruntime run here directly (differences), the JSON Schema in docs/bench.md, the
server's own metrics (request counts). Timings are only checked for structure, never speed.
"""

import importlib.util
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import write_version

jsonschema = pytest.importorskip("jsonschema")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

from engine.cli import main

RUNS = 4
DOCS = Path(__file__).resolve().parents[1] / "docs" / "bench.md"


def _schema() -> dict:
    text = DOCS.read_text()
    block = re.search(r"<!-- bench-schema -->\s*```json\n(.*?)```", text, re.DOTALL)
    assert block, "docs/bench.md has no bench-schema block"
    return json.loads(block.group(1))


def _validate(doc: dict) -> None:
    jsonschema.Draft202012Validator(_schema()).validate(doc)


def _dense_onnx(path: Path, w: np.ndarray, b: np.ndarray) -> Path:
    """y = tanh(x @ w + b), x of shape (N, 16)."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
             helper.make_node("Tanh", ["a"], ["y"])]
    g = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                          [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 4)).astype(np.float32) * 0.3
    b = rng.standard_normal(4).astype(np.float32) * 0.1
    perturbed_w = w.copy()
    perturbed_w[3, 1] += 0.25  # one weight moved: outputs differ in column 1 only
    return _dense_onnx(d / "dense.onnx", w, b), _dense_onnx(d / "perturbed.onnx", perturbed_w, b)


def _bench(tmp_path, *args) -> dict:
    out = tmp_path / "out.json"
    assert main(["bench", *map(str, args), "--json", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    _validate(doc)
    return doc


def _frameworks(doc):
    return {f["name"]: f for f in doc["frameworks"]}


def test_onnx_against_each_peer(onnx_models, tmp_path):
    model, _ = onnx_models
    png = tmp_path / "lat.png"
    doc = _bench(tmp_path, model, "--peers", "onnxruntime,openvino,torch", "--batch", "1,3", "--runs", RUNS,
                 "--warmup", 1, "--threads", 1, "--plot", png)
    fw = _frameworks(doc)
    assert fw["engine"]["status"] == fw["onnxruntime"]["status"] == "ok"
    assert fw["onnxruntime"]["version"] == ort.__version__
    if importlib.util.find_spec("openvino") is None:  # the missing-peer path: named, with its extra
        assert fw["openvino"]["status"] == "missing" and "engine[bench]" in fw["openvino"]["install"]
    else:
        assert fw["openvino"]["status"] == "ok"
    assert fw["torch"]["status"] == "not_applicable" and "torch" in fw["torch"]["reason"]
    ran = [n for n, f in fw.items() if f["status"] == "ok"]
    assert sorted((r["framework"], r["batch"]) for r in doc["results"]) == sorted(
        (n, b) for n in ran for b in (1, 3))
    for r in doc["results"]:
        assert r["runs"] == len(r["latencies_ms"]) == RUNS
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= max(r["latencies_ms"]) + 1e-9
        assert r["throughput_per_s"] == pytest.approx(r["batch"] * RUNS / (sum(r["latencies_ms"]) / 1e3), rel=1e-3)
        if r["framework"] == "engine":
            assert r["max_abs_diff"] == 0
            peers = [p for p in doc["results"] if p["batch"] == r["batch"] and p["framework"] != "engine"]
            best = min(peers, key=lambda p: p["p50_ms"])
            assert r["best_peer"] == best["framework"]
            assert r["speedup_vs_best_peer"] == pytest.approx(best["p50_ms"] / r["p50_ms"])
        else:
            assert r["max_abs_diff"] < 1e-5 and r["speedup_vs_best_peer"] is None
    for f in fw.values():
        assert (f["peak_rss_mib"] or 0) >= 0 and (f["status"] != "ok") == (f["peak_rss_mib"] is None)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_difference_columns_on_a_perturbed_model(onnx_models, tmp_path):
    model, perturbed = onnx_models
    x = np.random.default_rng(5).random((6, 16), dtype=np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    # Reference: onnxruntime on both files, outside the code under test.
    ours = ort.InferenceSession(str(perturbed), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    theirs = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    d = np.abs(theirs.astype(np.float64) - ours)
    assert d.max() > 0.01  # the perturbation shows
    doc = _bench(tmp_path, perturbed, "--peer-model", model, "--peers", "onnxruntime", "--input",
                 tmp_path / "x.npz", "--runs", 2, "--warmup", 0)
    assert doc["settings"]["batches"] == [6] and doc["peer_model"] == str(model)
    (row,) = [r for r in doc["results"] if r["framework"] == "onnxruntime"]
    assert row["max_abs_diff"] == pytest.approx(d.max(), abs=1e-5)
    assert row["max_rel_diff"] == pytest.approx((d / np.maximum(np.abs(ours), 1e-6)).max(), rel=1e-3)


def test_a_peer_that_fails_to_load_does_not_end_the_run(onnx_models, tmp_path):
    model, _ = onnx_models
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf at all")
    doc = _bench(tmp_path, model, "--peer-model", broken, "--peers", "onnxruntime", "--runs", 2, "--warmup", 0)
    fw = _frameworks(doc)
    assert fw["onnxruntime"]["status"] == "failed" and fw["onnxruntime"]["reason"]
    assert [r["framework"] for r in doc["results"]] == ["engine"]
    assert doc["results"][0]["speedup_vs_best_peer"] is None


@pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="keras not installed")
def test_keras_file_against_keras(tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="relu"),
                            keras.layers.Dense(3, activation="softmax")])
    net.save(tmp_path / "k.h5")
    doc = _bench(tmp_path, tmp_path / "k.h5", "--peers", "keras,openvino", "--batch", "2", "--runs", 2)
    fw = _frameworks(doc)
    assert fw["keras"]["status"] == "ok" and fw["openvino"]["status"] == "not_applicable"
    (row,) = [r for r in doc["results"] if r["framework"] == "keras"]
    assert row["max_abs_diff"] < 1e-5


@pytest.mark.parametrize("args, message", [
    (["--shape", "x=abc"], "expected NAME=D0xD1"),
    (["--peers", "tensorflow"], "unknown peer 'tensorflow'"),
    (["--batch", "0"], "whole numbers >= 1"),
    (["--shape", "z=1x16"], "model's inputs are ['x']"),
])
def test_bad_arguments_are_clear_errors(onnx_models, capsys, args, message):
    assert main(["bench", str(onnx_models[0]), "--runs", "1", "--quiet", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from engine.serve.server import Server
    repo = tmp_path_factory.mktemp("repo")
    write_version(repo, "digits", 1)
    srv = Server(repo, http_port=0, socket_port=None, control="explicit")
    srv.start()
    yield srv
    srv.stop(timeout=10)


def test_server_mode_against_a_real_server(server, tmp_path):
    before = sum(v.snapshot()["completed"] for v in server.metrics.versions())
    doc = _bench(tmp_path, f"http://{server.http_address}", "--model", "digits", "--concurrency", "1,4",
                 "--seconds", 0.5, "--batch", 2)
    after = sum(v.snapshot()["completed"] for v in server.metrics.versions())
    assert doc["input"] == {"name": "x", "datatype": "FP32", "shape": [2, 8, 8, 1]}
    assert [r["concurrency"] for r in doc["results"]] == [1, 4]
    for r in doc["results"]:
        assert r["errors"] == 0 and r["requests"] > 0, r
        assert r["rps"] == pytest.approx(r["requests"] / 0.5)
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["loadgen_cores"] >= 0
    # The server's own count: the timed answers plus the check request and the warm-up ones.
    assert after - before >= 1 + sum(r["requests"] for r in doc["results"])


def test_server_mode_unknown_model(server, capsys):
    assert main(["bench", f"http://{server.http_address}", "--model", "nope", "--seconds", "0.2", "--quiet"]) == 2
    assert "HTTP 404" in capsys.readouterr().err
