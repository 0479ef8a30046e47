"""Preprocessing layers that are part of a model's computation: Rescaling and Normalization
(its statistics as weights: mean, variance, count; or given as constants)."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from . import initializers
from .base import Layer


class Rescaling(Layer):
    """x · scale + offset (each a number or an array broadcast against the last axes)."""

    supports_masking = True

    def __init__(self, scale, offset=0.0, **kw):
        super().__init__(**kw)
        self.scale = np.asarray(_plain(scale), np.float32)
        self.offset = np.asarray(_plain(offset), np.float32)

    def emit(self, g, x, out):
        g.node("Mul", [x, g.const(f"{self.name}/scale", self.scale)], f"{out}/scaled")
        return g.node("Add", [f"{out}/scaled", g.const(f"{self.name}/offset", self.offset)], out)


def _plain(v):
    """A number or list from a Keras config (which may wrap arrays as {'value': ..., 'dtype': ...})."""
    if isinstance(v, dict) and "config" in v:
        v = v["config"].get("value", v)
    return v


class Normalization(Layer):
    """(x - mean) / max(sqrt(variance), 1e-7) (with invert: the reverse), statistics per
    position of `axis` (the kept axes; None: one for everything)."""

    supports_masking = True
    non_trainable_names = ("mean", "variance", "count")

    def __init__(self, axis=-1, mean=None, variance=None, invert: bool = False, **kw):
        super().__init__(**kw)
        self.axis = () if axis is None else (axis,) if isinstance(axis, int) else tuple(axis)
        if (mean is None) != (variance is None):
            raise ShapeError(f"{self.name}: give both mean and variance, or neither")
        self.input_mean = None if mean is None else np.asarray(_plain(mean), np.float32)
        self.input_variance = None if variance is None else np.asarray(_plain(variance), np.float32)
        self.invert = bool(invert)

    def build(self, input_shape):
        rank = len(input_shape)
        if any(not -rank <= a < rank for a in self.axis):
            raise ShapeError(f"{self.name}: axis {self.axis} out of range for input {input_shape}")
        self.keep = sorted(a % rank for a in self.axis)
        if any(input_shape[d] is None for d in self.keep):
            raise ShapeError(f"{self.name}: the kept axes {self.axis} must be known, got {input_shape}")
        self.broadcast_shape = [input_shape[d] if d in self.keep else 1 for d in range(rank)]
        if self.input_mean is None:
            shape = tuple(input_shape[d] for d in self.keep)
            self._create([("mean", shape, initializers.zeros), ("variance", shape, initializers.ones),
                          ("count", (), initializers.zeros)])

    def _stats(self):
        if self.input_mean is None:
            w = dict(zip(self.weight_names, self.weights))
            return (w["mean"].reshape(self.broadcast_shape), w["variance"].reshape(self.broadcast_shape))
        out = []
        for v in (self.input_mean, self.input_variance):
            if v.ndim:  # Keras puts the given values' trailing dims on the last kept axes
                full = [1] * len(self.broadcast_shape)
                for i in range(1, v.ndim + 1):
                    full[self.keep[-i]] = v.shape[-i]
                v = v.reshape(full)
            out.append(np.broadcast_to(v, self.broadcast_shape))
        return tuple(out)

    def emit(self, g, x, out):
        mean, var = self._stats()
        denom = np.maximum(np.sqrt(var.astype(np.float32)), np.float32(1e-7)).astype(np.float32)
        mean_c = g.const(f"{out}/mean", mean.astype(np.float32)[0])  # the batch axis broadcasts
        denom_c = g.const(f"{out}/denom", denom[0])
        if self.invert:
            g.node("Mul", [x, denom_c], f"{out}/scaled")
            return g.node("Add", [f"{out}/scaled", mean_c], out)
        g.node("Sub", [x, mean_c], f"{out}/centered")
        return g.node("Div", [f"{out}/centered", denom_c], out)
