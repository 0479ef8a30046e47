"""Shared machinery of the elementwise unary ops (math in arith.py, activations in
activations.py): the native UnaryOp codes, attribute decoding with the ONNX defaults, the type
rule and the lowering onto the typed `math_unary` kernel."""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from .. import dtypes
from ..errors import DTypeError, GraphError
from .registry import TensorType, register

FLOAT = ("float32", "float16", "float64")
SIGNED_OR_FLOAT = FLOAT + dtypes.SIGNED
NUMERIC = FLOAT + dtypes.INTEGERS

# Codes of the native enum UnaryOp (csrc/include/engine/math.h), in its order.
UNARY_CODES = {name: i for i, name in enumerate("""
Abs Neg Sign Relu Square Not IsNaN IsInf Acos Acosh Asin Asinh Atan Atanh Cos Cosh Sin Sinh Tan Tanh
Ceil Floor Round Erf Exp Log Sqrt Reciprocal Sigmoid Softplus Softsign Mish HardSwish Gelu GeluTanh
Swish LeakyRelu Elu Selu Celu HardSigmoid ThresholdedRelu Shrink""".split())}


def number(attrs: dict, key: str, default: float, node: str = "") -> float:
    """attrs[key] (or default) as a float; GraphError naming the node if it is not a number."""
    v = attrs.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise GraphError(f"node '{node}': attribute '{key}' must be a number, got {v!r}")
    return float(v)


def params_of(node, params) -> tuple:
    """(alpha, beta) from the node's attributes: `params` is ((attr, default), ...) for the
    kernel's alpha and beta slots."""
    vals = [number(node.attrs, k, d, node.name) for k, d in params]
    return tuple(vals + [0.0] * (2 - len(vals)))


def emit_unary(ctx, code: int, x: str, y: str, alpha: float = 0.0, beta: float = 0.0) -> None:
    ctx.kernel("math_unary", [x], [y], dtype="any", ints=[math.prod(ctx.shape(x)), code], floats=[alpha, beta])


def check_type(node, t: str, allowed) -> None:
    if t not in allowed:
        raise DTypeError(f"node '{node.name}' ({node.op}): element type {t} is not supported "
                         f"(supported: {', '.join(allowed)})")


def register_unary(name: str, code, types, params=(), out: Optional[str] = None,
                   evaluate: Optional[Callable] = None, check: Optional[Callable] = None) -> None:
    """An elementwise op on the `math_unary` kernel. `code` is a UnaryOp name or a function
    node -> name (an op whose kernel depends on an attribute); `out` fixes the output type
    (IsNaN: bool), else it is the input's."""
    pick = code if callable(code) else (lambda node: code)

    def infer(node, ins):
        check_type(node, ins[0].dtype, types)
        return [TensorType(ins[0].shape, out or ins[0].dtype)]

    def lower(ctx, node):
        emit_unary(ctx, UNARY_CODES[pick(node)], node.inputs[0], node.outputs[0], *params_of(node, params))

    def check_attrs(node):
        params_of(node, params)
        pick(node)
        if check is not None:
            check(node)

    register(name, infer, lower, inplace=out is None, check=check_attrs, evaluate=evaluate)


def np_unary(fn):
    """An `evaluate` from a numpy function of the input value (floating errors ignored)."""
    def evaluate(node, ins):
        with np.errstate(all="ignore"):
            return [np.asarray(fn(ins[0].value))]
    return evaluate
