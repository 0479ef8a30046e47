"""Fold a non-overlapping MaxPool2D into the Conv2D that feeds it: the kernel pools each band
of conv rows while it is in L1, so the full-size conv output is never written."""

from __future__ import annotations

from ..graph import Graph, Node
from .stats import record


def _pool_window(node: Node):
    """(ph, pw) if node is a max-pool the fused kernel implements, else None: stride equal to
    the window, no padding, no dilation, floor mode."""
    a = node.attrs
    k = a.get("pool_size", 2)
    k = [k, k] if isinstance(k, int) else list(k)
    strides = a.get("strides", k)
    strides = [strides, strides] if isinstance(strides, int) else list(strides)
    dil = a.get("dilations", 1)
    if (len(k) != 2 or strides != k or dil not in (1, [1, 1]) or a.get("ceil_mode")
            or a.get("padding", "valid") not in ("valid", [0, 0, 0, 0])):
        return None
    return k


def fuse_conv_maxpool(graph: Graph) -> Graph:
    producers, consumers = graph.producers(), graph.consumers()
    outputs = {v.name for v in graph.outputs}
    fused: dict[str, Node] = {}
    dropped: set[int] = set()
    for node in graph.nodes:
        if node.op != "MaxPool2D":
            continue
        src = node.inputs[0]
        conv = producers.get(src)
        window = _pool_window(node)
        if (window is None or conv is None or conv.op != "Conv2D" or "maxpool" in conv.attrs
                or (len(conv.inputs) > 3 and conv.inputs[3])  # a residual: pool after the add
                or src in outputs or len(consumers.get(src, [])) != 1 or conv.name in fused):
            continue
        fused[conv.name] = Node("Conv2D", conv.inputs, node.outputs,
                                {**conv.attrs, "maxpool": window}, conv.name)
        dropped.add(id(node))
        record("conv_maxpool")
    if not fused:
        return graph
    nodes = [fused.get(n.name, n) for n in graph.nodes if id(n) not in dropped]
    return graph.replace(nodes=nodes)
