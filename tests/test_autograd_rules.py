"""The backward rules (engine/ops/*_grad.py) through engine.autograd.vjp: each op's training
graph planned and run natively (float32), its gradients compared with torch autograd in float64
on the same inputs, at float32 tolerance. Random inputs, odd sizes, batch 1, broadcasting both
ways. Also: a float64 central finite-difference check of a composite graph, gradients summed
from several uses of one value, unreached parameters, and ops without a rule refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.autograd import NoGradientError, vjp
from engine.graph import Graph, Node, Value

torch = pytest.importorskip("torch")
F = torch.nn.functional

NP_TO_ENGINE = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64", np.dtype(np.int64): "int64",
                np.dtype(np.int32): "int32", np.dtype(np.bool_): "bool"}


def _t(a, grad=False):
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return torch.tensor(a.astype(np.float64), requires_grad=grad)
    return torch.tensor(a)


def check(nodes, outputs, inputs, ref, params=None, consts=None, wrt=None, seed=0, rtol=2e-4, atol=2e-5,
          out_grads=None):
    """Gradients of every float graph input (or `wrt`) and every `params` entry (trained
    initializers), engine vs torch.

    nodes: the forward graph's nodes; outputs: its output names; inputs: {name: array} fed;
    params: {name: float32 array} trained weights; consts: {name: array} constant weights;
    ref(T) -> tensor or list of tensors (one per output), T: every input, param and const as
    a torch tensor (floats as float64). The gradients of the outputs are random (or
    out_grads). Returns the engine's gradients."""
    params, consts = dict(params or {}), dict(consts or {})
    if wrt is None:
        wrt = [k for k, v in inputs.items() if np.asarray(v).dtype == np.float32]
    T = {}
    for k, v in {**inputs, **consts}.items():
        T[k] = _t(v, grad=k in wrt)
    for k, v in params.items():
        T[k] = _t(v, grad=True)
    outs = ref(T)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    assert len(outs) == len(outputs)
    rng = np.random.default_rng(seed + 1000)
    if out_grads is None:
        out_grads = [rng.uniform(-1.5, 1.5, tuple(o.shape)).astype(np.float32) for o in outs]
    targets = [T[k] for k in list(wrt) + list(params)]
    want = torch.autograd.grad(outs, targets, [torch.tensor(g, dtype=o.dtype) for g, o in zip(out_grads, outs)],
                               allow_unused=True)
    graph = Graph([Value(k, tuple(np.shape(v)), NP_TO_ENGINE[np.asarray(v).dtype]) for k, v in inputs.items()],
                  [Value(o, tuple(t.shape), "float32") for o, t in zip(outputs, outs)],
                  list(nodes), {**{k: np.asarray(v) for k, v in consts.items()}, **params})
    feeds = {k: np.asarray(v) for k, v in inputs.items()}
    got = vjp(graph, feeds, list(params), dict(zip(outputs, out_grads)), wrt_inputs=tuple(wrt))
    for name, w in zip(list(wrt) + list(params), want):
        w = np.zeros(T[name].shape) if w is None else w.detach().numpy()
        g = got[name]
        assert g.shape == w.shape, f"{name}: gradient shape {g.shape}, want {w.shape}"
        assert g.dtype == np.float32, f"{name}: {g.dtype}"
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol * scale, err_msg=f"gradient of {name}")
    return got


def randn(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def i64(*v):
    return np.array(v, np.int64)


# -- Dense with every fused activation ------------------------------------------------------

KERAS_ACTS = {  # activation attr -> (torch function of the pre-activation, extra attrs, input scale)
    None: (lambda z: z, {}, 1),
    "linear": (lambda z: z, {}, 1),
    "relu": (F.relu, {}, 1),
    "sigmoid": (torch.sigmoid, {}, 2),
    "tanh": (torch.tanh, {}, 1),
    "gelu": (F.gelu, {}, 1.5),
    "gelu_tanh": (lambda z: F.gelu(z, approximate="tanh"), {}, 1.5),
    "elu": (F.elu, {}, 1.5),
    "elu_alpha": (lambda z: F.elu(z, 0.7), {"activation": "elu", "activation_alpha": 0.7}, 1.5),
    "selu": (F.selu, {}, 1.5),
    "silu": (F.silu, {}, 2),
    "swish": (F.silu, {}, 2),
    "softplus": (F.softplus, {}, 2),
    "leaky_relu": (lambda z: F.leaky_relu(z, 0.2), {}, 1),  # Keras's default slope 0.2
    "leaky_relu_alpha": (lambda z: F.leaky_relu(z, 0.05), {"activation": "leaky_relu", "activation_alpha": 0.05}, 1),
    "hard_sigmoid": (lambda z: F.relu6(z + 3) / 6, {}, 3),  # Keras 3
    "relu6": (F.relu6, {}, 4),
    "hard_tanh": (F.hardtanh, {}, 1.5),
    "clip": (lambda z: torch.clamp(z, -0.5, 1.2), {"activation": "clip", "activation_alpha": -0.5,
                                                    "activation_beta": 1.2}, 1.5),
    "exponential": (torch.exp, {}, 0.5),
    "square": (torch.square, {}, 1),
    "abs": (torch.abs, {}, 1),
    "erf": (torch.erf, {}, 1),
}


@pytest.mark.parametrize("act", list(KERAS_ACTS))
@pytest.mark.parametrize("shape", [(1, 3), (5, 7), (2, 3, 5)], ids=["batch1", "2d", "3d"])
def test_dense_fused_activation(act, shape):
    fn, extra, scale = KERAS_ACTS[act]
    attrs = {"activation": act, **extra}
    rng = np.random.default_rng(len(shape) * 7 + sum(shape))
    K, N = shape[-1], 3 if shape[-1] == 5 else 4
    x = randn(rng, *shape, scale=scale)
    w = randn(rng, K, N, scale=1 / math.sqrt(K))
    b = randn(rng, N, scale=0.3)
    check([Node("Dense", ["x", "w", "b"], ["y"], attrs)], ["y"], {"x": x},
          lambda T: fn(T["x"] @ T["w"] + T["b"]), params={"w": w, "b": b}, seed=len(str(act)))


@pytest.mark.parametrize("trained", ["x", "w", "b", "wb", "xb"])
def test_dense_partial_and_without_bias(trained):
    rng = np.random.default_rng(3)
    x, w, b = randn(rng, 3, 5), randn(rng, 5, 7), randn(rng, 7)
    params = {k: v for k, v in (("w", w), ("b", b)) if k in trained}
    consts = {k: v for k, v in (("w", w), ("b", b)) if k not in trained}
    check([Node("Dense", ["x", "w", "b"], ["y"], {"activation": "tanh"})], ["y"], {"x": x},
          lambda T: torch.tanh(T["x"] @ T["w"] + T["b"]), params=params, consts=consts,
          wrt=["x"] if "x" in trained else [])
    check([Node("Dense", ["x", "w"], ["y"], {"activation": "sigmoid"})], ["y"], {"x": x},
          lambda T: torch.sigmoid(T["x"] @ T["w"]), params={"w": w})


def test_dense_on_a_vector():
    rng = np.random.default_rng(2)
    x, w, b = randn(rng, 5), randn(rng, 5, 3), randn(rng, 3)
    for act, fn in [("relu", F.relu), ("gelu", F.gelu)]:
        check([Node("Dense", ["x", "w", "b"], ["y"], {"activation": act})], ["y"], {"x": x},
              lambda T, fn=fn: fn(T["x"] @ T["w"] + T["b"]), params={"w": w, "b": b})


# -- MatMul ------------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((3, 5), (5, 7)), ((1, 5), (5, 1)), ((5,), (5, 3)), ((4, 5), (5,)), ((5,), (5,)),
    ((2, 3, 5), (2, 5, 7)), ((2, 3, 5), (5, 7)), ((3, 5), (2, 5, 7)), ((2, 1, 3, 5), (3, 5, 7)),
    ((1, 3, 5), (4, 5, 1)), ((2, 3, 5), (5,)), ((5,), (3, 5, 2)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES, ids=[f"{a}@{b}" for a, b in MATMUL_SHAPES])
def test_matmul(sa, sb):
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    a, b = randn(rng, *sa), randn(rng, *sb)
    check([Node("MatMul", ["a", "b"], ["y"])], ["y"], {"a": a, "b": b}, lambda T: torch.matmul(T["a"], T["b"]))
    # b a trained weight, a constant weight
    check([Node("MatMul", ["a", "b"], ["y"])], ["y"], {"a": a}, lambda T: torch.matmul(T["a"], T["b"]),
          params={"b": b})
    check([Node("MatMul", ["a", "b"], ["y"])], ["y"], {"a": a}, lambda T: torch.matmul(T["a"], T["b"]),
          consts={"b": b})


# -- Gemm --------------------------------------------------------------------------------------

@pytest.mark.parametrize("ta", [0, 1])
@pytest.mark.parametrize("tb", [0, 1])
@pytest.mark.parametrize("c", ["none", "vector", "matrix", "row", "column", "scalar", "scalar1"])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.7, -1.3)])
def test_gemm(ta, tb, c, alpha, beta):
    rng = np.random.default_rng(ta * 2 + tb)
    M, K, N = (1, 5, 3) if c == "row" else (3, 5, 7)
    a = randn(rng, *((K, M) if ta else (M, K)))
    b = randn(rng, *((N, K) if tb else (K, N)))
    cshape = {"vector": (N,), "matrix": (M, N), "row": (1, N), "column": (M, 1), "scalar": (), "scalar1": (1,)}
    inputs = {"a": a, "b": b}
    if c != "none":
        inputs["c"] = randn(rng, *cshape[c])
    attrs = {"transA": ta, "transB": tb, "alpha": alpha, "beta": beta}

    def ref(T):
        A = T["a"].T if ta else T["a"]
        B = T["b"].T if tb else T["b"]
        y = alpha * (A @ B)
        return y + beta * T["c"] if c != "none" else y
    check([Node("Gemm", list(inputs), ["y"], attrs)], ["y"], inputs, ref)


# -- elementwise arithmetic with broadcasting ----------------------------------------------------

BROADCASTS = [((3, 5), (3, 5)), ((3, 5), (5,)), ((5,), (3, 5)), ((3, 1), (1, 5)), ((2, 3, 5), (3, 1)),
              ((1, 3, 1), (2, 1, 5)), ((1,), (2, 3)), ((), (3, 5)), ((3, 5), ())]
BINARY = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("sa,sb", BROADCASTS, ids=[f"{a}-{b}" for a, b in BROADCASTS])
def test_binary_broadcast(op, sa, sb):
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    a = randn(rng, *sa)
    b = randn(rng, *sb)
    if op == "Div":  # keep the divisor away from 0
        b = (np.sign(b) * (0.5 + np.abs(b))).astype(np.float32)
    check([Node(op, ["a", "b"], ["y"])], ["y"], {"a": a, "b": b}, lambda T: BINARY[op](T["a"], T["b"]))
    # one side trained only (the other a constant)
    check([Node(op, ["a", "b"], ["y"])], ["y"], {"a": a}, lambda T: BINARY[op](T["a"], T["b"]), consts={"b": b})
    check([Node(op, ["a", "b"], ["y"])], ["y"], {"b": b}, lambda T: BINARY[op](T["a"], T["b"]), consts={"a": a})


def test_neg():
    rng = np.random.default_rng(0)
    for shape in [(1,), (3, 5), (2, 1, 7)]:
        check([Node("Neg", ["x"], ["y"])], ["y"], {"x": randn(rng, *shape)}, lambda T: -T["x"])


@pytest.mark.parametrize("op", ["Sum", "Mean"])
@pytest.mark.parametrize("shapes", [[(3, 5)], [(3, 5), (3, 5)], [(3, 5), (5,), (3, 1)], [(1,), (2, 3, 1), (3, 5)]])
def test_variadic_sum_mean(op, shapes):
    rng = np.random.default_rng(len(shapes))
    inputs = {f"x{k}": randn(rng, *s) for k, s in enumerate(shapes)}

    def ref(T):
        total = sum(torch.broadcast_tensors(*[T[k] for k in inputs])) if len(inputs) > 1 else T["x0"] * 1
        return total / len(inputs) if op == "Mean" else total
    check([Node(op, list(inputs), ["y"])], ["y"], inputs, ref)


@pytest.mark.parametrize("sc,sa,sb", [((3, 5), (3, 5), (3, 5)), ((3, 5), (5,), (3, 1)), ((5,), (3, 5), ()),
                                      ((2, 3, 5), (3, 5), (2, 1, 5)), ((1, 5), (3, 1), (5,))])
def test_where(sc, sa, sb):
    rng = np.random.default_rng(len(sc) + len(sa))
    cond = rng.uniform(size=sc) < 0.5
    a, b = randn(rng, *sa), randn(rng, *sb)
    check([Node("Where", ["c", "a", "b"], ["y"])], ["y"], {"c": cond, "a": a, "b": b},
          lambda T: torch.where(T["c"], T["a"], T["b"]))


@pytest.mark.parametrize("e", [2.0, 3.0, 0.5, -1.0, 1.5, 1.0, 0.0])
@pytest.mark.parametrize("e_shape", [(), (1,)])
def test_pow_constant_exponent(e, e_shape):
    rng = np.random.default_rng(int(e * 10) + 100)
    x = rng.uniform(0.3, 2.0, (3, 7)).astype(np.float32)
    ev = np.full(e_shape, e, np.float32)
    check([Node("Pow", ["x", "e"], ["y"])], ["y"], {"x": x}, lambda T: torch.pow(T["x"], T["e"]), consts={"e": ev})
    # integer exponents on negative bases
    if e in (2.0, 3.0):
        x = randn(rng, 4, 5)
        check([Node("Pow", ["x", "e"], ["y"])], ["y"], {"x": x}, lambda T: torch.pow(T["x"], T["e"]), consts={"e": ev})


def test_pow_trained_exponent_refused():
    x = np.ones((2, 3), np.float32)
    g = Graph([Value("x", (2, 3))], [Value("y", (2, 3))], [Node("Pow", ["x", "e"], ["y"], name="the_pow")],
              {"e": np.float32(2.0)})
    with pytest.raises(NoGradientError, match="the_pow"):
        vjp(g, {"x": x}, ["e"], {"y": np.ones((2, 3), np.float32)}, wrt_inputs=("x",))


# -- activation ops ------------------------------------------------------------------------------

SELU_A, SELU_G = 1.67326319217681884765625, 1.05070102214813232421875
ACT_OPS = {  # id -> (op, attrs, torch fn, input range)
    "Relu": ("Relu", {}, F.relu, (-3, 3)),
    "Sigmoid": ("Sigmoid", {}, torch.sigmoid, (-6, 6)),
    "Tanh": ("Tanh", {}, torch.tanh, (-3, 3)),
    "LeakyRelu": ("LeakyRelu", {}, lambda x: F.leaky_relu(x, 0.01), (-3, 3)),
    "LeakyRelu_a": ("LeakyRelu", {"alpha": 0.3}, lambda x: F.leaky_relu(x, 0.3), (-3, 3)),
    "Elu": ("Elu", {}, F.elu, (-3, 3)),
    "Elu_a": ("Elu", {"alpha": 0.4}, lambda x: F.elu(x, 0.4), (-3, 3)),
    "Selu": ("Selu", {}, lambda x: SELU_G * torch.where(x > 0, x, SELU_A * (torch.exp(x) - 1)), (-3, 3)),
    "Selu_explicit": ("Selu", {"alpha": SELU_A, "gamma": SELU_G},
                      lambda x: SELU_G * torch.where(x > 0, x, SELU_A * (torch.exp(x) - 1)), (-3, 3)),
    "Softplus": ("Softplus", {}, F.softplus, (-8, 8)),
    "Softsign": ("Softsign", {}, F.softsign, (-5, 5)),
    "HardSigmoid": ("HardSigmoid", {}, lambda x: torch.clamp(0.2 * x + 0.5, 0, 1), (-5, 5)),
    "HardSigmoid_ab": ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, lambda x: torch.clamp(0.3 * x + 0.4, 0, 1), (-5, 5)),
    "HardSwish": ("HardSwish", {}, F.hardswish, (-5, 5)),
    "Mish": ("Mish", {}, F.mish, (-6, 6)),
    "Gelu": ("Gelu", {}, F.gelu, (-4, 4)),
    "Gelu_none": ("Gelu", {"approximate": "none"}, F.gelu, (-4, 4)),
    "Gelu_tanh": ("Gelu", {"approximate": "tanh"}, lambda x: F.gelu(x, approximate="tanh"), (-4, 4)),
    "GeluTanh": ("GeluTanh", {}, lambda x: F.gelu(x, approximate="tanh"), (-4, 4)),
    "Silu": ("Silu", {}, F.silu, (-6, 6)),
    "Swish": ("Swish", {}, F.silu, (-6, 6)),
    "Exp": ("Exp", {}, torch.exp, (-3, 3)),
    "Log": ("Log", {}, torch.log, (0.1, 4)),
    "Sqrt": ("Sqrt", {}, torch.sqrt, (0.1, 4)),
    "Abs": ("Abs", {}, torch.abs, (-3, 3)),
    "Reciprocal": ("Reciprocal", {}, torch.reciprocal, (0.3, 3)),
    "Erf": ("Erf", {}, torch.erf, (-3, 3)),
    "Square": ("Square", {}, torch.square, (-3, 3)),
    "Clip_attrs": ("Clip", {"min": -0.5, "max": 0.8}, lambda x: torch.clamp(x, -0.5, 0.8), (-2, 2)),
    "Clip_min_only": ("Clip", {"min": 0.2}, lambda x: torch.clamp(x, min=0.2), (-2, 2)),
    "Clip_none": ("Clip", {}, lambda x: x * 1, (-2, 2)),
}
ACT_NAMES = {  # Activation(activation=...) -> (extra attrs, torch fn, input range)
    "relu": ({}, F.relu, (-3, 3)), "sigmoid": ({}, torch.sigmoid, (-6, 6)), "tanh": ({}, torch.tanh, (-3, 3)),
    "gelu": ({}, F.gelu, (-4, 4)), "gelu_tanh": ({}, lambda x: F.gelu(x, approximate="tanh"), (-4, 4)),
    "elu": ({}, F.elu, (-3, 3)), "selu": ({}, F.selu, (-3, 3)), "silu": ({}, F.silu, (-6, 6)),
    "softplus": ({}, F.softplus, (-8, 8)), "leaky_relu": ({}, lambda x: F.leaky_relu(x, 0.2), (-3, 3)),
    "hard_sigmoid": ({}, lambda x: F.relu6(x + 3) / 6, (-5, 5)),
    "sparse_sigmoid": ({}, lambda x: torch.clamp((x + 1) / 2, 0, 1), (-2, 2)),
    "relu6": ({}, F.relu6, (-2, 8)), "hard_tanh": ({}, F.hardtanh, (-2, 2)),
    "exp": ({}, torch.exp, (-3, 3)), "log": ({}, torch.log, (0.1, 4)), "sqrt": ({}, torch.sqrt, (0.1, 4)),
    "neg": ({}, torch.neg, (-3, 3)), "abs": ({}, torch.abs, (-3, 3)),
    "reciprocal": ({}, torch.reciprocal, (0.3, 3)), "square": ({}, torch.square, (-3, 3)),
    "erf": ({}, torch.erf, (-3, 3)), "linear": ({}, lambda x: x * 1, (-3, 3)),
    "leaky_relu_alpha": ({"activation": "leaky_relu", "activation_alpha": 0.1},
                         lambda x: F.leaky_relu(x, 0.1), (-3, 3)),
    "clip": ({"activation_alpha": -0.3, "activation_beta": 0.6}, lambda x: torch.clamp(x, -0.3, 0.6), (-1, 1)),
}


@pytest.mark.parametrize("case", list(ACT_OPS))
@pytest.mark.parametrize("shape", [(1,), (3, 7), (2, 1, 5)])
def test_activation_op(case, shape):
    op, attrs, fn, (lo, hi) = ACT_OPS[case]
    rng = np.random.default_rng(len(case) + len(shape))
    x = rng.uniform(lo, hi, shape).astype(np.float32)
    check([Node(op, ["x"], ["y"], attrs)], ["y"], {"x": x}, lambda T: fn(T["x"]))


@pytest.mark.parametrize("bounds", [(-0.4, 0.7), (-0.4, None), (None, 0.7)])
def test_clip_constant_bound_inputs(bounds):
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 2, (5, 7)).astype(np.float32)
    consts, ins = {}, ["x"]
    for k, v in zip(("lo", "hi"), bounds):
        if v is None:
            ins.append("")
        else:
            consts[k] = np.array(v, np.float32)
            ins.append(k)
    check([Node("Clip", ins, ["y"])], ["y"], {"x": x},
          lambda T: torch.clamp(T["x"], bounds[0], bounds[1]), consts=consts)


@pytest.mark.parametrize("name", list(ACT_NAMES))
def test_activation_generic_op(name):
    extra, fn, (lo, hi) = ACT_NAMES[name]
    rng = np.random.default_rng(len(name))
    x = rng.uniform(lo, hi, (3, 5)).astype(np.float32)
    attrs = {"activation": name, **extra}
    check([Node("Activation", ["x"], ["y"], attrs)], ["y"], {"x": x}, lambda T: fn(T["x"]))


def test_activation_ops_without_a_rule_refused():
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    for op, attrs in [("Selu", {"alpha": 2.0}), ("Swish", {"alpha": 1.7})]:
        g = Graph([Value("x", (2, 3))], [Value("y", (2, 3))], [Node(op, ["x"], ["y"], attrs, name=f"my_{op}")])
        with pytest.raises(NoGradientError, match=f"my_{op}"):
            vjp(g, {"x": x}, [], {"y": np.ones((2, 3), np.float32)}, wrt_inputs=("x",))


# -- movement ----------------------------------------------------------------------------------

def _movement_case(rng, name):
    """(nodes, inputs, consts, torch reference) for one movement op."""
    x = randn(rng, 2, 3, 5)
    if name == "Reshape_input":
        return [Node("Reshape", ["x", "s"], ["y"])], {"x": x}, {"s": i64(5, -1, 2)}, lambda T: T["x"].reshape(5, 3, 2)
    if name == "Reshape_attr":
        return ([Node("Reshape", ["x"], ["y"], {"shape": [6, 5]})], {"x": x}, {},
                lambda T: T["x"].reshape(6, 5))
    if name == "Flatten":
        return [Node("Flatten", ["x"], ["y"], {"axis": 2})], {"x": x}, {}, lambda T: T["x"].reshape(6, 5)
    if name == "Flatten0":
        return [Node("Flatten", ["x"], ["y"], {"axis": 0})], {"x": x}, {}, lambda T: T["x"].reshape(1, 30)
    if name == "Squeeze":
        x1 = randn(rng, 3, 1, 5, 1)
        return [Node("Squeeze", ["x", "a"], ["y"])], {"x": x1}, {"a": i64(1)}, lambda T: T["x"].squeeze(1)
    if name == "Squeeze_all":
        x1 = randn(rng, 1, 3, 1, 5)
        return [Node("Squeeze", ["x"], ["y"])], {"x": x1}, {}, lambda T: T["x"].reshape(3, 5)
    if name == "Unsqueeze":
        return ([Node("Unsqueeze", ["x", "a"], ["y"])], {"x": x}, {"a": i64(0, -1)},
                lambda T: T["x"][None, ..., None])
    if name == "Identity":
        return [Node("Identity", ["x"], ["y"])], {"x": x}, {}, lambda T: T["x"] * 1
    if name == "Transpose":
        return ([Node("Transpose", ["x"], ["y"], {"perm": [2, 0, 1]})], {"x": x}, {},
                lambda T: T["x"].permute(2, 0, 1))
    if name == "Transpose_default":
        return [Node("Transpose", ["x"], ["y"])], {"x": x}, {}, lambda T: T["x"].permute(2, 1, 0)
    if name.startswith("Concat"):
        axis = {"Concat0": 0, "Concat1": -2, "Concat2": 2, "Concat_last": -1}[name]
        parts = {"a": randn(rng, 2, 3, 5), "b": randn(rng, *[(4 if d == axis % 3 else s) for d, s in enumerate((2, 3, 5))]),
                 "c": randn(rng, *[(1 if d == axis % 3 else s) for d, s in enumerate((2, 3, 5))])}
        return ([Node("Concat", ["a", "b", "c"], ["y"], {"axis": axis})], parts, {},
                lambda T: torch.cat([T["a"], T["b"], T["c"]], axis))
    if name == "Expand":
        x1 = randn(rng, 3, 1)
        return ([Node("Expand", ["x", "s"], ["y"])], {"x": x1}, {"s": i64(2, 3, 5)},
                lambda T: T["x"].expand(2, 3, 5))
    if name == "Expand_same_rank":
        x1 = randn(rng, 1, 3, 1)
        return ([Node("Expand", ["x", "s"], ["y"])], {"x": x1}, {"s": i64(4, 1, 5)},
                lambda T: T["x"].expand(4, 3, 5))
    if name == "Pad":
        return ([Node("Pad", ["x", "p"], ["y"])], {"x": x}, {"p": i64(0, 1, 2, 1, 0, 3)},
                lambda T: F.pad(T["x"], (2, 3, 1, 0, 0, 1)))
    if name == "Pad_value_axes":
        return ([Node("Pad", ["x", "p", "v", "ax"], ["y"])], {"x": x},
                {"p": i64(2, 1, 1, 4), "v": np.array(0.5, np.float32), "ax": i64(-1, 1)},
                lambda T: F.pad(T["x"], (2, 4, 1, 1), value=0.5))
    if name == "Pad_attrs_zero":
        return [Node("Pad", ["x", "p"], ["y"])], {"x": x}, {"p": i64(0, 0, 0, 0, 0, 0)}, lambda T: T["x"] * 1
    raise KeyError(name)


MOVEMENT = ["Reshape_input", "Reshape_attr", "Flatten", "Flatten0", "Squeeze", "Squeeze_all", "Unsqueeze",
            "Identity", "Transpose", "Transpose_default", "Concat0", "Concat1", "Concat2",
            "Concat_last", "Expand", "Expand_same_rank", "Pad", "Pad_value_axes", "Pad_attrs_zero"]


@pytest.mark.parametrize("name", MOVEMENT)
def test_movement(name):
    rng = np.random.default_rng(len(name))
    nodes, inputs, consts, ref = _movement_case(rng, name)
    check(nodes, ["y"], inputs, ref, consts=consts)


@pytest.mark.parametrize("mode,pads", [("reflect", [1, 1, 1, 1]), ("edge", [0, 1, 0, 1]),
                                       ("constant", [0, -1, 1, 1])])
def test_pad_without_a_rule_refused(mode, pads):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    g = Graph([Value("x", (3, 4))], [Value("y", None)], [Node("Pad", ["x", "p"], ["y"], {"mode": mode}, name="my_pad")],
              {"p": np.array(pads, np.int64)})
    shape = (3 + pads[0] + pads[2], 4 + pads[1] + pads[3])
    with pytest.raises(NoGradientError, match="my_pad"):
        vjp(g, {"x": x}, [], {"y": np.ones(shape, np.float32)}, wrt_inputs=("x",))


def test_concat_with_constant_part():
    rng = np.random.default_rng(1)
    a, c = randn(rng, 3, 2), randn(rng, 3, 4)
    check([Node("Concat", ["a", "c", "a"], ["y"], {"axis": 1})], ["y"], {"a": a},
          lambda T: torch.cat([T["a"], T["c"], T["a"]], 1), consts={"c": c})


@pytest.mark.parametrize("case", ["equal", "uneven", "sizes", "one_unused", "axis1"])
def test_split(case):
    rng = np.random.default_rng(2)
    x = randn(rng, 7, 5)
    consts = {}
    if case == "equal":
        x = randn(rng, 6, 5)
        nodes, outs = [Node("Split", ["x"], ["p", "q", "r"], {"axis": 0})], ["p", "q", "r"]
        ref = lambda T: list(torch.split(T["x"], 2, 0))
    elif case == "uneven":  # the last part smaller
        nodes, outs = [Node("Split", ["x"], ["p", "q"], {"axis": 0, "num_outputs": 2})], ["p", "q"]
        ref = lambda T: list(torch.split(T["x"], 4, 0))
    elif case == "sizes":
        consts = {"s": i64(1, 4, 2)}
        nodes, outs = [Node("Split", ["x", "s"], ["p", "q", "r"], {"axis": 0})], ["p", "q", "r"]
        ref = lambda T: list(torch.split(T["x"], [1, 4, 2], 0))
    elif case == "axis1":
        consts = {"s": i64(2, 3)}
        nodes, outs = [Node("Split", ["x", "s"], ["p", "q"], {"axis": -1})], ["p", "q"]
        ref = lambda T: list(torch.split(T["x"], [2, 3], 1))
    else:  # only the middle part reaches the output: the others' gradients are zeros
        consts = {"s": i64(2, 3, 2)}
        nodes = [Node("Split", ["x", "s"], ["p", "q", "r"], {"axis": 0}), Node("Tanh", ["q"], ["y"])]
        outs = ["y"]
        ref = lambda T: torch.tanh(torch.split(T["x"], [2, 3, 2], 0)[1])
    check(nodes, outs, {"x": x}, ref, consts=consts)


SLICES = {  # id -> (starts, ends, axes, steps, torch indexing of a (7, 9, 5) tensor)
    "basic": ([1], [5], [0], None, lambda t: t[1:5]),
    "two_axes": ([1, 2], [6, -1], [0, 2], None, lambda t: t[1:6, :, 2:-1]),
    "step2": ([0, 1], [7, 9], [0, 1], [2, 3], lambda t: t[0:7:2, 1:9:3]),
    "neg_step": ([-1], [-100], [1], [-1], lambda t: t.flip(1)),
    "neg_step2": ([6, 7], [0, 1], [0, 1], [-2, -3], lambda t: t[[6, 4, 2]][:, [7, 4]]),
    "clamped": ([-100, 3], [100, 100], [0, -1], [1, 1], lambda t: t[:, :, 3:]),
    "no_axes": ([1, 0, 1], [3, 9, 4], None, None, lambda t: t[1:3, 0:9, 1:4]),
    "empty": ([4], [2], [0], None, lambda t: t[4:2]),
}


@pytest.mark.parametrize("case", list(SLICES))
def test_slice(case):
    starts, ends, axes, steps, ref = SLICES[case]
    rng = np.random.default_rng(len(case))
    x = randn(rng, 7, 9, 5)
    consts = {"st": i64(*starts), "en": i64(*ends)}
    ins = ["x", "st", "en"]
    if axes is not None or steps is not None:
        consts["ax"] = i64(*(axes if axes is not None else range(len(starts))))
        ins.append("ax")
    if steps is not None:
        consts["sp"] = i64(*steps)
        ins.append("sp")
    check([Node("Slice", ins, ["y"])], ["y"], {"x": x}, lambda T: ref(T["x"]), consts=consts)


def test_cast_round_trip_through_float64():
    rng = np.random.default_rng(4)
    x = randn(rng, 3, 5)
    c = rng.standard_normal((3, 5))  # float64 constant
    nodes = [Node("Cast", ["x"], ["x64"], {"to": 11}), Node("Mul", ["x64", "c"], ["m"]),
             Node("Cast", ["m"], ["y"], {"to": 1}), Node("Cast", ["y"], ["z"], {"to": 1})]
    check(nodes, ["z"], {"x": x}, lambda T: T["x"] * T["c"], consts={"c": c})


def test_cast_from_integer_has_no_gradient():
    rng = np.random.default_rng(4)
    x, k = randn(rng, 3, 5), rng.integers(0, 4, (3, 5))
    nodes = [Node("Cast", ["k"], ["kf"], {"to": 1}), Node("Mul", ["x", "kf"], ["y"])]
    check(nodes, ["y"], {"x": x, "k": k}, lambda T: T["x"] * T["k"].double())


# -- reductions -------------------------------------------------------------------------------

REDUCE_REF = {
    "ReduceSum": lambda x, ax, kd: torch.sum(x, dim=ax, keepdim=kd),
    "ReduceMean": lambda x, ax, kd: torch.mean(x, dim=ax, keepdim=kd),
    "ReduceSumSquare": lambda x, ax, kd: torch.sum(x * x, dim=ax, keepdim=kd),
    "ReduceMax": lambda x, ax, kd: torch.amax(x, dim=ax, keepdim=kd),
    "ReduceMin": lambda x, ax, kd: torch.amin(x, dim=ax, keepdim=kd),
}


@pytest.mark.parametrize("op", list(REDUCE_REF))
@pytest.mark.parametrize("keepdims", [1, 0])
@pytest.mark.parametrize("axes", [None, (0,), (-1,), (1,), (0, 2), (2, 0, 1), (-2, -1)],
                         ids=lambda a: "all" if a is None else "_".join(map(str, a)))
@pytest.mark.parametrize("shape", [(3, 5, 7), (1, 5, 1)], ids=["3x5x7", "1x5x1"])
def test_reduce(op, keepdims, axes, shape):
    rng = np.random.default_rng(len(shape) + keepdims)
    x = randn(rng, *shape)
    ins, consts = ["x"], {}
    if axes is not None:
        consts["ax"] = i64(*axes)
        ins.append("ax")
    dims = tuple(range(len(shape))) if axes is None else tuple(a % len(shape) for a in axes)
    check([Node(op, ins, ["y"], {"keepdims": keepdims})], ["y"], {"x": x},
          lambda T: REDUCE_REF[op](T["x"], dims, bool(keepdims)), consts=consts)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_reduce_extreme_ties_share_the_gradient(op):
    # integer-valued inputs: several positions hold the extreme; torch.amax/amin (and Keras)
    # split the gradient evenly between them
    rng = np.random.default_rng(6)
    x = rng.integers(-2, 3, (4, 6, 3)).astype(np.float32)
    for axes, kd in [((1,), 1), ((0, 2), 0), (None, 0)]:
        ins, consts = ["x"], {}
        if axes is not None:
            consts["ax"] = i64(*axes)
            ins.append("ax")
        dims = (0, 1, 2) if axes is None else axes
        check([Node(op, ins, ["y"], {"keepdims": kd})], ["y"], {"x": x},
              lambda T, dims=dims, kd=kd: REDUCE_REF[op](T["x"], dims, bool(kd)), consts=consts)


@pytest.mark.parametrize("op", list(REDUCE_REF))
def test_reduce_noop_with_empty_axes(op):
    # noop_with_empty_axes=1 and no axes: the op is the identity (ReduceSumSquare: x², as
    # ONNX's reference computes it)
    rng = np.random.default_rng(8)
    x = randn(rng, 3, 4)
    fwd = {"ReduceSumSquare": lambda t: t * t}.get(op, lambda t: t * 1)
    check([Node(op, ["x"], ["y"], {"keepdims": 1, "noop_with_empty_axes": 1})], ["y"], {"x": x},
          lambda T: fwd(T["x"]))


# -- SoftmaxXent (the fused loss kernel's node) ---------------------------------------------------

@pytest.mark.parametrize("reduction", [1, 2, 3], ids=["sum", "mean", "weighted_mean"])
@pytest.mark.parametrize("sparse", [True, False], ids=["labels", "probabilities"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_softmax_xent(reduction, sparse, weighted):
    # an upstream gradient other than 1 scales the kernel's own dlogits
    rng = np.random.default_rng(reduction * 4 + sparse * 2 + weighted)
    N, C = 7, 5
    z = randn(rng, N, C, scale=2)
    lab = rng.integers(0, C, N) if sparse else rng.dirichlet(np.ones(C), N).astype(np.float32)
    inputs = {"z": z, "t": lab}
    ins = ["z", "t"]
    if weighted:
        inputs["w"] = rng.uniform(0.2, 2, N).astype(np.float32)
        ins.append("w")

    def ref(T):
        per = F.cross_entropy(T["z"], T["t"], reduction="none")
        w = T["w"] if weighted else torch.ones(N, dtype=torch.float64)
        total = (per * w).sum()
        return {1: total, 2: total / N, 3: total / w.sum()}[reduction]
    check([Node("SoftmaxXent", ins, ["loss", "dz"], {"reduction": reduction})], ["loss"], inputs, ref, wrt=["z"])


# -- composite graphs --------------------------------------------------------------------------

def test_composite_against_float64_finite_differences():
    """A small network: engine gradients (float32 kernels) against central differences of a
    float64 numpy implementation of the same function."""
    rng = np.random.default_rng(11)
    x = randn(rng, 3, 4)
    w1, b1 = randn(rng, 4, 5, scale=0.5), randn(rng, 5, scale=0.1)
    w2 = randn(rng, 5, 3, scale=0.5)
    s = randn(rng, 3)
    nodes = [
        Node("Dense", ["x", "w1", "b1"], ["h"], {"activation": "tanh"}),
        Node("MatMul", ["h", "w2"], ["z"]),
        Node("Mul", ["z", "s"], ["zs"]),
        Node("Sigmoid", ["zs"], ["p"]),
        Node("Transpose", ["p"], ["pt"], {"perm": [1, 0]}),
        Node("ReduceSumSquare", ["pt", "ax"], ["q"], {"keepdims": 0}),
        Node("Div", ["q", "s"], ["r"]),
        Node("ReduceMean", ["r"], ["y"], {"keepdims": 0}),
    ]
    graph = Graph([Value("x", (3, 4))], [Value("y", ())], nodes,
                  {"w1": w1, "b1": b1, "w2": w2, "s": s, "ax": i64(1)})

    def f(v):
        h = np.tanh(v["x"] @ v["w1"] + v["b1"])
        p = 1 / (1 + np.exp(-((h @ v["w2"]) * v["s"])))
        q = np.sum(p.T ** 2, axis=1)
        return np.mean(q / v["s"])

    got = vjp(graph, {"x": x}, ["w1", "b1", "w2", "s"], {"y": np.float32(1.0)}, wrt_inputs=("x",))
    base = {k: v.astype(np.float64) for k, v in {"x": x, "w1": w1, "b1": b1, "w2": w2, "s": s}.items()}
    h = 1e-6
    for name, value in base.items():
        fd = np.zeros_like(value)
        for idx in np.ndindex(fd.shape):
            plus = {k: v.copy() for k, v in base.items()}
            minus = {k: v.copy() for k, v in base.items()}
            plus[name][idx] += h
            minus[name][idx] -= h
            fd[idx] = (f(plus) - f(minus)) / (2 * h)
        np.testing.assert_allclose(got[name], fd, rtol=1e-4, atol=1e-5, err_msg=name)


def test_gradient_accumulated_from_several_uses():
    rng = np.random.default_rng(12)
    x = randn(rng, 3, 5)
    w = randn(rng, 5, 5)
    # x feeds Mul (twice: x·x), Relu, a Dense and the output itself through Identity
    nodes = [Node("Mul", ["x", "x"], ["sq"]), Node("Relu", ["x"], ["r"]), Node("Add", ["sq", "r"], ["s"]),
             Node("Dense", ["x", "w"], ["d"], {"activation": None}), Node("Add", ["s", "d"], ["y"]),
             Node("Identity", ["x"], ["y2"])]
    check(nodes, ["y", "y2"], {"x": x}, lambda T: [T["x"] * T["x"] + F.relu(T["x"]) + T["x"] @ T["w"], T["x"] * 1],
          params={"w": w})
    # a weight used by two Dense nodes; an intermediate that is both an output and used again
    nodes = [Node("Dense", ["x", "w"], ["a"], {"activation": "tanh"}), Node("Dense", ["a", "w"], ["b"]),
             Node("Mul", ["a", "b"], ["c"])]
    check(nodes, ["a", "c"], {"x": x},
          lambda T: [torch.tanh(T["x"] @ T["w"]), torch.tanh(T["x"] @ T["w"]) * (torch.tanh(T["x"] @ T["w"]) @ T["w"])],
          params={"w": w})


def test_same_value_as_both_operands():
    rng = np.random.default_rng(15)
    x = randn(rng, 4, 4)
    check([Node("MatMul", ["x", "x"], ["y"])], ["y"], {"x": x}, lambda T: T["x"] @ T["x"])
    check([Node("Div", ["x", "x"], ["y"])], ["y"], {"x": x}, lambda T: T["x"] / T["x"])
    check([Node("Sub", ["x", "x"], ["y"]), Node("Add", ["y", "x"], ["z"])], ["z"], {"x": x},
          lambda T: (T["x"] - T["x"]) + T["x"])


def test_unreached_parameter_gets_zeros():
    rng = np.random.default_rng(13)
    x, w, v = randn(rng, 2, 3), randn(rng, 3, 4), randn(rng, 3, 4)
    g = Graph([Value("x", (2, 3))], [Value("y", (2, 4))], [Node("MatMul", ["x", "w"], ["y"])], {"w": w, "v": v})
    got = vjp(g, {"x": x}, ["w", "v"], {"y": np.ones((2, 4), np.float32)})
    np.testing.assert_array_equal(got["v"], np.zeros((3, 4), np.float32))
    np.testing.assert_allclose(got["w"], x.T @ np.ones((2, 4), np.float32), rtol=1e-6)


@pytest.mark.parametrize("op", ["Mod", "TopK"])
def test_op_without_backward_rule_raises(op):
    x = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    if op == "Mod":
        nodes = [Node("Mod", ["x", "m"], ["y"], {"fmod": 1}, name="the_mod_node")]
        inits, out = {"m": np.float32(2.0)}, "y"
    else:
        nodes = [Node("TopK", ["x", "k"], ["y", "idx"], {"axis": -1}, name="the_topk_node")]
        inits, out = {"k": i64(2)}, "y"
    g = Graph([Value("x", (2, 3))], [Value(out, None)], nodes, inits)
    name = nodes[0].name
    with pytest.raises(NoGradientError, match=f"'{name}'.*{op}"):
        vjp(g, {"x": x}, [], {out: np.ones((2, 2), np.float32)}, wrt_inputs=("x",))


def test_no_rule_needed_when_nothing_trained_flows_through():
    # Mod on a constant branch: no gradient is wanted through it, so no rule is asked for
    rng = np.random.default_rng(14)
    x, c = randn(rng, 2, 3), np.abs(randn(rng, 2, 3)) + 1
    nodes = [Node("Mod", ["c", "m"], ["cm"], {"fmod": 1}), Node("Mul", ["x", "cm"], ["y"])]
    check(nodes, ["y"], {"x": x}, lambda T: T["x"] * torch.fmod(T["c"], 2.0),
          consts={"c": c, "m": np.float32(2.0)})
