"""Losses (ONNX semantics): NegativeLogLikelihoodLoss, and SoftmaxCrossEntropyLoss as a
log-softmax over the class axis followed by the same kernel. float32 / float64 (float16 runs
on float32 copies); targets int32 / int64. A target out of range (and not ignore_index) is
a KernelError when the model runs."""

from __future__ import annotations

import math

from ..errors import DTypeError, GraphError, ShapeError
from .reduce import FLOATS, Half, int_attr, require_dtype, where
from .registry import TensorType, register

REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}


def _check(node):
    r = node.attrs.get("reduction", "mean")
    if r not in REDUCTIONS:
        raise GraphError(f"{where(node)}: attribute 'reduction' must be one of {list(REDUCTIONS)}, got {r!r}")
    if "ignore_index" in node.attrs:
        int_attr(node, "ignore_index")


def loss_type(node, ins):
    _check(node)
    x = ins[0]
    target = ins[1] if len(ins) > 1 else None
    weight = ins[2] if len(ins) > 2 else None
    require_dtype(node, x.dtype, FLOATS)
    if len(x.shape) < 2:
        raise ShapeError(f"{where(node)}: input must be (N, C, ...), got shape {x.shape}")
    if target is None:
        raise ShapeError(f"{where(node)}: the target input is required")
    require_dtype(node, target.dtype, ("int32", "int64"), "target")
    want = (x.shape[0],) + tuple(x.shape[2:])
    if tuple(target.shape) != want:
        raise ShapeError(f"{where(node)}: target must have shape {want} for input {x.shape}, got {target.shape}")
    if weight is not None:
        if weight.dtype != x.dtype:
            raise DTypeError(f"{where(node)}: weight must be {x.dtype} like the input, got {weight.dtype}")
        if tuple(weight.shape) != (x.shape[1],):
            raise ShapeError(f"{where(node)}: weight must have shape ({x.shape[1]},), got {weight.shape}")
    loss_shape = tuple(target.shape) if node.attrs.get("reduction", "mean") == "none" else ()
    out = [TensorType(loss_shape, x.dtype)]
    if node.op == "SoftmaxCrossEntropyLoss" and len(node.outputs) > 1:
        out.append(TensorType(x.shape, x.dtype))
    return out


def loss_lower(ctx, node):
    shape = ctx.shape(node.inputs[0])
    N, C, D = shape[0], shape[1], math.prod(shape[2:])
    half = Half(ctx)
    x = half.input(node.inputs[0])
    weight = half.input(node.inputs[2]) if len(node.inputs) > 2 else ""
    if node.op == "SoftmaxCrossEntropyLoss":
        log_prob = node.outputs[1] if len(node.outputs) > 1 and node.outputs[1] else ""
        lp = half.output(log_prob) if log_prob else ctx.scratch(shape, ctx.dtype(x))
        ctx.kernel("softmax", [x], [lp], ints=[N, C, D, 1])
        x = lp
    loss = half.output(node.outputs[0])
    ignore = node.attrs.get("ignore_index")
    ctx.kernel("nll_loss", [x, node.inputs[1], weight], [loss], dtype=ctx.dtype(x),
               ints=[N, C, D, REDUCTIONS[node.attrs.get("reduction", "mean")], int(ignore is not None),
                     0 if ignore is None else int(ignore)])
    half.finish()


register("NegativeLogLikelihoodLoss", loss_type, loss_lower, check=_check)
register("SoftmaxCrossEntropyLoss", loss_type, loss_lower, check=_check)
