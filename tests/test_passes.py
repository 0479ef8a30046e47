"""Each graph pass on its own: the rewrite it makes (structure) and that the model computes the
same as without it (numbers, against onnxruntime on the unoptimised ONNX graph)."""

import math

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import engine
from engine import passes


def _onnx(nodes, inputs, outputs, inits=(), opset=17):
    m = h.make_model(h.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits]),
                     opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m.SerializeToString()


def _vi(name, shape, t=T.FLOAT):
    return h.make_tensor_value_info(name, t, shape)


def _check(data, feeds, ops_after=None, atol=1e-5):
    """The optimised model equals onnxruntime; returns its optimised graph's op list."""
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    m = engine.load(data)
    for g, w in zip(m.run(None, feeds), want):
        np.testing.assert_allclose(g, w, atol=atol, rtol=1e-5)
    ops = [n.op for n in m.optimized_graph.nodes]
    if ops_after is not None:
        assert ops == ops_after, ops
    return ops


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _gelu_nodes(form: str):
    """z -> y: GELU (or SiLU) written out the ways exporters write it; (nodes, constants, the
    epilogue activation it must become)."""
    c = {"sqrt2": np.float32(math.sqrt(2)), "inv": np.float32(1 / math.sqrt(2)), "one": np.float32(1),
         "half": np.float32(0.5), "three": np.float32(3), "k": np.float32(0.044715),
         "s2pi": np.float32(math.sqrt(2 / math.pi))}
    erf_div = [h.make_node("Div", ["z", "sqrt2"], ["s"]), h.make_node("Erf", ["s"], ["e"])]
    if form == "div_mul_half_last":  # (z·(1 + erf))·0.5
        nodes = erf_div + [h.make_node("Add", ["e", "one"], ["a"]), h.make_node("Mul", ["z", "a"], ["m"]),
                           h.make_node("Mul", ["m", "half"], ["y"])]
    elif form == "mul_inv_sqrt2_half_first":  # (0.5·z)·(1 + erf)
        nodes = [h.make_node("Mul", ["z", "inv"], ["s"]), h.make_node("Erf", ["s"], ["e"]),
                 h.make_node("Add", ["one", "e"], ["a"]), h.make_node("Mul", ["half", "z"], ["hz"]),
                 h.make_node("Mul", ["hz", "a"], ["y"])]
    elif form == "dynamo":  # z·(0.5·(1 + erf)), torch.onnx.export(dynamo=True) below opset 20
        nodes = erf_div + [h.make_node("Add", ["e", "one"], ["a"]), h.make_node("Mul", ["half", "a"], ["m"]),
                           h.make_node("Mul", ["z", "m"], ["y"])]
    elif form in ("tanh_pow", "tanh_cube"):  # GPT-2's NewGELU: 0.5·z·(1 + tanh(√(2/π)·(z + 0.044715·z³)))
        cube = [h.make_node("Pow", ["z", "three"], ["z3"])] if form == "tanh_pow" else \
            [h.make_node("Mul", ["z", "z"], ["z2"]), h.make_node("Mul", ["z2", "z"], ["z3"])]
        nodes = [h.make_node("Mul", ["z", "half"], ["hz"])] + cube + [
            h.make_node("Mul", ["z3", "k"], ["kz3"]), h.make_node("Add", ["z", "kz3"], ["inner"]),
            h.make_node("Mul", ["inner", "s2pi"], ["u"]), h.make_node("Tanh", ["u"], ["t"]),
            h.make_node("Add", ["t", "one"], ["a"]), h.make_node("Mul", ["hz", "a"], ["y"])]
    else:  # silu: z·Sigmoid(z)
        nodes = [h.make_node("Sigmoid", ["z"], ["sg"]), h.make_node("Mul", ["z", "sg"], ["y"])]
    used = {i for n in nodes for i in n.input}
    activation = "gelu_tanh" if form.startswith("tanh") else "silu" if form == "silu" else "gelu"
    return nodes, [(k, v) for k, v in c.items() if k in used], activation


@pytest.mark.parametrize("form", ["div_mul_half_last", "mul_inv_sqrt2_half_first", "dynamo", "tanh_pow", "tanh_cube",
                                  "silu"])
def test_fuse_gelu_into_the_dense_epilogue(form):
    w, b = _rand(8, 16), _rand(16, seed=1)
    nodes, consts, activation = _gelu_nodes(form)
    nodes = [h.make_node("MatMul", ["x", "w"], ["mm"]), h.make_node("Add", ["mm", "b"], ["z"])] + nodes
    data = _onnx(nodes, [_vi("x", ["n", 8])], [_vi("y", ["n", 16])], [("w", w), ("b", b)] + consts)
    _check(data, {"x": _rand(5, 8, seed=2) * 3}, ["Dense"])
    assert engine.load(data).optimized_graph.nodes[0].attrs["activation"] == activation


def test_gelu_not_fused_when_an_intermediate_is_read_elsewhere():
    nodes = [h.make_node("Div", ["x", "sqrt2"], ["s"]), h.make_node("Erf", ["s"], ["e"]),
             h.make_node("Add", ["e", "one"], ["a"]), h.make_node("Mul", ["x", "a"], ["m"]),
             h.make_node("Mul", ["m", "half"], ["y"])]
    consts = [("sqrt2", np.float32(math.sqrt(2))), ("one", np.float32(1)), ("half", np.float32(0.5))]
    data = _onnx(nodes, [_vi("x", [4])], [_vi("y", [4]), _vi("e", [4])], consts)
    assert "Gelu" not in _check(data, {"x": _rand(4)})


def test_pad_folds_into_conv_and_the_trunk_goes_nhwc():
    w = _rand(6, 3, 3, 3)
    nodes = [h.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
             h.make_node("Conv", ["p", "w"], ["c"], kernel_shape=[3, 3]),
             h.make_node("Relu", ["c"], ["y"])]
    data = _onnx(nodes, [_vi("x", ["n", 3, 9, 8])], [_vi("y", ["n", 6, 9, 8])],
                 [("w", w), ("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))])
    ops = _check(data, {"x": _rand(2, 3, 9, 8)})
    assert ops == ["Transpose", "Conv2D", "Transpose"] and "Pad" not in ops


def test_batchnorm_folds_into_conv():
    c = 5
    bn = [("s", np.abs(_rand(c, seed=3)) + 0.5), ("bb", _rand(c, seed=4)), ("mu", _rand(c, seed=5)),
          ("var", np.abs(_rand(c, seed=6)) + 0.5)]
    nodes = [h.make_node("Conv", ["x", "w", "cb"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             h.make_node("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["y"], epsilon=1e-3)]
    data = _onnx(nodes, [_vi("x", ["n", 4, 7, 7])], [_vi("y", ["n", c, 7, 7])],
                 [("w", _rand(c, 4, 3, 3)), ("cb", _rand(c, seed=7))] + bn)
    assert _check(data, {"x": _rand(2, 4, 7, 7)}, atol=1e-4) == ["Transpose", "Conv2D", "Transpose"]
    g = engine.load(data, optimize=False).graph
    assert [n.op for n in passes.fold_batchnorm(g).nodes] == ["Conv"]


def test_flatten_then_gemm_permutes_weight_rows_instead_of_transposing():
    # Conv -> Relu -> MaxPool -> Flatten -> Gemm: no Transpose may remain (C = 1 input: a free view)
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]), h.make_node("Relu", ["c"], ["r"]),
             h.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             h.make_node("Flatten", ["p"], ["f"]), h.make_node("Gemm", ["f", "fc", "fb"], ["y"], transB=1)]
    data = _onnx(nodes, [_vi("x", ["n", 1, 10, 10])], [_vi("y", ["n", 3])],
                 [("w", _rand(4, 1, 3, 3)), ("fc", _rand(3, 4 * 4 * 4, seed=8)), ("fb", _rand(3, seed=9))])
    ops = _check(data, {"x": _rand(3, 1, 10, 10)}, atol=1e-4)
    assert "Transpose" not in ops and ops.count("Dense") == 1, ops


def test_residual_and_concat_stay_in_nhwc():
    nodes = [h.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[1, 1]),
             h.make_node("Conv", ["x", "w2"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             h.make_node("Add", ["a", "b"], ["s"]), h.make_node("Concat", ["s", "a"], ["cat"], axis=1),
             h.make_node("Mul", ["cat", "k"], ["y"])]
    data = _onnx(nodes, [_vi("x", ["n", 3, 6, 6])], [_vi("y", ["n", 8, 6, 6])],
                 [("w1", _rand(4, 3, 1, 1)), ("w2", _rand(4, 3, 3, 3, seed=1)), ("k", _rand(8, 1, 1, seed=2))])
    ops = _check(data, {"x": _rand(2, 3, 6, 6)}, atol=1e-4)
    assert ops.count("Transpose") == 2, ops  # in and out only


def test_matmul_add_becomes_dense_with_bias():
    data = _onnx([h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Add", ["b", "m"], ["y"])],
                 [_vi("x", ["n", 5])], [_vi("y", ["n", 3])], [("w", _rand(5, 3)), ("b", _rand(1, 3, seed=1))])
    assert _check(data, {"x": _rand(4, 5)}) == ["Dense"]


def test_constant_subgraphs_fold_and_transpose_pairs_cancel():
    nodes = [h.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), h.make_node("Neg", ["wt"], ["nwt"]),
             h.make_node("MatMul", ["x", "nwt"], ["m"]), h.make_node("Transpose", ["m"], ["t1"], perm=[1, 0]),
             h.make_node("Transpose", ["t1"], ["y"], perm=[1, 0])]
    data = _onnx(nodes, [_vi("x", ["n", 4])], [_vi("y", ["n", 3])], [("w", _rand(3, 4))])
    assert _check(data, {"x": _rand(2, 4)}) == ["Dense"]


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("dtype", [np.int64, np.float32])
def test_cumsum_of_a_constant_folds_at_load(exclusive, reverse, dtype):
    c = (np.arange(24).reshape(2, 3, 4) % 5 - 2).astype(dtype)
    t = T.INT64 if dtype == np.int64 else T.FLOAT
    nodes = [h.make_node("CumSum", ["c", "axis"], ["s"], exclusive=exclusive, reverse=reverse),
             h.make_node("Add", ["x", "s"], ["y"])]
    data = _onnx(nodes, [_vi("x", [2, 3, 4], t)], [_vi("y", [2, 3, 4], t)], [("c", c), ("axis", np.array(1, np.int64))])
    assert _check(data, {"x": np.ones((2, 3, 4), dtype)}) == ["Add"]
