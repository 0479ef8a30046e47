"""Op registry. Each family file registers its ops: shape rule + forward kernel binding
(+ backward rule, with the training issue) side by side."""

from . import activations, elementwise, linear, shape_ops, softmax, spatial  # noqa: F401  (register)
from .registry import OPS, OpDef, get_op, register

__all__ = ["OPS", "OpDef", "get_op", "register"]
