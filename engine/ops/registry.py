"""The op registry: each op declares, in one place, its type rule (output shapes and element
types), its lowering to native kernel calls, its attribute check (run at load), optionally a
numpy evaluation used to compute values fixed at plan time (shape arithmetic), and (with the
training issue) its backward rule.

Nothing here imports the native extension: a lowering asks the EmitContext it is given for
kernels and packed weights, so another backend can plug in behind the same op definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import numpy as np

from ..errors import ShapeError, UnsupportedOpError


class Tensor(NamedTuple):
    """What a type rule sees of one input at plan time."""
    shape: tuple       # concrete ints
    dtype: str         # engine.dtypes name
    value: Optional[np.ndarray] = None  # known at plan time (a weight, or computed from shapes)


class TensorType(NamedTuple):
    shape: tuple
    dtype: str


InferRule = Callable  # (node, [Tensor | None]) -> [TensorType | (shape, dtype)]
Lower = Callable      # (ctx: EmitContext, node) -> None: adds kernel steps through ctx.kernel(...)
AttrCheck = Callable  # (node) -> None: raises GraphError naming a bad attribute (load time)
Evaluate = Callable   # (node, [np.ndarray | None]) -> [np.ndarray]: exact op semantics, numpy


@dataclass(frozen=True)
class OpDef:
    name: str
    infer: InferRule
    lower: Optional[Lower]
    check: Optional[AttrCheck] = None      # attribute validation, run when a graph is loaded
    evaluate: Optional[Evaluate] = None    # plan-time / load-time evaluation on known values
    backward: Optional[Callable] = None    # slot for the training issue
    alias: bool = False    # output is input 0 reinterpreted (same bytes): no kernel, no copy
    inplace: bool = False  # output may reuse input 0's buffer when input 0 dies here
    fold: bool = True      # may be evaluated ahead of time when every input is known
    value_inputs: Optional[tuple] = None  # inputs `evaluate` needs values of (None: all); Shape: ()
    # Ops whose output shapes depend on input values (NonZero) or that run subgraphs (If,
    # Loop, Scan): (node, [array | None]) -> [array], called per call between native segments
    # (runtime/dynamic.py). The graph around them still runs as native programs.
    execute: Optional[Callable] = None


OPS: dict[str, OpDef] = {}


def register(name: str, infer: InferRule, lower: Optional[Lower] = None, **kw) -> OpDef:
    if name in OPS:
        raise ValueError(f"op {name} registered twice")
    OPS[name] = op = OpDef(name, infer, lower, **kw)
    return op


def get_op(name: str, node: str = "") -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        where = f" (node '{node}')" if node else ""
        raise UnsupportedOpError(
            f"unknown op '{name}'{where}; this engine implements: {', '.join(sorted(OPS))}"
        ) from None


def same_as_input(node, ins):
    """Type rule of shape-preserving ops: the output is typed like input 0."""
    return [TensorType(ins[0].shape, ins[0].dtype)]


class ValueNeeded(ShapeError):
    """A type rule needs the value of an input that is not known when planning. If that value
    comes from graph inputs, the model plans per distinct value of those inputs instead (see
    Model._plan); otherwise this is the error the user sees."""

    def __init__(self, node, index: int, what: str):
        super().__init__(f"node '{node.name}' ({node.op}): {what} (input {index}, '{node.inputs[index]}') must be "
                         "known when the model is planned: a constant, a value computed from input shapes, or "
                         "a graph input")
        self.node, self.index, self.name = node, index, node.inputs[index]


def known(ins: list, index: int, node, what: str) -> np.ndarray:
    """The plan-time value of input `index` (ValueNeeded if there is none)."""
    t = ins[index] if index < len(ins) else None
    if t is None or t.value is None:
        raise ValueNeeded(node, index, what)
    return t.value
