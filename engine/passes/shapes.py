"""Type inference: every value's shape and element type from the input shapes, using each
op's type rule; and the values that are fixed once the shapes are (weights, Shape outputs and
the arithmetic on them), computed here with the ops' numpy evaluations so that they become
constants of the plan instead of kernels run on every call."""

from __future__ import annotations

import math
import weakref
from typing import NamedTuple

import numpy as np

from ..errors import EngineError, ShapeError
from ..graph import Graph
from ..ops import get_op
from ..ops.registry import Tensor, TensorType

# A node whose inputs are all known is evaluated at plan time unless its output is larger
# than this (elements) and a kernel can compute it per call instead (a big Expand of a
# constant, say): plans stay small.
FOLD_LIMIT = 1 << 16


class DynamicShapes(ShapeError):
    """Raised by inference on a graph with ops whose output shapes depend on input values."""


class Inferred(NamedTuple):
    types: dict      # name -> TensorType
    values: dict     # name -> np.ndarray, the values known at plan time
    folded: set      # ids of nodes whose outputs are all in `values` (no kernel needed)


def weight_types(graph: Graph) -> dict:
    """The types of a graph's weights (the same for every signature: a schedule keeps them)."""
    return {k: TensorType(tuple(int(d) for d in v.shape), _dtype_of(v)) for k, v in graph.initializers.items()}


def infer(graph: Graph, input_shapes: dict[str, tuple], fold: bool = True,
          input_dtypes: dict | None = None, input_values: dict | None = None,
          known_types: dict | None = None, ops: list | None = None) -> Inferred:
    """Types of every value for concrete input shapes (and the inputs' declared element types,
    or `input_dtypes`), and the values fixed by them (`input_values`: graph inputs whose values
    the plan is made for, see Model._plan). `known_types` (the weights' types) and `ops` (each
    node's op) save a planner repeating work."""
    values: dict[str, np.ndarray] = dict(graph.initializers)
    values.update(input_values or {})
    types = dict(known_types) if known_types is not None else weight_types(graph)
    for k, v in (input_values or {}).items():
        types[k] = TensorType(tuple(int(d) for d in v.shape), _dtype_of(v))
    declared = {v.name: v.dtype for v in graph.inputs}
    declared.update(input_dtypes or {})
    for k, shape in input_shapes.items():
        types[k] = TensorType(tuple(int(d) for d in shape), declared.get(k, "float32"))
    folded: set[int] = set()
    for k, node in enumerate(graph.nodes):
        op = ops[k] if ops is not None else get_op(node.op, node.name)
        if op.execute is not None:  # output shapes depend on data: nothing is fixed after here
            raise DynamicShapes(f"node '{node.name}' ({node.op}) has data-dependent output shapes")
        if infer_node(op, node, types, values, fold):
            folded.add(id(node))
    return Inferred(types, values, folded)


def infer_node(op, node, types: dict, values: dict, fold: bool = True) -> bool:
    """Add one node's output types to `types` (and, when its inputs are known, its output
    values to `values`); True if it was evaluated."""
    ins = [Tensor(types[i].shape, types[i].dtype, values.get(i)) if i else None for i in node.inputs]
    outs = [TensorType(tuple(int(d) for d in t[0]), t[1]) for t in op.infer(node, ins)]
    if len(outs) != len(node.outputs):
        raise ShapeError(f"node '{node.name}' ({node.op}): produces {len(outs)} outputs, "
                         f"graph names {len(node.outputs)}")
    for name, t in zip(node.outputs, outs):
        if name:
            types[name] = t
    if not (fold and _foldable(op, ins, outs)):
        return False
    for name, v, t in zip(node.outputs, op.evaluate(node, ins), outs):
        if name:
            values[name] = _as_type(v, t, node)
    return True


def _foldable(op, ins, outs) -> bool:
    if op.evaluate is None or not op.fold:
        return False
    needed = range(len(ins)) if op.value_inputs is None else op.value_inputs
    if any(i < len(ins) and ins[i] is not None and ins[i].value is None for i in needed):
        return False
    if op.lower is not None and sum(math.prod(t.shape) for t in outs) > FOLD_LIMIT:
        return False
    return True


def _as_type(v, t: TensorType, node) -> np.ndarray:
    from .. import dtypes

    v = dtypes.contiguous(v)
    if v.shape != t.shape:
        raise ShapeError(f"node '{node.name}' ({node.op}): evaluated shape {v.shape} differs from "
                         f"the type rule's {t.shape}")
    want = dtypes.to_numpy(t.dtype)
    return v if v.dtype == want else v.astype(want)


def _dtype_of(a: np.ndarray) -> str:
    from .. import dtypes
    return dtypes.from_numpy(a.dtype)


def infer_shapes(graph: Graph, input_shapes: dict[str, tuple]) -> dict[str, tuple]:
    """Concrete shapes of every value for concrete input shapes."""
    return {k: t.shape for k, t in infer(graph, input_shapes).types.items()}


def symbolic_shapes(graph: Graph) -> dict[str, tuple]:
    """Shapes with None where they follow an unknown input dim (e.g. the batch). Best effort:
    {} if the graph's rules need concrete sizes."""
    types = probe_types(graph)
    return {} if types is None else {k: t.shape for k, t in types.items() if t.shape is not None}


# [(weak reference to a graph, its probe types)]: the last few graphs probed (passes hand
# unchanged graphs on). Weak, so a model's weights are not kept alive after the model is gone.
_PROBED: list = []


def probe_types(graph: Graph):
    """Types that hold for every input size: dims that change with the inputs' unknown dims
    are None. Found by inferring with two different sizes for the unknown dims (2 and 3, so
    size-1 broadcasting special cases do not hide a dependency). None if the graph cannot be
    inferred without concrete data (passes that need shapes then leave the graph alone)."""
    for ref, types in _PROBED:
        if ref() is graph:
            return types
    types = _probe(graph)
    _PROBED.insert(0, (weakref.ref(graph), types))
    del _PROBED[4:]
    return types


def _probe(graph: Graph):
    def concrete(n):
        return {v.name: tuple(n if not isinstance(d, int) else d for d in v.shape)
                for v in graph.inputs if v.shape is not None}
    if any(v.shape is None for v in graph.inputs):
        return None
    try:
        a, b = infer(graph, concrete(2)).types, infer(graph, concrete(3)).types
    except EngineError:
        return None
    out = {}
    for k, ta in a.items():
        tb = b.get(k)
        if tb is None or len(ta.shape) != len(tb.shape):
            out[k] = TensorType(None, ta.dtype)
        else:
            out[k] = TensorType(tuple(p if p == q else None for p, q in zip(ta.shape, tb.shape)), ta.dtype)
    return out
