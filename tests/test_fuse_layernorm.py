"""fuse_layernorm on hand-built graphs in the spellings exporters use (TorchScript below opset 17,
tf2onnx/keras2onnx, Hugging Face's RMSNorm): the normalisation node it becomes and the numbers,
against onnxruntime on the unfused graph."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import engine

N = 24


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _model(nodes, consts, outputs=("y",), opset=17):
    consts = dict(consts, axes=np.array([-1], np.int64), eps=np.float32(1e-5), two=np.float32(2), one=np.float32(1))
    used = {i for n in nodes for i in n.input}
    m = h.make_model(h.make_graph(nodes, "norm", [h.make_tensor_value_info("x", T.FLOAT, ["b", "s", N])],
                                  [h.make_tensor_value_info(o, T.FLOAT, None) for o in outputs],
                                  [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items() if k in used]),
                     opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m.SerializeToString()


def _mean(x, y, opset=17):
    return h.make_node("ReduceMean", [x], [y], axes=[-1], keepdims=1) if opset < 18 else \
        h.make_node("ReduceMean", [x, "axes"], [y], keepdims=1)


def _layer_norm(square="pow", divide="div", affine=True, opset=17):
    nodes = [_mean("x", "mean", opset), h.make_node("Sub", ["x", "mean"], ["d"]),
             h.make_node("Pow", ["d", "two"], ["d2"]) if square == "pow" else h.make_node("Mul", ["d", "d"], ["d2"]),
             _mean("d2", "var", opset), h.make_node("Add", ["var", "eps"], ["ve"]), h.make_node("Sqrt", ["ve"], ["sd"])]
    last = "y" if not affine else "n"
    nodes += [h.make_node("Div", ["d", "sd"], [last])] if divide == "div" else \
        [h.make_node("Reciprocal", ["sd"], ["r"]), h.make_node("Mul", ["d", "r"], [last])]
    if affine:
        nodes += [h.make_node("Mul", ["n", "gamma"], ["g"]), h.make_node("Add", ["g", "beta"], ["y"])]
    return nodes


def _rms_norm(divide="reciprocal"):
    nodes = [h.make_node("Pow", ["x", "two"], ["x2"]), _mean("x2", "ms", 18), h.make_node("Add", ["ms", "eps"], ["a"]),
             h.make_node("Sqrt", ["a"], ["s"])]
    if divide == "reciprocal":  # torch.rsqrt in the dynamo exporter
        nodes += [h.make_node("Reciprocal", ["s"], ["r"]), h.make_node("Mul", ["x", "r"], ["n"])]
    elif divide == "one_over":  # the TorchScript exporter's rsqrt: 1 / Sqrt
        nodes += [h.make_node("Div", ["one", "s"], ["r"]), h.make_node("Mul", ["x", "r"], ["n"])]
    else:
        nodes += [h.make_node("Div", ["x", "s"], ["n"])]
    return nodes + [h.make_node("Mul", ["w", "n"], ["y"])]


def _check(data, op, fused=True):
    x = _rand(2, 5, N, seed=3) * 3 + 1
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    m = engine.load(data)
    for g, w in zip(m.run(None, {"x": x}), want):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)
    ops = [n.op for n in m.optimized_graph.nodes]
    assert (ops == [op]) == fused, ops
    return m


AFFINE = {"gamma": _rand(N, seed=1), "beta": _rand(N, seed=2)}


@pytest.mark.parametrize("square", ["pow", "mul"])
@pytest.mark.parametrize("divide", ["div", "reciprocal"])
@pytest.mark.parametrize("opset", [13, 18])
def test_layer_norm_decomposition(square, divide, opset):
    m = _check(_model(_layer_norm(square, divide, opset=opset), AFFINE, opset=opset), "LayerNormalization")
    assert m.plan_summary()["fusions"]["layer_norm"] == 1


def test_layer_norm_without_scale_and_shift():
    _check(_model(_layer_norm(affine=False), {}), "LayerNormalization")


@pytest.mark.parametrize("divide", ["reciprocal", "one_over", "div"])
def test_rms_norm_decomposition(divide):
    m = _check(_model(_rms_norm(divide), {"w": _rand(N, seed=4)}, opset=18), "RMSNormalization")
    assert m.plan_summary()["fusions"]["rms_norm"] == 1


def test_not_fused_when_an_intermediate_is_read_elsewhere():
    _check(_model(_layer_norm(), AFFINE, outputs=("y", "var")), "LayerNormalization", fused=False)


def test_not_fused_over_a_leading_axis():
    nodes = [h.make_node("ReduceMean", ["x", "axes1"], ["mean"], keepdims=1)] + _layer_norm()[1:]
    nodes[3] = h.make_node("ReduceMean", ["d2", "axes1"], ["var"], keepdims=1)
    data = _model(nodes, dict(AFFINE, axes1=np.array([1], np.int64)), opset=18)
    _check(data, "LayerNormalization", fused=False)
