"""Fold a standalone activation into the Dense/Conv2D that produces its input, so it runs
in the GEMM epilogue while the tile is in cache."""

from __future__ import annotations

from ..graph import Graph, Node
from ..ops.activations import fusable_activation

_FUSABLE_PRODUCERS = {"Dense", "Conv2D"}


def _activation_of(node: Node, constants: dict):
    """(name, alpha/beta attributes) if node is a fusable unary activation, else None. An
    ONNX-named op carries its parameters explicitly (its ONNX defaults included), since the
    epilogue's activation names take Keras defaults."""
    if node.op == "Activation":
        return node.attrs.get("activation"), {k: v for k, v in node.attrs.items()
                                               if k.startswith("activation_")}
    fused = fusable_activation(node, constants)
    if fused is None:
        return None
    name, alpha, beta = fused
    return name, {"activation_alpha": alpha, "activation_beta": beta}


def fuse_activations(graph: Graph) -> Graph:
    producers = graph.producers()
    consumers = graph.consumers()
    outputs = {v.name for v in graph.outputs}
    fused: dict[str, Node] = {}   # producer name -> rewritten producer
    dropped: set[int] = set()
    for node in graph.nodes:
        act = _activation_of(node, graph.initializers)
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
