"""Pad (ONNX semantics, every element type): modes constant, reflect, edge and wrap; pads and
axes known when the model is planned, negative pads crop. One `pad` kernel call: the planner
decides, per output index of every dim, which input index it copies (or the pad value), so
the kernel only copies runs of rows."""

from __future__ import annotations

import numpy as np

from .. import dtypes
from .axes import attr_str, known_ints, norm_axes, present, shape_error, tensors_of
from .registry import TensorType, register

MODES = ("constant", "reflect", "edge", "wrap")


def _pads(node, ins) -> list:
    """(begin, end) per dim of the input."""
    x = ins[0].shape
    pads = known_ints(node, ins, 1, "pads")
    if pads is None:
        raise shape_error(node, "needs its pads input")
    axes = known_ints(node, ins, 3, "axes")
    axes = list(range(len(x))) if axes is None else norm_axes(node, axes, len(x))
    if len(pads) != 2 * len(axes):
        raise shape_error(node, f"pads {pads} must hold a begin and an end for each of {len(axes)} axes")
    out = [(0, 0)] * len(x)
    for i, a in enumerate(axes):
        out[a] = (pads[i], pads[len(axes) + i])
    for d, (b, e) in zip(x, out):
        if d + b + e < 0:
            raise shape_error(node, f"pads {pads} crop more than dim of size {d}")
        if d == 0 and (b > 0 or e > 0) and node.attrs.get("mode", "constant") != "constant":
            raise shape_error(node, f"cannot {node.attrs.get('mode')}-pad an empty dim")
    return out


def _source(mode: str, d: int, begin: int, n: int) -> list:
    """For each of n output indices along a dim of size d, the input index it reads (-1: the
    pad value)."""
    out = []
    for i in range(n):
        j = i - begin
        if 0 <= j < d:
            out.append(j)
        elif mode == "constant":
            out.append(-1)
        elif mode == "edge":
            out.append(min(max(j, 0), d - 1))
        elif mode == "wrap":
            out.append(j % d)
        elif d == 1:  # reflect
            out.append(0)
        else:
            j %= 2 * (d - 1)
            out.append(j if j < d else 2 * (d - 1) - j)
    return out


def pad_type(node, ins):
    x = ins[0].shape
    if present(ins, 2) and ins[2].dtype != ins[0].dtype and ins[2].value is None:
        # A known value is converted (Pad before opset 11 carried it as a float attribute).
        raise shape_error(node, f"constant_value is {ins[2].dtype}, the data {ins[0].dtype}")
    return [TensorType(tuple(d + b + e for d, (b, e) in zip(x, _pads(node, ins))), ins[0].dtype)]


def _merged(shape, pads) -> tuple:
    """Neighbouring unpadded dims merged into one (fewer, longer rows for the kernel)."""
    dims, out_pads = [], []
    for d, p in zip(shape, pads):
        if dims and p == (0, 0) and out_pads[-1] == (0, 0):
            dims[-1] *= d
        else:
            dims.append(d)
            out_pads.append(p)
    return dims, out_pads


def pad_lower(ctx, node):
    x, y = node.inputs[0], node.outputs[0]
    mode = attr_str(node, "mode", "constant", MODES)
    dims, pads = _merged(ctx.shape(x), _pads(node, tensors_of(ctx, node)))
    if not dims:  # a scalar: nothing to pad
        dims, pads = [1], [(0, 0)]
    out = [d + b + e for d, (b, e) in zip(dims, pads)]
    tables = [i for d, (b, _), n in zip(dims, pads, out) for i in _source(mode, d, b, n)]
    value = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    if value is None or ctx.dtype(value) != ctx.dtype(x):
        known = 0 if value is None else ctx.const(value).reshape(-1)[0]
        value = ctx.constant(np.array([known]).astype(dtypes.to_numpy(ctx.dtype(x))))
    ctx.kernel("pad", [x, value], [y], dtype="any",
               ints=[dtypes.itemsize(ctx.dtype(x)), len(dims), *dims, *out, *tables])


def pad_eval(node, ins):
    x = ins[0].value
    mode = attr_str(node, "mode", "constant", MODES)
    value = ins[2].value.reshape(-1)[0].astype(x.dtype) if present(ins, 2) else 0
    pads = _pads(node, ins)
    tables = [np.array(_source(mode, d, b, d + b + e), np.int64) for d, (b, e) in zip(x.shape, pads)]
    out_shape = tuple(len(t) for t in tables)
    if x.size == 0 or 0 in out_shape:
        return [np.full(out_shape, value, x.dtype)]
    y = x[np.ix_(*[np.maximum(t, 0) for t in tables])] if tables else x.copy()
    for axis, t in enumerate(tables):
        pad_at = [slice(None)] * len(tables)
        pad_at[axis] = t < 0
        y[tuple(pad_at)] = value
    return [y]


# Pad(data, pads, constant_value?, axes?); attr mode (default constant). constant_value is
# read when the step runs, so it may come from data.
register("Pad", pad_type, pad_lower, evaluate=pad_eval,
         check=lambda node: attr_str(node, "mode", "constant", MODES))
