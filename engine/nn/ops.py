"""Keras ops as graph nodes: the operations (not layers) that Keras 3 functional models record
(`NotEqual` for an Embedding's mask_zero, arithmetic a user writes between layers: `x * 2`,
`a + b`), and the mask computations Keras runs inside layers (an Embedding's mask, the OR
of a merge layer's masks).

An op is called on tensors and constants: `NotEqual()(ids, 0)`. It has no weights and is not
one of a model's layers. Constants take the other operand's type through CastLike, so they
fit whatever element type the graph value has.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..dtypes import code
from ..errors import EngineError, ShapeError
from .base import Call, Layer
from .tensor import KerasTensor


def broadcast_shapes(a: tuple, b: tuple, where: str) -> tuple:
    """NumPy broadcasting of two symbolic shapes (None: unknown)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x == 1:
            out.append(y)
        elif y == 1 or x == y:
            out.append(x)
        elif x is None or y is None:
            out.append(x if y is None else y)
        else:
            raise ShapeError(f"{where}: shapes {a} and {b} do not broadcast")
    return tuple(out)


class OpLayer(Layer):
    """Base of ops: called with tensors and constants (`op(x, 0)`), which emit() gets as value
    names and numpy scalars/arrays in the same order."""

    is_op = True
    supports_masking = False

    def __init__(self, name: Optional[str] = None, **kw):
        super().__init__(name=name, **kw)

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise EngineError(f"{self.name}: unsupported call argument(s) {sorted(kwargs)}")
        tensors = [a for a in args if isinstance(a, KerasTensor)]
        if not tensors:
            raise EngineError(f"{self.name}: called without a symbolic tensor")
        consts = [None if isinstance(a, KerasTensor) else self._constant(a) for a in args]
        shapes = [a.shape if isinstance(a, KerasTensor) else c.shape for a, c in zip(args, consts)]
        dtypes = [a.dtype if isinstance(a, KerasTensor) else _const_dtype(c) for a, c in zip(args, consts)]
        shape, dtype = self.output_of(shapes, dtypes)
        call = Call(self, tensors, False, [None] * len(tensors), [None] * len(tensors), {})
        call.args = [None if isinstance(a, KerasTensor) else c for a, c in zip(args, consts)]
        call.outputs = [KerasTensor(shape, dtype, call, 0, self.name)]
        self.built = True
        return call.outputs[0]

    def _constant(self, v) -> np.ndarray:
        if isinstance(v, (bool, int, float, np.number, np.ndarray, list)):
            return np.asarray(v)
        raise EngineError(f"{self.name}: unsupported argument {v!r}")

    def output_of(self, shapes: list, dtypes: list) -> tuple:
        raise NotImplementedError

    def emit_call(self, g, call, name_of, out):
        names = iter(name_of(t) for t in call.inputs)
        args = [next(names) if c is None else c for c in call.args]
        ref = next(a for a in args if isinstance(a, str))
        vals = []
        for i, a in enumerate(args):
            if isinstance(a, str):
                vals.append(a)
            else:  # a constant takes the type of the tensor it meets
                raw = g.const(f"{out}/const{i}", a)
                vals.append(g.node("CastLike", [raw, ref], f"{out}/arg{i}"))
        return [self.emit_op(g, vals, out)]

    def emit_op(self, g, args: list, out: str) -> str:
        raise NotImplementedError


def _const_dtype(c: np.ndarray) -> str:
    return "bool" if c.dtype == np.bool_ else "float32" if c.dtype.kind == "f" else "int64"


def _promote(dtypes: list) -> str:
    floats = [d for d in dtypes if d.startswith("float") or d == "bfloat16"]
    return "float32" if floats else next((d for d in dtypes if d != "bool"), "bool")


class _Binary(OpLayer):
    onnx = ""
    result = None  # None: the promoted operand type; else this type (comparisons: bool)
    negate = False

    def output_of(self, shapes, dtypes):
        if len(shapes) != 2:
            raise EngineError(f"{self.name}: takes 2 arguments, got {len(shapes)}")
        return broadcast_shapes(shapes[0], shapes[1], self.name), self.result or _promote(dtypes)

    def emit_op(self, g, args, out):
        if self.negate:
            g.node(self.onnx, args, f"{out}/{self.onnx.lower()}")
            return g.node("Not", [f"{out}/{self.onnx.lower()}"], out)
        return g.node(self.onnx, args, out)


def _binary(name: str, onnx: str, result=None, negate=False):
    # a comparison reads integer ids as well as anything else (an Embedding's mask)
    return type(name, (_Binary,), {"onnx": onnx, "result": result, "negate": negate, "accepts_ids": result == "bool",
                                   "__doc__": f"Keras op {name}: elementwise {onnx} with broadcasting."})


NotEqual = _binary("NotEqual", "Equal", "bool", negate=True)
Equal = _binary("Equal", "Equal", "bool")
Greater = _binary("Greater", "Greater", "bool")
GreaterEqual = _binary("GreaterEqual", "GreaterOrEqual", "bool")
Less = _binary("Less", "Less", "bool")
LessEqual = _binary("LessEqual", "LessOrEqual", "bool")
LogicalAnd = _binary("LogicalAnd", "And", "bool")
LogicalOr = _binary("LogicalOr", "Or", "bool")
Add = _binary("Add", "Add")
Subtract = _binary("Subtract", "Sub")
Multiply = _binary("Multiply", "Mul")
Maximum = _binary("Maximum", "Max")
Minimum = _binary("Minimum", "Min")


class Divide(_Binary):
    """Keras op Divide / TrueDivide: true division (integers give float32)."""
    onnx = "Div"

    def output_of(self, shapes, dtypes):
        return broadcast_shapes(shapes[0], shapes[1], self.name), "float32"

    def emit_op(self, g, args, out):
        cast = [g.node("Cast", [a], f"{out}/float{i}", {"to": code("float32")}) for i, a in enumerate(args)]
        return g.node("Div", cast, out)


class LogicalNot(OpLayer):
    def output_of(self, shapes, dtypes):
        return shapes[0], "bool"

    def emit_op(self, g, args, out):
        return g.node("Not", args, out)


class Cast(OpLayer):
    def __init__(self, dtype="float32", name: Optional[str] = None, **kw):
        super().__init__(name=name, **kw)
        from .tensor import input_dtype
        self.to = input_dtype(dtype, self.name)

    def output_of(self, shapes, dtypes):
        return shapes[0], self.to

    def emit_op(self, g, args, out):
        return g.node("Cast", args, out, {"to": code(self.to)})


class ExpandDims(OpLayer):
    def __init__(self, axis=-1, name: Optional[str] = None, **kw):
        super().__init__(name=name, **kw)
        self.axis = axis

    def output_of(self, shapes, dtypes):
        shape = list(shapes[0])
        axis = self.axis if self.axis >= 0 else len(shape) + 1 + self.axis
        if not 0 < axis <= len(shape):  # the batch axis stays first
            raise ShapeError(f"{self.name}: axis {self.axis} out of range for shape {shapes[0]}")
        self.resolved = axis
        return tuple(shape[:axis] + [1] + shape[axis:]), dtypes[0]

    def emit_op(self, g, args, out):
        return g.node("Unsqueeze", [args[0], g.const(f"{out}/axes", np.array([self.resolved], np.int64))], out)


class _Like(OpLayer):
    """ZerosLike / OnesLike: a tensor of the input's shape filled with 0 / 1 of `dtype`."""
    fill = 0

    def __init__(self, dtype=None, name: Optional[str] = None, **kw):
        super().__init__(name=name, **kw)
        from .tensor import input_dtype
        self.to = None if dtype is None else input_dtype(dtype, self.name)

    def output_of(self, shapes, dtypes):
        return shapes[0], self.to or dtypes[0]

    def emit_op(self, g, args, out):
        shape = g.node("Shape", [args[0]], f"{out}/shape")
        value = g.const(f"{out}/value", np.array(self.fill, np.float32))
        g.node("Cast", [value], f"{out}/typed", {"to": code(self.to or g.dtypes.get(args[0], "float32"))})
        return g.node("Expand", [f"{out}/typed", shape], out)


class ZerosLike(_Like):
    fill = 0


class OnesLike(_Like):
    fill = 1


class Concatenate(OpLayer):
    """Keras op concatenate([a, b, ...], axis)."""

    def __init__(self, axis: int = 0, name: Optional[str] = None, **kw):
        super().__init__(name=name, **kw)
        self.axis = axis

    def __call__(self, tensors, **kwargs):
        if not isinstance(tensors, (list, tuple)):
            raise EngineError(f"{self.name}: concatenates a list of tensors")
        return super().__call__(*tensors, **kwargs)

    def output_of(self, shapes, dtypes):
        rank = len(shapes[0])
        axis = self.axis % rank
        if axis == 0 or any(len(s) != rank for s in shapes):
            raise ShapeError(f"{self.name}: cannot concatenate {shapes} on axis {self.axis}")
        out = list(shapes[0])
        out[axis] = None if any(s[axis] is None for s in shapes) else sum(s[axis] for s in shapes)
        self.resolved = axis
        return tuple(out), _promote(dtypes)

    def emit_op(self, g, args, out):
        return g.node("Concat", args, out, {"axis": self.resolved})


class _Reduce(OpLayer):
    """Any / All over one axis of a bool tensor (Keras ops.any / ops.all)."""
    pick = "ReduceMax"

    def __init__(self, axis=-1, keepdims: bool = False, name: Optional[str] = None, **kw):
        super().__init__(name=name, **kw)
        self.axis, self.keepdims = axis, keepdims

    def output_of(self, shapes, dtypes):
        shape = list(shapes[0])
        if not isinstance(self.axis, int):
            raise EngineError(f"{self.name}: axis must be one int, got {self.axis!r}")
        axis = self.axis % len(shape)
        if axis == 0:
            raise ShapeError(f"{self.name}: reducing the batch axis is not supported")
        self.resolved = axis
        shape = shape[:axis] + ([1] if self.keepdims else []) + shape[axis + 1:]
        return tuple(shape), "bool"

    def emit_op(self, g, args, out):
        g.node("Cast", [args[0]], f"{out}/u8", {"to": code("float32")})
        g.node(self.pick, [f"{out}/u8", g.const(f"{out}/axes", np.array([self.resolved], np.int64))],
               f"{out}/reduced", {"keepdims": int(self.keepdims)})
        return g.node("Cast", [f"{out}/reduced"], out, {"to": code("bool")})


class Any(_Reduce):
    pick = "ReduceMax"


class All(_Reduce):
    pick = "ReduceMin"


# Keras 3 op class names a functional config may hold -> class (TrueDivide is Divide's twin).
OPS = {c.__name__: c for c in (NotEqual, Equal, Greater, GreaterEqual, Less, LessEqual, LogicalAnd,
                               LogicalOr, LogicalNot, Add, Subtract, Multiply, Maximum, Minimum, Divide,
                               Cast, ExpandDims, Any, All, ZerosLike, OnesLike, Concatenate)}
OPS["TrueDivide"] = Divide
