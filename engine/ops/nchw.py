"""ONNX Conv and ConvTranspose over NCHW tensors (1..3 spatial dims); the pools are in
nchw_pool.py (imported below so that they register with this family).

Conv, float32, 1-D or 2-D: the OIHW filter is transposed to HWIO and packed once
(PackedConv2D, cached by weight name and geometry) when it is a weight, or on every call by the
conv2d_dynamic step when it is not known when planning (a trained filter, a training graph's
input); the input is transposed to NHWC in scratch, the engine's conv2d run, and the result
transposed back (no transposes when C or OC is 1 or the image is one pixel). Everything else
(3-D, float64) runs the N-d im2col + GEMM kernel. float16 is computed in float32.
"""

from __future__ import annotations

import math

from ..errors import ShapeError
from .float16 import via_float32
from .nchw_types import check_dtype, same_dtypes, stable_weight
from .nchw_window import (Window, auto_pad_attr, check_window_attrs, forward_window, int_attr, ints_attr,
                          spatial_rank)
from .registry import TensorType, register
from .spatial import Window2D, conv2d_dynamic, known_weights

FLOATS = ("float32", "float64", "float16")


def _inputs(node):
    ins = list(node.inputs) + [""] * (3 - len(node.inputs))
    return ins[0], ins[1], ins[2]


def _channels(node, x, w, transposed):
    """(C, OC, group) after checking the filter against the input."""
    group = int_attr(node, "group", 1, minimum=1)
    nd = spatial_rank(node, x)
    if len(w) != nd + 2:
        raise ShapeError(f"node '{node.name}' ({node.op}): filter must have rank {nd + 2} for input {x}, got {w}")
    kernel = ints_attr(node, "kernel_shape", nd)
    if kernel is not None and kernel != tuple(w[2:]):
        raise ShapeError(f"node '{node.name}' ({node.op}): kernel_shape {list(kernel)} differs from the "
                         f"filter's spatial shape {list(w[2:])}")
    if min(w[2:], default=1) < 1:
        raise ShapeError(f"node '{node.name}' ({node.op}): filter {w} has an empty kernel")
    C = x[1]
    if transposed:  # W: C × OC/group × k
        if w[0] != C or C % group:
            raise ShapeError(f"node '{node.name}' ({node.op}): input has {C} channels; filter {w} with "
                             f"group={group} needs {w[0]} (divisible by the group count)")
        return C, w[1] * group, group
    if C != w[1] * group or w[0] % group:  # W: OC × C/group × k
        raise ShapeError(f"node '{node.name}' ({node.op}): input has {C} channels; filter {w} with "
                         f"group={group} expects {w[1] * group} and output channels divisible by {group}")
    return C, w[0], group


def _bias(node, ins, oc):
    if len(ins) > 2 and ins[2] is not None and tuple(ins[2].shape) != (oc,):
        raise ShapeError(f"node '{node.name}' ({node.op}): bias must have shape ({oc},), got {ins[2].shape}")


# -- Conv ------------------------------------------------------------------------------------

def conv_window(node, x, w) -> Window:
    _channels(node, x, w, transposed=False)
    return forward_window(node, tuple(x[2:]), tuple(w[2:]))


def conv_check(node):
    check_window_attrs(node)
    int_attr(node, "group", 1, minimum=1)


def conv_type(node, ins):
    x, w = ins[0].shape, ins[1].shape
    dtype = same_dtypes(node, ins)
    check_dtype(node, dtype, FLOATS)
    _, oc, _ = _channels(node, x, w, transposed=False)
    _bias(node, ins, oc)
    win = conv_window(node, x, w)
    return [TensorType((x[0], oc) + win.out, dtype)]


def conv_lower(ctx, node):
    x, w, b = _inputs(node)
    if ctx.dtype(x) == "float16":
        return via_float32(ctx, [x, w, b], node.outputs[:1], lambda i, o: _conv(ctx, node, *i, o[0]))
    _conv(ctx, node, x, w, b, node.outputs[0])


def _conv(ctx, node, x, w, b, y):
    xs, ws = ctx.shape(x), ctx.shape(w)
    N, C, OC, group = xs[0], xs[1], ws[0], int_attr(node, "group", 1, minimum=1)
    win = conv_window(node, xs, ws)
    if N == 0 or OC == 0 or 0 in win.out:
        return
    stable = stable_weight(ctx, w) and (not b or stable_weight(ctx, b))
    if ctx.dtype(x) == "float32" and win.nd <= 2 and C > 0 and min(win.inp) > 0 and (
            stable or not known_weights(ctx, w, b)):
        return _conv2d_nhwc(ctx, node, x, w, b, y, win, group, stable)
    ctx.kernel("nchw_conv", [x, w, b], [y], ints=[N, C, OC, group, *win.ints()])


def _conv2d_nhwc(ctx, node, x, w, b, y, win, group, packed_once):
    """1-D / 2-D float32 conv on the engine's NHWC kernel (1-D as H = 1)."""
    xs, ws = ctx.shape(x), ctx.shape(w)
    N, C, OC = xs[0], xs[1], ws[0]
    two = lambda t, fill: tuple(t) if win.nd == 2 else (fill,) + tuple(t)  # noqa: E731
    (H, W), (KH, KW) = two(win.inp, 1), two(win.kernel, 1)
    (sh, sw), (dh, dw) = two(win.strides, 1), two(win.dilations, 1)
    (pt, pl), (pb, pr) = two(win.pads_begin, 0), two(win.pads_end, 0)
    OH, OW = two(win.out, 1)
    geo = Window2D(1, H, W, C, KH, KW, sh, sw, dh, dw, pt, pl, pb, pr, OC=OC, groups=group)

    def pack():
        f = ctx.value(w)
        f = f.reshape(OC, C // group, KH, KW).transpose(2, 3, 1, 0)  # OIHW -> HWIO
        return ctx.pack_conv2d(geo, f, ctx.value(b) if b else None)

    if packed_once:
        key = ("nchw_conv2d", w, b, H, W, KH, KW, sh, sw, dh, dw, pt, pl, pb, pr, group)
        packed = ctx.cached(key, pack)
        conv = lambda xi, yo: ctx.kernel("conv2d", [xi], [yo], ints=[N, 0, 0, 0], floats=[0.0, 0.0],  # noqa: E731
                                         state=packed)
    else:  # a trained (or computed) filter: the OIHW filter packed on every call
        geo.N = N
        conv = lambda xi, yo: conv2d_dynamic(ctx, geo, xi, w, b, "", yo, "OIHW")  # noqa: E731
    # NCHW and NHWC are the same bytes when C == 1 or H·W == 1: no transpose then.
    xt = x
    if C > 1 and H * W > 1:
        xt = ctx.scratch((N, H, W, C), "float32")
        ctx.kernel("nchw_transpose", [x], [xt], dtype="any", ints=[N, C, H * W])
    if OC > 1 and OH * OW > 1:
        yt = ctx.scratch((N, OH, OW, OC), "float32")
        conv(xt, yt)
        ctx.kernel("nchw_transpose", [yt], [y], dtype="any", ints=[N, OH * OW, OC])
    else:
        conv(xt, y)


# Conv(X, W, [B]); attrs auto_pad, dilations, group, kernel_shape, pads, strides.
register("Conv", conv_type, conv_lower, check=conv_check)


# -- ConvTranspose ---------------------------------------------------------------------------

def conv_transpose_window(node, x, w) -> Window:
    nd = spatial_rank(node, x)
    _channels(node, x, w, transposed=True)
    inp, kernel = tuple(x[2:]), tuple(w[2:])
    strides = ints_attr(node, "strides", nd, (1,) * nd, 1)
    dil = ints_attr(node, "dilations", nd, (1,) * nd, 1)
    out_pad = ints_attr(node, "output_padding", nd, (0,) * nd, 0)
    out_shape = ints_attr(node, "output_shape", None, None, 0)
    if out_shape is not None and len(out_shape) == nd + 2:  # some exporters give N, C too
        out_shape = out_shape[2:]
    if out_shape is not None and len(out_shape) != nd:
        raise ShapeError(f"node '{node.name}' ({node.op}): output_shape must have {nd} values, got {list(out_shape)}")
    auto_pad = auto_pad_attr(node)
    full = [s * (i - 1) + op + (k - 1) * d + 1 for s, i, op, k, d in zip(strides, inp, out_pad, kernel, dil)]
    if out_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        # Pads from the wanted size, split as the spec says (SAME_UPPER: the odd one at the
        # end, else at the start); a size past the full output grows at the end (zeros + bias),
        # as onnxruntime and the reference do.
        out = tuple(out_shape) if out_shape is not None else tuple(i * s for i, s in zip(inp, strides))
        total = [f - o for f, o in zip(full, out)]
        begin = tuple(0 if t < 0 else t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total)
        end = tuple(t - bg for t, bg in zip(total, begin))
    else:
        pads = (0,) * (2 * nd) if auto_pad == "VALID" else ints_attr(node, "pads", 2 * nd, (0,) * (2 * nd), 0)
        begin, end = pads[:nd], pads[nd:]
        out = tuple(f - pb - pe for f, pb, pe in zip(full, begin, end))
    if min(out) < 1:
        raise ShapeError(f"node '{node.name}' ({node.op}): output spatial shape {list(out)} is empty "
                         f"(input {x}, filter {w}, pads {list(begin) + list(end)})")
    return Window(inp, out, kernel, strides, dil, begin, end)


def conv_transpose_check(node):
    check_window_attrs(node)
    int_attr(node, "group", 1, minimum=1)
    ints_attr(node, "output_padding", None, None, 0)
    ints_attr(node, "output_shape", None, None, 0)


def conv_transpose_type(node, ins):
    x, w = ins[0].shape, ins[1].shape
    dtype = same_dtypes(node, ins)
    check_dtype(node, dtype, FLOATS)
    _, oc, _ = _channels(node, x, w, transposed=True)
    _bias(node, ins, oc)
    win = conv_transpose_window(node, x, w)
    return [TensorType((x[0], oc) + win.out, dtype)]


def conv_transpose_lower(ctx, node):
    x, w, b = _inputs(node)
    if ctx.dtype(x) == "float16":
        return via_float32(ctx, [x, w, b], node.outputs[:1], lambda i, o: _conv_transpose(ctx, node, *i, o[0]))
    _conv_transpose(ctx, node, x, w, b, node.outputs[0])


def _conv_transpose(ctx, node, x, w, b, y):
    xs, ws = ctx.shape(x), ctx.shape(w)
    C, OC, group = _channels(node, xs, ws, transposed=True)
    win = conv_transpose_window(node, xs, ws)
    if math.prod(ctx.shape(y)) == 0:
        return
    ctx.kernel("nchw_conv_transpose", [x, w, b], [y], ints=[xs[0], C, OC, group, *win.ints()])


# ConvTranspose(X, W, [B]); attrs auto_pad, dilations, group, kernel_shape, output_padding,
# output_shape, pads, strides.
register("ConvTranspose", conv_transpose_type, conv_transpose_lower, check=conv_transpose_check)

from . import nchw_pool  # noqa: E402,F401  (registers the pools)
