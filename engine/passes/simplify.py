"""Local simplifications: Identity (and inference Dropout) removed, Casts to the type a value
already has removed (exports write `.to(dtype)` for float32 models too), Transpose pairs composed,
identity Transposes removed, and Transposes that only move size-1 dims turned into Reshapes
(free: a Reshape is a view)."""

from __future__ import annotations

import numpy as np

from ..graph import Graph, Node
from .rewrite import Names, consumers, producers, renamed
from .shapes import probe_types


def simplify(graph: Graph) -> Graph:
    graph = _drop_identities(_noop_casts_to_identities(graph))
    graph = _compose_transposes(graph)
    return _transposes_to_reshapes(graph)


def _drop_identities(graph: Graph) -> Graph:
    outputs = {v.name for v in graph.outputs}
    used = {i for n in graph.nodes for i in n.inputs if i} | outputs

    def unused_mask(node):  # an inference Dropout's mask output that nothing reads
        return len(node.outputs) < 2 or not node.outputs[1] or node.outputs[1] not in used

    mapping, kept = {}, []
    for node in graph.nodes:
        node = renamed(node, mapping)
        passthrough = node.op == "Identity" or (node.op == "Dropout" and unused_mask(node)
                                                  and not node.attrs.get("training_mode"))
        if passthrough and node.outputs[0] not in outputs and len(node.inputs) >= 1 and node.inputs[0]:
            if node.op == "Dropout" and len(node.inputs) > 2 and node.inputs[2]:
                kept.append(node)  # a training_mode input: leave it to the op
                continue
            mapping[node.outputs[0]] = node.inputs[0]
            continue
        kept.append(node)
    kept = _identities_to_outputs(kept, graph)
    if len(kept) == len(graph.nodes):
        return graph
    return graph.replace(nodes=kept)


def _noop_casts_to_identities(graph: Graph) -> Graph:
    if not any(n.op == "Cast" for n in graph.nodes):
        return graph
    types = probe_types(graph)
    if types is None:
        return graph
    out, changed = [], False
    for n in graph.nodes:
        if n.op == "Cast" and n.inputs[0] in types and n.outputs[0] in types \
                and types[n.inputs[0]].dtype == types[n.outputs[0]].dtype:
            n = Node("Identity", [n.inputs[0]], list(n.outputs), {}, n.name)
            changed = True
        out.append(n)
    return graph.replace(nodes=out) if changed else graph


def _identities_to_outputs(nodes: list, graph: Graph) -> list:
    """An Identity that only gives a graph output its name: the producer writes that name."""
    outputs = {v.name for v in graph.outputs}
    fixed = {v.name for v in graph.inputs} | set(graph.initializers) | outputs
    prod = producers(nodes)
    uses = consumers(nodes)
    rename, dropped = {}, set()
    for n in nodes:
        if n.op != "Identity" or n.outputs[0] not in outputs or not n.inputs or not n.inputs[0]:
            continue
        x = n.inputs[0]
        if x in fixed or x not in prod or x in rename or len(uses.get(x, [])) != 1:
            continue
        rename[x] = n.outputs[0]
        dropped.add(id(n))
    if not rename:
        return nodes
    return [Node(n.op, [rename.get(i, i) for i in n.inputs], [rename.get(o, o) for o in n.outputs], n.attrs, n.name)
            for n in nodes if id(n) not in dropped]


def _perm(node):
    p = node.attrs.get("perm")
    return None if p is None else [int(i) for i in p]


def _compose_transposes(graph: Graph) -> Graph:
    """Transpose(Transpose(x, p1), p2) -> Transpose(x, p1∘p2) when the inner one has no other
    reader; the identity permutation disappears."""
    outputs = {v.name for v in graph.outputs}
    uses = consumers(graph.nodes)
    prod = producers(graph.nodes)
    dropped, replaced = set(), {}
    for node in graph.nodes:
        if node.op != "Transpose" or _perm(node) is None:
            continue
        inner = prod.get(node.inputs[0])
        if (inner is None or inner.op != "Transpose" or _perm(inner) is None or id(inner) in dropped
                or len(uses.get(inner.outputs[0], [])) != 1 or inner.outputs[0] in outputs):
            continue
        p1, p2 = _perm(inner), _perm(node)
        if len(p1) != len(p2):
            continue
        perm = [p1[i] for i in p2]
        replaced[id(node)] = Node("Transpose", [inner.inputs[0]], list(node.outputs), {"perm": perm}, node.name)
        dropped.add(id(inner))
    if not replaced:
        return graph
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in dropped]
    # An identity permutation is a view: make it a Reshape to the same shape (alias, no copy).
    out = []
    for n in nodes:
        if n.op == "Transpose" and _perm(n) == list(range(len(_perm(n) or []))):
            out.append(Node("Identity", list(n.inputs), list(n.outputs), {}, n.name))
        else:
            out.append(n)
    return _drop_identities(graph.replace(nodes=out))


def _transposes_to_reshapes(graph: Graph) -> Graph:
    """A Transpose that keeps the order of every dim larger than 1 moves no bytes."""
    if not any(n.op == "Transpose" for n in graph.nodes):
        return graph
    types = probe_types(graph)
    if types is None:
        return graph
    names = Names(graph)
    weights = dict(graph.initializers)
    out, changed = [], False
    for n in graph.nodes:
        p = _perm(n) if n.op == "Transpose" else None
        t = types.get(n.inputs[0]) if p is not None else None
        if t is None or t.shape is None or len(t.shape) != len(p):
            out.append(n)
            continue
        moving = [d for d in p if t.shape[d] != 1]
        if moving != sorted(moving) or sum(1 for d in t.shape if d is None) > 1:
            out.append(n)
            continue
        target = [t.shape[d] for d in p]
        if 0 in target and None in target:
            out.append(n)  # a Reshape cannot say both "infer this dim" and "this dim is 0"
            continue
        target = [-1 if d is None else d for d in target]  # at most one unknown dim
        shape = names.fresh(f"{n.name}/shape")
        weights[shape] = np.asarray(target, np.int64)
        out.append(Node("Reshape", [n.inputs[0], shape], list(n.outputs), {"allowzero": 1}, n.name))
        changed = True
    return graph.replace(nodes=out, initializers=weights) if changed else graph
