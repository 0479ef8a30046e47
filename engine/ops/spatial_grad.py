"""Backward rules of convolution and pooling, and the grad-only ops they emit (lowered to the
native steps conv2d_grad_input, conv2d_grad_weight, pool2d_grad, global_pool_grad; see
docs/training.md). float32.

NHWC ops (engine/ops/spatial.py): Conv2D (filter HWIO, bias, fused activation, residual),
MaxPool2D, AvgPool2D, GlobalAveragePool2D, and GlobalMaxPool2D (registered here: engine.nn's
global max poolings emit it in training graphs). ONNX ops over NCHW (nchw.py,
nchw_pool.py), 1-D and 2-D: Conv (groups), ConvTranspose, MaxPool (Y; Indices has no gradient),
AveragePool, GlobalAveragePool, GlobalMaxPool; their gradients are the same native steps on
NHWC views: tensors are transposed (or, when C or H·W is 1, only reshaped) around them.

The input gradient of a stride-1 conv is itself a conv of dy (the filter flipped and
transposed per group), so it runs on the forward kernels (winograd, indirect, pointwise,
depthwise) through conv2d_dynamic with the DataGrad filter layout; other strides use the
conv2d_grad_input step.

A Conv2D whose fused activation's derivative needs the pre-activation (gelu, silu, elu, ...)
is split in training graphs (training form) into the Conv2D and an Activation node, so the
derivative reads the conv's output; relu, sigmoid, tanh and the other activations whose
derivative reads y stay fused.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import EngineError, GraphError, ShapeError
from ..graph import Node
from .activations import resolve
from .elementwise_grad import FROM_Y, NEEDS_NOTHING, act_backward
from .grad_ops import zero_fill
from .grad_registry import backward_rule, training_form
from .nchw import _channels, conv_transpose_window, conv_window
from .nchw_pool import pool_window
from .nchw_window import int_attr
from .registry import TensorType, register
from .spatial import Window2D, conv2d_dynamic, conv_params, gap_check, gap_lower, gap_type, pool_params

# -- grad-only ops ---------------------------------------------------------------------------
#
# CONV (attribute "conv"): [N, H, W, C, OC, KH, KW, stride_h, stride_w, dil_h, dil_w, pad_top,
# pad_left, pad_bottom, pad_right, groups], the forward conv's geometry (x N×H×W×C, dy
# N×OH×OW×OC, filter KH×KW×(C/groups)×OC).
# POOL (attribute "pool"): the pool2d step's ints [is_max, N, H, W, C, KH, KW, stride_h,
# stride_w, dil_h, dil_w, pad_top, pad_left, pad_bottom, pad_right, ceil_mode,
# count_include_pad].


def _f32(node, ins):
    for t in ins:
        if t is not None and t.dtype != "float32":
            raise ShapeError(f"node '{node.name}' ({node.op}): expected float32 tensors, got {t.dtype}")


def _ints(node, key, n):
    v = node.attrs.get(key)
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise GraphError(f"node '{node.name}' ({node.op}): attribute '{key}' must be {n} ints, got {v!r}")
    return [int(i) for i in v]


def conv_ints(s: Window2D) -> list:
    return [s.N, s.H, s.W, s.C, s.OC, s.KH, s.KW, s.stride_h, s.stride_w, s.dil_h, s.dil_w,
            s.pad_top, s.pad_left, s.pad_bottom, s.pad_right, s.groups]


def _window(c) -> Window2D:
    return Window2D(c[0], c[1], c[2], c[3], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12], c[13], c[14],
                    OC=c[4], groups=c[15])


# Conv2DGradInput(dy, w HWIO) -> dx (N, H, W, C)
def conv_grad_input_type(node, ins):
    _f32(node, ins)
    c = _ints(node, "conv", 16)
    return [TensorType((c[0], c[1], c[2], c[3]), "float32")]


def data_grad_window(s: Window2D):
    """The stride-1 conv of dy that gives dx for the conv `s` (dy correlated with the filter
    flipped and transposed per group: FilterLayout.DataGrad), or None where there is none
    (strides, or padding beyond the kernel's extent)."""
    if s.stride_h != 1 or s.stride_w != 1:
        return None
    eh, ew = (s.KH - 1) * s.dil_h, (s.KW - 1) * s.dil_w
    pads = (eh - s.pad_top, ew - s.pad_left, eh - s.pad_bottom, ew - s.pad_right)
    if min(pads) < 0:
        return None
    t = Window2D(s.N, s.OH, s.OW, s.OC, s.KH, s.KW, 1, 1, s.dil_h, s.dil_w, *pads, OC=s.C, groups=s.groups)
    return t if (t.OH, t.OW) == (s.H, s.W) else None


def conv_grad_input_lower(ctx, node):
    c = _ints(node, "conv", 16)
    if not c[0]:
        return
    t = data_grad_window(_window(c))
    if t is not None:  # the forward kernels (winograd, indirect, ...) on dy: faster than the scatter
        conv2d_dynamic(ctx, t, node.inputs[0], node.inputs[1], "", "", node.outputs[0], "DataGrad")
    else:
        ctx.kernel("conv2d_grad_input", node.inputs[:2], node.outputs[:1], ints=c + [0])


register("Conv2DGradInput", conv_grad_input_type, conv_grad_input_lower)


# Conv2DGradWeight(dy, x) -> [dw HWIO | "", db (OC,) | ""]
def conv_grad_weight_type(node, ins):
    _f32(node, ins)
    c = _ints(node, "conv", 16)
    if len(node.outputs) != 2:
        raise GraphError(f"node '{node.name}' (Conv2DGradWeight): expects 2 outputs (dw, db; '' when unwanted)")
    return [TensorType((c[5], c[6], c[3] // c[15], c[4]), "float32"), TensorType((c[4],), "float32")]


def conv_grad_weight_lower(ctx, node):
    c = _ints(node, "conv", 16)
    dw, db = node.outputs
    if not c[0]:  # an empty batch: nothing reaches the weights
        for o in (dw, db):
            if o:
                zero_fill(ctx, o)
        return
    if dw:
        ctx.kernel("conv2d_grad_weight", node.inputs[:2], [dw] + ([db] if db else []), ints=c + [0])
    elif db:
        s = _window(c)
        ctx.kernel("bias_grad", node.inputs[:1], [db], ints=[s.N * s.OH * s.OW, s.OC, 0])


register("Conv2DGradWeight", conv_grad_weight_type, conv_grad_weight_lower)


# Pool2DGrad(dy, x | "") -> dx (N, H, W, C); max pooling needs x. attr relu (max only): x is a
# ReLU's output and dx also carries the ReLU's derivative (passes/fuse_pool_relu_grad.py).
def pool_grad_type(node, ins):
    _f32(node, ins)
    p = _ints(node, "pool", 17)
    return [TensorType((p[1], p[2], p[3], p[4]), "float32")]


def pool_grad_lower(ctx, node):
    p = _ints(node, "pool", 17)
    relu = [1] if node.attrs.get("relu") else []  # x is a ReLU's output: its backward folded in
    if p[1] and math.prod(ctx.shape(node.inputs[0])):
        ctx.kernel("pool2d_grad", [node.inputs[0], node.inputs[1] if p[0] else ""], node.outputs[:1], ints=p + relu)
    elif math.prod(ctx.shape(node.outputs[0])):
        zero_fill(ctx, node.outputs[0])


register("Pool2DGrad", pool_grad_type, pool_grad_lower)


# GlobalPoolGrad(dy, x | "") -> dx shaped as attr "shape": x viewed as N×HW×C with
# attr "dims" [N, HW, C]; "kind" 0 average, 1 max (to the first maximum), 2 max with ties sharing
def global_pool_grad_type(node, ins):
    _f32(node, ins)
    n, hw, c = _ints(node, "dims", 3)
    shape = tuple(int(d) for d in node.attrs["shape"])
    if math.prod(shape) != n * hw * c or math.prod(ins[0].shape) != n * c:
        raise ShapeError(f"node '{node.name}' (GlobalPoolGrad): dims {[n, hw, c]} do not match dy "
                         f"{ins[0].shape} and x {shape}")
    return [TensorType(shape, "float32")]


def global_pool_grad_lower(ctx, node):
    n, hw, c = _ints(node, "dims", 3)
    kind = int(node.attrs.get("kind", 0))
    if n * hw * c:
        ctx.kernel("global_pool_grad", [node.inputs[0], node.inputs[1] if kind else ""], node.outputs[:1],
                   ints=[n, hw, c, kind])


register("GlobalPoolGrad", global_pool_grad_type, global_pool_grad_lower)


# GlobalMaxPool2D(x channels-last, (N, ..., C)) -> the maximum over every spatial position,
# (N, C) or with keepdims (N, 1, ..., 1, C): what engine.nn's global max poolings emit in
# training graphs (inference graphs keep ReduceMax), so that the gradient is one native step
# (shared by tied maxima, as Keras's reduce_max).
def global_max_type(node, ins):
    return gap_type(node, ins)


register("GlobalMaxPool2D", global_max_type, gap_lower, check=gap_check)


# -- Conv2D (NHWC) -------------------------------------------------------------------------------

def _needs_pre_activation(node) -> bool:
    act = resolve(node.attrs, node.name)[0]
    return act not in FROM_Y and act not in NEEDS_NOTHING


@training_form("Conv2D")
def conv2d_training(gb, node):
    """A fused activation whose derivative reads the pre-activation runs after the conv, as an
    Activation node (whose rule reads the conv's output); others stay fused (as Dense)."""
    gb._names.add(node.name)
    if "maxpool" in node.attrs or not _needs_pre_activation(node):
        gb.add(Node(node.op, list(node.inputs), list(node.outputs), dict(node.attrs), node.name))
        return
    act_keys = ("activation", "activation_alpha", "activation_beta")
    pre = gb.fresh(f"{node.outputs[0]}/linear")
    gb.add(Node("Conv2D", list(node.inputs), [pre], {k: v for k, v in node.attrs.items() if k not in act_keys},
                node.name))
    gb.add(Node("Activation", [pre], list(node.outputs), {k: v for k, v in node.attrs.items() if k in act_keys},
                gb.fresh(f"{node.name}/activation")))


def _float32(gb, node, names):
    for n in names:
        if n and gb.dtype(n) != "float32":
            raise EngineError(f"node '{node.name}' ({node.op}): training is float32 only, '{n}' is {gb.dtype(n)}")


def _conv_grads(gb, s: Window2D, dz, x, w, b, base, want):
    """(dx, dw, db) of y = conv(x, w) + b for dz = dL/dy, NHWC / HWIO; want: which of the three
    are needed (None for the others)."""
    conv = conv_ints(s)
    dx = gb.node("Conv2DGradInput", [dz, w], attrs={"conv": conv}, base=f"{base}/dx") if want[0] else None
    dw = db = None
    if want[1] or want[2]:
        outs = [gb.fresh(f"{base}/dw") if want[1] else "", gb.fresh(f"{base}/db") if want[2] else ""]
        gb.node("Conv2DGradWeight", [dz, x], outs, attrs={"conv": conv})
        dw, db = outs[0] or None, outs[1] or None
    return dx, dw, db


def _wanted(gb, x, w, b):
    return gb.needs(x), gb.needs(w), bool(b) and gb.needs(b)


@backward_rule("Conv2D")
def conv2d_backward(gb, node, dys):
    if "maxpool" in node.attrs:
        raise GraphError(f"node '{node.name}' (Conv2D): a conv with a fused max-pool has no backward rule; "
                         "training graphs keep the pool a node of its own (do not run passes.fuse_conv_maxpool "
                         "on a graph to be trained)")
    x, w = node.inputs[:2]
    b = node.inputs[2] if len(node.inputs) > 2 else ""
    res = node.inputs[3] if len(node.inputs) > 3 else ""
    _float32(gb, node, [x, w, b, res])
    act, alpha, beta = resolve(node.attrs, node.name)
    if act not in FROM_Y and act not in NEEDS_NOTHING:
        raise GraphError(f"node '{node.name}' (Conv2D): the derivative of the fused activation "
                         f"'{node.attrs.get('activation')}' needs the pre-activation, which a fused node does not "
                         "keep (training graphs split it off: build them with engine.autograd)")
    y = node.outputs[0]
    dz = act_backward(gb, "", y, dys[0], act, alpha, beta)
    s = conv_params(node, gb.shape(x), gb.shape(w))
    dx, dw, db = _conv_grads(gb, s, dz, x, w, b, f"grad/{y}", _wanted(gb, x, w, b))
    dres = dz if res and gb.needs(res) else None
    return [dx, dw, db, dres][:len(node.inputs)]


# -- NHWC pooling ------------------------------------------------------------------------------

def pool_ints(s: Window2D, is_max: bool) -> list:
    return [int(is_max), s.N, s.H, s.W, s.C, s.KH, s.KW, s.stride_h, s.stride_w, s.dil_h, s.dil_w,
            s.pad_top, s.pad_left, s.pad_bottom, s.pad_right, int(s.ceil_mode), int(s.count_include_pad)]


@backward_rule("MaxPool2D", "AvgPool2D")
def pool2d_backward(gb, node, dys):
    x = node.inputs[0]
    _float32(gb, node, [x])
    is_max = node.op == "MaxPool2D"
    s = pool_params(node, gb.shape(x))
    return [gb.node("Pool2DGrad", [dys[0], x if is_max else ""], attrs={"pool": pool_ints(s, is_max)},
                    base=f"grad/{node.outputs[0]}/dx")]


@backward_rule("GlobalAveragePool2D", "GlobalMaxPool2D")
def global_pool2d_backward(gb, node, dys):
    x = node.inputs[0]
    _float32(gb, node, [x])
    shape = gb.shape(x)
    kind = 2 if node.op == "GlobalMaxPool2D" else 0  # max: ties share, as Keras's reduce_max
    dims = [shape[0], math.prod(shape[1:-1]), shape[-1]]
    return [gb.node("GlobalPoolGrad", [dys[0], x if kind else ""],
                    attrs={"kind": kind, "dims": dims, "shape": list(shape)}, base=f"grad/{node.outputs[0]}/dx")]


# -- ONNX ops over NCHW (1-D and 2-D) ----------------------------------------------------------

def _reshape(gb, t, shape):
    return t if gb.shape(t) == tuple(shape) else gb.node("Reshape", [t], attrs={"shape": list(shape)})


def _to_nhwc(gb, t):
    """An (N, C, L) or (N, C, H, W) tensor as NHWC (N, H, W, C), H = 1 for 1-D."""
    shape = gb.shape(t)
    n, c, sp = shape[0], shape[1], shape[2:]
    h, w = sp if len(sp) == 2 else (1, sp[0])
    if c == 1 or h * w == 1:  # the same bytes
        return _reshape(gb, t, (n, h, w, c))
    if len(sp) == 2:
        return gb.node("Transpose", [t], attrs={"perm": [0, 2, 3, 1]})
    return _reshape(gb, gb.node("Transpose", [t], attrs={"perm": [0, 2, 1]}), (n, 1, w, c))


def _from_nhwc(gb, t, shape):
    """An NHWC tensor back to the NCHW `shape` (N, C, L) or (N, C, H, W)."""
    n, h, w, c = gb.shape(t)
    if c == 1 or h * w == 1:
        return _reshape(gb, t, shape)
    if len(shape) == 4:
        return gb.node("Transpose", [t], attrs={"perm": [0, 3, 1, 2]})
    return gb.node("Transpose", [_reshape(gb, t, (n, w, c))], attrs={"perm": [0, 2, 1]})


def _hwio(gb, w):
    """An OIHW (or OIL) filter as HWIO (a constant when the filter is one)."""
    shape = gb.shape(w)
    value = gb.value(w)
    if value is not None:
        v = np.asarray(value).reshape(shape[:2] + (1,) * (4 - len(shape)) + shape[2:])
        return gb.const(np.ascontiguousarray(v.transpose(2, 3, 1, 0)), base=f"{w}/hwio")
    if len(shape) == 4:
        return gb.node("Transpose", [w], attrs={"perm": [2, 3, 1, 0]})
    t = gb.node("Transpose", [w], attrs={"perm": [2, 1, 0]})  # (K, I, O)
    return _reshape(gb, t, (1,) + gb.shape(t))


def _oihw(gb, dw, shape):
    """An HWIO filter gradient back to the OIHW (or OIL) `shape`."""
    if len(shape) == 4:
        return gb.node("Transpose", [dw], attrs={"perm": [3, 2, 0, 1]})
    kh, kw, i, o = gb.shape(dw)
    return gb.node("Transpose", [_reshape(gb, dw, (kw, i, o))], attrs={"perm": [2, 1, 0]})


def _nchw_check(gb, node, x, what="this op"):
    shape = gb.shape(x)
    _float32(gb, node, [i for i in node.inputs if i])
    if len(shape) not in (3, 4):
        from ..autograd import NoGradientError
        raise NoGradientError(f"node '{node.name}' ({node.op}): only 1-D and 2-D {what} can be trained, "
                              f"input has shape {shape}")


def _two(t, fill):
    return tuple(t) if len(t) == 2 else (fill,) + tuple(t)


def _window2d(win, n, c, oc=0, groups=1, ceil=False, include_pad=False) -> Window2D:
    (h, w), (kh, kw) = _two(win.inp, 1), _two(win.kernel, 1)
    (sh, sw), (dh, dw) = _two(win.strides, 1), _two(win.dilations, 1)
    (pt, pl), (pb, pr) = _two(win.pads_begin, 0), _two(win.pads_end, 0)
    return Window2D(n, h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, OC=oc, groups=groups, ceil_mode=ceil,
                    count_include_pad=include_pad)


def _onnx_conv_parts(gb, node, transposed):
    """(x, w, b, x's shape, w's shape, (C, OC, group)) of an ONNX Conv / ConvTranspose node."""
    x, w = node.inputs[:2]
    b = node.inputs[2] if len(node.inputs) > 2 else ""
    _nchw_check(gb, node, x, "transposed convolutions" if transposed else "convolutions")
    xs, ws = gb.shape(x), gb.shape(w)
    return x, w, b, xs, ws, _channels(node, xs, ws, transposed=transposed)


@backward_rule("Conv")
def onnx_conv_backward(gb, node, dys):
    x, w, b, xs, ws, (_, oc, group) = _onnx_conv_parts(gb, node, False)
    s = _window2d(conv_window(node, xs, ws), xs[0], xs[1], oc, group)
    base = f"grad/{node.outputs[0]}"
    want = _wanted(gb, x, w, b)
    dz = _to_nhwc(gb, dys[0])
    xt = _to_nhwc(gb, x) if want[1] else x  # only dw reads x, only dx the filter
    wt = _hwio(gb, w) if want[0] else w
    dx, dw, db = _conv_grads(gb, s, dz, xt, wt, b, base, want)
    if dx is not None:
        dx = _from_nhwc(gb, dx, xs)
    if dw is not None:
        dw = _oihw(gb, dw, ws)
    return [dx, dw, db]


@backward_rule("ConvTranspose")
def onnx_conv_transpose_backward(gb, node, dys):
    # y = ConvTranspose(x, w) is the input gradient of the conv that maps y's shape to x's with
    # the same window (its filter HWIO: w transposed (2, 3, 1, 0)): so dx = that conv of dy,
    # and dw its filter gradient with x in the role of its output gradient.
    x, w, b, xs, ws, (c_in, oc, group) = _onnx_conv_parts(gb, node, True)
    win = conv_transpose_window(node, xs, ws)
    if min(win.pads_begin + win.pads_end) < 0:
        raise GraphError(f"node '{node.name}' (ConvTranspose): an output grown past the full transposed "
                         f"convolution (pads {list(win.pads_begin) + list(win.pads_end)}) has no backward rule")
    ys = gb.shape(node.outputs[0])
    # The forward conv of the pair: input y (oc channels), output x (c_in channels).
    fwd = type(win)(win.out, win.inp, win.kernel, win.strides, win.dilations, win.pads_begin, win.pads_end)
    s = _window2d(fwd, xs[0], oc, c_in, group)
    if (s.OH, s.OW) != _two(xs[2:], 1):
        raise GraphError(f"node '{node.name}' (ConvTranspose): output padding {win.pads_end} leaves no conv "
                         f"that inverts it; it has no backward rule")
    dyt = _to_nhwc(gb, dys[0])
    dx = dw = db = None
    if gb.needs(x):
        attrs = {"strides": [s.stride_h, s.stride_w], "dilations": [s.dil_h, s.dil_w], "groups": group,
                 "padding": [s.pad_top, s.pad_left, s.pad_bottom, s.pad_right]}
        dx = _from_nhwc(gb, gb.node("Conv2D", [dyt, _hwio(gb, w)], attrs=attrs), xs)
    if gb.needs(w):
        dwt = gb.fresh(f"grad/{node.outputs[0]}/dw")
        gb.node("Conv2DGradWeight", [_to_nhwc(gb, x), dyt], [dwt, ""], attrs={"conv": conv_ints(s)})
        dw = _oihw(gb, dwt, ws)  # HWIO (k, oc/group, c_in) -> (c_in, oc/group, k)
    if b and gb.needs(b):
        axes = gb.const(np.array([0] + list(range(2, len(ys))), np.int64))
        db = gb.node("ReduceSum", [dys[0], axes], attrs={"keepdims": 0})
    return [dx, dw, db]


def _onnx_pool_window(gb, node, x):
    _nchw_check(gb, node, x, "pools")
    xs = gb.shape(x)
    ceil = bool(int_attr(node, "ceil_mode", 0, (0, 1)))
    include = bool(int_attr(node, "count_include_pad", 0, (0, 1)))
    return _window2d(pool_window(node, xs), xs[0], xs[1], ceil=ceil, include_pad=include)


@backward_rule("MaxPool", "AveragePool")
def onnx_pool_backward(gb, node, dys):
    x = node.inputs[0]
    s = _onnx_pool_window(gb, node, x)
    is_max = node.op == "MaxPool"
    dx = gb.node("Pool2DGrad", [_to_nhwc(gb, dys[0]), _to_nhwc(gb, x) if is_max else ""],
                 attrs={"pool": pool_ints(s, is_max)}, base=f"grad/{node.outputs[0]}/dx")
    return [_from_nhwc(gb, dx, gb.shape(x))]


@backward_rule("GlobalAveragePool", "GlobalMaxPool")
def onnx_global_pool_backward(gb, node, dys):
    # NCHW is N·C planes of H·W: the NHWC kernel with C = 1.
    x = node.inputs[0]
    _float32(gb, node, [x])
    xs = gb.shape(x)
    kind = 1 if node.op == "GlobalMaxPool" else 0  # max: to the first maximum, as MaxPool
    dims = [xs[0] * xs[1], math.prod(xs[2:]), 1]
    return [gb.node("GlobalPoolGrad", [dys[0], x if kind else ""],
                    attrs={"kind": kind, "dims": dims, "shape": list(xs)}, base=f"grad/{node.outputs[0]}/dx")]
