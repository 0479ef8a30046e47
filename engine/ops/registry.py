"""The op registry: each op declares, in one place, its shape rule and forward kernel
binding (and, with the training issue, its backward rule)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import UnsupportedOpError

ShapeRule = Callable  # (node, [input shapes]) -> [output shapes]; shapes are tuples of int
Forward = Callable    # (ctx: runtime.plan.EmitContext, node) -> None: adds steps to ctx.program
AttrCheck = Callable  # (node) -> None: raises GraphError naming a bad attribute (load time)


@dataclass(frozen=True)
class OpDef:
    name: str
    shape: ShapeRule
    forward: Optional[Forward]
    check: Optional[AttrCheck] = None  # attribute validation, run when a graph is loaded
    backward: Optional[Callable] = None  # slot for the training issue
    alias: bool = False    # output is input 0 reinterpreted: no kernel, no copy
    inplace: bool = False  # output may reuse input 0's buffer when input 0 dies here


OPS: dict[str, OpDef] = {}


def register(name: str, shape: ShapeRule, forward: Optional[Forward] = None, **kw) -> OpDef:
    if name in OPS:
        raise ValueError(f"op {name} registered twice")
    OPS[name] = op = OpDef(name, shape, forward, **kw)
    return op


def get_op(name: str, node: str = "") -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        where = f" (node '{node}')" if node else ""
        raise UnsupportedOpError(
            f"unknown op '{name}'{where}; this engine implements: {', '.join(sorted(OPS))}"
        ) from None
