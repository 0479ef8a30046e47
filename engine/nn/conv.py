"""Convolutions, channels_last as in Keras: Conv1D/2D/3D, DepthwiseConv1D/2D,
SeparableConv1D/2D, Conv1D/2D/3DTranspose. Kernels keep Keras's layouts ((k..., in/groups,
filters); depthwise (k..., in, multiplier); transposed (k..., filters, in)).

How each runs: 2-D convolutions are the engine's NHWC `Conv2D` op (activation fused); 1-D ones
are the same op over a height of 1; 3-D ones and the transposed ones are the ONNX `Conv` /
`ConvTranspose` ops (NCHW), with a transpose on each side. 'same' padding puts the odd pixel
at the end (TensorFlow's rule, which Keras follows); Conv1D's 'causal' pads the start. A
kernel an op reads in another layout is a constant at inference and a Reshape / Transpose
node of the trained weight in a training graph (weight_view).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import EngineError, ShapeError
from . import activations, initializers
from .base import Layer, check_data_format, int_tuple
from .core import emit_with_activation


def conv_out(n, k: int, s: int, d: int, padding: str):
    """Keras's output length of a conv/pool window (None stays None)."""
    if n is None:
        return None
    if padding == "same":
        return -(-n // s)
    ext = (k - 1) * d + 1
    return max((n - ext) // s + 1, 0) if padding == "valid" else (n - 1) // s + 1  # causal: like same


def _axes(g, out: str, axes) -> str:
    return g.const(f"{out}/axes", np.array(list(axes), np.int64))


def weight_view(g, name: str, out: str, shape=None, perm=None) -> str:
    """Weight `name` reshaped to `shape` or transposed by `perm`, as the kernel the op reads:
    a constant at inference; in a training graph (g.training) a Reshape / Transpose node on the
    trained weight, so its gradient reaches the layer's weight."""
    if g.training:
        if perm is not None:
            return g.node("Transpose", [name], out, {"perm": list(perm)})
        return g.node("Reshape", [name], out, {"shape": [int(d) for d in shape]})
    w = g.weights[name]
    return g.const(out, np.ascontiguousarray(w.transpose(perm)) if perm is not None else w.reshape(shape))


def to_channels_first(g, x: str, rank: int, out: str) -> str:
    return g.node("Transpose", [x], out, {"perm": [0, rank + 1] + list(range(1, rank + 1))})


def to_channels_last(g, x: str, rank: int, out: str) -> str:
    return g.node("Transpose", [x], out, {"perm": [0] + list(range(2, rank + 2)) + [1]})


class _Conv(Layer):
    rank = 2
    causal_ok = False  # Conv1D only

    def __init__(self, filters: Optional[int], kernel_size, strides=1, padding: str = "valid",
                 data_format: Optional[str] = None, dilation_rate=1, groups: int = 1, activation=None,
                 use_bias: bool = True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, **kw):
        super().__init__(**kw)
        check_data_format(data_format, self.name)
        allowed = ("valid", "same", "causal") if self.causal_ok else ("valid", "same")
        if padding not in allowed:
            raise EngineError(f"{self.name}: padding must be one of {allowed}, got {padding!r}")
        if filters is not None and (isinstance(filters, bool) or not isinstance(filters, int) or filters < 1):
            raise EngineError(f"{self.name}: filters must be a positive int, got {filters!r}")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise EngineError(f"{self.name}: groups must be a positive int, got {groups!r}")
        self.filters, self.padding, self.groups, self.use_bias = filters, padding, groups, use_bias
        self.kernel_size = int_tuple(kernel_size, self.rank, f"{self.name}: kernel_size")
        self.strides = int_tuple(strides, self.rank, f"{self.name}: strides")
        self.dilation_rate = int_tuple(dilation_rate, self.rank, f"{self.name}: dilation_rate")
        self.activation = activations.get(activation, self.name)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.regularizers = (kernel_regularizer, bias_regularizer, kernel_constraint, bias_constraint)

    def _channels(self, input_shape) -> int:
        if len(input_shape) != self.rank + 2:
            raise ShapeError(f"{self.name}: expected a {self.rank + 2}-D channels_last input, got {input_shape}")
        c = input_shape[-1]
        if c is None:
            raise ShapeError(f"{self.name}: the channel dim must be known, got {input_shape}")
        return c

    def build(self, input_shape):
        c = self._channels(input_shape)
        if c % self.groups or self.filters % self.groups:
            raise ShapeError(f"{self.name}: channels ({c}) and filters ({self.filters}) must be divisible "
                             f"by groups ({self.groups})")
        named = [("kernel", self.kernel_size + (c // self.groups, self.filters), self.kernel_initializer)]
        if self.use_bias:
            named.append(("bias", (self.filters,), self.bias_initializer))
        self._create(named)

    def _out_channels(self) -> int:
        return self.filters

    def compute_output_shape(self, input_shape):
        self._channels(input_shape)
        spatial = [conv_out(n, k, s, d, self.padding) for n, k, s, d in
                   zip(input_shape[1:-1], self.kernel_size, self.strides, self.dilation_rate)]
        if any(n == 0 for n in spatial):
            raise ShapeError(f"{self.name}: input {input_shape} is smaller than the kernel {self.kernel_size}")
        return (input_shape[0], *spatial, self._out_channels())

    # -- emission --------------------------------------------------------------------------
    def _conv2d_attrs(self, strides, dilations, padding, groups):
        return {"strides": list(strides), "padding": padding, "dilations": list(dilations), "groups": groups}

    def emit(self, g, x, out):
        refs = self._weight_refs(g)
        return self._emit_conv(g, x, out, refs[0], refs[1] if self.use_bias else None, self.groups,
                               self.kernel_size, self.activation)

    def _emit_conv(self, g, x, out, kernel: str, bias: Optional[str], groups: int, ksize, act) -> str:
        """One convolution of this layer's geometry with `kernel` (Keras layout)."""
        ins = [kernel] + ([bias] if bias else [])
        if self.rank == 2:
            return emit_with_activation(g, "Conv2D", [x] + ins, out,
                                        self._conv2d_attrs(self.strides, self.dilation_rate, self.padding, groups), act)
        if self.rank == 1:  # a Conv2D over a height of 1
            padding = self.padding
            if padding == "causal":
                pad = (ksize[0] - 1) * self.dilation_rate[0]
                pads = g.const(f"{out}/pads", np.array([0, pad, 0, 0, 0, 0], np.int64))
                x = g.node("Pad", [x, pads], f"{out}/causal")
                padding = "valid"
            x4 = g.node("Unsqueeze", [x, _axes(g, f"{out}/h", [1])], f"{out}/nhwc")
            if g.training:  # the kernel may itself be a node (a depthwise conv's grouped kernel)
                k4 = g.node("Unsqueeze", [kernel, _axes(g, f"{out}/kh", [0])], f"{out}/kernel2d")
            else:
                k4 = g.const(f"{out}/kernel2d", g.weights[kernel].reshape((1,) + g.weights[kernel].shape))
            attrs = self._conv2d_attrs((1,) + self.strides, (1,) + self.dilation_rate, padding, groups)
            y4 = emit_with_activation(g, "Conv2D", [x4, k4] + ins[1:], f"{out}/conv2d", attrs, act)
            return g.node("Squeeze", [y4, _axes(g, f"{out}/sq", [1])], out)
        # 3-D: ONNX Conv on NCDHW
        xc = to_channels_first(g, x, 3, f"{out}/ncdhw")
        wc = weight_view(g, kernel, f"{out}/oidhw", perm=(4, 3, 0, 1, 2))
        attrs = {"strides": list(self.strides), "dilations": list(self.dilation_rate), "group": groups,
                 "kernel_shape": list(ksize), "auto_pad": "SAME_UPPER" if self.padding == "same" else "VALID"}
        yc = g.node("Conv", [xc, wc] + ([bias] if bias else []), f"{out}/conv", attrs)
        y = to_channels_last(g, yc, 3, f"{out}/ndhwc" if not activations.is_linear(act) else out)
        return y if activations.is_linear(act) else activations.emit(g, y, out, act)


class Conv1D(_Conv):
    """Keras Conv1D on (batch, steps, channels); padding 'valid', 'same' or 'causal'."""
    rank = 1
    causal_ok = True


class Conv2D(_Conv):
    """Keras Conv2D on (batch, height, width, channels).

    >>> Conv2D(32, (3, 3), activation="relu", padding="same")
    """
    rank = 2

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=True, **kw):
        super().__init__(filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
                         activation, use_bias, **kw)


class Conv3D(_Conv):
    rank = 3

    def __init__(self, filters, kernel_size, strides=(1, 1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1, 1), groups=1, activation=None, use_bias=True, **kw):
        super().__init__(filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
                         activation, use_bias, **kw)


class _DepthwiseConv(_Conv):
    """Depthwise: a (k..., 1, in·multiplier) grouped convolution with groups = in."""

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier: int = 1, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, bias_regularizer=None,
                 depthwise_constraint=None, bias_constraint=None, **kw):
        super().__init__(None, kernel_size, strides, padding, data_format, dilation_rate, 1, activation, use_bias,
                         depthwise_initializer, bias_initializer, depthwise_regularizer, bias_regularizer,
                         depthwise_constraint, bias_constraint, **kw)
        if isinstance(depth_multiplier, bool) or not isinstance(depth_multiplier, int) or depth_multiplier < 1:
            raise EngineError(f"{self.name}: depth_multiplier must be a positive int, got {depth_multiplier!r}")
        self.depth_multiplier = depth_multiplier

    def build(self, input_shape):
        self.in_channels = c = self._channels(input_shape)
        named = [("depthwise_kernel", self.kernel_size + (c, self.depth_multiplier), self.kernel_initializer)]
        if self.use_bias:
            named.append(("bias", (c * self.depth_multiplier,), self.bias_initializer))
        self._create(named)

    def _out_channels(self) -> int:
        return self.in_channels * self.depth_multiplier

    def emit(self, g, x, out):
        refs = self._weight_refs(g)
        return self._emit_conv(g, x, out, self._grouped_kernel(g, refs[0], out), refs[1] if self.use_bias else None,
                               self.in_channels, self.kernel_size, self.activation)

    def _grouped_kernel(self, g, ref: str, out: str) -> str:
        w = g.weights[ref]  # (k..., in, mult) -> (k..., 1, in·mult): output channel c·mult + m
        return weight_view(g, ref, f"{out}/grouped_kernel", w.shape[:-2] + (1, w.shape[-2] * w.shape[-1]))


class DepthwiseConv1D(_DepthwiseConv):
    rank = 1


class DepthwiseConv2D(_DepthwiseConv):
    rank = 2

    def __init__(self, kernel_size, strides=(1, 1), padding="valid", depth_multiplier=1, data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True, **kw):
        super().__init__(kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate, activation,
                         use_bias, **kw)


class _SeparableConv(_DepthwiseConv):
    """A depthwise convolution (no bias), then the 1×1 pointwise one with the bias and activation
    (a Dense over the channel axis)."""

    def __init__(self, filters: int, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 depth_multiplier: int = 1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 pointwise_initializer="glorot_uniform", bias_initializer="zeros", depthwise_regularizer=None,
                 pointwise_regularizer=None, bias_regularizer=None, depthwise_constraint=None,
                 pointwise_constraint=None, bias_constraint=None, **kw):
        super().__init__(kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate, activation,
                         use_bias, depthwise_initializer, bias_initializer, depthwise_regularizer, bias_regularizer,
                         depthwise_constraint, bias_constraint, **kw)
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise EngineError(f"{self.name}: filters must be a positive int, got {filters!r}")
        self.filters = filters
        self.pointwise_initializer = initializers.get(pointwise_initializer)

    def build(self, input_shape):
        self.in_channels = c = self._channels(input_shape)
        m = self.depth_multiplier
        named = [("depthwise_kernel", self.kernel_size + (c, m), self.kernel_initializer),
                 ("pointwise_kernel", (1,) * self.rank + (c * m, self.filters), self.pointwise_initializer)]
        if self.use_bias:
            named.append(("bias", (self.filters,), self.bias_initializer))
        self._create(named)

    def _out_channels(self) -> int:
        return self.filters

    def emit(self, g, x, out):
        refs = self._weight_refs(g)
        depth = self._emit_conv(g, x, f"{out}/depthwise", self._grouped_kernel(g, refs[0], out), None,
                                self.in_channels, self.kernel_size, activations.Act("linear"))
        kernel = weight_view(g, refs[1], f"{out}/pointwise_matrix", g.weights[refs[1]].shape[-2:])
        return emit_with_activation(g, "Dense", [depth, kernel] + refs[2:], out, {}, self.activation)


class SeparableConv1D(_SeparableConv):
    rank = 1


class SeparableConv2D(_SeparableConv):
    rank = 2

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), depth_multiplier=1, activation=None, use_bias=True, **kw):
        super().__init__(filters, kernel_size, strides, padding, data_format, dilation_rate, depth_multiplier,
                         activation, use_bias, **kw)


def transpose_pads(n_k: int, s: int, d: int, padding: str, output_padding: Optional[int]) -> tuple:
    """(crop at the start, crop at the end) of the full transposed convolution, whose length
    is (n - 1)·s + k_eff, as Keras computes them (its JAX/TensorFlow rule); a negative crop at
    the end grows the output there."""
    k = (n_k - 1) * d + 1
    if padding == "valid":
        op = max(k, s) - k if output_padding is None else output_padding
        left, right = k - 1, k - 1 + op
    else:
        pad_len = s + k - 2 if output_padding is None else k + k % 2 - 2 + output_padding
        left = min(pad_len // 2 + pad_len % 2, k - 1)
        right = pad_len - left
    return k - 1 - left, k - 1 - right


class _ConvTranspose(_Conv):
    """Keras ConvNDTranspose: kernel (k..., filters, in); ONNX ConvTranspose between transposes."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, **kw):
        super().__init__(filters, kernel_size, strides, padding, data_format, dilation_rate, 1, activation,
                         use_bias, **kw)
        self.output_padding = None if output_padding is None else int_tuple(
            output_padding, self.rank, f"{self.name}: output_padding", minimum=0)
        for i, s in enumerate(self.strides):
            if self.output_padding is not None and self.output_padding[i] >= s:
                raise EngineError(f"{self.name}: output_padding {self.output_padding} must be smaller than "
                                  f"strides {self.strides}")

    def build(self, input_shape):
        c = self._channels(input_shape)
        named = [("kernel", self.kernel_size + (self.filters, c), self.kernel_initializer)]
        if self.use_bias:
            named.append(("bias", (self.filters,), self.bias_initializer))
        self._create(named)

    def _crops(self) -> list:
        ops = self.output_padding or (None,) * self.rank
        return [transpose_pads(k, s, d, self.padding, op)
                for k, s, d, op in zip(self.kernel_size, self.strides, self.dilation_rate, ops)]

    def compute_output_shape(self, input_shape):
        self._channels(input_shape)
        spatial = []
        for n, k, s, d, (a, b) in zip(input_shape[1:-1], self.kernel_size, self.strides, self.dilation_rate,
                                      self._crops()):
            spatial.append(None if n is None else (n - 1) * s + (k - 1) * d + 1 - a - b)
        return (input_shape[0], *spatial, self.filters)

    def emit(self, g, x, out):
        refs = self._weight_refs(g)
        r = self.rank
        xc = to_channels_first(g, x, r, f"{out}/ncx")
        # (k..., out, in) -> ONNX (in, out, k...)
        wc = weight_view(g, refs[0], f"{out}/iok", perm=(r + 1, r, *range(r)))
        crops = self._crops()
        attrs = {"strides": list(self.strides), "dilations": list(self.dilation_rate),
                 "kernel_shape": list(self.kernel_size),
                 "pads": [a for a, _ in crops] + [max(b, 0) for _, b in crops],
                 "output_padding": [max(-b, 0) for _, b in crops]}
        yc = g.node("ConvTranspose", [xc, wc] + ([refs[1]] if self.use_bias else []), f"{out}/conv", attrs)
        linear = activations.is_linear(self.activation)
        y = to_channels_last(g, yc, r, out if linear else f"{out}/nhwc")
        return y if linear else activations.emit(g, y, out, self.activation)


class Conv1DTranspose(_ConvTranspose):
    rank = 1


class Conv2DTranspose(_ConvTranspose):
    rank = 2

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", output_padding=None, data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True, **kw):
        super().__init__(filters, kernel_size, strides, padding, output_padding, data_format, dilation_rate,
                         activation, use_bias, **kw)


class Conv3DTranspose(_ConvTranspose):
    rank = 3

    def __init__(self, filters, kernel_size, strides=(1, 1, 1), padding="valid", output_padding=None,
                 data_format=None, dilation_rate=(1, 1, 1), activation=None, use_bias=True, **kw):
        super().__init__(filters, kernel_size, strides, padding, output_padding, data_format, dilation_rate,
                         activation, use_bias, **kw)


__all__ = ["Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
           "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "conv_out"]
