"""Gather / Scatter families and OneHot (ONNX semantics, every element type; indices int32 or
int64, negative ones count from the end). Index values are checked by the kernels when they
run (an out-of-range index is a KernelError naming the op), and here when evaluated ahead."""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes
from .axes import attr_int, attr_str, known_scalar, norm_axis, shape_error, tensors_of
from .registry import TensorType, register
from .views import strides_of

REDUCTIONS = ("none", "add", "mul", "max", "min")


def _index_type(node, t, what="indices") -> None:
    if t.dtype not in ("int32", "int64"):
        raise shape_error(node, f"{what} must be int32 or int64, got {t.dtype}")


def _wrapped(node, idx: np.ndarray, size: int) -> np.ndarray:
    """Indices into a dim of `size` with negatives wrapped; ShapeError if one is out of range."""
    idx = idx.astype(np.int64)
    bad = (idx < -size) | (idx >= size)
    if bad.any():
        raise shape_error(node, f"index {int(idx[bad][0])} is out of range for a dimension of size {size}")
    return np.where(idx < 0, idx + size, idx)


def _elem(ctx, name) -> int:
    return dtypes.itemsize(ctx.dtype(name))


# -- Gather ----------------------------------------------------------------------------------


def gather_type(node, ins):
    data, idx = ins
    _index_type(node, idx)
    if not data.shape:
        raise shape_error(node, "cannot gather from a scalar")
    axis = norm_axis(node, attr_int(node, "axis", 0), len(data.shape))
    return [TensorType(data.shape[:axis] + idx.shape + data.shape[axis + 1:], data.dtype)]


def gather_lower(ctx, node):
    x, idx = node.inputs
    shape = ctx.shape(x)
    axis = norm_axis(node, attr_int(node, "axis", 0), len(shape))
    ctx.kernel("gather", [x, idx], node.outputs, dtype="any",
               ints=[_elem(ctx, x), math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]),
                     math.prod(ctx.shape(idx))])


def gather_eval(node, ins):
    data, idx = ins[0].value, ins[1].value
    axis = norm_axis(node, attr_int(node, "axis", 0), data.ndim)
    return [np.take(data, _wrapped(node, idx, data.shape[axis]), axis=axis)]


register("Gather", gather_type, gather_lower, evaluate=gather_eval, check=lambda node: attr_int(node, "axis", 0))

# -- GatherElements / ScatterElements --------------------------------------------------------


def _elements_axis(node, data, idx, what="indices") -> int:
    _index_type(node, idx)
    if len(idx.shape) != len(data.shape) or not data.shape:
        raise shape_error(node, f"{what} {idx.shape} must have the data's rank ({len(data.shape)}, at least 1)")
    axis = norm_axis(node, attr_int(node, "axis", 0), len(data.shape))
    for d, (a, b) in enumerate(zip(idx.shape, data.shape)):
        if d != axis and a > b:
            raise shape_error(node, f"{what} shape {idx.shape} exceeds the data's {data.shape} in dim {d}")
    return axis


def _element_positions(node, data_shape, idx, axis) -> tuple:
    """numpy index arrays addressing data at every position of idx, with `axis` from idx."""
    grids = list(np.indices(idx.shape, sparse=True))
    grids[axis] = _wrapped(node, idx, data_shape[axis])
    return tuple(grids)


def gather_elements_type(node, ins):
    _elements_axis(node, ins[0], ins[1])
    return [TensorType(ins[1].shape, ins[0].dtype)]


def gather_elements_lower(ctx, node):
    x, idx = node.inputs
    shape, ishape = ctx.shape(x), ctx.shape(idx)
    axis = norm_axis(node, attr_int(node, "axis", 0), len(shape))
    ctx.kernel("gather_elements", [x, idx], node.outputs, dtype="any",
               ints=[_elem(ctx, x), len(shape), axis, shape[axis], *ishape, *strides_of(shape)])


register("GatherElements", gather_elements_type, gather_elements_lower,
         check=lambda node: attr_int(node, "axis", 0),
         evaluate=lambda node, ins: [ins[0].value[_element_positions(
             node, ins[0].shape, ins[1].value, norm_axis(node, attr_int(node, "axis", 0), len(ins[0].shape)))]])


def _scatter_check(node) -> None:
    attr_int(node, "axis", 0)
    attr_str(node, "reduction", "none", REDUCTIONS)


def _reduction_code(node) -> int:
    return REDUCTIONS.index(attr_str(node, "reduction", "none", REDUCTIONS))


def _scatter_types(node, ins, updates_shape) -> list:
    data, _, upd = ins
    if upd.dtype != data.dtype:
        raise shape_error(node, f"updates are {upd.dtype}, the data {data.dtype}")
    if upd.shape != tuple(updates_shape):
        raise shape_error(node, f"updates have shape {upd.shape}, expected {tuple(updates_shape)}")
    return [TensorType(data.shape, data.dtype)]


def scatter_elements_type(node, ins):
    _elements_axis(node, ins[0], ins[1])
    return _scatter_types(node, ins, ins[1].shape)


def scatter_elements_lower(ctx, node):
    data, idx, upd = node.inputs
    shape = ctx.shape(data)
    axis = norm_axis(node, attr_int(node, "axis", 0), len(shape))
    ctx.kernel("scatter_elements", [data, idx, upd], node.outputs, dtype="any",
               ints=[_reduction_code(node), math.prod(shape) * _elem(ctx, data), len(shape), axis, shape[axis],
                     *ctx.shape(idx), *strides_of(shape)])


_UFUNCS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter_into(node, out: np.ndarray, where: tuple, upd: np.ndarray) -> np.ndarray:
    """out[where] (op)= upd, in order (duplicates reduce one after the other)."""
    reduction = attr_str(node, "reduction", "none", REDUCTIONS)
    if reduction == "none":
        out[where] = upd
    elif out.dtype == bool:
        (np.logical_or if reduction in ("add", "max") else np.logical_and).at(out, where, upd)
    else:
        _UFUNCS[reduction].at(out, where, upd)
    return out


def scatter_elements_eval(node, ins):
    data, idx, upd = (t.value for t in ins)
    axis = norm_axis(node, attr_int(node, "axis", 0), data.ndim)
    where = tuple(np.broadcast_to(g, idx.shape) for g in _element_positions(node, data.shape, idx, axis))
    return [_scatter_into(node, data.copy(), where, upd)]


register("ScatterElements", scatter_elements_type, scatter_elements_lower, inplace=True, check=_scatter_check,
         evaluate=scatter_elements_eval)

# -- GatherND / ScatterND --------------------------------------------------------------------


def _nd(node, data, idx, batch_dims=0) -> int:
    """Depth of the index tuples (idx.shape[-1]), checked against data's shape."""
    _index_type(node, idx)
    if not idx.shape or not data.shape:
        raise shape_error(node, f"data {data.shape} and indices {idx.shape} need at least one dim each")
    depth = idx.shape[-1]
    if batch_dims < 0 or batch_dims >= min(len(idx.shape), len(data.shape) + 1):
        raise shape_error(node, f"batch_dims {batch_dims} is out of range for indices {idx.shape}")
    if data.shape[:batch_dims] != idx.shape[:batch_dims]:
        raise shape_error(node, f"the first {batch_dims} dims of data {data.shape} and indices {idx.shape} differ")
    if depth > len(data.shape) - batch_dims:
        raise shape_error(node, f"index tuples of {depth} exceed the data's rank {len(data.shape)}"
                                + (f" after {batch_dims} batch dims" if batch_dims else ""))
    return depth


def gather_nd_type(node, ins):
    data, idx = ins
    b = attr_int(node, "batch_dims", 0)
    depth = _nd(node, data, idx, b)
    return [TensorType(idx.shape[:-1] + data.shape[b + depth:], data.dtype)]


def gather_nd_lower(ctx, node):
    x, idx = node.inputs
    shape, ishape = ctx.shape(x), ctx.shape(idx)
    b = attr_int(node, "batch_dims", 0)
    depth = ishape[-1]
    ctx.kernel("gather_nd", [x, idx], node.outputs, dtype="any",
               ints=[_elem(ctx, x), math.prod(shape[:b]), math.prod(ishape[b:-1]), math.prod(shape[b:]),
                     math.prod(shape[b + depth:]), depth, *shape[b:b + depth]])


def _tuples(node, data_shape, idx) -> tuple:
    """The index tuples of idx as numpy index arrays (negatives wrapped, range checked)."""
    depth = idx.shape[-1]
    return tuple(_wrapped(node, idx[..., c], data_shape[c]) for c in range(depth))


def gather_nd_eval(node, ins):
    data, idx = ins[0].value, ins[1].value
    b = attr_int(node, "batch_dims", 0)
    batch = math.prod(data.shape[:b])
    flat_data = data.reshape((batch,) + data.shape[b:])
    flat_idx = idx.reshape((batch, -1, idx.shape[-1]))
    rows = np.arange(batch).reshape(batch, 1)
    out = flat_data[(rows, *_tuples(node, data.shape[b:], flat_idx))]
    return [out.reshape(gather_nd_type(node, ins)[0].shape)]


register("GatherND", gather_nd_type, gather_nd_lower, evaluate=gather_nd_eval,
         check=lambda node: attr_int(node, "batch_dims", 0))


def scatter_nd_type(node, ins):
    data, idx = ins[0], ins[1]
    depth = _nd(node, data, idx)
    return _scatter_types(node, ins, idx.shape[:-1] + data.shape[depth:])


def scatter_nd_lower(ctx, node):
    data, idx, upd = node.inputs
    shape, ishape = ctx.shape(data), ctx.shape(idx)
    depth = ishape[-1]
    ctx.kernel("scatter_nd", [data, idx, upd], node.outputs, dtype="any",
               ints=[_reduction_code(node), math.prod(shape) * _elem(ctx, data), math.prod(ishape[:-1]),
                     math.prod(shape[depth:]), depth, *shape[:depth]])


def scatter_nd_eval(node, ins):
    data, idx, upd = (t.value for t in ins)
    return [_scatter_into(node, data.copy(), _tuples(node, data.shape, idx), upd)]


register("ScatterND", scatter_nd_type, scatter_nd_lower, inplace=True, evaluate=scatter_nd_eval,
         check=lambda node: attr_str(node, "reduction", "none", REDUCTIONS))

# -- OneHot ----------------------------------------------------------------------------------


def _onehot(node, ins) -> tuple:
    """(depth, axis) with axis normalised for the output's rank."""
    idx, _, values = ins
    if idx.dtype in ("bool", "bfloat16"):
        raise shape_error(node, f"indices must be numeric, got {idx.dtype}")
    if len(values.shape) != 1 or values.shape[0] != 2:
        raise shape_error(node, f"values must be [off_value, on_value], got shape {values.shape}")
    depth = known_scalar(node, ins, 1, "depth")
    if depth is None or depth < 0:
        raise shape_error(node, f"depth must be a number >= 0, got {depth}")
    axis = norm_axis(node, attr_int(node, "axis", -1), len(idx.shape) + 1)
    return int(depth), axis


def onehot_type(node, ins):
    depth, axis = _onehot(node, ins)
    s = ins[0].shape
    return [TensorType(s[:axis] + (depth,) + s[axis:], ins[2].dtype)]


def onehot_lower(ctx, node):
    idx, _, values = node.inputs
    depth, axis = _onehot(node, tensors_of(ctx, node))
    s = ctx.shape(idx)
    ctx.kernel("onehot", [idx, values], node.outputs, dtype="any",
               ints=[_elem(ctx, values), math.prod(s[:axis]), depth, math.prod(s[axis:])])


def onehot_eval(node, ins):
    depth, axis = _onehot(node, ins)
    idx, values = ins[0].value, ins[2].value
    if idx.dtype.kind == "f":  # truncated like the kernel; NaN and huge values match nothing
        idx = np.where(np.isfinite(idx) & (np.abs(idx) <= depth + 1), np.trunc(idx), depth)
    v = idx.astype(np.int64)
    v = np.where(v < 0, v + depth, v)
    hot = np.expand_dims(v, axis) == np.arange(depth).reshape((-1,) + (1,) * (idx.ndim - axis))
    return [np.where(hot, values[1], values[0]).astype(values.dtype)]


register("OneHot", onehot_type, onehot_lower, evaluate=onehot_eval, check=lambda node: attr_int(node, "axis", -1))
