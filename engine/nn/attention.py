"""MultiHeadAttention, Keras 3's layer: Dense projections of query, key and value, one fused
`Attention` node in the 3-D (batch, seq, heads·dim) layout (engine/ops/attention.py: no head
transposes), and the output projection.

Weights keep Keras's names, layouts and order: query/kernel (dim, heads, key_dim), query/bias
(heads, key_dim), key, [gate], value (heads, value_dim), attention_output/kernel (heads,
value_dim, *output_shape), attention_output/bias (*output_shape). The graph reshapes them into
2-D Dense kernels with Reshape nodes, which constant folding removes at inference and which
carry the gradients back to Keras's layouts in training graphs.

Masks follow Keras: the value's and key's masks (given, or the tensors' Keras masks) hide keys,
`attention_mask` ((T, S), (B, T, S) or (B, heads, T, S); True or nonzero: attend),
`use_causal_mask` and `sliding_window` are ANDed in, and the query's mask empties its rows. A
row left with no key gets zero weights, as Keras's masked softmax gives, so its output is the
output projection's bias (Keras 3.15 computes that only with dropout or attention scores; its
fused path otherwise averages every value for such a row). Keys are hidden by the Attention
node's boolean mask and its causal and window frontiers; masked query rows are zeroed before
the output projection, which gives the same numbers without a mask over every key. Unlike
Keras 3.15, which reads only the query's own Keras mask, an explicit `query_mask` is honoured.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..dtypes import code
from ..errors import EngineError, ShapeError, UnsupportedOpError
from . import activations, initializers
from .base import Call, Layer
from .core import dropout_seed, emit_with_activation
from .tensor import KerasTensor


def _positive(v, what: str, where: str, optional: bool = False):
    if optional and v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise EngineError(f"{where}: {what} must be a positive int{' or None' if optional else ''}, got {v!r}")
    return v


def tensor_call(layer: Layer, inputs: list, masks: list, extra: dict, options: dict, out_shapes: list,
                out_mask=None):
    """A call of `layer` on several named tensors (query, value, key, masks) with per-call
    `options` (causal, scores, ...) that its emit_call reads from the Call; returns the output
    tensor, or the list of them."""
    layer._build_for([t.shape for t in inputs])
    call = Call(layer, inputs, False, masks, [t.mask for t in inputs], extra)
    call.options = options
    call.outputs = [KerasTensor(s, "float32", call, i, layer.name) for i, s in enumerate(out_shapes)]
    call.outputs[0].mask = out_mask
    layer.output_shape = tuple(out_shapes[0]) if len(out_shapes) == 1 else [tuple(s) for s in out_shapes]
    return call.outputs if len(out_shapes) > 1 else call.outputs[0]


def check_tensor(layer: Layer, t, what: str, ranks: tuple = (), required: bool = False) -> None:
    """`t` is a symbolic tensor whose rank is one of `ranks` (any when empty), or None when
    not required."""
    if t is None:
        if required:
            raise EngineError(f"{layer.name}: {what} is required")
        return
    if not isinstance(t, KerasTensor):
        raise EngineError(f"{layer.name}: {what} must be a symbolic tensor (from Input() or a layer), "
                          f"got {type(t).__name__}")
    if ranks and t.ndim not in ranks:
        raise ShapeError(f"{layer.name}: {what} must have rank {' or '.join(map(str, ranks))}, got shape {t.shape}")


def as_bool(g, x: str, out: str) -> str:
    """A mask as bool (Keras casts: nonzero means keep)."""
    return x if g.dtypes.get(x) == "bool" else g.node("Cast", [x], out, {"to": code("bool")})


def unsqueeze(g, x: str, axes: list, out: str) -> str:
    return g.node("Unsqueeze", [x, g.const(f"{out}/axes", np.array(axes, np.int64))], out) if axes else x


class MultiHeadAttention(Layer):
    """Keras MultiHeadAttention on (batch, seq, features) tensors.

    >>> x = Input((None, 64))
    >>> y = MultiHeadAttention(num_heads=4, key_dim=16)(x, x, use_causal_mask=True)
    """

    def __init__(self, num_heads: int, key_dim: int, value_dim: Optional[int] = None, dropout: float = 0.0,
                 use_bias: bool = True, output_shape=None, attention_axes=None, sliding_window: Optional[int] = None,
                 flash_attention=None, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 use_gate: bool = False, seed=None, **kw):
        super().__init__(**kw)
        self.num_heads = _positive(num_heads, "num_heads", self.name)
        self.key_dim = _positive(key_dim, "key_dim", self.name)
        self.value_dim = _positive(value_dim, "value_dim", self.name, optional=True) or self.key_dim
        if not 0 <= dropout < 1:
            raise EngineError(f"{self.name}: dropout must be in [0, 1), got {dropout!r}")
        self.dropout, self.use_bias, self.use_gate, self.seed = float(dropout), bool(use_bias), bool(use_gate), seed
        if output_shape is None or output_shape == []:
            self.out_dims = None
        else:
            dims = (output_shape,) if isinstance(output_shape, int) else tuple(output_shape)
            self.out_dims = tuple(_positive(d, "output_shape", self.name) for d in dims)
        self.attention_axes = attention_axes
        self.sliding_window = _positive(sliding_window, "sliding_window", self.name, optional=True)
        self.flash_attention = flash_attention  # a Keras backend choice: the engine picks its kernel itself
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.regularizers = (kernel_regularizer, bias_regularizer, kernel_constraint, bias_constraint)

    # -- weights ------------------------------------------------------------------------------
    def build(self, input_shape):
        query, value = input_shape[0], input_shape[1]
        key = input_shape[2] if len(input_shape) > 2 else value
        for what, s in (("query", query), ("value", value), ("key", key)):
            if len(s) != 3:
                raise UnsupportedOpError(f"{self.name}: {what} must be (batch, seq, features), got {s}; attention "
                                         "over several axes is not supported")
            if s[-1] is None:
                raise ShapeError(f"{self.name}: the last dim of {what} must be known, got {s}")
        if None not in (value[1], key[1]) and value[1] != key[1]:
            raise ShapeError(f"{self.name}: key and value must have the same length, got {key} and {value}")
        axes = self.attention_axes
        axes = None if axes is None else tuple([axes] if isinstance(axes, int) else axes)
        if axes is not None and tuple(a % 3 for a in axes) != (1,):  # Keras counts in the projected rank (4)
            raise UnsupportedOpError(f"{self.name}: attention_axes={self.attention_axes!r} is not supported; only "
                                     "the default (the sequence axis) is")
        H, dk, dv = self.num_heads, self.key_dim, self.value_dim
        ki, bi = self.kernel_initializer, self.bias_initializer
        self.out_shape = self.out_dims or (query[-1],)
        named = []
        for name, rows, dim in (("query", query[-1], dk), ("key", key[-1], dk)) + \
                ((("gate", query[-1], dv),) if self.use_gate else ()) + (("value", value[-1], dv),):
            named.append((f"{name}/kernel", (rows, H, dim), ki))
            if self.use_bias:
                named.append((f"{name}/bias", (H, dim), bi))
        named.append(("attention_output/kernel", (H, dv) + self.out_shape, ki))
        if self.use_bias:
            named.append(("attention_output/bias", self.out_shape, bi))
        self._create(named)

    # -- calls --------------------------------------------------------------------------------
    def __call__(self, query, value, key=None, query_mask=None, value_mask=None, key_mask=None, attention_mask=None,
                 return_attention_scores: bool = False, training=None, use_causal_mask: bool = False):
        for what, t in (("query", query), ("value", value), ("key", key)):
            check_tensor(self, t, what, required=what != "key")
        query_mask = query.mask if query_mask is None else query_mask
        value_mask = value.mask if value_mask is None else value_mask
        key_mask = key.mask if key_mask is None and key is not None else key_mask
        for what, m in (("query_mask", query_mask), ("value_mask", value_mask), ("key_mask", key_mask)):
            check_tensor(self, m, what, (2,))
        check_tensor(self, attention_mask, "attention_mask", (2, 3, 4))
        inputs = [query, value] + ([key] if key is not None else [])
        extra = {} if attention_mask is None else {"attention_mask": attention_mask}
        options = {"causal": bool(use_causal_mask), "scores": bool(return_attention_scores)}
        out = tuple(query.shape[:2]) + (self.out_dims or (query.shape[-1],))
        shapes = [out] + ([(query.shape[0], self.num_heads, query.shape[1], value.shape[1])]
                          if return_attention_scores else [])
        return tensor_call(self, inputs, [query_mask, value_mask, key_mask], extra, options, shapes, query_mask)

    def emit_call(self, g, call, name_of, out):
        def name(t):
            return None if t is None else name_of(t)

        q, v = name_of(call.inputs[0]), name_of(call.inputs[1])
        k = name_of(call.inputs[2]) if len(call.inputs) > 2 else v
        qm, vm, km = (name(m) for m in call.masks)
        am = call.extra.get("attention_mask")
        return self.attend(g, out, q, v, k, query_mask=qm, key_masks=[vm, km], attention_mask=name(am),
                           mask_rank=0 if am is None else am.ndim, **call.options)

    def attend(self, g, out: str, query: str, value: str, key: Optional[str] = None, query_mask=None,
               key_masks=(), attention_mask=None, mask_rank: int = 3, causal: bool = False,
               scores: bool = False) -> list:
        """The layer's nodes on graph values (masks as described above; key_masks are (B, S)
        masks of keys); returns [output] or [output, attention scores (B, heads, T, S)]. The
        transformer layers call this directly."""
        w = dict(zip(self.weight_names, self._weight_refs(g)))
        H, dv = self.num_heads, self.value_dim
        q = self._project(g, w, "query", query, out)
        k = self._project(g, w, "key", key or value, out)
        v = self._project(g, w, "value", value, out)
        mask = self._key_mask(g, out, key_masks, attention_mask, mask_rank)
        attrs = {"q_num_heads": H, "kv_num_heads": H, "scale": 1.0 / math.sqrt(self.key_dim)}
        if causal:
            attrs["is_causal"] = 1
        if self.sliding_window:  # Keras: |query - key| < sliding_window
            attrs["left_window_size"] = attrs["right_window_size"] = self.sliding_window - 1
        if scores:
            attrs["qk_matmul_output_mode"] = 3  # the softmax weights
        if g.training and self.dropout > 0:  # the attention weights' dropout (the training form's)
            attrs.update(dropout=self.dropout, seed=dropout_seed(self))
        outs = [f"{out}/attention"] + (["", "", f"{out}/scores"] if scores else [])
        g.node("Attention", [q, k, v] + ([mask] if mask else []), outs, attrs)
        y, weights = outs[0], outs[-1] if scores else None
        if query_mask is not None:
            keep = g.node("Cast", [as_bool(g, query_mask, f"{out}/query_mask_bool")], f"{out}/query_keep",
                          {"to": code("float32")})
            y = g.node("Mul", [y, unsqueeze(g, keep, [2], f"{out}/query_keep_rows")], f"{out}/attention_masked")
            if scores:
                rows = unsqueeze(g, keep, [1, 3], f"{out}/query_keep_scores")
                weights = g.node("Mul", [weights, rows], f"{out}/scores_masked")
        if self.use_gate:
            gate = self._project(g, w, "gate", query, out, activations.get("sigmoid", self.name))
            y = g.node("Mul", [y, gate], f"{out}/gated")
        flat = out if len(self.out_shape) == 1 else f"{out}/flat"
        y = self._project(g, w, "attention_output", y, out, rows=H * dv, name_out=flat)
        if flat != out:
            y = g.node("Reshape", [y, g.const(f"{out}/shape", np.array([0, 0, *self.out_shape], np.int64))], out)
        return [y] + ([weights] if scores else [])

    def _project(self, g, w: dict, name: str, x: str, out: str, act=None, rows: Optional[int] = None,
                 name_out: Optional[str] = None) -> str:
        """x · kernel + bias with Keras's kernel flattened to (rows, -1) (its input dims)."""
        kernel = w[f"{name}/kernel"]
        rows = rows or g.weights[kernel].shape[0]
        ins = [x, g.node("Reshape", [kernel, g.const(f"{out}/{name}/kernel_shape", np.array([rows, -1], np.int64))],
                         f"{out}/{name}/kernel2d")]
        if self.use_bias:
            ins.append(g.node("Reshape", [w[f"{name}/bias"], g.const(f"{out}/{name}/bias_shape",
                                                                    np.array([-1], np.int64))], f"{out}/{name}/bias1d"))
        return emit_with_activation(g, "Dense", ins, name_out or f"{out}/{name}", {}, act or activations.get(None, ""))

    @staticmethod
    def _key_mask(g, out: str, key_masks, attention_mask, rank: int) -> Optional[str]:
        """The AND of the (B, S) key masks and attention_mask as one bool mask the Attention
        node broadcasts: (B, 1, 1, S), (1, 1, T, S), (B, 1, T, S) or (B, heads, T, S)."""
        parts = [unsqueeze(g, as_bool(g, m, f"{out}/key_mask{i}_bool"), [1, 2], f"{out}/key_mask{i}")
                 for i, m in enumerate(key_masks) if m is not None]
        if attention_mask is not None:
            m = as_bool(g, attention_mask, f"{out}/attention_mask_bool")
            parts.append(unsqueeze(g, m, {2: [0, 1], 3: [1], 4: []}[rank], f"{out}/attention_mask4d"))
        mask = parts[0] if parts else None
        for i, p in enumerate(parts[1:]):
            mask = g.node("And", [mask, p], f"{out}/mask{i}")
        return mask


__all__ = ["MultiHeadAttention"]
