"""Shape inference: every value's shape from the input shapes, using each op's shape rule."""

from __future__ import annotations

from ..errors import EngineError, ShapeError
from ..graph import Graph
from ..ops import get_op


def infer_shapes(graph: Graph, input_shapes: dict[str, tuple]) -> dict[str, tuple]:
    """Concrete shapes of every value for concrete input shapes."""
    shapes = {k: tuple(int(d) for d in v.shape) for k, v in graph.initializers.items()}
    shapes.update({k: tuple(v) for k, v in input_shapes.items()})
    for node in graph.nodes:
        op = get_op(node.op, node.name)
        ins = [shapes[i] if i else None for i in node.inputs]
        outs = op.shape(node, ins)
        if len(outs) != len(node.outputs):
            raise ShapeError(f"node '{node.name}' ({node.op}): produces {len(outs)} outputs, "
                             f"graph names {len(node.outputs)}")
        for name, s in zip(node.outputs, outs):
            shapes[name] = tuple(int(d) for d in s)
    return shapes


def symbolic_shapes(graph: Graph) -> dict[str, tuple]:
    """Shapes with None where they follow a None input dim (e.g. the batch), found by
    inferring twice with different sizes for the unknown dims. Best effort: {} if the
    graph's rules need concrete sizes."""
    def concrete(n):
        return {v.name: tuple(n if d is None else d for d in v.shape) for v in graph.inputs}
    try:
        a, b = infer_shapes(graph, concrete(1)), infer_shapes(graph, concrete(2))
    except EngineError:
        return {}
    return {k: tuple(None if p != q else p for p, q in zip(a[k], b[k])) for k in a}
