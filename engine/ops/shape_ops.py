"""Ops that only reinterpret a buffer (Reshape, Flatten, Squeeze, Unsqueeze, Identity: no
kernel), read nothing but shapes (Shape, Size: values fixed by the plan), and Dropout
(inference: a copy, in place when it can be, and an all-true mask)."""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes
from ..errors import GraphError, UnsupportedOpError
from .axes import attr_int, known_ints, known_scalar, norm_axes, present, shape_error
from .registry import TensorType, register


def _evaluated_as(infer):
    """The evaluation of an alias op: input 0's values in the type rule's shape."""
    return lambda node, ins: [ins[0].value.reshape(infer(node, ins)[0].shape)]


# -- Reshape ---------------------------------------------------------------------------------

def _reshape_check(node) -> None:
    attr_int(node, "allowzero", 0, (0, 1))
    target = node.attrs.get("shape", ())
    if (not isinstance(target, (list, tuple))
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in target)
            or list(target).count(-1) > 1):
        raise GraphError(f"node '{node.name}' (Reshape): shape must be ints >= -1 with at most "
                         f"one -1, got {target!r}")


def reshape_type(node, ins):
    x = ins[0].shape
    if present(ins, 1):  # ONNX: the target is input 1; engine.nn: attribute `shape`
        target = known_ints(node, ins, 1, "the target shape")
    else:
        target = [int(d) for d in node.attrs.get("shape", ())]
    allowzero = node.attrs.get("allowzero", 0)
    if target.count(-1) > 1 or any(d < -1 for d in target):
        raise shape_error(node, f"bad target shape {target} (ints >= -1, at most one -1)")
    if allowzero:
        if 0 in target and -1 in target:
            raise shape_error(node, f"target shape {target} has both 0 and -1, which allowzero=1 forbids")
    else:  # 0 copies the input's dim at that position
        if any(d == 0 and i >= len(x) for i, d in enumerate(target)):
            raise shape_error(node, f"target shape {target} copies (0) a dim the input {x} does not have")
        target = [x[i] if d == 0 else d for i, d in enumerate(target)]
    total, known_size = math.prod(x), math.prod(d for d in target if d != -1)
    if -1 in target:
        if known_size == 0 or total % known_size:
            raise shape_error(node, f"cannot reshape {x} into {target}")
        target[target.index(-1)] = total // known_size
    if math.prod(target) != total:
        raise shape_error(node, f"cannot reshape {x} ({total} elements) into {tuple(target)}")
    return [TensorType(tuple(target), ins[0].dtype)]


# -- Flatten ---------------------------------------------------------------------------------

def flatten_type(node, ins):
    x = ins[0].shape
    axis = attr_int(node, "axis", 1)
    if not -len(x) <= axis <= len(x):
        raise shape_error(node, f"axis {axis} is out of range for rank {len(x)}")
    if axis < 0:
        axis += len(x)
    return [TensorType((math.prod(x[:axis]), math.prod(x[axis:])), ins[0].dtype)]


# -- Squeeze / Unsqueeze ---------------------------------------------------------------------

def squeeze_type(node, ins):
    x = ins[0].shape
    axes = known_ints(node, ins, 1, "axes")
    if axes is None:  # no axes: every size-1 dim
        keep = [d for d in x if d != 1]
    else:
        axes = norm_axes(node, axes, len(x))
        for a in axes:
            if x[a] != 1:
                raise shape_error(node, f"cannot squeeze dim {a} of {x}: its size is {x[a]}, not 1")
        keep = [d for i, d in enumerate(x) if i not in axes]
    return [TensorType(tuple(keep), ins[0].dtype)]


def unsqueeze_type(node, ins):
    x = ins[0].shape
    axes = known_ints(node, ins, 1, "axes")
    if axes is None:
        raise shape_error(node, "needs its axes input")
    rank = len(x) + len(axes)
    axes = set(norm_axes(node, axes, rank))
    rest = iter(x)
    return [TensorType(tuple(1 if i in axes else next(rest) for i in range(rank)), ins[0].dtype)]


# -- Identity, Shape, Size -------------------------------------------------------------------

def identity_type(node, ins):
    if not ins or ins[0] is None:
        raise shape_error(node, "expected one input")
    return [TensorType(ins[0].shape, ins[0].dtype)]


def _shape_range(node, rank: int) -> tuple:
    start, end = attr_int(node, "start", 0), attr_int(node, "end", rank)
    start, end = (s + rank if s < 0 else s for s in (start, end))
    start, end = min(max(start, 0), rank), min(max(end, 0), rank)
    return start, max(start, end)


def shape_type(node, ins):
    start, end = _shape_range(node, len(ins[0].shape))
    return [TensorType((end - start,), "int64")]


def shape_eval(node, ins):
    start, end = _shape_range(node, len(ins[0].shape))
    return [np.array(ins[0].shape[start:end], np.int64)]


# -- Dropout ---------------------------------------------------------------------------------

def _dropout_check(node) -> None:
    if len(node.outputs) > 2:
        raise GraphError(f"node '{node.name}' (Dropout): at most two outputs (output, mask)")


def _check_inference(node, ins) -> None:
    """Refuse training_mode=true with a ratio > 0 when both are known here; the kernel checks
    them when they come from data."""
    if present(ins, 2) and ins[2].dtype != "bool":
        raise shape_error(node, f"training_mode must be bool, got {ins[2].dtype}")
    if present(ins, 1) and not dtypes.is_float(ins[1].dtype):
        raise shape_error(node, f"ratio must be a float, got {ins[1].dtype}")
    if not present(ins, 2) or ins[2].value is None or not known_scalar(node, ins, 2, "training_mode"):
        return
    if present(ins, 1) and ins[1].value is None:
        return
    ratio = known_scalar(node, ins, 1, "ratio") if present(ins, 1) else 0.5
    if ratio != 0:
        raise UnsupportedOpError(f"node '{node.name}' (Dropout): training-mode Dropout (training_mode=true, "
                                 f"ratio {ratio}) is not supported; this engine runs inference only")


def dropout_type(node, ins):
    x = ins[0]
    _check_inference(node, ins)
    outs = [TensorType(x.shape, x.dtype)]
    if len(node.outputs) > 1:
        outs.append(TensorType(x.shape, "bool"))
    return outs


def dropout_lower(ctx, node):
    x, ratio, training = (list(node.inputs) + ["", ""])[:3]
    mask = node.outputs[1] if len(node.outputs) > 1 else ""
    n = math.prod(ctx.shape(x))
    ctx.kernel("dropout", [x, ratio, training], [node.outputs[0], mask] if mask else [node.outputs[0]],
               dtype="any", ints=[n * dtypes.itemsize(ctx.dtype(x)), n if mask else 0])


def dropout_eval(node, ins):
    _check_inference(node, ins)
    outs = [ins[0].value]
    if len(node.outputs) > 1:
        outs.append(np.ones(ins[0].shape, bool))
    return outs


# Reshape(x, shape): input 1 (ONNX) or attribute `shape` (engine.nn); 0 keeps that input dim
# unless allowzero=1, -1 is inferred.
register("Reshape", reshape_type, None, alias=True, check=_reshape_check, evaluate=_evaluated_as(reshape_type))
# Flatten(x); attr axis (default 1) -> 2-D (prod(dims[:axis]), prod(dims[axis:])).
register("Flatten", flatten_type, None, alias=True, check=lambda n: attr_int(n, "axis", 1),
         evaluate=_evaluated_as(flatten_type))
register("Squeeze", squeeze_type, None, alias=True, evaluate=_evaluated_as(squeeze_type))
register("Unsqueeze", unsqueeze_type, None, alias=True, evaluate=_evaluated_as(unsqueeze_type))
register("Identity", identity_type, None, alias=True, evaluate=lambda node, ins: [ins[0].value])
# Shape(x) -> int64 dims[start:end]; Size(x) -> int64 element count: known once shapes are.
register("Shape", shape_type, None, value_inputs=(), evaluate=shape_eval,
         check=lambda n: (attr_int(n, "start", 0), attr_int(n, "end", 0)))
register("Size", lambda node, ins: [TensorType((), "int64")], None, value_inputs=(),
         evaluate=lambda node, ins: [np.array(math.prod(ins[0].shape), np.int64)])
# Dropout(x, ratio, training_mode) -> output[, mask]: inference only (output = x, mask all
# true); training_mode true with ratio > 0 is refused. Attrs seed (ONNX), rate (engine.nn): unused.
register("Dropout", dropout_type, dropout_lower, inplace=True, check=_dropout_check, evaluate=dropout_eval)
