"""SoftmaxXent: softmax cross-entropy from logits for training (the `softmax_xent` step computes
the loss and the logits' gradient in one stable pass), with its backward rule.

SoftmaxXent(logits (N×C), labels (int, N) | target (float, N×C), weight (N) | "") ->
[loss (), dlogits (N×C)]; attr reduction: 1 sum, 2 mean over N (Keras), 3 mean over Σweight.
dlogits is the gradient for an upstream gradient of 1; the rule scales it by the real one."""

from __future__ import annotations

from ..errors import ShapeError
from .grad_registry import backward_rule
from .registry import TensorType, register


def _type(node, ins):
    z, t = ins[0], ins[1]
    if z.dtype != "float32" or len(z.shape) != 2:
        raise ShapeError(f"node '{node.name}' (SoftmaxXent): logits must be float32 (N, C), got {z.dtype} {z.shape}")
    sparse = t.dtype in ("int32", "int64")
    want = z.shape[:1] if sparse else z.shape
    if tuple(t.shape) != tuple(want):
        raise ShapeError(f"node '{node.name}' (SoftmaxXent): {'labels' if sparse else 'targets'} must have shape "
                         f"{want}, got {t.shape}")
    return [TensorType((), "float32"), TensorType(z.shape, "float32")]


def _lower(ctx, node):
    z, t = node.inputs[:2]
    w = node.inputs[2] if len(node.inputs) > 2 else ""
    N, C = ctx.shape(z)
    sparse = ctx.dtype(t) in ("int32", "int64")
    ctx.kernel("softmax_xent", [z, t, w, ""], [o for o in node.outputs if o],
               ints=[N, C, int(node.attrs.get("reduction", 2)), int(sparse)])


register("SoftmaxXent", _type, _lower)


@backward_rule("SoftmaxXent")
def softmax_xent_backward(gb, node, dys):
    dlogits = node.outputs[1]
    seed = gb.value(dys[0])
    if seed is not None and float(seed.reshape(-1)[0]) == 1.0:
        return [dlogits, None, None]
    return [gb.node("Mul", [dlogits, dys[0]]), None, None]
