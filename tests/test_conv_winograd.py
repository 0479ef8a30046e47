"""The Winograd F(4x4, 3x3) convolution path (AVX-512, 3x3 stride-1 filters on large maps):
which shapes take it, its results against torch (float64) and onnxruntime within the error
bound documented in docs/layout.md, NaN / inf confined to the receptive field, ragged tiles,
batches, thread splits, and the filters packed for AVX-512 but run on a lower ISA."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine import _C
from conftest import ISAS
from test_conv import make_shape, reference

# Packed only while the kernels run AVX-512 (the CPU has it and ENGINE_ISA does not lower it).
avx512 = pytest.mark.skipif(_C.cpu_isa() != "avx512", reason="Winograd is packed on AVX-512 only")

# Documented bound for ordinary data: |y - exact| <= 1e-5 * sum |x| |w| over each output's
# receptive field (measured <= ~3e-6 on C = 8..512; the direct and indirect paths stay near
# 3e-7). One outlier among its neighbours spoils its whole 4x4 tile instead (see below).
WINO_BOUND = 1e-5


def conv_case(N, H, W, C, OC, pads=(1, 1, 1, 1), seed=0, relu_input=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, W, C), dtype=np.float32)
    if relu_input:
        x = np.maximum(x, 0)
    w = (rng.standard_normal((3, 3, C, OC)) / np.sqrt(9 * C)).astype(np.float32)
    b = rng.standard_normal(OC).astype(np.float32)
    return x, w, b, make_shape(N, H, W, C, OC, 3, 3, (1, 1), (1, 1), pads, 1)


def run(p, x, act=_C.Act.none):
    s = p.shape
    y = np.full((x.shape[0], s.OH, s.OW, s.OC), np.nan, np.float32)
    _C.conv2d_nhwc(y, x, p, act, 0.0, 0.0, None)
    return y


def error_scale(x, w, pads):
    """sum |x| |w| per output: what a float32 dot product's rounding error scales with."""
    return reference(np.abs(x), np.abs(w), None, (1, 1), (1, 1), pads, 1, "none", 0, 0)


@avx512
@pytest.mark.parametrize("N,H,W,C,OC", [(1, 20, 20, 16, 16), (1, 56, 56, 64, 64), (8, 28, 28, 128, 128),
                                        (1, 27, 27, 48, 192)])
def test_taken_for_large_stride1_3x3_maps(N, H, W, C, OC):
    assert _C.PackedConv2D(make_shape(N, H, W, C, OC, 3, 3, pads=(1, 1, 1, 1)),
                           np.zeros((3, 3, C, OC), np.float32)).algorithm == "winograd"


@avx512
@pytest.mark.parametrize("why,shape", [
    ("stride 2", dict(stride=(2, 2))),
    ("stride 1x2", dict(stride=(1, 2))),
    ("dilation", dict(dil=(2, 2))),
    ("groups", dict(groups=2)),
    ("5x5", dict(KH=5, KW=5)),
    ("3x1", dict(KW=1)),
    ("under 400 output pixels", dict(H=19, W=21)),
    ("transformed filter over 4.5 MiB", dict(C=256, OC=256)),
    ("C < 16", dict(C=12)),
])
def test_not_taken(why, shape):
    a = dict(N=1, H=32, W=32, C=64, OC=64, KH=3, KW=3, stride=(1, 1), dil=(1, 1), pads=(1, 1, 1, 1), groups=1)
    a.update(shape)
    w = np.zeros((a["KH"], a["KW"], a["C"] // a["groups"], a["OC"]), np.float32)
    assert _C.PackedConv2D(make_shape(**a), w).algorithm != "winograd", why


@pytest.mark.parametrize("isa_name", [i for i in ISAS if i != "avx512"])
def test_not_taken_below_avx512(isa_name):
    old = _C.cpu_isa()
    try:
        _C.set_isa(isa_name)
        p = _C.PackedConv2D(make_shape(1, 32, 32, 64, 64, 3, 3, pads=(1, 1, 1, 1)),
                            np.zeros((3, 3, 64, 64), np.float32))
    finally:
        _C.set_isa(old)
    assert p.algorithm != "winograd"


@avx512
@pytest.mark.parametrize("run_isa", ISAS)
@pytest.mark.parametrize("N,H,W,C,OC,pads", [
    (1, 21, 23, 17, 17, (1, 1, 1, 1)),   # odd sizes: ragged last tile row and column, channel tails
    (1, 22, 25, 16, 33, (0, 0, 0, 0)),   # valid: OH = 20, OW = 23
    (3, 20, 22, 24, 40, (0, 1, 2, 1)),   # batch 3, asymmetric padding, OC tail past one panel
    (2, 30, 29, 70, 16, (2, 2, 0, 0)),   # padding wider than the filter's halo on one side
])
def test_matches_torch_within_the_bound(N, H, W, C, OC, pads, run_isa):
    x, w, b, s = conv_case(N, H, W, C, OC, pads)
    p = _C.PackedConv2D(s, w, b)
    assert p.algorithm == "winograd"
    old = _C.cpu_isa()
    try:
        _C.set_isa(run_isa)  # packed for AVX-512; run on every path (lowered: portable transforms)
        y = run(p, x)
    finally:
        _C.set_isa(old)
    want = reference(x, w, b, (1, 1), (1, 1), pads, 1, "none", 0, 0)
    err = np.abs(y.astype(np.float64) - want)
    assert (err <= WINO_BOUND * (error_scale(x, w, pads) + np.abs(b))).all(), err.max()


@avx512
@pytest.mark.parametrize("C", [64, 256, 512])
def test_error_bound_on_deep_inputs(C):
    # The bound holds as the sum deepens, and it is tight enough to catch a wrong transform.
    x, w, b, s = conv_case(1, 24, 24, C, 64, seed=C, relu_input=True)
    p = _C.PackedConv2D(s, w, b)
    assert p.algorithm == "winograd"
    y = run(p, x)
    want = reference(x, w, b, (1, 1), (1, 1), (1, 1, 1, 1), 1, "none", 0, 0)
    scale = error_scale(x, w, (1, 1, 1, 1)) + np.abs(b)
    assert (np.abs(y - want) <= WINO_BOUND * scale).all()
    w2 = w.copy()
    w2[1, 1, 0, :] *= 1.1  # one input channel's centre tap off by 10%: out of bounds somewhere
    assert not (np.abs(run(_C.PackedConv2D(s, w2, b), x) - want) <= WINO_BOUND * scale).all()


@avx512
@pytest.mark.parametrize("pixel", [(0, 0), (3, 4), (4, 4), (7, 8), (12, 21), (23, 22)])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_special_stays_in_its_receptive_field(pixel, value, threads):
    # A 6x6 input patch feeds a 4x4 output tile; neighbouring patches overlap, so one special
    # pixel touches up to four tiles. Outputs outside its 3x3 receptive field stay finite.
    x, w, b, s = conv_case(2, 24, 23, 16, 20, seed=5)
    x[1][pixel + (3,)] = value
    p = _C.PackedConv2D(s, w, b)
    assert p.algorithm == "winograd"
    y = run(p, x, _C.Act.relu)
    with np.errstate(invalid="ignore"):
        want = F.relu(torch.from_numpy(reference(x, w, b, (1, 1), (1, 1), (1, 1, 1, 1), 1, "none", 0, 0))).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(want))
    assert np.isfinite(y[0]).all() and not np.isfinite(y[1]).all()
    fin = np.isfinite(want)
    np.testing.assert_allclose(y[fin], want[fin], rtol=1e-4, atol=1e-4)


@avx512
@pytest.mark.parametrize("pixel", [(0, 0), (3, 4), (4, 4), (7, 8), (23, 22)])
def test_transform_overflow_falls_back_to_the_direct_sum(pixel):
    # -3e37 times the input transform's largest coefficients (up to 25) overflows float32;
    # the direct sum (weights ~0.1) does not. Every output stays finite and the ones that see
    # the pixel are right; the rest of its tiles carry its rounding error (documented).
    x, w, b, s = conv_case(1, 24, 23, 16, 20, seed=6)
    x[0][pixel + (3,)] = -3e37
    p = _C.PackedConv2D(s, w, b)
    assert p.algorithm == "winograd"
    y = run(p, x)
    assert np.isfinite(y).all()
    want = reference(x, w, b, (1, 1), (1, 1), (1, 1, 1, 1), 1, "none", 0, 0)
    h, v = pixel
    near = (slice(None), slice(max(h - 1, 0), h + 2), slice(max(v - 1, 0), v + 2))
    np.testing.assert_allclose(y[near], want[near], rtol=1e-4)


@avx512
@pytest.mark.parametrize("N,H,W,C,OC", [(1, 56, 56, 64, 64), (3, 28, 28, 32, 48), (1, 20, 20, 130, 33),
                                        (8, 28, 28, 128, 128)])
def test_blocks_and_threads(N, H, W, C, OC, threads):
    # Several tile blocks per thread, a block or a thread's run ending inside an image, channel
    # tails; fused residual (aliasing the output) and ReLU.
    x, w, b, s = conv_case(N, H, W, C, OC, seed=N + C)
    p = _C.PackedConv2D(s, w, b)
    assert p.algorithm == "winograd"
    r = np.random.default_rng(1).standard_normal((N, H, W, OC), dtype=np.float32)
    y = r.copy()
    _C.conv2d_nhwc(y, x, p, _C.Act.relu, 0.0, 0.0, y)
    want = np.maximum(reference(x, w, b, (1, 1), (1, 1), (1, 1, 1, 1), 1, "none", 0, 0) + r, 0)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def _onnx_model(C, HW):
    """A ResNet block (its second conv takes the residual Add and the ReLU) and a SqueezeNet fire
    module (1x1 and 3x3 expands concatenated on the channels: each writes its slice of the
    wider output), as ONNX bytes."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(8)

    def weight(name, oc, ic, k):
        w = rng.standard_normal((oc, ic, k, k)) / np.sqrt(k * k * ic)
        return numpy_helper.from_array(w.astype(np.float32), name)

    def bias(name, oc):
        return numpy_helper.from_array(rng.standard_normal(oc).astype(np.float32), name)

    same = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], **same), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], **same), helper.make_node("Add", ["c2", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["r2"]),
             helper.make_node("Conv", ["r2", "ws", "bs"], ["sq"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["sq"], ["rs"]),
             helper.make_node("Conv", ["rs", "we1", "be1"], ["e1"], kernel_shape=[1, 1]),
             helper.make_node("Conv", ["rs", "we3", "be3"], ["e3"], **same),
             helper.make_node("Concat", ["e1", "e3"], ["cat"], axis=1), helper.make_node("Relu", ["cat"], ["y"])]
    inits = [weight("w1", C, C, 3), bias("b1", C), weight("w2", C, C, 3), bias("b2", C), weight("ws", 16, C, 1),
             bias("bs", 16), weight("we1", 24, 16, 1), bias("be1", 24), weight("we3", 40, 16, 3), bias("be3", 40)]
    g = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, HW, HW])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64, HW, HW])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@avx512
@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_model_matches_onnxruntime(batch):
    import onnxruntime as ort

    import engine

    C, HW = 32, 30
    for c, oc in ((C, C), (16, 40)):  # the 3x3 convs of the model take the Winograd path
        assert _C.PackedConv2D(make_shape(1, HW, HW, c, oc, 3, 3, pads=(1, 1, 1, 1)),
                               np.zeros((3, 3, c, oc), np.float32)).algorithm == "winograd"
    data = _onnx_model(C, HW)
    m = engine.load(data)
    assert {"Conv2DConcat"} <= {n.op for n in m.optimized_graph.nodes}
    x = np.random.default_rng(batch).standard_normal((batch, C, HW, HW), dtype=np.float32)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(m.run(None, {"x": x})[0], want, rtol=1e-4, atol=1e-4)


def test_random_shapes(isa):
    # Whatever each ISA packs these as (Winograd on AVX-512), against torch.
    from test_conv_residual import run as run_case
    rng = np.random.default_rng(99)
    for i in range(8):
        H, W = int(rng.integers(18, 40)), int(rng.integers(18, 40))
        pads = tuple(int(v) for v in rng.integers(0, 2, 4))
        case = (int(rng.integers(1, 3)), H, W, int(rng.integers(12, 70)), int(rng.integers(16, 70)), 3, 3,
                (1, 1), (1, 1), pads, 1)
        run_case(case, "relu" if i % 2 else "none", [None, "new", "alias"][i % 3], seed=i)
