"""Dropout in training graphs (the op is registered in engine/ops/shape_ops.py, the identity
at inference): the training form draws the mask with the native `dropout_fwd` step, Philox of
(seed, step, element), so the backward (`dropout_grad`) draws it again instead of storing it,
and a step's mask is the same for any thread count. float32.

The step is read at run time: gb.settings["step_counter"] names a graph input holding the
optimizers' float64 hyper buffer [lr, step, grad_scale]; without it (a vjp) the step is 0.

Node attributes (engine.nn's Dropout layers): rate, seed, noise_shape (the mask's shape, -1
for "the input's dim": one draw shared along the other dims, e.g. SpatialDropout2D's
(N, 1, 1, C)), alpha (1: AlphaDropout, which keeps the mean and variance of SELU outputs). An
ONNX Dropout (no `rate` attribute) drops with its ratio input (a constant, 0.5 when absent),
as torch's `model.train()` does.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from ..errors import DTypeError, GraphError, ShapeError
from .elementwise import emit_binary
from .grad_ops import zero_fill
from .grad_registry import backward_rule, training_form
from .reduce import float_attr, int_attr, where
from .registry import TensorType, register


def _rate(node) -> float:
    rate = float_attr(node, "rate", 0.0)
    if not 0 <= rate <= 1:
        raise GraphError(f"{where(node)}: rate must be in [0, 1], got {rate}")
    return rate


def _seed(node) -> int:
    return int_attr(node, "seed", 0) & 0x7FFFFFFFFFFFFFFF


def _counter_type(node, t) -> None:
    if t is None or (t.dtype, tuple(t.shape)) not in (("int64", (1,)), ("float64", (3,))):
        got = "nothing" if t is None else f"{t.dtype} {t.shape}"
        raise ShapeError(f"{where(node)}: the step counter must be int64 (1,) or the optimizers' float64 hyper "
                         f"buffer (3,), got {got}")


# -- DropoutTrain(x, counter) -> y; attrs rate, seed --------------------------------------------
# DropoutGrad(dy, counter) -> dx: the same mask drawn again.

def dropout_train_type(node, ins):
    _rate(node)
    if ins[0].dtype != "float32":
        raise DTypeError(f"{where(node)}: training dropout needs float32, got {ins[0].dtype}")
    _counter_type(node, ins[1])
    return [TensorType(ins[0].shape, "float32")]


def _dropout_lower(step: str):
    def lower(ctx, node):
        x, counter = node.inputs
        n = math.prod(ctx.shape(x))
        rate = _rate(node)
        if not n:
            return
        if rate == 1:  # everything dropped
            zero_fill(ctx, node.outputs[0])
            return
        ins = [x, counter] if step == "dropout_fwd" else [x, "", counter]
        ctx.kernel(step, ins, node.outputs, ints=[n, _seed(node)], floats=[rate])
    return lower


register("DropoutTrain", dropout_train_type, _dropout_lower("dropout_fwd"))
register("DropoutGrad", dropout_train_type, _dropout_lower("dropout_grad"))


# -- DropoutMask(counter) -> m of attr shape: 0 or 1 / (1 - rate), one draw per element ---------

def dropout_mask_type(node, ins):
    _rate(node)
    _counter_type(node, ins[0])
    return [TensorType(tuple(int(d) for d in node.attrs["shape"]), "float32")]


def dropout_mask_lower(ctx, node):
    out = node.outputs[0]
    n = math.prod(ctx.shape(out))
    rate = _rate(node)
    if not n:
        return
    if rate == 1:
        zero_fill(ctx, out)
        return
    ones = ctx.constant(np.ones(ctx.shape(out), np.float32))
    ctx.kernel("dropout_fwd", [ones, node.inputs[0]], [out], ints=[n, _seed(node)], floats=[rate])


register("DropoutMask", dropout_mask_type, dropout_mask_lower)


# -- DropoutMul(x, m, c | "") -> x·m (+ c), m and c broadcast to x ------------------------------

def dropout_mul_type(node, ins):
    x = ins[0]
    for t in ins:
        if t is not None and t.dtype != "float32":
            raise DTypeError(f"{where(node)}: expected float32 tensors, got {t.dtype}")
    for t in ins[1:]:
        if t is not None and np.broadcast_shapes(tuple(t.shape), tuple(x.shape)) != tuple(x.shape):
            raise ShapeError(f"{where(node)}: a mask of shape {t.shape} does not broadcast to {x.shape}")
    return [TensorType(x.shape, "float32")]


def dropout_mul_lower(ctx, node):
    x, m, c = (list(node.inputs) + [""])[:3]
    y = node.outputs[0]
    if not math.prod(ctx.shape(y)):
        return
    emit_binary(ctx, "Mul", x, m, y)
    if c:
        emit_binary(ctx, "Add", y, c, y)


register("DropoutMul", dropout_mul_type, dropout_mul_lower)


@backward_rule("DropoutTrain")
def dropout_train_backward(gb, node, dys):
    return [gb.node("DropoutGrad", [dys[0], node.inputs[1]], attrs=dict(node.attrs),
                    base=f"grad/{node.outputs[0]}"), None]


@backward_rule("DropoutMul")
def dropout_mul_backward(gb, node, dys):
    return [gb.node("DropoutMul", [dys[0], node.inputs[1]], base=f"grad/{node.outputs[0]}"), None, None]


# -- the training form of Dropout ---------------------------------------------------------------

ALPHA, SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946  # SELU's


def _onnx_rate(gb, node) -> float:
    if len(node.inputs) < 2 or not node.inputs[1]:
        return 0.5
    ratio = gb.value(node.inputs[1])
    if ratio is None or np.size(ratio) != 1:
        raise ShapeError(f"{where(node)}: in a training graph the ratio must be a constant scalar")
    ratio = float(np.asarray(ratio).reshape(()))
    if not 0 <= ratio <= 1:
        raise ShapeError(f"{where(node)}: ratio must be in [0, 1], got {ratio}")
    return ratio


def _noise_shape(node, shape: tuple) -> tuple:
    ns = node.attrs.get("noise_shape")
    if ns is None:
        return tuple(shape)
    ns = [int(d) for d in ns]
    if len(ns) != len(shape) or any(d not in (-1, 1, s) for d, s in zip(ns, shape)):
        raise ShapeError(f"{where(node)}: noise_shape {ns} does not broadcast to the input {shape}")
    return tuple(s if d == -1 else d for d, s in zip(ns, shape))


@training_form("Dropout")
def dropout_training(gb, node):
    x, y = node.inputs[0], node.outputs[0]
    if len(node.outputs) > 1 and node.outputs[1]:
        raise ShapeError(f"{where(node)}: the mask output is not supported in a training graph")
    rate = _rate(node) if "rate" in node.attrs else _onnx_rate(gb, node)
    if "seed" in node.attrs:
        seed = _seed(node)
    else:  # an ONNX node: from its name and the training's seed
        seed = (zlib.crc32(node.name.encode()) ^ (int(gb.settings.get("seed", 0)) << 32)) & 0x7FFFFFFFFFFFFFFF
    counter = gb.settings.get("step_counter") or gb.const(np.zeros(1, np.int64), "dropout/step")
    attrs = {"rate": rate, "seed": seed}
    shape = gb.shape(x)
    noise = _noise_shape(node, shape)
    alpha = int_attr(node, "alpha", 0)
    if noise == tuple(shape) and not alpha:
        gb.node("DropoutTrain", [x, counter], [y], attrs)
        return
    m = gb.node("DropoutMask", [counter], attrs={**attrs, "shape": list(noise)}, base=f"{y}/mask")
    if not alpha:
        gb.node("DropoutMul", [x, m], [y])
        return
    # AlphaDropout (Keras): a·(x·kept + alpha_p·(1 − kept)) + b, kept = m·(1 − rate)
    #   = x·(a·kept) + (a·alpha_p + b − a·alpha_p·kept)
    if rate == 1:
        raise ShapeError(f"{where(node)}: AlphaDropout with rate 1 is undefined (Keras divides by 0)")
    alpha_p = -ALPHA * SCALE
    a = ((1 - rate) * (1 + rate * alpha_p ** 2)) ** -0.5
    b = -a * alpha_p * rate
    f32 = np.float32
    scale = gb.node("Mul", [m, gb.const(f32(a * (1 - rate)))], base=f"{y}/scale")
    drop = gb.node("Mul", [m, gb.const(f32(a * alpha_p * (1 - rate)))], base=f"{y}/dropped")
    shift = gb.node("Sub", [gb.const(f32(a * alpha_p + b)), drop], base=f"{y}/shift")
    gb.node("DropoutMul", [x, scale, shift], [y])
