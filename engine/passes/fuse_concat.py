"""A channel Concat of Conv2D outputs becomes one Conv2DConcat node: every conv writes its
channels into its slice of the concatenated output, so the Concat's copies disappear
(SqueezeNet's fire modules: ~7% of the model). Only when every Concat input is a Conv2D output
that nothing else reads (no fused max-pool, no residual), joined along the last (channel) axis
of the NHWC tensors."""

from __future__ import annotations

from ..graph import Graph, Node
from .stats import record


def _channel_axis(node: Node) -> bool:
    return node.attrs.get("axis") in (3, -1)


def fuse_concat_convs(graph: Graph) -> Graph:
    producers, uses = graph.producers(), graph.consumers()
    outputs = {v.name for v in graph.outputs}
    fused: dict[int, Node] = {}
    dropped: set[int] = set()
    for node in graph.nodes:
        if node.op != "Concat" or len(node.inputs) < 2 or not _channel_axis(node) or len(node.outputs) != 1:
            continue
        convs = [producers.get(i) for i in node.inputs]
        if any(c is None or c.op != "Conv2D" or "maxpool" in c.attrs or len(c.inputs) > 3 or id(c) in dropped
               for c in convs):
            continue
        if len({id(c) for c in convs}) != len(convs) or any(
                i in outputs or len(uses.get(i, [])) != 1 for i in node.inputs):
            continue
        inputs = []
        for c in convs:
            inputs += [c.inputs[0], c.inputs[1], c.inputs[2] if len(c.inputs) > 2 else ""]
        fused[id(node)] = Node("Conv2DConcat", inputs, list(node.outputs),
                               {"convs": [dict(c.attrs) for c in convs]}, node.name)
        dropped |= {id(c) for c in convs}
        record("conv_concat")
    if not fused:
        return graph
    # At the Concat's place: every conv's input is defined before its conv, so before it.
    nodes = [fused.get(id(n), n) for n in graph.nodes if id(n) not in dropped]
    return graph.replace(nodes=nodes)
