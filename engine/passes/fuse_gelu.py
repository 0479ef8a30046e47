"""Activations written out as exporters emit them become one node each, which the activation
fusion then folds into the producing Dense's epilogue (five to eight passes over the
activations become none):

- GELU, erf form: 0.5·x·(1 + erf(x/√2)), the Div/Mul, Erf, Add, Mul, Mul in any of the
  association orders exporters use (torch's dynamo exporter: x·(0.5·(1 + erf))) -> Gelu;
- GELU, tanh form (GPT-2's NewGELU): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) -> Gelu with
  approximate="tanh";
- SiLU: x·Sigmoid(x) -> Silu.

Every intermediate must be read by the pattern only (else it is computed anyway)."""

from __future__ import annotations

import math

import numpy as np

from ..graph import Graph, Node
from .rewrite import consumers, producers
from .stats import record

_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


class _Match:
    def __init__(self, graph: Graph):
        self.outputs = {v.name for v in graph.outputs}
        self.uses, self.prod = consumers(graph.nodes), producers(graph.nodes)
        self.w = graph.initializers

    def scalar(self, name, want) -> bool:
        v = self.w.get(name)
        return v is not None and v.size == 1 and v.dtype.kind == "f" \
            and abs(float(np.asarray(v).reshape(-1)[0]) - want) <= 1e-4 * abs(want)

    def only_reader(self, value):
        r = self.uses.get(value, [])
        return r[0] if len(r) == 1 and value not in self.outputs else None

    @staticmethod
    def other(node, value):
        return node.inputs[1] if node.inputs[0] == value else node.inputs[0]

    def scaled(self, node, op, factor):
        """x when `node` is Mul(x, c) / Mul(c, x) with c ≈ factor (op "Mul"), or Div(x, c) with
        c ≈ 1/factor (op "Div"); else None."""
        if node is None or node.op != op or len(node.inputs) != 2:
            return None
        a, b = node.inputs
        if op == "Div":
            return a if self.scalar(b, 1 / factor) else None
        return a if self.scalar(b, factor) else b if self.scalar(a, factor) else None

    def private(self, node, reader) -> bool:
        """node's output is read by `reader` only."""
        return node is not None and self.only_reader(node.outputs[0]) is reader


def _erf_argument(m: _Match, erf):
    """(x, [nodes]) when erf computes erf(x/√2)."""
    scale = m.prod.get(erf.inputs[0])
    x = m.scaled(scale, "Div", 1 / math.sqrt(2)) or m.scaled(scale, "Mul", 1 / math.sqrt(2))
    if x is None or not m.private(scale, erf):
        return None
    return x, [scale]


def _cube_of(m: _Match, node, reader):
    """x when node computes x³ (Pow(x, 3) or x·x·x) read only by `reader`; and its nodes."""
    if node is None or not m.private(node, reader):
        return None
    if node.op == "Pow" and m.scalar(node.inputs[1], 3.0):
        return node.inputs[0], [node]
    if node.op == "Mul":
        for sq_name, x in (node.inputs, node.inputs[::-1]):
            sq = m.prod.get(sq_name)
            if sq is not None and sq.op == "Mul" and sq.inputs == [x, x] and m.private(sq, node):
                return x, [node, sq]
    return None


def _tanh_argument(m: _Match, tanh):
    """(x, [nodes]) when tanh computes tanh(√(2/π)·(x + 0.044715·x³))."""
    outer = m.prod.get(tanh.inputs[0])
    r = m.scaled(outer, "Mul", _SQRT_2_OVER_PI)
    inner = m.prod.get(r) if r else None
    if inner is None or inner.op != "Add" or not m.private(outer, tanh) or not m.private(inner, outer):
        return None
    for x, q in (inner.inputs, inner.inputs[::-1]):
        qn = m.prod.get(q)
        cube_name = m.scaled(qn, "Mul", 0.044715)
        if cube_name is None or not m.private(qn, inner):
            continue
        cube = _cube_of(m, m.prod.get(cube_name), qn)
        if cube is not None and cube[0] == x:
            return x, [outer, inner, qn] + cube[1]
    return None


def _half_x_times(m: _Match, t: str, x: str):
    """The nodes computing y = 0.5·x·t from t in one of three orders: (x·t)·0.5, (0.5·t)·x,
    or (0.5·x)·t; (y's producer, [nodes]) or None."""
    mul = m.only_reader(t)
    if mul is None or mul.op != "Mul":
        return None
    partner = m.other(mul, t)
    if partner == x or m.scalar(partner, 0.5):
        last = m.only_reader(mul.outputs[0])
        if last is None or last.op != "Mul":
            return None
        want_x = partner != x
        rest = m.other(last, mul.outputs[0])
        if (rest == x) if want_x else m.scalar(rest, 0.5):
            return last, [mul, last]
        return None
    h = m.prod.get(partner)
    if m.scaled(h, "Mul", 0.5) == x and m.private(h, mul):
        return mul, [h, mul]
    return None


def fuse_gelu(graph: Graph) -> Graph:
    m = _Match(graph)
    dropped, replaced = set(), {}
    for core in graph.nodes:
        if core.op == "Sigmoid":
            mul = m.only_reader(core.outputs[0])
            x = core.inputs[0]
            if mul is None or mul.op != "Mul" or m.other(mul, core.outputs[0]) != x:
                continue
            chain, out, new = [core, mul], mul, Node("Silu", [x], list(mul.outputs), {}, f"{core.name}/silu")
        elif core.op in ("Erf", "Tanh"):
            arg = _erf_argument(m, core) if core.op == "Erf" else _tanh_argument(m, core)
            add = m.only_reader(core.outputs[0])
            if arg is None or add is None or add.op != "Add" or not m.scalar(m.other(add, core.outputs[0]), 1.0):
                continue
            x, front = arg
            tail = _half_x_times(m, add.outputs[0], x)
            if tail is None:
                continue
            out, back = tail
            chain = front + [core, add] + back
            attrs = {"approximate": "tanh" if core.op == "Tanh" else "none"}
            new = Node("Gelu", [x], list(out.outputs), attrs, f"{core.name}/gelu")
        else:
            continue
        if any(id(n) in dropped for n in chain):
            continue
        dropped.update(id(n) for n in chain)
        replaced[id(out)] = new  # at the last node's place: x is defined before all of them
        record({"Silu": "silu"}.get(new.op, "gelu_tanh" if new.attrs.get("approximate") == "tanh" else "gelu"))
    if not replaced:
        return graph
    nodes = [replaced[id(n)] if id(n) in replaced else n for n in graph.nodes
             if id(n) in replaced or id(n) not in dropped]
    return graph.replace(nodes=nodes)
