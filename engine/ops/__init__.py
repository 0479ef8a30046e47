"""Op registry. Each family file registers its ops: type rule + lowering to native kernels
(+ attribute check, numpy evaluation for plan-time values, backward rule) side by side.
See docs/ops.md for how to add one."""

from . import (  # noqa: F401  (each module registers its ops)
    activations,
    arith,
    attention,
    attention_packed,
    attention_grad,
    cast,
    compare,
    control,
    conv_concat,
    dropout_grad,
    einsum,
    elementwise,
    elementwise_grad,
    gather,
    gather_grad,
    generate,
    grad_ops,
    linear,
    linear_grad,
    loss,
    loss_grad,
    movement,
    movement_grad,
    nchw,
    optimizer_ops,
    norm,
    norm_grad,
    pad,
    reduce,
    reduce_grad,
    resize,
    rnn,
    rnn_grad,
    shape_ops,
    softmax,
    softmax_grad,
    spatial,
    spatial_grad,
)
from .registry import OPS, OpDef, get_op, register

__all__ = ["OPS", "OpDef", "get_op", "register"]
