"""Training graphs: fold a ReLU's backward into the max-pool backward before it.

A ReLU (fused into a Dense/Conv2D epilogue, or standalone) followed by a max pool gives, in
the reverse pass, Pool2DGrad(dy, y) -> g, then ActGrad(g, y, relu) -> dz: two passes over
the ReLU's output. The pool backward already reads y at every window's maximum, so it can
apply the ReLU's derivative there (Pool2DGrad relu=1) and the ActGrad goes."""

from __future__ import annotations

from ..graph import Graph, Node
from ..ops.activations import ACTIVATIONS

_RELU = ACTIVATIONS["relu"][0]


def fuse_pool_relu_grad(graph: Graph) -> Graph:
    producers = graph.producers()
    consumers = graph.consumers()
    outputs = {v.name for v in graph.outputs}
    replaced: dict[int, Node] = {}
    dropped: set[int] = set()
    for node in graph.nodes:
        if node.op != "ActGrad" or int(node.attrs.get("act", -1)) != _RELU:
            continue
        dy, _, y = (list(node.inputs) + ["", ""])[:3]
        pool = producers.get(dy)
        if (pool is None or pool.op != "Pool2DGrad" or not pool.attrs["pool"][0] or pool.attrs.get("relu")
                or not y or pool.inputs[1] != y or dy in outputs or len(consumers.get(dy, [])) != 1
                or id(pool) in replaced):
            continue
        replaced[id(pool)] = Node(pool.op, list(pool.inputs), list(node.outputs), {**pool.attrs, "relu": 1}, pool.name)
        dropped.add(id(node))
    if not replaced:
        return graph
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in dropped]
    return graph.replace(nodes=nodes)
