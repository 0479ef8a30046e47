"""Constant folding: nodes whose inputs are all weights (or whose output depends only on
shapes that are fixed for every input size) are computed once, at load, with the ops' numpy
evaluations; their outputs become weights. What no longer feeds anything is removed by
dead-code elimination afterwards."""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes
from ..errors import EngineError
from ..graph import Graph
from ..ops import get_op
from ..ops.registry import Tensor
from .shapes import probe_types

# A folded value larger than this (elements) is kept as a computation when a kernel exists for
# it: folding must not blow a small model up (Expand of a scalar to a huge constant, say).
MAX_FOLDED = 1 << 22


def fold_constants(graph: Graph) -> Graph:
    values = dict(graph.initializers)
    static = None  # probe types, computed only if a shape-only op (Shape, Size) shows up
    kept, changed = [], False
    for node in graph.nodes:
        op = get_op(node.op, node.name)
        ins = _known_inputs(node, op, values)
        if ins is None and op.evaluate is not None and op.value_inputs is not None:
            if static is None:
                static = probe_types(graph) or {}
            ins = _typed_inputs(node, op, values, static)
        if ins is None or not op.fold or op.evaluate is None:
            kept.append(node)
            continue
        try:
            types = op.infer(node, ins)
            outs = op.evaluate(node, ins)
        except EngineError:
            kept.append(node)
            continue
        if op.lower is not None and sum(math.prod(t[0]) for t in types) > MAX_FOLDED:
            kept.append(node)
            continue
        for name, v, t in zip(node.outputs, outs, types):
            if name:
                values[name] = dtypes.contiguous(np.asarray(v).astype(dtypes.to_numpy(t[1]), copy=False)
                                                    .reshape(tuple(t[0])))
        changed = True
    if not changed:
        return graph
    return graph.replace(nodes=kept, initializers=values)


def _known_inputs(node, op, values):
    """Tensors with values for every present input, or None if one is not a constant."""
    ins = []
    for i in node.inputs:
        if not i:
            ins.append(None)
        elif i in values:
            v = values[i]
            ins.append(Tensor(tuple(v.shape), dtypes.from_numpy(v.dtype), v))
        else:
            return None
    return ins


def _typed_inputs(node, op, values, static):
    """For ops that need only some inputs' values (Shape, Size: none), Tensors when those are
    known and the others have a fully static type."""
    ins = []
    for k, i in enumerate(node.inputs):
        if not i:
            ins.append(None)
        elif i in values:
            v = values[i]
            ins.append(Tensor(tuple(v.shape), dtypes.from_numpy(v.dtype), v))
        elif k not in op.value_inputs and i in static and static[i].shape is not None \
                and all(d is not None for d in static[i].shape):
            ins.append(Tensor(static[i].shape, static[i].dtype, None))
        else:
            return None
    return ins
