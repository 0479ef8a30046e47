"""The arith family (elementwise math, activations, comparisons, logic, Where, Cast) against
numpy on random shapes: odd sizes, size-0 and size-1 dims, broadcasting, every element type,
every kernel path (ISA); bad inputs give a clear EngineError."""

from __future__ import annotations

import math

import numpy as np
import pytest

import engine
from engine import errors
from engine.graph import Graph, Node, Value
from engine.ops import OPS
from engine.ops.registry import Tensor

FLOATS = ["float32", "float16", "float64"]
INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
NUMERIC = FLOATS + INTS
TOL = {"float32": 2e-6, "float16": 1e-3, "float64": 1e-12}


def run(op, inputs, attrs=None, consts=None, n_out=1, optimize=True):
    """One node: `inputs` are graph inputs (arrays, or "" for an absent optional input), then
    `consts` (name -> array) weights appended as further node inputs."""
    names = [f"x{i}" if a is not None else "" for i, a in enumerate(inputs)]
    feeds = {n: a for n, a in zip(names, inputs) if n}
    consts = consts or {}
    graph = Graph([Value(n, a.shape, engine.dtypes.from_numpy(a.dtype)) for n, a in feeds.items()],
                  [Value(f"y{k}", None) for k in range(n_out)],
                  [Node(op, names + list(consts), [f"y{k}" for k in range(n_out)], attrs or {})],
                  {k: np.asarray(v) for k, v in consts.items()})
    out = engine.Model(graph, optimize=optimize).run(feeds)
    return out["y0"] if n_out == 1 else [out[f"y{k}"] for k in range(n_out)]


def rand(shape, dtype, seed=0, low=-4.0, high=4.0):
    r = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return r.uniform(low, high, shape).astype(dt)
    if dt.kind == "b":
        return r.integers(0, 2, shape).astype(bool)
    info = np.iinfo(dt)
    return r.integers(max(info.min, -100), min(info.max, 100), shape, endpoint=True).astype(dt)


def close(got, want, dtype, rtol=None, atol=None):
    assert got.dtype == np.dtype(want.dtype), (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if np.dtype(dtype).kind == "f":
        r = TOL[dtype] if rtol is None else rtol
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=r,
                                   atol=r if atol is None else atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)


SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 1e-6, -1e-6])


def float_input(dtype, n=203, low=-4.0, high=4.0):
    x = np.concatenate([rand((n,), "float64", low=low, high=high), SPECIAL]).astype(dtype)
    return x.reshape(-1, 43) if x.size % 43 == 0 else x


# -- unary math on every float type ----------------------------------------------------------------

def _f64(fn):
    return lambda x: fn(x.astype(np.float64))


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


UNARY_F = {
    "Abs": np.abs, "Neg": np.negative, "Sign": np.sign, "Ceil": np.ceil, "Floor": np.floor, "Round": np.rint,
    "Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log, "Reciprocal": lambda x: 1 / x, "Tanh": np.tanh,
    "Erf": _erf, "Acos": np.arccos, "Acosh": np.arccosh, "Asin": np.arcsin, "Asinh": np.arcsinh,
    "Atan": np.arctan, "Atanh": np.arctanh, "Cos": np.cos, "Cosh": np.cosh, "Sin": np.sin, "Sinh": np.sinh,
    "Tan": np.tan, "Square": np.square,
}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", sorted(UNARY_F))
def test_unary_float(op, dtype):
    x = float_input(dtype, low=-1.2 if op in ("Acos", "Asin", "Atanh") else -4.0)
    with np.errstate(all="ignore"):
        want = UNARY_F[op](x.astype(np.float64)).astype(dtype)
    close(run(op, [x]), want, dtype, atol=1e-6 if dtype != "float16" else 1e-3)


@pytest.mark.parametrize("dtype", FLOATS)
def test_round_is_half_to_even_and_keeps_signed_zero(dtype):
    big = 1e4 if dtype == "float16" else 1e9
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -0.3, 0.3, -2.7, big, -big, 3.49999], dtype)
    got = run("Round", [x])
    np.testing.assert_array_equal(got, np.rint(x))
    assert np.signbit(got[3]) and np.signbit(got[5])


@pytest.mark.parametrize("dtype", INTS)
@pytest.mark.parametrize("op", ["Abs", "Neg", "Sign", "Relu", "Square"])
def test_unary_int(op, dtype):
    if op in ("Neg", "Relu") and dtype.startswith("u"):
        pytest.skip("signed types only (ONNX)")
    x = rand((5, 7), dtype)
    if dtype.startswith("int"):
        x.flat[0] = np.iinfo(dtype).min  # wraps like numpy
    ref = {"Abs": np.abs, "Neg": np.negative, "Sign": np.sign, "Relu": lambda a: np.maximum(a, 0),
           "Square": np.square}[op]
    with np.errstate(all="ignore"):
        close(run(op, [x]), ref(x).astype(dtype), dtype)


def test_not_isnan_isinf():
    b = rand((3, 0, 2), "bool")
    assert run("Not", [b]).shape == (3, 0, 2)
    b = rand((17,), "bool")
    np.testing.assert_array_equal(run("Not", [b]), ~b)
    for dtype in FLOATS:
        x = float_input(dtype)
        np.testing.assert_array_equal(run("IsNaN", [x]), np.isnan(x))
        np.testing.assert_array_equal(run("IsInf", [x]), np.isinf(x))
        np.testing.assert_array_equal(run("IsInf", [x], {"detect_negative": 0}), np.isposinf(x))
        np.testing.assert_array_equal(run("IsInf", [x], {"detect_positive": 0}), np.isneginf(x))


# -- activations: ONNX defaults, every float type ----------------------------------------------------

def _softplus(x):
    return np.logaddexp(0, x)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


SELU_A, SELU_G = 1.67326319217681884765625, 1.05070102214813232421875
ACTS = [
    ("Relu", {}, lambda x: np.maximum(x, 0)),
    ("LeakyRelu", {}, lambda x: np.where(x < 0, 0.01 * x, x)),
    ("LeakyRelu", {"alpha": 0.3}, lambda x: np.where(x < 0, 0.3 * x, x)),
    ("Elu", {}, lambda x: np.where(x < 0, np.expm1(x), x)),
    ("Elu", {"alpha": 0.5}, lambda x: np.where(x < 0, 0.5 * np.expm1(x), x)),
    ("Selu", {}, lambda x: np.where(x > 0, SELU_G * x, SELU_G * SELU_A * np.expm1(x))),
    ("Selu", {"alpha": 2.0, "gamma": 3.0}, lambda x: np.where(x > 0, 3 * x, 6 * np.expm1(x))),
    ("Celu", {}, lambda x: np.maximum(0, x) + np.minimum(0, np.expm1(x))),
    ("Celu", {"alpha": 2.0}, lambda x: np.maximum(0, x) + np.minimum(0, 2 * np.expm1(x / 2))),
    ("Softplus", {}, _softplus),
    ("Softsign", {}, lambda x: x / (1 + np.abs(x))),
    ("HardSigmoid", {}, lambda x: np.clip(0.2 * x + 0.5, 0, 1)),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, lambda x: np.clip(0.3 * x + 0.4, 0, 1)),
    ("HardSwish", {}, lambda x: x * np.clip(x / 6 + 0.5, 0, 1)),
    ("ThresholdedRelu", {}, lambda x: np.where(x > 1.0, x, 0)),
    ("ThresholdedRelu", {"alpha": 0.5}, lambda x: np.where(x > 0.5, x, 0)),
    ("Gelu", {}, lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2)))),
    ("Gelu", {"approximate": "tanh"},
     lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))),
    ("Mish", {}, lambda x: x * np.tanh(_softplus(x))),
    ("Swish", {}, lambda x: x * _sigmoid(x)),
    ("Swish", {"alpha": 0.7}, lambda x: x * _sigmoid(0.7 * x)),
    ("Sigmoid", {}, _sigmoid),
    ("Shrink", {}, lambda x: np.where(x < -0.5, x, np.where(x > 0.5, x, 0))),
    ("Shrink", {"bias": 1.5, "lambd": 1.0}, lambda x: np.where(x < -1, x + 1.5, np.where(x > 1, x - 1.5, 0))),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op,attrs,ref", ACTS, ids=[f"{a[0]}{a[1] or ''}" for a in ACTS])
def test_activation(op, attrs, ref, dtype):
    x = float_input(dtype, n=1000, low=-25, high=25)[:-3]  # drop ±inf, NaN edge semantics vary
    x = x[np.isfinite(x)]
    with np.errstate(all="ignore"):
        want = ref(x.astype(np.float64)).astype(dtype)
    close(run(op, [x], attrs), want, dtype, atol=1e-6 if dtype != "float16" else 2e-3)


@pytest.mark.parametrize("dtype", ["int8", "int32", "uint16", "int64"])
def test_shrink_and_relu_on_integers(dtype):
    x = rand((4, 9), dtype)
    want = np.where(x < -2, x + 1, np.where(x > 2, x - 1, 0)).astype(dtype)
    close(run("Shrink", [x], {"bias": 1.0, "lambd": 2.0}), want, dtype)


def test_activation_nan_passes_through():
    x = np.array([np.nan, -np.nan, 1.0], np.float32)
    for op in ("Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Softsign", "HardSwish", "Mish", "Sigmoid", "Gelu"):
        assert np.isnan(run(op, [x])[:2]).all(), op


# -- Clip --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", NUMERIC)
def test_clip(dtype):
    x = rand((3, 1, 7), dtype)
    lo, hi = np.array(-2, dtype) if dtype[0] != "u" else np.array(3, dtype), np.array(5, dtype)
    close(run("Clip", [x, lo, hi]), np.minimum(np.maximum(x, lo), hi), dtype)   # runtime bounds
    close(run("Clip", [x, None], consts={"hi": hi}), np.minimum(x, hi), dtype)  # min absent
    close(run("Clip", [x], consts={"lo": lo}), np.maximum(x, lo), dtype)       # max absent
    close(run("Clip", [x]), x, dtype)                                          # no bounds


def test_clip_float_nan_min_above_max_and_attributes():
    x = np.array([np.nan, -3, 0, 3, 9], np.float32)
    got = run("Clip", [x, np.float32(2), np.float32(1)])
    np.testing.assert_array_equal(got, [np.nan, 1, 1, 1, 1])  # np.clip: max wins
    got = run("Clip", [x], {"min": -1.0, "max": 2.0})          # engine.nn's attribute form
    np.testing.assert_array_equal(got, [np.nan, -1, 0, 2, 2])


# -- binary arithmetic with broadcasting -------------------------------------------------------------

SHAPES = [((3, 4), (3, 4)), ((2, 3, 5), (5,)), ((5, 1), (1, 6)), ((1,), (2, 3)), ((2, 1, 3), (4, 1)),
          ((), (3, 1)), ((2, 0, 3), (3,)), ((1, 1, 1), (7, 5, 3)), ((4, 1, 3, 1), (1, 2, 1, 5))]


def _ref_binary(op, a, b, dtype):
    if op == "Div" and np.dtype(dtype).kind in "iu":
        q = np.trunc(a.astype(np.float64) / b.astype(np.float64))
        return q.astype(dtype)
    f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Max": np.maximum,
         "Min": np.minimum}[op]
    with np.errstate(all="ignore"):
        if dtype == "float16":
            return f(a.astype(np.float32), b.astype(np.float32)).astype(dtype)
        return f(a, b).astype(dtype)


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
def test_binary(op, dtype):
    for k, (sa, sb) in enumerate(SHAPES):
        a, b = rand(sa, dtype, seed=k), rand(sb, dtype, seed=k + 50)
        if op == "Div":
            b = np.where(b == 0, np.ones_like(b), b)
        close(run(op, [a, b]), _ref_binary(op, a, b, dtype), dtype)
        close(run(op, [a], consts={"c": b}), _ref_binary(op, a, b, dtype), dtype)


def test_integer_arithmetic_wraps_and_truncates():
    a = np.array([-7, 7, -7, 7, -128, 127], np.int8)
    b = np.array([2, 2, -2, -2, -1, 1], np.int8)
    np.testing.assert_array_equal(run("Div", [a, b]), [-3, 3, 3, -3, -128, 127])
    np.testing.assert_array_equal(run("Add", [a, b]), (a.astype(int) + b).astype(np.int8))
    big = np.array([2**62, -2**63], np.int64)
    np.testing.assert_array_equal(run("Mul", [big, np.array([4, -1], np.int64)]), [0, -2**63])
    u = np.array([65535, 3], np.uint16)
    np.testing.assert_array_equal(run("Mul", [u, u]), (u.astype(np.uint64) ** 2).astype(np.uint16))


def _int32_ref(op, fmod, a, b):
    a, b = a.astype(np.int64), b.astype(np.int64)
    if op == "Div":  # truncation; INT_MIN / -1 = 2^31 wraps to INT_MIN
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(np.int32)
    return (np.fmod if fmod else np.mod)(a, b).astype(np.int32)


@pytest.mark.parametrize("op,fmod", [("Div", 0), ("Mod", 0), ("Mod", 1)])
def test_int32_division_on_every_isa(op, fmod, isa):  # AVX2 divides int32 in float64
    r = np.random.default_rng(5)
    a = r.integers(-2**31, 2**31, (3, 37), dtype=np.int64).astype(np.int32)
    b = r.integers(-2**31, 2**31, (37,), dtype=np.int64).astype(np.int32)
    a[0, :4], b[:9] = [-2**31, -2**31, 7, -7], [-1, 1, -1, 3, 2, -2, 3, -3, 1]
    b[b == 0] = 5
    attrs = {"fmod": fmod} if op == "Mod" else {}
    for divisor in (b, b[5:6]):  # a row, a broadcast scalar
        np.testing.assert_array_equal(run(op, [a, divisor], attrs), _int32_ref(op, fmod, a, divisor))


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("fmod", [0, 1])
def test_mod(dtype, fmod):
    a, b = rand((4, 5), dtype, seed=1), rand((5,), dtype, seed=2)
    b = np.where(b == 0, np.ones_like(b), b)
    ref = np.fmod if fmod else np.mod
    with np.errstate(all="ignore"):
        want = ref(a.astype(np.float32), b.astype(np.float32)).astype(dtype) if dtype == "float16" else ref(a, b)
    close(run("Mod", [a, b], {"fmod": fmod}), want, dtype, atol=2e-3 if dtype == "float16" else None)


def test_float_mod_edge_cases():
    x = np.array([0.0, -0.0, np.inf, 5.0, -5.0, 5.0, np.nan, 3.0], np.float64)
    y = np.array([2.0, 2.0, 3.0, 0.0, np.inf, -np.inf, 1.0, np.nan], np.float64)
    with np.errstate(all="ignore"):
        want = np.mod(x, y)
    got = run("Mod", [x, y])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("base,exp", [("float32", "float32"), ("float16", "float16"), ("float64", "float64"),
                                      ("float32", "int32"), ("float32", "int64"), ("float32", "uint8"),
                                      ("float64", "float32"), ("int32", "int32"), ("int64", "int64"),
                                      ("int32", "float32"), ("int64", "float32"), ("int32", "int64")])
def test_pow(base, exp):
    a = rand((3, 4), base, low=0.1, high=3) if base[0] == "f" else np.abs(rand((3, 4), base)) % 8 + 1
    e = rand((4,), exp, low=-2, high=3) if exp[0] == "f" else np.abs(rand((4,), exp)) % 5
    if base[0] == "f":
        want = np.power(a.astype(np.float64), e.astype(np.float64)).astype(base)
    elif exp[0] == "f":
        want = np.power(a.astype(np.float64), e.astype(np.float64)).astype(base)
    else:
        want = np.power(a, e.astype(base))
    close(run("Pow", [a, e]), want, base, rtol=1e-3 if base == "float16" else 1e-6)


def test_integer_pow_negative_exponent_truncates():
    a = np.array([1, -1, -1, 2, 0, 5], np.int64)
    e = np.array([-3, -3, -2, -1, 3, 0], np.int64)
    np.testing.assert_array_equal(run("Pow", [a, e]), [1, -1, 1, 0, 0, 1])


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int32", "int64", "uint32"])
def test_prelu(dtype):
    x, s = rand((2, 3, 4, 5), dtype), rand((3, 1, 1), dtype, seed=3)
    want = np.where(x < 0, x * s, x).astype(dtype)
    close(run("PRelu", [x, s]), want, dtype)
    with pytest.raises(errors.ShapeError):
        run("PRelu", [rand((3,), dtype), rand((2, 3), dtype)])  # slope must broadcast to x


# -- variadic ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int32", "uint8"])
def test_variadic(op, dtype):
    if op == "Mean" and dtype[0] != "f":
        pytest.skip("Mean is float only")
    arrays = [rand((3,), dtype, 1), rand((2, 1), dtype, 2), rand((1, 3), dtype, 3)]
    f = {"Sum": np.add, "Mean": np.add, "Max": np.maximum, "Min": np.minimum}[op]
    for n in (1, 2, 3):
        acc = arrays[0].astype(np.float64)
        for v in arrays[1:n]:
            acc = f(acc, v)
        if op == "Mean":
            acc = acc / n
        close(run(op, arrays[:n]), np.asarray(acc).astype(dtype), dtype)


def test_max_min_propagate_nan():
    a = np.array([np.nan, 1, 2], np.float32)
    b = np.array([0, np.nan, 1], np.float32)
    for op in ("Max", "Min"):
        for dt in ("float32", "float16", "float64"):
            assert np.isnan(run(op, [a.astype(dt), b.astype(dt)])[:2]).all(), (op, dt)


# -- comparisons, logic, Where ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", NUMERIC + ["bool"])
def test_compare(dtype):
    ops = {"Equal": np.equal, "Less": np.less, "Greater": np.greater, "LessOrEqual": np.less_equal,
           "GreaterOrEqual": np.greater_equal}
    for k, (sa, sb) in enumerate(SHAPES[:6]):
        a, b = rand(sa, dtype, seed=k), rand(sb, dtype, seed=k + 9)
        if dtype != "bool":
            b.flat[: min(b.size, 2)] = a.flat[: min(a.size, b.size, 2)]  # some equal pairs
        for op, ref in ops.items():
            if dtype == "bool" and op != "Equal":
                continue
            np.testing.assert_array_equal(run(op, [a, b]), ref(a, b), err_msg=op)


def test_compare_nan():
    a = np.array([np.nan, 1, np.nan], np.float16)
    b = np.array([np.nan, np.nan, 1], np.float16)
    for op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"):
        assert not run(op, [a, b]).any()


@pytest.mark.parametrize("op,ref", [("And", np.logical_and), ("Or", np.logical_or), ("Xor", np.logical_xor)])
def test_logic(op, ref):
    for k, (sa, sb) in enumerate(SHAPES):
        a, b = rand(sa, "bool", seed=k), rand(sb, "bool", seed=k + 1)
        np.testing.assert_array_equal(run(op, [a, b]), ref(a, b))


@pytest.mark.parametrize("dtype", ["bool", "int8", "float16", "float32", "int64", "float64", "uint32"])
def test_where(dtype):
    cases = [((3, 4), (3, 4), (3, 4)), ((4,), (3, 1), ()), ((2, 1, 5), (1, 3, 1), (5,)), ((1,), (0, 2), (2,)),
             ((3, 1, 1, 2), (1, 4, 1, 1), (1, 1, 5, 2))]
    for k, (sc, sx, sy) in enumerate(cases):
        c, x, y = rand(sc, "bool", seed=k), rand(sx, dtype, seed=k + 1), rand(sy, dtype, seed=k + 2)
        close(run("Where", [c, x, y]), np.where(c, x, y), dtype)


# -- Cast ---------------------------------------------------------------------------------------------------

CAST_TYPES = NUMERIC + ["bool"]


@pytest.mark.parametrize("src", CAST_TYPES)
def test_cast_every_pair(src):
    # Values every type holds: small non-negative integers (and fractions for float -> int
    # truncation); signed sources also cast negatives to signed and float targets.
    base = np.array([0, 1, 2, 7, 100, 3.75, 0.5, 99.5, 1.25], np.float64)
    x = (base if src[0] == "f" else np.floor(base)).astype(src) if src != "bool" else np.array([0, 1, 1, 0], bool)
    for dst in CAST_TYPES:
        got = run("Cast", [x], {"to": engine.dtypes.code(dst)})
        want = (x != 0) if dst == "bool" else x.astype(dst)
        close(got, np.asarray(want), dst)
        close(run("CastLike", [x, np.zeros(1, dst)]), np.asarray(want), dst)
    if src[0] in "fi":
        neg = np.array([-1, -2.5, -100.75, -0.25], src) if src[0] == "f" else np.array([-1, -2, -100], src)
        for dst in ["float32", "float64", "int8", "int16", "int32", "int64", "bool"]:
            want = (neg != 0) if dst == "bool" else neg.astype(dst)
            close(run("Cast", [neg], {"to": engine.dtypes.code(dst)}), np.asarray(want), dst)


def test_cast_float16_rounding_and_specials(isa):  # F16C and the portable conversion
    x = np.concatenate([np.array([65504, 65519.99, 65520, 1e-8, 3e-5, 6.1e-5, -0.0, np.inf, -np.inf, np.nan]),
                        np.random.default_rng(0).standard_normal(301) * 100]).astype(np.float32)
    got = run("Cast", [x], {"to": 10})
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got.view(np.uint16), x.astype(np.float16).view(np.uint16))
    back = run("Cast", [got], {"to": 1})
    np.testing.assert_array_equal(back, got.astype(np.float32))
    d = x.astype(np.float64)
    with np.errstate(over="ignore"):
        close(run("Cast", [d], {"to": 10}), d.astype(np.float16), "float16")


def test_cast_bfloat16_inside_a_graph():
    x = np.array([1.0, 1.00390625, 1.01171875, -3.14159, 1e30, np.nan], np.float32)
    graph = Graph([Value("x", x.shape)], [Value("y", None)],
                  [Node("Cast", ["x"], ["h"], {"to": 16}), Node("Cast", ["h"], ["y"], {"to": 1})])
    got = engine.Model(graph).run({"x": x})["y"]
    bits = x.view(np.uint32)
    want = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32)
    np.testing.assert_array_equal(got[:5], want[:5])
    assert np.isnan(got[5])


# -- every kernel path, threads, in place --------------------------------------------------------------------

@pytest.mark.parametrize("op", ["Sign", "Round", "Floor", "Ceil", "Softsign", "Mish", "HardSwish", "Selu",
                                "Celu", "ThresholdedRelu", "Shrink", "Swish", "Sin", "Cos"])
def test_float_kernels_on_every_isa(op, isa):
    attrs = {"alpha": 0.7} if op == "Swish" else {}
    x = float_input("float32", n=1000, low=-30, high=30)
    x16 = x.astype(np.float16)
    ref = {a[0]: a[2] for a in ACTS if not a[1]}
    ref.update({"Swish": lambda v: v * _sigmoid(0.7 * v)})
    fn = ref.get(op) or UNARY_F[op]
    with np.errstate(all="ignore"):
        close(run(op, [x], attrs), fn(x.astype(np.float64)).astype(np.float32), "float32", atol=1e-6)
        close(run(op, [x16], attrs), fn(x16.astype(np.float64)).astype(np.float16), "float16", atol=2e-3)


@pytest.mark.parametrize("op,ref", [("Sin", np.sin), ("Cos", np.cos)])
def test_sin_cos_over_the_whole_range(op, ref, isa):  # vector form to 8192, libm beyond
    x = np.concatenate([np.linspace(-9000, 9000, 4001), [8191.99, 8192.01, -8192.5, 1e30, np.pi * 1e3]])
    x = x.astype(np.float32)
    np.testing.assert_allclose(run(op, [x]), ref(x.astype(np.float64)), atol=2e-6, rtol=0)


def test_large_broadcasts_split_over_threads(threads):
    a = rand((3, 70000), "float16", seed=1)
    b = rand((3, 1), "float16", seed=2)
    close(run("Sub", [a, b]), (a.astype(np.float32) - b).astype(np.float16), "float16")
    i = rand((2, 50001), "int32", seed=3)
    j = rand((50001,), "int32", seed=4)
    j[j == 0] = 1
    close(run("Mod", [i, j]), np.mod(i, j), "int32")
    c = rand((1, 50001), "bool", seed=5)
    np.testing.assert_array_equal(run("Where", [c, i[:1, :1], j]), np.where(c, i[:1, :1], j))
    x = rand((200003,), "float64", seed=6)
    close(run("Cast", [x], {"to": 10}), x.astype(np.float16), "float16")
    close(run("Sin", [x]), np.sin(x), "float64")


def test_in_place_chain_keeps_values():
    x = rand((5, 6), "int16")
    graph = Graph([Value("x", x.shape, "int16")], [Value("y", None)],
                  [Node("Neg", ["x"], ["a"]), Node("Abs", ["a"], ["b"]), Node("Cast", ["b"], ["c"], {"to": 10}),
                   Node("Sqrt", ["c"], ["d"]), Node("Add", ["d", "d"], ["y"])])
    got = engine.Model(graph).run({"x": x})["y"]
    close(got, (2 * np.sqrt(np.abs(x).astype(np.float16).astype(np.float32))).astype(np.float16), "float16")


# -- fused activations keep the ONNX defaults -------------------------------------------------------------

@pytest.mark.parametrize("op,attrs,inputs", [("LeakyRelu", {}, []), ("HardSigmoid", {}, []), ("Elu", {}, []),
                                             ("Selu", {}, []), ("Gelu", {"approximate": "tanh"}, []),
                                             ("Clip", {}, ["lo", "hi"]), ("Swish", {"alpha": 2.0}, [])])
def test_fused_activation_matches_standalone(op, attrs, inputs):
    x = rand((4, 6), "float32", low=-5, high=5)
    w = rand((6, 3), "float32", seed=1)
    consts = {"w": w, "lo": np.float32(-0.5), "hi": np.float32(0.7)}
    graph = Graph([Value("x", x.shape)], [Value("y", None)],
                  [Node("Dense", ["x", "w"], ["d"]), Node(op, ["d", *inputs], ["y"], attrs)], consts)
    fused = engine.Model(graph, optimize=True).run({"x": x})["y"]
    plain = engine.Model(graph, optimize=False).run({"x": x})["y"]
    np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-6)


# -- plan-time evaluation agrees with the kernels ----------------------------------------------------------

@pytest.mark.parametrize("op,attrs", [("Div", {}), ("Mod", {}), ("Mod", {"fmod": 1}), ("Sub", {}), ("Max", {}),
                                      ("Less", {}), ("Equal", {})])
def test_evaluate_matches_kernel(op, attrs):
    a = np.array([-7, 7, -7, 7, 0, -1, 9], np.int64)
    b = np.array([2, 2, -2, -2, 3, 5, 9], np.int64)
    node = Node(op, ["a", "b"], ["y"], attrs)
    ev = OPS[op].evaluate(node, [Tensor(a.shape, "int64", a), Tensor(b.shape, "int64", b)])[0]
    np.testing.assert_array_equal(ev, run(op, [a, b], attrs))


def test_constant_shape_arithmetic_is_folded():
    a = np.array([-7, 9], np.int64)
    graph = Graph([Value("x", (2,), "int64")], [Value("y", None)],
                  [Node("Div", ["c", "d"], ["q"]), Node("Cast", ["q"], ["qf"], {"to": 1}),
                   Node("Where", ["m", "qf", "e"], ["z"]), Node("Cast", ["x"], ["xf"], {"to": 1}),
                   Node("Add", ["z", "xf"], ["y"])],
                  {"c": a, "d": np.array([2, -2], np.int64), "m": np.array([True, False]),
                   "e": np.array([5.0, 5.0], np.float32)})
    got = engine.Model(graph).run({"x": np.array([1, 1], np.int64)})["y"]
    np.testing.assert_array_equal(got, [-2.0, 6.0])


# -- bad input: a clear EngineError naming the node, never a crash -----------------------------------------

def test_bad_inputs_are_clear_errors():
    f, i = np.ones((2, 3), np.float32), np.ones((2, 3), np.int32)
    with pytest.raises(errors.DTypeError, match="Sin"):
        run("Sin", [i])
    with pytest.raises(errors.DTypeError, match="different element types"):
        run("Add", [f, i])
    with pytest.raises(errors.ShapeError, match="do not broadcast"):
        run("Mul", [f, np.ones((4,), np.float32)])
    with pytest.raises(errors.DTypeError, match="bool"):
        run("And", [i, i])
    with pytest.raises(errors.DTypeError, match="condition must be bool"):
        run("Where", [f, f, f])
    with pytest.raises(errors.GraphError, match="fmod"):
        run("Mod", [i, i], {"fmod": 2})
    with pytest.raises(errors.GraphError, match="approximate"):
        run("Gelu", [f], {"approximate": "fast"})
    with pytest.raises(errors.GraphError, match="alpha"):
        run("LeakyRelu", [f], {"alpha": "big"})
    with pytest.raises(errors.UnsupportedOpError, match="17"):
        run("Cast", [f], {"to": 17})  # float8: not an engine type
    with pytest.raises(errors.ShapeError, match="scalar"):
        run("Clip", [f, np.zeros(2, np.float32)])
    with pytest.raises(errors.DTypeError, match="Neg"):
        run("Neg", [np.ones(3, np.uint8)])


@pytest.mark.parametrize("op,attrs", [("Div", {}), ("Mod", {}), ("Mod", {"fmod": 1})])
def test_integer_division_by_zero_is_an_error(op, attrs):
    a = rand((3, 5), "int32")
    b = np.ones((5,), np.int32)
    b[3] = 0
    with pytest.raises(errors.EngineError, match="division by zero"):
        run(op, [a, b], attrs)
    assert run(op, [a, np.ones((5,), np.int32)], attrs).shape == (3, 5)  # the model still works
    with pytest.raises(errors.EngineError, match="division by zero"):
        run(op, [a], attrs, consts={"b": b})
    node = Node(op, ["a", "b"], ["y"], attrs)
    with pytest.raises(errors.ShapeError, match="division by zero"):  # plan-time evaluation
        OPS[op].evaluate(node, [Tensor(a.shape, "int32", a), Tensor(b.shape, "int32", b)])


def test_float_division_by_zero_is_ieee():
    got = run("Div", [np.array([1, -1, 0], np.float16), np.zeros(3, np.float16)])
    assert got[0] == np.inf and got[1] == -np.inf and np.isnan(got[2])


def test_opset6_broadcast_axis_from_onnx(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    a = rand((2, 3, 4, 5), "float32")
    b = rand((3, 4), "float32", seed=1)
    nodes = [helper.make_node("Add", ["a", "b"], ["s"], broadcast=1, axis=1),
             helper.make_node("Mul", ["s", "c"], ["y"], broadcast=1)]  # suffix-aligned
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, a.shape),
                                           helper.make_tensor_value_info("b", TensorProto.FLOAT, b.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [helper.make_tensor("c", TensorProto.FLOAT, [5], [1, 2, 3, 4, 5])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)]), str(path))
    got = engine.load(path).run(None, {"a": a, "b": b})[0]
    np.testing.assert_allclose(got, (a + b[:, :, None]) * np.arange(1, 6, dtype=np.float32), rtol=1e-6)


def test_opset6_clip_keeps_the_input_type(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = rand((3, 4), "float64", low=-3, high=3)
    graph = helper.make_graph([helper.make_node("Clip", ["x"], ["y"], min=-1.0, max=0.5)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.DOUBLE, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)]), str(path))
    np.testing.assert_array_equal(engine.load(path).run(None, {"x": x})[0], np.clip(x, -1.0, 0.5))


def test_pow_with_a_constant_exponent_of_another_type():
    x = rand((2, 5), "float16", low=0.5, high=2)
    got = run("Pow", [x], consts={"e": np.array([2, 3, 0, -1, 1], np.int64)})
    close(got, np.power(x.astype(np.float32), [2, 3, 0, -1, 1]).astype(np.float16), "float16")
    i = np.arange(1, 11, dtype=np.int32).reshape(2, 5)
    np.testing.assert_array_equal(run("Pow", [i], consts={"e": np.float32(0.5)}),
                                  np.sqrt(i).astype(np.int32))
