"""Weight initialisers with Keras's names and formulas."""

from __future__ import annotations

import math

import numpy as np

from ..errors import EngineError

_rng = np.random.default_rng()


def set_random_seed(seed: int) -> None:
    """Make weight initialisation reproducible (like keras.utils.set_random_seed)."""
    global _rng
    _rng = np.random.default_rng(seed)


def _fans(shape) -> tuple[int, int]:
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])  # conv kernels: (kh, kw, in, out)
    return shape[-2] * receptive, shape[-1] * receptive


def glorot_uniform(shape):
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return _rng.uniform(-limit, limit, shape).astype(np.float32)


def glorot_normal(shape):
    fan_in, fan_out = _fans(shape)
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return np.clip(_rng.normal(0, std, shape), -2 * std, 2 * std).astype(np.float32)


def he_uniform(shape):
    limit = math.sqrt(6.0 / _fans(shape)[0])
    return _rng.uniform(-limit, limit, shape).astype(np.float32)


def he_normal(shape):
    std = math.sqrt(2.0 / _fans(shape)[0])
    return np.clip(_rng.normal(0, std, shape), -2 * std, 2 * std).astype(np.float32)


def zeros(shape):
    return np.zeros(shape, np.float32)


def ones(shape):
    return np.ones(shape, np.float32)


INITIALIZERS = {f.__name__: f for f in (glorot_uniform, glorot_normal, he_uniform, he_normal,
                                        zeros, ones)}


def get(name):
    if callable(name):
        return name
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise EngineError(f"unknown initializer {name!r}; known: {sorted(INITIALIZERS)}") from None
