"""Weight initialisers with Keras's names and formulas: a name ('glorot_uniform'), a Keras
class name with its config ({'class_name': 'RandomUniform', 'config': {'minval': -1}}), or a
callable shape -> array."""

from __future__ import annotations

import math

import numpy as np

from ..errors import EngineError

_rng = np.random.default_rng()
_seed: list = [None]  # the last set_random_seed (None: never set)


def set_random_seed(seed: int) -> None:
    """Make weight initialisation and the dropout masks of layers without a seed
    reproducible (like keras.utils.set_random_seed)."""
    global _rng
    _rng = np.random.default_rng(seed)
    _seed[0] = int(seed)


def random_seed():
    """The seed set_random_seed was last called with, or None."""
    return _seed[0]


def _fans(shape) -> tuple[int, int]:
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])  # conv kernels: (k..., in, out)
    return shape[-2] * receptive, shape[-1] * receptive


def _truncated(shape, std):
    return np.clip(_rng.normal(0, std, shape), -2 * std, 2 * std).astype(np.float32)


def glorot_uniform(shape):
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return _rng.uniform(-limit, limit, shape).astype(np.float32)


def glorot_normal(shape):
    fan_in, fan_out = _fans(shape)
    return _truncated(shape, math.sqrt(2.0 / (fan_in + fan_out)) / 0.87962566103423978)


def he_uniform(shape):
    limit = math.sqrt(6.0 / _fans(shape)[0])
    return _rng.uniform(-limit, limit, shape).astype(np.float32)


def he_normal(shape):
    return _truncated(shape, math.sqrt(2.0 / _fans(shape)[0]) / 0.87962566103423978)


def lecun_uniform(shape):
    limit = math.sqrt(3.0 / _fans(shape)[0])
    return _rng.uniform(-limit, limit, shape).astype(np.float32)


def lecun_normal(shape):
    return _truncated(shape, math.sqrt(1.0 / _fans(shape)[0]) / 0.87962566103423978)


def zeros(shape):
    return np.zeros(shape, np.float32)


def ones(shape):
    return np.ones(shape, np.float32)


def orthogonal(shape, gain: float = 1.0):
    """Keras's Orthogonal: Q of a QR factorisation of a normal matrix (LSTM recurrent kernels)."""
    rows, cols = math.prod(shape[:-1]), shape[-1]
    q, r = np.linalg.qr(_rng.normal(0, 1, (max(rows, cols), min(rows, cols))))
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q).reshape(shape).astype(np.float32)


def random_uniform(shape, minval: float = -0.05, maxval: float = 0.05):
    return _rng.uniform(minval, maxval, shape).astype(np.float32)


def random_normal(shape, mean: float = 0.0, stddev: float = 0.05):
    return _rng.normal(mean, stddev, shape).astype(np.float32)


def truncated_normal(shape, mean: float = 0.0, stddev: float = 0.05):
    return mean + _truncated(shape, stddev)


def constant(shape, value: float = 0.0):
    return np.full(shape, value, np.float32)


INITIALIZERS = {f.__name__: f for f in (glorot_uniform, glorot_normal, he_uniform, he_normal, lecun_uniform,
                                        lecun_normal, zeros, ones, orthogonal, random_uniform, random_normal,
                                        truncated_normal, constant)}
_ALIASES = {"uniform": "random_uniform", "normal": "random_normal", "zero": "zeros", "one": "ones",
            "GlorotUniform": "glorot_uniform", "GlorotNormal": "glorot_normal", "HeUniform": "he_uniform",
            "HeNormal": "he_normal", "LecunUniform": "lecun_uniform", "LecunNormal": "lecun_normal",
            "Zeros": "zeros", "Ones": "ones", "Orthogonal": "orthogonal", "RandomUniform": "random_uniform",
            "RandomNormal": "random_normal", "TruncatedNormal": "truncated_normal", "Constant": "constant"}
# Config keys that only matter to Keras's random streams.
_IGNORED = {"seed", "input_axes", "output_axes"}


def get(spec):
    """A callable shape -> float32 array."""
    if callable(spec):
        return spec
    params = {}
    if isinstance(spec, dict):
        params = {k: v for k, v in (spec.get("config") or {}).items() if k not in _IGNORED}
        spec = spec.get("class_name")
    name = _ALIASES.get(spec, spec)
    if name not in INITIALIZERS:
        raise EngineError(f"unknown initializer {spec!r}; known: {sorted(INITIALIZERS)}")
    fn = INITIALIZERS[name]
    if not params:
        return fn
    try:
        fn((1, 1), **params)
    except TypeError:
        raise EngineError(f"initializer {spec!r}: unsupported arguments {sorted(params)}") from None
    return lambda shape: fn(shape, **params)
