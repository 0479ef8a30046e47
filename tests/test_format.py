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
        assert meta["format"] == "engine" and meta["format_version"] == "2"
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
    _write(tmp_path / "f64.engine", GOOD, {"w": np.eye(2)})  # Dense takes float32 weights only
    with pytest.raises(engine.DTypeError, match="float64"):
        engine.load(tmp_path / "f64.engine").predict(np.ones((1, 2), np.float32))
    _write(tmp_path / "c64.engine", GOOD, {"w": np.eye(2, dtype=np.complex64)})
    with pytest.raises(engine.ModelFormatError, match="unsupported dtype complex64"):
        engine.load(tmp_path / "c64.engine")


def test_wrong_weight_shape_caught_at_plan(tmp_path):
    _write(tmp_path / "s.engine", GOOD, {"w": np.zeros((3, 2), np.float32)})
    m = engine.load(tmp_path / "s.engine")
    with pytest.raises(engine.ShapeError, match="last dim must be 3"):
        m.predict(rand(1, 2))


def test_foreign_formats_name_the_problem(tmp_path):
    p = tmp_path / "m.gguf"
    p.write_bytes(b"\x00")
    with pytest.raises(engine.ModelFormatError, match="m.gguf.*GGUF"):
        engine.load(p)
    with pytest.raises(engine.ModelFormatError, match="pass its path"):
        engine.load(b"GGUF\x03\x00\x00\x00")
    p = tmp_path / "m.h5"
    p.write_bytes(b"\x00")
    with pytest.raises(engine.ModelFormatError, match="not a Keras file"):
        engine.load(p)
    p = tmp_path / "m.onnx"
    p.write_bytes(b"\x00")
    with pytest.raises(engine.ModelFormatError, match="not a valid ONNX model|not an ONNX model"):
        engine.load(p)


# -- saving never destroys what it did not write ---------------------------------------------

@pytest.mark.parametrize("slash", ["", "/"])
def test_saving_into_a_folder_with_other_files_is_refused(model, tmp_path, slash):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "resnet.engine").write_text("x")
    with pytest.raises(engine.SaveError, match="holding other files .*resnet.engine"):
        model.save(str(folder) + slash)
    assert sorted(p.name for p in folder.iterdir()) == ["resnet.engine"]
    assert (folder / "resnet.engine").read_text() == "x"
    model.save(folder / "model.engine")  # what the message suggests works
    assert sorted(p.name for p in folder.iterdir()) == ["model.engine", "resnet.engine"]


def test_existing_empty_or_model_folder_is_replaced(model, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    model.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["graph.json", "weights.safetensors"]
    model.save(folder)  # an .engine directory is ours to replace
    engine.load(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_foreign_files_are_not_overwritten(model, tmp_path):
    notes = tmp_path / "notes"
    notes.write_text("my notes")
    with pytest.raises(engine.SaveError, match="not an .engine model"):
        model.save(notes)
    assert notes.read_text() == "my notes"
    link = tmp_path / "link.engine"
    model.save(tmp_path / "target.engine")
    link.symlink_to(tmp_path / "target.engine")
    with pytest.raises(engine.SaveError, match="symbolic link"):
        model.save(link)
    assert link.is_symlink()


@pytest.mark.parametrize("name", ["model.onnx", "model.pt", "model.pth", "model.h5", "model.keras",
                                  "model.gguf", "MODEL.ONNX"])
def test_foreign_suffix_is_refused(model, tmp_path, name):
    # engine.nn models write Keras files for .h5 / .keras (tests/test_keras_writer.py); the
    # runtime model and the other suffixes are refused
    if not name.endswith((".h5", ".keras")):
        with pytest.raises(engine.ModelFormatError, match="native .engine format"):
            model.save(tmp_path / name)
    with pytest.raises(engine.ModelFormatError, match="native .engine format"):
        model.compile_runtime().save(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_switching_between_file_and_directory_leaves_no_temporary(model, tmp_path):
    model.save(tmp_path / "a.engine")
    model.save(str(tmp_path / "a.engine") + "/")
    assert (tmp_path / "a.engine").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.engine"]
    x = rand(1, 6, 6, 2)
    np.testing.assert_array_equal(engine.load(tmp_path / "a.engine").predict(x), model.predict(x))


def test_saved_files_respect_the_umask(model, tmp_path):
    old = os.umask(0o022)
    try:
        model.save(tmp_path / "f.engine")
        model.save(str(tmp_path / "d.engine") + "/")
    finally:
        os.umask(old)
    assert (tmp_path / "f.engine").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d.engine").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "d.engine" / "graph.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d.engine" / "weights.safetensors").stat().st_mode & 0o777 == 0o644


def test_save_errors_are_engine_errors(model, tmp_path):
    with pytest.raises(engine.EngineError, match="empty path"):
        model.save("")
    with pytest.raises(engine.EngineError, match="expected a path"):
        model.save(42)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(engine.SaveError, match="could not write"):
        model.save(tmp_path / "a_file" / "m.engine")  # the parent is not a folder


# -- loading from bytes and file objects -----------------------------------------------------

def test_load_from_bytes_and_file_objects(model, tmp_path):
    import io

    path = tmp_path / "m.engine"
    model.save(path)
    x = rand(2, 6, 6, 2)
    want = model.predict(x)
    data = path.read_bytes()
    for source in (data, bytearray(data), memoryview(data), io.BytesIO(data), open(path, "rb")):
        np.testing.assert_array_equal(engine.load(source).predict(x), want)


def test_bad_sources_are_engine_errors(tmp_path):
    with pytest.raises(engine.ModelFormatError, match="bytes"):
        engine.load(b"...")
    with pytest.raises(engine.ModelFormatError, match="not a readable HDF5 file"):
        engine.load(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(engine.EngineError, match="expected a path, bytes"):
        engine.load(3.5)
    with pytest.raises(engine.EngineError, match="empty path"):
        engine.load("")
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(engine.EngineError, match="text-mode"):
        engine.load(open(tmp_path / "t.txt"))


# -- attributes are checked when a file is loaded, not at the first predict -------------------

@pytest.mark.parametrize("node,match", [
    ({"op": "Conv2D", "inputs": ["x", "w"], "attrs": {"strides": "x"}}, "strides"),
    ({"op": "Conv2D", "inputs": ["x", "w"], "attrs": {"padding": "full"}}, "padding"),
    ({"op": "Conv2D", "inputs": ["x", "w"], "attrs": {"groups": 0}}, "groups"),
    ({"op": "Conv2D", "inputs": ["x", "w"], "attrs": {"activation": "swishy"}}, "unknown activation 'swishy'"),
    ({"op": "Dense", "inputs": ["x", "w"], "attrs": {"activation": "nope"}}, "unknown activation 'nope'"),
    ({"op": "Dense", "inputs": ["x", "w"], "attrs": {"activation": "elu", "activation_alpha": "a"}},
     "activation_alpha"),
    ({"op": "MaxPool2D", "inputs": ["x"], "attrs": {"pool_size": [2, 2, 2]}}, "pool_size"),
    ({"op": "AvgPool2D", "inputs": ["x"], "attrs": {"ceil_mode": "yes"}}, "ceil_mode"),
    ({"op": "LeakyRelu", "inputs": ["x"], "attrs": {"alpha": None}}, "alpha"),
    ({"op": "Softmax", "inputs": ["x"], "attrs": {"axis": 1.5}}, "axis"),
    ({"op": "Reshape", "inputs": ["x"], "attrs": {"shape": "abc"}}, "shape"),
    ({"op": "Flatten", "inputs": ["x"], "attrs": {"axis": "1"}}, "axis"),
])
def test_bad_attributes_fail_at_load(tmp_path, node, match):
    doc = {"inputs": [{"name": "x", "shape": [None, 4, 4, 2]}], "outputs": [{"name": "y", "shape": [None]}],
           "nodes": [{**node, "outputs": ["y"], "name": "bad_node"}]}
    _write(tmp_path / "bad.engine", doc, {"w": np.zeros((3, 3, 2, 2), np.float32)})
    with pytest.raises(engine.GraphError, match=f"bad_node.*{match}|{match}.*bad_node"):
        engine.load(tmp_path / "bad.engine")
