"""Reshaping layers: Flatten, Reshape, Permute, RepeatVector, ZeroPadding1D/2D/3D,
Cropping1D/2D/3D, UpSampling1D/2D/3D (channels_last)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..errors import EngineError, ShapeError, UnsupportedOpError
from .base import Layer, check_data_format, int_tuple

_INT64_MAX = np.iinfo(np.int64).max


def _i64(v) -> np.ndarray:
    return np.array(list(v), np.int64)


def _pairs(v, rank: int, what: str) -> tuple:
    """Keras's padding / cropping argument: an int, `rank` ints (symmetric), or `rank` pairs."""
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v,) * rank
    if not isinstance(v, (list, tuple)) or len(v) != rank and not (rank == 1 and len(v) == 2):
        raise EngineError(f"{what} must be an int, {rank} ints or {rank} pairs, got {v!r}")
    if rank == 1 and len(v) == 2 and all(isinstance(i, int) for i in v):
        v = (tuple(v),)
    out = []
    for p in v:
        pair = (p, p) if isinstance(p, int) and not isinstance(p, bool) else tuple(p)
        if len(pair) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in pair):
            raise EngineError(f"{what} must hold non-negative ints, got {v!r}")
        out.append(pair)
    return tuple(out)


class Flatten(Layer):
    def __init__(self, data_format: Optional[str] = None, **kw):
        super().__init__(**kw)
        check_data_format(data_format, self.name)

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

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        known = math.prod(d for d in self.target_shape if d != -1)
        if -1 not in self.target_shape:
            if None not in rest and math.prod(rest) != known:
                raise ShapeError(f"{self.name}: cannot reshape {input_shape} to {self.target_shape}")
            return (input_shape[0],) + self.target_shape
        if None in rest:
            return (input_shape[0],) + tuple(None if d == -1 else d for d in self.target_shape)
        if math.prod(rest) % known:
            raise ShapeError(f"{self.name}: cannot reshape {input_shape} to {self.target_shape}")
        return (input_shape[0],) + tuple(math.prod(rest) // known if d == -1 else d for d in self.target_shape)

    def emit(self, g, x, out):
        return g.node("Reshape", [x], out, {"shape": [0, *self.target_shape]})  # 0: keep the batch dim


class Permute(Layer):
    """Keras Permute: `dims` permutes the non-batch axes, numbered from 1."""

    def __init__(self, dims, **kw):
        super().__init__(**kw)
        self.dims = tuple(dims)
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise EngineError(f"{self.name}: dims must be a permutation of 1..{len(self.dims)}, got {dims!r}")

    def compute_output_shape(self, input_shape):
        if len(input_shape) != len(self.dims) + 1:
            raise ShapeError(f"{self.name}: dims {self.dims} need a {len(self.dims) + 1}-D input, got {input_shape}")
        return (input_shape[0],) + tuple(input_shape[d] for d in self.dims)

    def emit(self, g, x, out):
        return g.node("Transpose", [x], out, {"perm": [0, *self.dims]})


class RepeatVector(Layer):
    """(batch, features) -> (batch, n, features)."""

    def __init__(self, n: int, **kw):
        super().__init__(**kw)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise EngineError(f"{self.name}: n must be a positive int, got {n!r}")
        self.n = n

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise ShapeError(f"{self.name}: expected a 2-D input, got {input_shape}")
        return (input_shape[0], self.n, input_shape[1])

    def emit(self, g, x, out):
        g.node("Unsqueeze", [x, g.const(f"{out}/axes", _i64([1]))], f"{out}/row")
        return g.node("Expand", [f"{out}/row", g.const(f"{out}/shape", _i64([1, self.n, 1]))], out)


class _ZeroPadding(Layer):
    rank = 2

    def __init__(self, padding=1, data_format: Optional[str] = None, **kw):
        super().__init__(**kw)
        check_data_format(data_format, self.name)
        self.padding = _pairs(padding, self.rank, f"{self.name}: padding")

    def compute_output_shape(self, input_shape):
        if len(input_shape) != self.rank + 2:
            raise ShapeError(f"{self.name}: expected a {self.rank + 2}-D channels_last input, got {input_shape}")
        spatial = [None if n is None else n + a + b for n, (a, b) in zip(input_shape[1:-1], self.padding)]
        return (input_shape[0], *spatial, input_shape[-1])

    def emit(self, g, x, out):
        begins = [0] + [a for a, _ in self.padding] + [0]
        ends = [0] + [b for _, b in self.padding] + [0]
        return g.node("Pad", [x, g.const(f"{out}/pads", _i64(begins + ends))], out)


class ZeroPadding1D(_ZeroPadding):
    rank = 1

    def __init__(self, padding=1, **kw):
        super().__init__(padding, **kw)


class ZeroPadding2D(_ZeroPadding):
    rank = 2

    def __init__(self, padding=(1, 1), data_format=None, **kw):
        super().__init__(padding, data_format, **kw)


class ZeroPadding3D(_ZeroPadding):
    rank = 3

    def __init__(self, padding=(1, 1, 1), data_format=None, **kw):
        super().__init__(padding, data_format, **kw)


class _Cropping(Layer):
    rank = 2

    def __init__(self, cropping=0, data_format: Optional[str] = None, **kw):
        super().__init__(**kw)
        check_data_format(data_format, self.name)
        self.cropping = _pairs(cropping, self.rank, f"{self.name}: cropping")

    def compute_output_shape(self, input_shape):
        if len(input_shape) != self.rank + 2:
            raise ShapeError(f"{self.name}: expected a {self.rank + 2}-D channels_last input, got {input_shape}")
        spatial = []
        for n, (a, b) in zip(input_shape[1:-1], self.cropping):
            if n is not None and n - a - b < 1:
                raise ShapeError(f"{self.name}: cropping {self.cropping} leaves nothing of input {input_shape}")
            spatial.append(None if n is None else n - a - b)
        return (input_shape[0], *spatial, input_shape[-1])

    def emit(self, g, x, out):
        starts = [a for a, _ in self.cropping]
        ends = [-b if b else _INT64_MAX for _, b in self.cropping]
        axes = list(range(1, self.rank + 1))
        return g.node("Slice", [x, g.const(f"{out}/starts", _i64(starts)), g.const(f"{out}/ends", _i64(ends)),
                                g.const(f"{out}/axes", _i64(axes))], out)


class Cropping1D(_Cropping):
    rank = 1

    def __init__(self, cropping=(1, 1), **kw):
        super().__init__(cropping, **kw)


class Cropping2D(_Cropping):
    rank = 2

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kw):
        super().__init__(cropping, data_format, **kw)


class Cropping3D(_Cropping):
    rank = 3

    def __init__(self, cropping=((1, 1), (1, 1), (1, 1)), data_format=None, **kw):
        super().__init__(cropping, data_format, **kw)


class _UpSampling(Layer):
    """Nearest: each pixel repeated `size` times per axis; bilinear (2-D): Keras's image
    resize (half-pixel centres), both the ONNX Resize op over the spatial axes."""

    rank = 2

    def __init__(self, size=2, data_format: Optional[str] = None, interpolation: str = "nearest", **kw):
        super().__init__(**kw)
        check_data_format(data_format, self.name)
        if interpolation not in ("nearest", "bilinear") or (interpolation == "bilinear" and self.rank != 2):
            raise UnsupportedOpError(f"{self.name}: interpolation {interpolation!r} is not supported "
                                     "(nearest, and bilinear for UpSampling2D)")
        self.size = int_tuple(size, self.rank, f"{self.name}: size")
        self.interpolation = interpolation

    def compute_output_shape(self, input_shape):
        if len(input_shape) != self.rank + 2:
            raise ShapeError(f"{self.name}: expected a {self.rank + 2}-D channels_last input, got {input_shape}")
        spatial = [None if n is None else n * s for n, s in zip(input_shape[1:-1], self.size)]
        return (input_shape[0], *spatial, input_shape[-1])

    def emit(self, g, x, out):
        scales = g.const(f"{out}/scales", np.array([1.0, *self.size, 1.0], np.float32))
        if self.interpolation == "nearest":
            attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        else:
            attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
        return g.node("Resize", [x, "", scales], out, attrs)


class UpSampling1D(_UpSampling):
    rank = 1

    def __init__(self, size=2, **kw):
        super().__init__(size, **kw)


class UpSampling2D(_UpSampling):
    rank = 2

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kw):
        super().__init__(size, data_format, interpolation, **kw)


class UpSampling3D(_UpSampling):
    rank = 3

    def __init__(self, size=(2, 2, 2), data_format=None, **kw):
        super().__init__(size, data_format, **kw)
