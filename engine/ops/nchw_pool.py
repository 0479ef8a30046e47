"""ONNX pooling over NCHW tensors (1..3 spatial dims): MaxPool (optional Indices output,
storage_order, int8 / uint8 too), AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool, on
the N-d pooling kernels (nchw_pool, nchw_global_pool). float16 is computed in float32."""

from __future__ import annotations

import math

from ..errors import GraphError, ShapeError
from .float16 import via_float32
from .nchw_types import check_dtype
from .nchw_window import check_window_attrs, forward_window, int_attr, ints_attr, spatial_rank
from .registry import TensorType, register

FLOATS = ("float32", "float64", "float16")
KINDS = {"MaxPool": 0, "AveragePool": 1, "LpPool": 2}
TYPES = {"MaxPool": FLOATS + ("int8", "uint8"), "AveragePool": FLOATS, "LpPool": FLOATS}


def _kernel(node):
    k = ints_attr(node, "kernel_shape", None, None, 1)
    if not k:
        raise GraphError(f"node '{node.name}' ({node.op}): attribute 'kernel_shape' is required")
    return k


def pool_check(node):
    nd = len(_kernel(node))
    check_window_attrs(node, nd)
    int_attr(node, "ceil_mode", 0, (0, 1))
    if node.op == "MaxPool":
        int_attr(node, "storage_order", 0, (0, 1))
    if node.op == "AveragePool":
        int_attr(node, "count_include_pad", 0, (0, 1))
    if node.op == "LpPool":
        int_attr(node, "p", 2, minimum=1)


def pool_window(node, x):
    kernel = _kernel(node)
    nd = spatial_rank(node, x)
    if len(kernel) != nd:
        raise ShapeError(f"node '{node.name}' ({node.op}): kernel_shape {list(kernel)} has {len(kernel)} dims, "
                         f"input {x} has {nd} spatial dims")
    return forward_window(node, tuple(x[2:]), kernel, ceil_mode=bool(int_attr(node, "ceil_mode", 0, (0, 1))))


def pool_type(node, ins):
    x = ins[0].shape
    check_dtype(node, ins[0].dtype, TYPES[node.op])
    win = pool_window(node, x)
    y = TensorType((x[0], x[1]) + win.out, ins[0].dtype)
    return [y, TensorType(y.shape, "int64")] if len(node.outputs) > 1 else [y]


def pool_lower(ctx, node):
    x, y = node.inputs[0], node.outputs[0]
    idx = node.outputs[1] if len(node.outputs) > 1 else ""
    if not y and not idx:
        return
    if not y:  # only Indices wanted: the kernel still writes Y somewhere
        y = ctx.scratch(ctx.shape(idx), "float32" if ctx.dtype(x) == "float16" else ctx.dtype(x))
    outs = [y] + ([idx] if idx else [])
    if ctx.dtype(x) == "float16":
        return via_float32(ctx, [x], outs, lambda i, o: _pool(ctx, node, i[0], o))
    _pool(ctx, node, x, outs)


def _pool(ctx, node, x, outs):
    xs = ctx.shape(x)
    win = pool_window(node, xs)
    if math.prod(ctx.shape(outs[0])) == 0:
        return
    ints = [KINDS[node.op], xs[0] * xs[1], *win.ints(), *win.pads_end_ints(),
            int_attr(node, "count_include_pad", 0, (0, 1)), int_attr(node, "p", 2, minimum=1),
            int_attr(node, "storage_order", 0, (0, 1))]
    ctx.kernel("nchw_pool", [x], outs, ints=ints, dtype=ctx.dtype(x))


# MaxPool(X) -> Y, [Indices]; AveragePool(X) -> Y; LpPool(X) -> Y. attrs auto_pad, ceil_mode,
# dilations, kernel_shape, pads, strides (+ storage_order, count_include_pad, p).
for _op in KINDS:
    register(_op, pool_type, pool_lower, check=pool_check)


def global_type(node, ins):
    x = ins[0].shape
    check_dtype(node, ins[0].dtype, FLOATS)
    if len(x) < 2:
        raise ShapeError(f"node '{node.name}' ({node.op}): input must be N×C×D1..Dn, got shape {x}")
    if math.prod(x[2:]) == 0:
        raise ShapeError(f"node '{node.name}' ({node.op}): input {x} has no spatial elements to pool")
    return [TensorType(tuple(x[:2]) + (1,) * (len(x) - 2), ins[0].dtype)]


def global_lower(ctx, node):
    x = node.inputs[0]
    if ctx.dtype(x) == "float16":
        return via_float32(ctx, [x], node.outputs, lambda i, o: _global(ctx, node, i[0], o[0]))
    _global(ctx, node, x, node.outputs[0])


def _global(ctx, node, x, y):
    xs = ctx.shape(x)
    planes = xs[0] * xs[1]
    if planes:
        ctx.kernel("nchw_global_pool", [x], [y], ints=[int(node.op == "GlobalMaxPool"), planes, math.prod(xs[2:])])


# GlobalAveragePool(X) / GlobalMaxPool(X) -> N×C×1..1.
register("GlobalAveragePool", global_type, global_lower)
register("GlobalMaxPool", global_type, global_lower)
