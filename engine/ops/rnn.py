"""Recurrent ops: LSTM, GRU, RNN (ONNX semantics, newest opset: layout, directions,
sequence_lens, initial states, peepholes, activations with alpha/beta, clip, input_forget,
linear_before_reset; every output optional).

Lowering: one `rnn` kernel per direction runs the whole layer, a fused x·Wᵀ + h·Rᵀ product
per time step (W and R packed once into its layout when they are weights). float16 / float64
layers compute in float32 (converted on the way in and out).
Sequences of length 0 give zero outputs and final states, as in onnxruntime.

Engine extension for Keras masks: input 8 of all three ops (GRU and RNN leave 6 and 7 empty)
is an optional bool `mask` of shape (batch, seq_length), whatever the layout. A masked step
leaves the state as it was; its Y row is the previous output (zeros before the first unmasked
step), or zeros with attribute `zero_output_for_mask=1` (Keras's RNN semantics).

Engine extension for Keras weights: attribute `weight_layout="keras"` (one direction) takes W,
R and B as Keras keeps them: kernel (In, G·H), recurrent_kernel (H, G·H), bias (G·H,) (input
bias only) or (2, G·H) (input then recurrent: GRU reset_after), gates in Keras's order (LSTM
i, f, c, o). engine.nn's training graphs use it, so gradients land on Keras's weights.

Training (engine/ops/rnn_grad.py): `RNNTrain` (the forward, plus a tape) and `RNNGrad` carry
the recurrent op's kind in attribute `cell` and share everything here.
"""

from __future__ import annotations

import numpy as np

from ..errors import GraphError, ShapeError
from .registry import Tensor, TensorType, register
from .seq_util import FLOAT_TYPES, as_float32, finish_outputs, float32_output, float_attr, int_attr

# op -> (kernel cell code, gates, activations per direction, outputs)
CELLS = {"RNN": (0, 1, 1, 2), "GRU": (1, 3, 2, 2), "LSTM": (2, 4, 3, 3)}
DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}

# lower-case name -> (kernel code (engine/rnn.h RnnAct), default alpha or None, default beta or None);
# alpha/beta defaults are those of the ONNX operators of the same name, as the spec says
# (onnxruntime uses 0 for Affine, ScaledTanh and ThresholdedRelu when none is given).
ACTIVATIONS = {
    "sigmoid": (0, None, None), "tanh": (1, None, None), "relu": (2, None, None),
    "hardsigmoid": (3, 0.2, 0.5), "affine": (4, 1.0, 0.0), "leakyrelu": (5, 0.01, None),
    "thresholdedrelu": (6, 1.0, None), "scaledtanh": (7, 1.0, 1.0), "elu": (8, 1.0, None),
    "softsign": (9, None, None), "softplus": (10, None, None),
}
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def _where(node) -> str:
    return f"node '{node.name}' ({node.op})"


def kind(node) -> str:
    """LSTM, GRU or RNN: the op, or attribute `cell` of the training ops."""
    k = node.attrs.get("cell", node.op) if node.op not in CELLS else node.op
    if k not in CELLS:
        raise GraphError(f"{_where(node)}: attribute 'cell' must be LSTM, GRU or RNN, got {k!r}")
    return k


def keras_layout(node) -> bool:
    layout = node.attrs.get("weight_layout", "onnx")
    if layout not in ("onnx", "keras"):
        raise GraphError(f"{_where(node)}: weight_layout must be 'onnx' or 'keras', got {layout!r}")
    return layout == "keras"


def _direction(node) -> str:
    d = node.attrs.get("direction", "forward")
    if d not in DIRECTIONS:
        raise GraphError(f"{_where(node)}: direction must be forward, reverse or bidirectional, got {d!r}")
    return d


def _activations(node) -> list:
    """[(code, alpha, beta)] per activation slot of every direction. activation_alpha / _beta
    are consumed in order by the activations that take them; missing ones take the defaults."""
    per_dir = CELLS[kind(node)][2]
    ndir = DIRECTIONS[_direction(node)]
    names = node.attrs.get("activations", DEFAULT_ACTIVATIONS[kind(node)])
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise GraphError(f"{_where(node)}: activations must be a list of names, got {names!r}")
    names = list(names)
    if len(names) == per_dir and ndir == 2:
        names = names * 2
    elif len(names) == 2 * per_dir and ndir == 1 and names[:per_dir] == names[per_dir:]:
        names = names[:per_dir]  # RNN's schema default ['Tanh', 'Tanh'] for one direction
    if len(names) != per_dir * ndir:
        raise GraphError(f"{_where(node)}: expected {per_dir * ndir} activations for {ndir} direction(s), "
                         f"got {len(names)}: {names}")
    alphas, betas = (list(node.attrs.get(k, [])) for k in ("activation_alpha", "activation_beta"))
    for k, vals in (("activation_alpha", alphas), ("activation_beta", betas)):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            raise GraphError(f"{_where(node)}: attribute '{k}' must be a list of numbers, got {vals!r}")
    out = []
    for name in names:
        key = name.lower()
        if key not in ACTIVATIONS:
            raise GraphError(f"{_where(node)}: unknown activation '{name}' "
                             f"(known: {', '.join(sorted(ACTIVATIONS))})")
        act, da, db = ACTIVATIONS[key]
        a = float(alphas.pop(0)) if da is not None and alphas else (da or 0.0)
        b = float(betas.pop(0)) if db is not None and betas else (db or 0.0)
        out.append((act, a, b))
    return out


def rnn_check(node) -> None:
    _direction(node)
    _activations(node)
    if keras_layout(node) and _direction(node) == "bidirectional":
        raise GraphError(f"{_where(node)}: Keras-layout weights are for one direction, not bidirectional")
    int_attr(node, "layout", 0, {0, 1})
    hs = node.attrs.get("hidden_size")
    if hs is not None and (isinstance(hs, bool) or not isinstance(hs, int) or hs < 0):
        raise GraphError(f"{_where(node)}: hidden_size must be a non-negative int, got {hs!r}")
    clip = float_attr(node, "clip", None)
    if clip is not None and not clip > 0:
        raise GraphError(f"{_where(node)}: clip must be positive, got {clip}")
    if kind(node) == "LSTM":
        int_attr(node, "input_forget", 0, {0, 1})
    if kind(node) == "GRU":
        int_attr(node, "linear_before_reset", 0, {0, 1})
    int_attr(node, "zero_output_for_mask", 0, {0, 1})
    n_out = CELLS[node.op][3] if node.op in CELLS else None
    if n_out is not None and len(node.outputs) > n_out:
        raise GraphError(f"{_where(node)}: at most {n_out} outputs, got {len(node.outputs)}")


class _Dims:
    """The sizes of one recurrent node, checked against every input."""

    def __init__(self, node, ins):
        rnn_check(node)
        w = _where(node)
        self.kind = kind(node)
        _, G, _, _ = CELLS[self.kind]
        self.keras = keras_layout(node)
        if len(ins) < 3 or any(t is None for t in ins[:3]):
            raise ShapeError(f"{w}: X, W and R are required")
        if len(ins) > 9 or len(ins) > 6 and self.kind != "LSTM" and any(t is not None for t in ins[6:8]):
            raise ShapeError(f"{w}: too many inputs ({len(ins)}; input 8 is the engine's mask)")
        x, r = ins[0], ins[2]
        self.dtype = x.dtype
        if self.dtype not in FLOAT_TYPES:
            raise ShapeError(f"{w}: X must be float32, float16 or float64, got {self.dtype}")
        self.layout = int_attr(node, "layout", 0, {0, 1})
        self.D = DIRECTIONS[_direction(node)]
        if len(x.shape) != 3:
            raise ShapeError(f"{w}: X must be 3-D, got shape {x.shape}")
        self.T, self.B, self.In = (x.shape[1], x.shape[0], x.shape[2]) if self.layout else x.shape
        if self.keras:
            if len(r.shape) != 2:
                raise ShapeError(f"{w}: R (Keras's recurrent_kernel) must be 2-D (hidden, {G}·hidden), "
                                 f"got {r.shape}")
            self.H = r.shape[0]
        else:
            if len(r.shape) != 3:
                raise ShapeError(f"{w}: R must be 3-D (num_directions, {G}·hidden, hidden), got {r.shape}")
            self.H = r.shape[2]
        hs = node.attrs.get("hidden_size")
        if hs is not None and hs != self.H:
            raise ShapeError(f"{w}: hidden_size {hs} differs from R's shape {r.shape}")
        self.G, D, H = G, self.D, self.H
        state = (self.B, D, H) if self.layout else (D, self.B, H)
        self.bias_parts = 2
        if self.keras:
            b = ins[3] if len(ins) > 3 else None
            if b is not None and len(b.shape) == 1:
                self.bias_parts = 1
            bias = (G * H,) if self.bias_parts == 1 else (2, G * H)
            want = [("W", (self.In, G * H)), ("R", (H, G * H)), ("B", bias)]
        else:
            want = [("W", (D, G * H, self.In)), ("R", (D, G * H, H)), ("B", (D, 2 * G * H))]
        want += [("sequence_lens", (self.B,)), ("initial_h", state), ("initial_c", state), ("P", (D, 3 * H))]
        for (name, shape), t in zip(want, ins[1:]):
            if t is None:
                continue
            if tuple(t.shape) != shape:
                raise ShapeError(f"{w}: {name} must have shape {shape}, got {tuple(t.shape)}")
            expect = "int32" if name == "sequence_lens" else self.dtype
            if t.dtype != expect:
                raise ShapeError(f"{w}: {name} must be {expect}, got {t.dtype}")
        mask = ins[8] if len(ins) > 8 else None
        if mask is not None and (mask.dtype != "bool" or tuple(mask.shape) != (self.B, self.T)):
            raise ShapeError(f"{w}: mask must be bool of shape {(self.B, self.T)}, got {mask.dtype} {tuple(mask.shape)}")
        self.state_shape = state
        self.y_shape = (self.B, self.T, D, H) if self.layout else (self.T, D, self.B, H)


def rnn_type(node, ins):
    d = _Dims(node, ins)
    types = [TensorType(d.y_shape, d.dtype), TensorType(d.state_shape, d.dtype), TensorType(d.state_shape, d.dtype)]
    return types[:len(node.outputs)]


def rnn_lower(ctx, node):
    lower_layer(ctx, node, node.outputs)


def lower_layer(ctx, node, outputs, tape: str = "") -> None:
    """The `rnn` steps of a recurrent node writing `outputs` (Y, Y_h, Y_c; "" when unwanted)
    and, for training, the tape (one step per direction)."""
    from .. import _C

    ins = list(node.inputs) + [""] * (9 - len(node.inputs))
    d = _Dims(node, [Tensor(ctx.shape(i), ctx.dtype(i)) if i else None for i in ins[:len(node.inputs)]])
    cell, G, per_dir, _ = CELLS[d.kind]
    T, B, In, H, D = d.T, d.B, d.In, d.H, d.D
    acts = _activations(node)
    x_name, w_name, r_name, b_name, len_name, h0_name, c0_name, p_name, mask_name = ins
    pending: list = []
    outs = list(outputs) + [""] * (3 - len(outputs))
    y, yh, yc = (float32_output(ctx, o, pending) for o in outs[:3])
    if not (y or yh or yc or tape) or B == 0 or H == 0:
        return  # nothing asked for, or every output is empty
    lbr = d.kind == "GRU" and bool(node.attrs.get("linear_before_reset", 0))
    # Weights (and a constant B) are packed once into the kernel's layout (engine/rnn.h);
    # runtime ones are packed by the kernel on each call, into its workspace.
    w, r = ctx.value(w_name), ctx.value(r_name)
    bias = ctx.value(b_name) if b_name else None
    packed = w is not None and r is not None
    ws_floats = max(_C.rnn_workspace_floats(cell, lbr, T, B, In, H, bool(mask_name), not packed), 1)
    ws = ctx.scratch((ws_floats,), "float32")
    x = as_float32(ctx, x_name)
    w32, r32 = ("", "") if packed else (as_float32(ctx, w_name), as_float32(ctx, r_name))
    p, h0, c0 = (as_float32(ctx, n) for n in (p_name, h0_name, c0_name))
    b = "" if bias is not None else as_float32(ctx, b_name)
    direction = _direction(node)
    clip = float_attr(node, "clip", None) or 0.0
    flags = [int(bool(y)), int(bool(yh)), int(bool(yc))]
    kouts = [o for o in (y, yh, yc, tape) if o]

    def pack(name, value, di, fn, *args):
        m = np.ascontiguousarray(value if d.keras else value[di], np.float32)
        if fn is _C.rnn_pack_bias and d.keras:  # Keras's bias: (G·H,) input only, or (2, G·H)
            m = np.concatenate([m.reshape(-1), np.zeros(G * H * (2 - d.bias_parts), np.float32)])
        key = ("rnn.packed", d.kind, name, di, lbr, d.keras, fn.__name__, *args)
        return ctx.constant(ctx.cached(key, lambda: fn(m, cell, lbr, *args, d.keras)))

    for di in range(D):
        wp, rp = ((pack(w_name, w, di, _C.rnn_pack_weights, False), pack(r_name, r, di, _C.rnn_pack_weights, True))
                  if packed else ("", ""))
        bp = pack(b_name, bias, di, _C.rnn_pack_bias) if bias is not None else ""
        reverse = direction == "reverse" or (direction == "bidirectional" and di == 1)
        fa = acts[di * per_dir:(di + 1) * per_dir] + [(0, 0.0, 0.0)] * (3 - per_dir)
        ctx.kernel("rnn", [x, w32, r32, wp, rp, b, p, h0, c0, len_name, mask_name, ws, bp], kouts,
                   ints=[*_layer_ints(node, d, di, reverse, lbr, fa), *flags, ws_floats,
                         int(node.attrs.get("zero_output_for_mask", 0)), int(bool(tape)), int(d.keras), d.bias_parts],
                   floats=_act_floats(clip, fa), dtype="float32")
    finish_outputs(ctx, pending)


def _layer_ints(node, d, di, reverse, lbr, fa) -> list:
    """The ints the rnn and rnn_grad steps share: [cell, T, batch, In, H, D, d, layout, reverse,
    input_forget, linear_before_reset, act_f, act_g, act_h]."""
    return [CELLS[d.kind][0], d.T, d.B, d.In, d.H, d.D, di, d.layout, int(reverse),
            int(node.attrs.get("input_forget", 0)), int(lbr), fa[0][0], fa[1][0], fa[2][0]]


def _act_floats(clip, fa) -> list:
    return [clip, fa[0][1], fa[0][2], fa[1][1], fa[1][2], fa[2][1], fa[2][2]]


for _op in CELLS:
    register(_op, rnn_type, rnn_lower, check=rnn_check)
