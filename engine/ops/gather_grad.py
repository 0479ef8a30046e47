"""Backward rule of Gather (engine/ops/gather.py) for its data input: a scatter-add of the
output gradient's rows by index (duplicate indices add, in index order), the native
`embedding_grad` step. Any axis: the rows are the slices along it (the lowering moves the
axis first and back). Indices get no gradient. float32."""

from __future__ import annotations

import math

from ..errors import DTypeError
from . import views
from .axes import attr_int, norm_axis
from .grad_ops import zero_fill
from .grad_registry import backward_rule
from .registry import TensorType, register

# -- GatherGrad(dy, indices) -> d_data; attrs axis, shape (the data's shape) -----------------

def gather_grad_type(node, ins):
    dy = ins[0]
    if dy.dtype != "float32":
        raise DTypeError(f"node '{node.name}' (GatherGrad): the gradient must be float32, got {dy.dtype}")
    shape = tuple(int(d) for d in node.attrs["shape"])
    return [TensorType(shape, "float32")]


def gather_grad_lower(ctx, node):
    dy, idx = node.inputs
    out = node.outputs[0]
    shape = ctx.shape(out)
    axis = norm_axis(node, attr_int(node, "axis", 0), len(shape))
    outer, V, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    n = math.prod(ctx.shape(idx))
    if not n or not outer * inner:
        zero_fill(ctx, out)
        return
    if outer == 1:  # rows of dy are whole slices: scatter-add straight into the output
        ctx.kernel("embedding_grad", [dy, idx], [out], ints=[n, V, inner, 0])
        return
    # (outer, n, inner) -> (n, outer, inner), scatter, (V, outer, inner) -> (outer, V, inner)
    rows = ctx.scratch((n, outer, inner), "float32")
    views.permute(ctx, dy, rows, (outer, n, inner), (1, 0, 2))
    dw = ctx.scratch((V, outer, inner), "float32")
    ctx.kernel("embedding_grad", [rows, idx], [dw], ints=[n, V, outer * inner, 0])
    views.permute(ctx, dw, out, (V, outer, inner), (1, 0, 2))


register("GatherGrad", gather_grad_type, gather_grad_lower)


@backward_rule("Gather")
def gather_backward(gb, node, dys):
    data, idx = node.inputs
    if not gb.needs(data):
        return [None, None]
    if gb.dtype(data) != "float32":
        raise DTypeError(f"node '{node.name}' (Gather): training needs float32 data, got {gb.dtype(data)}")
    shape = gb.shape(data)
    axis = norm_axis(node, attr_int(node, "axis", 0), len(shape))
    grad = gb.node("GatherGrad", [dys[0], idx], attrs={"axis": axis, "shape": list(shape)},
                   base=f"grad/{node.outputs[0]}/d{data}")
    return [grad, None]
