"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot.

Masks as Keras 3 computes them: the output mask is the OR of the inputs' masks when every
input has one (Concatenate: per concatenated position, unmasked inputs counting as all
true); Multiply treats masked positions as 1 and zeroes the positions no input keeps;
Maximum / Minimum let a masked position take the other operand's value.
"""

from __future__ import annotations

import string

import numpy as np

from ..dtypes import code
from ..errors import EngineError, ShapeError
from . import ops
from .base import Layer
from .ops import broadcast_shapes


def _i64(v) -> np.ndarray:
    return np.array(list(v), np.int64)


class _Merge(Layer):
    supports_masking = True
    onnx = ""

    def _check_list(self, input_shape):
        if not isinstance(input_shape, list) or len(input_shape) < 1:
            raise EngineError(f"{self.name}: a merge layer is called on a list of tensors")

    def compute_output_shape(self, input_shape):
        self._check_list(input_shape)
        out = input_shape[0][1:]
        for s in input_shape[1:]:
            out = broadcast_shapes(out, s[1:], self.name) if len(s) == len(input_shape[0]) else \
                self._ranked(out, s[1:])
        return (input_shape[0][0],) + tuple(out)

    def _ranked(self, a, b):
        # Keras expands the lower-rank inputs at axis 1 until the ranks match.
        a, b = tuple(a), tuple(b)
        if len(a) < len(b):
            a = (1,) * (len(b) - len(a)) + a
        else:
            b = (1,) * (len(a) - len(b)) + b
        return broadcast_shapes(a, b, self.name)

    def compute_mask(self, inputs, mask):
        if mask is None or any(m is None for m in mask):
            return None
        out = mask[0]
        for m in mask[1:]:
            out = ops.LogicalOr()(out, m)
        return out

    def _aligned(self, g, xs: list, out: str) -> list:
        """The inputs with the lower-rank ones expanded at axis 1 (Keras's rule)."""
        ranks = [len(self.input_shape[i]) for i in range(len(xs))]
        top = max(ranks)
        aligned = []
        for i, (x, r) in enumerate(zip(xs, ranks)):
            if r < top:
                x = g.node("Unsqueeze", [x, g.const(f"{out}/axes{i}", _i64(range(1, 1 + top - r)))], f"{out}/in{i}")
            aligned.append(x)
        return aligned

    def emit(self, g, x, out, mask=None):
        xs = self._aligned(g, x, out)
        acc = xs[0]
        for i, v in enumerate(xs[1:], 1):
            acc = g.node(self.onnx, [acc, v], out if i == len(xs) - 1 else f"{out}/{i}")
        return acc if len(xs) > 1 else g.node("Identity", [acc], out)


class Add(_Merge):
    onnx = "Add"


class Subtract(_Merge):
    onnx = "Sub"

    def build(self, input_shape):
        self._check_list(input_shape)
        if len(input_shape) != 2:
            raise EngineError(f"{self.name}: Subtract takes exactly 2 inputs, got {len(input_shape)}")


class Average(_Merge):
    onnx = "Add"

    def emit(self, g, x, out, mask=None):
        total = super().emit(g, x, f"{out}/sum")
        return g.node("Mul", [total, g.const(f"{out}/scale", np.float32(1.0 / len(x)))], out)


def _mask3(g, m: str, out: str, i: int) -> str:
    """A (batch, steps) mask as (batch, steps, 1), to select whole feature rows."""
    return g.node("Unsqueeze", [m, g.const(f"{out}/mask_axes", _i64([-1]))], f"{out}/mask{i}")


class Multiply(_Merge):
    onnx = "Mul"
    consumes_mask = True

    def emit(self, g, x, out, mask=None):
        masks = mask or [None] * len(x)
        if all(m is None for m in masks):
            return super().emit(g, x, out)
        xs, one = self._aligned(g, x, out), g.const(f"{out}/one", np.float32(1.0))
        acc = None
        for i, (v, m) in enumerate(zip(xs, masks)):
            if m is not None:  # masked positions count as 1
                v = g.node("Where", [_mask3(g, m, out, i), v, one], f"{out}/kept{i}")
            acc = v if acc is None else g.node("Mul", [acc, v], f"{out}/prod{i}")
        if any(m is None for m in masks):
            return g.node("Identity", [acc], out)
        keep = masks[0]
        for i, m in enumerate(masks[1:], 1):
            keep = g.node("Or", [keep, m], f"{out}/or{i}")
        return g.node("Where", [_mask3(g, keep, out, len(xs)), acc, g.const(f"{out}/zero", np.float32(0.0))], out)


class _Extreme(_Merge):
    """Maximum / Minimum with Keras's mask handling (_apply_merge_op_and_or_mask)."""
    consumes_mask = True

    def emit(self, g, x, out, mask=None):
        masks = mask or [None] * len(x)
        if all(m is None for m in masks):
            return super().emit(g, x, out)
        xs = self._aligned(g, x, out)
        acc, acc_mask = xs[0], masks[0]
        for i, (v, m) in enumerate(zip(xs[1:], masks[1:]), 1):
            if m is not None:
                v = g.node("Where", [_mask3(g, m, out, i), v, acc], f"{out}/x{i}")
            if acc_mask is not None:
                acc = g.node("Where", [_mask3(g, acc_mask, f"{out}/acc{i}", i), acc, v], f"{out}/acc{i}")
            acc_mask = g.node("Or", [acc_mask, m], f"{out}/or{i}") if m is not None and acc_mask is not None else None
            acc = g.node(self.onnx, [acc, v], f"{out}/{i}")
        return g.node("Identity", [acc], out)


class Maximum(_Extreme):
    onnx = "Max"


class Minimum(_Extreme):
    onnx = "Min"


class Concatenate(_Merge):
    def __init__(self, axis: int = -1, **kw):
        super().__init__(**kw)
        self.axis = axis

    def compute_output_shape(self, input_shape):
        self._check_list(input_shape)
        rank = len(input_shape[0])
        if any(len(s) != rank for s in input_shape):
            raise ShapeError(f"{self.name}: inputs must have the same rank, got {input_shape}")
        axis = self.axis % rank
        if axis == 0:
            raise ShapeError(f"{self.name}: cannot concatenate along the batch axis")
        out = list(input_shape[0])
        for s in input_shape[1:]:
            for d in range(1, rank):
                if d != axis and None not in (s[d], out[d]) and s[d] != out[d]:
                    raise ShapeError(f"{self.name}: shapes {input_shape} differ off the concatenation axis")
                if d != axis and out[d] is None:
                    out[d] = s[d]
        out[axis] = None if any(s[axis] is None for s in input_shape) else sum(s[axis] for s in input_shape)
        return tuple(out)

    def compute_mask(self, inputs, mask):
        if mask is None or all(m is None for m in mask):
            return None
        present = [m is not None for m in mask]
        return _ConcatMask(self.axis, present, len(inputs[0].shape))(*inputs, *[m for m in mask if m is not None])

    def emit(self, g, x, out):
        return g.node("Concat", x, out, {"axis": self.axis % len(self.input_shape[0])})


class _ConcatMask(ops.OpLayer):
    """Keras's Concatenate.compute_mask: every input's mask broadcast to its shape (all true
    for an unmasked input), concatenated along the axis, then any() over the last axis."""

    def __init__(self, axis: int, present: list, rank: int, **kw):
        super().__init__(**kw)
        self.axis, self.present, self.rank = axis, present, rank

    def output_of(self, shapes, dtypes):
        xs = shapes[:len(self.present)]
        axis = self.axis % self.rank
        out = list(xs[0])
        out[axis] = None if any(s[axis] is None for s in xs) else sum(s[axis] for s in xs)
        return tuple(out[:-1]), "bool"

    def emit_op(self, g, args, out):
        n = len(self.present)
        xs, masks = args[:n], iter(args[n:])
        parts = []
        for i, (x, has) in enumerate(zip(xs, self.present)):
            shape = g.node("Shape", [x], f"{out}/shape{i}")
            if has:
                m = g.node("Unsqueeze", [next(masks), g.const(f"{out}/axes{i}", _i64([-1]))], f"{out}/m{i}")
                parts.append(g.node("Expand", [m, shape], f"{out}/full{i}"))
            else:
                parts.append(g.node("Expand", [g.const(f"{out}/true", np.array(True)), shape], f"{out}/full{i}"))
        g.node("Concat", parts, f"{out}/cat", {"axis": self.axis % self.rank})
        g.node("Cast", [f"{out}/cat"], f"{out}/catf", {"to": code("float32")})
        g.node("ReduceMax", [f"{out}/catf", g.const(f"{out}/last", _i64([-1]))], f"{out}/any", {"keepdims": 0})
        return g.node("Cast", [f"{out}/any"], out, {"to": code("bool")})


class Dot(_Merge):
    """Keras Dot: batch_dot over `axes` (an int or one per input), optionally of the
    L2-normalised inputs; a result of rank 1 becomes (batch, 1)."""

    def __init__(self, axes, normalize: bool = False, **kw):
        super().__init__(**kw)
        if isinstance(axes, int) and not isinstance(axes, bool):
            self.axes = axes
        elif isinstance(axes, (list, tuple)) and len(axes) == 2 and all(isinstance(a, int) for a in axes):
            self.axes = tuple(axes)
        else:
            raise EngineError(f"{self.name}: axes must be an int or 2 ints, got {axes!r}")
        self.normalize = bool(normalize)

    def _resolved(self, shapes) -> list:
        axes = [self.axes] * 2 if isinstance(self.axes, int) else list(self.axes)
        out = [a % len(s) for a, s in zip(axes, shapes)]
        if 0 in out:
            raise ShapeError(f"{self.name}: cannot dot over the batch axis")
        return out

    def compute_output_shape(self, input_shape):
        self._check_list(input_shape)
        if len(input_shape) != 2:
            raise EngineError(f"{self.name}: Dot takes exactly 2 inputs, got {len(input_shape)}")
        a, b = input_shape
        ax = self._resolved(input_shape)
        if None not in (a[ax[0]], b[ax[1]]) and a[ax[0]] != b[ax[1]]:
            raise ShapeError(f"{self.name}: dims {a[ax[0]]} and {b[ax[1]]} of {a} and {b} differ")
        rest = [d for i, d in enumerate(a) if i not in (0, ax[0])] + [d for i, d in enumerate(b) if i not in (0, ax[1])]
        return (a[0],) + (tuple(rest) if rest else (1,))

    def compute_mask(self, inputs, mask):
        return None

    def emit(self, g, x, out):
        a, b = x
        ra, rb = (len(s) for s in self.input_shape)
        ax = self._resolved(self.input_shape)
        if self.normalize:
            a, b = (self._l2(g, v, axis, f"{out}/norm{i}") for i, (v, axis) in enumerate(zip((a, b), ax)))
        letters = iter(string.ascii_lowercase[1:])
        k = next(letters)
        la = ["a"] + [k if i == ax[0] else next(letters) for i in range(1, ra)]
        lb = ["a"] + [k if i == ax[1] else next(letters) for i in range(1, rb)]
        res = ["a"] + [c for c in la[1:] if c != k] + [c for c in lb[1:] if c != k]
        eq = f"{''.join(la)},{''.join(lb)}->{''.join(res)}"
        if len(res) > 1:
            return g.node("Einsum", [a, b], out, {"equation": eq})
        g.node("Einsum", [a, b], f"{out}/dot", {"equation": eq})
        return g.node("Unsqueeze", [f"{out}/dot", g.const(f"{out}/axes", _i64([1]))], out)

    @staticmethod
    def _l2(g, x: str, axis: int, out: str) -> str:
        """Keras's normalize: x · min(1/‖x‖, 1e7) along `axis`."""
        g.node("ReduceSumSquare", [x, g.const(f"{out}/axes", _i64([axis]))], f"{out}/ss", {"keepdims": 1})
        g.node("Sqrt", [f"{out}/ss"], f"{out}/norm")
        g.node("Reciprocal", [f"{out}/norm"], f"{out}/inv")
        g.node("Min", [f"{out}/inv", g.const(f"{out}/cap", np.float32(1e7))], f"{out}/capped")
        return g.node("Mul", [x, f"{out}/capped"], out)
