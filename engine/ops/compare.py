"""Comparisons (Equal, Less, Greater, LessOrEqual, GreaterOrEqual: bool out), logic (And, Or,
Xor on bool) and Where, all with numpy broadcasting, on the typed `math_binary` /
`math_where` kernels."""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..errors import DTypeError
from .elementwise import NUMERIC, broadcast_all, broadcast_strides, check_types, lower_binary, operand_values, operands_shape
from .registry import TensorType, register

_COMPARE = {"Equal": np.equal, "Less": np.less, "Greater": np.greater, "LessOrEqual": np.less_equal,
            "GreaterOrEqual": np.greater_equal}
_LOGIC = {"And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}


def _bool_type(allowed):
    def infer(node, ins):
        check_types(node, ins[:2], allowed)
        return [TensorType(operands_shape(node, ins), "bool")]
    return infer


def _lower(op):
    def lower(ctx, node):
        lower_binary(ctx, node, op)
    return lower


def _eval(fn):
    def evaluate(node, ins):
        return [np.asarray(fn(*operand_values(node, ins)))]
    return evaluate


for _op, _fn in _COMPARE.items():
    _types = NUMERIC + ("bool",) if _op == "Equal" else NUMERIC
    register(_op, _bool_type(_types), _lower(_op), evaluate=_eval(_fn))
for _op, _fn in _LOGIC.items():
    register(_op, _bool_type(("bool",)), _lower(_op), inplace=True, evaluate=_eval(_fn))


# -- Where(cond, x, y) ----------------------------------------------------------------------------

def _where_type(node, ins):
    cond, x, y = ins[:3]
    if cond.dtype != "bool":
        raise DTypeError(f"node '{node.name}' (Where): condition must be bool, got {cond.dtype}")
    t = check_types(node, [x, y], dtypes.ALL)
    if dtypes.itemsize(t) not in (1, 2, 4, 8):
        raise DTypeError(f"node '{node.name}' (Where): element type {t} is not supported")
    return [TensorType(broadcast_all([cond.shape, x.shape, y.shape], node), t)]


def _where_lower(ctx, node):
    out = node.outputs[0]
    shape = ctx.shape(out)
    strides = [s for v in node.inputs[:3] for s in broadcast_strides(ctx.shape(v), shape)]
    ctx.kernel("math_where", node.inputs[:3], [out], dtype="any", ints=[len(shape), *shape, *strides])


def _where_eval(node, ins):
    return [np.where(ins[0].value, ins[1].value, ins[2].value)]


register("Where", _where_type, _where_lower, evaluate=_where_eval)
