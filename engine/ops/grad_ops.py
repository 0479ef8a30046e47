"""Ops that only the reverse pass uses (engine/autograd.py emits them), lowered to the native
backward steps (csrc/runtime/kernels/grad_*.cpp, listed in docs/training.md). float32.

Optional outputs are named "" when not wanted; the lowering passes the steps' output mask."""

from __future__ import annotations

import math

import numpy as np

from ..errors import GraphError, ShapeError
from .registry import TensorType, register


def _f32(node, ins):
    for t in ins:
        if t is not None and t.dtype != "float32":
            raise ShapeError(f"node '{node.name}' ({node.op}): expected float32 tensors, got {t.dtype}")


def _mask(node) -> int:
    return sum(1 << k for k, o in enumerate(node.outputs) if o)


def _wanted(node) -> list:
    return [o for o in node.outputs if o]


def zero_fill(ctx, name: str) -> None:
    """Write zeros to `name` (float32)."""
    n = math.prod(ctx.shape(name))
    if n:
        ctx.kernel("fill", [ctx.constant(np.zeros(1, np.float32))], [name], dtype="any", ints=[4, n])


# -- SumToShape(x): x summed over the axes where attr shape (same rank) has 1 ----------------

def sum_to_type(node, ins):
    _f32(node, ins[:1])
    shape, x = tuple(node.attrs["shape"]), ins[0].shape
    if len(shape) != len(x) or any(s not in (1, d) for s, d in zip(shape, x)):
        raise ShapeError(f"node '{node.name}' (SumToShape): cannot sum {x} to {shape}")
    return [TensorType(shape, "float32")]


def sum_to_lower(ctx, node):
    x = ctx.shape(node.inputs[0])
    y = tuple(node.attrs["shape"])
    if math.prod(x) == 0 or math.prod(y) == 0:
        zero_fill(ctx, node.outputs[0])
        return
    ctx.kernel("sum_to_shape", node.inputs[:1], node.outputs, ints=[len(x), *x, *y])


register("SumToShape", sum_to_type, sum_to_lower)


# -- ActGrad(dy, x | "", y | ""): dy · f'(x) for a native activation code -------------------

def act_grad_type(node, ins):
    _f32(node, ins)
    return [TensorType(ins[0].shape, "float32")]


def act_grad_lower(ctx, node):
    dy, x, y = (list(node.inputs) + ["", ""])[:3]
    n = math.prod(ctx.shape(dy))
    if n:
        ctx.kernel("act_grad", [dy, x, y], node.outputs, ints=[n, int(node.attrs["act"])],
                   floats=[float(node.attrs.get("alpha", 0.0)), float(node.attrs.get("beta", 0.0))])


register("ActGrad", act_grad_type, act_grad_lower)


# -- SoftmaxGrad(dy, y): softmax / log-softmax backward over attr axis ----------------------

def softmax_grad_lower(ctx, node):
    shape = ctx.shape(node.inputs[0])
    axis = int(node.attrs["axis"]) % max(len(shape), 1)
    if math.prod(shape):
        ctx.kernel("softmax_grad", node.inputs[:2], node.outputs,
                   ints=[math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]), int(node.attrs.get("log", 0))])


register("SoftmaxGrad", act_grad_type, softmax_grad_lower)


# -- DenseGrad(dy, x, w) -> [dx, dw, db]: x·W (+ b) backward (W K×N, or N×K transposed) -----

def dense_grad_type(node, ins):
    _f32(node, ins)
    dy, x, w = ins[0].shape, ins[1].shape, ins[2].shape
    if len(node.outputs) != 3:
        raise GraphError(f"node '{node.name}' (DenseGrad): expects 3 outputs (dx, dw, db; '' when unwanted)")
    N = dy[-1]
    return [TensorType(x, "float32"), TensorType(w, "float32"), TensorType((N,), "float32")]


def dense_grad_lower(ctx, node):
    dy, x, w = node.inputs
    N, K = ctx.shape(dy)[-1], ctx.shape(x)[-1]
    M = math.prod(ctx.shape(x)[:-1])
    wanted = _wanted(node)
    if not wanted:
        return
    if M == 0:
        for o in wanted:
            zero_fill(ctx, o)
        return
    ctx.kernel("dense_grad", [dy, x if node.outputs[1] else "", w if node.outputs[0] else ""], wanted,
               ints=[M, K, N, int(node.attrs.get("w_transposed", 0)), _mask(node), 0])


register("DenseGrad", dense_grad_type, dense_grad_lower)
