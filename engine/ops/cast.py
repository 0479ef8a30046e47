"""Cast and CastLike between every pair of element types (float32/16/64, bfloat16 inside a
graph, the integers, bool) on the `math_cast` kernel: C conversions (float -> integer
truncates), bool is 0/1, float16 rounds to nearest even. `saturate` and `round_mode` only
concern the float8 types, which the engine does not have."""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes
from ..errors import DTypeError, GraphError, UnsupportedOpError
from .registry import TensorType, register


def _target(node) -> str:
    to = node.attrs.get("to")
    if isinstance(to, (bytes, str)):  # opset 1-5 spelled the type as a string
        name = to.decode() if isinstance(to, bytes) else to
        to = _LEGACY_NAMES.get(name.upper(), name)
    if isinstance(to, bool) or not isinstance(to, int):
        raise GraphError(f"node '{node.name}' (Cast): attribute 'to' must be an element type code, got {to!r}")
    try:
        return dtypes.from_code(to)
    except DTypeError:
        raise UnsupportedOpError(f"node '{node.name}' (Cast): target element type code {to} is not "
                                 "supported by this engine") from None


_LEGACY_NAMES = {"FLOAT": 1, "UINT8": 2, "INT8": 3, "UINT16": 4, "INT16": 5, "INT32": 6, "INT64": 7, "BOOL": 9,
                 "FLOAT16": 10, "DOUBLE": 11, "UINT32": 12, "UINT64": 13, "BFLOAT16": 16}


def _cast_type(node, ins):
    return [TensorType(ins[0].shape, _target(node))]


def _castlike_type(node, ins):
    return [TensorType(ins[0].shape, ins[1].dtype)]


def _lower(ctx, node):
    x, y = node.inputs[0], node.outputs[0]
    ctx.kernel("math_cast", [x], [y], dtype="any", ints=[math.prod(ctx.shape(x))])


def _evaluate(node, ins):
    x = ins[0].value
    to = dtypes.to_numpy(_target(node) if node.op == "Cast" else ins[1].dtype)
    if to == np.bool_:
        return [x != 0]
    with np.errstate(all="ignore"):
        return [x.astype(to)]


def _check(node):
    _target(node)


register("Cast", _cast_type, _lower, inplace=True, check=_check, evaluate=_evaluate)
register("CastLike", _castlike_type, _lower, inplace=True, evaluate=_evaluate, value_inputs=(0,))
