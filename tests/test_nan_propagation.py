"""NaN and ±inf propagate as in torch through every activation, the fused GEMM / conv epilogues,
pooling (standalone and fused into Conv2D) and softmax, on every ISA path and 1 / 2 threads.
A NaN that comes out as a plausible number (a fused ReLU turning NaN into 0, a max-pool
dropping a NaN that is not the first tap of its window) hides broken input; torch is the
reference (float64 unless noted)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine import _C, nn
from engine.ops.activations import ACTIVATIONS
from helpers import run_op

torch.set_num_threads(1)

SPECIALS = (np.nan, np.inf, -np.inf)

# Reference per activation name on a float64 tensor, given the name's (alpha, beta).
_REF = {
    "relu": lambda t, a, b: F.relu(t),
    "leaky_relu": lambda t, a, b: F.leaky_relu(t, a),
    "sigmoid": lambda t, a, b: torch.sigmoid(t),
    "tanh": lambda t, a, b: torch.tanh(t),
    "gelu": lambda t, a, b: F.gelu(t),
    "gelu_tanh": lambda t, a, b: F.gelu(t, approximate="tanh"),
    "elu": lambda t, a, b: F.elu(t, a),
    "selu": lambda t, a, b: F.selu(t),
    "silu": lambda t, a, b: F.silu(t),
    "swish": lambda t, a, b: F.silu(t),
    "softplus": lambda t, a, b: F.softplus(t),
    "hard_sigmoid": lambda t, a, b: torch.clamp(a * t + b, 0, 1),
    "sparse_sigmoid": lambda t, a, b: torch.clamp((t + 1) / 2, 0, 1),
    "clip": lambda t, a, b: torch.clamp(t, a, b),
    "relu6": lambda t, a, b: F.relu6(t),
    "hard_tanh": lambda t, a, b: F.hardtanh(t),
    "exp": lambda t, a, b: torch.exp(t),
    "exponential": lambda t, a, b: torch.exp(t),
    "log": lambda t, a, b: torch.log(t),
    "sqrt": lambda t, a, b: torch.sqrt(t),
    "neg": lambda t, a, b: torch.neg(t),
    "abs": lambda t, a, b: torch.abs(t),
    "reciprocal": lambda t, a, b: torch.reciprocal(t),
    "square": lambda t, a, b: torch.square(t),
    "erf": lambda t, a, b: torch.erf(t),
}
ACT_NAMES = sorted((k for k in ACTIVATIONS if k is not None), key=str)
# Extra parameters beyond the defaults: a finite clip range, a leaky slope below 1.
ACT_CASES = [(n, *ACTIVATIONS[n][1:]) for n in ACT_NAMES] + [("clip", -2.5, 6.0), ("leaky_relu", 0.01, 0.0)]


def ref_act(name, t, a, b):
    if name in ("linear", "identity"):
        return t
    return _REF[name](t, a, b)


def assert_same(got, want, rtol=1e-5, atol=1e-6, what=""):
    """NaN exactly where the reference has NaN, ±inf exactly where it has ±inf, close elsewhere."""
    got = np.asarray(got)
    with np.errstate(over="ignore"):
        want = np.asarray(want, np.float64).astype(np.float32)  # float32 rounding (overflow: inf)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    gn, wn = np.isnan(got), np.isnan(want)
    if not np.array_equal(gn, wn):
        i = np.flatnonzero((gn != wn).ravel())[:5]
        raise AssertionError(f"{what}: NaN mask differs at {i.tolist()} (of {gn.size}): "
                             f"got {got.ravel()[i]}, want {want.ravel()[i]}")
    inf = np.isinf(want)
    np.testing.assert_array_equal(got[inf], want[inf], err_msg=f"{what}: ±inf")
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def with_specials(x, positions, values=SPECIALS):
    """x with values cycled into the flat positions (negative: from the end)."""
    x = x.copy()
    flat = x.reshape(-1)
    for i, p in enumerate(positions):
        flat[p % flat.size] = values[i % len(values)]
    return x


# ---------------------------------------------------------------------------------------
# Standalone activations.

def _act_inputs(n, seed=0):
    """Random inputs plus three arrays: NaN / +inf / -inf alone (so n == 1 sees each), and one
    with all three in the first vector, mid-body and the ragged tail."""
    x = (np.random.default_rng(seed + n).standard_normal(n) * 3).astype(np.float32)
    spots = [0, 1, 2, 5, 16, 17, n // 2, n // 2 + 1, n // 2 + 15, n - 3, n - 2, n - 1]
    spots = sorted({p for p in spots if 0 <= p < n})
    return [with_specials(x, spots, (v,)) for v in SPECIALS] + [with_specials(x, spots)]


@pytest.mark.parametrize("n", [1, 3, 17, 1000, 100003])
@pytest.mark.parametrize("case", ACT_CASES, ids=lambda c: f"{c[0]}({c[1]:.3g},{c[2]:.3g})")
def test_activation_specials(case, n, isa, threads):
    name, a, b = case
    act = ACTIVATIONS[name][0]
    for x in _act_inputs(n):
        y = np.full_like(x, 7.0)
        _C.activation(y, x, act, a, b)
        with np.errstate(all="ignore"):
            want = ref_act(name, torch.from_numpy(x.astype(np.float64)), a, b).numpy()
        assert_same(y, want, rtol=2e-6, atol=1e-6, what=f"{name} n={n}")


@pytest.mark.parametrize("name", ACT_NAMES)
def test_activation_op_specials(name, isa):
    # The graph op (Activation) and the ONNX-named unary op the fusion pass folds.
    _, a, b = ACTIVATIONS[name]
    x = _act_inputs(1000, seed=5)[3].reshape(10, 100)
    want = ref_act(name, torch.from_numpy(x.astype(np.float64)), a, b).numpy()
    assert_same(run_op("Activation", [x], {"activation": name}), want, 2e-6, 1e-6, name)


def test_standalone_relu_layer(isa):
    x = np.array([[np.nan, np.inf, -np.inf, -1.0, 2.0]], np.float32)
    m = nn.Sequential([nn.Input((5,)), nn.ReLU()])
    assert_same(m.predict(x), F.relu(torch.from_numpy(x)).numpy(), what="ReLU layer")


# ---------------------------------------------------------------------------------------
# Dense (GEMM + fused epilogue).

# (K, N): the issue's 4→2, ragged N (not a multiple of 8/16/32), long K with N = 128 (the
# K-split GEMV at batch <= 14 with 2 threads).
DENSE_SHAPES = [(4, 2), (37, 19), (200, 130), (5408, 128)]
DENSE_ROWS = [1, 2, 3, 4, 15, 64]


def _row_patterns(K):
    """Five kinds of input row: NaN at the end of K, +inf, -inf at the start, +inf and -inf
    (NaN where their products cancel, ±inf where they agree), and a clean row."""
    return [{K - 1: np.nan}, {K // 3: np.inf}, {0: -np.inf}, {K // 2: np.inf, (K // 2 + 1) % K: -np.inf}, {}]


def _dense_batches(K, M, seed=0):
    """Batches of M rows that together hold every row pattern in every row position."""
    rng = np.random.default_rng(seed)
    pats = _row_patterns(K)
    out = []
    for shift in range(len(pats) if M < len(pats) else 1):
        x = rng.standard_normal((M, K), dtype=np.float32)
        for r in range(M):
            for k, v in pats[(r + shift) % len(pats)].items():
                x[r, k] = v
        out.append(x)
    return out


def _dense_model(K, N, act, weights=None, seed=0):
    m = nn.Sequential([nn.Input((K,)), nn.Dense(N, activation=act)])
    if weights is None:
        rng = np.random.default_rng(seed)
        weights = [(rng.standard_normal((K, N)) / math.sqrt(K)).astype(np.float32),
                   rng.standard_normal(N).astype(np.float32)]
    m.set_weights(weights)
    return m


def _torch_dense(x, w, b):
    return (torch.from_numpy(x).double() @ torch.from_numpy(w).double() + torch.from_numpy(b).double())


@pytest.mark.parametrize("act", ["relu", "leaky_relu", None])
@pytest.mark.parametrize("M", DENSE_ROWS)
@pytest.mark.parametrize("K,N", DENSE_SHAPES)
def test_dense_fused_relu(K, N, M, act, isa, threads):
    m = _dense_model(K, N, act)
    w, b = m.get_weights()
    _, a, bb = ACTIVATIONS[act]
    for x in _dense_batches(K, M):
        want = ref_act(act or "linear", _torch_dense(x, w, b), a, bb).numpy()
        assert_same(m.predict(x), want, rtol=1e-4, atol=1e-4, what=f"Dense {act} M={M} K={K} N={N}")


@pytest.mark.parametrize("M,K,N", [(1, 5408, 128), (3, 200, 130), (64, 37, 19)])
@pytest.mark.parametrize("name", ACT_NAMES)
def test_dense_every_activation(name, M, K, N, isa, threads):
    # The GEMM output itself is checked against torch above; here the fused epilogue must
    # equal torch's activation of the engine's own linear output (same kernel, same sums).
    lin = _dense_model(K, N, None)
    m = _dense_model(K, N, name, lin.get_weights())
    _, a, b = ACTIVATIONS[name]
    for x in _dense_batches(K, M, seed=1):
        z = lin.predict(x)
        with np.errstate(all="ignore"):
            want = ref_act(name, torch.from_numpy(z.astype(np.float64)), a, b).numpy()
        assert_same(m.predict(x), want, rtol=2e-6, atol=1e-6, what=f"Dense {name} M={M}")


@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("M,K,N", [(1, 300, 70), (3, 64, 33), (4, 1000, 9), (20, 50, 40), (100, 300, 129)])
def test_sgemm_specials_relu(M, K, N, ta, tb, isa, threads):
    # Unpacked sgemm: dot products (M <= 4, trans_b), B read in place (few rows), packed A
    # (trans_a) and packed B. NaN / inf in A's rows, and a NaN weight (one NaN column).
    rng = np.random.default_rng(M * 1000 + K)
    a = np.concatenate(_dense_batches(K, M, seed=2))
    b = (rng.standard_normal((K, N)) / math.sqrt(K)).astype(np.float32)
    b[K // 2, N - 1] = np.nan
    bias = rng.standard_normal(N).astype(np.float32)
    want = F.relu(_torch_dense(a, b, bias)).numpy()
    for i in range(0, a.shape[0], M):
        ai = a[i:i + M]
        c = np.full((M, N), 5.0, np.float32)
        _C.sgemm(c, np.ascontiguousarray(ai.T) if ta else ai, np.ascontiguousarray(b.T) if tb else b, ta, tb,
                 bias=bias, act=_C.Act.relu)
        assert_same(c, want[i:i + M], rtol=1e-4, atol=1e-4, what=f"sgemm ta={ta} tb={tb} rows {i}")


# ---------------------------------------------------------------------------------------
# Conv2D (every algorithm) and Conv2D + MaxPooling2D.

def _same_pads(n, k, s, d=1):
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def _torch_conv(x, w, b, strides, padding, groups):
    """Keras Conv2D (NHWC, HWIO, 'valid' / 'same') in float64 torch; NHWC result."""
    kh, kw = w.shape[:2]
    xt = torch.from_numpy(x).double().permute(0, 3, 1, 2)
    if padding == "same":
        pt, pb = _same_pads(x.shape[1], kh, strides[0])
        pl, pr = _same_pads(x.shape[2], kw, strides[1])
        xt = F.pad(xt, (pl, pr, pt, pb))
    wt = torch.from_numpy(w).double().permute(3, 2, 0, 1)
    return F.conv2d(xt, wt, torch.from_numpy(b).double(), strides, 0, 1, groups).permute(0, 2, 3, 1)


def _conv_model(H, W, C, OC, k, strides, padding, groups, act, pool=None, seed=0):
    layers = [nn.Input((H, W, C)), nn.Conv2D(OC, k, strides=strides, padding=padding, groups=groups,
                                             activation=act)]
    if pool:
        layers.append(nn.MaxPooling2D(pool))
    m = nn.Sequential(layers)
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k[0], k[1], C // groups, OC)) / math.sqrt(k[0] * k[1] * C / groups)).astype(np.float32)
    m.set_weights([w, rng.standard_normal(OC).astype(np.float32)])
    return m


def _special_images(N, H, W, C, seed=0):
    """A batch with one NaN, one +inf and one -inf pixel per image (one channel each), at
    image-dependent positions: corners, edges and the interior."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, W, C), dtype=np.float32)
    spots = [(0, 0), (H - 1, W - 1), (H // 2, W // 2 + 1), (1, W - 2), (H - 2, 3 % W), (H // 3, 0)]
    for n in range(N):
        for i, v in enumerate(SPECIALS):
            h, w = spots[(n + 2 * i) % len(spots)]
            x[n, h, w, (n + i) % C] = v
    return x


# (H, W, C, OC, kernel, strides, padding, groups)
CONV_CASES = {
    "pointwise": (6, 7, 8, 20, (1, 1), (1, 1), "valid", 1),
    "direct_c1_3x3": (28, 28, 1, 32, (3, 3), (1, 1), "valid", 1),      # the seed CNN's first layer
    "direct_c3_s2_same": (13, 12, 3, 20, (3, 3), (2, 2), "same", 1),   # padded copy, OC tail
    "depthwise": (9, 10, 24, 24, (3, 3), (1, 1), "same", 24),
    "depthwise_mult2": (7, 8, 5, 10, (3, 3), (1, 1), "valid", 5),
    "im2col_s2": (11, 12, 8, 16, (3, 3), (2, 2), "valid", 1),
    "im2col_same": (9, 9, 8, 19, (3, 3), (1, 1), "same", 1),
    "winograd": (24, 21, 17, 20, (3, 3), (1, 1), "same", 1),          # F(4x4, 3x3) on AVX-512
    "indirect_s2": (15, 14, 16, 40, (3, 3), (2, 2), "same", 1),
}


@pytest.mark.parametrize("act", ["relu", "leaky_relu", None])
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv_specials(case, act, isa, threads):
    H, W, C, OC, k, st, pad, g = CONV_CASES[case]
    m = _conv_model(H, W, C, OC, k, st, pad, g, act)
    w, b = m.get_weights()
    _, a, bb = ACTIVATIONS[act]
    x = _special_images(3, H, W, C)
    want = ref_act(act or "linear", _torch_conv(x, w, b, st, pad, g), a, bb).numpy()
    assert np.isnan(want).any() and np.isinf(want).any()  # the case really has both
    assert_same(m.predict(x), want, rtol=1e-4, atol=1e-4, what=f"{case} {act}")


# (H, W, C, OC, kernel, padding, pool): the seed CNN's Conv2D(32, 3×3) + MaxPooling2D(2×2)
# (direct kernel, pooled in bands), an odd window, and one that takes the unfused fallback.
CONV_POOL_CASES = {
    "seed": (28, 28, 1, 32, (3, 3), "valid", (2, 2)),
    "c3_pool3x2": (17, 19, 3, 20, (3, 3), "valid", (3, 2)),
    "same_fallback": (10, 10, 3, 16, (3, 3), "same", (2, 2)),
}


@pytest.mark.parametrize("act", ["relu", "leaky_relu", None])
@pytest.mark.parametrize("case", CONV_POOL_CASES, ids=str)
def test_conv_maxpool_specials(case, act, isa, threads):
    H, W, C, OC, k, pad, pool = CONV_POOL_CASES[case]
    m = _conv_model(H, W, C, OC, k, (1, 1), pad, 1, act, pool=pool)
    w, b = m.get_weights()
    _, a, bb = ACTIVATIONS[act]
    x = _special_images(4, H, W, C, seed=3)
    conv = ref_act(act or "linear", _torch_conv(x, w, b, (1, 1), pad, 1), a, bb)
    want = F.max_pool2d(conv.permute(0, 3, 1, 2), pool).permute(0, 2, 3, 1).numpy()
    assert np.isnan(want).any()
    assert_same(m.predict(x), want, rtol=1e-4, atol=1e-4, what=f"{case} {act}")


@pytest.mark.parametrize("pixel", [(0, 0), (0, 1), (1, 0), (1, 1), (13, 14), (27, 27), (26, 5)])
def test_seed_conv_pool_one_nan_pixel(pixel, isa, threads):
    # NaN in one pixel: NaN in exactly the pooled outputs whose window sees it, every channel.
    m = _conv_model(28, 28, 1, 32, (3, 3), (1, 1), "valid", 1, "relu", pool=(2, 2), seed=4)
    w, b = m.get_weights()
    x = np.random.default_rng(4).standard_normal((2, 28, 28, 1), dtype=np.float32)
    x[1][pixel] = np.nan
    conv = F.relu(_torch_conv(x, w, b, (1, 1), "valid", 1)).float()
    want = F.max_pool2d(conv.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).numpy()
    got = m.predict(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert not np.isnan(got[0]).any() and np.isnan(got[1]).any()
    assert_same(got, want, rtol=1e-4, atol=1e-4, what=f"pixel {pixel}")


# ---------------------------------------------------------------------------------------
# Pooling.

def _pool_shape(N, H, W, C, k, stride, pads=(0, 0, 0, 0), cip=False):
    s = _C.Pool2DShape()
    s.N, s.H, s.W, s.C, s.KH, s.KW = N, H, W, C, k[0], k[1]
    s.stride_h, s.stride_w = stride
    s.pad_top, s.pad_left, s.pad_bottom, s.pad_right = pads
    s.count_include_pad = cip
    return s


# (N, H, W, C, kernel, stride, symmetric pad): C covers the scalar tail (3, 13), one / two /
# four vectors per block (16, 40, 130).
POOL_CASES = [
    (2, 26, 26, 32, (2, 2), (2, 2), (0, 0)),
    (2, 15, 17, 3, (3, 3), (2, 2), (1, 1)),
    (1, 10, 11, 40, (3, 2), (3, 2), (1, 1)),
    (3, 9, 12, 13, (2, 3), (1, 2), (0, 1)),
    (1, 14, 13, 130, (3, 3), (1, 1), (1, 1)),
    (2, 7, 7, 16, (7, 7), (1, 1), (0, 0)),
]


def _pool_input(N, H, W, C, seed):
    """About 3% NaN and 3% ±inf, so windows see them first, in the middle and last."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, W, C), dtype=np.float32)
    u = rng.random(x.shape)
    x[u < 0.03] = np.nan
    x[(u >= 0.03) & (u < 0.045)] = np.inf
    x[(u >= 0.045) & (u < 0.06)] = -np.inf
    return x


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_maxpool_specials(case, isa, threads):
    N, H, W, C, k, st, p = case
    x = _pool_input(N, H, W, C, seed=H * W + C)
    s = _pool_shape(N, H, W, C, k, st, (p[0], p[1], p[0], p[1]))
    y = np.full((N, s.OH, s.OW, C), 7.0, np.float32)
    _C.maxpool2d_nhwc(y, x, s)
    want = F.max_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), k, st, p).permute(0, 2, 3, 1).numpy()
    assert np.isnan(want).any()
    assert_same(y, want, what=f"maxpool {case}")


# Overlapping windows (3×3 and 5×5 stride 1, dilated): a single NaN pixel among clean rows,
# so each row chunk and each window row range sees both NaN-free and NaN-holding inputs.
SPARSE_CASES = [
    (2, 20, 20, 20, (3, 3), (1, 1), (1, 1), (1, 1)),
    (2, 17, 15, 3, (5, 5), (1, 1), (2, 2), (1, 1)),
    (1, 14, 13, 24, (3, 3), (2, 2), (1, 1), (2, 1)),
]


@pytest.mark.parametrize("where", ["top", "middle", "bottom"])
@pytest.mark.parametrize("case", SPARSE_CASES, ids=str)
def test_maxpool_sparse_nan(case, where, isa, threads):
    N, H, W, C, k, st, p, d = case
    x = np.random.default_rng(H + C).standard_normal((N, H, W, C), dtype=np.float32)
    h = {"top": 1, "middle": H // 2 | 1, "bottom": H - 1}[where]  # odd: rows the dilated case reads
    x[N - 1, h, W // 3, C - 1] = np.nan
    x[0, H - 1 - h, W - 1, 0] = np.inf
    s = _pool_shape(N, H, W, C, k, st, (p[0], p[1], p[0], p[1]))
    s.dil_h, s.dil_w = d
    y = np.full((N, s.OH, s.OW, C), 7.0, np.float32)
    _C.maxpool2d_nhwc(y, x, s)
    want = F.max_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), k, st, p, d).permute(0, 2, 3, 1).numpy()
    assert np.isnan(want).any()
    assert_same(y, want, what=f"sparse maxpool {case} {where}")


@pytest.mark.parametrize("cip", [False, True])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_avgpool_specials(case, cip, isa, threads):
    N, H, W, C, k, st, p = case
    x = _pool_input(N, H, W, C, seed=H * W + C + 1)
    s = _pool_shape(N, H, W, C, k, st, (p[0], p[1], p[0], p[1]), cip)
    y = np.full((N, s.OH, s.OW, C), 7.0, np.float32)
    _C.avgpool2d_nhwc(y, x, s)
    want = F.avg_pool2d(torch.from_numpy(x).double().permute(0, 3, 1, 2), k, st, p,
                        count_include_pad=cip).permute(0, 2, 3, 1).numpy()
    assert_same(y, want, what=f"avgpool {case}")


@pytest.mark.parametrize("layer", ["max", "avg", "gap"])
def test_pooling_layers_specials(layer, isa, threads):
    x = _pool_input(2, 12, 12, 20, seed=11)
    lay = {"max": nn.MaxPooling2D((2, 2)), "avg": nn.AveragePooling2D((3, 3), strides=2),
           "gap": nn.GlobalAveragePooling2D()}[layer]
    got = nn.Sequential([nn.Input((12, 12, 20)), lay]).predict(x)
    xt = torch.from_numpy(x).double().permute(0, 3, 1, 2)
    want = {"max": lambda: F.max_pool2d(xt, 2), "avg": lambda: F.avg_pool2d(xt, 3, 2),
            "gap": lambda: xt.mean((2, 3), keepdim=True)}[layer]().permute(0, 2, 3, 1).numpy()
    assert_same(got, want.reshape(got.shape), what=layer)


# ---------------------------------------------------------------------------------------
# Softmax.

def _softmax_rows(L, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, L), dtype=np.float32) * 3
    x[0, L // 2] = np.nan
    x[1, L - 1] = np.inf
    x[2, 0] = -np.inf
    x[3, :] = -np.inf
    x[4, 0], x[4, L - 1] = np.inf, -np.inf
    x[5, :] = np.nan
    x[6, L - 1] = np.nan  # in the ragged tail
    return x  # row 7 clean


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("L", [1, 10, 17, 100])
def test_softmax_specials(L, log, isa):
    x = _softmax_rows(L)
    fn = torch.log_softmax if log else torch.softmax
    cases = [(-1, x),  # contiguous rows
             (0, np.ascontiguousarray(x.T)),  # along columns (inner 8)
             (1, np.ascontiguousarray(x.reshape(2, 4, L).transpose(0, 2, 1)))]  # (2, L, 4)
    for axis, xs in cases:
        y = np.full_like(xs, 7.0)
        _C.softmax(y, xs, axis, log)
        want = fn(torch.from_numpy(xs).double(), axis).numpy()
        assert_same(y, want, rtol=1e-5, atol=1e-6, what=f"softmax axis={axis} log={log}")


# ---------------------------------------------------------------------------------------
# The issue's regressions.

def test_issue_dense_relu_nan(isa):
    m = nn.Sequential([nn.Input((4,)), nn.Dense(2, activation="relu")])
    y = m.predict(np.array([[np.nan, 1, 1, 1]], np.float32))
    assert np.isnan(y).all(), y


def test_issue_all_nan_image_seed_cnn(isa, threads):
    m = nn.Sequential([nn.Input((28, 28, 1)), nn.Conv2D(32, (3, 3), activation="relu"),
                       nn.MaxPooling2D((2, 2)), nn.Flatten(), nn.Dense(128, activation="relu"),
                       nn.Dense(10, activation="softmax")])
    x = np.full((2, 28, 28, 1), np.nan, np.float32)
    x[1] = np.random.default_rng(0).standard_normal((28, 28, 1))
    x[1, 20, 7, 0] = np.nan  # one NaN pixel reaches every class too
    y = m.predict(x)
    assert y.shape == (2, 10) and np.isnan(y).all(), y
    assert np.isfinite(m.predict(np.ones((1, 28, 28, 1), np.float32))).all()
