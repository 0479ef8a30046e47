"""Fold a residual Add into the Conv2D that produces one of its operands: Add(Conv2D(x), r)
becomes Conv2D(x, w, b, r), whose epilogue adds r to each output tile while it is still in
registers (the activation fusion that runs next then folds a following Relu in, after the add).
Saves the Add's pass over memory: two reads and a write of the whole tensor (ResNet and
MobileNetV2 blocks)."""

from __future__ import annotations

from ..errors import EngineError
from ..graph import Graph, Node
from .shapes import infer
from .stats import record


def _shape_probes(graph: Graph):
    """Every value's shape at two sizes of the inputs' unknown dims (2 and 3), or None when
    the graph cannot be inferred without data. Equal in both probes = equal for every size."""
    if any(v.shape is None for v in graph.inputs):
        return None
    try:
        return [infer(graph, {v.name: tuple(n if not isinstance(d, int) else d for d in v.shape)
                              for v in graph.inputs}, fold=False).types for n in (2, 3)]
    except EngineError:
        return None


def _fusable_conv(conv, src, uses, outputs):
    return (conv is not None and conv.op == "Conv2D" and src not in outputs
            and len(uses.get(src, [])) == 1 and len(conv.inputs) <= 3
            and conv.attrs.get("activation") in (None, "linear") and "maxpool" not in conv.attrs)


def fuse_residual(graph: Graph) -> Graph:
    adds = [n for n in graph.nodes if n.op == "Add" and len(n.inputs) == 2 and len(n.outputs) == 1]
    if not adds:
        return graph
    producers, uses = graph.producers(), graph.consumers()
    outputs = {v.name for v in graph.outputs}
    probes = None
    fused: dict[int, Node] = {}   # id(Add) -> the conv that replaces it, at the Add's place
    dropped: set[int] = set()     # the convs folded away
    for add in adds:
        a, b = add.inputs
        if not a or not b or a == b:
            continue
        for src, res in ((a, b), (b, a)):
            conv = producers.get(src)
            if not _fusable_conv(conv, src, uses, outputs) or id(conv) in dropped:
                continue
            if probes is None:
                probes = _shape_probes(graph) or []
            # Same shape and type as the conv output and the sum (no broadcasting), float32.
            if not probes or not all(
                    p[src].shape == p[res].shape == p[add.outputs[0]].shape
                    and p[src].dtype == p[res].dtype == "float32" for p in probes):
                continue
            bias = conv.inputs[2] if len(conv.inputs) > 2 else ""
            fused[id(add)] = Node("Conv2D", [conv.inputs[0], conv.inputs[1], bias, res], list(add.outputs),
                                  dict(conv.attrs), conv.name)
            dropped.add(id(conv))
            record("conv_residual")
            break
    if not fused:
        return graph
    # The fused conv takes the Add's place: its residual may be computed after the conv was.
    nodes = [fused.get(id(n), n) for n in graph.nodes if id(n) not in dropped]
    return graph.replace(nodes=nodes)
