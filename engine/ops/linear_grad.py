"""Backward rules of Dense, MatMul and Gemm (engine/ops/linear.py)."""

from __future__ import annotations

from ..graph import Node
from .activations import resolve
from .elementwise_grad import FROM_Y, NEEDS_NOTHING
from .grad_registry import backward_rule, training_form

_ACT_ATTRS = ("activation", "activation_alpha", "activation_beta")


def activation_backward(gb, node, dy: str, y: str, x_pre=None) -> str:
    """dy through the fused `activation` attribute of node (y its output). Activations whose
    derivative reads the pre-activation are not fused in training graphs (see
    dense_training), so y is what the derivative needs."""
    act, a, b = resolve(node.attrs, node.name)
    if act == 0:
        return dy
    return gb.node("ActGrad", [dy, x_pre or "", y], attrs={"act": act, "alpha": a, "beta": b},
                   base=f"grad/{node.outputs[0]}/act")


@training_form("Dense")
def dense_training(gb, node):
    """Dense in a training graph: the activation stays fused when its derivative reads only the
    output (relu, sigmoid, tanh, ...); otherwise Dense without it, then an Activation node,
    whose rule reads the pre-activation."""
    act, _, _ = resolve(node.attrs, node.name)
    gb._names.add(node.name)
    if act == 0 or act in FROM_Y or act in NEEDS_NOTHING:
        gb.add(Node(node.op, list(node.inputs), list(node.outputs), dict(node.attrs), node.name))
        return
    pre = gb.fresh(f"{node.outputs[0]}/linear")
    gb.add(Node("Dense", list(node.inputs), [pre], {k: v for k, v in node.attrs.items() if k not in _ACT_ATTRS},
                node.name))
    gb.add(Node("Activation", [pre], list(node.outputs), {k: v for k, v in node.attrs.items() if k in _ACT_ATTRS},
                gb.fresh(f"{node.name}/activation")))


@backward_rule("Dense")
def dense_backward(gb, node, dys):
    x, w = node.inputs[:2]
    b = node.inputs[2] if len(node.inputs) > 2 else ""
    dz = activation_backward(gb, node, dys[0], node.outputs[0])
    want = [gb.needs(x), gb.needs(w), gb.needs(b)]
    base = f"grad/{node.outputs[0]}"
    outs = [f"{base}/{k}" if want[i] else "" for i, k in enumerate(("dx", "dw", "db"))]
    outs = [gb.fresh(o) if o else "" for o in outs]
    gb.node("DenseGrad", [dz, x, w], outs)
    return [o or None for o in outs]


@backward_rule("MatMul")
def matmul_backward(gb, node, dys):
    a, b = node.inputs[:2]
    dy = dys[0]
    sa, sb = gb.shape(a), gb.shape(b)
    da = db = None
    # A 1-D operand is a row (a) or a column (b): lift, differentiate, drop.
    a2 = a if len(sa) > 1 else gb.node("Reshape", [a], attrs={"shape": [1, sa[0]]})
    b2 = b if len(sb) > 1 else gb.node("Reshape", [b], attrs={"shape": [sb[0], 1]})
    y2shape = _matmul_shape(gb.shape(a2), gb.shape(b2))
    dy2 = gb.node("Reshape", [dy], attrs={"shape": list(y2shape)}) if gb.shape(dy) != y2shape else dy
    if gb.needs(a):
        bt = gb.node("Transpose", [b2], attrs={"perm": _swap_last(len(gb.shape(b2)))})
        da = gb.sum_to(gb.node("MatMul", [dy2, bt]), gb.shape(a2))
        if gb.shape(da) != sa:
            da = gb.node("Reshape", [da], attrs={"shape": list(sa)})
    if gb.needs(b):
        at = gb.node("Transpose", [a2], attrs={"perm": _swap_last(len(gb.shape(a2)))})
        db = gb.sum_to(gb.node("MatMul", [at, dy2]), gb.shape(b2))
        if gb.shape(db) != sb:
            db = gb.node("Reshape", [db], attrs={"shape": list(sb)})
    return [da, db]


def _swap_last(rank: int) -> list:
    return list(range(rank - 2)) + [rank - 1, rank - 2]


def _matmul_shape(a, b) -> tuple:
    import numpy as np
    batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return tuple(batch) + (a[-2], b[-1])


@backward_rule("Gemm")
def gemm_backward(gb, node, dys):
    a, b = node.inputs[:2]
    c = node.inputs[2] if len(node.inputs) > 2 else ""
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    dy = dys[0]
    if alpha != 1.0:
        dy_s = gb.node("Mul", [dy, gb.const(_f32(alpha))])
    else:
        dy_s = dy
    da = db = dc = None
    if gb.needs(a):  # op(A) = dY·op(B)ᵀ
        da = (gb.node("Gemm", [b, dy_s], attrs={"transA": tb, "transB": 1}) if ta
              else gb.node("Gemm", [dy_s, b], attrs={"transA": 0, "transB": 1 - tb}))
    if gb.needs(b):  # op(B) = op(A)ᵀ·dY
        db = (gb.node("Gemm", [dy_s, a], attrs={"transA": 1, "transB": ta}) if tb
              else gb.node("Gemm", [a, dy_s], attrs={"transA": 1 - ta, "transB": 0}))
    if c and gb.needs(c):
        dcs = gb.sum_to(dy, gb.shape(c))
        dc = dcs if beta == 1.0 else gb.node("Mul", [dcs, gb.const(_f32(beta))])
    return [da, db, dc]


def _f32(v):
    import numpy as np
    return np.float32(v)
