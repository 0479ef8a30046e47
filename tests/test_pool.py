"""Pooling (NHWC) against torch max_pool2d / avg_pool2d / adaptive_avg_pool2d (NCHW) for the
symmetric-padding cases torch accepts, and against a plain numpy reference with torch's
window rules for asymmetric padding (ONNX), on every ISA path and 1 / 2 threads."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import engine
from engine import _C


def make_shape(N, H, W, C, KH, KW, stride=(1, 1), dil=(1, 1), pads=(0, 0, 0, 0), ceil=False, cip=False):
    s = _C.Pool2DShape()
    s.N, s.H, s.W, s.C, s.KH, s.KW = N, H, W, C, KH, KW
    s.stride_h, s.stride_w = stride
    s.dil_h, s.dil_w = dil
    s.pad_top, s.pad_left, s.pad_bottom, s.pad_right = pads
    s.ceil_mode, s.count_include_pad = ceil, cip
    return s


def out_dim(n, k, s, d, p0, p1, ceil):
    span = n + p0 + p1 - d * (k - 1) - 1
    o = (math.ceil(span / s) if ceil else span // s) + 1
    if ceil and (o - 1) * s >= n + p0:
        o -= 1
    return o


def numpy_pool(x, s, is_max):
    N, H, W, C = x.shape
    OH = out_dim(H, s.KH, s.stride_h, s.dil_h, s.pad_top, s.pad_bottom, s.ceil_mode)
    OW = out_dim(W, s.KW, s.stride_w, s.dil_w, s.pad_left, s.pad_right, s.ceil_mode)
    y = np.zeros((N, OH, OW, C), np.float64)
    for oh in range(OH):
        for ow in range(OW):
            hs = [oh * s.stride_h - s.pad_top + k * s.dil_h for k in range(s.KH)]
            ws = [ow * s.stride_w - s.pad_left + k * s.dil_w for k in range(s.KW)]
            vh = [h for h in hs if 0 <= h < H]
            vw = [w for w in ws if 0 <= w < W]
            win = x[:, vh][:, :, vw].astype(np.float64)
            if not vh or not vw:  # dilated window with no tap inside the input: 0 by definition
                y[:, oh, ow] = 0
            elif is_max:
                y[:, oh, ow] = win.max(axis=(1, 2))
            else:
                if s.count_include_pad:
                    cnt = sum(-s.pad_top <= h < H + s.pad_bottom for h in hs) * \
                        sum(-s.pad_left <= w < W + s.pad_right for w in ws)
                else:
                    cnt = len(vh) * len(vw)
                y[:, oh, ow] = win.sum(axis=(1, 2)) / cnt
    return y.astype(np.float32)


def run(x, s, is_max):
    y = np.full((s.N, s.OH, s.OW, s.C), np.nan, np.float32)
    (_C.maxpool2d_nhwc if is_max else _C.avgpool2d_nhwc)(y, x, s)
    return y


# torch-compatible cases: symmetric padding ≤ kernel/2.
# (N, H, W, C, K, stride, pad, dil, ceil)
TORCH_CASES = [
    (1, 26, 26, 32, (2, 2), (2, 2), (0, 0), (1, 1), False),   # seed CNN maxpool
    (2, 24, 24, 64, (2, 2), (2, 2), (0, 0), (1, 1), False),
    (2, 15, 17, 3, (3, 3), (2, 2), (1, 1), (1, 1), False),
    (2, 15, 17, 3, (3, 3), (2, 2), (1, 1), (1, 1), True),
    (1, 10, 11, 70, (3, 2), (3, 2), (1, 1), (1, 1), True),
    (3, 9, 12, 13, (2, 3), (1, 2), (0, 1), (1, 1), True),
    (1, 14, 13, 130, (3, 3), (2, 2), (1, 0), (2, 1), False),   # dilation (max only)
    (2, 7, 7, 1, (7, 7), (1, 1), (0, 0), (1, 1), False),       # global-like window
    (1, 8, 8, 9, (4, 4), (3, 3), (2, 2), (1, 1), True),        # ceil: last window dropped
    (1, 5, 5, 4, (2, 2), (2, 2), (1, 1), (1, 1), True),
]


@pytest.mark.parametrize("case", TORCH_CASES, ids=str)
def test_maxpool_vs_torch(case, isa, threads):
    N, H, W, C, k, st, p, d, ceil = case
    x = np.random.default_rng(0).standard_normal((N, H, W, C), dtype=np.float32)
    s = make_shape(N, H, W, C, k[0], k[1], st, d, (p[0], p[1], p[0], p[1]), ceil)
    ref = F.max_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), k, st, p, d, ceil_mode=ceil)
    ref = ref.permute(0, 2, 3, 1).numpy()
    y = run(x, s, True)
    assert y.shape == ref.shape
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("cip", [False, True])
@pytest.mark.parametrize("case", [c for c in TORCH_CASES if c[7] == (1, 1)], ids=str)
def test_avgpool_vs_torch(case, cip, isa, threads):
    N, H, W, C, k, st, p, d, ceil = case
    x = np.random.default_rng(1).standard_normal((N, H, W, C), dtype=np.float32)
    s = make_shape(N, H, W, C, k[0], k[1], st, d, (p[0], p[1], p[0], p[1]), ceil, cip)
    ref = F.avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), k, st, p, ceil_mode=ceil, count_include_pad=cip)
    ref = ref.permute(0, 2, 3, 1).numpy()
    y = run(x, s, False)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_random_asymmetric_vs_numpy(isa):
    rng = np.random.default_rng(7)
    for i in range(30):
        KH, KW = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        dh, dw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        eh, ew = dh * (KH - 1) + 1, dw * (KW - 1) + 1
        pads = (int(rng.integers(0, eh)), int(rng.integers(0, ew)), int(rng.integers(0, eh)), int(rng.integers(0, ew)))
        H, W = int(rng.integers(max(1, eh - pads[0] - pads[2]), 14)), int(rng.integers(max(1, ew - pads[1] - pads[3]), 14))
        N, C = int(rng.integers(1, 3)), int(rng.integers(1, 80))
        ceil, cip = bool(rng.integers(2)), bool(rng.integers(2))
        s = make_shape(N, H, W, C, KH, KW, (int(rng.integers(1, 4)), int(rng.integers(1, 4))), (dh, dw), pads, ceil, cip)
        x = rng.standard_normal((N, H, W, C), dtype=np.float32)
        for is_max in (True, False):
            ref = numpy_pool(x, s, is_max)
            y = run(x, s, is_max)
            assert y.shape == ref.shape
            assert np.isfinite(y).all()
            np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 7, 7, 512), (3, 5, 6, 70), (2, 1, 1, 3), (4, 13, 13, 1), (64, 6, 6, 64)])
def test_global_avgpool(shape, isa, threads):
    x = np.random.default_rng(2).standard_normal(shape, dtype=np.float32)
    y = np.full((shape[0], shape[3]), np.nan, np.float32)
    _C.global_avgpool_nhwc(y, x)
    ref = F.adaptive_avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), 1).reshape(shape[0], shape[3]).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_large_parallel(threads):
    x = np.random.default_rng(3).standard_normal((16, 32, 32, 64), dtype=np.float32)
    s = make_shape(16, 32, 32, 64, 3, 3, (2, 2), (1, 1), (1, 1, 1, 1), False, False)
    for is_max in (True, False):
        np.testing.assert_allclose(run(x, s, is_max), numpy_pool(x, s, is_max), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("field,value,match", [
    ("H", 0, "H must be >= 1"),
    ("C", 0, "C must be >= 1"),
    ("KW", -2, "KW must be >= 1"),
    ("stride_h", 0, "stride_h must be >= 1"),
    ("dil_w", 0, "dil_w must be >= 1"),
    ("pad_top", -1, "pad_top must be >= 0"),
    ("pad_left", 3, "pad_left"),          # window could lie entirely in padding
    ("KH", 9, "kernel height"),           # kernel larger than padded input
])
def test_bad_shapes(field, value, match):
    s = make_shape(1, 6, 6, 4, 3, 3)
    setattr(s, field, value)
    with pytest.raises(engine.EngineError, match=match):
        s.validate()
    x = np.zeros((1, 6, 6, 4), np.float32)
    with pytest.raises(engine.errors.KernelError, match=match):
        _C.maxpool2d_nhwc(np.zeros((1, 1, 1, 4), np.float32), x, s)


def test_bad_arrays():
    s = make_shape(1, 6, 6, 4, 2, 2, (2, 2))
    with pytest.raises(engine.EngineError):
        _C.maxpool2d_nhwc(np.zeros((1, 3, 3, 4), np.float32), np.zeros((1, 6, 6, 3), np.float32), s)
    with pytest.raises(engine.EngineError):
        _C.avgpool2d_nhwc(np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 6, 6, 4), np.float32), s)
    with pytest.raises(engine.EngineError):
        _C.global_avgpool_nhwc(np.zeros((1, 3), np.float32), np.zeros((1, 6, 6, 4), np.float32))
