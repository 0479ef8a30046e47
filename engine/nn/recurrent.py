"""Recurrent layers: SimpleRNN, LSTM, GRU (both reset_after forms), Bidirectional and
TimeDistributed, on the native ONNX-semantics `RNN` / `LSTM` / `GRU` ops.

Keras keeps its weights in its own layouts and gate orders (kernel (in, G·units), gates
LSTM i,f,c,o and GRU z,r,h; GRU's bias (2, 3·units) with reset_after); they are permuted into
ONNX's (W (1, G·units, in), LSTM gates i,o,f,c) when the graph is emitted, so get_weights /
set_weights stay Keras's. `recurrent_activation` is the op's f activation, `activation` its
g (and h). Input (batch, steps, features) is the op's layout 1, so nothing is transposed.
In training graphs (GraphBuilder.training) the op reads the Keras weights themselves
(weight_layout="keras", engine/ops/rnn.py), so gradients land on them and nothing is
converted per step.

Keras semantics kept: `go_backwards` returns the sequence in processing order (reversed);
masks (from Embedding(mask_zero=True), Masking, or mask=) skip steps, keep the state and
repeat the previous output (zeros with zero_output_for_mask, which Bidirectional forces on
when it returns sequences); without return_sequences the output is that of the last step
processed; initial states come from `initial_state=[h, (c)]`.
"""

from __future__ import annotations

import numpy as np

from ..errors import EngineError, ShapeError, UnsupportedOpError
from . import activations, initializers
from .base import Layer
from .tensor import KerasTensor

_INT64_MIN = np.iinfo(np.int64).min

# alpha / beta slots of the op's activations (engine/ops/rnn.py ACTIVATIONS)
_TAKES_ALPHA = {"HardSigmoid", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "Elu"}
_TAKES_BETA = {"HardSigmoid", "Affine", "ScaledTanh"}


def _i64(v) -> np.ndarray:
    return np.array(list(v), np.int64)


def _squeeze(g, x: str, axis: int, out: str) -> str:
    return g.node("Squeeze", [x, g.const(f"{out}/axis", _i64([axis]))], out)


def reverse_time(g, x: str, out: str) -> str:
    """x[:, ::-1]."""
    return g.node("Slice", [x, g.const(f"{out}/starts", _i64([-1])), g.const(f"{out}/ends", _i64([_INT64_MIN])),
                            g.const(f"{out}/axes", _i64([1])), g.const(f"{out}/steps", _i64([-1]))], out)


class _RNN(Layer):
    onnx = "LSTM"
    gates = 4
    n_states = 1
    supports_masking = True
    consumes_mask = True

    def __init__(self, units: int, activation="tanh", recurrent_activation="sigmoid", use_bias: bool = True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, seed=None, return_sequences: bool = False,
                 return_state: bool = False, go_backwards: bool = False, stateful: bool = False,
                 unroll: bool = False, zero_output_for_mask: bool = False, use_cudnn="auto", implementation=None,
                 time_major: bool = False, **kw):
        self._config = {k: v for k, v in locals().items() if k not in ("self", "kw", "__class__")}
        self._config.update(kw)
        super().__init__(**kw)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise EngineError(f"{self.name}: units must be a positive int, got {units!r}")
        if stateful:
            raise UnsupportedOpError(f"{self.name}: stateful=True (state carried from one call to the next) is "
                                     "not supported; every call starts from the initial state")
        if time_major:
            raise UnsupportedOpError(f"{self.name}: time_major=True is not supported")
        self.units, self.use_bias = units, use_bias
        self.activation = activations.get(activation, self.name)
        self.recurrent_activation = activations.get(recurrent_activation, self.name)
        for act in self._cell_activations():
            activations.rnn_activation(act, self.name)  # refused now, not when emitting
        self.return_sequences, self.return_state = bool(return_sequences), bool(return_state)
        self.go_backwards, self.zero_output_for_mask = bool(go_backwards), bool(zero_output_for_mask)
        self.dropout, self.recurrent_dropout = dropout, recurrent_dropout  # training only
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.regularizers = (kernel_regularizer, recurrent_regularizer, bias_regularizer, kernel_constraint,
                             recurrent_constraint, bias_constraint)

    def clone(self, **changes) -> "_RNN":
        """A new layer of the same configuration with `changes` (Bidirectional's backward copy)."""
        return type(self)(**{**self._config, **changes})

    # -- Keras weights ----------------------------------------------------------------------
    def _cell_activations(self) -> list:
        return [self.recurrent_activation, self.activation]

    def _bias_shape(self) -> tuple:
        return (self.gates * self.units,)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ShapeError(f"{self.name}: expected input (batch, steps, features) with known features, "
                             f"got {input_shape}")
        gh = self.gates * self.units
        named = [("kernel", (input_shape[-1], gh), self.kernel_initializer),
                 ("recurrent_kernel", (self.units, gh), self.recurrent_initializer)]
        if self.use_bias:
            named.append(("bias", self._bias_shape(), self._initial_bias))
        self._create(named)

    def _initial_bias(self, shape):
        return self.bias_initializer(shape)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ShapeError(f"{self.name}: expected input (batch, steps, features), got {input_shape}")
        n, t = input_shape[0], input_shape[1]
        out = (n, t, self.units) if self.return_sequences else (n, self.units)
        return [out] + [(n, self.units)] * self.n_states if self.return_state else out

    def compute_mask(self, inputs, mask):
        out = mask if self.return_sequences else None
        return [out] + [None] * self.n_states if self.return_state else out

    def _call_extra(self, kwargs: dict) -> dict:
        states = _initial_states(self, kwargs, self.n_states, f"{self.n_states} symbolic tensor(s)")
        if states is None:
            return {}
        for s in states:
            if tuple(s.shape[1:]) != (self.units,):
                raise ShapeError(f"{self.name}: an initial state must have shape (batch, {self.units}), got {s.shape}")
        return {"initial_state": states}

    # -- ONNX form --------------------------------------------------------------------------
    def _gate_order(self) -> list:
        return list(range(self.gates))

    def onnx_weights(self) -> tuple:
        """W (1, G·H, in), R (1, G·H, H), B (1, 2·G·H) or None, in the op's gate order."""
        w = dict(zip(self.weight_names, self.weights))
        h, order = self.units, self._gate_order()

        def gates(m):  # columns of Keras's (., G·H) in the op's gate order
            return np.concatenate([m[..., k * h:(k + 1) * h] for k in order], axis=-1)

        W = gates(w["kernel"]).T[None]
        R = gates(w["recurrent_kernel"]).T[None]
        B = None
        if self.use_bias:
            b = w["bias"]
            b = b if b.ndim == 2 else np.stack([b, np.zeros_like(b)])  # (input bias, recurrent bias)
            B = np.concatenate([gates(b[0]), gates(b[1])])[None]
        return (np.ascontiguousarray(W, np.float32), np.ascontiguousarray(R, np.float32),
                None if B is None else np.ascontiguousarray(B, np.float32))

    def _op_attrs(self) -> dict:
        acts, alphas, betas = [], [], []
        for act in self._op_activations():
            name, a, b = activations.rnn_activation(act, self.name)
            acts.append(name)
            if name in _TAKES_ALPHA:
                alphas.append(a)
            if name in _TAKES_BETA:
                betas.append(b)
        attrs = {"hidden_size": self.units, "layout": 1, "activations": acts,
                 "direction": "reverse" if self.go_backwards else "forward",
                 "zero_output_for_mask": int(self.zero_output_for_mask)}
        if alphas:
            attrs["activation_alpha"] = alphas
        if betas:
            attrs["activation_beta"] = betas
        return attrs

    def _op_activations(self) -> list:
        return [self.recurrent_activation, self.activation, self.activation]

    # -- emission ---------------------------------------------------------------------------
    def emit_call(self, g, call, name_of, out):
        x = name_of(call.inputs[0])
        mask = None if call.masks[0] is None else name_of(call.masks[0])
        states = [name_of(s) for s in call.extra.get("initial_state", [])]
        y, finals = self.emit_rnn(g, x, out, mask, states)
        return [y] + finals if self.return_state else [y]

    def emit_rnn(self, g, x: str, out: str, mask=None, states=(), keras_order: bool = True) -> tuple:
        """(output, [final states]) of this layer on value x; with keras_order=False a
        go_backwards sequence output stays in input time order (for Bidirectional)."""
        attrs = self._op_attrs()
        if g.training:  # the trained Keras weights, read in their own layout
            refs = self._weight_refs(g)
            ins = [x, refs[0], refs[1], refs[2] if self.use_bias else "", ""]
            attrs["weight_layout"] = "keras"
        else:
            W, R, B = self.onnx_weights()
            ins = [x, g.const(f"{self.name}/onnx_W", W), g.const(f"{self.name}/onnx_R", R),
                   g.const(f"{self.name}/onnx_B", B) if B is not None else "", ""]
        s = [g.node("Unsqueeze", [v, g.const(f"{out}/state_axis", _i64([1]))], f"{out}/initial_{i}")
             for i, v in enumerate(states)]
        ins += [s[0] if s else ""] + ([s[1] if s else ""] if self.onnx == "LSTM" else [""]) + [""]
        ins += [mask or ""]
        while ins[-1] == "":
            ins.pop()
        need_y = self.return_sequences or mask is not None
        need_h = self.return_state or not need_y
        names = [f"{out}/Y" if need_y else "", f"{out}/Y_h" if need_h else "",
                 f"{out}/Y_c" if self.onnx == "LSTM" and self.return_state else ""]
        while names[-1] == "":
            names.pop()
        g.node(self.onnx, ins, names, attrs, out)
        finals = [_squeeze(g, f"{out}/Y_h", 1, f"{out}/state_h")] if need_h else []
        if self.onnx == "LSTM" and self.return_state:
            finals.append(_squeeze(g, f"{out}/Y_c", 1, f"{out}/state_c"))
        if self.return_sequences:
            seq = f"{out}/sequence" if self.go_backwards and keras_order else out
            _squeeze(g, f"{out}/Y", 2, seq)
            y = reverse_time(g, seq, out) if seq != out else out
        elif mask is not None:  # the output of the last step processed (masked steps repeat or zero it)
            if g.training:  # as a one-step Slice (Y is (batch, steps, 1, units)), which has a backward rule
                start, end = (0, 1) if self.go_backwards else (-1, np.iinfo(np.int64).max)
                g.node("Slice", [f"{out}/Y", g.const(f"{out}/last_start", _i64([start])),
                                 g.const(f"{out}/last_end", _i64([end])),
                                 g.const(f"{out}/last_axis", _i64([1]))], f"{out}/last_steps")
                g.node("Squeeze", [f"{out}/last_steps", g.const(f"{out}/last_axes", _i64([1, 2]))], out)
                y = out
            else:
                idx = g.const(f"{out}/last", np.array(0 if self.go_backwards else -1, np.int64))
                g.node("Gather", [f"{out}/Y", idx], f"{out}/last_step", {"axis": 1})
                y = _squeeze(g, f"{out}/last_step", 1, out)
        else:
            y = g.node("Identity", [finals[0]], out)
        return y, finals


class SimpleRNN(_RNN):
    """Keras SimpleRNN: h = activation(x·kernel + h·recurrent_kernel + bias)."""

    onnx = "RNN"
    gates = 1

    def __init__(self, units, activation="tanh", use_bias=True, **kw):
        kw.pop("recurrent_activation", None)
        super().__init__(units, activation=activation, recurrent_activation="sigmoid", use_bias=use_bias, **kw)

    def _cell_activations(self):
        return [self.activation]

    def _op_activations(self):
        return [self.activation]


class LSTM(_RNN):
    """Keras LSTM: weights kernel (in, 4·units), recurrent_kernel (units, 4·units), bias
    (4·units), gates i, f, c, o.

    >>> LSTM(64, return_sequences=True)
    """

    onnx = "LSTM"
    gates = 4
    n_states = 2

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 unit_forget_bias: bool = True, **kw):
        super().__init__(units, activation, recurrent_activation, use_bias, **kw)
        self._config["unit_forget_bias"] = unit_forget_bias
        self.unit_forget_bias = unit_forget_bias

    def _initial_bias(self, shape):
        b = self.bias_initializer(shape)
        if self.unit_forget_bias:  # Keras: the forget gate's bias starts at 1
            b = b.copy()
            b[self.units:2 * self.units] = 1.0
        return b

    def _gate_order(self):
        return [0, 3, 1, 2]  # Keras i, f, c, o -> ONNX i, o, f, c


class GRU(_RNN):
    """Keras GRU, gates z, r, h. reset_after=True (Keras's default): bias (2, 3·units), the
    reset gate applied after the recurrent product (ONNX linear_before_reset=1)."""

    onnx = "GRU"
    gates = 3

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 reset_after: bool = True, **kw):
        super().__init__(units, activation, recurrent_activation, use_bias, **kw)
        self._config["reset_after"] = reset_after
        self.reset_after = bool(reset_after)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _op_activations(self):
        return [self.recurrent_activation, self.activation]

    def _op_attrs(self):
        return {**super()._op_attrs(), "linear_before_reset": int(self.reset_after)}


class Bidirectional(Layer):
    """Keras Bidirectional: a forward copy and a backward copy (go_backwards) of an RNN layer,
    weights forward then backward, outputs merged by merge_mode ('concat', 'sum', 'mul',
    'ave', or None for a list)."""

    supports_masking = True
    consumes_mask = True

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kw):
        super().__init__(weights=weights, **kw)
        if not isinstance(layer, _RNN):
            raise UnsupportedOpError(f"{self.name}: wraps SimpleRNN, LSTM or GRU layers, got {type(layer).__name__}")
        if merge_mode not in ("concat", "sum", "mul", "ave", None):
            raise EngineError(f"{self.name}: merge_mode must be concat, sum, mul, ave or None, got {merge_mode!r}")
        base = layer.name[len("forward_"):] if layer.name.startswith("forward_") else layer.name
        self.forward_layer = layer.clone(name="forward_" + base)
        if backward_layer is None:
            self.backward_layer = layer.clone(name="backward_" + base, go_backwards=not layer.go_backwards)
        else:
            if not isinstance(backward_layer, _RNN):
                raise UnsupportedOpError(f"{self.name}: backward_layer must be an RNN layer")
            self.backward_layer = backward_layer
        f, b = self.forward_layer, self.backward_layer
        if f.go_backwards == b.go_backwards or f.return_sequences != b.return_sequences or \
                f.return_state != b.return_state:
            raise EngineError(f"{self.name}: the forward and backward layers must differ in go_backwards and agree "
                              "in return_sequences and return_state")
        for sub in (f, b):  # Keras forces this on, so masked steps give zeros in the merged sequence
            sub.zero_output_for_mask = sub.return_sequences
        self.merge_mode = merge_mode
        self.return_sequences, self.return_state = f.return_sequences, f.return_state
        self._sublayers = [f, b]

    def build(self, input_shape):
        for sub in self._sublayers:
            sub._build_for(input_shape)

    def _call_extra(self, kwargs):
        n = 2 * self.forward_layer.n_states
        states = _initial_states(self, kwargs, n, f"{n} symbolic tensors (forward then backward)")
        return {} if states is None else {"initial_state": states}

    def compute_output_shape(self, input_shape):
        fo = self.forward_layer.compute_output_shape(input_shape)
        bo = self.backward_layer.compute_output_shape(input_shape)
        fy, by = (fo[0], bo[0]) if self.return_state else (fo, bo)
        if self.merge_mode == "concat":
            ys = [fy[:-1] + (fy[-1] + by[-1],)]
        elif self.merge_mode is None:
            ys = [fy, by]
        else:
            ys = [fy]
        if self.return_state:
            return ys + list(fo[1:]) + list(bo[1:])
        return ys if len(ys) > 1 else ys[0]

    def compute_mask(self, inputs, mask):
        out = [mask] * (2 if self.merge_mode is None else 1) if self.return_sequences else \
            [None] * (2 if self.merge_mode is None else 1)
        if self.return_state:
            return out + [None] * (2 * self.forward_layer.n_states)
        return out if len(out) > 1 else out[0]

    def emit_call(self, g, call, name_of, out):
        x = name_of(call.inputs[0])
        mask = None if call.masks[0] is None else name_of(call.masks[0])
        states = [name_of(s) for s in call.extra.get("initial_state", [])]
        n = self.forward_layer.n_states
        fy, fs = self.forward_layer.emit_rnn(g, x, f"{out}/forward", mask, states[:n])
        by, bs = self.backward_layer.emit_rnn(g, x, f"{out}/backward", mask, states[n:], keras_order=False)
        if self.return_sequences and self.forward_layer.go_backwards:
            fy = reverse_time(g, fy, f"{out}/forward_reversed")
        if self.merge_mode is None:
            ys = [g.node("Identity", [fy], f"{out}/0"), g.node("Identity", [by], f"{out}/1")]
        elif self.merge_mode == "concat":
            ys = [g.node("Concat", [fy, by], out, {"axis": -1})]
        elif self.merge_mode == "ave":
            g.node("Add", [fy, by], f"{out}/sum")
            ys = [g.node("Mul", [f"{out}/sum", g.const(f"{out}/half", np.float32(0.5))], out)]
        else:
            ys = [g.node({"sum": "Add", "mul": "Mul"}[self.merge_mode], [fy, by], out)]
        return ys + fs + bs if self.return_state else ys


class TimeDistributed(Layer):
    """Keras TimeDistributed: `layer` applied to every step: (batch, steps, ...) is folded to
    (batch·steps, ...) for the inner layer and unfolded after it."""

    supports_masking = True
    consumes_mask = True  # only to refuse a mask the wrapped layer would need per step

    def __init__(self, layer, **kw):
        super().__init__(**kw)
        if not isinstance(layer, Layer) or layer.is_op:
            raise UnsupportedOpError(f"{self.name}: wraps a layer, got {type(layer).__name__}")
        if type(layer).emit_call is not Layer.emit_call:
            raise UnsupportedOpError(f"{self.name}: wrapping {type(layer).__name__} (a layer with several inputs "
                                     "or outputs) is not supported")
        self.layer = layer
        self._sublayers = [layer]

    def _inner_shape(self, input_shape):
        if len(input_shape) < 3:
            raise ShapeError(f"{self.name}: expected (batch, steps, ...) input, got {input_shape}")
        if None in input_shape[2:]:
            raise ShapeError(f"{self.name}: the per-step shape must be known, got {input_shape}")
        return (None,) + tuple(input_shape[2:])

    def build(self, input_shape):
        self.layer._build_for(self._inner_shape(input_shape))

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape(self._inner_shape(input_shape))
        if isinstance(inner, list):
            raise UnsupportedOpError(f"{self.name}: the wrapped layer must have one output")
        return (input_shape[0], input_shape[1]) + tuple(inner[1:])

    def emit(self, g, x, out, mask=None):
        if mask is not None and self.layer.consumes_mask:
            raise UnsupportedOpError(f"{self.name}: a mask for the wrapped {type(self.layer).__name__} at every "
                                     "step is not supported")
        inner_in = self._inner_shape(self.input_shape)
        inner_out = self.layer.compute_output_shape(inner_in)
        flat = g.node("Reshape", [x], f"{out}/folded", {"shape": [-1, *inner_in[1:]]})
        y = self.layer.emit(g, flat, f"{out}/{self.layer.name}")
        if isinstance(y, list):
            raise UnsupportedOpError(f"{self.name}: the wrapped layer must have one output")
        g.node("Shape", [x], f"{out}/in_shape")
        g.node("Slice", [f"{out}/in_shape", g.const(f"{out}/zero", _i64([0])), g.const(f"{out}/two", _i64([2]))],
               f"{out}/batch_steps")
        g.node("Concat", [f"{out}/batch_steps", g.const(f"{out}/rest", _i64(inner_out[1:]))], f"{out}/shape",
               {"axis": 0})
        return g.node("Reshape", [y, f"{out}/shape"], out)


def _initial_states(layer, kwargs: dict, n: int, what: str):
    """The call's `initial_state` as a list of `n` symbolic tensors (None when not given);
    any other call argument is refused."""
    states = kwargs.pop("initial_state", None)
    if kwargs:
        raise EngineError(f"{layer.name}: unsupported call argument(s) {sorted(kwargs)}")
    if states is None:
        return None
    states = [states] if isinstance(states, KerasTensor) else list(states)
    if len(states) != n or not all(isinstance(t, KerasTensor) for t in states):
        raise EngineError(f"{layer.name}: initial_state must be {what}")
    return states
