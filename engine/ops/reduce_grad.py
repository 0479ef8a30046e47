"""Backward rules of the reductions a loss or a pooling written as ops uses: ReduceSum,
ReduceMean, ReduceSumSquare, ReduceMax / ReduceMin (gradient to the first extreme value)."""

from __future__ import annotations

import math

import numpy as np

from .grad_registry import backward_rule
from .reduce import flag_attr, reduce_axes
from .registry import Tensor


def _spread(gb, node, dy):
    """dy (the reduced shape) broadcast back to the input's shape, and the reduced axes."""
    x = node.inputs[0]
    ins = [Tensor(gb.shape(i), gb.dtype(i), gb.value(i)) if i else None for i in node.inputs]
    axes = reduce_axes(node, ins)
    shape = gb.shape(x)
    if axes is None:
        return dy, ()
    kept = tuple(1 if d in axes else s for d, s in enumerate(shape))
    if gb.shape(dy) != kept:
        dy = gb.node("Reshape", [dy], attrs={"shape": list(kept)})
    return gb.node("Expand", [dy, gb.const(np.array(shape, np.int64))]), axes


@backward_rule("ReduceSum")
def reduce_sum_backward(gb, node, dys):
    dx, _ = _spread(gb, node, dys[0])
    return [dx, None]


@backward_rule("ReduceMean")
def reduce_mean_backward(gb, node, dys):
    dx, axes = _spread(gb, node, dys[0])
    count = math.prod(gb.shape(node.inputs[0])[a] for a in axes)
    if count > 1:
        dx = gb.node("Mul", [dx, gb.const(np.float32(1.0 / count))])
    return [dx, None]


@backward_rule("ReduceSumSquare")
def reduce_sum_square_backward(gb, node, dys):
    dx, _ = _spread(gb, node, dys[0])
    two_x = gb.node("Mul", [node.inputs[0], gb.const(np.float32(2.0))])
    return [gb.node("Mul", [dx, two_x]), None]


@backward_rule("ReduceMax", "ReduceMin")
def reduce_extreme_backward(gb, node, dys):
    # Gradient shared by every position equal to the extreme (as Keras's reduce_max does).
    x = node.inputs[0]
    dx, axes = _spread(gb, node, dys[0])
    if not axes:  # noop_with_empty_axes and no axes: the identity
        return [dx, None]
    y = node.outputs[0]
    shape = gb.shape(x)
    kept = tuple(1 if d in axes else s for d, s in enumerate(shape))
    yk = y if gb.shape(y) == kept else gb.node("Reshape", [y], attrs={"shape": list(kept)})
    hit = gb.node("Cast", [gb.node("Equal", [x, yk])], attrs={"to": 1})
    keep = 1 if flag_attr(node, "keepdims", 1) else 0
    axes_c = gb.const(np.array(axes, np.int64))
    count = gb.node("ReduceSum", [hit, axes_c], attrs={"keepdims": 1})
    share = gb.node("Div", [hit, count])
    del keep
    return [gb.node("Mul", [dx, share]), None]
