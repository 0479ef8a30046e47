"""Ops that only reinterpret a buffer: Reshape, Flatten, Identity, Dropout (inference)."""

from __future__ import annotations

import math

from ..errors import GraphError, ShapeError
from .registry import register


def _reshape_target(node) -> list:
    target = node.attrs.get("shape", ())
    if (not isinstance(target, (list, tuple))
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in target)
            or list(target).count(-1) > 1):
        raise GraphError(f"node '{node.name}' (Reshape): shape must be ints >= -1 with at most "
                         f"one -1, got {target!r}")
    return list(target)


def reshape_shape(node, shapes):
    x = shapes[0]
    target = _reshape_target(node)
    # 0 copies the input's dim (ONNX); the batch dim is usually given as 0 or -1.
    target = [x[i] if d == 0 and i < len(x) else d for i, d in enumerate(target)]
    total, known = math.prod(x), math.prod(d for d in target if d != -1)
    if -1 in target:
        if known == 0 or total % known:
            raise ShapeError(f"node '{node.name}' (Reshape): cannot reshape {x} into {target}")
        target[target.index(-1)] = total // known
    if math.prod(target) != total:
        raise ShapeError(f"node '{node.name}' (Reshape): cannot reshape {x} ({total} elements) "
                         f"into {tuple(target)}")
    return [tuple(target)]


def _flatten_axis(node) -> int:
    axis = node.attrs.get("axis", 1)
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise GraphError(f"node '{node.name}' (Flatten): axis must be an int, got {axis!r}")
    return axis


def flatten_shape(node, shapes):
    x = shapes[0]
    axis = _flatten_axis(node)
    if not 0 <= axis <= len(x):
        raise GraphError(f"node '{node.name}' (Flatten): axis {axis} out of range for rank {len(x)}")
    return [(math.prod(x[:axis]), math.prod(x[axis:]))]


def identity_shape(node, shapes):
    if len(shapes) < 1:
        raise ShapeError(f"node '{node.name}' ({node.op}): expected one input")
    return [shapes[0]]


# Reshape(x); attrs: shape (0 = keep that input dim, -1 = infer).
register("Reshape", reshape_shape, None, alias=True, check=_reshape_target)
# Flatten(x); attrs: axis (default 1) -> 2-D (prod(dims[:axis]), prod(dims[axis:])).
register("Flatten", flatten_shape, None, alias=True, check=_flatten_axis)
register("Identity", identity_shape, None, alias=True)
register("Dropout", identity_shape, None, alias=True)  # inference: the identity
