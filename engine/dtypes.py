"""Element types: one name per type, with its numpy dtype, byte size and code.

The codes are ONNX's TensorProto.DataType values; the native runtime uses the same numbers
(csrc/include/engine/dtype.h), so a type crosses from a file to a kernel unchanged.

    >>> dtypes.itemsize("int64"), dtypes.code("float16"), dtypes.from_numpy(np.dtype("f4"))
    (8, 10, 'float32')
"""

from __future__ import annotations

import numpy as np

from .errors import DTypeError

# name: (code, numpy dtype or None when numpy has no such type, size in bytes)
_TYPES = {
    "float32": (1, np.dtype(np.float32), 4),
    "uint8": (2, np.dtype(np.uint8), 1),
    "int8": (3, np.dtype(np.int8), 1),
    "uint16": (4, np.dtype(np.uint16), 2),
    "int16": (5, np.dtype(np.int16), 2),
    "int32": (6, np.dtype(np.int32), 4),
    "int64": (7, np.dtype(np.int64), 8),
    "bool": (9, np.dtype(np.bool_), 1),
    "float16": (10, np.dtype(np.float16), 2),
    "float64": (11, np.dtype(np.float64), 8),
    "uint32": (12, np.dtype(np.uint32), 4),
    "uint64": (13, np.dtype(np.uint64), 8),
    "bfloat16": (16, None, 2),
}
_BY_CODE = {code: name for name, (code, _, _) in _TYPES.items()}

FLOATS = ("float32", "float64", "float16", "bfloat16")
SIGNED = ("int8", "int16", "int32", "int64")
UNSIGNED = ("uint8", "uint16", "uint32", "uint64")
INTEGERS = SIGNED + UNSIGNED
NUMERIC = FLOATS + INTEGERS
ALL = tuple(_TYPES)


def check(name: str) -> str:
    if name not in _TYPES:
        raise DTypeError(f"unknown element type {name!r}; known: {', '.join(_TYPES)}")
    return name


def code(name: str) -> int:
    return _TYPES[check(name)][0]


def from_code(c: int) -> str:
    try:
        return _BY_CODE[int(c)]
    except (KeyError, ValueError, TypeError):
        raise DTypeError(f"unsupported element type code {c!r}") from None


def itemsize(name: str) -> int:
    return _TYPES[check(name)][2]


def to_numpy(name: str) -> np.dtype:
    dt = _TYPES[check(name)][1]
    if dt is None:
        raise DTypeError(f"{name} has no numpy equivalent; it exists inside the engine only")
    return dt


_FROM_NUMPY: dict = {}  # (kind, itemsize) -> name


def from_numpy(dt) -> str:
    """The name of a numpy dtype (by value, any byte order), or DTypeError."""
    dt = np.dtype(dt)
    key = (dt.kind, dt.itemsize)
    name = _FROM_NUMPY.get(key)
    if name is not None:
        return name
    for name, (_, npdt, _) in _TYPES.items():
        if npdt is not None and dt.kind == npdt.kind and dt.itemsize == npdt.itemsize:
            _FROM_NUMPY[key] = name
            return name
    raise DTypeError(f"unsupported numpy dtype {dt}")


def is_float(name: str) -> bool:
    return name in FLOATS


def is_integer(name: str) -> bool:
    return name in INTEGERS


def contiguous(a, dtype=None) -> np.ndarray:
    """a as a C-contiguous array (copied only if needed). Unlike np.ascontiguousarray, a 0-d
    array stays 0-d."""
    return np.asarray(a, dtype=dtype, order="C")
