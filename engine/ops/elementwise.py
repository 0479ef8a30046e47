"""Binary arithmetic with numpy broadcasting (Add, Sub, Mul, Div, Pow, Mod, PRelu) and the
variadic Sum, Mean, Max, Min, for every numeric element type; plus the broadcasting helpers
the other broadcasting ops (comparisons, Where, MatMul) share.

float32 Add..Pow run on the vectorised `binary` kernel; everything else on the typed
`math_binary` kernel (csrc/runtime/kernels/math_steps.cpp). Integer Div truncates toward zero
(C), integer Mod takes the divisor's sign unless fmod=1; an integer divisor holding 0 is a
KernelError when the model runs.
"""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes
from ..errors import DTypeError, GraphError, ShapeError
from .float16 import cast, cast_to
from .registry import TensorType, register


def broadcast_shape(a: tuple, b: tuple, node) -> tuple:
    """numpy broadcasting of two shapes; ShapeError naming the node if they do not."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for i, (p, q) in enumerate(zip(a, b)):
        if p != q and 1 not in (p, q):
            raise ShapeError(f"node '{node.name}' ({node.op}): shapes {a} and {b} do not "
                             f"broadcast (dim {i}: {p} vs {q})")
        out.append(max(p, q) if 0 not in (p, q) else 0)
    return tuple(out)


def aligned(node, a: tuple, b: tuple) -> tuple:
    """b's shape as broadcasting sees it. Models before opset 7 could align b with a from an
    `axis` (the importer keeps it as `broadcast_axis`): b gets trailing 1s to match."""
    axis = node.attrs.get("broadcast_axis")
    if axis is None:
        return tuple(b)
    axis = int(axis) + (len(a) if int(axis) < 0 else 0)
    pad = len(a) - axis - len(b)
    if axis < 0 or pad < 0:
        raise ShapeError(f"node '{node.name}' ({node.op}): shape {tuple(b)} cannot align with {tuple(a)} "
                         f"at axis {node.attrs['broadcast_axis']}")
    return tuple(b) + (1,) * pad


def operands_shape(node, ins) -> tuple:
    """The broadcast output shape of a binary node's two inputs."""
    a = ins[0].shape
    return broadcast_shape(a, aligned(node, a, ins[1].shape), node)


def broadcast_all(shapes, node) -> tuple:
    out: tuple = ()
    for s in shapes:
        out = broadcast_shape(out, s, node)
    return out


def broadcast_strides(shape: tuple, out: tuple) -> list[int]:
    """Element strides of `shape` viewed as `out` (left-padded), 0 on broadcast dims."""
    shape = (1,) * (len(out) - len(shape)) + tuple(shape)
    strides, step = [0] * len(out), 1
    for d in range(len(out) - 1, -1, -1):
        strides[d] = 0 if shape[d] == 1 else step
        step *= shape[d]
    return strides


def check_types(node, ins, allowed, what="input") -> str:
    """The common element type of the inputs; DTypeError naming the node if they differ or
    the type is not in `allowed`."""
    types = [t.dtype for t in ins if t is not None]
    if len(set(types)) > 1:
        raise DTypeError(f"node '{node.name}' ({node.op}): {what}s have different element types {types}")
    if types and types[0] not in allowed:
        raise DTypeError(f"node '{node.name}' ({node.op}): element type {types[0]} is not supported "
                         f"(supported: {', '.join(allowed)})")
    return types[0] if types else "float32"


NUMERIC = ("float32", "float16", "float64") + dtypes.INTEGERS
FLOAT = ("float32", "float16", "float64")

# Codes of the native enum BinaryOp (csrc/include/engine/elementwise.h): the float32 fast path.
BINARY_CODES = {"Add": 0, "Sub": 1, "Mul": 2, "Div": 3, "Max": 4, "Min": 5, "Pow": 6}
# Codes of the native enum MathBinaryOp (csrc/include/engine/math.h).
MATH_BINARY_CODES = {"Add": 0, "Sub": 1, "Mul": 2, "Div": 3, "Pow": 4, "Max": 5, "Min": 6, "Mod": 7,
                     "FMod": 8, "PRelu": 9, "Equal": 10, "Less": 11, "Greater": 12, "LessOrEqual": 13,
                     "GreaterOrEqual": 14, "And": 15, "Or": 16, "Xor": 17}


def emit_binary(ctx, op: str, a: str, b: str, out: str, b_shape=None) -> None:
    """out = a `op` b, both broadcast to out's shape (which may be larger than their own
    broadcast: the variadic ops accumulate into the final shape). `b_shape`: b's shape as
    broadcasting sees it, if not its own (see aligned())."""
    shape = ctx.shape(out)
    b_shape = ctx.shape(b) if b_shape is None else b_shape
    strides = [*broadcast_strides(ctx.shape(a), shape), *broadcast_strides(b_shape, shape)]
    if ctx.dtype(a) == "float32" and op in BINARY_CODES:
        ctx.kernel("binary", [a, b], [out], ints=[BINARY_CODES[op], len(shape), *shape, *strides])
    else:
        ctx.kernel("math_binary", [a, b], [out], dtype="any",
                   ints=[MATH_BINARY_CODES[op], len(shape), *shape, *strides])


# -- numpy evaluation with the kernels' exact semantics (plan-time values) ---------------------

def _int_divisor(node, b):
    if b.dtype.kind in "iu" and np.any(b == 0):
        raise ShapeError(f"node '{node.name}' ({node.op}): integer division by zero")


def trunc_div(a, b):
    """C division for integers (toward zero), true division for floats."""
    if a.dtype.kind not in "iu":
        return a / b
    q = np.floor_divide(a, b)
    fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return (q + fix).astype(a.dtype)


def _np_mod(a, b, fmod):
    return np.fmod(a, b) if fmod else np.mod(a, b)


_NP = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum, "Min": np.minimum}


def operand_values(node, ins) -> tuple:
    """The two input values, b reshaped as broadcasting sees it (see aligned())."""
    a, b = ins[0].value, ins[1].value
    return a, b.reshape(aligned(node, a.shape, b.shape))


def _binary_eval(op):
    def evaluate(node, ins):
        a, b = operand_values(node, ins)
        with np.errstate(all="ignore"):
            if op == "Div":
                _int_divisor(node, b)
                return [trunc_div(a, b)]
            if op == "Mod":
                _int_divisor(node, b)
                return [_np_mod(a, b, node.attrs.get("fmod", 0))]
            return [_NP[op](a, b).astype(a.dtype)]
    return evaluate


# -- Add, Sub, Mul, Div, Mod, PRelu ------------------------------------------------------------

def binary_type(node, ins):
    t = check_types(node, ins[:2], NUMERIC)
    return [TensorType(operands_shape(node, ins), t)]


def lower_binary(ctx, node, op: str, b=None) -> None:
    """The node's out = a `op` b (b: a replacement for input 1, e.g. a cast copy)."""
    a, b = node.inputs[0], b or node.inputs[1]
    emit_binary(ctx, op, a, b, node.outputs[0], aligned(node, ctx.shape(a), ctx.shape(b)))


def _binary_lower(op):
    def lower(ctx, node):
        lower_binary(ctx, node, op)
    return lower


def _mod_check(node):
    if node.attrs.get("fmod", 0) not in (0, 1):
        raise GraphError(f"node '{node.name}' (Mod): attribute 'fmod' must be 0 or 1, got {node.attrs['fmod']!r}")


def _mod_lower(ctx, node):
    lower_binary(ctx, node, "FMod" if node.attrs.get("fmod", 0) else "Mod")


for _name in ("Add", "Sub", "Mul", "Div"):
    register(_name, binary_type, _binary_lower(_name), inplace=True, evaluate=_binary_eval(_name))
register("Mod", binary_type, _mod_lower, inplace=True, check=_mod_check, evaluate=_binary_eval("Mod"))


def _prelu_type(node, ins):
    t = check_types(node, ins[:2], NUMERIC)
    x, slope = ins[0].shape, ins[1].shape
    if broadcast_shape(x, slope, node) != tuple(x):  # unidirectional: slope broadcasts to x
        raise ShapeError(f"node '{node.name}' (PRelu): slope shape {slope} does not broadcast to {x}")
    return [TensorType(x, t)]


register("PRelu", _prelu_type, _binary_lower("PRelu"), inplace=True)


# -- Pow: base and exponent may have different types --------------------------------------------

def _pow_type(node, ins):
    check_types(node, ins[:1], NUMERIC, "base")
    check_types(node, ins[1:2], NUMERIC, "exponent")
    return [TensorType(operands_shape(node, ins), ins[0].dtype)]


def _pow_lower(ctx, node):
    base, exp = node.inputs[0], node.inputs[1]
    out = node.outputs[0]
    tb, te = ctx.dtype(base), ctx.dtype(exp)
    if tb in FLOAT or te not in FLOAT:
        # float base: the exponent in the base's type; integer base and exponent: exact
        # integer power in the base's type.
        return lower_binary(ctx, node, "Pow", cast_to(ctx, exp, tb))
    # Integer base, float exponent: computed in float64, truncated to the base's type.
    wide = ctx.scratch(ctx.shape(out), "float64")
    emit_binary(ctx, "Pow", cast_to(ctx, base, "float64"), cast_to(ctx, exp, "float64"), wide,
                aligned(node, ctx.shape(base), ctx.shape(exp)))
    cast(ctx, wide, out)


register("Pow", _pow_type, _pow_lower)


# -- variadic Sum, Mean, Max, Min ---------------------------------------------------------------

def _variadic_type(allowed):
    def infer(node, ins):
        if not ins or any(t is None for t in ins):
            raise ShapeError(f"node '{node.name}' ({node.op}): needs at least one input")
        t = check_types(node, ins, allowed)
        return [TensorType(broadcast_all([i.shape for i in ins], node), t)]
    return infer


def _variadic_lower(op):
    def lower(ctx, node):
        ins, out = node.inputs, node.outputs[0]
        if len(ins) == 1:
            ctx.kernel("copy", [ins[0]], [out], dtype="any",
                       ints=[math.prod(ctx.shape(out)) * dtypes.itemsize(ctx.dtype(out))])
            return
        # Accumulate into the output: out = in0 op in1, then out = out op in_k.
        step = "Add" if op in ("Sum", "Mean") else op
        emit_binary(ctx, step, ins[0], ins[1], out)
        for v in ins[2:]:
            emit_binary(ctx, step, out, v, out)
        if op == "Mean":  # the count is exact in every float type
            n = ctx.constant(np.array(len(ins), dtypes.to_numpy(ctx.dtype(out))))
            emit_binary(ctx, "Div", out, n, out)
    return lower


def _variadic_eval(op):
    def evaluate(node, ins):
        vals = [t.value for t in ins]
        acc = vals[0]
        for v in vals[1:]:
            acc = _NP["Add" if op in ("Sum", "Mean") else op](acc, v)
        if op == "Mean":
            acc = acc / len(vals)
        return [np.asarray(acc).astype(vals[0].dtype)]
    return evaluate


register("Sum", _variadic_type(NUMERIC), _variadic_lower("Sum"), evaluate=_variadic_eval("Sum"))
register("Mean", _variadic_type(FLOAT), _variadic_lower("Mean"), evaluate=_variadic_eval("Mean"))
register("Max", _variadic_type(NUMERIC), _variadic_lower("Max"), evaluate=_variadic_eval("Max"))
register("Min", _variadic_type(NUMERIC), _variadic_lower("Min"), evaluate=_variadic_eval("Min"))
