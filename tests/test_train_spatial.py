"""Training for convolution and pooling: the backward rules (engine/ops/spatial_grad.py) against
torch autograd through engine.autograd.vjp, the conv2d_dynamic step (a filter read at run time)
against the packed conv, concurrent runs of one program, and engine.nn's layers in training
graphs."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import engine
from engine import _C, nn
from engine.autograd import NoGradientError, vjp
from engine.graph import Graph, Node, Value
from engine.runtime.plan import Plan, Schedule

RTOL, ATOL = 2e-4, 2e-4


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def close(got, want, what="", rtol=RTOL, atol=ATOL):
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else want
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)


def same_pads(size, k, s, d):
    """Keras 'same': (before, after), the odd pixel after."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


# -- Conv2D (NHWC, HWIO) -------------------------------------------------------------------------

# (N, H, W, C, OC, KH, KW, strides, dilations, padding, groups)
CONV_CASES = [
    (2, 7, 6, 3, 5, 3, 3, (1, 1), (1, 1), "valid", 1),           # direct (C <= 4)
    (1, 9, 8, 6, 10, 3, 3, (2, 2), (1, 1), "same", 1),           # stride 2, asymmetric same, batch 1
    (2, 8, 9, 8, 12, 1, 1, (1, 1), (1, 1), "valid", 1),          # 1x1 (pointwise)
    (2, 11, 10, 9, 13, 5, 3, (2, 3), (1, 2), (2, 1, 0, 2), 1),   # odd everything, explicit pads
    (2, 10, 9, 8, 12, 3, 3, (1, 2), (2, 1), (0, 1, 2, 1), 2),    # groups 2, dilation
    (1, 8, 8, 12, 8, 3, 2, (2, 1), (1, 1), "same", 4),           # groups 4, even kernel same
    (2, 9, 7, 6, 6, 3, 3, (1, 1), (1, 1), "same", 6),            # depthwise
    (1, 11, 10, 5, 15, 3, 3, (2, 2), (2, 1), (1, 1, 1, 1), 5),   # depthwise multiplier 3
    (2, 7, 7, 20, 24, 3, 3, (1, 1), (1, 1), "same", 1),          # indirect (AVX-512)
    (1, 6, 5, 17, 7, 2, 2, (2, 2), (1, 1), "valid", 1),          # stride leaves rows unread
    (2, 9, 9, 4, 8, 1, 1, (2, 2), (1, 1), "valid", 2),           # strided 1x1, groups
]


def conv_graph(case, bias=True, act=None, residual=False):
    N, H, W, C, OC, KH, KW, st, dil, pad, groups = case
    attrs = {"strides": list(st), "dilations": list(dil), "padding": pad if isinstance(pad, str) else list(pad),
             "groups": groups}
    if act:
        attrs["activation"] = act
    ins = ["x", "w"] + (["b"] if bias else [""] if residual else []) + (["res"] if residual else [])
    inputs = [Value("x", (None, H, W, C))]
    return attrs, ins, inputs


def torch_conv(x, w, b, case, act=None, res=None):
    """x NHWC, w HWIO torch tensors -> y NHWC (torch's conv2d on NCHW views)."""
    N, H, W, C, OC, KH, KW, st, dil, pad, groups = case
    xn = x.permute(0, 3, 1, 2)
    if pad == "same":
        (pt, pb), (pl, pr) = same_pads(H, KH, st[0], dil[0]), same_pads(W, KW, st[1], dil[1])
    elif pad == "valid":
        pt = pb = pl = pr = 0
    else:
        pt, pl, pb, pr = pad
    xn = F.pad(xn, (pl, pr, pt, pb))
    y = F.conv2d(xn, w.permute(3, 2, 0, 1), b, stride=st, dilation=dil, groups=groups).permute(0, 2, 3, 1)
    if res is not None:
        y = y + res
    acts = {None: lambda t: t, "relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
            "gelu": F.gelu, "silu": F.silu, "elu": F.elu, "leaky_relu": lambda t: F.leaky_relu(t, 0.2),
            "relu6": F.relu6}
    return acts[act](y)


def run_conv_case(case, bias=True, act=None, residual=False, seed=0, want_x=True):
    N, H, W, C, OC, KH, KW, st, dil, pad, groups = case
    rng = np.random.default_rng(seed)
    attrs, ins, inputs = conv_graph(case, bias, act, residual)
    x = f32(rng, N, H, W, C)
    w = f32(rng, KH, KW, C // groups, OC) * 0.5
    b = f32(rng, OC)
    inits = {"w": w}
    if bias:
        inits["b"] = b
    feeds = {"x": x}
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    tres = None
    ty = torch_conv(tx, tw, tb, case)
    if residual:
        r = f32(rng, *ty.shape)
        inputs.append(Value("res", (None,) + tuple(ty.shape[1:])))
        feeds["res"] = r
        tres = torch.tensor(r, requires_grad=True)
    ty = torch_conv(tx, tw, tb, case, act, tres)
    dy = f32(rng, *ty.shape)
    g = Graph(inputs, [Value("y", (None,) + tuple(ty.shape[1:]))], [Node("Conv2D", ins, ["y"], attrs)], inits)
    wrt = (("x",) if want_x else ()) + (("res",) if residual else ())
    got = vjp(g, feeds, list(inits), {"y": dy}, wrt_inputs=wrt)
    ty.backward(torch.tensor(dy))
    close(got["w"], tw.grad, "dw")
    if bias:
        close(got["b"], tb.grad, "db")
    if want_x:
        close(got["x"], tx.grad, "dx")
    if residual:
        close(got["res"], tres.grad, "dres")


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:7])) + f"_s{c[7]}_d{c[8]}_{c[9]}_g{c[10]}")
def test_conv2d_backward(case):
    run_conv_case(case, bias=True, act="relu")
    run_conv_case(case, bias=False, seed=1)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "gelu", "silu", "elu", "leaky_relu", "relu6"])
def test_conv2d_backward_fused_activation(act):
    # gelu, silu, elu, leaky_relu and relu6 read the pre-activation: split off in training graphs.
    run_conv_case(CONV_CASES[1], act=act, seed=3)


def test_conv2d_backward_residual():
    run_conv_case(CONV_CASES[1], act="relu", residual=True, seed=4)
    run_conv_case(CONV_CASES[8], act="silu", residual=True, seed=5)
    run_conv_case(CONV_CASES[2], bias=False, residual=True, seed=6)


def test_conv2d_backward_weights_only_and_bias_only():
    run_conv_case(CONV_CASES[3], want_x=False)
    # Only the bias trained: the filter is a constant of the graph.
    case = CONV_CASES[0]
    rng = np.random.default_rng(7)
    N, H, W, C, OC, KH, KW = case[:7]
    x, w, b = f32(rng, N, H, W, C), f32(rng, KH, KW, C, OC), f32(rng, OC)
    g = Graph([Value("x", (None, H, W, C))], [Value("y", (None, H - 2, W - 2, OC))],
              [Node("Conv2D", ["x", "w", "b"], ["y"], {})], {"w": w, "b": b})
    dy = f32(rng, N, H - 2, W - 2, OC)
    got = vjp(g, {"x": x}, ["b"], {"y": dy})
    close(got["b"], dy.sum(axis=(0, 1, 2)), "db")


def test_empty_batch():
    rng = np.random.default_rng(14)
    w, b = f32(rng, 3, 3, 4, 5), f32(rng, 5)
    g = Graph([Value("x", (None, 6, 6, 4))], [Value("y", (None, 2, 2, 5))],
              [Node("Conv2D", ["x", "w", "b"], ["p"], {"activation": "relu"}),
               Node("MaxPool2D", ["p"], ["y"], {})], {"w": w, "b": b})
    got = vjp(g, {"x": np.zeros((0, 6, 6, 4), np.float32)}, ["w", "b"], {"y": np.zeros((0, 2, 2, 5), np.float32)},
              wrt_inputs=("x",))
    assert got["x"].shape == (0, 6, 6, 4) and not got["w"].any() and not got["b"].any()


def test_conv2d_fused_maxpool_has_no_backward():
    rng = np.random.default_rng(0)
    g = Graph([Value("x", (None, 8, 8, 2))], [Value("y", (None, 3, 3, 4))],
              [Node("Conv2D", ["x", "w"], ["y"], {"maxpool": [2, 2]}, "conv1")], {"w": f32(rng, 3, 3, 2, 4)})
    with pytest.raises(engine.EngineError, match="conv1.*fused max-pool"):
        vjp(g, {"x": f32(rng, 1, 8, 8, 2)}, ["w"], {"y": f32(rng, 1, 3, 3, 4)})


def test_finite_differences_float64():
    # The engine's own float64 forward (ONNX Conv runs float64 on its N-d kernel) against the
    # float32 backward: central differences of L = sum(y * dy).
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 4, 5, 6))
    w = rng.standard_normal((4, 2, 3, 2))
    b = rng.standard_normal(4)
    attrs = {"group": 2, "strides": [2, 1], "dilations": [1, 2], "pads": [1, 0, 0, 1]}
    y_shape = (1, 4, 2, 5)
    dy = rng.standard_normal(y_shape)

    def loss(xv, wv, bv):
        g = Graph([Value("x", xv.shape, "float64")], [Value("y", y_shape, "float64")],
                  [Node("Conv", ["x", "w", "b"], ["y"], attrs)], {"w": wv, "b": bv})
        return float((engine.Model(g).run(None, {"x": xv})[0] * dy).sum())

    g32 = Graph([Value("x", x.shape)], [Value("y", y_shape)], [Node("Conv", ["x", "w", "b"], ["y"], attrs)],
                {"w": w.astype(np.float32), "b": b.astype(np.float32)})
    got = vjp(g32, {"x": x.astype(np.float32)}, ["w", "b"], {"y": dy.astype(np.float32)}, wrt_inputs=("x",))
    eps = 1e-6
    for name, arr in (("x", x), ("w", w), ("b", b)):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            args = {"x": x, "w": w, "b": b}
            plus, minus = arr.copy(), arr.copy()
            plus[i] += eps
            minus[i] -= eps
            num[i] = (loss(*{**args, name: plus}.values()) - loss(*{**args, name: minus}.values())) / (2 * eps)
        np.testing.assert_allclose(got[name], num, rtol=1e-4, atol=1e-4, err_msg=name)


# The input gradient of a stride-1 conv runs on the forward kernels (FilterLayout.DataGrad):
# (N, H, W, C, OC, KH, KW, dilations, pads, groups, the algorithm of that conv on AVX-512)
DATA_GRAD_CASES = [
    (1, 22, 21, 16, 24, 3, 3, (1, 1), (1, 1, 1, 1), 1, "winograd"),
    (2, 9, 8, 20, 18, 3, 2, (2, 1), (2, 0, 1, 1), 1, "indirect"),     # dilation, asymmetric pads
    (2, 6, 7, 12, 10, 1, 1, (1, 1), (0, 0, 0, 0), 2, "pointwise"),
    (2, 9, 9, 8, 8, 3, 3, (1, 1), (1, 1, 1, 1), 8, "depthwise"),
    (2, 9, 9, 4, 8, 3, 3, (1, 1), (0, 1, 2, 1), 4, "im2col"),         # depthwise multiplier 2
    (2, 7, 6, 9, 3, 3, 3, (1, 1), (0, 0, 0, 0), 1, "direct"),          # dy has 3 channels
    (1, 8, 8, 6, 6, 3, 3, (1, 1), (1, 1, 1, 1), 3, "im2col"),
]


@pytest.mark.parametrize("case", DATA_GRAD_CASES, ids=lambda c: f"{c[-1]}_{c[1]}x{c[2]}x{c[3]}to{c[4]}_g{c[9]}")
def test_conv2d_input_gradient_on_forward_kernels(case, isa):
    from grad_helpers import run_step
    from engine.ops.spatial_grad import data_grad_window
    from engine.ops.spatial import Window2D, native_shape
    N, H, W, C, OC, KH, KW, dil, pads, groups, algo = case
    s = Window2D(N, H, W, C, KH, KW, 1, 1, dil[0], dil[1], *pads, OC=OC, groups=groups)
    t = data_grad_window(s)
    assert t is not None and (t.OH, t.OW, t.OC) == (H, W, C)
    got_algo = _C.DynamicConv2D(native_shape(t), _C.FilterLayout.DataGrad).algorithm
    if isa == "avx512":
        assert got_algo == algo
    rng = np.random.default_rng(12)
    w, dy = f32(rng, KH, KW, C // groups, OC), f32(rng, N, s.OH, s.OW, OC)
    want = run_step("conv2d_grad_input", [dy, w], [np.empty((N, H, W, C), np.float32)],
                    [N, H, W, C, OC, KH, KW, 1, 1, dil[0], dil[1], *pads, groups, 0])[0]
    g = Graph([Value("dy", dy.shape), Value("w", w.shape)], [Value("dx", (N, H, W, C))],
              [Node("Conv2DGradInput", ["dy", "w"], ["dx"], {"conv": [N, H, W, C, OC, KH, KW, 1, 1, dil[0], dil[1],
                                                                      *pads, groups]})], {})
    plan, args = _plan(g, {"dy": dy, "w": w})
    assert [step for _, _, step in plan.step_nodes] == ["conv2d_dynamic"]
    close(plan.run(args, _C.ContextPool())[0], want, rtol=1e-4, atol=2e-5)  # winograd: ~1e-5 of the scale


def test_conv2d_input_gradient_falls_back_to_the_scatter():
    from engine.ops.spatial_grad import data_grad_window
    from engine.ops.spatial import Window2D
    assert data_grad_window(Window2D(1, 8, 8, 4, 3, 3, 2, 2, OC=4)) is None               # stride 2
    assert data_grad_window(Window2D(1, 8, 8, 4, 1, 1, pad_top=1, OC=4)) is None          # pad past the kernel
    run_conv_case((1, 6, 6, 4, 5, 1, 1, (1, 1), (1, 1), (1, 0, 0, 1), 1), seed=13)


# -- NHWC pooling --------------------------------------------------------------------------------

def torch_pool_ref(x, k, s, d, pads, is_max, ceil, include_pad):
    """Pooling over x (N, H, W, C torch) window by window: every padding, ceil mode and
    dilation combination, so autograd gives the reference gradient."""
    N, H, W, C = x.shape
    pt, pl, pb, pr = pads

    def n_out(n, pa, pz, k_, d_, s_):
        span = n + pa + pz - d_ * (k_ - 1) - 1
        o = (-(-span // s_) if ceil else span // s_) + 1
        if ceil and (o - 1) * s_ >= n + pa:
            o -= 1
        return o

    OH, OW = n_out(H, pt, pb, k[0], d[0], s[0]), n_out(W, pl, pr, k[1], d[1], s[1])
    rows = []
    for oh in range(OH):
        cols = []
        for ow in range(OW):
            hs = [oh * s[0] - pt + i * d[0] for i in range(k[0])]
            ws = [ow * s[1] - pl + j * d[1] for j in range(k[1])]
            hv, wv = [h for h in hs if 0 <= h < H], [w for w in ws if 0 <= w < W]
            win = x[:, hv][:, :, wv]
            if is_max:
                cols.append(win.amax(dim=(1, 2)))
            else:
                if include_pad:  # torch: the window clipped to the padded input
                    h0, w0 = hs[0], ws[0]
                    cnt = (min(h0 + k[0], H + pb) - h0) * (min(w0 + k[1], W + pr) - w0)
                else:
                    cnt = len(hv) * len(wv)
                cols.append(win.sum(dim=(1, 2)) / cnt)
        rows.append(torch.stack(cols, 1))
    return torch.stack(rows, 1)


# (N, H, W, C, pool, strides, dilations, padding, ceil_mode, count_include_pad)
POOL_CASES = [
    (2, 8, 8, 3, (2, 2), None, (1, 1), "valid", False, False),
    (1, 7, 9, 5, (3, 3), (2, 2), (1, 1), "same", False, False),     # asymmetric same, batch 1
    (2, 9, 7, 4, (3, 2), (2, 1), (1, 1), (1, 0, 1, 1), True, False),  # ceil mode
    (2, 8, 9, 3, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), True, True),  # count_include_pad + ceil
    (1, 11, 10, 2, (3, 2), (3, 2), (1, 1), (1, 1, 1, 0), False, True),
    (2, 7, 7, 17, (2, 2), (1, 1), (1, 1), "valid", False, False),    # overlapping windows
]


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"{c[1]}x{c[2]}x{c[3]}_k{c[4]}_s{c[5]}_{c[7]}_ceil{int(c[8])}_cip{int(c[9])}")
@pytest.mark.parametrize("op", ["MaxPool2D", "AvgPool2D"])
def test_pool2d_backward(case, op):
    N, H, W, C, k, st, dil, pad, ceil, cip = case
    is_max = op == "MaxPool2D"
    cip = cip and not is_max  # an average's option
    st = st or k
    rng = np.random.default_rng(1)
    x, attrs = f32(rng, N, H, W, C), {"pool_size": list(k), "strides": list(st), "padding": pad if isinstance(pad, str) else list(pad),
                                       "ceil_mode": ceil, "count_include_pad": cip}
    if pad == "same":
        (pt, pb), (pl, pr) = same_pads(H, k[0], st[0], 1), same_pads(W, k[1], st[1], 1)
        pads = (pt, pl, pb, pr)
    else:
        pads = (0, 0, 0, 0) if pad == "valid" else pad
    tx = torch.tensor(x, requires_grad=True)
    ty = torch_pool_ref(tx, k, st, dil, pads, is_max, ceil, cip)
    dy = f32(rng, *ty.shape)
    g = Graph([Value("x", (None, H, W, C))], [Value("y", (None,) + tuple(ty.shape[1:]))],
              [Node(op, ["x"], ["y"], attrs)], {})
    got = vjp(g, {"x": x}, [], {"y": dy}, wrt_inputs=("x",))
    ty.backward(torch.tensor(dy))
    close(got["x"], tx.grad, op)


def test_maxpool2d_dilation_against_torch():
    rng = np.random.default_rng(2)
    x = f32(rng, 2, 11, 10, 3)
    attrs = {"pool_size": [3, 2], "strides": [2, 1], "dilations": [2, 3], "padding": [1, 1, 1, 1]}
    tx = torch.tensor(x, requires_grad=True)
    ty = F.max_pool2d(tx.permute(0, 3, 1, 2), (3, 2), (2, 1), (1, 1), (2, 3)).permute(0, 2, 3, 1)
    dy = f32(rng, *ty.shape)
    g = Graph([Value("x", (None, 11, 10, 3))], [Value("y", (None,) + tuple(ty.shape[1:]))],
              [Node("MaxPool2D", ["x"], ["y"], attrs)], {})
    got = vjp(g, {"x": x}, [], {"y": dy}, wrt_inputs=("x",))
    ty.backward(torch.tensor(dy))
    close(got["x"], tx.grad)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 4, 6), (2, 3, 2, 4, 5)])
def test_global_pools_backward(shape, keepdims):
    rng = np.random.default_rng(3)
    x = f32(rng, *shape)
    x[0, 0, ..., 0] = 4.0  # a tie for the maximum: the gradient is shared, as Keras's reduce_max
    axes = tuple(range(1, len(shape) - 1))
    for op, fn in (("GlobalAveragePool2D", lambda t: t.mean(dim=axes, keepdim=keepdims)),
                   ("GlobalMaxPool2D", lambda t: t.amax(dim=axes, keepdim=keepdims))):
        tx = torch.tensor(x, requires_grad=True)
        ty = fn(tx)
        dy = f32(rng, *ty.shape)
        g = Graph([Value("x", (None,) + shape[1:])], [Value("y", (None,) + tuple(ty.shape[1:]))],
                  [Node(op, ["x"], ["y"], {"keepdims": keepdims})], {})
        np.testing.assert_allclose(engine.Model(g).run(None, {"x": x})[0], ty.detach().numpy(), rtol=1e-6, atol=1e-6)
        got = vjp(g, {"x": x}, [], {"y": dy}, wrt_inputs=("x",))
        ty.backward(torch.tensor(dy))
        close(got["x"], tx.grad, op)


# -- ONNX ops (NCHW) -----------------------------------------------------------------------------

# (x shape, OC, kernel, attrs)
ONNX_CONV_CASES = [
    ((2, 3, 9, 8), 6, (3, 3), {"pads": [1, 0, 2, 1], "strides": [2, 1]}),
    ((1, 4, 7, 7), 8, (3, 3), {"group": 2, "dilations": [2, 1], "auto_pad": "SAME_UPPER"}),
    ((2, 6, 5, 6), 6, (3, 3), {"group": 6, "pads": [1, 1, 1, 1]}),              # depthwise
    ((2, 5, 6, 4), 7, (1, 1), {}),                                              # 1x1
    ((2, 1, 6, 6), 4, (3, 3), {}),                                              # C = 1: no transpose
    ((2, 4, 11), 6, (3,), {"pads": [2, 1], "strides": [2], "dilations": [2]}),  # 1-D
    ((1, 6, 9), 4, (5,), {"group": 2, "auto_pad": "SAME_LOWER"}),              # 1-D groups, batch 1
]


def onnx_torch_pads(attrs, xs, kernel):
    nd = len(kernel)
    st = attrs.get("strides", [1] * nd)
    dl = attrs.get("dilations", [1] * nd)
    ap = attrs.get("auto_pad", "NOTSET")
    if ap.startswith("SAME"):
        begin, end = [], []
        for i, k, s, d in zip(xs[2:], kernel, st, dl):
            total = max(0, (-(-i // s) - 1) * s + (k - 1) * d + 1 - i)
            b0 = total // 2 if ap == "SAME_UPPER" else total - total // 2
            begin.append(b0)
            end.append(total - b0)
        return begin, end, st, dl
    pads = attrs.get("pads", [0] * 2 * nd)
    return pads[:nd], pads[nd:], st, dl


def pad_nchw(t, begin, end, value=0.0):
    spec = []
    for b0, e0 in reversed(list(zip(begin, end))):
        spec += [b0, e0]
    return F.pad(t, spec, value=value)


@pytest.mark.parametrize("case", ONNX_CONV_CASES, ids=lambda c: f"{c[0]}_oc{c[1]}_k{c[2]}")
def test_onnx_conv_backward(case):
    xs, oc, kernel, attrs = case
    group = attrs.get("group", 1)
    rng = np.random.default_rng(4)
    x = f32(rng, *xs)
    w = f32(rng, oc, xs[1] // group, *kernel)
    b = f32(rng, oc)
    begin, end, st, dl = onnx_torch_pads(attrs, xs, kernel)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    conv = F.conv2d if len(kernel) == 2 else F.conv1d
    ty = conv(pad_nchw(tx, begin, end), tw, tb, stride=st, dilation=dl, groups=group)
    check_onnx_layer("Conv", attrs, {"x": (x, tx), "w": (w, tw), "b": (b, tb)}, ty, rng)


def check_onnx_layer(op, attrs, arrays, ty, rng):
    """The node op(x, w, b) against torch's ty computed from the tensors in arrays
    ({name: (array, tensor)}): forward, then every gradient."""
    x = arrays["x"][0]
    dy = f32(rng, *ty.shape)
    g = Graph([Value("x", (None,) + x.shape[1:])], [Value("y", (None,) + tuple(ty.shape[1:]))],
              [Node(op, ["x", "w", "b"], ["y"], attrs)], {k: arrays[k][0] for k in ("w", "b")})
    np.testing.assert_allclose(engine.Model(g).run(None, {"x": x})[0], ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    got = vjp(g, {"x": x}, ["w", "b"], {"y": dy}, wrt_inputs=("x",))
    ty.backward(torch.tensor(dy))
    for k, (_, t) in arrays.items():
        close(got[k], t.grad, k)


@pytest.mark.parametrize("case", [
    ((2, 4, 5, 4), 3, (3, 3), {"strides": [2, 2]}, (2, 2)),
    ((1, 6, 4, 5), 4, (3, 2), {"strides": [2, 1], "pads": [1, 0, 1, 1], "group": 2}, (3, 2)),
    ((2, 3, 6), 5, (4,), {"strides": [3], "output_padding": [1], "dilations": [1]}, (3,)),
    ((2, 4, 3, 3), 4, (3, 3), {"strides": [2, 2], "output_padding": [1, 1], "pads": [1, 1, 1, 1]}, (2, 2)),
], ids=str)
def test_onnx_conv_transpose_backward(case):
    xs, oc, kernel, attrs, _ = case
    group = attrs.get("group", 1)
    rng = np.random.default_rng(5)
    x = f32(rng, *xs)
    w = f32(rng, xs[1], oc // group, *kernel)
    b = f32(rng, oc)
    nd = len(kernel)
    pads = attrs.get("pads", [0] * 2 * nd)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    fn = F.conv_transpose2d if nd == 2 else F.conv_transpose1d
    full = fn(tx, tw, tb, stride=attrs.get("strides", 1), output_padding=attrs.get("output_padding", 0),
              groups=group, dilation=attrs.get("dilations", 1))
    sl = [slice(None), slice(None)] + [slice(pb, full.shape[2 + i] - pe) for i, (pb, pe) in
                                       enumerate(zip(pads[:nd], pads[nd:]))]
    check_onnx_layer("ConvTranspose", attrs, {"x": (x, tx), "w": (w, tw), "b": (b, tb)}, full[tuple(sl)], rng)


# (x shape, attrs)
ONNX_POOL_CASES = [
    ((2, 3, 8, 7), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((1, 4, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ((2, 2, 7, 8), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1], "count_include_pad": 1}),
    ((2, 5, 10, 9), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((2, 3, 11), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),            # 1-D
    ((1, 1, 9, 8), {"kernel_shape": [2, 3], "strides": [1, 2]}),                    # C = 1
]


@pytest.mark.parametrize("case", ONNX_POOL_CASES, ids=lambda c: f"{c[0]}_{sorted(c[1].items())}")
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_onnx_pool_backward(case, op):
    xs, attrs = case
    rng = np.random.default_rng(6)
    x = f32(rng, *xs)
    kernel = attrs["kernel_shape"]
    begin, end, st, dl = onnx_torch_pads(attrs, xs, kernel)
    x4 = x if len(xs) == 4 else x[:, :, None]
    k2 = tuple(kernel) if len(kernel) == 2 else (1, kernel[0])
    s2 = tuple(st) if len(st) == 2 else (1, st[0])
    pads = (begin[0], begin[1], end[0], end[1]) if len(kernel) == 2 else (0, begin[0], 0, end[0])
    tx = torch.tensor(x4.transpose(0, 2, 3, 1), requires_grad=True)
    ty = torch_pool_ref(tx, k2, s2, (1, 1), pads, op == "MaxPool", bool(attrs.get("ceil_mode", 0)),
                        bool(attrs.get("count_include_pad", 0)))
    ty_nchw = ty.permute(0, 3, 1, 2).reshape((xs[0], xs[1]) + ((ty.shape[1], ty.shape[2]) if len(xs) == 4 else (ty.shape[2],)))
    dy = f32(rng, *ty_nchw.shape)
    g = Graph([Value("x", (None,) + xs[1:])], [Value("y", (None,) + tuple(ty_nchw.shape[1:]))],
              [Node(op, ["x"], ["y"], attrs)], {})
    np.testing.assert_allclose(engine.Model(g).run(None, {"x": x})[0], ty_nchw.detach().numpy(), rtol=1e-5, atol=1e-5)
    got = vjp(g, {"x": x}, [], {"y": dy}, wrt_inputs=("x",))
    ty_nchw.backward(torch.tensor(dy))
    want = tx.grad.numpy().transpose(0, 3, 1, 2).reshape(xs)
    close(got["x"], want, op)


def test_onnx_global_pools_backward():
    rng = np.random.default_rng(8)
    for xs in ((2, 3, 5, 4), (1, 4, 7)):
        x = f32(rng, *xs)
        axes = tuple(range(2, len(xs)))
        for op, fn in (("GlobalAveragePool", lambda t: t.mean(dim=axes, keepdim=True)),
                       ("GlobalMaxPool", lambda t: t.amax(dim=axes, keepdim=True))):
            tx = torch.tensor(x, requires_grad=True)
            ty = fn(tx)
            dy = f32(rng, *ty.shape)
            g = Graph([Value("x", (None,) + xs[1:])], [Value("y", (None,) + tuple(ty.shape[1:]))],
                      [Node(op, ["x"], ["y"])], {})
            got = vjp(g, {"x": x}, [], {"y": dy}, wrt_inputs=("x",))
            ty.backward(torch.tensor(dy))
            close(got["x"], tx.grad, op)


def test_onnx_3d_has_no_backward():
    rng = np.random.default_rng(9)
    g = Graph([Value("x", (None, 2, 4, 4, 4))], [Value("y", (None, 3, 2, 2, 2))],
              [Node("Conv", ["x", "w"], ["y"], {}, "conv3d")], {"w": f32(rng, 3, 2, 3, 3, 3)})
    with pytest.raises(NoGradientError, match="conv3d.*1-D and 2-D"):
        vjp(g, {"x": f32(rng, 1, 2, 4, 4, 4)}, ["w"], {"y": f32(rng, 1, 3, 2, 2, 2)})


# -- the conv2d_dynamic step: a filter read at run time -------------------------------------------

# (shape args as CONV_CASES, algorithm on AVX-512)
FAMILIES = [
    ((2, 9, 8, 3, 20, 3, 3, (1, 1), (1, 1), (1, 0, 1, 0), 1), "direct"),
    ((2, 6, 5, 8, 12, 1, 1, (1, 1), (1, 1), "valid", 2), "pointwise"),
    ((2, 8, 7, 6, 10, 3, 3, (2, 1), (1, 1), (1, 1, 0, 0), 2), "im2col"),
    ((2, 8, 7, 6, 12, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 6), "depthwise"),
    ((2, 11, 10, 24, 40, 3, 3, (2, 1), (1, 2), (1, 1, 1, 1), 1), "indirect"),
    ((1, 22, 21, 16, 33, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 1), "winograd"),
]


def _shape(case):
    N, H, W, C, OC, KH, KW, st, dil, pad, groups = case
    node = Node("Conv2D", ["x", "w"], ["y"], {"strides": list(st), "dilations": list(dil), "groups": groups,
                                               "padding": pad if isinstance(pad, str) else list(pad)})
    from engine.ops.spatial import conv_params, native_shape
    return native_shape(conv_params(node, (N, H, W, C), (KH, KW, C // groups, OC)))


def _conv_models(case, act="relu", residual=False, maxpool=None):
    """The same Conv2D with its filter and bias as weights (packed once) and as inputs (packed
    by the step on each call)."""
    N, H, W, C, OC, KH, KW, st, dil, pad, groups = case
    attrs = {"strides": list(st), "dilations": list(dil), "groups": groups, "activation": act,
             "padding": pad if isinstance(pad, str) else list(pad)}
    if maxpool:
        attrs["maxpool"] = list(maxpool)
    s = _shape(case)
    out = (None, s.OH // (maxpool or (1, 1))[0], s.OW // (maxpool or (1, 1))[1], OC)
    rng = np.random.default_rng(0)
    w, b = f32(rng, KH, KW, C // groups, OC), f32(rng, OC)
    ins = ["x", "w", "b"] + (["res"] if residual else [])
    x_in = [Value("x", (None, H, W, C))] + ([Value("res", out)] if residual else [])
    packed = Graph(x_in, [Value("y", out)], [Node("Conv2D", ins, ["y"], attrs)], {"w": w, "b": b})
    dynamic = Graph(x_in + [Value("w", w.shape), Value("b", b.shape)], [Value("y", out)],
                    [Node("Conv2D", ins, ["y"], attrs)], {})
    return packed, dynamic, w, b, out


def _plan(graph, feeds):
    shapes = {k: v.shape for k, v in feeds.items()}
    return Plan(Schedule(graph), shapes, {}), [feeds[v.name] for v in graph.inputs]


@pytest.mark.parametrize("case,algo", FAMILIES, ids=[f[1] for f in FAMILIES])
def test_dynamic_filter_equals_packed(case, algo, isa, threads):
    s = _shape(case)
    packed_algo = _C.PackedConv2D(s, np.zeros((s.KH, s.KW, s.C // s.groups, s.OC), np.float32)).algorithm
    assert _C.DynamicConv2D(s).algorithm == packed_algo
    if isa == "avx512":
        assert packed_algo == algo
    rng = np.random.default_rng(1)
    for act, residual in (("relu", False), ("tanh", True), (None, False)):
        packed, dynamic, w, b, out = _conv_models(case, act, residual)
        x = f32(rng, *((case[0],) + tuple(case[1:4])))
        feeds = {"x": x}
        if residual:
            feeds["res"] = f32(rng, case[0], *out[1:])
        plan_p, args_p = _plan(packed, feeds)
        plan_d, args_d = _plan(dynamic, {**feeds, "w": w, "b": b})
        assert any(step == "conv2d_dynamic" for _, _, step in plan_d.step_nodes)
        want = plan_p.run(args_p, _C.ContextPool())[0]
        got = plan_d.run(args_d, _C.ContextPool())[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"{algo} {act} residual={residual}")
        # The filter is read on every call: new values, same plan.
        w2 = (w * -0.5).astype(np.float32)
        got2 = plan_d.run([w2 if v.name == "w" else a for v, a in zip(dynamic.inputs, args_d)], _C.ContextPool())[0]
        packed2 = Graph(packed.inputs, packed.outputs, packed.nodes, {"w": w2, "b": b})
        want2 = _plan(packed2, feeds)[0].run(args_p, _C.ContextPool())[0]
        np.testing.assert_allclose(got2, want2, rtol=1e-5, atol=1e-5)


def test_dynamic_filter_fused_maxpool_and_batch_one():
    case = (1, 12, 10, 3, 17, 3, 3, (1, 1), (1, 1), "valid", 1)
    packed, dynamic, w, b, out = _conv_models(case, "relu", maxpool=(2, 2))
    x = f32(np.random.default_rng(2), 1, 12, 10, 3)
    want = _plan(packed, {"x": x})[0].run([x], _C.ContextPool())[0]
    plan_d, args = _plan(dynamic, {"x": x, "w": w, "b": b})
    np.testing.assert_allclose(plan_d.run(args, _C.ContextPool())[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [FAMILIES[1][0], FAMILIES[4][0], FAMILIES[5][0]])
def test_dynamic_oihw_filter_equals_packed(case, isa):
    # ONNX Conv with its filter as a graph input: the step reads OIHW and packs it per call.
    N, H, W, C, OC, KH, KW, st, dil, pad, groups = case
    pads = [0, 0, 0, 0] if pad == "valid" else [pad[0], pad[1], pad[2], pad[3]]
    attrs = {"strides": list(st), "dilations": list(dil), "group": groups, "pads": pads}
    rng = np.random.default_rng(3)
    w, b, x = f32(rng, OC, C // groups, KH, KW), f32(rng, OC), f32(rng, N, C, H, W)
    s = _shape(case)
    out = (None, OC, s.OH, s.OW)
    packed = Graph([Value("x", (None, C, H, W))], [Value("y", out)], [Node("Conv", ["x", "w", "b"], ["y"], attrs)],
                   {"w": w, "b": b})
    dynamic = Graph([Value("x", (None, C, H, W)), Value("w", w.shape), Value("b", b.shape)], [Value("y", out)],
                    [Node("Conv", ["x", "w", "b"], ["y"], attrs)], {})
    want = _plan(packed, {"x": x})[0].run([x], _C.ContextPool())[0]
    plan_d, args = _plan(dynamic, {"x": x, "w": w, "b": b})
    assert any(step == "conv2d_dynamic" for _, _, step in plan_d.step_nodes)
    np.testing.assert_allclose(plan_d.run(args, _C.ContextPool())[0], want, rtol=1e-5, atol=1e-5)


def test_dynamic_workspace_too_small_is_an_error():
    from engine.runtime.plan import Schedule  # noqa: F401
    s = _shape(FAMILIES[4][0])
    need = _C.DynamicConv2D(s).workspace_floats
    prog = _C.Program()
    slots = [prog.new_slot() for _ in range(4)]
    ints = [s.N, s.H, s.W, s.C, s.OC, s.KH, s.KW, s.stride_h, s.stride_w, s.dil_h, s.dil_w, s.pad_top, s.pad_left,
            s.pad_bottom, s.pad_right, s.groups, 0, 0, 0, 0, need - 1]
    with pytest.raises(engine.EngineError, match="workspace holds"):
        prog.add_step("conv2d_dynamic", 1, [slots[0], slots[1], -1, -1, slots[2]], [slots[3]], [1, 1, 0, 0, 1], [1],
                      ints, [0.0, 0.0])


@pytest.mark.parametrize("case,algo", [FAMILIES[0], FAMILIES[4], FAMILIES[5], FAMILIES[2]],
                         ids=["direct", "indirect", "winograd", "im2col"])
def test_concurrent_runs_of_one_program(case, algo, set_threads):
    # Two Python threads run one planned program at once, each with its own filter: every call
    # packs into its own context's workspace.
    set_threads(2)
    _, dynamic, w, b, out = _conv_models(case, "relu")
    rng = np.random.default_rng(4)
    x = f32(rng, *((case[0],) + tuple(case[1:4])))
    plan, _ = _plan(dynamic, {"x": x, "w": w, "b": b})
    pool = _C.ContextPool()
    filters = [f32(rng, *w.shape) for _ in range(2)]
    wants = [plan.run([x, f, b], pool)[0] for f in filters]
    errors = []

    def worker(k):
        try:
            for _ in range(25):
                got = plan.run([x, filters[k], b], pool)[0]
                np.testing.assert_array_equal(got, wants[k])
        except Exception as e:  # noqa: BLE001  (reported by the main thread)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


# -- engine.nn layers in training graphs ------------------------------------------------------

def _train_grads(model, x, dy):
    g = model.to_graph(training=True)
    params = [n for layer in model.layers for n in (f"{layer.name}/{w}" for w in layer.weight_names)]
    out = g.outputs[0].name
    return vjp(g, {g.inputs[0].name: x}, params, {out: dy}, wrt_inputs=(g.inputs[0].name,)), g


def _weights(layer):
    return [torch.tensor(w, requires_grad=True) for w in layer.get_weights()]


def test_nn_conv1d_training():
    nn.set_random_seed(0)
    layer = nn.Conv1D(5, 3, strides=2, padding="causal", dilation_rate=1, activation="relu", name="c1")
    m = nn.Sequential([nn.Input((11, 4)), layer])
    rng = np.random.default_rng(0)
    x = f32(rng, 2, 11, 4)
    k, bias = _weights(layer)
    tx = torch.tensor(x, requires_grad=True)
    ty = F.relu(F.conv1d(F.pad(tx.permute(0, 2, 1), (2, 0)), k.permute(2, 1, 0), bias, stride=2)).permute(0, 2, 1)
    dy = f32(rng, *ty.shape)
    got, g = _train_grads(m, x, dy)
    assert not any(n.startswith("c1/kernel2d") for n in g.initializers)  # a node on the kernel, not a copy
    ty.backward(torch.tensor(dy))
    close(got["c1/kernel"], k.grad, "kernel")
    close(got["c1/bias"], bias.grad, "bias")
    close(got[g.inputs[0].name], tx.grad, "x")
    # Inference graphs are as before: the reshaped kernel is a constant.
    assert "c1/kernel2d" in m.to_graph().initializers


def test_nn_depthwise_and_separable_training():
    nn.set_random_seed(1)
    dw = nn.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")
    sep = nn.SeparableConv2D(6, 3, strides=2, padding="same", activation="tanh", name="sep")
    m = nn.Sequential([nn.Input((9, 8, 3)), dw, sep])
    rng = np.random.default_rng(1)
    x = f32(rng, 2, 9, 8, 3)
    dk, db = _weights(dw)
    sk, pk, sb = _weights(sep)
    tx = torch.tensor(x, requires_grad=True)
    h = tx.permute(0, 3, 1, 2)
    # Keras depthwise kernel (k, k, in, mult) -> torch (in·mult, 1, k, k), channel c·mult + m
    h = F.conv2d(F.pad(h, (1, 1, 1, 1)), dk.permute(2, 3, 0, 1).reshape(6, 1, 3, 3), db, groups=3)
    (pt, pb), (pl, pr) = same_pads(9, 3, 2, 1), same_pads(8, 3, 2, 1)
    h = F.conv2d(F.pad(h, (pl, pr, pt, pb)), sk.permute(2, 3, 0, 1).reshape(6, 1, 3, 3), None, stride=2, groups=6)
    h = torch.tanh(F.conv2d(h, pk.permute(3, 2, 0, 1), sb))
    ty = h.permute(0, 2, 3, 1)
    dy = f32(rng, *ty.shape)
    got, g = _train_grads(m, x, dy)
    ty.backward(torch.tensor(dy))
    for name, t in (("dw/depthwise_kernel", dk), ("dw/bias", db), ("sep/depthwise_kernel", sk),
                    ("sep/pointwise_kernel", pk), ("sep/bias", sb)):
        close(got[name], t.grad, name)
    close(got[g.inputs[0].name], tx.grad, "x")


def test_nn_conv2d_transpose_and_pools_training():
    nn.set_random_seed(2)
    ct = nn.Conv2DTranspose(4, 3, strides=2, padding="valid", name="ct")
    m = nn.Sequential([nn.Input((5, 4, 3)), ct, nn.MaxPooling2D(2, name="mp"),
                       nn.GlobalMaxPooling2D(name="gmp")])
    rng = np.random.default_rng(2)
    x = f32(rng, 2, 5, 4, 3)
    k, bias = _weights(ct)
    tx = torch.tensor(x, requires_grad=True)
    # Keras kernel (k, k, out, in) -> torch conv_transpose (in, out, k, k)
    h = F.conv_transpose2d(tx.permute(0, 3, 1, 2), k.permute(3, 2, 0, 1), bias, stride=2)
    h = F.max_pool2d(h, 2)
    ty = h.amax(dim=(2, 3))
    dy = f32(rng, *ty.shape)
    got, g = _train_grads(m, x, dy)
    assert any(n.op == "Transpose" and n.inputs[0] == "ct/kernel" for n in g.nodes)
    assert any(n.op == "GlobalMaxPool2D" for n in g.nodes)
    assert not any(n.op == "GlobalMaxPool2D" for n in m.to_graph().nodes)  # inference: as before
    ty.backward(torch.tensor(dy))
    close(got["ct/kernel"], k.grad, "kernel")
    close(got["ct/bias"], bias.grad, "bias")
    close(got[g.inputs[0].name], tx.grad, "x")


def test_nn_global_average_pooling_1d_3d_training():
    for shape, layer in (((7, 3), nn.GlobalAveragePooling1D(keepdims=True)), ((3, 4, 2, 5), nn.GlobalMaxPooling3D())):
        m = nn.Sequential([nn.Input(shape), layer])
        rng = np.random.default_rng(3)
        x = f32(rng, 2, *shape)
        axes = tuple(range(1, len(shape)))
        tx = torch.tensor(x, requires_grad=True)
        ty = tx.mean(dim=axes, keepdim=True) if isinstance(layer, nn.GlobalAveragePooling1D) else tx.amax(dim=axes)
        dy = f32(rng, *ty.shape)
        got, g = _train_grads(m, x, dy)
        ty.backward(torch.tensor(dy))
        close(got[g.inputs[0].name], tx.grad)
        np.testing.assert_allclose(engine.Model(g).run(None, {g.inputs[0].name: x})[0], ty.detach().numpy(), rtol=1e-6,
                                   atol=1e-6)


def test_nn_conv3d_training_graph_uses_nodes():
    m = nn.Sequential([nn.Input((4, 4, 4, 2)), nn.Conv3D(3, 2, name="c3")])
    g = m.to_graph(training=True)
    assert any(n.op == "Transpose" and n.inputs[0] == "c3/kernel" for n in g.nodes)
    assert "c3/oidhw" in m.to_graph().initializers
    rng = np.random.default_rng(4)
    with pytest.raises(NoGradientError, match="1-D and 2-D"):
        _train_grads(m, f32(rng, 1, 4, 4, 4, 2), f32(rng, 1, 3, 3, 3, 3))


# -- against Keras 3 (torch backend): the gradients of every conv / pool layer ----------------

KERAS_LAYERS = [
    ((11, 4), lambda L: L.Conv1D(5, 3, padding="same", dilation_rate=2, activation="gelu")),
    ((12, 3), lambda L: L.Conv1D(4, 4, strides=3, padding="causal")),
    ((9, 8, 3), lambda L: L.Conv2D(6, (3, 2), strides=2, padding="same", activation="relu")),
    ((8, 7, 4), lambda L: L.Conv2D(8, 3, groups=2, dilation_rate=(1, 2), activation="swish")),
    ((10, 3), lambda L: L.DepthwiseConv1D(3, depth_multiplier=2, padding="same")),
    ((8, 9, 3), lambda L: L.DepthwiseConv2D((3, 3), strides=2, activation="relu6")),
    ((11, 4), lambda L: L.SeparableConv1D(5, 3, padding="same", activation="tanh")),
    ((7, 6, 3), lambda L: L.SeparableConv2D(4, 3, depth_multiplier=2, padding="same")),
    ((6, 3), lambda L: L.Conv1DTranspose(4, 3, strides=2, padding="same")),
    ((5, 4, 3), lambda L: L.Conv2DTranspose(5, 3, strides=2, padding="same", activation="relu")),
    ((5, 4, 2), lambda L: L.Conv2DTranspose(3, (2, 3), strides=(2, 1), padding="valid", output_padding=(1, 0))),
    ((11, 3), lambda L: L.MaxPooling1D(3, strides=2, padding="same")),
    ((9, 7, 3), lambda L: L.AveragePooling2D(3, strides=2, padding="same")),
    ((9, 7, 3), lambda L: L.MaxPooling2D((2, 3))),
    ((7, 3), lambda L: L.GlobalMaxPooling1D()),
    ((5, 4, 3), lambda L: L.GlobalMaxPooling2D(keepdims=True)),
    ((3, 4, 2, 3), lambda L: L.GlobalAveragePooling3D()),
]


@pytest.mark.parametrize("shape,make", KERAS_LAYERS, ids=lambda v: "" if callable(v) else "x".join(map(str, v)))
def test_nn_layers_train_like_keras(shape, make):
    import os
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("needs Keras on the torch backend")
    rng = np.random.default_rng(15)
    klayer = make(keras.layers)
    kmodel = keras.Sequential([keras.Input(shape), klayer])
    weights = [rng.normal(0, 0.5, tuple(v.shape)).astype(np.float32) for v in kmodel.weights]
    kmodel.set_weights(weights)
    x = f32(rng, 2, *shape)
    tx = torch.tensor(x, requires_grad=True)
    ty = kmodel(tx)
    dy = f32(rng, *ty.shape)
    (ty * torch.tensor(dy)).sum().backward()

    layer = make(nn)
    model = nn.Sequential([nn.Input(shape), layer])
    model.set_weights(weights)
    got, g = _train_grads(model, x, dy)
    close(got[g.inputs[0].name], tx.grad, "x")
    for name, v in zip(layer.weight_names, kmodel.weights):
        close(got[f"{layer.name}/{name}"], v.value.grad, name)
