"""Binary ops with numpy broadcasting: Add, Sub, Mul, Div, Max, Min, Pow."""

from __future__ import annotations

from ..errors import ShapeError
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


def binary_type(node, ins):
    return [TensorType(broadcast_shape(ins[0].shape, ins[1].shape, node), ins[0].dtype)]


def broadcast_strides(shape: tuple, out: tuple) -> list[int]:
    """Element strides of `shape` viewed as `out` (left-padded), 0 on broadcast dims."""
    shape = (1,) * (len(out) - len(shape)) + tuple(shape)
    strides, step = [0] * len(out), 1
    for d in range(len(out) - 1, -1, -1):
        strides[d] = 0 if shape[d] == 1 else step
        step *= shape[d]
    return strides


# Codes of the native enum BinaryOp (csrc/include/engine/elementwise.h).
BINARY_CODES = {"Add": 0, "Sub": 1, "Mul": 2, "Div": 3, "Max": 4, "Min": 5, "Pow": 6}


def _binary(code):
    def lower(ctx, node):
        a, b = node.inputs
        out = ctx.shape(node.outputs[0])
        ctx.kernel("binary", [a, b], node.outputs,
                   ints=[code, len(out), *out, *broadcast_strides(ctx.shape(a), out),
                         *broadcast_strides(ctx.shape(b), out)])
    return lower


for _name, _code in BINARY_CODES.items():
    register(_name, binary_type, _binary(_code), inplace=True)
