"""The optimizer's part of a training graph: nodes without outputs that update trained values
in place (engine/train.py adds them after the reverse pass).

OptimizerUpdate(param, grad, state..., hyper): attrs step (a registry step such as
adam_update), ints, floats (Optimizer.update_step). Writes param and state in place.
GlobalNormScale(grad..., hyper): attr clipnorm; writes the global clip scale into hyper[2]."""

from __future__ import annotations

import math

from .registry import register


def _no_outputs(node, ins):
    return []


def _update_lower(ctx, node):
    param, grad, *rest = node.inputs
    states, hyper = rest[:-1], rest[-1]
    ctx.kernel(node.attrs["step"], [param, grad, *states, hyper], [param, *states],
               ints=node.attrs["ints"], floats=node.attrs["floats"], dtype="float32")


register("OptimizerUpdate", _no_outputs, _update_lower)


def _global_norm_lower(ctx, node):
    grads, hyper = node.inputs[:-1], node.inputs[-1]
    ctx.kernel("global_norm_scale", grads, [hyper], ints=[math.prod(ctx.shape(g)) for g in grads],
               floats=[float(node.attrs["clipnorm"])], dtype="float32")


register("GlobalNormScale", _no_outputs, _global_norm_lower)
