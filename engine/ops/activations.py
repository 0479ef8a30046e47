"""Activations: the ONNX-named activation ops (ONNX defaults, every float type; Relu also on
signed integers, Shrink and Clip on every numeric type), the generic Keras-style `Activation`
op, and the `activation` attribute that Dense/Conv2D fuse into their epilogue (Keras names,
native Act enum)."""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes
from ..errors import GraphError, ShapeError
from .registry import TensorType, register, same_as_input
from .unary import FLOAT, NUMERIC, SIGNED_OR_FLOAT, check_type, number, register_unary

__all__ = ["A", "ACTIVATIONS", "UNARY_OPS", "resolve", "number", "check_activation", "fusable_activation"]


class A:
    """Codes of the native activation enum (csrc/include/engine/common.h, `enum class Act`);
    tests/test_graph_ops.py checks they equal engine._C.Act."""
    none, relu, leaky_relu, sigmoid, tanh, gelu, gelu_tanh, elu, selu, silu, softplus = range(11)
    hard_sigmoid, clip, exp, log, sqrt, neg, abs, reciprocal, square, erf, identity = range(11, 22)


# Keras activation name -> (kernel enum, default alpha, default beta): the `activation`
# attribute of Dense/Conv2D and the generic Activation op.
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
    "sparse_sigmoid": (A.hard_sigmoid, 0.5, 0.5),       # clip((x + 1) / 2, 0, 1)
    "clip": (A.clip, -math.inf, math.inf),
    "relu6": (A.clip, 0.0, 6.0), "hard_tanh": (A.clip, -1.0, 1.0),
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


def check_activation(node) -> None:
    resolve(node.attrs, node.name)


# -- the ONNX-named activation ops --------------------------------------------------------------

SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875  # ONNX (float32) defaults


def _gelu_kind(node) -> str:
    mode = node.attrs.get("approximate", "none")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("none", "tanh"):
        raise GraphError(f"node '{node.name}' (Gelu): attribute 'approximate' must be 'none' or 'tanh', got {mode!r}")
    return "GeluTanh" if mode == "tanh" else "Gelu"


def _relu_eval(node, ins):
    x = ins[0].value
    return [np.where(x < 0, np.zeros_like(x), x)]


# op: (UnaryOp name or picker, element types, ((attr, ONNX default) for alpha, beta))
_ONNX = {
    "Relu": ("Relu", SIGNED_OR_FLOAT, ()),
    "LeakyRelu": ("LeakyRelu", FLOAT, (("alpha", 0.01),)),
    "Elu": ("Elu", FLOAT, (("alpha", 1.0),)),
    "Selu": ("Selu", FLOAT, (("alpha", SELU_ALPHA), ("gamma", SELU_GAMMA))),
    "Celu": ("Celu", FLOAT, (("alpha", 1.0),)),
    "Softplus": ("Softplus", FLOAT, ()),
    "Softsign": ("Softsign", FLOAT, ()),
    "HardSigmoid": ("HardSigmoid", FLOAT, (("alpha", 0.2), ("beta", 0.5))),
    "HardSwish": ("HardSwish", FLOAT, ()),
    "ThresholdedRelu": ("ThresholdedRelu", FLOAT, (("alpha", 1.0),)),
    "Gelu": (_gelu_kind, FLOAT, ()),
    "Mish": ("Mish", FLOAT, ()),
    "Swish": ("Swish", FLOAT, (("alpha", 1.0),)),
    "Sigmoid": ("Sigmoid", FLOAT, ()),
    "Shrink": ("Shrink", NUMERIC, (("bias", 0.0), ("lambd", 0.5))),
    # engine-only spellings
    "GeluTanh": ("GeluTanh", FLOAT, ()),
    "Silu": ("Swish", FLOAT, (("alpha", 1.0),)),
}

for _op, (_code, _types, _params) in _ONNX.items():
    register_unary(_op, _code, _types, _params, evaluate=_relu_eval if _op == "Relu" else None)

# ONNX op -> the Keras activation name its float32 kernel shares (fusion into Dense/Conv2D).
# Kept for callers that map op names to activations; fusable_activation() adds the parameters.
UNARY_OPS = {
    "Relu": "relu", "LeakyRelu": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh",
    "Gelu": "gelu", "GeluTanh": "gelu_tanh", "Elu": "elu", "Selu": "selu", "Silu": "silu",
    "Swish": "silu", "Softplus": "softplus", "HardSigmoid": "hard_sigmoid", "Clip": "clip",
    "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Neg": "neg", "Abs": "abs",
    "Reciprocal": "reciprocal", "Square": "square", "Erf": "erf",
}


def fusable_activation(node, constants: dict):
    """(Keras activation name, alpha, beta) computing this ONNX-named node exactly as the op
    does (its ONNX defaults made explicit), for fusion into a float32 epilogue; None if the
    node has no such form (a Selu with custom constants, a Clip with computed bounds)."""
    op, at = node.op, node.attrs
    if op not in UNARY_OPS:
        return None
    try:
        if op == "Gelu":
            return ("gelu_tanh" if _gelu_kind(node) == "GeluTanh" else "gelu"), 0.0, 0.0
        if op == "Swish":
            return ("silu", 0.0, 0.0) if number(at, "alpha", 1.0) == 1.0 else None
        if op == "Selu":
            same = (np.float32(number(at, "alpha", SELU_ALPHA)) == np.float32(SELU_ALPHA)
                    and np.float32(number(at, "gamma", SELU_GAMMA)) == np.float32(SELU_GAMMA))
            return ("selu", 0.0, 0.0) if same else None
        if op == "Clip":
            bounds = _clip_bounds(node, constants)
            return None if bounds is None else ("clip", *bounds)
        if op in _ONNX and _ONNX[op][2]:
            params = _ONNX[op][2]
            vals = [number(at, k, d) for k, d in params] + [0.0]
            return UNARY_OPS[op], vals[0], vals[1]
    except GraphError:
        return None
    return UNARY_OPS[op], 0.0, 0.0


# -- Clip: bounds are optional inputs (opset 11+), or `min` / `max` attributes (engine.nn) ----

def _clip_bounds(node, constants: dict):
    """(lo, hi) as floats when both are known (absent: ±inf), else None."""
    out = []
    for k, attr, default in ((1, "min", -math.inf), (2, "max", math.inf)):
        name = node.inputs[k] if len(node.inputs) > k else ""
        if name:
            v = constants.get(name)
            if v is None or np.size(v) != 1:
                return None
            out.append(float(np.asarray(v).reshape(())))
        else:
            out.append(number(node.attrs, attr, default, node.name))
    return tuple(out)


def _clip_type(node, ins):
    x = ins[0]
    check_type(node, x.dtype, NUMERIC)
    for k in (1, 2):
        b = ins[k] if len(ins) > k else None
        if b is not None and (b.dtype != x.dtype or math.prod(b.shape) != 1):
            raise ShapeError(f"node '{node.name}' (Clip): input {k} must be a scalar of type {x.dtype}, "
                             f"got shape {b.shape} of {b.dtype}")
    return [TensorType(x.shape, x.dtype)]


def _clip_lower(ctx, node):
    x, y = node.inputs[0], node.outputs[0]
    np_type = dtypes.to_numpy(ctx.dtype(x))
    bounds = []
    for k, attr in ((1, "min"), (2, "max")):
        name = node.inputs[k] if len(node.inputs) > k else ""
        if not name and attr in node.attrs:
            name = ctx.constant(np.array(number(node.attrs, attr, 0.0, node.name)).astype(np_type))
            ctx.slot(name)  # bind now: constant() names by slot count, so two in a row would collide
        bounds.append(name)
    ctx.kernel("math_clip", [x, *bounds], [y], dtype="any", ints=[math.prod(ctx.shape(x))])


def _clip_check(node):
    for attr in ("min", "max"):
        if attr in node.attrs:
            number(node.attrs, attr, 0.0, node.name)


def _clip_eval(node, ins):
    x = ins[0].value
    lo = ins[1].value if len(ins) > 1 and ins[1] is not None else node.attrs.get("min")
    hi = ins[2].value if len(ins) > 2 and ins[2] is not None else node.attrs.get("max")
    if lo is not None:
        x = np.where(x < lo, np.asarray(lo).astype(x.dtype).reshape(()), x)
    if hi is not None:
        x = np.where(x > hi, np.asarray(hi).astype(x.dtype).reshape(()), x)
    return [x]


register("Clip", _clip_type, _clip_lower, inplace=True, check=_clip_check, evaluate=_clip_eval)


# -- generic form: Activation(activation="relu"), as Keras's Activation layer ------------------

def _activation_op(ctx, node):
    act, alpha, beta = resolve(node.attrs, node.name)
    x, y = node.inputs[0], node.outputs[0]
    ctx.kernel("activation", [x], [y], ints=[math.prod(ctx.shape(x)), act], floats=[alpha, beta])


register("Activation", same_as_input, _activation_op, inplace=True, check=check_activation)
