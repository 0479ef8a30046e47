"""Activation layers: ReLU (max_value, negative_slope, threshold), LeakyReLU, PReLU, ELU,
Softmax (with Keras's mask rule)."""

from __future__ import annotations

import numpy as np

from ..dtypes import code
from ..errors import EngineError, ShapeError
from . import initializers
from .base import Layer


def _f32(v) -> np.ndarray:
    return np.array(v, np.float32)


class ReLU(Layer):
    """Keras ReLU: min(x if x > threshold else 0, max_value) - negative_slope · relu(threshold - x)
    (the plain cases are one node: Relu, LeakyRelu or Clip)."""

    supports_masking = True

    def __init__(self, max_value=None, negative_slope: float = 0.0, threshold: float = 0.0, **kw):
        super().__init__(**kw)
        if max_value is not None and max_value < 0:
            raise EngineError(f"{self.name}: max_value must be >= 0, got {max_value}")
        if negative_slope is None or negative_slope < 0:
            raise EngineError(f"{self.name}: negative_slope must be >= 0, got {negative_slope}")
        self.max_value = None if max_value is None else float(max_value)
        self.negative_slope, self.threshold = float(negative_slope), float(threshold or 0.0)

    def emit(self, g, x, out):
        slope, top, t = self.negative_slope, self.max_value, self.threshold
        if not slope and t == 0:
            return g.node("Relu", [x], out) if top is None else g.node("Clip", [x], out, {"min": 0.0, "max": top})
        if slope and top is None and t == 0:
            return g.node("LeakyRelu", [x], out, {"alpha": slope})
        # Keras's general relu: the positive part, clipped, minus the scaled negative part
        if t:
            g.node("Greater", [x, g.const(f"{out}/t", _f32(t))], f"{out}/above")
            g.node("Cast", [f"{out}/above"], f"{out}/abovef", {"to": code("float32")})
            pos = g.node("Mul", [x, f"{out}/abovef"], f"{out}/pos")
        else:
            pos = g.node("Relu", [x], f"{out}/pos")
        if top is not None:
            pos = g.node("Clip", [pos], f"{out}/clipped", {"min": 0.0, "max": top})
        if not slope:
            return g.node("Identity", [pos], out)
        g.node("Sub", [g.const(f"{out}/t", _f32(t)), x], f"{out}/neg_in")
        g.node("Relu", [f"{out}/neg_in"], f"{out}/neg")
        g.node("Mul", [f"{out}/neg", g.const(f"{out}/slope", _f32(slope))], f"{out}/neg_scaled")
        return g.node("Sub", [pos, f"{out}/neg_scaled"], out)


class LeakyReLU(Layer):
    supports_masking = True

    def __init__(self, negative_slope: float = 0.3, alpha=None, **kw):
        super().__init__(**kw)
        self.negative_slope = float(negative_slope if alpha is None else alpha)  # alpha: Keras 2's name

    def emit(self, g, x, out):
        return g.node("LeakyRelu", [x], out, {"alpha": self.negative_slope})


class ELU(Layer):
    supports_masking = True

    def __init__(self, alpha: float = 1.0, **kw):
        super().__init__(**kw)
        self.alpha = float(alpha)

    def emit(self, g, x, out):
        return g.node("Elu", [x], out, {"alpha": self.alpha})


class PReLU(Layer):
    """Keras PReLU: x if x >= 0 else alpha · x, alpha of shape input_shape[1:] (1 on shared_axes)."""

    supports_masking = True

    def __init__(self, alpha_initializer="zeros", alpha_regularizer=None, alpha_constraint=None,
                 shared_axes=None, **kw):
        super().__init__(**kw)
        self.alpha_initializer = initializers.get(alpha_initializer)
        self.regularizers = (alpha_regularizer, alpha_constraint)
        self.shared_axes = None if shared_axes is None else (
            [shared_axes] if isinstance(shared_axes, int) else list(shared_axes))

    def build(self, input_shape):
        shape = list(input_shape[1:])
        for a in self.shared_axes or []:
            if not 1 <= a < len(input_shape):
                raise ShapeError(f"{self.name}: shared axis {a} out of range for input {input_shape}")
            shape[a - 1] = 1
        if None in shape:
            raise ShapeError(f"{self.name}: unshared input dims must be known, got {input_shape}")
        self._create([("alpha", tuple(shape), self.alpha_initializer)])

    def emit(self, g, x, out):
        return g.node("PRelu", [x] + self._weight_refs(g), out)


class Softmax(Layer):
    """Keras Softmax over `axis`; with a mask, masked positions get -1e9 before and 0 after."""

    supports_masking = True
    consumes_mask = True

    def __init__(self, axis=-1, **kw):
        super().__init__(**kw)
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                raise EngineError(f"{self.name}: softmax over several axes is not supported")
            axis = axis[0]
        self.axis = axis

    def emit(self, g, x, out, mask=None):
        if mask is None:
            return g.node("Softmax", [x], out, {"axis": self.axis})
        g.node("Where", [mask, x, g.const(f"{out}/neg", _f32(-1e9))], f"{out}/masked")
        g.node("Softmax", [f"{out}/masked"], f"{out}/soft", {"axis": self.axis})
        return g.node("Where", [mask, f"{out}/soft", g.const(f"{out}/zero", _f32(0.0))], out)
