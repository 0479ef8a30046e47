"""pool2d_grad and global_pool_grad (NHWC) against torch autograd in float64: max pooling
(ties to the first maximum, NaN as torch), average pooling with count_include_pad both ways,
ceil mode, dilation, asymmetric padding (through an unfold reference), global average / max
(first maximum, or ties sharing as amax); every ISA, 1 and 2 threads; bad parameters."""

import numpy as np
import pytest

from engine import KernelError
from grad_helpers import assert_close, empty, run_step

torch = pytest.importorskip("torch")
F = torch.nn.functional

# N, H, W, C, KH, KW, sh, sw, dh, dw, pt, pl, pb, pr, ceil, count_include_pad
SYMMETRIC = {
    "2x2": (2, 8, 8, 3, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0),
    "3x3s1p1": (2, 7, 9, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0),
    "3x3s2_ceil": (3, 10, 9, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0),
    "3x3s2_ceil_cip": (3, 10, 9, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1),
    "5x3_cip": (1, 11, 12, 67, 5, 3, 2, 3, 1, 1, 2, 1, 2, 1, 0, 1),
    "big": (16, 26, 26, 32, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0),
    # disjoint windows (written directly): a last row/column no window reaches, gaps between
    "2x2_odd": (2, 9, 7, 5, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0),
    "2x2_odd_ceil_pad": (2, 9, 7, 5, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1),
    "gaps": (2, 11, 10, 18, 2, 2, 3, 3, 1, 1, 0, 0, 0, 0, 0, 0),
}
DILATED_MAX = {"dil": (2, 11, 10, 6, 3, 2, 1, 2, 2, 3, 1, 1, 1, 1, 0, 0),
               "dil_ceil": (2, 12, 12, 17, 2, 3, 3, 2, 2, 2, 1, 1, 1, 1, 1, 0),
               "dil_gaps": (2, 13, 12, 9, 2, 2, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0)}
# asymmetric padding and dilated averages: torch has no such pooling, so an unfold reference
UNFOLD = {"asym_max": (2, 9, 8, 7, 3, 3, 2, 2, 1, 1, 0, 2, 2, 1, 0, 0),
          "asym_avg": (2, 9, 8, 7, 3, 3, 2, 2, 1, 1, 0, 2, 2, 1, 0, 0),
          "asym_avg_cip_ceil": (2, 9, 8, 7, 3, 3, 2, 2, 1, 1, 0, 2, 2, 1, 1, 1),
          "dil_avg": (2, 11, 10, 6, 3, 2, 1, 2, 2, 3, 2, 1, 2, 1, 0, 0),
          "dil_avg_cip": (2, 11, 10, 6, 3, 2, 1, 2, 2, 3, 2, 1, 2, 1, 0, 1),
          "dil_gaps_avg": (2, 13, 12, 9, 2, 2, 3, 3, 2, 2, 1, 0, 2, 1, 0, 0)}


def out_dim(n, k, s, d, p0, p1, ceil):
    span = n + p0 + p1 - d * (k - 1) - 1
    o = (-(-span // s) if ceil else span // s) + 1
    return o - 1 if ceil and (o - 1) * s >= n + p0 else o


def pool_grad(is_max, dy, x, c):
    N, H, W, C = c[:4]
    return run_step("pool2d_grad", [dy, x if is_max else None], [empty(N, H, W, C)], [int(is_max), *c])[0]


def native(is_max, x, c):
    N, H, W, C, KH, KW, sh, sw, dh, dw, pt, pl, pb, pr, ceil, cip = c
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    xn = t.permute(0, 3, 1, 2)
    if is_max:
        y = F.max_pool2d(xn, (KH, KW), (sh, sw), (pt, pl), (dh, dw), ceil_mode=bool(ceil))
    else:
        y = F.avg_pool2d(xn, (KH, KW), (sh, sw), (pt, pl), ceil_mode=bool(ceil), count_include_pad=bool(cip))
    return t, y.permute(0, 2, 3, 1)


def unfold_ref(is_max, x, c):
    """Pooling as unfold over an explicitly padded input: -inf padding for max; for average the
    divisor counts valid taps, or with count_include_pad the taps inside the padded input."""
    N, H, W, C, KH, KW, sh, sw, dh, dw, pt, pl, pb, pr, ceil, cip = c
    OH, OW = out_dim(H, KH, sh, dh, pt, pb, ceil), out_dim(W, KW, sw, dw, pl, pr, ceil)
    eb = max(0, (OH - 1) * sh + dh * (KH - 1) + 1 - (H + pt + pb))  # ceil-mode overhang
    er = max(0, (OW - 1) * sw + dw * (KW - 1) + 1 - (W + pl + pr))
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    xn = t.permute(0, 3, 1, 2)
    unf = lambda v, fill: F.unfold(F.pad(v, (pl, pr + er, pt, pb + eb), value=fill), (KH, KW), (dh, dw), 0,
                                   (sh, sw)).reshape(v.shape[0], v.shape[1], KH * KW, OH * OW)
    if is_max:
        y = unf(xn, -np.inf).max(dim=2).values
    else:
        ones = torch.ones(1, 1, H, W, dtype=torch.float64)
        if cip:
            cnt = F.unfold(F.pad(F.pad(ones, (pl, pr, pt, pb), value=1.0), (0, er, 0, eb)), (KH, KW), (dh, dw), 0,
                           (sh, sw)).sum(1)
        else:
            cnt = unf(ones, 0.0).sum(2)[0, 0]
        y = unf(xn, 0.0).sum(2) / cnt.reshape(1, 1, -1)
    return t, y.reshape(N, C, OH, OW).permute(0, 2, 3, 1)


def check(is_max, c, ref, seed, ties=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(c[:4]).astype(np.float32)
    if ties:
        x = np.round(x).astype(np.float32)  # few distinct values: many equal maxima
    t, y = ref(is_max, x, c)
    dy = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(torch.tensor(dy, dtype=torch.float64))
    got = pool_grad(is_max, dy, x, c)
    assert_close(got, t.grad, rtol=1e-5, atol=1e-5, what=str(c))


@pytest.mark.parametrize("is_max", [True, False])
@pytest.mark.parametrize("name", list(SYMMETRIC))
def test_pool_grad_vs_torch(name, is_max, isa, threads):
    check(is_max, SYMMETRIC[name], native, len(name))


@pytest.mark.parametrize("name", list(DILATED_MAX))
def test_dilated_max_pool_grad_vs_torch(name, isa, threads):
    check(True, DILATED_MAX[name], native, 5)


@pytest.mark.parametrize("name", list(UNFOLD))
def test_pool_grad_vs_unfold_reference(name, isa):
    check(name.endswith("max"), UNFOLD[name], unfold_ref, 9)


@pytest.mark.parametrize("name", ["3x3s1p1", "5x3_cip"])
def test_max_pool_ties_go_to_the_first_maximum(name, isa):
    check(True, SYMMETRIC[name], native, 2, ties=True)


def test_max_pool_nan_like_torch(isa):
    c = SYMMETRIC["3x3s1p1"]
    rng = np.random.default_rng(4)
    x = rng.standard_normal(c[:4]).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    t = torch.tensor(x, requires_grad=True)
    y = F.max_pool2d(t.permute(0, 3, 1, 2), 3, 1, 1).permute(0, 2, 3, 1)
    dy = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(torch.tensor(dy))
    got = pool_grad(True, dy, x, c)
    np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", [0, 1, 2])
@pytest.mark.parametrize("N,HW,C", [(1, 1, 1), (2, 49, 37), (16, 169, 64), (3, 10, 130)])
def test_global_pool_grad_vs_torch(N, HW, C, kind, isa, threads):
    rng = np.random.default_rng(HW + kind)
    x = rng.standard_normal((N, HW, C)).astype(np.float32)
    if kind:
        x = np.round(2 * x).astype(np.float32)  # ties
        x[0, HW // 2, 0] = np.nan  # a NaN in one channel: first-max NaN rule / amax all NaN
    dy = rng.standard_normal((N, C)).astype(np.float32)
    t = torch.tensor(x, requires_grad=True)
    if kind == 0:
        y = F.adaptive_avg_pool1d(t.permute(0, 2, 1), 1)[..., 0]
    elif kind == 1:
        y = F.adaptive_max_pool1d(t.permute(0, 2, 1), 1)[..., 0]
    else:
        y = t.amax(1)
    y.backward(torch.tensor(dy))
    (got,) = run_step("global_pool_grad", [dy, x if kind else None], [empty(N, HW, C)], [N, HW, C, kind])
    np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_pool_grad_bad_parameters():
    c = list(SYMMETRIC["2x2"])
    dy = np.zeros((2, 4, 4, 3), np.float32)
    x = np.zeros((2, 8, 8, 3), np.float32)
    with pytest.raises(KernelError, match=r"max pooling needs x \(input 1\)"):
        pool_grad(True, dy, None, c)
    bad = c.copy()
    bad[10] = 2  # pad_top as large as the kernel
    with pytest.raises(KernelError, match="pad_top"):
        pool_grad(False, dy, x, bad)
    with pytest.raises(KernelError, match="kind must be 0"):
        run_step("global_pool_grad", [dy, x], [empty(2, 64, 3)], [2, 64, 3, 3])
    with pytest.raises(KernelError, match=r"max pooling needs x \(input 1\)"):
        run_step("global_pool_grad", [dy, None], [empty(2, 64, 3)], [2, 64, 3, 2])
