"""Binary ops with numpy broadcasting: Add, Sub, Mul, Div, Max, Min, Pow."""

from __future__ import annotations

from .. import _C
from ..errors import ShapeError
from .registry import register


def broadcast_shape(a: tuple, b: tuple, node) -> tuple:
    """numpy broadcasting of two shapes; ShapeError naming the node if they do not."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for i, (p, q) in enumerate(zip(a, b)):
        if p != q and 1 not in (p, q):
            raise ShapeError(f"node '{node.name}' ({node.op}): shapes {a} and {b} do not "
                             f"broadcast (dim {i}: {p} vs {q})")
        out.append(max(p, q) if 0 not in (p, q) else 0)
    return tuple(out)


def binary_shape(node, shapes):
    return [broadcast_shape(tuple(shapes[0]), tuple(shapes[1]), node)]


def broadcast_strides(shape: tuple, out: tuple) -> list[int]:
    """Element strides of `shape` viewed as `out` (left-padded), 0 on broadcast dims."""
    shape = (1,) * (len(out) - len(shape)) + tuple(shape)
    strides, step = [0] * len(out), 1
    for d in range(len(out) - 1, -1, -1):
        strides[d] = 0 if shape[d] == 1 else step
        step *= shape[d]
    return strides


def _binary(op):
    def forward(ctx, node):
        a, b = node.inputs
        out = ctx.shape(node.outputs[0])
        ctx.program.binary(ctx.slot(node.outputs[0]), ctx.slot(a), ctx.slot(b), op, list(out),
                           broadcast_strides(ctx.shape(a), out), broadcast_strides(ctx.shape(b), out))
    return forward


B = _C.BinaryOp
for _name, _op in {"Add": B.add, "Sub": B.sub, "Mul": B.mul, "Div": B.div, "Max": B.max,
                   "Min": B.min, "Pow": B.pow}.items():
    register(_name, binary_shape, _binary(_op), inplace=True)
