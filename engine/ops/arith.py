"""Unary math (ONNX semantics, every type the ONNX schemas allow): Abs, Neg, Sign, trigonometry
and hyperbolics, Ceil, Floor, Round (half to even), Erf, Exp, Log, Sqrt, Reciprocal, Tanh,
IsNaN, IsInf, Not, and the engine's Square. Comparisons, logic and Where are in compare.py,
Cast in cast.py, activations in activations.py."""

from __future__ import annotations

import numpy as np

from .unary import FLOAT, NUMERIC, SIGNED_OR_FLOAT, np_unary, register_unary


def _isinf(node, ins):
    x = ins[0].value
    neg, pos = node.attrs.get("detect_negative", 1), node.attrs.get("detect_positive", 1)
    return [(np.isposinf(x) & bool(pos)) | (np.isneginf(x) & bool(neg))]


# op: (element types, numpy evaluation for plan-time values or None)
_MATH = {
    "Abs": (NUMERIC, np.abs),
    "Neg": (SIGNED_OR_FLOAT, np.negative),
    "Sign": (NUMERIC, np.sign),
    "Square": (NUMERIC, np.square),
    "Ceil": (FLOAT, np.ceil),
    "Floor": (FLOAT, np.floor),
    "Round": (FLOAT, np.rint),  # half to even
    "Sqrt": (FLOAT, np.sqrt),
    "Exp": (FLOAT, np.exp),
    "Log": (FLOAT, np.log),
    "Reciprocal": (FLOAT, np.reciprocal),
    "Erf": (FLOAT, None),
    "Tanh": (FLOAT, np.tanh),
    "Acos": (FLOAT, np.arccos), "Acosh": (FLOAT, np.arccosh), "Asin": (FLOAT, np.arcsin),
    "Asinh": (FLOAT, np.arcsinh), "Atan": (FLOAT, np.arctan), "Atanh": (FLOAT, np.arctanh),
    "Cos": (FLOAT, np.cos), "Cosh": (FLOAT, np.cosh), "Sin": (FLOAT, np.sin), "Sinh": (FLOAT, np.sinh),
    "Tan": (FLOAT, np.tan),
}

for _op, (_types, _fn) in _MATH.items():
    register_unary(_op, _op, _types, evaluate=np_unary(_fn) if _fn is not None else None)

register_unary("Not", "Not", ("bool",), evaluate=np_unary(np.logical_not))
register_unary("IsNaN", "IsNaN", FLOAT, out="bool", evaluate=np_unary(np.isnan))
register_unary("IsInf", "IsInf", FLOAT, (("detect_negative", 1.0), ("detect_positive", 1.0)), out="bool",
               evaluate=_isinf)
