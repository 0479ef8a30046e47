"""ONNX Conv, ConvTranspose, pools, Gemm and MatMul (engine/ops/nchw*.py, linear.py) against
independent references (torch in float64, numpy, onnxruntime) on random shapes: odd sizes,
batch 1 and 0, groups and depthwise, dilation, asymmetric pads, auto_pad, every element type
the ops take; the float16 conversion on every ISA path; bad input refused with a clear
EngineError."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

import engine
from engine import _C

torch.set_num_threads(1)

NP_TO_ONNX = {np.dtype(k): v for k, v in [
    (np.float32, TensorProto.FLOAT), (np.float64, TensorProto.DOUBLE), (np.float16, TensorProto.FLOAT16),
    (np.int8, TensorProto.INT8), (np.uint8, TensorProto.UINT8), (np.int32, TensorProto.INT32),
    (np.int64, TensorProto.INT64), (np.uint32, TensorProto.UINT32), (np.uint64, TensorProto.UINT64)]}


def make_model(op, inputs, weights=None, attrs=None, n_out=1, opset=22):
    """One-node ONNX model: `inputs` feed graph inputs, `weights` become initializers."""
    weights = weights or {}
    names = list(inputs) + list(weights)
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **(attrs or {}))
    elem = NP_TO_ONNX[next(iter(inputs.values())).dtype]
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, NP_TO_ONNX[v.dtype], v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, elem if i == 0 else TensorProto.INT64, None) for i, o in enumerate(outs)],
        [onnx.numpy_helper.from_array(v, k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def run(op, inputs, weights=None, attrs=None, n_out=1, optimize=True):
    model = engine.load(make_model(op, inputs, weights, attrs, n_out), optimize=optimize)
    return model.run(None, inputs)


def run_ort(op, inputs, weights=None, attrs=None, n_out=1):
    import onnxruntime as ort

    sess = ort.InferenceSession(make_model(op, inputs, weights, attrs, n_out), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def rnd(rng, shape, dtype=np.float32):
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -100), min(info.max, 100), shape, endpoint=True).astype(dtype)
    return rng.uniform(-1, 1, shape).astype(dtype)


def close(got, want, dtype, rtol=None, atol=None):
    tol = {np.float16: (2e-3, 2e-3), np.float32: (1e-4, 1e-5), np.float64: (1e-10, 1e-12)}
    r, a = tol.get(np.dtype(dtype).type, (0, 0))
    assert got.dtype == np.dtype(dtype), f"dtype {got.dtype}, expected {np.dtype(dtype)}"
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    np.testing.assert_allclose(got.astype(np.float64), np.asarray(want, np.float64),
                               rtol=rtol if rtol is not None else r, atol=atol if atol is not None else a)


# -- references ---------------------------------------------------------------------------------

def _torch_pad(x, begin, end):
    pad = []
    for b, e in zip(reversed(begin), reversed(end)):
        pad += [b, e]
    return F.pad(x, pad)


def ref_conv(x, w, b, strides, pads, dil, group):
    nd = x.ndim - 2
    t = _torch_pad(torch.from_numpy(x.astype(np.float64)), pads[:nd], pads[nd:])
    fn = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    y = fn(t, torch.from_numpy(w.astype(np.float64)), None if b is None else torch.from_numpy(b.astype(np.float64)),
           stride=strides, dilation=dil, groups=group)
    return y.numpy()


def ref_conv_transpose(x, w, b, strides, pads, dil, group, out_pad):
    nd = x.ndim - 2
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
    full = fn(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
              stride=strides, dilation=dil, groups=group)
    full = _torch_pad(full, [0] * nd, list(out_pad))
    full = _torch_pad(full, [-p for p in pads[:nd]], [-p for p in pads[nd:]])  # negative pad crops
    y = full.numpy()
    if b is not None:
        y = y + b.astype(np.float64).reshape((1, -1) + (1,) * nd)
    return y


def ref_pool(x, kind, kernel, strides, pads, dil, out, count_include_pad=0, p=2, storage_order=0):
    """Direct definition, over the output positions; NaN propagates through max (torch)."""
    nd = len(kernel)
    N, C = x.shape[:2]
    ins = x.shape[2:]
    xf = x.astype(np.float64)
    y = np.zeros((N, C) + tuple(out))
    idx = np.zeros((N, C) + tuple(out), np.int64)
    for o in itertools.product(*[range(n) for n in out]):
        taps, valid, inside_pad = [], [], 0
        for k in itertools.product(*[range(n) for n in kernel]):
            pos = [o[d] * strides[d] - pads[d] + k[d] * dil[d] for d in range(nd)]
            if all(0 <= pos[d] < ins[d] for d in range(nd)):
                taps.append(pos)
            if all(-pads[d] <= pos[d] < ins[d] + pads[nd + d] for d in range(nd)):
                inside_pad += 1
        vals = np.stack([xf[(slice(None), slice(None)) + tuple(t)] for t in taps], -1)
        if kind == "MaxPool":
            y[(...,) + o] = vals.max(-1)
            first = vals.argmax(-1)
            for n, c in itertools.product(range(N), range(C)):
                t = taps[first[n, c]]
                flat = np.ravel_multi_index(t, ins, order="F" if storage_order else "C")
                idx[(n, c) + o] = (n * C + c) * int(np.prod(ins)) + flat
        elif kind == "AveragePool":
            y[(...,) + o] = vals.sum(-1) / (inside_pad if count_include_pad else len(taps))
        else:
            y[(...,) + o] = (np.abs(vals) ** p).sum(-1) ** (1.0 / p)
    return y, idx


# -- Conv ---------------------------------------------------------------------------------------

CONV_CASES = [  # (x shape, OC, kernel, strides, pads, dilations, group)
    ((2, 3, 9), 4, (3,), (1,), (1, 2), (1,), 1),
    ((1, 4, 11), 6, (4,), (2,), (0, 0), (2,), 2),
    ((2, 3, 7, 9), 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((1, 6, 8, 7), 6, (3, 2), (2, 1), (0, 1, 2, 0), (2, 1), 6),        # depthwise, asymmetric pads
    ((2, 4, 6, 5), 8, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 2),        # pointwise, grouped
    ((1, 1, 10, 10), 3, (5, 5), (3, 2), (2, 2, 2, 2), (1, 1), 1),      # C = 1: no input transpose
    ((3, 5, 6, 6), 1, (3, 3), (1, 1), (1, 0, 0, 1), (1, 2), 1),        # OC = 1
    ((2, 4, 1, 1), 7, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),        # one pixel
    ((1, 2, 5, 6, 7), 4, (3, 2, 3), (1, 2, 1), (1, 0, 1, 1, 1, 0), (1, 1, 2), 2),
    ((2, 3, 4, 4, 4), 3, (2, 2, 2), (2, 2, 2), (0, 0, 0, 0, 0, 0), (1, 1, 1), 3),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"{c[0]}-oc{c[1]}-g{c[6]}" for c in CONV_CASES])
@pytest.mark.parametrize("const_w", [True, False], ids=["const_w", "runtime_w"])
def test_conv_matches_torch(rng, case, const_w):
    xs, oc, k, s, p, d, g = case
    x = rnd(rng, xs)
    w = rnd(rng, (oc, xs[1] // g) + k)
    b = rnd(rng, (oc,))
    attrs = dict(kernel_shape=list(k), strides=list(s), pads=list(p), dilations=list(d), group=g)
    ins, ws = ({"x": x}, {"w": w, "b": b}) if const_w else ({"x": x, "w": w, "b": b}, {})
    close(run("Conv", ins, ws, attrs)[0], ref_conv(x, w, b, s, p, d, g), np.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_conv_float64_float16(rng, dtype):
    x, w, b = rnd(rng, (2, 4, 7, 6), dtype), rnd(rng, (6, 2, 3, 3), dtype), rnd(rng, (6,), dtype)
    attrs = dict(strides=[2, 1], pads=[1, 0, 0, 1], group=2)
    want = ref_conv(x, w, b, (2, 1), (1, 0, 0, 1), (1, 1), 2)
    for ins, ws in (({"x": x}, {"w": w, "b": b}), ({"x": x, "w": w}, {"b": b})):
        close(run("Conv", ins, ws, attrs)[0], want, dtype)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_auto_pad_matches_onnxruntime(rng, auto_pad):
    x, w = rnd(rng, (1, 3, 8, 7)), rnd(rng, (4, 3, 4, 3))
    attrs = dict(auto_pad=auto_pad, strides=[2, 3])
    close(run("Conv", {"x": x}, {"w": w}, attrs)[0], run_ort("Conv", {"x": x}, {"w": w}, attrs)[0], np.float32)


def test_conv_batch0_and_no_bias(rng):
    x, w = rnd(rng, (0, 3, 5, 5)), rnd(rng, (2, 3, 3, 3))
    assert run("Conv", {"x": x}, {"w": w})[0].shape == (0, 2, 3, 3)
    x = rnd(rng, (1, 3, 5, 5))
    close(run("Conv", {"x": x}, {"w": w}, optimize=False)[0], ref_conv(x, w, None, (1, 1), (0,) * 4, (1, 1), 1),
          np.float32)


def test_conv_isa_paths(rng, isa):
    """Every ISA, with channel and pixel counts past the 16×16 transpose tiles, ragged edges."""
    x, w, b = rnd(rng, (2, 19, 9, 8)), rnd(rng, (18, 19, 3, 3)), rnd(rng, (18,))
    attrs = dict(pads=[1, 1, 1, 1])
    close(run("Conv", {"x": x}, {"w": w, "b": b}, attrs)[0], ref_conv(x, w, b, (1, 1), (1,) * 4, (1, 1), 1),
          np.float32)


# -- ConvTranspose ------------------------------------------------------------------------------

CT_CASES = [  # (x shape, OC, kernel, strides, pads, dilations, group, output_padding)
    ((2, 3, 5), 2, (3,), (2,), (0, 1), (1,), 1, (1,)),
    ((1, 4, 3, 4), 6, (3, 3), (2, 3), (1, 0, 0, 2), (1, 2), 2, (1, 0)),
    ((2, 2, 4, 3), 3, (2, 4), (1, 1), (0, 0, 0, 0), (2, 1), 1, (0, 0)),
    ((1, 4, 2, 3, 3), 2, (2, 3, 2), (2, 1, 2), (1, 1, 0, 0, 1, 1), (1, 1, 1), 2, (1, 0, 0)),
]


@pytest.mark.parametrize("case", CT_CASES, ids=[str(c[0]) for c in CT_CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_conv_transpose_matches_torch(rng, case, dtype):
    xs, oc, k, s, p, d, g, op = case
    x, w, b = rnd(rng, xs, dtype), rnd(rng, (xs[1], oc // g) + k, dtype), rnd(rng, (oc,), dtype)
    attrs = dict(strides=list(s), pads=list(p), dilations=list(d), group=g, output_padding=list(op))
    close(run("ConvTranspose", {"x": x, "w": w}, {"b": b}, attrs)[0],
          ref_conv_transpose(x, w, b, s, p, d, g, op), dtype)


@pytest.mark.parametrize("attrs", [dict(output_shape=[10, 9], strides=[3, 2]),
                                   dict(output_shape=[11, 10], strides=[3, 2]),
                                   dict(output_shape=[7, 7], strides=[3, 2], pads=[0, 0, 5, 5]),
                                   dict(auto_pad="SAME_UPPER", strides=[2, 2]),
                                   dict(auto_pad="SAME_LOWER", strides=[2, 3], dilations=[1, 2]),
                                   dict(auto_pad="VALID", strides=[1, 2])], ids=lambda a: "-".join(map(str, a)))
def test_conv_transpose_output_shape_and_auto_pad_match_onnxruntime(rng, attrs):
    """(output_shape: the pads given are replaced by the ones it implies.)"""
    x, w = rnd(rng, (2, 2, 3, 4)), rnd(rng, (2, 3, 3, 3))
    close(run("ConvTranspose", {"x": x}, {"w": w}, attrs)[0], run_ort("ConvTranspose", {"x": x}, {"w": w}, attrs)[0],
          np.float32)


def test_conv_transpose_output_shape_odd_padding_follows_the_spec(rng):
    """An odd total padding goes at the start (the spec; onnxruntime puts it at the end)."""
    x, w = rnd(rng, (1, 2, 3, 4)), rnd(rng, (2, 3, 3, 3))
    got = run("ConvTranspose", {"x": x}, {"w": w}, dict(output_shape=[8, 8], strides=[3, 2]))[0]
    close(got, ref_conv_transpose(x, w, None, (3, 2), (1, 1, 0, 0), (1, 1), 1, (0, 0)), np.float32)


# -- pools --------------------------------------------------------------------------------------

POOL_CASES = [  # (x shape, kernel, strides, pads, dilations, ceil_mode)
    ((2, 3, 11), (3,), (2,), (1, 1), (1,), 0),
    ((1, 2, 7, 9), (3, 3), (2, 2), (1, 0, 1, 2), (1, 1), 1),
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 0),
    ((1, 2, 9, 7), (3, 2), (1, 3), (0, 1, 1, 0), (2, 1), 0),
    ((1, 2, 5, 6, 7), (2, 3, 2), (1, 2, 2), (1, 0, 1, 0, 1, 1), (2, 1, 1), 1),
]


def _pool_out(xs, k, s, p, d, ceil):
    nd = len(k)
    out = []
    for i in range(nd):
        span = xs[2 + i] + p[i] + p[nd + i] - (k[i] - 1) * d[i] - 1
        o = (-(-span // s[i]) if ceil else span // s[i]) + 1
        if ceil and (o - 1) * s[i] >= xs[2 + i] + p[i]:
            o -= 1
        out.append(o)
    return out


@pytest.mark.parametrize("case", POOL_CASES, ids=[str(c[0]) for c in POOL_CASES])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "LpPool"])
def test_pools_match_reference(rng, case, op):
    xs, k, s, p, d, ceil = case
    x = rnd(rng, xs)
    attrs = dict(kernel_shape=list(k), strides=list(s), pads=list(p), dilations=list(d), ceil_mode=ceil)
    out = _pool_out(xs, k, s, p, d, ceil)
    for extra in ([{}, {"count_include_pad": 1}] if op == "AveragePool" else [{"p": 3}] if op == "LpPool" else [{}]):
        got = run(op, {"x": x}, attrs={**attrs, **extra})[0]
        want, _ = ref_pool(x, op, k, s, p, d, out, extra.get("count_include_pad", 0), extra.get("p", 2))
        close(got, want, np.float32)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pools_match_onnxruntime(rng, op):
    x = rnd(rng, (2, 3, 9, 10))
    for attrs in (dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
                  dict(kernel_shape=[2, 3], auto_pad="SAME_UPPER", strides=[2, 2]),
                  dict(kernel_shape=[3, 2], auto_pad="SAME_LOWER", count_include_pad=1 if op == "AveragePool" else 0)):
        if op == "MaxPool":
            attrs.pop("count_include_pad", None)
        close(run(op, {"x": x}, attrs=attrs)[0], run_ort(op, {"x": x}, attrs=attrs)[0], np.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int8, np.uint8])
def test_maxpool_types(rng, dtype):
    x = rnd(rng, (2, 3, 7, 6), dtype)
    attrs = dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1])
    want, _ = ref_pool(x, "MaxPool", (3, 2), (2, 1), (1, 0, 1, 1), (1, 1), _pool_out(x.shape, (3, 2), (2, 1),
                                                                                  (1, 0, 1, 1), (1, 1), 0))
    close(run("MaxPool", {"x": x}, attrs=attrs)[0], want, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
@pytest.mark.parametrize("op", ["AveragePool", "LpPool"])
def test_avg_lp_pool_types(rng, dtype, op):
    x = rnd(rng, (1, 2, 6, 7), dtype)
    attrs = dict(kernel_shape=[2, 3], pads=[0, 1, 1, 1])
    want, _ = ref_pool(x, op, (2, 3), (1, 1), (0, 1, 1, 1), (1, 1), _pool_out(x.shape, (2, 3), (1, 1), (0, 1, 1, 1),
                                                                            (1, 1), 0))
    close(run(op, {"x": x}, attrs=attrs)[0], want, dtype)


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("xs", [(2, 3, 7, 8), (1, 2, 4, 5, 6), (2, 2, 9)])
def test_maxpool_indices(rng, xs, storage_order):
    x = rnd(rng, xs)
    nd = len(xs) - 2
    k, s, p = (3,) * nd, (2,) * nd, (1,) * nd + (0,) * nd
    attrs = dict(kernel_shape=list(k), strides=list(s), pads=list(p), storage_order=storage_order)
    y, idx = run("MaxPool", {"x": x}, attrs=attrs, n_out=2)
    want_y, want_idx = ref_pool(x, "MaxPool", k, s, p, (1,) * nd, _pool_out(xs, k, s, p, (1,) * nd, 0),
                                storage_order=storage_order)
    close(y, want_y, np.float32)
    np.testing.assert_array_equal(idx, want_idx)
    if nd == 2:
        np.testing.assert_array_equal(idx, run_ort("MaxPool", {"x": x}, attrs=attrs, n_out=2)[1])


def test_maxpool_nan_and_ties(rng):
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 2] = np.nan
    y, idx = run("MaxPool", {"x": x}, attrs=dict(kernel_shape=[2, 2], strides=[2, 2]), n_out=2)
    assert np.isnan(y[0, 0, 0, 1]) and idx[0, 0, 0, 1] == 6
    np.testing.assert_array_equal(y[0, 0, 1], [0, 0])
    np.testing.assert_array_equal(idx[0, 0, 1], [8, 10])  # ties: the first tap in window order
    assert np.isnan(run("GlobalMaxPool", {"x": x})[0]).all()


def test_pool_batch0(rng):
    x = rnd(rng, (0, 3, 5, 5))
    assert run("MaxPool", {"x": x}, attrs=dict(kernel_shape=[2, 2]))[0].shape == (0, 3, 4, 4)
    assert run("GlobalAveragePool", {"x": x})[0].shape == (0, 3, 1, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("xs", [(2, 3, 7), (1, 5, 6, 9), (2, 2, 3, 4, 5), (1, 4, 40, 41)])
def test_global_pools(rng, xs, dtype):
    x = rnd(rng, xs, dtype)
    axes = tuple(range(2, len(xs)))
    close(run("GlobalAveragePool", {"x": x})[0], x.astype(np.float64).mean(axes, keepdims=True), dtype)
    close(run("GlobalMaxPool", {"x": x})[0], x.max(axes, keepdims=True), dtype)


# -- Gemm and MatMul ------------------------------------------------------------------------------

INT_TYPES = [np.int32, np.int64, np.uint32, np.uint64]


def ref_gemm(a, b, c, ta, tb, alpha, beta):
    a, b = (a.T if ta else a), (b.T if tb else b)
    if np.dtype(a.dtype).kind in "iu":
        y = a @ b
        return y if c is None else y + c
    y = alpha * (a.astype(np.float64) @ b.astype(np.float64))
    return y if c is None else y + beta * c.astype(np.float64)


@pytest.mark.parametrize("c_shape", [None, (), (1,), (7,), (1, 7), (5, 1), (5, 7)], ids=str)
@pytest.mark.parametrize("trans", [(0, 0), (1, 0), (0, 1), (1, 1)], ids=str)
@pytest.mark.parametrize("const_b", [True, False], ids=["const_b", "runtime_b"])
def test_gemm_float32(rng, c_shape, trans, const_b):
    ta, tb = trans
    a = rnd(rng, (3, 5) if ta else (5, 3))
    b = rnd(rng, (7, 3) if tb else (3, 7))
    c = None if c_shape is None else rnd(rng, c_shape)
    for alpha, beta in ((1.0, 1.0), (0.5, -2.0)):
        attrs = dict(transA=ta, transB=tb, alpha=alpha, beta=beta)
        ins, ws = ({"a": a}, {"b": b}) if const_b else ({"a": a, "b": b}, {})
        if c is not None:
            (ws if const_b else ins)["c"] = c
        close(run("Gemm", ins, ws, attrs)[0], ref_gemm(a, b, c, ta, tb, alpha, beta), np.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.float16] + INT_TYPES)
def test_gemm_types(rng, dtype):
    a, b, c = rnd(rng, (4, 6), dtype), rnd(rng, (5, 6), dtype), rnd(rng, (1, 5), dtype)
    got = run("Gemm", {"a": a, "b": b, "c": c}, attrs=dict(transB=1))[0]
    want = ref_gemm(a, b, c, 0, 1, 1.0, 1.0)
    if np.dtype(dtype).kind in "iu":
        np.testing.assert_array_equal(got, want.astype(dtype))
    else:
        close(got, want, dtype)
    if np.dtype(dtype).kind not in "iu":
        close(run("Gemm", {"a": a}, {"b": b, "c": c}, attrs=dict(transB=1, alpha=0.25, beta=3.0))[0],
              ref_gemm(a, b, c, 0, 1, 0.25, 3.0), dtype)


MATMUL_SHAPES = [((3,), (3,)), ((4,), (4, 5)), ((2, 3, 4), (4,)), ((5, 3), (3, 6)), ((2, 5, 3), (3, 6)),
                 ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 2)), ((1, 3, 2, 4), (2, 1, 4, 3)), ((0, 3, 4), (4, 2)),
                 ((3, 0), (0, 4)), ((2, 7, 9), (2, 9, 11)), ((6, 1, 33), (1, 33, 17))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
@pytest.mark.parametrize("const_b", [True, False], ids=["const_b", "runtime_b"])
def test_matmul_float32(rng, shapes, const_b):
    a, b = rnd(rng, shapes[0]), rnd(rng, shapes[1])
    ins, ws = ({"a": a}, {"b": b}) if const_b else ({"a": a, "b": b}, {})
    close(run("MatMul", ins, ws)[0], np.matmul(a.astype(np.float64), b.astype(np.float64)), np.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.float16] + INT_TYPES)
def test_matmul_types(rng, dtype):
    for sa, sb in (((2, 3, 4), (4, 5)), ((3, 1, 2, 3), (2, 3, 4)), ((4,), (2, 4, 3)), ((6, 70), (70, 300))):
        a, b = rnd(rng, sa, dtype), rnd(rng, sb, dtype)
        got = run("MatMul", {"a": a, "b": b})[0]
        if np.dtype(dtype).kind in "iu":
            np.testing.assert_array_equal(got, np.matmul(a, b))
        else:
            close(got, np.matmul(a.astype(np.float64), b.astype(np.float64)), dtype)


def test_matmul_wraps_like_numpy():
    a = np.full((2, 3), 2**62, np.int64)
    b = np.full((3, 2), 3, np.int64)
    np.testing.assert_array_equal(run("MatMul", {"a": a, "b": b})[0], np.matmul(a, b))


def test_matmul_many_threads_paths(rng):
    a, b = rnd(rng, (64, 17, 20)), rnd(rng, (64, 20, 19))  # many small products: one per task
    close(run("MatMul", {"a": a, "b": b})[0], np.matmul(a.astype(np.float64), b.astype(np.float64)), np.float32)


# -- float16 conversion ------------------------------------------------------------------------------

def test_half_conversion_every_isa(isa):
    bits = np.arange(1 << 16, dtype=np.uint16)
    halves = bits.view(np.float16)
    x = np.concatenate([halves, [np.float16(1.0)] * 5])  # a ragged tail
    y = run("MaxPool", {"x": x.reshape(1, 1, -1)}, attrs=dict(kernel_shape=[1]))[0].ravel()
    finite = ~np.isnan(x)
    np.testing.assert_array_equal(y[finite].view(np.uint16), x[finite].view(np.uint16))
    assert np.isnan(y[~finite]).all()
    x = np.random.default_rng(0).standard_normal(4099).astype(np.float16)
    got = run("GlobalAveragePool", {"x": x.reshape(1, 1, -1)})[0]
    close(got, x.astype(np.float64).mean(keepdims=True).reshape(1, 1, 1), np.float16)
    # float32 -> float16 rounding (to nearest even; subnormals, overflow): a Conv with one tap
    # computes x·w in float32, then rounds
    z = np.concatenate([halves[np.isfinite(halves)], [np.float16(65504), np.float16(6e-8)]])
    for w in (0.33325, 1.5, 3e-3):
        w16 = np.full((1, 1, 1), w, np.float16)
        conv = run("Conv", {"x": z.reshape(1, 1, -1)}, {"w": w16})[0].ravel()
        with np.errstate(over="ignore"):
            want = (z.astype(np.float32) * w16.astype(np.float32).ravel() + np.float32(0)).astype(np.float16)
        np.testing.assert_array_equal(conv.view(np.uint16), want.view(np.uint16))


# -- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("op, inputs, weights, attrs, err, match", [
    ("Conv", {"x": np.zeros((1, 3, 5, 5), np.float32)}, {"w": np.zeros((2, 4, 3, 3), np.float32)}, {},
     engine.ShapeError, "channels"),
    ("Conv", {"x": np.zeros((1, 3, 2, 2), np.float32)}, {"w": np.zeros((2, 3, 3, 3), np.float32)}, {},
     engine.ShapeError, "smaller than the kernel"),
    ("Conv", {"x": np.zeros((1, 3, 5, 5), np.float32)}, {"w": np.zeros((2, 3, 3, 3), np.float32)},
     {"kernel_shape": [2, 2]}, engine.ShapeError, "kernel_shape"),
    ("Conv", {"x": np.zeros((1, 3, 5, 5), np.float32)}, {"w": np.zeros((2, 3, 3, 3), np.float32),
                                                         "b": np.zeros((3,), np.float32)}, {},
     engine.ShapeError, "bias"),
    ("Conv", {"x": np.zeros((1, 3, 5, 5, 5, 5), np.float32)}, {"w": np.zeros((2, 3, 1, 1, 1, 1), np.float32)}, {},
     engine.ShapeError, "spatial dims"),
    ("Conv", {"x": np.zeros((1, 3, 5, 5), np.int32)}, {"w": np.zeros((2, 3, 3, 3), np.int32)}, {},
     engine.DTypeError, "int32"),
    ("ConvTranspose", {"x": np.zeros((1, 3, 5, 5), np.float32)}, {"w": np.zeros((2, 3, 3, 3), np.float32)}, {},
     engine.ShapeError, "channels"),
    ("ConvTranspose", {"x": np.zeros((1, 3, 2, 2), np.float32)}, {"w": np.zeros((3, 3, 3, 3), np.float32)},
     {"pads": [3, 3, 3, 3]}, engine.ShapeError, "empty"),
    ("MaxPool", {"x": np.zeros((1, 3, 5), np.float32)}, {}, {"kernel_shape": [2, 2]}, engine.ShapeError,
     "kernel_shape"),
    ("MaxPool", {"x": np.zeros((1, 3, 5, 5), np.int32)}, {}, {"kernel_shape": [2, 2]}, engine.DTypeError, "int32"),
    ("AveragePool", {"x": np.zeros((1, 3, 5, 5), np.uint8)}, {}, {"kernel_shape": [2, 2]}, engine.DTypeError,
     "uint8"),
    ("GlobalAveragePool", {"x": np.zeros((1, 3, 0), np.float32)}, {}, {}, engine.ShapeError, "no spatial"),
    ("Gemm", {"a": np.zeros((2, 3), np.float32), "b": np.zeros((4, 5), np.float32)}, {}, {}, engine.ShapeError,
     "inner dims"),
    ("Gemm", {"a": np.zeros((2, 3), np.float32), "b": np.zeros((3, 5), np.float32),
              "c": np.zeros((3, 5), np.float32)}, {}, {}, engine.ShapeError, "broadcast"),
    ("Gemm", {"a": np.zeros((2, 3), np.float32), "b": np.zeros((3, 5), np.float64)}, {}, {}, engine.DTypeError,
     "one element type"),
    ("MatMul", {"a": np.zeros((2, 3), np.float32), "b": np.zeros((4, 5), np.float32)}, {}, {}, engine.ShapeError,
     "inner dims"),
    ("MatMul", {"a": np.zeros((2, 2, 3), np.float32), "b": np.zeros((3, 3, 5), np.float32)}, {}, {},
     engine.ShapeError, "broadcast"),
    ("MatMul", {"a": np.zeros((2, 3), np.int8), "b": np.zeros((3, 5), np.int8)}, {}, {}, engine.DTypeError, "int8"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_shapes_and_types(op, inputs, weights, attrs, err, match):
    with pytest.raises(err, match=match):
        run(op, inputs, weights, attrs)


@pytest.mark.parametrize("op, attrs, match", [
    ("Conv", {"auto_pad": "SAME"}, "auto_pad"),
    ("Conv", {"strides": [0, 1]}, "strides"),
    ("Conv", {"group": 0}, "group"),
    ("Conv", {"pads": [1, -1, 1, 1]}, "pads"),
    ("MaxPool", {}, "kernel_shape"),
    ("MaxPool", {"kernel_shape": [2, 2], "storage_order": 2}, "storage_order"),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [1]}, "strides"),
    ("AveragePool", {"kernel_shape": [2, 2], "count_include_pad": 5}, "count_include_pad"),
    ("LpPool", {"kernel_shape": [2, 2], "p": 0}, "'p'"),
    ("Gemm", {"transA": 2}, "transA"),
])
def test_bad_attributes_fail_at_load(op, attrs, match):
    ins = {"a": np.zeros((2, 2), np.float32), "b": np.zeros((2, 2), np.float32)} if op == "Gemm" else \
        {"x": np.zeros((1, 2, 4, 4), np.float32), "w": np.zeros((2, 2, 1, 1), np.float32)} if op == "Conv" else \
        {"x": np.zeros((1, 2, 4, 4), np.float32)}
    with pytest.raises(engine.GraphError, match=match):
        engine.load(make_model(op, ins, attrs=attrs))


def test_kernel_factories_refuse_bad_parameters():
    p = _C.Program()
    s = p.new_slot()
    window = [1, 1, 4, 1, 1, 2, 1, 1, 3, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    with pytest.raises(engine.KernelError, match="group"):
        p.add_step("nchw_conv", 1, [s, s, -1], [s], [1, 1, 0], [1], [1, 3, 2, 2] + window, [])
    with pytest.raises(engine.KernelError, match=">= 1"):
        p.add_step("nchw_conv", 1, [s, s, -1], [s], [1, 1, 0], [1], [1, 2, 2, 1] + window[:6] + [0] + window[7:], [])
    with pytest.raises(engine.KernelError, match="floating-point"):
        p.add_step("nchw_pool", 3, [s], [s], [3], [3], [1, 1] + window + [0, 0, 0, 0, 2, 0], [])
    with pytest.raises(engine.KernelError, match="int64 output"):
        p.add_step("nchw_pool", 1, [s], [s, s], [1], [1, 1], [0, 1] + window + [0, 0, 0, 0, 2, 0], [])
    with pytest.raises(engine.KernelError, match="ints"):
        p.add_step("linear_matmul", 1, [s, s], [s], [1, 1], [1], [2, 2, 2, 1, 3], [])
    with pytest.raises(engine.KernelError, match="packed"):
        p.add_step("linear_gemm", 11, [s, -1, -1], [s], [11, 0, 0], [11], [2, 2, 2, 0, 0, 0], [1.0, 0.0])


def test_older_opsets_are_normalised(rng):
    """Gemm before opset 7 carries `broadcast`; LpPool 1 has a float p."""
    a, b, c = rnd(rng, (3, 4)), rnd(rng, (4, 5)), rnd(rng, (5,))
    model = engine.load(make_model("Gemm", {"a": a, "b": b, "c": c}, attrs=dict(broadcast=1, alpha=2.0), opset=6))
    close(model.run(None, {"a": a, "b": b, "c": c})[0], ref_gemm(a, b, c, 0, 0, 2.0, 1.0), np.float32)
    x = rnd(rng, (1, 2, 5, 5))
    model = engine.load(make_model("LpPool", {"x": x}, attrs=dict(p=3.0, kernel_shape=[2, 2]), opset=1))
    want, _ = ref_pool(x, "LpPool", (2, 2), (1, 1), (0,) * 4, (1, 1), (4, 4), p=3)
    close(model.run(None, {"x": x})[0], want, np.float32)


def test_typed_gemm_every_isa(rng, isa):
    """The float64 / integer GEMM kernel per ISA: ragged tiles, transposed operands."""
    for dtype in (np.float64, np.int64, np.int32, np.uint32):
        a, b = rnd(rng, (13, 37), dtype), rnd(rng, (41, 37), dtype)
        got = run("Gemm", {"a": a, "b": b}, attrs=dict(transB=1))[0]
        if np.dtype(dtype).kind in "iu":
            np.testing.assert_array_equal(got, a @ b.T)
        else:
            close(got, a @ b.T, dtype)
        got = run("Gemm", {"a": a.T.copy(), "b": b.T.copy()}, attrs=dict(transA=1))[0]
        if np.dtype(dtype).kind in "iu":
            np.testing.assert_array_equal(got, a @ b.T)
        else:
            close(got, a @ b.T, dtype)


def test_big_enough_to_split_over_threads(rng):
    """Shapes past the kernels' thresholds for splitting work over the pool."""
    x, w, b = rnd(rng, (2, 8, 6, 10, 12)), rnd(rng, (16, 4, 3, 3, 3)), rnd(rng, (16,))
    attrs = dict(pads=[1, 1, 1, 1, 1, 1], group=2)
    close(run("Conv", {"x": x, "w": w, "b": b}, attrs=attrs)[0],
          ref_conv(x, w, b, (1, 1, 1), (1,) * 6, (1, 1, 1), 2), np.float32)
    x, w = rnd(rng, (4, 16, 12, 12)), rnd(rng, (16, 8, 3, 3))
    attrs = dict(strides=[2, 2], group=2, pads=[1, 1, 0, 0])
    close(run("ConvTranspose", {"x": x, "w": w}, attrs=attrs)[0],
          ref_conv_transpose(x, w, None, (2, 2), (1, 1, 0, 0), (1, 1), 2, (0, 0)), np.float32)
    x = rnd(rng, (2, 16, 64, 64))
    for op in ("MaxPool", "AveragePool"):
        attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        close(run(op, {"x": x}, attrs=attrs)[0], run_ort(op, {"x": x}, attrs=attrs)[0], np.float32)
    x8 = rnd(rng, (2, 16, 64, 64), np.int8)
    y, idx = run("MaxPool", {"x": x8}, attrs=dict(kernel_shape=[2, 2], strides=[2, 2]), n_out=2)
    np.testing.assert_array_equal(y, x8.reshape(2, 16, 32, 2, 32, 2).max((3, 5)))
    np.testing.assert_array_equal(np.take(x8.ravel(), idx), y)


def test_pools_every_isa(rng, isa):
    """The pooling row kernels per ISA: strides 1, 2 (vector paths) and 3, rows longer than a
    vector with ragged ends, int8 at 64 lanes."""
    x = rnd(rng, (2, 3, 7, 150))
    for s in (1, 2, 3):
        for op, extra in (("MaxPool", {}), ("AveragePool", {"count_include_pad": 1}), ("LpPool", {"p": 2})):
            attrs = dict(kernel_shape=[3, 4], strides=[1, s], pads=[1, 2, 0, 1], **extra)
            out = _pool_out(x.shape, (3, 4), (1, s), (1, 2, 0, 1), (1, 1), 0)
            want, _ = ref_pool(x, op, (3, 4), (1, s), (1, 2, 0, 1), (1, 1), out, extra.get("count_include_pad", 0))
            close(run(op, {"x": x}, attrs=attrs)[0], want, np.float32)
    x8 = rnd(rng, (1, 2, 3, 200), np.int8)
    y = run("MaxPool", {"x": x8}, attrs=dict(kernel_shape=[1, 3], strides=[1, 2]))[0]
    np.testing.assert_array_equal(y, np.maximum.reduce([x8[..., k:k + 2 * 99:2] for k in range(3)]))
    xg = rnd(rng, (2, 3, 5, 41), np.float64)
    close(run("GlobalAveragePool", {"x": xg})[0], xg.mean((2, 3), keepdims=True), np.float64)
    close(run("GlobalMaxPool", {"x": xg})[0], xg.max((2, 3), keepdims=True), np.float64)
