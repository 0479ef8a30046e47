"""Backward rules of the elementwise ops: arithmetic with broadcasting (Add, Sub, Mul, Div,
Pow by a constant, Sum, Mean, Where, Neg) and the activations (through the ActGrad op on the
native activation derivatives)."""

from __future__ import annotations

import numpy as np

from ..errors import EngineError
from .activations import ACTIVATIONS, fusable_activation, resolve
from .grad_registry import backward_rule


def _to(gb, grad, name):
    """grad summed back to input `name`'s shape (if it was broadcast)."""
    return gb.sum_to(grad, gb.shape(name)) if gb.needs(name) else None


@backward_rule("Add")
def add_backward(gb, node, dys):
    a, b = node.inputs[:2]
    return [_to(gb, dys[0], a), _to(gb, dys[0], b)]


@backward_rule("Sub")
def sub_backward(gb, node, dys):
    a, b = node.inputs[:2]
    db = gb.node("Neg", [dys[0]]) if gb.needs(b) else None
    return [_to(gb, dys[0], a), _to(gb, db, b) if db else None]


@backward_rule("Mul")
def mul_backward(gb, node, dys):
    a, b = node.inputs[:2]
    da = _to(gb, gb.node("Mul", [dys[0], b]), a) if gb.needs(a) else None
    db = _to(gb, gb.node("Mul", [dys[0], a]), b) if gb.needs(b) else None
    return [da, db]


@backward_rule("Div")
def div_backward(gb, node, dys):
    a, b = node.inputs[:2]
    da = _to(gb, gb.node("Div", [dys[0], b]), a) if gb.needs(a) else None
    db = None
    if gb.needs(b):  # d(a/b)/db = -y/b
        t = gb.node("Div", [node.outputs[0], b])
        db = _to(gb, gb.node("Neg", [gb.node("Mul", [dys[0], t])]), b)
    return [da, db]


@backward_rule("Neg")
def neg_backward(gb, node, dys):
    return [gb.node("Neg", [dys[0]])]


@backward_rule("Sum")
def sum_backward(gb, node, dys):
    return [_to(gb, dys[0], i) for i in node.inputs]


@backward_rule("Mean")
def mean_backward(gb, node, dys):
    scaled = gb.node("Mul", [dys[0], gb.const(np.float32(1.0 / len(node.inputs)))])
    return [_to(gb, scaled, i) for i in node.inputs]


@backward_rule("Where")
def where_backward(gb, node, dys):
    cond, a, b = node.inputs[:3]
    zero = gb.const(np.float32(0.0))
    da = _to(gb, gb.node("Where", [cond, dys[0], zero]), a) if gb.needs(a) else None
    db = _to(gb, gb.node("Where", [cond, zero, dys[0]]), b) if gb.needs(b) else None
    return [None, da, db]


@backward_rule("Pow")
def pow_backward(gb, node, dys):
    x, p = node.inputs[:2]
    if gb.needs(p) or gb.value(p) is None:
        from ..autograd import NoGradientError
        raise NoGradientError(f"node '{node.name}' (Pow): only a constant exponent has a backward rule")
    e = float(np.asarray(gb.value(p)).reshape(-1)[0]) if np.size(gb.value(p)) == 1 else None
    if e is None:
        from ..autograd import NoGradientError
        raise NoGradientError(f"node '{node.name}' (Pow): only a scalar exponent has a backward rule")
    if e == 2.0:
        d = gb.node("Mul", [x, gb.const(np.float32(2.0))])
    else:
        d = gb.node("Mul", [gb.node("Pow", [x, gb.const(np.float32(e - 1.0))]), gb.const(np.float32(e))])
    return [gb.node("Mul", [dys[0], d]), None]


# -- activations -----------------------------------------------------------------------------

# Codes the act_grad step knows beyond the native Act enum (their forward is math_unary).
EXTRA_CODES = {"Softsign": (64, 0.0, 0.0), "HardSwish": (65, 0.0, 0.0), "Mish": (66, 0.0, 0.0)}
# Derivatives the step computes from the output y (the rest read the input x).
FROM_Y = {ACTIVATIONS[k][0] for k in ("relu", "sigmoid", "tanh", "exp", "sqrt", "reciprocal")}
NEEDS_NOTHING = {ACTIVATIONS[k][0] for k in ("linear", "neg")}


def act_backward(gb, x: str, y: str, dy: str, code: int, alpha: float, beta: float) -> str:
    if code in NEEDS_NOTHING:
        return dy if code == ACTIVATIONS["linear"][0] else gb.node("Neg", [dy])
    ins = [dy, "", y] if code in FROM_Y else [dy, x, ""]
    return gb.node("ActGrad", ins, attrs={"act": code, "alpha": alpha, "beta": beta})


def _code_of(gb, node):
    if node.op in EXTRA_CODES:
        return EXTRA_CODES[node.op]
    if node.op == "Activation":
        return resolve(node.attrs, node.name)
    found = fusable_activation(node, gb.values)
    if found is None:
        from ..autograd import NoGradientError
        raise NoGradientError(f"node '{node.name}': op {node.op} with these attributes has no backward rule")
    name, a, b = found
    return ACTIVATIONS[name][0], a, b


ACTIVATION_OPS = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Gelu", "GeluTanh", "Elu", "Selu", "Silu", "Swish",
                  "Softplus", "HardSigmoid", "Clip", "Exp", "Log", "Sqrt", "Abs", "Reciprocal", "Erf", "Square",
                  "Activation", "Softsign", "HardSwish", "Mish")


@backward_rule(*ACTIVATION_OPS)
def activation_backward(gb, node, dys):
    code, a, b = _code_of(gb, node)
    if node.op == "Clip" and any(gb.needs(i) for i in node.inputs[1:] if i):
        raise EngineError(f"node '{node.name}' (Clip): bounds computed from trained values have no backward rule")
    if gb.dtype(node.inputs[0]) != "float32":
        raise EngineError(f"node '{node.name}' ({node.op}): training is float32 only, got {gb.dtype(node.inputs[0])}")
    dx = act_backward(gb, node.inputs[0], node.outputs[0], dys[0], code, a, b)
    return [dx] + [None] * (len(node.inputs) - 1)
