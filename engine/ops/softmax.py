"""Softmax and LogSoftmax over one axis (numerically stable in the kernel)."""

from __future__ import annotations

import math

from ..errors import GraphError
from .registry import register, same_as_input


def _check(node):
    axis = node.attrs.get("axis", -1)
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise GraphError(f"node '{node.name}' ({node.op}): axis must be an int, got {axis!r}")


def _axis(node, rank):
    _check(node)
    axis = node.attrs.get("axis", -1)
    if not -rank <= axis < rank:
        raise GraphError(f"node '{node.name}' ({node.op}): axis {axis} out of range for rank {rank}")
    return axis % rank


def _softmax(log):
    def forward(ctx, node):
        shape = ctx.shape(node.inputs[0])
        axis = _axis(node, len(shape))
        ctx.kernel("softmax", node.inputs[:1], node.outputs,
                   ints=[math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]), int(log)])
    return forward


def softmax_type(node, ins):
    _axis(node, len(ins[0].shape))
    return same_as_input(node, ins)


register("Softmax", softmax_type, _softmax(False), inplace=True, check=_check)
register("LogSoftmax", softmax_type, _softmax(True), inplace=True, check=_check)
