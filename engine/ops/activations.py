"""Activation names (Keras and ONNX spellings) mapped to the native kernel enum; unary
activation ops; and the `activation` attribute that Dense/Conv2D fuse into their epilogue."""

from __future__ import annotations

import math

from ..errors import GraphError
from .registry import register, same_as_input


class A:
    """Codes of the native activation enum (csrc/include/engine/common.h, `enum class Act`);
    tests/test_graph_ops.py checks they equal engine._C.Act."""
    none, relu, leaky_relu, sigmoid, tanh, gelu, gelu_tanh, elu, selu, silu, softplus = range(11)
    hard_sigmoid, clip, exp, log, sqrt, neg, abs, reciprocal, square, erf, identity = range(11, 22)


# name -> (kernel enum, default alpha, default beta)
ACTIVATIONS = {
    None: (A.none, 0.0, 0.0), "linear": (A.none, 0.0, 0.0), "identity": (A.none, 0.0, 0.0),
    "relu": (A.relu, 0.0, 0.0),
    "leaky_relu": (A.leaky_relu, 0.2, 0.0),  # Keras default negative slope
    "sigmoid": (A.sigmoid, 0.0, 0.0), "tanh": (A.tanh, 0.0, 0.0),
    "gelu": (A.gelu, 0.0, 0.0), "gelu_tanh": (A.gelu_tanh, 0.0, 0.0),
    "elu": (A.elu, 1.0, 0.0), "selu": (A.selu, 0.0, 0.0),
    "silu": (A.silu, 0.0, 0.0), "swish": (A.silu, 0.0, 0.0),
    "softplus": (A.softplus, 0.0, 0.0),
    "hard_sigmoid": (A.hard_sigmoid, 1.0 / 6.0, 0.5),  # Keras 3: relu6(x + 3) / 6
    "clip": (A.clip, -math.inf, math.inf),
    "exp": (A.exp, 0.0, 0.0), "exponential": (A.exp, 0.0, 0.0),
    "log": (A.log, 0.0, 0.0), "sqrt": (A.sqrt, 0.0, 0.0), "neg": (A.neg, 0.0, 0.0),
    "abs": (A.abs, 0.0, 0.0), "reciprocal": (A.reciprocal, 0.0, 0.0),
    "square": (A.square, 0.0, 0.0), "erf": (A.erf, 0.0, 0.0),
}


def resolve(attrs: dict, node: str = "") -> tuple:
    """The (enum, alpha, beta) for a node's `activation` attribute (+ optional
    `activation_alpha` / `activation_beta`)."""
    name = attrs.get("activation")
    if name not in ACTIVATIONS:
        known = ", ".join(sorted(k for k in ACTIVATIONS if k))
        raise GraphError(f"node '{node}': unknown activation '{name}' (known: {known})")
    act, alpha, beta = ACTIVATIONS[name]
    return (act, number(attrs, "activation_alpha", alpha, node),
            number(attrs, "activation_beta", beta, node))


def number(attrs: dict, key: str, default: float, node: str = "") -> float:
    """attrs[key] (or default) as a float; GraphError naming the node if it is not a number."""
    v = attrs.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise GraphError(f"node '{node}': attribute '{key}' must be a number, got {v!r}")
    return float(v)


def check_activation(node) -> None:
    resolve(node.attrs, node.name)


def _emit(ctx, node, act, alpha, beta):
    x, y = node.inputs[0], node.outputs[0]
    ctx.kernel("activation", [x], [y], ints=[math.prod(ctx.shape(x)), act], floats=[alpha, beta])


# Standalone activation ops (ONNX names). Attributes `alpha`/`beta` (and `min`/`max` for
# Clip) override the defaults.
UNARY_OPS = {
    "Relu": "relu", "LeakyRelu": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh",
    "Gelu": "gelu", "GeluTanh": "gelu_tanh", "Elu": "elu", "Selu": "selu", "Silu": "silu",
    "Softplus": "softplus", "HardSigmoid": "hard_sigmoid", "Clip": "clip", "Exp": "exp",
    "Log": "log", "Sqrt": "sqrt", "Neg": "neg", "Abs": "abs", "Reciprocal": "reciprocal",
    "Square": "square", "Erf": "erf",
}


def _unary(name: str):
    act, alpha, beta = ACTIVATIONS[name]

    def params(node):
        at, n = node.attrs, node.name
        a, b = number(at, "min", alpha, n), number(at, "max", beta, n)
        return number(at, "alpha", a, n), number(at, "beta", b, n)

    def forward(ctx, node):
        _emit(ctx, node, act, *params(node))

    return forward, params


for _op, _name in UNARY_OPS.items():
    _forward, _params = _unary(_name)
    register(_op, same_as_input, _forward, inplace=True, check=_params)


def _activation_op(ctx, node):
    _emit(ctx, node, *resolve(node.attrs, node.name))


# Generic form: Activation(activation="relu"), as Keras's Activation layer.
register("Activation", same_as_input, _activation_op, inplace=True, check=check_activation)
