""".engine files: round trips, atomic writes, and every way a file can be bad."""

import json
import os
import struct

import numpy as np
import pytest
import safetensors.numpy

import engine
from engine import nn
from helpers import rand


@pytest.fixture
def model():
    nn.set_random_seed(3)
    return nn.Sequential([nn.Input((6, 6, 2)), nn.Conv2D(4, 3, activation="relu", padding="same"),
                          nn.Flatten(), nn.Dense(3, activation="softmax")])


@pytest.mark.parametrize("as_directory", [False, True])
def test_round_trip(model, tmp_path, as_directory):
    path = tmp_path / ("m.engine/" if as_directory else "m.engine")
    x = rand(2, 6, 6, 2)
    model.save(str(path) + ("/" if as_directory else ""))
    assert path.is_dir() == as_directory
    if as_directory:
        assert (path / "graph.json").exists() and (path / "weights.safetensors").exists()
        model.save(path)  # overwriting an existing directory model keeps it a directory
        assert (path / "graph.json").exists()
    loaded = engine.load(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert [i.shape for i in loaded.inputs] == [(None, 6, 6, 2)]
    assert [o.shape for o in loaded.outputs] == [(None, 3)]
    # Saving the loaded model again gives the same weights.
    loaded.save(tmp_path / "again.engine")
    again = engine.load(tmp_path / "again.engine")
    for k, w in loaded.graph.initializers.items():
        np.testing.assert_array_equal(again.graph.initializers[k], w)


def test_file_is_plain_safetensors_with_versioned_header(model, tmp_path):
    model.save(tmp_path / "m.engine")
    from safetensors import safe_open
    with safe_open(str(tmp_path / "m.engine"), framework="numpy") as f:
        meta = f.metadata()
        assert meta["format"] == "engine" and meta["format_version"] == "1"
        assert json.loads(meta["graph"])["nodes"][0]["op"] == "Conv2D"
        assert set(f.keys()) == set(model.to_graph().initializers)


def test_save_is_atomic(model, tmp_path, monkeypatch):
    path = tmp_path / "m.engine"
    model.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before                    # old file untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine"]  # no temp left


def test_missing_file(tmp_path):
    with pytest.raises(engine.ModelFormatError, match="no such file"):
        engine.load(tmp_path / "nope.engine")


@pytest.mark.parametrize("cut", [0, 4, 8, 100, -1000, -1])
def test_truncated_file(model, tmp_path, cut):
    path = tmp_path / "m.engine"
    model.save(path)
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:len(data) + cut])
    with pytest.raises(engine.ModelFormatError, match="m.engine"):
        engine.load(path)


def test_garbage_and_corrupt_header(tmp_path):
    p = tmp_path / "junk.engine"
    p.write_bytes(os.urandom(4096))
    with pytest.raises(engine.ModelFormatError):
        engine.load(p)
    header = b"{not json"
    p.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(engine.ModelFormatError, match="corrupt"):
        engine.load(p)


def _write(path, graph_doc, weights=None, **meta):
    weights = weights or {"w": np.zeros((2, 2), np.float32)}
    header = {"format": "engine", "format_version": "1", "graph": json.dumps(graph_doc), **meta}
    path.write_bytes(safetensors.numpy.save(weights, metadata=header))


GOOD = {"inputs": [{"name": "x", "shape": [None, 2]}], "outputs": [{"name": "y", "shape": [None, 2]}],
        "nodes": [{"op": "Dense", "inputs": ["x", "w"], "outputs": ["y"]}]}


def test_hand_written_file_loads(tmp_path):
    _write(tmp_path / "ok.engine", GOOD, {"w": np.eye(2, dtype=np.float32)})
    x = rand(3, 2)
    np.testing.assert_allclose(engine.load(tmp_path / "ok.engine").predict(x), x)


def test_newer_version_and_wrong_format(tmp_path):
    _write(tmp_path / "new.engine", GOOD, format_version="99")
    with pytest.raises(engine.ModelFormatError, match="newer engine .*version 99"):
        engine.load(tmp_path / "new.engine")
    _write(tmp_path / "other.engine", GOOD, format="onnx-ish")
    with pytest.raises(engine.ModelFormatError, match="not an .engine model"):
        engine.load(tmp_path / "other.engine")


def test_unknown_op_names_node_and_op(tmp_path):
    doc = json.loads(json.dumps(GOOD))
    doc["nodes"][0].update(op="FancyAttention", name="block3/attn")
    _write(tmp_path / "op.engine", doc)
    with pytest.raises(engine.UnsupportedOpError, match="'FancyAttention' .*block3/attn"):
        engine.load(tmp_path / "op.engine")


def test_dangling_reference_and_malformed_graph(tmp_path):
    doc = json.loads(json.dumps(GOOD))
    doc["nodes"][0]["inputs"] = ["x", "missing_weight"]
    _write(tmp_path / "d.engine", doc)
    with pytest.raises(engine.GraphError, match="missing_weight"):
        engine.load(tmp_path / "d.engine")
    _write(tmp_path / "m.engine", {"inputs": []})
    with pytest.raises(engine.ModelFormatError, match="malformed graph"):
        engine.load(tmp_path / "m.engine")


def test_weight_dtype_checked(tmp_path):
    _write(tmp_path / "f64.engine", GOOD, {"w": np.eye(2)})
    with pytest.raises(engine.ModelFormatError, match="float64"):
        engine.load(tmp_path / "f64.engine")


def test_wrong_weight_shape_caught_at_plan(tmp_path):
    _write(tmp_path / "s.engine", GOOD, {"w": np.zeros((3, 2), np.float32)})
    m = engine.load(tmp_path / "s.engine")
    with pytest.raises(engine.ShapeError, match="last dim must be 3"):
        m.predict(rand(1, 2))


def test_planned_formats_say_so(tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(b"\x00")
    with pytest.raises(engine.ModelFormatError, match="ONNX import is not implemented yet"):
        engine.load(p)
