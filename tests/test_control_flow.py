"""NonZero (data-dependent shapes) and If / Loop / Scan (subgraphs): the graph runs as native
segments around them; checked against onnxruntime on graphs built with onnx.helper."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import engine


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m.SerializeToString()


def _same_as_ort(data: bytes, feeds: dict):
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = engine.load(data).run(None, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    return got


def test_nonzero_between_native_segments():
    data = _model([h.make_node("Relu", ["x"], ["r"]), h.make_node("NonZero", ["r"], ["idx"]),
                   h.make_node("Neg", ["x"], ["n"])],
                  [h.make_tensor_value_info("x", T.FLOAT, ["a", "b"])],
                  [h.make_tensor_value_info("idx", T.INT64, [2, None]), h.make_tensor_value_info("n", T.FLOAT, None)])
    rng = np.random.default_rng(0)
    m = engine.load(data)
    for shape in ((3, 4), (1, 1), (5, 2), (3, 4)):
        x = rng.standard_normal(shape).astype(np.float32)
        _same_as_ort(data, {"x": x})
        m.run({"x": x})
    seg = m._compiled.segmented
    assert seg is not None and len(seg.steps) == 3          # Relu | NonZero | Neg
    assert len(seg.steps[0].model.cached_signatures) == 3    # one plan per input shape seen
    np.testing.assert_array_equal(m.run({"x": np.zeros((2, 2), np.float32)})["idx"], np.zeros((2, 0)))


def test_graph_without_dynamic_ops_keeps_the_single_program():
    data = _model([h.make_node("Relu", ["x"], ["y"])], [h.make_tensor_value_info("x", T.FLOAT, ["n"])],
                  [h.make_tensor_value_info("y", T.FLOAT, ["n"])])
    m = engine.load(data)
    m.predict(np.ones(3, np.float32))
    assert m._compiled.segmented is None and m._compiled.plans[((3,),)].program is not None


def _branch(name, op, value):
    c = h.make_tensor(f"{name}_c", T.FLOAT, [1], [value])
    return h.make_graph([h.make_node(op, ["x", f"{name}_c"], [f"{name}_out"])], name, [],
                        [h.make_tensor_value_info(f"{name}_out", T.FLOAT, None)], [c])


@pytest.mark.parametrize("flag", [True, False])
def test_if_reads_outer_values_and_runs_one_branch(flag):
    node = h.make_node("If", ["cond"], ["y"], then_branch=_branch("then", "Add", 10.0),
                       else_branch=_branch("else", "Mul", -2.0))
    data = _model([node], [h.make_tensor_value_info("cond", T.BOOL, []), h.make_tensor_value_info("x", T.FLOAT, [3])],
                  [h.make_tensor_value_info("y", T.FLOAT, None)])
    x = np.array([1, -2, 3], np.float32)
    (y,) = _same_as_ort(data, {"cond": np.array(flag), "x": x})
    np.testing.assert_array_equal(y, x + 10 if flag else x * -2)


def test_loop_with_carried_values_scan_outputs_and_outer_values():
    # body: acc = acc + x (x read from the outer graph); emits acc each step; M steps
    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]),
         h.make_node("Identity", ["x"], ["xi"]),
         h.make_node("Add", ["acc_in", "xi"], ["acc_out"]),
         h.make_node("Identity", ["acc_out"], ["emit"])],
        "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
         h.make_tensor_value_info("acc_in", T.FLOAT, [2])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("acc_out", T.FLOAT, [2]),
         h.make_tensor_value_info("emit", T.FLOAT, [2])])
    node = h.make_node("Loop", ["M", "", "acc0"], ["acc", "history"], body=body)
    data = _model([node], [h.make_tensor_value_info("M", T.INT64, []), h.make_tensor_value_info("acc0", T.FLOAT, [2]),
                           h.make_tensor_value_info("x", T.FLOAT, [2])],
                  [h.make_tensor_value_info("acc", T.FLOAT, [2]), h.make_tensor_value_info("history", T.FLOAT, None)])
    acc, history = _same_as_ort(data, {"M": np.array(4, np.int64), "acc0": np.zeros(2, np.float32),
                                       "x": np.array([1, 2], np.float32)})
    np.testing.assert_array_equal(acc, [4, 8])
    assert history.shape == (4, 2)


@pytest.mark.parametrize("direction", [0, 1])
def test_scan_running_sum_both_directions(direction):
    body = h.make_graph([h.make_node("Add", ["s_in", "x_t"], ["s_out"]), h.make_node("Identity", ["s_out"], ["y_t"])],
                        "body", [h.make_tensor_value_info("s_in", T.FLOAT, [2]),
                                 h.make_tensor_value_info("x_t", T.FLOAT, [2])],
                        [h.make_tensor_value_info("s_out", T.FLOAT, [2]), h.make_tensor_value_info("y_t", T.FLOAT, [2])])
    node = h.make_node("Scan", ["s0", "xs"], ["s", "ys"], body=body, num_scan_inputs=1,
                       scan_input_directions=[direction])
    data = _model([node], [h.make_tensor_value_info("s0", T.FLOAT, [2]), h.make_tensor_value_info("xs", T.FLOAT, [5, 2])],
                  [h.make_tensor_value_info("s", T.FLOAT, [2]), h.make_tensor_value_info("ys", T.FLOAT, [5, 2])])
    xs = np.arange(10, dtype=np.float32).reshape(5, 2)
    s, ys = _same_as_ort(data, {"s0": np.ones(2, np.float32), "xs": xs})
    np.testing.assert_array_equal(s, 1 + xs.sum(0))


def test_bodies_are_checked_at_load():
    bad = h.make_graph([h.make_node("NoSuchOp", ["x"], ["o"])], "b", [], [h.make_tensor_value_info("o", T.FLOAT, None)])
    node = h.make_node("If", ["cond"], ["y"], then_branch=bad, else_branch=bad)
    g = h.make_graph([node], "g", [h.make_tensor_value_info("cond", T.BOOL, []),
                                   h.make_tensor_value_info("x", T.FLOAT, [1])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    with pytest.raises(engine.UnsupportedOpError, match="NoSuchOp"):
        engine.load(m.SerializeToString())


def test_loop_without_bound_is_refused_not_run_forever():
    body = h.make_graph([h.make_node("Identity", ["c"], ["c_out"])], "b",
                        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("c", T.BOOL, [])],
                        [h.make_tensor_value_info("c_out", T.BOOL, [])])
    node = h.make_node("Loop", ["", ""], [], body=body)
    g = h.make_graph([node, h.make_node("Identity", ["x"], ["y"])], "g", [h.make_tensor_value_info("x", T.FLOAT, [1])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    with pytest.raises(engine.EngineError, match="never end"):
        engine.load(m.SerializeToString(), optimize=False).run({"x": np.ones(1, np.float32)})
