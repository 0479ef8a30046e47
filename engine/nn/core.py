"""Core layers: Dense, Activation, Embedding, Masking, Identity, and the layers that are the
identity at inference (Dropout and its spatial / noise variants; in training graphs they drop,
see Dropout)."""

from __future__ import annotations

import hashlib

import numpy as np

from ..dtypes import code
from ..errors import EngineError, ShapeError, UnsupportedOpError
from . import activations, initializers
from .base import Layer
from .ops import NotEqual


def emit_with_activation(g, op: str, inputs: list, out: str, attrs: dict, act) -> str:
    """A Dense/Conv2D node with its activation fused when the epilogue computes it, else the
    node and an activation node after it."""
    fused = activations.fused_attrs(act)
    if fused is not None:
        return g.node(op, inputs, out, {**attrs, **fused}, out)
    pre = g.node(op, inputs, f"{out}/linear", attrs)
    return activations.emit(g, pre, out, act)


class Dense(Layer):
    """Keras Dense: `activation(x · kernel + bias)` on the last axis; kernel (in, units).

    >>> Dense(128, activation="relu")
    """

    supports_masking = True

    def __init__(self, units: int, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 lora_rank=None, lora_alpha=None, quantization_config=None, **kw):
        super().__init__(**kw)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise EngineError(f"Dense: units must be a positive int, got {units!r}")
        if lora_rank or quantization_config:
            raise EngineError(f"{self.name}: LoRA and quantized Dense layers are not supported")
        self.units, self.use_bias = units, use_bias
        self.activation = activations.get(activation, self.name)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        # training only (training arrives with its own issue)
        self.regularizers = (kernel_regularizer, bias_regularizer, kernel_constraint, bias_constraint)

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ShapeError(f"{self.name}: the last input dim must be known, got {input_shape}")
        named = [("kernel", (input_shape[-1], self.units), self.kernel_initializer)]
        if self.use_bias:
            named.append(("bias", (self.units,), self.bias_initializer))
        self._create(named)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def emit(self, g, x, out):
        return emit_with_activation(g, "Dense", [x] + self._weight_refs(g), out, {}, self.activation)


class Activation(Layer):
    """Keras Activation: any Keras activation name (see engine/nn/activations.py)."""

    supports_masking = True

    def __init__(self, activation, **kw):
        super().__init__(**kw)
        self.activation = activations.get(activation, self.name)

    def emit(self, g, x, out):
        return activations.emit(g, x, out, self.activation)


class Identity(Layer):
    supports_masking = True

    def emit(self, g, x, out):
        return g.node("Identity", [x], out)


class Dropout(Layer):
    """Identity at inference. In training graphs a `Dropout` node (rate, seed): each step
    drops elements with probability `rate` and scales the rest by 1 / (1 - rate), the mask
    drawn from (seed, step) (engine/ops/dropout_grad.py). `noise_shape` (Keras's, None for the
    input's dim) shares one draw along the dims where it is 1. The seed is `seed`, or derived
    from the layer's name and engine.nn.set_random_seed."""

    supports_masking = True

    def __init__(self, rate: float, noise_shape=None, seed=None, **kw):
        super().__init__(**kw)
        if not 0 <= rate <= 1:
            raise EngineError(f"{self.name}: rate must be in [0, 1], got {rate}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise EngineError(f"{self.name}: seed must be an int or None, got {seed!r}")
        self.rate, self.noise_shape, self.seed = rate, noise_shape, seed

    def _noise(self):
        """The mask's shape for the Dropout node (-1: the input's dim), or None: the input's."""
        if self.noise_shape is None:
            return None
        return [-1 if d is None else int(d) for d in self.noise_shape]

    def _training_attrs(self) -> dict:
        attrs = {"rate": float(self.rate), "seed": dropout_seed(self)}
        noise = self._noise()
        if noise is not None:
            attrs["noise_shape"] = noise
        return attrs

    def emit(self, g, x, out):
        if not g.training or self.rate == 0:
            return g.node("Identity", [x], out)
        return g.node("Dropout", [x], out, self._training_attrs())


def dropout_seed(layer) -> int:
    """The layer's seed, else one derived from its name and the global seed (a per-process
    random one until set_random_seed is called)."""
    if layer.seed is not None:
        return int(layer.seed) & 0x7FFFFFFFFFFFFFFF
    base = initializers.random_seed()
    if base is None:
        base = _process_seed()
    digest = hashlib.blake2b(f"{base}/{layer.name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFFFFFFFFFF


def _process_seed(cache=[]) -> int:  # noqa: B006  (drawn once per process)
    if not cache:
        cache.append(int(np.random.SeedSequence().entropy % (1 << 62)))
    return cache[0]


class SpatialDropout1D(Dropout):
    """Drops whole channels: one draw per (sample, channel), shared along the other dims."""

    supports_masking = False
    ndim = 3

    def __init__(self, rate: float, seed=None, **kw):
        super().__init__(rate, seed=seed, **kw)

    def _noise(self):
        if len(self.input_shape) != self.ndim:
            raise ShapeError(f"{self.name}: expects a rank-{self.ndim} input, got {self.input_shape}")
        return [-1] + [1] * (self.ndim - 2) + [-1]


class SpatialDropout2D(SpatialDropout1D):
    ndim = 4

    def __init__(self, rate: float, data_format=None, seed=None, **kw):
        from .base import check_data_format
        super().__init__(rate, seed=seed, **kw)
        check_data_format(data_format, self.name)


class SpatialDropout3D(SpatialDropout2D):
    ndim = 5


def _no_noise_training(layer, g, x, out, what: str, active: bool):
    if g.training and active:
        raise UnsupportedOpError(f"{layer.name} ({type(layer).__name__}): training is not supported ({what}); "
                                 "remove the layer or freeze the layers before it")
    return g.node("Identity", [x], out)


class GaussianDropout(Dropout):
    def emit(self, g, x, out):
        return _no_noise_training(self, g, x, out, "it needs Gaussian noise, which no kernel draws yet",
                                  self.rate > 0)


class AlphaDropout(Dropout):
    """Keeps the mean and variance of SELU outputs: dropped elements take SELU's negative
    saturation value, then an affine transform (Keras's formula)."""

    def emit(self, g, x, out):
        if not g.training or self.rate == 0:
            return g.node("Identity", [x], out)
        return g.node("Dropout", [x], out, {**self._training_attrs(), "alpha": 1})


class GaussianNoise(Dropout):
    def __init__(self, stddev: float, seed=None, **kw):
        super().__init__(0.0, seed=seed, **kw)
        self.stddev = stddev

    def emit(self, g, x, out):
        return _no_noise_training(self, g, x, out, "it needs Gaussian noise, which no kernel draws yet",
                                  self.stddev > 0)


class ActivityRegularization(Dropout):
    def __init__(self, l1: float = 0.0, l2: float = 0.0, **kw):
        super().__init__(0.0, **kw)
        self.l1, self.l2 = l1, l2

    def emit(self, g, x, out):
        return _no_noise_training(self, g, x, out, "its l1 / l2 penalty is a loss term, which training does "
                                  "not add yet", bool(self.l1 or self.l2))


class Embedding(Layer):
    """Keras Embedding: row `i` of `embeddings` (input_dim, output_dim) for each id `i`.
    With `mask_zero=True` id 0 is padding: the output carries the mask `ids != 0`, which
    RNNs, GlobalAveragePooling1D and merge layers after it use as Keras does.

    >>> Embedding(input_dim=10000, output_dim=64, mask_zero=True)
    """

    accepts_ids = True

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer="uniform",
                 embeddings_regularizer=None, embeddings_constraint=None, mask_zero: bool = False,
                 weights=None, lora_rank=None, lora_alpha=None, quantization_config=None,
                 input_length=None, **kw):
        super().__init__(weights=weights, **kw)
        for v, what in ((input_dim, "input_dim"), (output_dim, "output_dim")):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise EngineError(f"{self.name}: {what} must be a positive int, got {v!r}")
        if lora_rank or quantization_config:
            raise EngineError(f"{self.name}: LoRA and quantized embeddings are not supported")
        self.input_dim, self.output_dim, self.mask_zero = input_dim, output_dim, bool(mask_zero)
        self.input_length = input_length  # Keras 2 (and accepted, unused, by Keras 3)
        self.supports_masking = self.mask_zero
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.regularizers = (embeddings_regularizer, embeddings_constraint)
        if self.input_shape_arg is None and input_length is not None:
            self.input_shape_arg = (None,) + ((input_length,) if isinstance(input_length, int) else tuple(input_length))

    def build(self, input_shape):
        self._create([("embeddings", (self.input_dim, self.output_dim), self.embeddings_initializer)])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def compute_mask(self, inputs, mask):
        return NotEqual(name=f"{self.name}/mask")(inputs, 0) if self.mask_zero else None

    def emit(self, g, x, out):
        if g.dtypes.get(x) not in ("int32", "int64"):  # Keras casts other ids to int32
            x = g.node("Cast", [x], f"{out}/ids", {"to": code("int64")})
        return g.node("Gather", [self._weight_refs(g)[0], x], out, {"axis": 0})


class Masking(Layer):
    """Keras Masking: steps whose features all equal `mask_value` are masked (and zeroed)."""

    supports_masking = True

    def __init__(self, mask_value: float = 0.0, **kw):
        super().__init__(**kw)
        self.mask_value = float(mask_value)

    def compute_mask(self, inputs, mask):
        from .ops import Any
        keep = NotEqual(name=f"{self.name}/not_equal")(inputs, np.float32(self.mask_value))
        return Any(axis=-1, name=f"{self.name}/mask")(keep)

    def emit(self, g, x, out):
        value = g.const(f"{out}/value", np.float32(self.mask_value))
        g.node("Equal", [x, value], f"{out}/equal")
        g.node("Not", [f"{out}/equal"], f"{out}/keep")
        g.node("Cast", [f"{out}/keep"], f"{out}/keepf", {"to": code("float32")})
        axes = g.const(f"{out}/axes", np.array([-1], np.int64))
        g.node("ReduceMax", [f"{out}/keepf", axes], f"{out}/any", {"keepdims": 1})
        return g.node("Mul", [x, f"{out}/any"], out)
