"""Conv2D and 2-D pooling, NHWC activations and HWIO filters (see docs/layout.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import GraphError, ShapeError
from .activations import resolve
from .registry import TensorType, register


@dataclass
class Window2D:
    """One 2-D convolution or pooling window over an NHWC input (the fields of the native
    Conv2DShape / Pool2DShape)."""
    N: int
    H: int
    W: int
    C: int
    KH: int
    KW: int
    stride_h: int = 1
    stride_w: int = 1
    dil_h: int = 1
    dil_w: int = 1
    pad_top: int = 0
    pad_left: int = 0
    pad_bottom: int = 0
    pad_right: int = 0
    OC: int = 0
    groups: int = 1
    ceil_mode: bool = False
    count_include_pad: bool = False

    def _out(self, n, pa, pb, k, d, s):
        span = n + pa + pb - d * (k - 1) - 1
        if span < 0:
            return 0
        if self.ceil_mode:
            o = -(-span // s) + 1
            if (o - 1) * s >= n + pa:  # the last window must start inside the input or left pad
                o -= 1
            return o
        return span // s + 1

    @property
    def OH(self) -> int:
        return self._out(self.H, self.pad_top, self.pad_bottom, self.KH, self.dil_h, self.stride_h)

    @property
    def OW(self) -> int:
        return self._out(self.W, self.pad_left, self.pad_right, self.KW, self.dil_w, self.stride_w)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pair(v, name, node):
    if _is_int(v):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(i) for i in v):
        return tuple(v)
    raise GraphError(f"node '{node.name}': attribute '{name}' must be an int or 2 ints, got {v!r}")


def _padding_attr(node):
    padding = node.attrs.get("padding", "valid")
    if padding in ("valid", "same") or (
            isinstance(padding, (list, tuple)) and len(padding) == 4
            and all(_is_int(p) and p >= 0 for p in padding)):
        return padding
    raise GraphError(f"node '{node.name}': padding must be 'valid', 'same' or 4 non-negative "
                     f"ints (top, left, bottom, right), got {padding!r}")


def resolve_padding(padding, size, kernel, stride, dilation, node):
    """(top, left, bottom, right) from 'valid', 'same' (TensorFlow/Keras rule: the extra
    pixel goes at the end) or 4 explicit ints."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        pads = []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        return (pads[0][0], pads[1][0], pads[0][1], pads[1][1])
    return tuple(padding)


def _window_attrs(node, default_strides=1):
    """Shared attribute checks: (strides, dilations, padding spec), no shapes needed."""
    a = node.attrs
    strides = _pair(a.get("strides", default_strides), "strides", node)
    dil = _pair(a.get("dilations", 1), "dilations", node)
    if min(strides + dil) < 1:
        raise GraphError(f"node '{node.name}': strides and dilations must be >= 1, got {strides}, {dil}")
    return strides, dil, _padding_attr(node)


def _window(node, x, kernel, default_strides=1):
    """Returns (strides, dilations, pads) for input shape x."""
    strides, dil, padding = _window_attrs(node, default_strides)
    return strides, dil, resolve_padding(padding, x[1:3], kernel, strides, dil, node)


def _check_nhwc(node, x):
    if len(x) != 4:
        raise ShapeError(f"node '{node.name}' ({node.op}): expected a 4-D NHWC input, got shape {x}")


def conv_params(node, x, w):
    _check_nhwc(node, x)
    if len(w) != 4:
        raise ShapeError(f"node '{node.name}' (Conv2D): filter must be 4-D HWIO, got {w}")
    groups = int(node.attrs.get("groups", 1))
    if groups < 1 or x[3] % groups or w[3] % groups or w[2] * groups != x[3]:
        raise ShapeError(f"node '{node.name}' (Conv2D): input has {x[3]} channels, filter {w} "
                         f"with groups={groups} expects {w[2] * groups}")
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = _window(node, x, w[:2])
    s = Window2D(x[0], x[1], x[2], x[3], w[0], w[1], sh, sw, dh, dw, pt, pl, pb, pr, OC=w[3], groups=groups)
    if s.OH < 1 or s.OW < 1:
        raise ShapeError(f"node '{node.name}' (Conv2D): input {x} is smaller than the "
                         f"{w[0]}x{w[1]} filter (dilation {dh}x{dw}) after padding")
    return s


def _fused_pool(node, s):
    """The (pool_h, pool_w) of a max-pool fused into this conv (passes/fuse_conv_pool.py)."""
    if "maxpool" not in node.attrs:
        return None
    ph, pw = _pair(node.attrs["maxpool"], "maxpool", node)
    if ph > s.OH or pw > s.OW:
        raise ShapeError(f"node '{node.name}' (Conv2D): fused {ph}x{pw} max-pool is larger "
                         f"than the {s.OH}x{s.OW} conv output")
    return ph, pw


def _flag(node, name):
    v = node.attrs.get(name, False)
    if not isinstance(v, (bool, int)) or v not in (0, 1):
        raise GraphError(f"node '{node.name}' ({node.op}): attribute '{name}' must be a bool, got {v!r}")
    return bool(v)


def conv_check(node):
    _window_attrs(node)
    groups = node.attrs.get("groups", 1)
    if not _is_int(groups) or groups < 1:
        raise GraphError(f"node '{node.name}' (Conv2D): groups must be a positive int, got {groups!r}")
    if "maxpool" in node.attrs:
        ph, pw = _pair(node.attrs["maxpool"], "maxpool", node)
        if min(ph, pw) < 1:
            raise GraphError(f"node '{node.name}' (Conv2D): maxpool window must be >= 1, got {ph}x{pw}")
        if _residual(node):
            raise GraphError(f"node '{node.name}' (Conv2D): a fused max-pool and a residual input "
                             "cannot be combined")
    resolve(node.attrs, node.name)


def _residual(node):
    """The residual input's name (a skip connection added before the activation), or ""."""
    return node.inputs[3] if len(node.inputs) > 3 else ""


def conv_type(node, ins):
    x, w = ins[0].shape, ins[1].shape
    s = conv_params(node, x, w)
    if len(ins) > 2 and ins[2] is not None and ins[2].shape != (w[3],):
        raise ShapeError(f"node '{node.name}' (Conv2D): bias must have shape ({w[3]},), got {ins[2].shape}")
    pool = _fused_pool(node, s)
    if pool:
        return [TensorType((x[0], s.OH // pool[0], s.OW // pool[1], w[3]), ins[0].dtype)]
    out = (x[0], s.OH, s.OW, w[3])
    if len(ins) > 3 and ins[3] is not None and (tuple(ins[3].shape) != out or ins[3].dtype != ins[0].dtype):
        raise ShapeError(f"node '{node.name}' (Conv2D): residual must be {ins[0].dtype} of the output "
                         f"shape {out}, got {ins[3].dtype} {tuple(ins[3].shape)}")
    return [TensorType(out, ins[0].dtype)]


def conv_lower(ctx, node):
    x, w_name = node.inputs[0], node.inputs[1]
    b_name = node.inputs[2] if len(node.inputs) > 2 else ""
    res = _residual(node)
    s = conv_params(node, ctx.shape(x), ctx.shape(w_name))
    act, a, b = resolve(node.attrs, node.name)
    pool = _fused_pool(node, s) or (0, 0)
    if not known_weights(ctx, w_name, b_name):  # trained (a training graph's inputs): packed per call
        conv2d_dynamic(ctx, s, x, w_name, b_name, res, node.outputs[0], "HWIO", (act, a, b), pool)
        return
    key = ("conv", w_name, b_name, s.H, s.W)  # packing is independent of the batch size
    packed = ctx.cached(key, lambda: ctx.pack_conv2d(
        s, ctx.const(w_name), ctx.const(b_name) if b_name else None))
    ctx.kernel("conv2d", [x, res] if res else [x], node.outputs, ints=[s.N, act, pool[0], pool[1]],
               floats=[a, b], state=packed)


def known_weights(ctx, *names) -> bool:
    """Whether every named weight ("" = absent) is known when planning, so it can be packed once."""
    return all(not n or ctx.value(n) is not None for n in names)


def native_shape(window):
    """The native Conv2DShape of a Window2D (batch at least 1: layouts do not depend on it)."""
    from .. import _C

    s = _C.Conv2DShape()
    for field in ("N", "H", "W", "C", "OC", "KH", "KW", "stride_h", "stride_w", "dil_h", "dil_w",
                  "pad_top", "pad_left", "pad_bottom", "pad_right", "groups"):
        setattr(s, field, getattr(window, field))
    s.N = max(1, s.N)
    return s


def conv2d_dynamic(ctx, s, x, w, b, res, y, layout="HWIO", act=(0, 0.0, 0.0), pool=(0, 0)):
    """y = act(conv(x) + b + res) with a filter read when the step runs (`layout` "HWIO",
    "OIHW" or "DataGrad", see engine/conv.h): the conv2d_dynamic step packs it on every call
    into per-context scratch and runs the kernels of the packed path. s: the Window2D; b, res:
    "" when absent."""
    from .. import _C

    code = {"HWIO": _C.FilterLayout.HWIO, "OIHW": _C.FilterLayout.OIHW, "DataGrad": _C.FilterLayout.DataGrad}[layout]
    ws_floats = _C.DynamicConv2D(native_shape(s), code).workspace_floats
    ws = ctx.scratch((ws_floats,), "float32")
    ctx.kernel("conv2d_dynamic", [x, w, b, res, ws], [y],
               ints=[s.N, s.H, s.W, s.C, s.OC, s.KH, s.KW, s.stride_h, s.stride_w, s.dil_h, s.dil_w, s.pad_top,
                     s.pad_left, s.pad_bottom, s.pad_right, s.groups, int(code), act[0], pool[0], pool[1], ws_floats],
               floats=[act[1], act[2]])


# Conv2D(x NHWC, filter HWIO, [bias], [residual]); attrs: strides, padding, dilations, groups,
# activation, and maxpool [ph, pw] when a following non-overlapping max-pool was fused in (a
# pass sets it). A filter (or bias) not known when planning (a trained one) is packed by the step
# on every call. residual (output-shaped, passes/fuse_residual.py) is added before the
# activation: y = act(conv(x) + bias + residual).
register("Conv2D", conv_type, conv_lower, check=conv_check)


def pool_params(node, x):
    _check_nhwc(node, x)
    k = _pair(node.attrs.get("pool_size", 2), "pool_size", node)
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = _window(node, x, k, default_strides=k)
    s = Window2D(x[0], x[1], x[2], x[3], k[0], k[1], sh, sw, dh, dw, pt, pl, pb, pr,
                 ceil_mode=_flag(node, "ceil_mode"), count_include_pad=_flag(node, "count_include_pad"))
    if s.OH < 1 or s.OW < 1:
        raise ShapeError(f"node '{node.name}' ({node.op}): input {x} is smaller than the "
                         f"{k[0]}x{k[1]} window")
    return s


def pool_check(node):
    k = _pair(node.attrs.get("pool_size", 2), "pool_size", node)
    if min(k) < 1:
        raise GraphError(f"node '{node.name}' ({node.op}): pool_size must be >= 1, got {k}")
    _window_attrs(node, default_strides=k)
    _flag(node, "ceil_mode")
    _flag(node, "count_include_pad")


def pool_type(node, ins):
    s = pool_params(node, ins[0].shape)
    return [TensorType((s.N, s.OH, s.OW, s.C), ins[0].dtype)]


def _pool_lower(is_max):
    def lower(ctx, node):
        s = pool_params(node, ctx.shape(node.inputs[0]))
        if s.N == 0:  # an empty batch: nothing to write
            return
        ctx.kernel("pool2d", node.inputs[:1], node.outputs,
                   ints=[int(is_max), s.N, s.H, s.W, s.C, s.KH, s.KW, s.stride_h, s.stride_w, s.dil_h,
                         s.dil_w, s.pad_top, s.pad_left, s.pad_bottom, s.pad_right, int(s.ceil_mode),
                         int(s.count_include_pad)])
    return lower


# MaxPool2D / AvgPool2D(x NHWC); attrs: pool_size, strides (default pool_size), padding,
# dilations, ceil_mode, count_include_pad.
register("MaxPool2D", pool_type, _pool_lower(True), check=pool_check)
register("AvgPool2D", pool_type, _pool_lower(False), check=pool_check)


def _check_channels_last(node, x):
    if len(x) < 3:
        raise ShapeError(f"node '{node.name}' ({node.op}): expected a channels-last input (N, ..., C), got shape {x}")


def gap_type(node, ins):
    x = ins[0].shape
    _check_channels_last(node, x)
    n, c = x[0], x[-1]
    return [TensorType((n,) + (1,) * (len(x) - 2) + (c,) if _flag(node, "keepdims") else (n, c), ins[0].dtype)]


def gap_lower(ctx, node):
    shape = ctx.shape(node.inputs[0])
    n, hw, c = shape[0], math.prod(shape[1:-1]), shape[-1]
    if node.op == "GlobalAveragePool2D":
        ctx.kernel("global_avgpool", node.inputs[:1], node.outputs, ints=[n, hw, c])
    elif n * c:
        ctx.kernel("reduce", node.inputs[:1], node.outputs, ints=[2, n, hw, c])  # ReduceMax over hw


def gap_check(node):
    _flag(node, "keepdims")


# GlobalAveragePool2D(x NHWC, or channels-last of any rank (N, ..., C)) -> the mean over every
# spatial position: (N, C), or (N, 1, ..., 1, C) with keepdims. (GlobalMaxPool2D, the same
# with the maximum, is registered with the training ops in spatial_grad.py.)
register("GlobalAveragePool2D", gap_type, gap_lower, check=gap_check)
