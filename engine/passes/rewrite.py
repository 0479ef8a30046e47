"""Small tools the graph passes share: who produces and reads a value, fresh names, renames."""

from __future__ import annotations

import itertools

from ..graph import Graph, Node


class Names:
    """Fresh value/node names that collide with nothing in the graph."""

    def __init__(self, graph: Graph):
        self.used = {v.name for v in graph.inputs} | {v.name for v in graph.outputs} | set(graph.initializers)
        self.used |= {o for n in graph.nodes for o in n.outputs} | {n.name for n in graph.nodes}
        self._counter = itertools.count()

    def fresh(self, hint: str) -> str:
        name = hint
        while name in self.used:
            name = f"{hint}_{next(self._counter)}"
        self.used.add(name)
        return name


def consumers(nodes) -> dict:
    uses: dict[str, list] = {}
    for n in nodes:
        for i in n.inputs:
            if i:
                uses.setdefault(i, []).append(n)
    return uses


def producers(nodes) -> dict:
    return {o: n for n in nodes for o in n.outputs if o}


def renamed(node: Node, mapping: dict) -> Node:
    """node with its inputs renamed through mapping (outputs unchanged)."""
    if not any(i in mapping for i in node.inputs):
        return node
    return Node(node.op, [mapping.get(i, i) for i in node.inputs], list(node.outputs), node.attrs, node.name)
