"""Training for the recurrent ops (LSTM, GRU, RNN of engine/ops/rnn.py): backpropagation
through time on the native kernels (engine/rnn.h, csrc/cpu/rnn_backward.cpp).

In a training graph a recurrent node whose inputs need gradients runs as `RNNTrain`: the same
forward (the `rnn` step) that also writes a *tape* (per step and batch row the gate activations,
the cell state, the previous h: what the backward reads), an extra output of shape
(num_directions, seq_length·batch, width). Its backward rule emits `RNNGrad`, lowered to one
`rnn_grad` step per direction: the recurrence backward over the steps, then dX = dG·W,
dW = dGᵀ·X and dR = dGᵀ·H_prev as whole-sequence GEMMs.

    RNNTrain(X, W, R, B, sequence_lens, initial_h, initial_c, P, mask) -> [Y, Y_h, Y_c, tape]
    RNNGrad(X, W, R, B, sequence_lens, initial_h, initial_c, P, mask, tape, dY, dY_h, dY_c)
        -> [dX, dW, dR, dB, d_initial_h, d_initial_c]

Both carry the forward's attributes plus `cell` (LSTM, GRU or RNN); unwanted outputs are "".
Either weight layout trains (ONNX's, or Keras's with weight_layout="keras", which engine.nn's
training graphs use so the gradients are Keras's kernel, recurrent_kernel and bias).

Trainable configurations: float32; activations whose derivative follows from their output
(the defaults, relu, hard sigmoid, affine, leaky relu, elu, scaled tanh, softsign, softplus);
no clip and no peepholes (an UnsupportedOpError names the node otherwise). Masks,
sequence_lens, initial states, every direction and both GRU forms train.
"""

from __future__ import annotations

from ..errors import GraphError, ShapeError, UnsupportedOpError
from ..graph import Node
from . import rnn as R
from .grad_ops import zero_fill
from .grad_registry import backward_rule, training_form
from .registry import Tensor, TensorType, register
from .seq_util import float_attr

_N_FORWARD_INPUTS = 9
_GRAD_OUTPUTS = ("dX", "dW", "dR", "dB", "d_initial_h", "d_initial_c")


def check_trainable(node, d) -> None:
    """UnsupportedOpError unless the backward kernel can differentiate this node (d: its _Dims)."""
    from .. import _C

    where = R._where(node)
    if d.dtype != "float32":
        raise UnsupportedOpError(f"{where}: training needs float32 (got {d.dtype}); cast the input first")
    if (float_attr(node, "clip", None) or 0.0) > 0:
        raise UnsupportedOpError(f"{where}: clip is not supported in training")
    ins = list(node.inputs) + [""] * _N_FORWARD_INPUTS
    if ins[7]:
        raise UnsupportedOpError(f"{where}: peepholes (input P) are not supported in training")
    for act, alpha, beta in R._activations(node):
        if not _C.rnn_backward_supports(act, alpha, beta):
            name = next(k for k, v in R.ACTIVATIONS.items() if v[0] == act)
            raise UnsupportedOpError(f"{where}: activation {name} (alpha {alpha}, beta {beta}) cannot be "
                                     "trained: its derivative does not follow from its output")


def _forward_tensors(node, ins) -> list:
    return list(ins[:_N_FORWARD_INPUTS])


# -- RNNTrain ------------------------------------------------------------------------------

def train_type(node, ins):
    if len(node.outputs) != 4:
        raise GraphError(f"{R._where(node)}: expects 4 outputs (Y, Y_h, Y_c, tape; '' when unwanted)")
    from .. import _C

    d = R._Dims(node, _forward_tensors(node, ins))
    check_trainable(node, d)
    state = TensorType(d.state_shape, "float32")
    width = _C.rnn_tape_width(R.CELLS[d.kind][0], d.H, d.In)
    return [TensorType(d.y_shape, "float32"), state, state, TensorType((d.D, d.T * d.B, width), "float32")]


def train_lower(ctx, node):
    R.lower_layer(ctx, node, node.outputs[:3], tape=node.outputs[3])


register("RNNTrain", train_type, train_lower, check=R.rnn_check)


# -- RNNGrad -------------------------------------------------------------------------------

def _grad_inputs(node) -> list:
    ins = list(node.inputs) + [""] * (_N_FORWARD_INPUTS + 4 - len(node.inputs))
    return ins[:_N_FORWARD_INPUTS], ins[_N_FORWARD_INPUTS:]


def grad_type(node, ins):
    if len(node.outputs) != 6:
        raise GraphError(f"{R._where(node)}: expects 6 outputs ({', '.join(_GRAD_OUTPUTS)}; '' when unwanted)")
    if len(ins) < _N_FORWARD_INPUTS + 1 or ins[_N_FORWARD_INPUTS] is None:
        raise ShapeError(f"{R._where(node)}: the tape (input {_N_FORWARD_INPUTS}) is required")
    fwd = _forward_tensors(node, ins)
    d = R._Dims(node, fwd)
    check_trainable(node, d)
    grads = list(ins[_N_FORWARD_INPUTS + 1:]) + [None] * 3
    for name, t, shape in zip(("dY", "dY_h", "dY_c"), grads[:3], (d.y_shape, d.state_shape, d.state_shape)):
        if t is not None and (tuple(t.shape) != shape or t.dtype != "float32"):
            raise ShapeError(f"{R._where(node)}: {name} must be float32 of shape {shape}, "
                             f"got {t.dtype} {tuple(t.shape)}")
    sources = [fwd[0], fwd[1], fwd[2], fwd[3], fwd[5], fwd[6]]
    out = []
    for name, o, src in zip(_GRAD_OUTPUTS, node.outputs, sources):
        if o and src is None:
            raise GraphError(f"{R._where(node)}: output {name} is wanted but its input is absent")
        out.append(TensorType(tuple(src.shape) if src is not None else (0,), "float32"))
    return out


def grad_lower(ctx, node):
    from .. import _C

    fwd, (tape, dy, dyh, dyc) = _grad_inputs(node)
    d = R._Dims(node, [Tensor(ctx.shape(i), ctx.dtype(i)) if i else None for i in fwd])
    x, w, r, _b, lens, _h0, _c0, _p, mask = fwd
    wanted = [o for o in node.outputs if o]
    if not wanted:
        return
    if d.T * d.B == 0 or d.H == 0:
        for o in wanted:
            zero_fill(ctx, o)
        return
    cell = R.CELLS[d.kind][0]
    per_dir = R.CELLS[d.kind][2]
    lbr = d.kind == "GRU" and bool(node.attrs.get("linear_before_reset", 0))
    ws_floats = max(_C.rnn_grad_workspace_floats(cell, lbr, d.T, d.B, d.In, d.H), 1)
    ws = ctx.scratch((ws_floats,), "float32")
    mask_bits = sum(1 << k for k, o in enumerate(node.outputs) if o)
    acts = R._activations(node)
    direction = R._direction(node)
    for di in range(d.D):
        reverse = direction == "reverse" or (direction == "bidirectional" and di == 1)
        fa = acts[di * per_dir:(di + 1) * per_dir] + [(0, 0.0, 0.0)] * (3 - per_dir)
        ctx.kernel("rnn_grad", [x, w if node.outputs[0] else "", r, tape, dy, dyh, dyc, lens, mask, ws], wanted,
                   ints=[*R._layer_ints(node, d, di, reverse, lbr, fa),
                         int(node.attrs.get("zero_output_for_mask", 0)), mask_bits, int(di > 0), ws_floats,
                         int(d.keras), d.bias_parts],
                   floats=R._act_floats(0.0, fa), dtype="float32")


register("RNNGrad", grad_type, grad_lower, check=R.rnn_check)


# -- autograd -----------------------------------------------------------------------------

@training_form("LSTM", "GRU", "RNN")
def rnn_training(gb, node):
    """The node as RNNTrain (keeping its tape) when any input needs a gradient; else as it is."""
    gb._names.add(node.name)
    if not any(gb.needs(i) for i in node.inputs):
        gb.add(Node(node.op, list(node.inputs), list(node.outputs), dict(node.attrs), node.name))
        return
    outs = list(node.outputs) + [""] * (3 - len(node.outputs))
    tape = gb.fresh(f"{node.outputs[0] or node.name}/tape")
    gb.add(Node("RNNTrain", list(node.inputs), outs + [tape], {**node.attrs, "cell": node.op}, node.name))


@backward_rule("RNNTrain")
def rnn_train_backward(gb, node, dys):
    fwd = list(node.inputs) + [""] * (_N_FORWARD_INPUTS - len(node.inputs))
    x, w, r, b, _lens, h0, c0, _p, _mask = fwd
    cell = node.attrs["cell"]
    want = [gb.needs(x), gb.needs(w), gb.needs(r), gb.needs(b), gb.needs(h0), cell == "LSTM" and gb.needs(c0)]
    base = f"grad/{node.outputs[0] or node.name}"
    outs = [gb.fresh(f"{base}/{k}") if wanted else "" for k, wanted in zip(_GRAD_OUTPUTS, want)]
    dy, dyh, dyc = (list(dys) + [None] * 3)[:3]
    gb.node("RNNGrad", fwd + [node.outputs[3], dy or "", dyh or "", dyc or ""], outs, dict(node.attrs),
            base=base)
    dx, dw, dr, db, dh0, dc0 = (o or None for o in outs)
    return [dx, dw, dr, db, None, dh0, dc0, None, None]

