"""Ops that only reinterpret a buffer: Reshape, Flatten, Identity, Dropout (inference)."""

from __future__ import annotations

import math

from ..errors import GraphError, ShapeError
from .registry import TensorType, register


def _reshape_target(node) -> list:
    target = node.attrs.get("shape", ())
    if (not isinstance(target, (list, tuple))
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in target)
            or list(target).count(-1) > 1):
        raise GraphError(f"node '{node.name}' (Reshape): shape must be ints >= -1 with at most "
                         f"one -1, got {target!r}")
    return list(target)


def reshape_type(node, ins):
    x = ins[0].shape
    if len(ins) > 1 and ins[1] is not None:  # ONNX: the target is an input known at plan time
        if ins[1].value is None:
            raise ShapeError(f"node '{node.name}' (Reshape): the target shape must be known when "
                             "the model is planned (a constant or computed from input shapes)")
        target = [int(d) for d in ins[1].value.reshape(-1)]
    else:
        target = _reshape_target(node)
    if node.attrs.get("allowzero", 0):
        pass  # 0 is a literal zero-size dim
    else:  # 0 copies the input's dim (ONNX); the batch dim is usually given as 0 or -1.
        target = [x[i] if d == 0 and i < len(x) else d for i, d in enumerate(target)]
    if target.count(-1) > 1 or any(d < -1 for d in target):
        raise ShapeError(f"node '{node.name}' (Reshape): bad target shape {target}")
    total, known = math.prod(x), math.prod(d for d in target if d != -1)
    if -1 in target:
        if known == 0 or total % known:
            raise ShapeError(f"node '{node.name}' (Reshape): cannot reshape {x} into {target}")
        target[target.index(-1)] = total // known
    if math.prod(target) != total:
        raise ShapeError(f"node '{node.name}' (Reshape): cannot reshape {x} ({total} elements) "
                         f"into {tuple(target)}")
    return [TensorType(tuple(target), ins[0].dtype)]


def _flatten_axis(node) -> int:
    axis = node.attrs.get("axis", 1)
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise GraphError(f"node '{node.name}' (Flatten): axis must be an int, got {axis!r}")
    return axis


def flatten_type(node, ins):
    x = ins[0].shape
    axis = _flatten_axis(node)
    if not -len(x) <= axis <= len(x):
        raise GraphError(f"node '{node.name}' (Flatten): axis {axis} out of range for rank {len(x)}")
    if axis < 0:
        axis += len(x)
    return [TensorType((math.prod(x[:axis]), math.prod(x[axis:])), ins[0].dtype)]


def identity_type(node, ins):
    if len(ins) < 1 or ins[0] is None:
        raise ShapeError(f"node '{node.name}' ({node.op}): expected one input")
    return [TensorType(ins[0].shape, ins[0].dtype)]


# Reshape(x, [shape]); the target is attr `shape` or, as in ONNX, input 1 (known at plan time);
# 0 = keep that input dim (unless allowzero), -1 = infer.
register("Reshape", reshape_type, None, alias=True, check=_reshape_target,
         evaluate=lambda node, v: [v[0].reshape(reshape_type(node, [_t(a) for a in v])[0].shape)])
# Flatten(x); attrs: axis (default 1) -> 2-D (prod(dims[:axis]), prod(dims[axis:])).
register("Flatten", flatten_type, None, alias=True, check=_flatten_axis)
register("Identity", identity_type, None, alias=True, evaluate=lambda node, v: [v[0]])
register("Dropout", identity_type, None, alias=True)  # inference: the identity


def _t(a):
    """A known value as the Tensor a type rule takes."""
    from .. import dtypes
    from .registry import Tensor
    return None if a is None else Tensor(a.shape, dtypes.from_numpy(a.dtype), a)
