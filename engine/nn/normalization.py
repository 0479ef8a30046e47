"""Normalization layers: BatchNormalization (inference: the moving statistics folded into
one scale and shift per channel), LayerNormalization, GroupNormalization, UnitNormalization."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError, UnsupportedOpError
from . import initializers
from .base import Layer


def _axes(axis, rank: int, where: str) -> list:
    axes = [axis] if isinstance(axis, int) else list(axis)
    out = sorted({a % rank for a in axes}) if all(-rank <= a < rank for a in axes) else None
    if out is None or len(out) != len(axes) or 0 in out:
        raise ShapeError(f"{where}: axis {axis!r} is not a set of non-batch axes of a rank-{rank} input")
    return out


def _broadcast(v: np.ndarray, shape: tuple, axes: list, rank: int) -> np.ndarray:
    """A parameter over `axes` shaped to broadcast against the input."""
    full = [1] * rank
    for a in axes:
        full[a] = shape[a]
    return v.reshape(full[1:])  # without the batch axis: broadcasting fills it


class BatchNormalization(Layer):
    """y = (x - moving_mean) / sqrt(moving_variance + epsilon) · gamma + beta on `axis`;
    weights gamma, beta, moving_mean, moving_variance (gamma/beta only with scale/center)."""

    supports_masking = True
    consumes_mask = True  # training refuses one (Keras computes masked batch statistics)
    non_trainable_names = ("moving_mean", "moving_variance")

    def __init__(self, axis=-1, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones", beta_regularizer=None,
                 gamma_regularizer=None, beta_constraint=None, gamma_constraint=None, renorm: bool = False,
                 renorm_clipping=None, renorm_momentum: float = 0.99, synchronized: bool = False,
                 fused=None, virtual_batch_size=None, adjustment=None, **kw):
        super().__init__(**kw)
        if renorm or virtual_batch_size or adjustment is not None:
            raise UnsupportedOpError(f"{self.name}: batch renormalization, virtual batches and adjustment "
                                     "are not supported")
        self.axis, self.momentum, self.epsilon = axis, momentum, float(epsilon)
        self.center, self.scale = center, scale
        self.inits = [initializers.get(i) for i in (gamma_initializer, beta_initializer, moving_mean_initializer,
                                                     moving_variance_initializer)]
        self.regularizers = (beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint)

    def build(self, input_shape):
        self.axes = _axes(self.axis, len(input_shape), self.name)
        shape = tuple(input_shape[a] for a in self.axes)
        if None in shape:
            raise ShapeError(f"{self.name}: the normalized axis must be known, got input {input_shape}")
        names = (["gamma"] if self.scale else []) + (["beta"] if self.center else []) + ["moving_mean",
                                                                                           "moving_variance"]
        init = dict(zip(["gamma", "beta", "moving_mean", "moving_variance"], self.inits))
        self._create([(n, shape, init[n]) for n in names])

    def emit(self, g, x, out, mask=None):
        if g.training:
            return self._emit_training(g, x, out, mask)
        w = dict(zip(self.weight_names, self.weights))
        inv = 1.0 / np.sqrt(w["moving_variance"].astype(np.float64) + self.epsilon)
        scale = inv * w["gamma"] if self.scale else inv
        shift = (w["beta"] if self.center else 0.0) - w["moving_mean"] * scale
        rank = len(self.input_shape)
        mul = g.const(f"{out}/scale", _broadcast(scale.astype(np.float32), self.input_shape, self.axes, rank))
        add = g.const(f"{out}/shift", _broadcast(shift.astype(np.float32), self.input_shape, self.axes, rank))
        g.node("Mul", [x, mul], f"{out}/scaled")
        return g.node("Add", [f"{out}/scaled", add], out)

    def _emit_training(self, g, x, out, mask):
        """One KerasBatchNorm node on the weights (engine/ops/norm.py; its training form uses
        batch statistics and updates the moving ones, or, with trainable=False, the moving
        statistics as Keras's frozen layer does)."""
        if self.axes != list(range(self.axes[0], self.axes[-1] + 1)):
            raise UnsupportedOpError(f"{self.name}: training over non-adjacent axes {self.axes} is not supported")
        if mask is not None and self.trainable:
            raise UnsupportedOpError(f"{self.name}: training with a mask (Keras's masked batch statistics) is not "
                                     "supported")
        w = dict(zip(self.weight_names, self._weight_refs(g)))
        ins = [x, w.get("gamma", ""), w.get("beta", ""), w["moving_mean"], w["moving_variance"]]
        return g.node("KerasBatchNorm", ins, out, {"axis": self.axes[0], "naxes": len(self.axes),
                                                   "epsilon": self.epsilon, "momentum": float(self.momentum),
                                                   "frozen": int(not self.trainable)})


class LayerNormalization(Layer):
    """Normalizes over `axis` (an int or a list), then gamma / beta of those axes' shape."""

    supports_masking = True

    def __init__(self, axis=-1, epsilon: float = 1e-3, center: bool = True, scale: bool = True,
                 rms_scaling: bool = False, beta_initializer="zeros", gamma_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None, gamma_constraint=None, **kw):
        super().__init__(**kw)
        self.axis, self.epsilon, self.center, self.scale = axis, float(epsilon), center, scale
        self.rms_scaling = rms_scaling  # Keras 3.0-3.6: a root-mean-square scaling instead of the variance
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_initializer = initializers.get(beta_initializer)
        self.regularizers = (beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint)

    def build(self, input_shape):
        self.axes = _axes(self.axis, len(input_shape), self.name)
        shape = tuple(input_shape[a] for a in self.axes)
        if None in shape:
            raise ShapeError(f"{self.name}: the normalized axes must be known, got input {input_shape}")
        named = ([("gamma", shape, self.gamma_initializer)] if self.scale else []) + \
                ([("beta", shape, self.beta_initializer)] if self.center and not self.rms_scaling else [])
        self._create(named)

    def emit(self, g, x, out):
        rank = len(self.input_shape)
        keep = [d for d in range(rank) if d not in self.axes]
        perm = keep + self.axes
        shape = tuple(self.input_shape[a] for a in self.axes)
        w = dict(zip(self.weight_names, self._weight_refs(g)))
        gamma = w.get("gamma") or g.const(f"{out}/ones", np.ones(shape, np.float32))
        ins = [gamma] + ([w["beta"]] if "beta" in w else [])
        op = "RMSNormalization" if self.rms_scaling else "LayerNormalization"
        attrs = {"axis": len(keep), "epsilon": self.epsilon}
        if perm == list(range(rank)):
            return g.node(op, [x] + ins, out, attrs)
        xt = g.node("Transpose", [x], f"{out}/moved", {"perm": perm})
        yt = g.node(op, [xt] + ins, f"{out}/normed", attrs)
        return g.node("Transpose", [yt], out, {"perm": [perm.index(d) for d in range(rank)]})


class GroupNormalization(Layer):
    """Channels (the last axis) in `groups` groups, each normalized over its channels and
    every non-batch position; then gamma / beta per channel. groups=-1: one per channel."""

    supports_masking = True

    def __init__(self, groups: int = 32, axis: int = -1, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, beta_initializer="zeros", gamma_initializer="ones", beta_regularizer=None,
                 gamma_regularizer=None, beta_constraint=None, gamma_constraint=None, **kw):
        super().__init__(**kw)
        self.groups, self.axis, self.epsilon, self.center, self.scale = groups, axis, float(epsilon), center, scale
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_initializer = initializers.get(beta_initializer)
        self.regularizers = (beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint)

    def build(self, input_shape):
        rank = len(input_shape)
        if not isinstance(self.axis, int) or self.axis % rank != rank - 1 or rank < 2:
            raise UnsupportedOpError(f"{self.name}: only the last axis as the channel axis is supported "
                                     f"(axis={self.axis}, input {input_shape})")
        c = input_shape[-1]
        groups = c if self.groups == -1 else self.groups
        if c is None or groups < 1 or c % groups:
            raise ShapeError(f"{self.name}: {c} channels do not split into {self.groups} groups")
        self.num_groups = groups
        named = ([("gamma", (c,), self.gamma_initializer)] if self.scale else []) + \
                ([("beta", (c,), self.beta_initializer)] if self.center else [])
        self._create(named)

    def emit(self, g, x, out):
        rank, c = len(self.input_shape), self.input_shape[-1]
        w = dict(zip(self.weight_names, self._weight_refs(g)))
        gamma = w.get("gamma") or g.const(f"{out}/ones", np.ones((c,), np.float32))
        beta = w.get("beta") or g.const(f"{out}/zeros", np.zeros((c,), np.float32))
        if rank == 2:  # (N, C): the ONNX op wants at least one spatial axis, which may have size 1
            xc = g.node("Unsqueeze", [x, g.const(f"{out}/axes", np.array([2], np.int64))], f"{out}/nc1")
        else:
            xc = g.node("Transpose", [x], f"{out}/nchw", {"perm": [0, rank - 1] + list(range(1, rank - 1))})
        yc = g.node("GroupNormalization", [xc, gamma, beta], f"{out}/normed",
                    {"num_groups": self.num_groups, "epsilon": self.epsilon})
        if rank == 2:
            return g.node("Squeeze", [yc, g.const(f"{out}/axes", np.array([2], np.int64))], out)
        return g.node("Transpose", [yc], out, {"perm": [0] + list(range(2, rank)) + [1]})


class UnitNormalization(Layer):
    """x · min(1 / ‖x‖₂, 1e12) over `axis`."""

    supports_masking = True

    def __init__(self, axis=-1, **kw):
        super().__init__(**kw)
        self.axis = axis

    def emit(self, g, x, out):
        axes = _axes(self.axis, len(self.input_shape), self.name)
        g.node("ReduceSumSquare", [x, g.const(f"{out}/axes", np.array(axes, np.int64))], f"{out}/ss", {"keepdims": 1})
        g.node("Sqrt", [f"{out}/ss"], f"{out}/norm")
        g.node("Reciprocal", [f"{out}/norm"], f"{out}/inv")
        g.node("Min", [f"{out}/inv", g.const(f"{out}/cap", np.float32(1e12))], f"{out}/capped")
        return g.node("Mul", [x, f"{out}/capped"], out)


__all__ = ["BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization"]
