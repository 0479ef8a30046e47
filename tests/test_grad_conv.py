"""conv2d_grad_input / conv2d_grad_weight (NHWC x, HWIO filters) against torch autograd of
F.conv2d in float64 for every variant the forward runs: groups, depthwise (multiplier 1 and
2), strides, dilation, asymmetric padding, the 1×1 fast path; bias gradient; accumulation;
every ISA, 1 and 2 threads; float64 finite differences on a tiny case; bad shapes."""

import numpy as np
import pytest

from engine import KernelError
from grad_helpers import assert_close, empty, run_step

torch = pytest.importorskip("torch")
F = torch.nn.functional

# N, H, W, C, OC, KH, KW, sh, sw, dh, dw, pt, pl, pb, pr, groups
CASES = {
    "basic": (1, 5, 5, 1, 1, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1),
    "same": (2, 8, 8, 3, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),
    "stride_asym_pad": (3, 9, 7, 4, 6, 3, 2, 2, 1, 1, 1, 1, 0, 1, 1, 1),
    "groups_dilation": (2, 10, 11, 6, 9, 3, 3, 2, 2, 2, 1, 2, 1, 0, 2, 3),
    "pointwise": (2, 6, 5, 8, 16, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1),
    "pointwise_groups": (2, 6, 5, 8, 6, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2),
    "pointwise_stride": (2, 7, 7, 8, 4, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1),
    "depthwise": (2, 9, 9, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 16),
    "depthwise_mult2": (3, 8, 9, 5, 10, 3, 3, 2, 2, 2, 1, 1, 2, 0, 1, 5),
    "depthwise_37": (1, 11, 10, 37, 37, 5, 5, 1, 2, 1, 1, 2, 2, 2, 2, 37),
    "first_layer": (8, 28, 28, 1, 32, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1),
    "deep": (4, 13, 13, 32, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),
    "batch1": (1, 32, 32, 16, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),
    "depthwise_big": (6, 20, 20, 48, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 48),  # split over threads
}
BIG = {"depthwise_big"}  # torch's float64 depthwise is slow: a float32 reference there


def out_hw(c):
    N, H, W, C, OC, KH, KW, sh, sw, dh, dw, pt, pl, pb, pr, g = c
    return (H + pt + pb - dh * (KH - 1) - 1) // sh + 1, (W + pl + pr - dw * (KW - 1) - 1) // sw + 1


def torch_conv(x, w, c, dtype=torch.float64):
    N, H, W, C, OC, KH, KW, sh, sw, dh, dw, pt, pl, pb, pr, g = c
    tx = torch.tensor(x, dtype=dtype, requires_grad=True)
    tw = torch.tensor(w, dtype=dtype, requires_grad=True)
    tb = torch.zeros(OC, dtype=dtype, requires_grad=True)
    xp = F.pad(tx.permute(0, 3, 1, 2), (pl, pr, pt, pb))
    y = F.conv2d(xp, tw.permute(3, 2, 0, 1), tb, stride=(sh, sw), dilation=(dh, dw), groups=g)
    return tx, tw, tb, y.permute(0, 2, 3, 1)


def grads(dy, x, w, c, acc=0, outs=None):
    N, H, W, C, OC, KH, KW = c[:7]
    dx, dw, db = outs if outs else (empty(N, H, W, C), empty(*w.shape), empty(OC))
    run_step("conv2d_grad_input", [dy, w], [dx], [*c, acc])
    run_step("conv2d_grad_weight", [dy, x], [dw, db], [*c, acc])
    return dx, dw, db


def data(c, seed):
    N, H, W, C, OC, KH, KW, *_, g = c
    rng = np.random.default_rng(seed)
    OH, OW = out_hw(c)
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    w = rng.standard_normal((KH, KW, C // g, OC)).astype(np.float32)
    dy = rng.standard_normal((N, OH, OW, OC)).astype(np.float32)
    return x, w, dy


@pytest.mark.parametrize("name", list(CASES))
def test_conv_grads_vs_torch(name, isa, threads):
    c = CASES[name]
    x, w, dy = data(c, len(name))
    dt = torch.float32 if name in BIG else torch.float64
    tx, tw, tb, y = torch_conv(x, w, c, dt)
    y.backward(torch.tensor(dy, dtype=dt))
    dx, dw, db = grads(dy, x, w, c)
    tol = dict(rtol=1e-4, atol=1e-4 * np.sqrt(c[4] * c[5] * c[6]))
    assert_close(dx, tx.grad, what=f"{name} dx", **tol)
    assert_close(dw, tw.grad, what=f"{name} dw", rtol=1e-4, atol=1e-4 * np.sqrt(dy.size / c[4]))
    assert_close(db, tb.grad, what=f"{name} db", rtol=1e-4, atol=1e-4 * np.sqrt(dy.size / c[4]))


@pytest.mark.parametrize("name", ["groups_dilation", "pointwise", "depthwise_mult2", "deep"])
def test_conv_grads_accumulate(name, threads):
    c = CASES[name]
    x, w, dy = data(c, 7)
    tx, tw, tb, y = torch_conv(x, w, c)
    y.backward(torch.tensor(dy, dtype=torch.float64))
    outs = (np.full(x.shape, 2, np.float32), np.full(w.shape, 2, np.float32), np.full(c[4], 2, np.float32))
    dx, dw, db = grads(dy, x, w, c, acc=1, outs=outs)
    assert_close(dx, tx.grad + 2, rtol=1e-4, atol=1e-3)
    assert_close(dw, tw.grad + 2, rtol=1e-4, atol=1e-3)
    assert_close(db, tb.grad + 2, rtol=1e-4, atol=1e-3)
    (dw_only,) = run_step("conv2d_grad_weight", [dy, x], [empty(*w.shape)], [*c, 0])
    assert_close(dw_only, tw.grad, rtol=1e-4, atol=1e-3)


def test_conv_finite_differences():
    """Independent of torch: central differences of a float64 NHWC convolution."""
    c = (1, 5, 4, 2, 3, 2, 3, 2, 1, 1, 2, 1, 0, 0, 1, 1)
    x, w, dy = data(c, 3)
    N, H, W, C, OC, KH, KW, sh, sw, dh, dwl, pt, pl, pb, pr, g = c
    OH, OW = out_hw(c)

    def conv(xv, wv):
        xp = np.pad(xv.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
        y = np.zeros((N, OH, OW, OC))
        for oh in range(OH):
            for ow in range(OW):
                for kh in range(KH):
                    for kw in range(KW):
                        y[:, oh, ow] += xp[:, oh * sh + kh * dh, ow * sw + kw * dwl] @ wv[kh, kw]
        return (y * dy).sum()

    dx, dw, _ = grads(dy, x, w, c)
    h = 1e-6
    for arr, got in ((x, dx), (w, dw)):
        num = np.zeros(arr.shape)
        base = arr.astype(np.float64)
        for i in np.ndindex(arr.shape):
            p, m = base.copy(), base.copy()
            p[i] += h
            m[i] -= h
            num[i] = (conv(p, w) - conv(m, w)) / (2 * h) if arr is x else (conv(x, p) - conv(x, m)) / (2 * h)
        np.testing.assert_allclose(got, num, rtol=1e-4, atol=1e-4)


def test_conv_grad_bad_parameters():
    c = list(CASES["same"])
    x, w, dy = data(c, 1)
    bad = c.copy()
    bad[15] = 2  # groups that do not divide C = 3
    with pytest.raises(KernelError, match=r"C \(3\) is not divisible by groups \(2\)"):
        run_step("conv2d_grad_input", [dy, w], [empty(*x.shape)], [*bad, 0])
    with pytest.raises(KernelError, match="accumulate must be 0 or 1"):
        run_step("conv2d_grad_weight", [dy, x], [empty(*w.shape)], [*c, 3])
    with pytest.raises(KernelError, match="expected 2 inputs and 1 outputs"):
        run_step("conv2d_grad_input", [dy], [empty(*x.shape)], [*c, 0])
    with pytest.raises(KernelError, match="expected outputs"):
        run_step("conv2d_grad_weight", [dy, x], [empty(*w.shape)] * 3, [*c, 0])
