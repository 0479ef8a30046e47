"""Backward rules of Softmax and LogSoftmax (engine/ops/softmax.py), from their output y
through SoftmaxGrad (engine/ops/grad_ops.py, the native `softmax_grad` step). float32."""

from __future__ import annotations

from ..errors import DTypeError
from .grad_registry import backward_rule
from .softmax import view


@backward_rule("Softmax", "LogSoftmax")
def softmax_backward(gb, node, dys):
    x, y = node.inputs[0], node.outputs[0]
    if gb.dtype(x) != "float32":
        raise DTypeError(f"node '{node.name}' ({node.op}): training needs float32, got {gb.dtype(x)}")
    shape = gb.shape(x)
    view3 = list(view(node, shape))  # (outer, n, inner), coerce_2d included
    attrs = {"axis": 1, "log": int(node.op == "LogSoftmax")}
    base = f"grad/{node.outputs[0]}"
    if list(shape) == view3:
        return [gb.node("SoftmaxGrad", [dys[0], y], attrs=attrs, base=base)]
    dy3 = gb.node("Reshape", [dys[0]], attrs={"shape": view3})
    y3 = gb.node("Reshape", [y], attrs={"shape": view3})
    dx3 = gb.node("SoftmaxGrad", [dy3, y3], attrs=attrs, base=base)
    return [gb.node("Reshape", [dx3], attrs={"shape": list(shape)})]
