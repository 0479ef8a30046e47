"""Activation and softmax backward steps (act_grad, softmax_grad) against torch autograd:
float64 references on random inputs for every activation, every ISA, 1 and 2 threads;
NaN / inf placement against torch's own float32 backward; bad parameters refused."""

import numpy as np
import pytest

from engine import KernelError
from grad_helpers import Alias, assert_close, empty, run_step

torch = pytest.importorskip("torch")
F = torch.nn.functional

# code -> (torch forward, alpha, beta, uses y, input range)
ACTS = {
    "none": (0, lambda x: x, 0, 0, False, (-5, 5)),
    "relu": (1, F.relu, 0, 0, True, (-5, 5)),
    "leaky_relu": (2, lambda x: F.leaky_relu(x, 0.2), 0.2, 0, False, (-5, 5)),
    "sigmoid": (3, torch.sigmoid, 0, 0, True, (-12, 12)),
    "tanh": (4, torch.tanh, 0, 0, True, (-6, 6)),
    "gelu": (5, F.gelu, 0, 0, False, (-6, 6)),
    "gelu_tanh": (6, lambda x: F.gelu(x, approximate="tanh"), 0, 0, False, (-6, 6)),
    "elu": (7, lambda x: F.elu(x, 1.3), 1.3, 0, False, (-5, 5)),
    "selu": (8, F.selu, 0, 0, False, (-5, 5)),
    "silu": (9, F.silu, 0, 0, False, (-12, 12)),
    "softplus": (10, F.softplus, 0, 0, False, (-25, 25)),
    "hard_sigmoid": (11, F.hardsigmoid, 1 / 6, 0.5, False, (-5, 5)),
    "hard_sigmoid_k2": (11, lambda x: torch.clamp(0.2 * x + 0.5, 0, 1), 0.2, 0.5, False, (-5, 5)),
    "relu6": (12, lambda x: F.hardtanh(x, 0.0, 6.0), 0.0, 6.0, False, (-3, 9)),
    "exp": (13, torch.exp, 0, 0, True, (-8, 8)),
    "log": (14, torch.log, 0, 0, False, (0.05, 5)),
    "sqrt": (15, torch.sqrt, 0, 0, True, (0.05, 5)),
    "neg": (16, torch.neg, 0, 0, False, (-5, 5)),
    "abs": (17, torch.abs, 0, 0, False, (-5, 5)),
    "reciprocal": (18, torch.reciprocal, 0, 0, True, (0.2, 5)),
    "square": (19, torch.square, 0, 0, False, (-5, 5)),
    "erf": (20, torch.erf, 0, 0, False, (-4, 4)),
    "identity": (21, lambda x: x, 0, 0, False, (-5, 5)),
    "softsign": (64, F.softsign, 0, 0, False, (-5, 5)),
    "hard_swish": (65, F.hardswish, 0, 0, False, (-5, 5)),
    "mish": (66, F.mish, 0, 0, False, (-25, 25)),
}


def act_grad(code, dy, x, y, alpha=0.0, beta=0.0, out=None):
    out = empty(*dy.shape) if out is None else out
    return run_step("act_grad", [dy, x, y], [out], [dy.size, code], [alpha, beta])[0]


def torch_grad(fn, x, dy, dtype=torch.float64):
    t = torch.tensor(x, dtype=dtype, requires_grad=True)
    y = fn(t)
    y.backward(torch.tensor(dy, dtype=dtype))
    return y.detach().numpy().astype(np.float32), t.grad.numpy()


@pytest.mark.parametrize("name", list(ACTS))
def test_act_grad_vs_torch(name, isa, threads):
    code, fn, a, b, uses_y, (lo, hi) = ACTS[name]
    rng = np.random.default_rng(code)
    for n in (1, 7, 37, 1000, 70_001):  # a lone element, tails, vectors, split over threads
        x = rng.uniform(lo, hi, n).astype(np.float32)
        if n > 10 and lo < 0 < hi:
            x[:3] = (0.0, lo, hi)
        dy = rng.standard_normal(n).astype(np.float32)
        y, want = torch_grad(fn, x, dy)
        got = act_grad(code, dy, x if not uses_y else None, y if uses_y else None, a, b)
        assert_close(got, want, rtol=2e-5, atol=2e-6, what=f"{name} n={n}")


@pytest.mark.parametrize("name", list(ACTS))
def test_act_grad_nan_inf_like_torch(name, isa):
    """NaN in x or dy, ±inf, zeros, the boundaries: NaN exactly where torch's float32 backward
    has one, finite values equal."""
    code, fn, a, b, uses_y, _ = ACTS[name]
    special = [np.nan, 0.0, -0.0, np.inf, -np.inf, 1.0, -1.0, 3.0, -3.0, 6.0, 20.0, 30.0, -30.0, 100.0, 0.5]
    x = np.array(special * 2, np.float32)
    dy = np.ones_like(x)
    dy[len(special):] = np.nan  # second half: NaN gradients
    dy[0] = 2.0
    with np.errstate(all="ignore"):
        y, want = torch_grad(fn, x, dy, dtype=torch.float32)
    if name == "softsign":  # torch differentiates x / (1 + |x|) as a composite: inf/inf at ±inf
        want[np.isinf(x) & ~np.isnan(dy)] = 0.0
    got = act_grad(code, dy, x if not uses_y else None, y if uses_y else None, a, b)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{name}: NaN placement {x} {got} {want}")
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-5, atol=1e-6, err_msg=name)


def test_act_grad_in_place_and_checks():
    x = np.linspace(-2, 2, 33, dtype=np.float32)
    dy = np.linspace(1, 3, 33, dtype=np.float32)
    _, want = torch_grad(F.silu, x, dy)
    got = run_step("act_grad", [dy.copy(), x, None], [Alias(0)], [33, 9], [0, 0])[0]
    assert_close(got, want)
    with pytest.raises(KernelError, match="unknown activation code 40"):
        act_grad(40, dy, x, None)
    with pytest.raises(KernelError, match=r"needs its output y \(input 2\)"):
        act_grad(3, dy, x, None)
    with pytest.raises(KernelError, match=r"needs its input x \(input 1\)"):
        act_grad(9, dy, None, x)
    for code in (0, 16, 21):  # linear, neg, identity read neither x nor y
        got = act_grad(code, dy, None, None)
        np.testing.assert_array_equal(got, -dy if code == 16 else dy)
    with pytest.raises(KernelError, match="n < 0"):
        run_step("act_grad", [dy, x, None], [empty(33)], [-1, 9], [0, 0])


# -- softmax / log-softmax backward ----------------------------------------------------------


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("shape,axis", [((1, 1), 1), ((5, 10), 1), ((3, 37), 1), ((2, 5, 7), 1), ((4, 3, 19), 2),
                                        ((2, 300, 129), 1), ((600, 300), 1)])
def test_softmax_grad_vs_torch(shape, axis, log, isa, threads):
    rng = np.random.default_rng(len(shape) * 100 + axis)
    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    fn = (lambda t: torch.log_softmax(t, axis)) if log else (lambda t: torch.softmax(t, axis))
    y, want = torch_grad(fn, x, dy)
    outer = int(np.prod(shape[:axis]))
    inner = int(np.prod(shape[axis + 1:]))
    got = run_step("softmax_grad", [dy, y], [empty(*shape)], [outer, shape[axis], inner, int(log)])[0]
    assert_close(got, want, rtol=1e-4, atol=2e-6, what=f"{shape} axis {axis} log {log}")
    # in place over dy
    got2 = run_step("softmax_grad", [dy.copy(), y], [Alias(0)], [outer, shape[axis], inner, int(log)])[0]
    np.testing.assert_array_equal(got2, got)


def test_softmax_grad_nan_row():
    x = np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]], np.float32)
    dy = np.ones_like(x)
    y, want = torch_grad(lambda t: torch.softmax(t, 1), x, dy, dtype=torch.float32)
    got = run_step("softmax_grad", [dy, y], [empty(2, 3)], [1 * 2, 3, 1, 0])[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def test_finite_differences_float64():
    """Independent of torch: central differences of the float64 forward on tiny inputs."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 2, 9)
    dy = rng.standard_normal(9)
    fwd = {9: lambda v: v / (1 + np.exp(-v)), 7: lambda v: np.where(v > 0, v, 1.3 * np.expm1(v)),
           64: lambda v: v / (1 + np.abs(v)), 10: lambda v: np.log1p(np.exp(v))}
    for code, f in fwd.items():
        h = 1e-6
        want = dy * (f(x + h) - f(x - h)) / (2 * h)
        alpha = 1.3 if code == 7 else 0.0
        got = act_grad(code, dy.astype(np.float32), x.astype(np.float32), None, alpha)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=str(code))
