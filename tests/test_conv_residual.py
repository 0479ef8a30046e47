"""Conv2D's residual input (y = act(conv(x) + bias + residual)) on every algorithm, ISA path
and 1 / 2 threads, the indirect (implicit-GEMM) path's tiles and splits, and filters packed
for AVX-512 but run after the ISA was lowered (Winograd's own cases: test_conv_winograd.py)."""

import numpy as np
import pytest

import engine
from engine import _C
from test_conv import ACT_PARAMS, make_shape, reference

# (N, H, W, C, OC, KH, KW, stride, dil, pads, groups): one per algorithm, and the indirect
# path's edges (a tile spanning rows and images, OC tails of 1 / 16 / 17 / 33 channels).
CASES = {
    "direct": (2, 10, 9, 3, 20, 3, 3, (1, 1), (1, 1), (1, 0, 1, 0), 1),
    "pointwise": (2, 6, 5, 8, 12, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), 1),
    "im2col_groups": (2, 8, 7, 6, 10, 3, 3, (2, 1), (1, 1), (1, 1, 0, 0), 2),
    "depthwise": (2, 8, 7, 6, 12, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 6),
    "indirect_3x3": (2, 9, 11, 24, 33, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 1),
    "indirect_stride2": (3, 13, 12, 20, 17, 3, 3, (2, 2), (1, 1), (1, 0, 1, 1), 1),
    "indirect_1x1_stride2": (2, 13, 11, 70, 16, 1, 1, (2, 2), (1, 1), (0, 0, 0, 0), 1),
    "indirect_dilated": (1, 12, 12, 9, 1, 3, 2, (1, 1), (2, 3), (2, 1, 0, 3), 1),
    "indirect_channels": (1, 7, 7, 130, 64, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 1),  # 3 channel blocks
    # Winograd F(4x4, 3x3): >= 400 output pixels; ragged 4x4 tiles, channel tails, asymmetric pads
    "winograd": (1, 21, 23, 17, 17, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 1),
    "winograd_batch": (2, 20, 22, 24, 40, 3, 3, (1, 1), (1, 1), (0, 1, 2, 1), 1),
}


def run(case, act="relu", residual="new", seed=0):
    N, H, W, C, OC, KH, KW, stride, dil, pads, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, W, C), dtype=np.float32)
    w = (rng.standard_normal((KH, KW, C // groups, OC), dtype=np.float32) / np.sqrt(KH * KW * C / groups)).astype(np.float32)
    b = rng.standard_normal(OC, dtype=np.float32)
    s = make_shape(N, H, W, C, OC, KH, KW, stride, dil, pads, groups)
    p = _C.PackedConv2D(s, w, b)
    r = rng.standard_normal((N, s.OH, s.OW, OC), dtype=np.float32) if residual else None
    a, bb = ACT_PARAMS.get(act, (0.0, 0.0))
    ref = reference(x, w, b, stride, dil, pads, groups, "none", 0, 0)
    if r is not None:
        ref = ref + r
    ref = reference_act(ref, act, a, bb)
    if residual == "alias":  # the residual is the output buffer itself
        y = r.copy()
        _C.conv2d_nhwc(y, x, p, getattr(_C.Act, act), a, bb, y)
    else:
        y = np.full((N, s.OH, s.OW, OC), np.nan, np.float32)
        _C.conv2d_nhwc(y, x, p, getattr(_C.Act, act), a, bb, r)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def reference_act(y, act, a, b):
    import torch

    from test_conv import ACTS
    return ACTS[act](torch.from_numpy(y).double(), a, b).float().numpy()


@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.parametrize("residual", [None, "new", "alias"])
def test_residual_every_algorithm(kind, residual, isa, threads):
    run(CASES[kind], "relu", residual)
    run(CASES[kind], "none", residual, seed=1)


@pytest.mark.parametrize("act", ["leaky_relu", "clip", "sigmoid", "gelu"])
@pytest.mark.parametrize("kind", ["indirect_3x3", "winograd", "pointwise", "depthwise"])
def test_residual_then_activation(act, kind):
    run(CASES[kind], act, "new")


@pytest.mark.parametrize("N,H,W,C,OC", [(1, 14, 14, 64, 64), (3, 7, 7, 96, 200), (2, 28, 28, 16, 16)])
def test_indirect_thread_splits(N, H, W, C, OC, threads):
    # Many pixels (tiles split) and few pixels with many channels (panels split).
    run((N, H, W, C, OC, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 1), "relu", "new")


def test_indirect_random_shapes(isa):
    rng = np.random.default_rng(77)
    for i in range(20):
        KH, KW = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        sh, sw, dh, dw = (int(v) for v in rng.integers(1, 3, 4))
        pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        H, W = int(rng.integers(dh * (KH - 1) + 1, 18)), int(rng.integers(dw * (KW - 1) + 1, 18))
        case = (int(rng.integers(1, 4)), H, W, int(rng.integers(5, 150)), int(rng.integers(1, 70)), KH, KW,
                (sh, sw), (dh, dw), pads, 1)
        run(case, "relu" if rng.integers(2) else "none", [None, "new", "alias"][i % 3], seed=i)


@pytest.mark.skipif(_C.detected_isa() != "avx512", reason="needs AVX-512 to pack these layouts")
@pytest.mark.parametrize("kind", ["indirect_3x3", "winograd_batch"])
@pytest.mark.parametrize("lower", ["avx2", "portable"])
def test_packed_for_avx512_runs_on_a_lower_isa(kind, lower):
    case = CASES[kind]
    N, H, W, C, OC, KH, KW, stride, dil, pads, groups = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, H, W, C), dtype=np.float32)
    w = rng.standard_normal((KH, KW, C, OC), dtype=np.float32) / np.float32(KH * KW * C)
    b = rng.standard_normal(OC, dtype=np.float32)
    s = make_shape(N, H, W, C, OC, KH, KW, stride, dil, pads, groups)
    r = rng.standard_normal((N, s.OH, s.OW, OC), dtype=np.float32)
    p = _C.PackedConv2D(s, w, b)
    old = _C.cpu_isa()
    try:
        _C.set_isa(lower)
        y = np.empty((N, s.OH, s.OW, OC), np.float32)
        _C.conv2d_nhwc(y, x, p, _C.Act.leaky_relu, 0.1, 0.0, r)
    finally:
        _C.set_isa(old)
    ref = reference(x, w, b, stride, dil, pads, groups, "none", 0, 0) + r
    np.testing.assert_allclose(y, np.where(ref > 0, ref, 0.1 * ref), rtol=1e-4, atol=1e-4)


def test_residual_shape_is_checked():
    s = make_shape(1, 6, 6, 8, 4, 3, 3)
    p = _C.PackedConv2D(s, np.ones((3, 3, 8, 4), np.float32), None)
    with pytest.raises(engine.EngineError, match="residual"):
        _C.conv2d_nhwc(np.empty((1, 4, 4, 4), np.float32), np.ones((1, 6, 6, 8), np.float32), p,
                       _C.Act.none, 0.0, 0.0, np.ones((1, 4, 4, 5), np.float32))


@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.parametrize("act", ["clip", "relu"])
def test_specials_through_the_fused_epilogue(kind, act, isa):
    # NaN / ±inf in the input and in the residual survive bias + residual + ReLU6 / ReLU as in
    # torch: NaN stays NaN, +inf clips to 6, -inf to 0.
    from test_nan_propagation import assert_same
    N, H, W, C, OC, KH, KW, stride, dil, pads, groups = CASES[kind]
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, H, W, C), dtype=np.float32)
    x[0, 0, 0, 0], x[-1, H // 2, W // 2, C - 1] = np.nan, np.inf
    w = (rng.standard_normal((KH, KW, C // groups, OC), dtype=np.float32) / np.sqrt(KH * KW * C / groups)).astype(np.float32)
    b = rng.standard_normal(OC, dtype=np.float32)
    s = make_shape(N, H, W, C, OC, KH, KW, stride, dil, pads, groups)
    p = _C.PackedConv2D(s, w, b)
    r = rng.standard_normal((N, s.OH, s.OW, OC), dtype=np.float32)
    r[0, -1, -1, -1], r[-1, 0, 0, 0], r.reshape(-1)[r.size // 2] = np.nan, np.inf, -np.inf
    a, bb = (0.0, 6.0) if act == "clip" else (0.0, 0.0)
    y = np.empty((N, s.OH, s.OW, OC), np.float32)
    _C.conv2d_nhwc(y, x, p, getattr(_C.Act, act), a, bb, r)
    with np.errstate(invalid="ignore"):
        ref = reference(x, w, b, stride, dil, pads, groups, "none", 0, 0).astype(np.float64) + r
        want = reference_act(ref.astype(np.float32), act, a, bb)
    assert np.isnan(want).any()
    assert_same(y, want, rtol=1e-4, atol=1e-4, what=f"{kind} {act}")
