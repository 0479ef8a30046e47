"""Ops that make a tensor from a shape and a few known numbers, or mask one (ONNX semantics):
ConstantOfShape, EyeLike, Range, Trilu. Small outputs are computed when the model is
planned; big ones by fill/strided-copy/range/trilu kernels."""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes
from ..errors import DTypeError, GraphError
from .axes import attr_int, known_ints, known_scalar, present, shape_error, tensor_of
from .registry import TensorType, register
from .views import copy_view, fill

# -- ConstantOfShape -------------------------------------------------------------------------


def _fill_value(node) -> np.ndarray:
    v = node.attrs.get("value")
    if v is None:
        return np.zeros(1, np.float32)
    v = np.asarray(v)
    if v.size != 1:
        raise GraphError(f"node '{node.name}' (ConstantOfShape): value must hold one element, got shape {v.shape}")
    return v.reshape(1)


def _target(node, ins) -> tuple:
    shape = known_ints(node, ins, 0, "the shape")
    if shape is None or any(d < 0 for d in shape):
        raise shape_error(node, f"needs a shape of sizes >= 0, got {shape}")
    return tuple(shape)


def constant_of_shape_type(node, ins):
    return [TensorType(_target(node, ins), dtypes.from_numpy(_fill_value(node).dtype))]


register("ConstantOfShape", constant_of_shape_type,
         lambda ctx, node: fill(ctx, node.outputs[0], _fill_value(node)[0]),
         check=_fill_value,
         evaluate=lambda node, ins: [np.full(_target(node, ins), _fill_value(node)[0])])

# -- EyeLike ---------------------------------------------------------------------------------


def _eye_dtype(node, ins) -> str:
    code = node.attrs.get("dtype")
    if code is None:
        return ins[0].dtype
    try:
        return dtypes.from_code(code)
    except DTypeError:
        raise GraphError(f"node '{node.name}' (EyeLike): unsupported dtype {code!r}") from None


def eyelike_type(node, ins):
    if len(ins[0].shape) != 2:
        raise shape_error(node, f"expects a 2-D input, got shape {ins[0].shape}")
    return [TensorType(ins[0].shape, _eye_dtype(node, ins))]


def eyelike_lower(ctx, node):
    # Zeros, then ones written along the diagonal: a view with stride cols + 1.
    y = node.outputs[0]
    rows, cols = ctx.shape(y)
    k = attr_int(node, "k", 0)
    fill(ctx, y, 0)
    count = max(0, min(rows, cols - k) if k >= 0 else min(rows + k, cols))
    one = ctx.constant(np.ones(1, dtypes.to_numpy(ctx.dtype(y))))
    copy_view(ctx, one, y, [count], [0], [cols + 1], dst_offset=k if k >= 0 else -k * cols)


register("EyeLike", eyelike_type, eyelike_lower, value_inputs=(),
         check=lambda node: attr_int(node, "k", 0),
         evaluate=lambda node, ins: [np.eye(*ins[0].shape, k=attr_int(node, "k", 0),
                                            dtype=dtypes.to_numpy(_eye_dtype(node, ins)))])

# -- Range -----------------------------------------------------------------------------------

_RANGE_TYPES = ("float32", "float64", "float16", "int16", "int32", "int64")


def _range(node, ins) -> tuple:
    """(start, delta, n) as Python numbers."""
    for i in range(3):
        if not present(ins, i) or ins[i].dtype != ins[0].dtype:
            raise shape_error(node, "start, limit and delta must be present and of one type")
    if ins[0].dtype not in _RANGE_TYPES:
        raise shape_error(node, f"unsupported element type {ins[0].dtype}")
    start, limit, delta = (known_scalar(node, ins, i, what) for i, what in enumerate(("start", "limit", "delta")))
    if delta == 0:
        raise shape_error(node, "delta is 0")
    if dtypes.is_integer(ins[0].dtype):
        n = -((start - limit) // delta)  # exact ceil((limit - start) / delta)
    else:
        n = math.ceil((limit - start) / delta)
    return start, delta, max(n, 0)


def range_lower(ctx, node):
    start, _, delta = node.inputs
    n = _range(node, [tensor_of(ctx, i) for i in node.inputs])[2]
    ctx.kernel("range", [start, delta], node.outputs, dtype="any", ints=[n, attr_int(node, "stash_type", 1) == 11])


def range_eval(node, ins):
    start, delta, n = _range(node, ins)
    dt = dtypes.to_numpy(ins[0].dtype)
    if dtypes.is_integer(ins[0].dtype):
        return [(start + np.arange(n, dtype=np.int64) * delta).astype(dt)]
    compute = np.float32 if ins[0].dtype == "float16" and attr_int(node, "stash_type", 1) != 11 else np.float64
    return [(compute(start) + np.arange(n, dtype=compute) * compute(delta)).astype(dt)]


register("Range", lambda node, ins: [TensorType((_range(node, ins)[2],), ins[0].dtype)], range_lower,
         evaluate=range_eval, check=lambda node: attr_int(node, "stash_type", 1, (1, 11)))

# -- Trilu -----------------------------------------------------------------------------------


def trilu_type(node, ins):
    x = ins[0].shape
    if len(x) < 2:
        raise shape_error(node, f"expects at least 2 dims, got shape {x}")
    if present(ins, 1) and ins[1].dtype != "int64":
        raise shape_error(node, f"k must be int64, got {ins[1].dtype}")
    return [TensorType(x, ins[0].dtype)]


def trilu_lower(ctx, node):
    x, y = node.inputs[0], node.outputs[0]
    k = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1] else ""
    *batch, rows, cols = ctx.shape(x)
    ctx.kernel("trilu", [x, k], [y], dtype="any",
               ints=[dtypes.itemsize(ctx.dtype(x)), math.prod(batch), rows, cols, attr_int(node, "upper", 1), 0])


def trilu_eval(node, ins):
    k = known_scalar(node, ins, 1, "k") if present(ins, 1) else 0
    op = np.triu if attr_int(node, "upper", 1) else np.tril
    return [op(ins[0].value, k)]


# Trilu(x, k?); attr upper (default 1): keeps j - i >= k (upper) or <= k (lower) in the last
# two dims. k is read when the step runs, so it may come from data.
register("Trilu", trilu_type, trilu_lower, inplace=True, evaluate=trilu_eval,
         check=lambda node: attr_int(node, "upper", 1, (0, 1)))
