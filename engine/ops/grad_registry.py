"""Where backward rules and training forms are registered (engine/autograd.py uses them).

A backward rule sits next to its op, in engine/ops/<family>_grad.py:

    @backward_rule("Dense")
    def dense_backward(gb, node, dys):   # gb: autograd.GradBuilder
        ...                              # -> one gradient name (or None) per node input

A training form replaces an op's forward when training (Dropout draws its mask,
BatchNormalization uses batch statistics, recurrent ops keep a tape for their backward):

    @training_form("Dropout")
    def dropout_training(gb, node):      # emits nodes that produce node.outputs' names
        ...
"""

from __future__ import annotations

from typing import Callable

BACKWARD: dict[str, Callable] = {}
TRAINING_FORMS: dict[str, Callable] = {}


def backward_rule(*ops: str):
    def register(fn):
        for op in ops:
            if op in BACKWARD:
                raise ValueError(f"backward rule for {op} registered twice")
            BACKWARD[op] = fn
        return fn
    return register


def training_form(*ops: str):
    def register(fn):
        for op in ops:
            if op in TRAINING_FORMS:
                raise ValueError(f"training form for {op} registered twice")
            TRAINING_FORMS[op] = fn
        return fn
    return register
