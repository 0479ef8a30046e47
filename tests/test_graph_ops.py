"""Every registered op through the whole stack (graph -> plan -> kernels), one line per case,
against torch / numpy."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import engine
from engine.ops import OPS
from helpers import check_op, rand

T = torch.from_numpy


def nchw(fn):
    """Wrap a torch NCHW function to take and return NHWC numpy arrays."""
    return lambda x, *a: fn(T(x).permute(0, 3, 1, 2), *a).permute(0, 2, 3, 1)


@pytest.mark.parametrize("op,ref", [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply),
                                    ("Div", np.divide), ("Max", np.maximum), ("Min", np.minimum)])
@pytest.mark.parametrize("sa,sb", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((5, 1), (1, 6)),
                                   ((1,), (2, 3)), ((2, 1, 3), (4, 1)), ((1, 1, 1), (7, 5, 3))])
def test_binary_broadcasting(op, ref, sa, sb):
    b = rand(*sb, seed=2) + (3.0 if op == "Div" else 0.0)
    check_op(op, [rand(*sa)], ref, weights=[b])     # constant right operand
    check_op(op, [rand(*sa), b], ref)                # two runtime inputs


def test_pow():
    check_op("Pow", [rand(4, 5, low=0.1, high=2)], np.power, weights=[rand(5, seed=1)], rtol=1e-5)


UNARY = {
    "Relu": F.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Gelu": F.gelu,
    "GeluTanh": lambda x: F.gelu(x, approximate="tanh"), "Elu": F.elu, "Selu": F.selu,
    "Silu": F.silu, "Softplus": F.softplus, "Exp": torch.exp, "Neg": torch.neg,
    "Abs": torch.abs, "Square": torch.square, "Erf": torch.erf,
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op):
    x = rand(3, 7, 5, low=-6, high=6)
    check_op(op, [x], lambda a: UNARY[op](T(a)), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("op,ref", [("Log", torch.log), ("Sqrt", torch.sqrt),
                                    ("Reciprocal", torch.reciprocal)])
def test_unary_positive_domain(op, ref):
    check_op(op, [rand(33, low=0.05, high=20)], lambda a: ref(T(a)), rtol=2e-6)


def test_parameterised_unary():
    x = rand(4, 9, low=-5, high=5)
    check_op("LeakyRelu", [x], lambda a: F.leaky_relu(T(a), 0.07), {"alpha": 0.07})
    check_op("Clip", [x], lambda a: np.clip(a, -1.5, 2.0), {"min": -1.5, "max": 2.0})
    check_op("HardSigmoid", [x], lambda a: np.clip(0.2 * a + 0.5, 0, 1), {"alpha": 0.2, "beta": 0.5})
    check_op("Elu", [x], lambda a: F.elu(T(a), 0.5), {"alpha": 0.5})
    check_op("Activation", [x], lambda a: F.silu(T(a)), {"activation": "swish"})


@pytest.mark.parametrize("shape", [(1, 1), (5, 10), (2, 3, 4), (2, 1, 3, 5)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_every_axis(shape, log):
    x = rand(*shape, low=-20, high=20)
    fn = F.log_softmax if log else F.softmax
    for axis in range(-len(shape), len(shape)):
        check_op("LogSoftmax" if log else "Softmax", [x], lambda a: fn(T(a), dim=axis),
                 {"axis": axis}, atol=1e-5)


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((1, 1), (1, 1)), ((2, 3, 4), (2, 4, 6)),
                                   ((2, 3, 4), (4, 6)), ((17, 33), (33, 65))])
def test_matmul(sa, sb):
    check_op("MatMul", [rand(*sa), rand(*sb, seed=1)], np.matmul, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 5), (7, 3), (2, 3, 4)])
def test_dense_with_bias_and_activation(shape):
    w, b = rand(shape[-1], 6, seed=1), rand(6, seed=2)
    check_op("Dense", [rand(*shape)], lambda x, w, b: np.tanh(x @ w + b), {"activation": "tanh"},
             weights=[w, b])


CONV_CASES = [
    ({}, (2, 9, 9, 3), (3, 3, 3, 4)),
    ({"strides": [2, 1], "padding": [1, 0, 2, 1]}, (1, 10, 7, 2), (3, 2, 2, 5)),
    ({"dilations": 2, "padding": "same"}, (2, 11, 11, 4), (3, 3, 4, 6)),
    ({"groups": 2}, (1, 6, 6, 4), (3, 3, 2, 6)),
    ({"groups": 4, "padding": "same"}, (2, 7, 7, 4), (3, 3, 1, 8)),   # depthwise, multiplier 2
    ({"activation": "relu"}, (3, 5, 5, 16), (1, 1, 16, 8)),
]


@pytest.mark.parametrize("attrs,xs,ws", CONV_CASES)
def test_conv2d(attrs, xs, ws):
    from engine.ops.spatial import resolve_padding
    from engine.graph import Node

    w, b = rand(*ws, seed=1), rand(ws[3], seed=2)
    strides = attrs.get("strides", 1)
    strides = strides if isinstance(strides, list) else [strides] * 2
    dil = attrs.get("dilations", 1)
    top, left, bottom, right = resolve_padding(attrs.get("padding", "valid"), xs[1:3], ws[:2], strides, [dil] * 2,
                                  Node("Conv2D", [], ["y"]))

    def ref(x, w, b):
        xt = F.pad(T(x).permute(0, 3, 1, 2), (left, right, top, bottom))
        y = F.conv2d(xt, T(w).permute(3, 2, 0, 1), T(b), stride=strides, dilation=dil,
                     groups=attrs.get("groups", 1))
        y = F.relu(y) if attrs.get("activation") == "relu" else y
        return y.permute(0, 2, 3, 1)
    check_op("Conv2D", [rand(*xs)], ref, attrs, weights=[w, b], atol=1e-5)


def test_conv2d_concat():
    # Two convs of different inputs and kernels, concatenated along the channels in one node.
    from engine.graph import Graph, Node, Value

    xa, xb = rand(2, 6, 5, 3), rand(2, 8, 7, 4, seed=3)
    wa, ba, wb = rand(1, 1, 3, 5, seed=1), rand(5, seed=2), rand(3, 3, 4, 6, seed=4)
    g = Graph([Value("a", xa.shape), Value("b", xb.shape)], [Value("y", ())],
              [Node("Conv2DConcat", ["a", "wa", "ba", "b", "wb", ""], ["y"],
                    {"convs": [{"activation": "relu"}, {"strides": 1}]})],
              {"wa": wa, "ba": ba, "wb": wb})
    y = engine.Model(g).run({"a": xa, "b": xb})["y"]
    ya = F.relu(F.conv2d(T(xa).permute(0, 3, 1, 2), T(wa).permute(3, 2, 0, 1), T(ba)))
    yb = F.conv2d(T(xb).permute(0, 3, 1, 2), T(wb).permute(3, 2, 0, 1))
    np.testing.assert_allclose(y, torch.cat([ya, yb], 1).permute(0, 2, 3, 1).numpy(), atol=1e-5)
    bad = g.replace(nodes=[Node("Conv2DConcat", ["a", "wa", "ba", "b", "wb"], ["y"], {"convs": [{}, {}]})])
    with pytest.raises(engine.EngineError, match="3 inputs per conv"):
        engine.Model(bad)


def test_pools():
    x = rand(2, 9, 8, 5)
    check_op("MaxPool2D", [x], nchw(lambda t: F.max_pool2d(t, 2)), {"pool_size": 2})
    check_op("MaxPool2D", [x], nchw(lambda t: F.max_pool2d(t, (3, 2), (2, 1), padding=1)),
             {"pool_size": [3, 2], "strides": [2, 1], "padding": [1, 1, 1, 1]})
    check_op("AvgPool2D", [x], nchw(lambda t: F.avg_pool2d(t, 3, 2)), {"pool_size": 3, "strides": 2})
    check_op("AvgPool2D", [x], nchw(lambda t: F.avg_pool2d(t, 3, 1, 1, count_include_pad=True)),
             {"pool_size": 3, "strides": 1, "padding": [1, 1, 1, 1], "count_include_pad": True})
    check_op("GlobalAveragePool2D", [x], lambda a: a.mean(axis=(1, 2)), atol=1e-6)


def test_shape_ops():
    x = rand(2, 3, 4)
    check_op("Reshape", [x], lambda a: a.reshape(2, 12), {"shape": [0, -1]})
    check_op("Flatten", [x], lambda a: a.reshape(6, 4), {"axis": 2})
    check_op("Identity", [x], lambda a: a)
    check_op("Dropout", [x], lambda a: a)


def test_every_registered_op_is_tested():
    # The engine's own ops are tested here; ONNX-named ops by the ONNX node suite (the cases of
    # tests/test_onnx_node_suite.py) and by the families' own test files.
    from conformance import onnx_cases as oc

    here = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "LeakyRelu", "Clip", "HardSigmoid",
            "Activation", "Softmax", "LogSoftmax", "MatMul", "Dense", "Conv2D", "Conv2DConcat", "MaxPool2D",
            "AvgPool2D", "GlobalAveragePool2D", "Reshape", "Flatten", "Identity", "Dropout",
            "Log", "Sqrt", "Reciprocal"} | set(UNARY)
    onnx_suite = {op for c in oc.node_cases() for op in c.ops}
    # Ops of the training graph (grad-only ops, optimizer updates): tests/test_autograd_rules.py,
    # test_train_*.py, test_losses.py and test_train_step.py run each of them.
    training = {name for name, op in OPS.items()
                if op.infer.__module__.endswith(("_grad", ".grad_ops", ".optimizer_ops"))} | {"KerasBatchNorm"}
    families = {"PackedAttention"}  # engine-internal ops made by a pass: tests/test_fuse_qkv.py
    tested = here | onnx_suite | training | families
    assert set(OPS) <= tested, f"untested ops: {set(OPS) - tested}"


def test_op_layer_codes_match_the_native_enums():
    # engine/ops keeps kernel enums as ints (no engine._C import there); they must agree.
    from engine import _C
    from engine.ops.activations import A
    from engine.ops.elementwise import BINARY_CODES

    for name, member in _C.Act.__members__.items():
        assert getattr(A, name) == int(member), name
    for name, code in BINARY_CODES.items():
        assert int(getattr(_C.BinaryOp, name.lower())) == code, name


def test_op_layer_does_not_import_the_native_extension():
    import subprocess
    import sys

    # Load engine.ops with engine/__init__ bypassed: only errors, graph, dtypes and ops.
    code = ("import sys, types, pathlib, importlib\n"
            "root = pathlib.Path(__import__('engine').__file__).parent\n"
            "for k in [k for k in sys.modules if k == 'engine' or k.startswith('engine.')]: del sys.modules[k]\n"
            "pkg = types.ModuleType('engine'); pkg.__path__ = [str(root)]; sys.modules['engine'] = pkg\n"
            "sys.modules['engine._C'] = None\n"
            "importlib.import_module('engine.ops')\n"
            "print(len(importlib.import_module('engine.ops').OPS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 20
