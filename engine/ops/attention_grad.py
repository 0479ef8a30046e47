"""Training of Attention (engine/ops/attention.py): the training form keeps each query row's
log-sum-exp for the backward and may drop attention probabilities; the backward recomputes the
probabilities from it, tile by tile (flash-attention-2; csrc/cpu/attention_grad.cpp). float32.

What trains: 3-D or 4-D Q/K/V, grouped- and multi-query heads, attn_mask (bool, or additive
and constant), is_causal, scale, left/right windows. Past keys and values, nonpad_kv_seqlen,
the present_key / present_value / qk outputs and softcap are refused in training
(UnsupportedOpError naming the node).

Dropout on the probabilities (torch's `dropout_p`, Keras's `dropout=`): attributes `dropout`
(the rate) and `seed` on the Attention node (without `seed`: one from the node's name and the
training's seed, as for ONNX Dropout). The mask is never stored: the kernels draw it from a
hash of (seed, step, batch·head, query row, key), the backward again; the step is read at run
time as Dropout's is (gb.settings["step_counter"], 0 in a vjp).
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from ..errors import DTypeError, GraphError, UnsupportedOpError
from ..graph import Node
from .attention import AttnDims, mask_layout
from .grad_registry import backward_rule, training_form
from .registry import Tensor, TensorType, register
from .seq_util import float_attr, int_attr


def _where(node) -> str:
    return f"node '{node.name}' ({node.op})"


def _rate(node) -> float:
    rate = float_attr(node, "dropout", 0.0)
    if not 0 <= rate < 1:
        raise GraphError(f"{_where(node)}: attribute 'dropout' (the attention dropout rate) must be in [0, 1), "
                         f"got {rate}")
    return rate


def _dims(node, ins) -> AttnDims:
    """The Attention sizes of a training node (inputs Q, K, V, attn_mask, ...)."""
    d = AttnDims(node, list(ins[:4]))
    if d.dtype != "float32":
        raise DTypeError(f"{_where(node)}: training needs float32, Q is {d.dtype}")
    return d


def _ints(ctx, node, d: AttnDims, mask: str) -> list:
    kind, geom, elems = mask_layout(ctx, mask, d)
    return [d.B, d.Hq, d.Hkv, d.Sq, d.L, d.D, d.Dv, int(d.in3d), int_attr(node, "is_causal", 0),
            int_attr(node, "left_window_size", -1), int_attr(node, "right_window_size", -1), kind, *geom, elems,
            int_attr(node, "seed", 0)]


def _floats(node, d: AttnDims) -> list:
    scale = float_attr(node, "scale", None)
    if scale is None:
        scale = 1.0 / math.sqrt(d.D) if d.D else 1.0
    return [scale, _rate(node)]


def _shapes(ctx, names) -> list:
    return [Tensor(ctx.shape(i), ctx.dtype(i)) if i else None for i in names]


# -- AttentionTrain(Q, K, V, attn_mask | "", counter | "") -> [Y, LSE (B, Hq, Sq)] ----------------
# attrs: Attention's (is_causal, scale, q_num_heads, kv_num_heads, windows) plus dropout, seed.

def attention_train_type(node, ins):
    d = _dims(node, ins)
    return [TensorType(d.y_shape, "float32"), TensorType((d.B, d.Hq, d.Sq), "float32")]


def attention_train_lower(ctx, node):
    q, k, v, mask, counter = (list(node.inputs) + [""] * 5)[:5]
    d = _dims(node, _shapes(ctx, [q, k, v, mask]))
    y, lse = node.outputs
    ctx.kernel("attention_train", [q, k, v, mask, counter], [y, lse or ctx.scratch((d.B, d.Hq, d.Sq), "float32")],
               ints=_ints(ctx, node, d, mask), floats=_floats(node, d))


register("AttentionTrain", attention_train_type, attention_train_lower)


# -- AttentionGrad(Q, K, V, Y, dY, LSE, attn_mask | "", counter | "") -> [dQ, dK, dV] ------------
# attrs: AttentionTrain's. "" for an unwanted gradient.

def attention_grad_type(node, ins):
    _dims(node, [ins[0], ins[1], ins[2], ins[6] if len(ins) > 6 else None])
    return [TensorType(t.shape, "float32") for t in ins[:3]]


def attention_grad_lower(ctx, node):
    q, k, v, y, dy, lse, mask, counter = (list(node.inputs) + [""] * 8)[:8]
    d = _dims(node, _shapes(ctx, [q, k, v, mask]))
    outs = [o or ctx.scratch(ctx.shape(i), "float32") for o, i in zip(node.outputs, (q, k, v))]
    ctx.kernel("attention_grad", [q, k, v, y, dy, lse, mask, counter], outs, ints=_ints(ctx, node, d, mask),
               floats=_floats(node, d))


register("AttentionGrad", attention_grad_type, attention_grad_lower)


# -- the training form and the backward rule ---------------------------------------------------

_UNSUPPORTED_INPUTS = {4: "past_key", 5: "past_value", 6: "nonpad_kv_seqlen"}
_UNSUPPORTED_OUTPUTS = {1: "present_key", 2: "present_value", 3: "qk_matmul_output"}


@training_form("Attention")
def attention_training(gb, node):
    _dims(node, [Tensor(gb.shape(i), gb.dtype(i)) if i else None for i in node.inputs])
    for k, what in _UNSUPPORTED_INPUTS.items():
        if k < len(node.inputs) and node.inputs[k]:
            raise UnsupportedOpError(f"{_where(node)}: training does not support the {what} input")
    for k, what in _UNSUPPORTED_OUTPUTS.items():
        if k < len(node.outputs) and node.outputs[k]:
            raise UnsupportedOpError(f"{_where(node)}: training does not support the {what} output")
    if float_attr(node, "softcap", 0.0) > 0:
        raise UnsupportedOpError(f"{_where(node)}: training does not support softcap")
    attrs = dict(node.attrs)
    inputs = list(node.inputs[:4]) + [""] * (4 - len(node.inputs[:4]))
    if _rate(node) > 0:
        if "seed" not in attrs:  # from the node's name and the training's seed, as ONNX Dropout
            attrs["seed"] = (zlib.crc32(node.name.encode()) ^ (int(gb.settings.get("seed", 0)) << 32)) \
                & 0x7FFFFFFFFFFFFFFF
        inputs.append(gb.settings.get("step_counter") or gb.const(np.zeros(1, np.int64), "attention/step"))
    y = node.outputs[0]
    gb._names.update([node.name, y])
    gb.add(Node("AttentionTrain", inputs, [y, gb.fresh(f"{y}/lse")], attrs, node.name))


@backward_rule("AttentionTrain")
def attention_backward(gb, node, dys):
    q, k, v, mask = node.inputs[:4]
    counter = node.inputs[4] if len(node.inputs) > 4 else ""
    if dys[1] is not None:
        raise UnsupportedOpError(f"{_where(node)}: the log-sum-exp output has no gradient")
    if gb.needs(mask) and gb.dtype(mask) != "bool":
        raise UnsupportedOpError(f"{_where(node)}: the additive attn_mask '{mask}' depends on a trained value, "
                                 "and its gradient is not supported (only constant masks train)")
    want = [gb.needs(q), gb.needs(k), gb.needs(v)]
    if not any(want):
        return [None] * len(node.inputs)
    base = f"grad/{node.outputs[0]}"
    outs = [gb.fresh(f"{base}/{n}") if w else "" for n, w in zip(("dq", "dk", "dv"), want)]
    gb.node("AttentionGrad", [q, k, v, node.outputs[0], dys[0], node.outputs[1], mask, counter], outs,
            dict(node.attrs))
    return [o or None for o in outs] + [None] * (len(node.inputs) - 3)
