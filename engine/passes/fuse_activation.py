"""Fold a standalone activation into the Dense/Conv2D that produces its input, so it runs
in the GEMM epilogue while the tile is in cache."""

from __future__ import annotations

from ..graph import Graph, Node
from ..ops.activations import UNARY_OPS

_FUSABLE_PRODUCERS = {"Dense", "Conv2D"}


def _activation_of(node: Node):
    """(name, alpha, beta overrides) if node is a fusable unary activation, else None."""
    if node.op == "Activation":
        return node.attrs.get("activation"), {k: v for k, v in node.attrs.items()
                                               if k.startswith("activation_")}
    if node.op in UNARY_OPS:
        extra = {}
        for src, dst in (("alpha", "activation_alpha"), ("beta", "activation_beta"),
                         ("min", "activation_alpha"), ("max", "activation_beta")):
            if src in node.attrs:
                extra[dst] = node.attrs[src]
        return UNARY_OPS[node.op], extra
    return None


def fuse_activations(graph: Graph) -> Graph:
    producers = graph.producers()
    consumers = graph.consumers()
    outputs = {v.name for v in graph.outputs}
    fused: dict[str, Node] = {}   # producer name -> rewritten producer
    dropped: set[int] = set()
    for node in graph.nodes:
        act = _activation_of(node)
        if act is None:
            continue
        src = node.inputs[0]
        prod = producers.get(src)
        if (prod is None or prod.op not in _FUSABLE_PRODUCERS or src in outputs
                or len(consumers.get(src, [])) != 1 or prod.name in fused
                or prod.attrs.get("activation") not in (None, "linear")):
            continue
        attrs = {**prod.attrs, "activation": act[0], **act[1]}
        fused[prod.name] = Node(prod.op, prod.inputs, node.outputs, attrs, prod.name)
        dropped.add(id(node))
    if not fused:
        return graph
    nodes = [fused.get(n.name, n) for n in graph.nodes if id(n) not in dropped]
    return graph.replace(nodes=nodes)
