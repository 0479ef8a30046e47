"""Bad ONNX files and bad inputs to ONNX models: each a clear EngineError naming the file,
node or input; nothing crashes, nothing outside the model's folder is read."""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import engine


def _save(path, nodes, inputs, outputs, inits=(), opset=17):
    m = h.make_model(h.make_graph(nodes, "g", inputs, outputs, list(inits)),
                     opset_imports=[h.make_opsetid("", opset)])
    onnx.save(m, str(path))
    return path


@pytest.fixture
def good(tmp_path):
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    return _save(tmp_path / "m.onnx", [h.make_node("MatMul", ["x", "w"], ["h"]), h.make_node("Relu", ["h"], ["y"])],
                 [h.make_tensor_value_info("x", T.FLOAT, ["batch", 4])],
                 [h.make_tensor_value_info("y", T.FLOAT, ["batch", 4])], [w])


@pytest.mark.parametrize("cut", [1, 10, -20, -3])
def test_truncated_protobuf(good, cut):
    data = good.read_bytes()
    good.write_bytes(data[:cut] if cut > 0 else data[:len(data) + cut])
    with pytest.raises(engine.ModelFormatError, match="m.onnx"):
        engine.load(good)


def test_garbage_file(tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_bytes(os.urandom(2000))
    with pytest.raises(engine.ModelFormatError, match="junk.onnx"):
        engine.load(p)


def test_cycle_and_missing_initializer(tmp_path):
    x = h.make_tensor_value_info("x", T.FLOAT, [2])
    y = h.make_tensor_value_info("y", T.FLOAT, [2])
    p = _save(tmp_path / "cycle.onnx", [h.make_node("Add", ["x", "b"], ["a"], name="n1"),
                                        h.make_node("Relu", ["a"], ["b"], name="n2"),
                                        h.make_node("Identity", ["b"], ["y"])], [x], [y])
    with pytest.raises(engine.GraphError, match="n1.*reads 'b'"):
        engine.load(p)
    p = _save(tmp_path / "missing.onnx", [h.make_node("Add", ["x", "bias"], ["y"], name="add")], [x], [y])
    with pytest.raises(engine.GraphError, match="add.*'bias'"):
        engine.load(p)


def test_unknown_op_names_op_domain_opset_and_node(tmp_path):
    x = h.make_tensor_value_info("x", T.FLOAT, [2])
    p = _save(tmp_path / "u.onnx", [h.make_node("FancyOp", ["x"], ["y"], name="my_node")], [x],
              [h.make_tensor_value_info("y", T.FLOAT, [2])], opset=18)
    with pytest.raises(engine.UnsupportedOpError, match="my_node.*FancyOp.*opset 18"):
        engine.load(p)
    m = h.make_model(h.make_graph([h.make_node("Foo", ["x"], ["y"], domain="com.example", name="custom")], "g", [x],
                                  [h.make_tensor_value_info("y", T.FLOAT, [2])]),
                     opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.example", 1)])
    with pytest.raises(engine.UnsupportedOpError, match="custom.*com.example"):
        engine.load(m.SerializeToString())


def _with_external(tmp_path, location, create=True):
    t = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    t.ClearField("raw_data")
    t.data_location = T.EXTERNAL
    for k, v in {"location": location, "offset": "0", "length": "16"}.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    if create:
        target = (tmp_path / location) if not os.path.isabs(location) else None
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    return _save(tmp_path / "ext.onnx", [h.make_node("Add", ["x", "w"], ["y"])],
                 [h.make_tensor_value_info("x", T.FLOAT, [4])], [h.make_tensor_value_info("y", T.FLOAT, [4])], [t])


def test_external_data_inside_the_folder_loads(tmp_path):
    p = _with_external(tmp_path, "weights/w.bin")
    np.testing.assert_array_equal(engine.load(p).predict(np.ones(4, np.float32)), [1, 2, 3, 4])
    with pytest.raises(engine.ModelFormatError, match="from its path"):
        engine.load(p.read_bytes())


def test_external_data_missing_or_escaping_is_refused(tmp_path):
    with pytest.raises(engine.ModelFormatError, match="missing"):
        engine.load(_with_external(tmp_path, "nothere.bin", create=False))
    secret = tmp_path.parent / "secret.bin"
    secret.write_bytes(b"\0" * 16)
    with pytest.raises(engine.ModelFormatError, match="outside the model's folder"):
        engine.load(_with_external(tmp_path, "../secret.bin", create=False))
    with pytest.raises(engine.ModelFormatError, match="relative path"):
        engine.load(_with_external(tmp_path, str(secret), create=False))
    (tmp_path / "link.bin").symlink_to(secret)
    with pytest.raises(engine.ModelFormatError, match="outside the model's folder"):
        engine.load(_with_external(tmp_path, "link.bin", create=False))
    (tmp_path / "short.bin").write_bytes(b"\0" * 8)
    with pytest.raises(engine.ModelFormatError, match="truncated"):
        engine.load(_with_external(tmp_path, "short.bin", create=False))


def test_bad_feeds(good):
    m = engine.load(good)
    with pytest.raises(engine.ShapeError, match="unknown input.*'z'.*\\['x'\\]"):
        m.run({"z": np.ones((1, 4), np.float32)})
    with pytest.raises(engine.DTypeError, match="'x': expected float32, got int64"):
        m.run({"x": np.ones((1, 4), np.int64)})
    with pytest.raises(engine.ShapeError, match="'x'.*dim 1 must be 4"):
        m.run({"x": np.ones((1, 5), np.float32)})
    np.testing.assert_array_equal(m.run({"x": np.ones((2, 4), np.float32)})["y"], np.ones((2, 4)))


def test_float_where_int64_is_declared(tmp_path):
    p = _save(tmp_path / "i.onnx", [h.make_node("Identity", ["ids"], ["y"])],
              [h.make_tensor_value_info("ids", T.INT64, ["n"])], [h.make_tensor_value_info("y", T.INT64, ["n"])])
    m = engine.load(p)
    with pytest.raises(engine.DTypeError, match="'ids': expected int64, got float32"):
        m.run({"ids": np.ones(3, np.float32)})
    np.testing.assert_array_equal(m.run({"ids": np.arange(3, dtype=np.int32)})["y"], [0, 1, 2])  # fits


def test_sequence_inputs_are_refused_clearly(tmp_path):
    seq = h.make_tensor_sequence_value_info("s", T.FLOAT, None)
    p = _save(tmp_path / "s.onnx", [h.make_node("Identity", ["s"], ["y"])], [seq], [seq])
    with pytest.raises(engine.UnsupportedOpError, match="'s' is a sequence_type"):
        engine.load(p)
