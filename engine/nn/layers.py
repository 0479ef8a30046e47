"""Keras-style layers. Each layer creates its weights (Keras's order and layouts: Conv2D
kernel HWIO, Dense kernel (in, out)), computes its output shape, and emits graph nodes."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Optional

import numpy as np

from ..errors import EngineError, ShapeError
from ..graph import Node
from ..ops import get_op
from ..ops.registry import Tensor
from ..ops.activations import ACTIVATIONS
from . import initializers
from .tensor import KerasTensor

_name_counts: dict[str, itertools.count] = defaultdict(itertools.count)

# Incremented whenever any layer's weights change: a model compares it with the value it saw
# when it built its runtime, and only then looks at its own layers' versions.
_weights_epoch = [0]


def _bump_weights_epoch() -> None:
    _weights_epoch[0] += 1


def weights_epoch() -> int:
    return _weights_epoch[0]


def _auto_name(base: str) -> str:
    n = next(_name_counts[base])
    return base if n == 0 else f"{base}_{n}"


def _snake(name: str) -> str:
    out = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return out.replace("2_d", "2d").replace("1_d", "1d")


def _pair(v, what):
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    if len(v) != 2 or not all(isinstance(i, int) and i > 0 for i in v):
        raise EngineError(f"{what} must be a positive int or a pair of them, got {v!r}")
    return v


def _check_activation(activation, layer):
    if activation is not None and activation != "softmax" and activation not in ACTIVATIONS:
        known = sorted(k for k in ACTIVATIONS if k) + ["softmax"]
        raise EngineError(f"{layer}: unknown activation {activation!r}; known: {known}")
    return activation


class GraphBuilder:
    """Collects the nodes and weights that layers emit."""

    def __init__(self):
        self.nodes: list[Node] = []
        self.weights: dict[str, np.ndarray] = {}

    def node(self, op: str, inputs: list[str], output: str, attrs: Optional[dict] = None,
             name: Optional[str] = None) -> str:
        self.nodes.append(Node(op, inputs, [output], attrs or {}, name or output))
        return output


class Layer:
    """Base class: subclasses define build(), output_shape() and emit()."""

    weight_names: tuple = ()

    def __init__(self, name: Optional[str] = None, input_shape=None, trainable: bool = True,
                 dtype=None, **unsupported):
        if unsupported:
            raise EngineError(f"{type(self).__name__}: unsupported argument(s) "
                              f"{sorted(unsupported)}")
        self.name = name or _auto_name(_snake(type(self).__name__))
        self.input_shape_arg = None if input_shape is None else (None,) + tuple(
            (input_shape,) if isinstance(input_shape, int) else input_shape)
        self.trainable = trainable
        self._weights: list[np.ndarray] = []
        self.weights_version = 0  # bumped on every change, so models holding a plan rebuild it
        self.built = False
        self.input_shape: Optional[tuple] = None
        self.output_shape: Optional[tuple] = None

    # -- subclass API -------------------------------------------------------------------
    def build(self, input_shape: tuple) -> None:
        """Create weights for this input shape (batch dim is None)."""

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def emit(self, g: GraphBuilder, x: str, out: str) -> str:
        """Add this layer's nodes reading value `x`; the result is the value named `out`
        (the layer's name, or a derived one when a shared layer is called again)."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------
    def __call__(self, x: KerasTensor) -> KerasTensor:
        if not isinstance(x, KerasTensor):
            raise EngineError(f"{self.name}: call a layer on a symbolic tensor from Input() "
                              f"(got {type(x).__name__}); to run a model use model.predict(x)")
        self._build_for(x.shape)
        return KerasTensor(self.output_shape, self, (x,), self.name)

    def _build_for(self, input_shape: tuple) -> None:
        if self.built:
            if tuple(input_shape[1:]) != tuple(self.input_shape[1:]):
                raise ShapeError(f"{self.name}: built for input shape {self.input_shape}, "
                                 f"called on {input_shape}")
            return
        self.build(tuple(input_shape))
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(self.compute_output_shape(tuple(input_shape)))
        self.built = True

    @property
    def weights(self) -> list[np.ndarray]:
        """The layer's weight arrays in Keras's order (read-only: change them with
        set_weights, which every model using this layer notices)."""
        return list(self._weights)

    @weights.setter
    def weights(self, arrays) -> None:
        frozen = []
        for w in arrays:
            w = np.array(w, dtype=np.float32, order="C", copy=True)
            w.flags.writeable = False
            frozen.append(w)
        self._weights = frozen
        self.weights_version += 1
        _bump_weights_epoch()

    def get_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self._weights]

    def set_weights(self, weights) -> None:
        self.weights = self._checked(weights)

    def _checked(self, weights) -> list:
        """`weights` if they fit this layer (count and shapes), else ShapeError."""
        weights = list(weights)
        if len(weights) != len(self._weights):
            raise ShapeError(f"{self.name}: expected {len(self._weights)} weight arrays "
                             f"{[w.shape for w in self._weights]}, got {len(weights)}")
        for i, (old, w) in enumerate(zip(self._weights, weights)):
            w = np.asarray(w)
            if w.shape != old.shape:
                raise ShapeError(f"{self.name}: weight {i} ({self.weight_names[i]}) must have "
                                 f"shape {old.shape}, got {w.shape}")
        return weights

    def count_params(self) -> int:
        return sum(w.size for w in self.weights)

    def _weight_refs(self, g: GraphBuilder) -> list[str]:
        refs = []
        for wname, w in zip(self.weight_names, self.weights):
            key = f"{self.name}/{wname}"
            g.weights[key] = w
            refs.append(key)
        return refs

    def _infer(self, op: str, input_shape: tuple, weight_shapes: list, attrs: dict) -> tuple:
        """Output shape from the op's own shape rule (batch None -> 1 -> None)."""
        concrete = tuple(1 if d is None else d for d in input_shape)
        node = Node(op, ["x"] + [f"w{i}" for i in range(len(weight_shapes))], ["y"], attrs,
                    self.name)
        ins = [Tensor(concrete, "float32")] + [Tensor(tuple(w), "float32") for w in weight_shapes]
        out = get_op(op).infer(node, ins)[0].shape
        return (input_shape[0],) + tuple(out[1:])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"


def _emit_with_activation(g, op, inputs, out, attrs, activation):
    """A Dense/Conv2D node with its activation fused; softmax needs its own node."""
    if activation == "softmax":
        pre = g.node(op, inputs, f"{out}/linear", attrs, out)
        return g.node("Softmax", [pre], out, {"axis": -1}, f"{out}/softmax")
    return g.node(op, inputs, out, {**attrs, "activation": activation}, out)


class Dense(Layer):
    weight_names = ("kernel", "bias")

    def __init__(self, units: int, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kw):
        super().__init__(**kw)
        if not isinstance(units, int) or units < 1:
            raise EngineError(f"Dense: units must be a positive int, got {units!r}")
        self.units, self.use_bias = units, use_bias
        self.activation = _check_activation(activation, self.name)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ShapeError(f"{self.name}: the last input dim must be known, got {input_shape}")
        kernel = self.kernel_initializer((input_shape[-1], self.units))
        self.weights = [kernel, self.bias_initializer((self.units,))] if self.use_bias else [kernel]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def emit(self, g, x, out):
        return _emit_with_activation(g, "Dense", [x] + self._weight_refs(g), out, {}, self.activation)


class Conv2D(Layer):
    weight_names = ("kernel", "bias")

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding: str = "valid",
                 data_format: Optional[str] = None, dilation_rate=(1, 1), groups: int = 1,
                 activation=None, use_bias: bool = True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kw):
        super().__init__(**kw)
        if data_format not in (None, "channels_last"):
            raise EngineError(f"{self.name}: only data_format='channels_last' (NHWC) is supported")
        if padding not in ("valid", "same"):
            raise EngineError(f"{self.name}: padding must be 'valid' or 'same', got {padding!r}")
        if not isinstance(filters, int) or filters < 1:
            raise EngineError(f"{self.name}: filters must be a positive int, got {filters!r}")
        self.filters, self.padding, self.groups, self.use_bias = filters, padding, groups, use_bias
        self.kernel_size = _pair(kernel_size, f"{self.name}: kernel_size")
        self.strides = _pair(strides, f"{self.name}: strides")
        self.dilation_rate = _pair(dilation_rate, f"{self.name}: dilation_rate")
        self.activation = _check_activation(activation, self.name)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def _attrs(self):
        return {"strides": list(self.strides), "padding": self.padding,
                "dilations": list(self.dilation_rate), "groups": self.groups}

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ShapeError(f"{self.name}: expected input (batch, height, width, channels), "
                             f"got {input_shape}")
        c = input_shape[-1]
        if c % self.groups or self.filters % self.groups:
            raise ShapeError(f"{self.name}: channels ({c}) and filters ({self.filters}) must "
                             f"be divisible by groups ({self.groups})")
        kernel = self.kernel_initializer(self.kernel_size + (c // self.groups, self.filters))
        self.weights = [kernel, self.bias_initializer((self.filters,))] if self.use_bias else [kernel]

    def compute_output_shape(self, input_shape):
        return self._infer("Conv2D", input_shape, [w.shape for w in self.weights], self._attrs())

    def emit(self, g, x, out):
        return _emit_with_activation(g, "Conv2D", [x] + self._weight_refs(g), out, self._attrs(),
                                     self.activation)


class _Pooling2D(Layer):
    op = ""

    def __init__(self, pool_size=(2, 2), strides=None, padding: str = "valid",
                 data_format: Optional[str] = None, **kw):
        super().__init__(**kw)
        if data_format not in (None, "channels_last"):
            raise EngineError(f"{self.name}: only data_format='channels_last' (NHWC) is supported")
        if padding not in ("valid", "same"):
            raise EngineError(f"{self.name}: padding must be 'valid' or 'same', got {padding!r}")
        self.pool_size = _pair(pool_size, f"{self.name}: pool_size")
        self.strides = self.pool_size if strides is None else _pair(strides, f"{self.name}: strides")
        self.padding = padding

    def _attrs(self):
        return {"pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding}

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise ShapeError(f"{self.name}: expected input (batch, height, width, channels), "
                             f"got {input_shape}")
        return self._infer(self.op, input_shape, [], self._attrs())

    def emit(self, g, x, out):
        return g.node(self.op, [x], out, self._attrs())


class MaxPooling2D(_Pooling2D):
    op = "MaxPool2D"


class AveragePooling2D(_Pooling2D):
    op = "AvgPool2D"


class GlobalAveragePooling2D(Layer):
    def __init__(self, data_format: Optional[str] = None, keepdims: bool = False, **kw):
        super().__init__(**kw)
        if data_format not in (None, "channels_last"):
            raise EngineError(f"{self.name}: only data_format='channels_last' (NHWC) is supported")
        self.keepdims = keepdims

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise ShapeError(f"{self.name}: expected a 4-D NHWC input, got {input_shape}")
        n, _, _, c = input_shape
        return (n, 1, 1, c) if self.keepdims else (n, c)

    def emit(self, g, x, out):
        return g.node("GlobalAveragePool2D", [x], out, {"keepdims": self.keepdims})


class Flatten(Layer):
    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        return (input_shape[0], None if None in rest else math.prod(rest))

    def emit(self, g, x, out):
        return g.node("Flatten", [x], out, {"axis": 1})


class Reshape(Layer):
    """Reshape every sample to `target_shape` (batch axis excluded; one entry may be -1)."""

    def __init__(self, target_shape, **kw):
        super().__init__(**kw)
        target = (target_shape,) if isinstance(target_shape, int) else tuple(target_shape)
        if (not all(isinstance(d, int) and (d > 0 or d == -1) for d in target)
                or target.count(-1) > 1):
            raise EngineError(f"{self.name}: target_shape must be positive ints with at most one "
                              f"-1, got {target_shape!r}")
        self.target_shape = target

    def _attrs(self):
        return {"shape": [0, *self.target_shape]}  # 0: keep the batch dim as it is

    def compute_output_shape(self, input_shape):
        return self._infer("Reshape", input_shape, [], self._attrs())

    def emit(self, g, x, out):
        return g.node("Reshape", [x], out, self._attrs())


class Dropout(Layer):
    """Identity at inference (training arrives with the training issue)."""

    def __init__(self, rate: float, noise_shape=None, seed=None, **kw):
        super().__init__(**kw)
        if not 0 <= rate < 1:
            raise EngineError(f"{self.name}: rate must be in [0, 1), got {rate}")
        self.rate = rate

    def emit(self, g, x, out):
        return g.node("Dropout", [x], out, {"rate": self.rate})


class Activation(Layer):
    def __init__(self, activation, **kw):
        super().__init__(**kw)
        self.activation = _check_activation(activation, self.name)

    def emit(self, g, x, out):
        if self.activation == "softmax":
            return g.node("Softmax", [x], out, {"axis": -1})
        return g.node("Activation", [x], out, {"activation": self.activation})


class ReLU(Layer):
    def __init__(self, max_value=None, negative_slope: float = 0.0, threshold: float = 0.0, **kw):
        super().__init__(**kw)
        if threshold != 0.0:
            raise EngineError(f"{self.name}: threshold != 0 is not supported")
        if max_value is not None and negative_slope != 0.0:
            raise EngineError(f"{self.name}: max_value together with negative_slope is not supported")
        self.max_value, self.negative_slope = max_value, negative_slope

    def emit(self, g, x, out):
        if self.max_value is not None:
            return g.node("Clip", [x], out, {"min": 0.0, "max": float(self.max_value)})
        if self.negative_slope:
            return g.node("LeakyRelu", [x], out, {"alpha": float(self.negative_slope)})
        return g.node("Relu", [x], out)


class Softmax(Layer):
    def __init__(self, axis: int = -1, **kw):
        super().__init__(**kw)
        self.axis = axis

    def emit(self, g, x, out):
        return g.node("Softmax", [x], out, {"axis": self.axis})
