"""Softmax and LogSoftmax over one axis (numerically stable in the kernel)."""

from __future__ import annotations

import math

from ..errors import GraphError
from .activations import same_shape
from .registry import register


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
        ctx.program.softmax(ctx.slot(node.outputs[0]), ctx.slot(node.inputs[0]),
                            math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]), log)
    return forward


def softmax_shape(node, shapes):
    _axis(node, len(shapes[0]))
    return same_shape(node, shapes)


register("Softmax", softmax_shape, _softmax(False), inplace=True, check=_check)
register("LogSoftmax", softmax_shape, _softmax(True), inplace=True, check=_check)
