"""Backward rules of the ops that move or view data (Reshape and friends, Transpose, Concat,
Split, Slice, Expand, Pad, Cast), and the SliceGrad op that scatters a slice's gradient back."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError
from . import views
from .grad_ops import zero_fill
from .grad_registry import backward_rule
from .movement import _slice_dims
from .registry import Tensor, TensorType, register


def _reshape_to(gb, dy, shape):
    return dy if gb.shape(dy) == tuple(shape) else gb.node("Reshape", [dy], attrs={"shape": list(shape)})


@backward_rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def view_backward(gb, node, dys):
    return [_reshape_to(gb, dys[0], gb.shape(node.inputs[0]))]


@backward_rule("Identity")
def identity_backward(gb, node, dys):
    return [dys[0]]


@backward_rule("Transpose")
def transpose_backward(gb, node, dys):
    rank = len(gb.shape(node.inputs[0]))
    perm = [int(p) % rank for p in node.attrs.get("perm", range(rank - 1, -1, -1))]
    inverse = [perm.index(d) for d in range(rank)]
    return [gb.node("Transpose", [dys[0]], attrs={"perm": inverse})]


def _tensors(gb, node):
    return [Tensor(gb.shape(i), gb.dtype(i), gb.value(i)) if i else None for i in node.inputs]


@backward_rule("Concat")
def concat_backward(gb, node, dys):
    rank = len(gb.shape(node.inputs[0]))
    axis = int(node.attrs["axis"]) % rank
    outs, start = [], 0
    for name in node.inputs:
        size = gb.shape(name)[axis]
        if gb.needs(name):
            outs.append(_slice(gb, dys[0], axis, start, start + size))
        else:
            outs.append(None)
        start += size
    return outs


def _slice(gb, x, axis, start, end):
    i64 = lambda v: gb.const(np.array([v], np.int64))  # noqa: E731
    return gb.node("Slice", [x, i64(start), i64(end), i64(axis)])


@backward_rule("Split")
def split_backward(gb, node, dys):
    axis = int(node.attrs.get("axis", 0)) % len(gb.shape(node.inputs[0]))
    parts = []
    for o, dy in zip(node.outputs, dys):
        parts.append(dy if dy is not None else gb.node("ZerosLike", [o]))
    return [gb.node("Concat", parts, attrs={"axis": axis}) if len(parts) > 1 else parts[0]]


@backward_rule("Slice")
def slice_backward(gb, node, dys):
    dims = _slice_dims(node, _tensors(gb, node))
    return [gb.node("SliceGrad", [dys[0], node.inputs[0]], attrs={"dims": [list(d) for d in dims]})]


@backward_rule("Expand")
def expand_backward(gb, node, dys):
    return [gb.sum_to(dys[0], gb.shape(node.inputs[0]))]


@backward_rule("Pad")
def pad_backward(gb, node, dys):
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        from ..autograd import NoGradientError
        raise NoGradientError(f"node '{node.name}' (Pad): only constant padding has a backward rule, got mode {mode!r}")
    from .pad import _pads
    x = gb.shape(node.inputs[0])
    pads = _pads(node, _tensors(gb, node))
    if any(b < 0 or e < 0 for b, e in pads):
        from ..autograd import NoGradientError
        raise NoGradientError(f"node '{node.name}' (Pad): negative pads (crops) have no backward rule")
    dims = [(b, 1, d) for (b, _), d in zip(pads, x)]
    return [gb.node("SliceOf", [dys[0]], attrs={"dims": [list(d) for d in dims]})]


@backward_rule("Cast")
def cast_backward(gb, node, dys):
    src = gb.dtype(node.inputs[0])
    if not src.startswith("float"):
        return [None]
    onnx_code = {"float32": 1, "float16": 10, "float64": 11, "bfloat16": 16}[src]
    return [gb.node("Cast", [dys[0]], attrs={"to": onnx_code}) if gb.dtype(dys[0]) != src else dys[0]]


# -- SliceGrad(dy, x) -> dx: zeros of x's shape with dy at the slice's positions -----------------
# attr dims: [start, step, size] per dim of x (movement._slice_dims). SliceOf(x): the
# forward counterpart for those dims (a strided view copied out).

def _slice_grad_type(node, ins):
    return [TensorType(ins[1].shape, ins[0].dtype)]


def _slice_grad_lower(ctx, node):
    dy, x = node.inputs
    dx = node.outputs[0]
    dims = node.attrs["dims"]
    zero_fill(ctx, dx)
    st = views.strides_of(ctx.shape(x))
    sizes = [size for _, _, size in dims]
    if math.prod(sizes):
        views.copy_view(ctx, dy, dx, sizes, views.strides_of(sizes),
                        dst_strides=[step * s for (_, step, _), s in zip(dims, st)],
                        dst_offset=sum(start * s for (start, _, _), s in zip(dims, st)))


register("SliceGrad", _slice_grad_type, _slice_grad_lower)


def _slice_of_type(node, ins):
    dims = node.attrs["dims"]
    if len(dims) != len(ins[0].shape):
        raise ShapeError(f"node '{node.name}' (SliceOf): dims must give each of {len(ins[0].shape)} dims")
    return [TensorType(tuple(size for _, _, size in dims), ins[0].dtype)]


def _slice_of_lower(ctx, node):
    x = node.inputs[0]
    dims = node.attrs["dims"]
    st = views.strides_of(ctx.shape(x))
    views.copy_view(ctx, x, node.outputs[0], [size for _, _, size in dims],
                    [step * s for (_, step, _), s in zip(dims, st)],
                    src_offset=sum(start * s for (start, _, size), s in zip(dims, st)))


register("SliceOf", _slice_of_type, _slice_of_lower)


def _zeros_like_lower(ctx, node):
    zero_fill(ctx, node.outputs[0])


register("ZerosLike", lambda node, ins: [TensorType(ins[0].shape, ins[0].dtype)], _zeros_like_lower)
