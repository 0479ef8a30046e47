"""Fold a standalone activation into the Dense/Conv2D that produces its input (directly or
through a Reshape), so it runs in the GEMM epilogue while the tile is in cache."""

from __future__ import annotations

from ..graph import Graph, Node
from ..ops.activations import fusable_activation
from .stats import record

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

    def private(value):  # read by one node only
        return value not in outputs and len(consumers.get(value, [])) == 1

    replaced: dict[int, Node] = {}   # id(node) -> its rewrite
    dropped: set[int] = set()
    for node in graph.nodes:
        act = _activation_of(node, graph.initializers)
        if act is None:
            continue
        src = node.inputs[0]
        prod = producers.get(src)
        # Through a Reshape (GPT-2's Conv1D flattens to 2-D around its Gemm): the activation is
        # elementwise, so act(reshape(y)) is reshape(act(y)).
        via = prod if prod is not None and prod.op == "Reshape" and private(src) else None
        if via is not None:
            src = via.inputs[0]
            prod = producers.get(src)
        if (prod is None or prod.op not in _FUSABLE_PRODUCERS or not private(src) or id(prod) in replaced
                or prod.attrs.get("activation") not in (None, "linear")):
            continue
        attrs = {**prod.attrs, "activation": act[0], **act[1]}
        if via is None:
            replaced[id(prod)] = Node(prod.op, prod.inputs, node.outputs, attrs, prod.name)
        else:
            replaced[id(prod)] = Node(prod.op, prod.inputs, prod.outputs, attrs, prod.name)
            replaced[id(via)] = Node("Reshape", via.inputs, node.outputs, via.attrs, via.name)
        dropped.add(id(node))
        record("dense_activation" if prod.op == "Dense" else "conv_activation")
    if not replaced:
        return graph
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in dropped]
    return graph.replace(nodes=nodes)
