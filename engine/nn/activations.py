"""Keras activation names as engine nodes.

Three kinds: names the Dense/Conv2D epilogue computes (engine/ops/activations.py
ACTIVATIONS: fused into the layer's node, or a standalone `Activation` node), names with an
ONNX-named unary op (Softsign, Mish, HardSwish, ...), and a few composed of several nodes.
An `Act` may carry parameters: Keras 2 files mean hard_sigmoid = clip(0.2·x + 0.5, 0, 1)
where Keras 3 means relu6(x + 3) / 6, so the Keras reader passes Act("hard_sigmoid", 0.2, 0.5).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ..errors import EngineError, UnsupportedOpError
from ..ops.activations import ACTIVATIONS as EPILOGUE


class Act(NamedTuple):
    name: str
    alpha: Optional[float] = None
    beta: Optional[float] = None


# name -> (ONNX-named op, attributes)
_UNARY = {
    "softsign": ("Softsign", {}), "mish": ("Mish", {}),
    "hard_silu": ("HardSwish", {}), "hard_swish": ("HardSwish", {}),
    "celu": ("Celu", {"alpha": 1.0}),
    "hard_shrink": ("Shrink", {"bias": 0.0, "lambd": 0.5}),
    "soft_shrink": ("Shrink", {"bias": 0.5, "lambd": 0.5}),
    "softmax": ("Softmax", {"axis": -1}), "log_softmax": ("LogSoftmax", {"axis": -1}),
}
_COMPOSED = ("log_sigmoid", "tanh_shrink", "sparse_plus", "squareplus")
_REFUSED = {"glu": "it halves the last axis", "sparsemax": "it sorts every row",
            "threshold": "it needs its threshold arguments"}

# Keras name -> the recurrent kernels' activation (engine/ops/rnn.py ACTIVATIONS), alpha, beta
_RNN = {"sigmoid": ("Sigmoid", 0.0, 0.0), "tanh": ("Tanh", 0.0, 0.0), "relu": ("Relu", 0.0, 0.0),
        "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5), "sparse_sigmoid": ("HardSigmoid", 0.5, 0.5),
        "linear": ("Affine", 1.0, 0.0), "leaky_relu": ("LeakyRelu", 0.2, 0.0), "elu": ("Elu", 1.0, 0.0),
        "softsign": ("Softsign", 0.0, 0.0), "softplus": ("Softplus", 0.0, 0.0)}


def known_names() -> list:
    return sorted({k for k in EPILOGUE if k} | set(_UNARY) | set(_COMPOSED))


def get(activation, where: str) -> Act:
    """An Act for a Keras activation: a name, None ('linear'), an Act, or a function named
    like one (keras.activations.relu)."""
    if activation is None:
        return Act("linear")
    if isinstance(activation, Act):
        act = activation
    elif isinstance(activation, str):
        act = Act(activation)
    elif callable(activation) and isinstance(getattr(activation, "__name__", None), str):
        act = Act(activation.__name__)
    else:
        raise EngineError(f"{where}: activation must be a name, got {activation!r}")
    if act.name in _REFUSED:
        raise UnsupportedOpError(f"{where}: activation '{act.name}' is not supported ({_REFUSED[act.name]})")
    if act.name not in EPILOGUE and act.name not in _UNARY and act.name not in _COMPOSED:
        raise EngineError(f"{where}: unknown activation {act.name!r}; known: {known_names()}")
    return act


def is_linear(act: Act) -> bool:
    return act.name in ("linear", "identity") and act.alpha is None


def fused_attrs(act: Act) -> Optional[dict]:
    """The `activation` attributes that fuse `act` into a Dense/Conv2D node, or None."""
    if act.name not in EPILOGUE:
        return None
    attrs = {"activation": None if is_linear(act) else act.name}
    if act.alpha is not None:
        attrs["activation_alpha"] = float(act.alpha)
    if act.beta is not None:
        attrs["activation_beta"] = float(act.beta)
    return attrs


def emit(g, x: str, out: str, act: Act) -> str:
    """Nodes computing act(x) into value `out`."""
    if is_linear(act):
        return g.node("Identity", [x], out)
    attrs = fused_attrs(act)
    if attrs is not None:
        return g.node("Activation", [x], out, attrs)
    if act.name in _UNARY:
        op, attrs = _UNARY[act.name]
        return g.node(op, [x], out, dict(attrs))
    t = f"{out}/{act.name}"
    if act.name == "log_sigmoid":  # -softplus(-x)
        g.node("Neg", [x], f"{t}/neg")
        g.node("Softplus", [f"{t}/neg"], f"{t}/softplus")
        return g.node("Neg", [f"{t}/softplus"], out)
    if act.name == "tanh_shrink":  # x - tanh(x)
        g.node("Tanh", [x], f"{t}/tanh")
        return g.node("Sub", [x, f"{t}/tanh"], out)
    one, quarter = g.const(f"{t}/one", _f32(1.0)), g.const(f"{t}/quarter", _f32(0.25))
    if act.name == "sparse_plus":  # (clip(x, -1, 1) + 1)² / 4 + relu(x - 1): 0, (x+1)²/4, x
        g.node("Clip", [x], f"{t}/clip", {"min": -1.0, "max": 1.0})
        g.node("Add", [f"{t}/clip", one], f"{t}/shift")
        g.node("Mul", [f"{t}/shift", f"{t}/shift"], f"{t}/sq")
        g.node("Mul", [f"{t}/sq", quarter], f"{t}/quad")
        g.node("Sub", [x, one], f"{t}/over")
        g.node("Relu", [f"{t}/over"], f"{t}/lin")
        return g.node("Add", [f"{t}/quad", f"{t}/lin"], out)
    # squareplus (b = 4): (x + sqrt(x² + 4)) / 2
    g.node("Mul", [x, x], f"{t}/sq")
    g.node("Add", [f"{t}/sq", g.const(f"{t}/b", _f32(4.0))], f"{t}/sqb")
    g.node("Sqrt", [f"{t}/sqb"], f"{t}/root")
    g.node("Add", [x, f"{t}/root"], f"{t}/sum")
    return g.node("Mul", [f"{t}/sum", g.const(f"{t}/half", _f32(0.5))], out)


def rnn_activation(act: Act, where: str) -> tuple:
    """(name, alpha, beta) of the recurrent kernels' activation computing `act`."""
    if act.name not in _RNN:
        raise UnsupportedOpError(f"{where}: activation '{act.name}' inside a recurrent cell is not supported "
                                 f"(supported: {', '.join(sorted(_RNN))})")
    name, alpha, beta = _RNN[act.name]
    return name, alpha if act.alpha is None else float(act.alpha), beta if act.beta is None else float(act.beta)


def _f32(v: float) -> np.ndarray:
    return np.array(v, np.float32)
