"""Softmax, LogSoftmax and Hardmax over one axis (float32 / float64; float16 through
float32). `coerce_2d=1` (set by the ONNX importer for opset < 13 nodes) views the input as
2-D, (prod(dims[:axis]), prod(dims[axis:])), and normalises each row."""

from __future__ import annotations

import math

from ..errors import ShapeError
from .reduce import FLOATS, Half, axis_of, flag_attr, int_attr, require_dtype, where
from .registry import TensorType, register


def _check(node):
    int_attr(node, "axis", -1)
    flag_attr(node, "coerce_2d", 0)


def view(node, shape) -> tuple[int, int, int]:
    """(outer, n, inner) the op normalises over n of."""
    if not shape:
        raise ShapeError(f"{where(node)}: needs an input of rank >= 1")
    axis = axis_of(node, int_attr(node, "axis", -1), len(shape))
    if flag_attr(node, "coerce_2d", 0):
        return math.prod(shape[:axis]), math.prod(shape[axis:]), 1
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def softmax_type(node, ins):
    _check(node)
    require_dtype(node, ins[0].dtype, FLOATS)
    view(node, ins[0].shape)
    return [TensorType(ins[0].shape, ins[0].dtype)]


def _lower(kind: str):
    def lower(ctx, node):
        outer, n, inner = view(node, ctx.shape(node.inputs[0]))
        half = Half(ctx)
        x, y = half.input(node.inputs[0]), half.output(node.outputs[0])
        if kind == "hardmax":
            ctx.kernel("hardmax", [x], [y], ints=[outer, n, inner])
        else:
            ctx.kernel("softmax", [x], [y], ints=[outer, n, inner, int(kind == "log")])
        half.finish()
    return lower


register("Softmax", softmax_type, _lower("softmax"), inplace=True, check=_check)
register("LogSoftmax", softmax_type, _lower("log"), inplace=True, check=_check)
register("Hardmax", softmax_type, _lower("hardmax"), inplace=True, check=_check)
