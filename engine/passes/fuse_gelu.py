"""GELU written out as exporters emit it — 0.5·x·(1 + erf(x/√2)) as Div/Mul, Erf, Add, Mul,
Mul — becomes one Gelu node (which the activation fusion then folds into the producing
Dense's epilogue): five passes over the activations become none."""

from __future__ import annotations

import math

import numpy as np

from ..graph import Graph, Node
from .rewrite import consumers, producers


def fuse_gelu(graph: Graph) -> Graph:
    outputs = {v.name for v in graph.outputs}
    uses, prod = consumers(graph.nodes), producers(graph.nodes)
    w = graph.initializers

    def scalar(name, want):
        v = w.get(name)
        return v is not None and v.size == 1 and abs(float(np.asarray(v).reshape(-1)[0]) - want) <= 1e-4 * abs(want)

    def only_reader(value):
        r = uses.get(value, [])
        return r[0] if len(r) == 1 and value not in outputs else None

    def other(node, value):
        return node.inputs[1] if node.inputs[0] == value else node.inputs[0]

    dropped, replaced = set(), {}
    for erf in graph.nodes:
        if erf.op != "Erf":
            continue
        scale = prod.get(erf.inputs[0])  # x/√2 or x·(1/√2)
        if scale is None or len(scale.inputs) != 2:
            continue
        if scale.op == "Div" and scalar(scale.inputs[1], math.sqrt(2)):
            x = scale.inputs[0]
        elif scale.op == "Mul" and (scalar(scale.inputs[1], 1 / math.sqrt(2)) or scalar(scale.inputs[0], 1 / math.sqrt(2))):
            x = scale.inputs[0] if scalar(scale.inputs[1], 1 / math.sqrt(2)) else scale.inputs[1]
        else:
            continue
        add = only_reader(erf.outputs[0])
        if only_reader(scale.outputs[0]) is not erf or add is None or add.op != "Add" \
                or not scalar(other(add, erf.outputs[0]), 1.0):
            continue
        mul = only_reader(add.outputs[0])
        if mul is None or mul.op != "Mul":
            continue
        partner = other(mul, add.outputs[0])
        chain = [scale, erf, add, mul]
        if partner == x:  # (x·(1+erf))·0.5
            half = only_reader(mul.outputs[0])
            if half is None or half.op != "Mul" or not scalar(other(half, mul.outputs[0]), 0.5):
                continue
            chain.append(half)
            y = half.outputs[0]
        else:  # (x·0.5)·(1+erf), the x·0.5 read by nothing else
            h = prod.get(partner)
            if h is None or h.op != "Mul" or x not in h.inputs or not scalar(other(h, x), 0.5) \
                    or only_reader(partner) is not mul:
                continue
            chain.append(h)
            y = mul.outputs[0]
        if any(id(n) in dropped for n in chain):
            continue
        dropped.update(id(n) for n in chain)
        replaced[id(chain[-1] if partner == x else mul)] = Node("Gelu", [x], [y], {}, f"{erf.name}/gelu")
    if not replaced:
        return graph
    nodes = []
    for n in graph.nodes:
        if id(n) in replaced:
            nodes.append(replaced[id(n)])
        elif id(n) not in dropped:
            nodes.append(n)
    return graph.replace(nodes=nodes)
