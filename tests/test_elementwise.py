"""Activations and broadcasting binary ops (engine._C) vs torch / numpy, on every ISA path."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import engine
from engine import _C


EDGES = np.array([0.0, -0.0, 1e-8, -1e-8, 1e-30, -1e-30, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0,
                  10.0, -10.0, 20.0, -20.0, 50.0, -50.0, 88.0, -88.0, 100.0, -100.0,
                  1e4, -1e4, 1e30, -1e30], np.float32)
SIZES = [0, 1, 15, 16, 17, 1000, 100003]


def _inputs(n, seed=0, positive=False):
    rng = np.random.default_rng(seed + n)
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    k = min(n, EDGES.size)
    x[:k] = EDGES[:k]
    if n > 2 * EDGES.size:  # edge values in the vector body and in the tail too
        x[-k:] = EDGES[:k]
        x[n // 2:n // 2 + k] = EDGES[:k]
    if positive:
        x = np.abs(x)
    return x


def _t(x):
    return torch.from_numpy(x.astype(np.float64))


# name -> (alpha, beta, reference on float64 torch tensors, domain, rtol, atol)
ACTS = {
    "none": (0, 0, lambda t: t, None, 0, 0),
    "identity": (0, 0, lambda t: t, None, 0, 0),
    "relu": (0, 0, F.relu, None, 0, 0),
    "leaky_relu": (0.1, 0, lambda t: F.leaky_relu(t, 0.1), None, 1e-6, 0),
    "sigmoid": (0, 0, torch.sigmoid, None, 2e-6, 1e-30),
    "tanh": (0, 0, torch.tanh, None, 2e-6, 1e-30),
    "gelu": (0, 0, F.gelu, None, 2e-6, 1e-6),
    "gelu_tanh": (0, 0, lambda t: F.gelu(t, approximate="tanh"), None, 2e-6, 1e-6),
    "elu": (1.3, 0, lambda t: F.elu(t, 1.3), None, 2e-6, 1e-30),
    "selu": (0, 0, F.selu, None, 2e-6, 1e-30),
    "silu": (0, 0, F.silu, None, 2e-6, 1e-30),
    "softplus": (0, 0, F.softplus, None, 2e-6, 1e-30),
    "hard_sigmoid": (1 / 6, 0.5, F.hardsigmoid, None, 1e-6, 1e-7),
    "clip": (-2.5, 6.0, lambda t: torch.clamp(t, -2.5, 6.0), None, 0, 0),
    "exp": (0, 0, torch.exp, None, 2e-6, 1e-37),
    "log": (0, 0, torch.log, "positive", 2e-6, 1e-7),
    "sqrt": (0, 0, torch.sqrt, "positive", 1e-6, 0),
    "neg": (0, 0, torch.neg, None, 0, 0),
    "abs": (0, 0, torch.abs, None, 0, 0),
    "reciprocal": (0, 0, torch.reciprocal, None, 1e-6, 0),
    "square": (0, 0, torch.square, None, 1e-6, 0),
    "erf": (0, 0, torch.erf, None, 2e-6, 1e-6),
}


def test_every_act_is_covered():
    assert set(ACTS) == set(_C.Act.__members__)


def _check(got, x, name):
    alpha, beta, ref, _, rtol, atol = ACTS[name]
    want = ref(_t(x)).numpy()
    with np.errstate(over="ignore"):
        want32 = want.astype(np.float32)  # the best a float32 kernel can do (incl. overflow)
    # Compare with the float64 reference where it is representable, else with its
    # float32 rounding (inf on overflow, 0 / denormal on underflow).
    fin = np.isfinite(want32)
    assert np.array_equal(np.isnan(got), np.isnan(want32)), f"{name}: NaN mismatch"
    assert np.array_equal(got[~fin], want32[~fin]), f"{name}: inf mismatch"
    err = np.abs(got[fin].astype(np.float64) - want[fin])
    tol = atol + rtol * np.abs(want[fin]) + np.abs(want32[fin] - want[fin])
    bad = err > tol
    if bad.any():
        i = np.flatnonzero(bad)[:5]
        xf = x[fin]
        raise AssertionError(f"{name}: {bad.sum()} bad, x={xf[i]} got={got[fin][i]} want={want[fin][i]}")


@pytest.mark.parametrize("name", sorted(ACTS))
@pytest.mark.parametrize("n", SIZES)
def test_activation(isa, name, n):
    alpha, beta, _, domain, _, _ = ACTS[name]
    x = _inputs(n, positive=domain == "positive")
    y = np.full_like(x, np.nan)
    _C.activation(y, x, getattr(_C.Act, name), alpha, beta)
    _check(y, x, name)


@pytest.mark.parametrize("name", sorted(ACTS))
def test_activation_in_place(isa, name):
    alpha, beta, _, domain, _, _ = ACTS[name]
    x = _inputs(1003, seed=7, positive=domain == "positive")
    y = x.copy()
    _C.activation(y, y, getattr(_C.Act, name), alpha, beta)
    _check(y, x, name)


def test_activation_special_values(isa):
    x = np.array([np.inf, -np.inf, np.nan, 0.0, 89.0, -89.0, -104.0, -200.0, 1e-40, -1e-40],
                 np.float32)
    for name in ["sigmoid", "tanh", "softplus", "exp", "erf", "elu", "gelu"]:
        y = np.empty_like(x)
        _C.activation(y, x, getattr(_C.Act, name), ACTS[name][0], ACTS[name][1])
        with np.errstate(all="ignore"):
            want = ACTS[name][2](_t(x)).numpy().astype(np.float32)
        np.testing.assert_allclose(y, want, rtol=2e-6, atol=1e-38, err_msg=name)
    xp = np.array([0.0, -0.0, -1.0, np.inf, np.nan, 1e-40, 1e-45, 3e38], np.float32)
    y = np.empty_like(xp)
    _C.activation(y, xp, _C.Act.log)
    want = torch.log(_t(xp)).numpy().astype(np.float32)
    np.testing.assert_allclose(y, want, rtol=2e-6)


def test_activation_exp_accuracy(isa):
    x = np.linspace(-87, 88, 200001, dtype=np.float32)
    y = np.empty_like(x)
    _C.activation(y, x, _C.Act.exp)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(y - want) / want) < 2e-7


def test_activation_short_segments_in_rows(isa):
    # Epilogue-style use: many short calls on views into one buffer must not touch neighbours.
    x = _inputs(4096, seed=3)
    y = np.zeros_like(x)
    for start, n in [(0, 10), (10, 1), (11, 33), (44, 512), (556, 7)]:
        _C.activation(y[start:start + n], x[start:start + n], _C.Act.gelu)
    assert np.all(y[563:] == 0)
    want = F.gelu(_t(x[:563])).numpy()
    np.testing.assert_allclose(y[:563], want, rtol=2e-6, atol=1e-6)


def test_activation_threads(set_threads):
    x = _inputs(300007, seed=5)
    want = np.empty_like(x)
    set_threads(1)
    _C.activation(want, x, _C.Act.silu)
    for n in (2, 3, 4):
        set_threads(n)
        y = np.empty_like(x)
        _C.activation(y, x, _C.Act.silu)
        np.testing.assert_array_equal(y, want)


def test_activation_errors():
    x = np.zeros(10, np.float32)
    with pytest.raises(engine.EngineError):
        _C.activation(np.zeros(10, np.float64), x, _C.Act.relu)
    with pytest.raises(engine.EngineError):
        _C.activation(np.zeros(10, np.float32), x.astype(np.float64), _C.Act.relu)
    with pytest.raises(engine.EngineError):
        _C.activation(np.zeros(9, np.float32), x, _C.Act.relu)
    with pytest.raises(engine.EngineError):
        _C.activation(np.zeros(20, np.float32)[::2], x, _C.Act.relu)  # not contiguous
    ro = np.zeros(10, np.float32)
    ro.flags.writeable = False
    with pytest.raises(engine.EngineError):
        _C.activation(ro, x, _C.Act.relu)


# ------------------------------------------------------------------------------- binary

OPS = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "max": np.maximum, "min": np.minimum, "pow": np.power,
}

SHAPES = [
    ((), ()),
    ((7,), ()),
    ((), (7,)),
    ((1000,), (1000,)),
    ((100003,), (100003,)),
    ((100003,), (1,)),
    ((64, 1000), (1000,)),          # row broadcast (bias add)
    ((64, 1000), (64, 1)),          # column broadcast
    ((64, 1), (64, 1000)),
    ((1000,), (64, 1000)),
    ((3, 1, 5), (1, 4, 1)),
    ((4,), (2, 3, 4)),              # rank mismatch
    ((2, 3, 4), (3, 1)),
    ((2, 1, 4), (2, 3, 1)),
    ((1, 1, 17), (5, 3, 17)),
    ((5, 1, 17, 1), (1, 3, 1, 9)),
    ((2, 3, 4, 5, 6), (2, 1, 4, 1, 6)),
    ((1,), (1, 1, 1)),
    ((0, 3), (3,)),
    ((3, 0), (3, 1)),
    ((300, 500), (300, 500)),       # threaded, same shape
    ((300, 500), (500,)),           # threaded row broadcast
    ((300, 500), (300, 1)),         # threaded column broadcast
    ((50, 40, 33), (50, 1, 33)),    # threaded general
    ((2, 200000), (2, 1)),          # few long rows: split into column chunks
    ((3, 2, 70000), (1, 2, 70000)),
]


def _operands(sa, sb, name, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    if name == "pow":
        a = np.abs(a) + 0.1
        b = (b * 2).astype(np.float32)
    if name == "div":
        b = np.where(np.abs(b) < 0.1, np.float32(0.5), b).astype(np.float32)
    return np.asarray(a, np.float32), np.asarray(b, np.float32)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("sa,sb", SHAPES, ids=[f"{a}-{b}" for a, b in SHAPES])
def test_binary(isa, name, sa, sb):
    a, b = _operands(sa, sb, name, seed=len(sa) * 31 + len(sb))
    want = OPS[name](a, b)
    out = np.full(want.shape, np.nan, np.float32)
    _C.binary(out, a, b, getattr(_C.BinaryOp, name))
    rtol = 2e-6 if name == "pow" else 0
    np.testing.assert_allclose(out, want, rtol=rtol, atol=0)


@pytest.mark.parametrize("exponent", [2.0, 1.0, 3.0, -1.0, 0.5, 0.0, -2.5])
def test_binary_pow_scalar_exponent(isa, exponent):
    a = np.random.default_rng(0).uniform(0.1, 3, 1000).astype(np.float32)
    b = np.array(exponent, np.float32)
    out = np.empty_like(a)
    _C.binary(out, a, b, _C.BinaryOp.pow)
    np.testing.assert_allclose(out, np.power(a, b), rtol=1e-6)


def test_binary_nan_propagation(isa):
    a = np.array([np.nan, 1.0, np.nan, 2.0] * 5, np.float32)
    b = np.array([1.0, np.nan, np.nan, 3.0] * 5, np.float32)
    for name in ("max", "min", "add"):
        out = np.empty_like(a)
        _C.binary(out, a, b, getattr(_C.BinaryOp, name))
        np.testing.assert_array_equal(out, OPS[name](a, b))


def test_binary_in_place(isa):
    a = np.random.default_rng(1).standard_normal((37, 101)).astype(np.float32)
    b = np.random.default_rng(2).standard_normal(101).astype(np.float32)
    want = a + b
    _C.binary(a, a, b, _C.BinaryOp.add)
    np.testing.assert_array_equal(a, want)


def test_binary_threads(set_threads):
    for sa, sb in [((513, 1001), (513, 1)), ((2, 300001), (2, 1)), ((3, 100003), (100003,))]:
        a = np.random.default_rng(1).standard_normal(sa).astype(np.float32)
        b = np.random.default_rng(2).standard_normal(sb).astype(np.float32)
        for n in (1, 2, 4):
            set_threads(n)
            out = np.empty_like(a)
            _C.binary(out, a, b, _C.BinaryOp.sub)
            np.testing.assert_array_equal(out, a - b)


def test_binary_errors():
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(engine.EngineError):
        _C.binary(np.zeros((2, 3), np.float32), a, np.zeros((4,), np.float32), _C.BinaryOp.add)
    with pytest.raises(engine.EngineError):
        _C.binary(np.zeros((2, 3), np.float32), a, np.zeros((2, 2), np.float32), _C.BinaryOp.add)
    with pytest.raises(engine.EngineError):
        _C.binary(np.zeros((2, 3), np.float32), a.astype(np.float64), a, _C.BinaryOp.add)
    with pytest.raises(engine.EngineError):
        _C.binary(np.zeros((2, 3), np.int32), a, a, _C.BinaryOp.add)
    with pytest.raises(engine.EngineError):
        _C.binary(np.zeros((3,), np.float32), a, a, _C.BinaryOp.add)  # output too small
    with pytest.raises(engine.EngineError):
        _C.binary(np.zeros((2, 3), np.float32), a.T, a, _C.BinaryOp.add)
