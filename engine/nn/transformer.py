"""Transformer blocks with keras_hub's arguments: TransformerEncoderLayer (self-attention and a
feed-forward network) and TransformerDecoderLayer (causal self-attention, optional
cross-attention over an encoder's outputs, feed-forward network).

Each is made of engine.nn layers (MultiHeadAttention with key_dim = hidden / num_heads,
LayerNormalization, Dense, Dropout), whose weights follow in keras_hub's order; residual
connections around every block, normalised after it (BERT, torch's norm_first=False) or
before it (normalize_first=True: GPT-2, torch's norm_first=True).

Masks follow keras_hub: `padding_mask` (B, S), or else the input's Keras mask, hides padded
keys; `attention_mask` (B, T, S) is ANDed in (True or nonzero: attend).
"""

from __future__ import annotations

from typing import Optional

from ..errors import EngineError, ShapeError
from . import activations
from .attention import MultiHeadAttention, check_tensor, tensor_call
from .base import Layer
from .core import Dense, Dropout
from .normalization import LayerNormalization


class _TransformerBlock(Layer):
    """What the encoder and decoder share: arguments, sublayers, residual blocks."""

    def __init__(self, intermediate_dim: int, num_heads: int, dropout: float = 0.0, activation="relu",
                 layer_norm_epsilon: float = 1e-5, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 normalize_first: bool = False, kernel_regularizer=None, bias_regularizer=None, **kw):
        super().__init__(**kw)
        for v, what in ((intermediate_dim, "intermediate_dim"), (num_heads, "num_heads")):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise EngineError(f"{self.name}: {what} must be a positive int, got {v!r}")
        if not 0 <= dropout < 1:
            raise EngineError(f"{self.name}: dropout must be in [0, 1), got {dropout!r}")
        self.intermediate_dim, self.num_heads, self.dropout = intermediate_dim, num_heads, float(dropout)
        self.activation = activations.get(activation, self.name)
        self.layer_norm_epsilon, self.normalize_first = float(layer_norm_epsilon), bool(normalize_first)
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer
        self.regularizers = (kernel_regularizer, bias_regularizer)

    def _hidden(self, shape, what: str) -> int:
        if len(shape) != 3 or shape[-1] is None:
            raise ShapeError(f"{self.name}: {what} must be (batch, seq, features) with known features, got {shape}")
        if shape[-1] < self.num_heads:
            raise ShapeError(f"{self.name}: {shape[-1]} features cannot be split into {self.num_heads} heads")
        return shape[-1]

    # sublayers named "<this layer>/<keras_hub's name>", so their weights are too
    def _attention(self, name: str, hidden: int) -> MultiHeadAttention:
        return MultiHeadAttention(self.num_heads, hidden // self.num_heads, dropout=self.dropout,
                                  kernel_initializer=self.kernel_initializer, bias_initializer=self.bias_initializer,
                                  name=f"{self.name}/{name}")

    def _norm(self, name: str) -> LayerNormalization:
        return LayerNormalization(epsilon=self.layer_norm_epsilon, name=f"{self.name}/{name}")

    def _feedforward(self, hidden: int) -> tuple:
        inits = {"kernel_initializer": self.kernel_initializer, "bias_initializer": self.bias_initializer}
        return (Dense(self.intermediate_dim, activation=self.activation,
                      name=f"{self.name}/feedforward_intermediate_dense", **inits),
                Dense(hidden, name=f"{self.name}/feedforward_output_dense", **inits),
                Dropout(self.dropout, name=f"{self.name}/feedforward_dropout"))

    def _residual_block(self, g, x: str, out: str, norm: LayerNormalization, body) -> str:
        """x + body(x), with `norm` applied to body's input (normalize_first) or to the sum."""
        h = norm.emit(g, x, f"{out}/norm") if self.normalize_first else x
        y = g.node("Add", [body(h), x], f"{out}/sum")
        return y if self.normalize_first else norm.emit(g, y, f"{out}/norm")

    def _ffn(self, g, x: str, out: str) -> str:
        inner, outer, drop = self._ffn_layers
        return drop.emit(g, outer.emit(g, inner.emit(g, x, f"{out}/intermediate"), f"{out}/output"), f"{out}/dropout")

    @staticmethod
    def _attend(g, attention, dropout, out, query, value, padding_mask, attention_mask, causal=False) -> str:
        y = attention.attend(g, out, query, value, key_masks=[padding_mask], attention_mask=attention_mask,
                             causal=causal)[0]
        return dropout.emit(g, y, f"{out}/dropout")


def _padding(layer, mask, x, what: str):
    """The explicit padding mask, else the sequence's Keras mask; checked to be (B, S)."""
    mask = x.mask if mask is None else mask
    check_tensor(layer, mask, what, (2,))
    return mask


class TransformerEncoderLayer(_TransformerBlock):
    """keras_hub's TransformerEncoder: self-attention, then a feed-forward network.

    >>> x = Input((None, 64))
    >>> y = TransformerEncoderLayer(intermediate_dim=256, num_heads=4)(x, padding_mask=mask)
    """

    def build(self, input_shape):
        hidden = self._hidden(input_shape[0], "the input")
        self.self_attention = self._attention("self_attention_layer", hidden)
        self.self_attention_norm = self._norm("self_attention_layer_norm")
        self.self_attention_dropout = Dropout(self.dropout, name=f"{self.name}/self_attention_dropout")
        self.feedforward_norm = self._norm("feedforward_layer_norm")
        self._ffn_layers = self._feedforward(hidden)
        self.self_attention._build_for([input_shape[0], input_shape[0]])
        self.self_attention_norm._build_for(input_shape[0])
        self.feedforward_norm._build_for(input_shape[0])
        self._ffn_layers[0]._build_for(input_shape[0])
        self._ffn_layers[1]._build_for(input_shape[0][:-1] + (self.intermediate_dim,))
        self._sublayers = [self.self_attention, self.self_attention_norm, self.feedforward_norm,
                           self._ffn_layers[0], self._ffn_layers[1]]

    def __call__(self, inputs, padding_mask=None, attention_mask=None, training=None):
        check_tensor(self, inputs, "inputs", required=True)
        padding_mask = _padding(self, padding_mask, inputs, "padding_mask")
        check_tensor(self, attention_mask, "attention_mask", (3,))
        extra = {} if attention_mask is None else {"attention_mask": attention_mask}
        return tensor_call(self, [inputs], [padding_mask], extra, {}, [inputs.shape], inputs.mask)

    def emit_call(self, g, call, name_of, out):
        x = name_of(call.inputs[0])
        pad = None if call.masks[0] is None else name_of(call.masks[0])
        am = call.extra.get("attention_mask")
        am = None if am is None else name_of(am)

        def attend(h):
            return self._attend(g, self.self_attention, self.self_attention_dropout, f"{out}/self_attention", h, h,
                                pad, am)

        x = self._residual_block(g, x, f"{out}/attention_block", self.self_attention_norm, attend)
        y = self._residual_block(g, x, f"{out}/feedforward_block", self.feedforward_norm,
                                 lambda h: self._ffn(g, h, f"{out}/feedforward"))
        return [g.node("Identity", [y], out)]


class TransformerDecoderLayer(_TransformerBlock):
    """keras_hub's TransformerDecoder: causal self-attention, cross-attention over the encoder's
    outputs when called with them (the first call decides, as in keras_hub), then a
    feed-forward network.

    >>> y = TransformerDecoderLayer(intermediate_dim=256, num_heads=4)(target, memory,
    ...                                                                 encoder_padding_mask=source_mask)
    """

    def build(self, input_shape):
        hidden = self._hidden(input_shape[0], "decoder_sequence")
        self.self_attention = self._attention("self_attention", hidden)
        self.self_attention_norm = self._norm("self_attention_layer_norm")
        self.self_attention_dropout = Dropout(self.dropout, name=f"{self.name}/self_attention_dropout")
        self.self_attention._build_for([input_shape[0], input_shape[0]])
        self.self_attention_norm._build_for(input_shape[0])
        self._sublayers = [self.self_attention, self.self_attention_norm]
        self.cross_attention: Optional[MultiHeadAttention] = None
        if len(input_shape) > 1:
            self._hidden(input_shape[1], "encoder_sequence")
            self.cross_attention = self._attention("cross_attention", hidden)
            self.cross_attention_norm = self._norm("cross_attention_layer_norm")
            self.cross_attention_dropout = Dropout(self.dropout, name=f"{self.name}/cross_attention_dropout")
            self.cross_attention._build_for([input_shape[0], input_shape[1]])
            self.cross_attention_norm._build_for(input_shape[0])
            self._sublayers += [self.cross_attention, self.cross_attention_norm]
        self._ffn_layers = self._feedforward(hidden)
        self.feedforward_norm = self._norm("feedforward_layer_norm")
        self._ffn_layers[0]._build_for(input_shape[0])
        self._ffn_layers[1]._build_for(input_shape[0][:-1] + (self.intermediate_dim,))
        self.feedforward_norm._build_for(input_shape[0])
        self._sublayers += [self._ffn_layers[0], self._ffn_layers[1], self.feedforward_norm]

    def __call__(self, decoder_sequence, encoder_sequence=None, decoder_padding_mask=None,
                 decoder_attention_mask=None, encoder_padding_mask=None, encoder_attention_mask=None,
                 use_causal_mask: bool = True, training=None):
        check_tensor(self, decoder_sequence, "decoder_sequence", required=True)
        check_tensor(self, encoder_sequence, "encoder_sequence")
        if self.built and (encoder_sequence is None) != (self.cross_attention is None):
            raise EngineError(f"{self.name}: built {'with' if self.cross_attention else 'without'} cross-attention; "
                              "call it with the same arguments every time (decoder_sequence[, encoder_sequence])")
        inputs = [decoder_sequence] + ([encoder_sequence] if encoder_sequence is not None else [])
        masks = [_padding(self, decoder_padding_mask, decoder_sequence, "decoder_padding_mask")]
        if encoder_sequence is not None:
            masks.append(_padding(self, encoder_padding_mask, encoder_sequence, "encoder_padding_mask"))
        elif encoder_padding_mask is not None or encoder_attention_mask is not None:
            raise EngineError(f"{self.name}: encoder masks need an encoder_sequence")
        extra = {}
        for key, m in (("decoder_attention_mask", decoder_attention_mask),
                       ("encoder_attention_mask", encoder_attention_mask)):
            check_tensor(self, m, key, (3,))
            if m is not None:
                extra[key] = m
        return tensor_call(self, inputs, masks, extra, {"causal": bool(use_causal_mask)}, [decoder_sequence.shape],
                           decoder_sequence.mask)

    def emit_call(self, g, call, name_of, out):
        def name(t):
            return None if t is None else name_of(t)

        x = name_of(call.inputs[0])
        memory = name(call.inputs[1]) if len(call.inputs) > 1 else None
        pads = [name(m) for m in call.masks] + [None]
        self_mask, cross_mask = (name(call.extra.get(k)) for k in ("decoder_attention_mask", "encoder_attention_mask"))

        def self_attend(h):
            return self._attend(g, self.self_attention, self.self_attention_dropout, f"{out}/self_attention", h, h,
                                pads[0], self_mask, causal=call.options["causal"])

        def cross_attend(h):
            return self._attend(g, self.cross_attention, self.cross_attention_dropout, f"{out}/cross_attention", h,
                                memory, pads[1], cross_mask)

        x = self._residual_block(g, x, f"{out}/self_attention_block", self.self_attention_norm, self_attend)
        if memory is not None:
            x = self._residual_block(g, x, f"{out}/cross_attention_block", self.cross_attention_norm, cross_attend)
        y = self._residual_block(g, x, f"{out}/feedforward_block", self.feedforward_norm,
                                 lambda h: self._ffn(g, h, f"{out}/feedforward"))
        return [g.node("Identity", [y], out)]


__all__ = ["TransformerEncoderLayer", "TransformerDecoderLayer"]
