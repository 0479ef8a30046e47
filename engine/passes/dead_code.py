"""Dead-code elimination: nodes none of whose outputs reach a graph output, and weights no
node reads, are dropped."""

from __future__ import annotations

from ..graph import Graph


def eliminate_dead_code(graph: Graph) -> Graph:
    live = {v.name for v in graph.outputs}
    kept = []
    for node in reversed(graph.nodes):
        if not node.outputs or any(o in live for o in node.outputs if o):  # no outputs: updates in place
            kept.append(node)
            live.update(i for i in node.inputs if i)
    kept.reverse()
    weights = {k: v for k, v in graph.initializers.items() if k in live}
    if len(kept) == len(graph.nodes) and len(weights) == len(graph.initializers):
        return graph
    return graph.replace(nodes=kept, initializers=weights)
