"""Conv2D (NHWC × HWIO) against torch.nn.functional.conv2d (NCHW × OIHW), every algorithm
(pointwise GEMM, direct small-C, depthwise, im2col + GEMM), every ISA path and 1 / 2 threads."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import engine
from engine import _C


ACTS = {
    "none": lambda t, a, b: t,
    "relu": lambda t, a, b: F.relu(t),
    "leaky_relu": lambda t, a, b: F.leaky_relu(t, a),
    "sigmoid": lambda t, a, b: torch.sigmoid(t),
    "tanh": lambda t, a, b: torch.tanh(t),
    "gelu": lambda t, a, b: F.gelu(t),
    "gelu_tanh": lambda t, a, b: F.gelu(t, approximate="tanh"),
    "elu": lambda t, a, b: F.elu(t, a),
    "selu": lambda t, a, b: F.selu(t),
    "silu": lambda t, a, b: F.silu(t),
    "softplus": lambda t, a, b: F.softplus(t),
    "hard_sigmoid": lambda t, a, b: torch.clamp(a * t + b, 0, 1),
    "clip": lambda t, a, b: torch.clamp(t, a, b),
}
ACT_PARAMS = {"leaky_relu": (0.1, 0.0), "elu": (0.7, 0.0), "hard_sigmoid": (0.2, 0.5), "clip": (-0.5, 0.6)}


def make_shape(N, H, W, C, OC, KH, KW, stride=(1, 1), dil=(1, 1), pads=(0, 0, 0, 0), groups=1):
    s = _C.Conv2DShape()
    s.N, s.H, s.W, s.C, s.OC, s.KH, s.KW = N, H, W, C, OC, KH, KW
    s.stride_h, s.stride_w = stride
    s.dil_h, s.dil_w = dil
    s.pad_top, s.pad_left, s.pad_bottom, s.pad_right = pads
    s.groups = groups
    return s


def reference(x, w, b, stride, dil, pads, groups, act, a, bb):
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    xt = F.pad(xt, (pads[1], pads[3], pads[0], pads[2]))  # left, right, top, bottom
    wt = torch.from_numpy(w).permute(3, 2, 0, 1)  # HWIO -> OIHW
    bt = None if b is None else torch.from_numpy(b)
    y = F.conv2d(xt.double(), wt.double(), None if bt is None else bt.double(), stride, 0, dil, groups)
    y = ACTS[act](y, a, bb)
    return y.permute(0, 2, 3, 1).float().numpy()


def run_case(N, H, W, C, OC, KH, KW, stride=(1, 1), dil=(1, 1), pads=(0, 0, 0, 0), groups=1, bias=True,
             act="none", seed=0, batch=None):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, W, C), dtype=np.float32)
    w = (rng.standard_normal((KH, KW, C // groups, OC), dtype=np.float32) / np.sqrt(KH * KW * C / groups)).astype(np.float32)
    b = rng.standard_normal(OC, dtype=np.float32) if bias else None
    s = make_shape(N, H, W, C, OC, KH, KW, stride, dil, pads, groups)
    p = _C.PackedConv2D(s, w, b)
    y = np.full((N, s.OH, s.OW, OC), np.nan, np.float32)
    a, bb = ACT_PARAMS.get(act, (0.0, 0.0))
    _C.conv2d_nhwc(y, x, p, getattr(_C.Act, act), a, bb)
    ref = reference(x, w, b, stride, dil, pads, groups, act, a, bb)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    return p


# (N, H, W, C, OC, KH, KW, stride, dil, pads, groups)
CASES = [
    (1, 28, 28, 1, 32, 3, 3, (1, 1), (1, 1), (0, 0, 0, 0), 1),     # seed CNN first layer
    (3, 28, 28, 1, 32, 3, 3, (1, 1), (1, 1), (0, 0, 0, 0), 1),
    (2, 17, 19, 3, 20, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 1),     # C=3, OC tail
    (1, 23, 21, 3, 64, 7, 7, (2, 2), (1, 1), (3, 2, 3, 4), 1),     # stem-like, asymmetric
    (2, 15, 13, 2, 37, 5, 5, (3, 2), (2, 1), (2, 0, 1, 3), 1),     # direct: stride 3, dilation
    (2, 9, 11, 4, 5, 7, 1, (1, 1), (1, 1), (3, 0, 3, 0), 1),       # 7×1
    (1, 12, 12, 16, 24, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), 1),    # pointwise
    (3, 7, 5, 12, 18, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), 3),      # pointwise grouped
    (2, 13, 11, 10, 7, 1, 1, (2, 2), (1, 1), (0, 0, 0, 0), 1),     # 1×1 stride 2 → im2col
    (1, 9, 9, 6, 6, 1, 1, (1, 1), (1, 1), (1, 0, 0, 1), 1),        # 1×1 padded
    (2, 14, 15, 8, 16, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 1),     # im2col
    (1, 16, 16, 64, 128, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 1),   # larger channels
    (2, 11, 10, 9, 13, 5, 5, (2, 3), (1, 2), (2, 1, 0, 2), 1),     # odd everything
    (2, 10, 9, 8, 12, 3, 3, (1, 2), (2, 1), (0, 1, 2, 1), 2),      # groups 2
    (1, 8, 8, 12, 8, 3, 5, (2, 1), (1, 1), (1, 2, 1, 2), 4),       # groups 4, non-square
    (2, 13, 12, 32, 32, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 32),   # depthwise
    (1, 11, 14, 24, 48, 3, 3, (2, 2), (1, 1), (0, 1, 1, 0), 24),   # depthwise multiplier 2
    (2, 9, 9, 67, 67, 5, 5, (1, 2), (2, 1), (4, 2, 3, 1), 67),     # depthwise odd C, dilation
    (1, 7, 8, 5, 15, 3, 3, (3, 3), (1, 1), (1, 1, 1, 1), 5),       # depthwise mult 3, stride 3
    (1, 6, 6, 130, 130, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 130),  # depthwise > 2 blocks
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:7])) + f"_s{c[7]}_d{c[8]}_p{c[9]}_g{c[10]}")
def test_conv_shapes(case, isa, threads):
    N, H, W, C, OC, KH, KW, stride, dil, pads, groups = case
    run_case(N, H, W, C, OC, KH, KW, stride, dil, pads, groups, bias=True, act="relu")
    run_case(N, H, W, C, OC, KH, KW, stride, dil, pads, groups, bias=False, act="none", seed=1)


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("kind", ["direct", "pointwise", "im2col", "depthwise"])
def test_conv_activations(act, kind):
    args = {
        "direct": (2, 10, 9, 3, 20, 3, 3, (1, 1), (1, 1), (1, 0, 1, 0), 1),
        "pointwise": (2, 6, 5, 8, 12, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), 1),
        "im2col": (2, 8, 7, 6, 10, 3, 3, (2, 1), (1, 1), (1, 1, 0, 0), 2),
        "depthwise": (2, 8, 7, 6, 12, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 6),
    }[kind]
    run_case(*args, bias=True, act=act)


def test_random_shapes(isa):
    rng = np.random.default_rng(123)
    for i in range(25):
        kind = rng.integers(4)
        KH, KW = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        dh, dw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        H = int(rng.integers(dh * (KH - 1) + 1, 20))
        W = int(rng.integers(dw * (KW - 1) + 1, 20))
        N = int(rng.integers(1, 4))
        if kind == 0:
            C, groups, OC = int(rng.integers(1, 5)), 1, int(rng.integers(1, 40))
        elif kind == 1:
            C, groups = int(rng.integers(1, 40)), 1
            OC = int(rng.integers(1, 40))
        elif kind == 2:
            groups = int(rng.integers(2, 5))
            C, OC = groups * int(rng.integers(1, 6)), groups * int(rng.integers(1, 6))
        else:
            C = int(rng.integers(2, 80))
            groups, OC = C, C * int(rng.integers(1, 3))
        run_case(N, H, W, C, OC, KH, KW, (sh, sw), (dh, dw), pads, groups, bias=bool(rng.integers(2)),
                 act="relu" if rng.integers(2) else "none", seed=i)


def test_batch_differs_from_packed_shape():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((3, 3, 1, 32), dtype=np.float32)
    b = rng.standard_normal(32, dtype=np.float32)
    p = _C.PackedConv2D(make_shape(1, 28, 28, 1, 32, 3, 3), w, b)
    for n in (1, 5, 64):
        x = rng.standard_normal((n, 28, 28, 1), dtype=np.float32)
        y = np.empty((n, 26, 26, 32), np.float32)
        _C.conv2d_nhwc(y, x, p, _C.Act.relu)
        ref = reference(x, w, b, (1, 1), (1, 1), (0, 0, 0, 0), 1, "relu", 0, 0)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,avx512,lower", [
    ((1, 8, 8, 16, 24, 1, 1), "pointwise", "pointwise"),
    ((1, 8, 8, 16, 16, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 16), "depthwise", "depthwise"),
    ((1, 8, 8, 3, 24, 3, 3), "direct", "direct"),
    ((1, 8, 8, 16, 24, 3, 3), "indirect", "im2col"),
    ((1, 8, 8, 16, 24, 3, 3, (1, 1), (1, 1), (0, 0, 0, 0), 2), "im2col", "im2col"),
])
def test_algorithm_chosen_at_pack_time(shape, avx512, lower, isa):
    # The indirect path needs AVX-512 when packing; the others are picked by shape alone.
    s = make_shape(*shape)
    p = _C.PackedConv2D(s, np.zeros((s.KH, s.KW, s.C // s.groups, s.OC), np.float32))
    assert p.algorithm == (avx512 if isa == "avx512" else lower)


def test_large_batch_threads(threads):
    # Enough work that row blocks / rows split across threads.
    run_case(8, 20, 20, 16, 32, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 1, act="relu")
    run_case(16, 28, 28, 1, 32, 3, 3, act="relu")
    run_case(4, 20, 20, 64, 64, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 64, act="relu")


@pytest.mark.parametrize("field,value,match", [
    ("H", 0, "H must be >= 1"),
    ("C", -1, "C must be >= 1"),
    ("OC", 0, "OC must be >= 1"),
    ("KH", 0, "KH must be >= 1"),
    ("stride_w", 0, "stride_w must be >= 1"),
    ("dil_h", 0, "dil_h must be >= 1"),
    ("pad_left", -1, "pad_left must be >= 0"),
    ("groups", 0, "groups must be >= 1"),
    ("groups", 3, "not divisible by groups"),
    ("KW", 9, "kernel width"),
])
def test_bad_shapes(field, value, match):
    s = make_shape(1, 8, 8, 4, 8, 3, 3)
    setattr(s, field, value)
    with pytest.raises(engine.EngineError, match=match):
        s.validate()
    with pytest.raises(engine.errors.KernelError, match=match):
        _C.PackedConv2D(s, np.zeros((3, 3, 4, 8), np.float32), None)


def test_kernel_larger_than_padded_input():
    s = make_shape(1, 4, 4, 2, 2, 5, 5, pads=(0, 0, 0, 0))
    with pytest.raises(engine.EngineError, match="kernel height"):
        _C.PackedConv2D(s, np.zeros((5, 5, 2, 2), np.float32), None)
    s = make_shape(1, 4, 4, 2, 2, 5, 5, pads=(0, 1, 0, 1))  # width fits, height does not
    with pytest.raises(engine.EngineError, match="kernel height"):
        _C.PackedConv2D(s, np.zeros((5, 5, 2, 2), np.float32), None)
    run_case(1, 4, 4, 2, 2, 5, 5, pads=(1, 1, 1, 1))


def test_bad_arrays():
    s = make_shape(1, 8, 8, 4, 8, 3, 3)
    p = _C.PackedConv2D(s, np.zeros((3, 3, 4, 8), np.float32), None)
    with pytest.raises(engine.EngineError):
        _C.conv2d_nhwc(np.empty((1, 6, 6, 8), np.float32), np.zeros((1, 8, 8, 3), np.float32), p)
    with pytest.raises(engine.EngineError):
        _C.conv2d_nhwc(np.empty((1, 6, 5, 8), np.float32), np.zeros((1, 8, 8, 4), np.float32), p)
    with pytest.raises(engine.EngineError):
        _C.PackedConv2D(s, np.zeros((3, 3, 4, 7), np.float32), None)


# conv2d_maxpool_nhwc: conv then a non-overlapping max-pool in one pass. The direct path
# (C <= 4, unpadded) pools bands in cache; every other algorithm takes the two-step fallback.
# (N, H, W, C, OC, KH, KW, stride, dil, pads, groups, pool)
FUSED_CASES = [
    (1, 28, 28, 1, 32, 3, 3, (1, 1), (1, 1), (0, 0, 0, 0), 1, (2, 2)),   # seed CNN
    (5, 28, 28, 1, 32, 3, 3, (1, 1), (1, 1), (0, 0, 0, 0), 1, (2, 2)),
    (2, 17, 19, 3, 20, 3, 3, (1, 1), (1, 1), (0, 0, 0, 0), 1, (3, 2)),   # OC tail, odd remainder
    (1, 15, 13, 2, 37, 5, 5, (2, 1), (2, 1), (0, 0, 0, 0), 1, (2, 3)),   # stride, dilation
    (2, 11, 12, 1, 8, 3, 3, (1, 1), (1, 1), (0, 0, 0, 0), 1, (9, 10)),   # one window = all
    (2, 10, 10, 3, 16, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 1, (2, 2)),   # padded: fallback
    (2, 12, 12, 16, 24, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 1, (2, 2)),  # im2col: fallback
    (1, 9, 9, 8, 8, 3, 3, (1, 1), (1, 1), (0, 0, 0, 0), 8, (2, 2)),      # depthwise: fallback
    (1, 8, 8, 6, 10, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), 1, (2, 2)),     # pointwise: fallback
]


@pytest.mark.parametrize("case", FUSED_CASES)
@pytest.mark.parametrize("act", ["relu", "sigmoid", "none"])
def test_conv_maxpool_fused(case, act, isa, threads):
    N, H, W, C, OC, KH, KW, stride, dil, pads, groups, (ph, pw) = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, H, W, C), dtype=np.float32)
    w = rng.standard_normal((KH, KW, C // groups, OC), dtype=np.float32) / np.float32(KH * KW)
    b = rng.standard_normal(OC, dtype=np.float32)
    s = make_shape(N, H, W, C, OC, KH, KW, stride, dil, pads, groups)
    p = _C.PackedConv2D(s, w, b)
    y = np.full((N, s.OH // ph, s.OW // pw, OC), np.nan, np.float32)
    _C.conv2d_maxpool_nhwc(y, x, p, ph, pw, getattr(_C.Act, act))
    conv = torch.from_numpy(reference(x, w, b, stride, dil, pads, groups, act, 0.0, 0.0))
    want = F.max_pool2d(conv.permute(0, 3, 1, 2), (ph, pw)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_conv_maxpool_bad_window():
    p = _C.PackedConv2D(make_shape(1, 6, 6, 1, 4, 3, 3), np.ones((3, 3, 1, 4), np.float32), None)
    with pytest.raises(engine.KernelError, match="pool window 5x1"):
        _C.conv2d_maxpool_nhwc(np.empty((1, 0, 4, 4), np.float32), np.ones((1, 6, 6, 1), np.float32), p, 5, 1)
    with pytest.raises(engine.KernelError, match="expected shape"):
        _C.conv2d_maxpool_nhwc(np.empty((1, 4, 4, 4), np.float32), np.ones((1, 6, 6, 1), np.float32), p, 2, 2)
