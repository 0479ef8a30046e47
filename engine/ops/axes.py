"""Checks shared by the movement family: attributes, axes, and inputs whose values must be
known when a plan is made (Reshape's target, Slice's starts, Pad's pads, ...)."""

from __future__ import annotations

from ..errors import GraphError, ShapeError
from .registry import Tensor, ValueNeeded, known as _known_value


# A value a type rule needs but that is computed from data: the planner then plans per value of
# the graph inputs it comes from (Model._plan), or reports this error.
ValueNotKnown = ValueNeeded


def shape_error(node, msg: str) -> ShapeError:
    return ShapeError(f"node '{node.name}' ({node.op}): {msg}")


def attr_int(node, name: str, default=None, choices=None) -> int:
    """An int attribute (GraphError naming it otherwise); `choices` limits its values."""
    v = node.attrs.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int) or (choices is not None and v not in choices):
        want = f"one of {sorted(choices)}" if choices is not None else "an int"
        raise GraphError(f"node '{node.name}' ({node.op}): attribute {name} must be {want}, got {v!r}")
    return v


def attr_ints(node, name: str, default=None) -> list | None:
    v = node.attrs.get(name, default)
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in v):
        raise GraphError(f"node '{node.name}' ({node.op}): attribute {name} must be a list of ints, got {v!r}")
    return list(v)


def attr_str(node, name: str, default: str, choices) -> str:
    v = node.attrs.get(name, default)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if v not in choices:
        raise GraphError(f"node '{node.name}' ({node.op}): attribute {name} must be one of "
                         f"{', '.join(choices)}, got {v!r}")
    return v


def present(ins, i: int) -> bool:
    return i < len(ins) and ins[i] is not None


def known(node, ins, i: int, what: str):
    """The value of input i (None if absent); ValueNeeded if it is computed from data."""
    if not present(ins, i):
        return None
    return _known_value(ins, i, node, what)


def known_ints(node, ins, i: int, what: str) -> list | None:
    """A known integer input as a list (a scalar becomes one item); None if absent."""
    v = known(node, ins, i, what)
    if v is None:
        return None
    if v.dtype.kind not in "iu":
        raise shape_error(node, f"{what} must be integers, got {v.dtype}")
    return [int(d) for d in v.reshape(-1)]


def known_scalar(node, ins, i: int, what: str):
    """A known one-element input as a Python number; None if absent."""
    v = known(node, ins, i, what)
    if v is None:
        return None
    if v.size != 1:
        raise shape_error(node, f"{what} must be a scalar, got shape {v.shape}")
    return v.reshape(-1)[0].item()


def norm_axis(node, axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise shape_error(node, f"{what} {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def norm_axes(node, axes, rank: int, what: str = "axes") -> list:
    out = [norm_axis(node, a, rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise shape_error(node, f"{what} {list(axes)} name a dimension twice")
    return out



def tensor_of(ctx, name: str):
    """What a type rule saw of a value (shape, type, known value), rebuilt in a lowering."""
    return Tensor(ctx.shape(name), ctx.dtype(name), ctx.value(name)) if name else None


def tensors_of(ctx, node) -> list:
    return [tensor_of(ctx, i) for i in node.inputs]
