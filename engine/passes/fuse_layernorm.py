"""Normalisations written out as exporters emit them become one node each (one pass over the
rows instead of seven to ten):

- LayerNorm (TorchScript exports below opset 17, tf2onnx/keras2onnx graphs):
  d = x − ReduceMean(x); y = d / Sqrt(ReduceMean(d²) + eps) [· γ] [+ β], with d² as Pow(d, 2)
  or d·d and the division as Div or Reciprocal·Mul -> LayerNormalization;
- RMSNorm (Hugging Face Llama and its relatives):
  y = x · 1/Sqrt(ReduceMean(x²) + eps) [· w], the same spellings -> RMSNormalization.

Both reduce over trailing axes only, keep their dims, and every intermediate is read by the
pattern alone. γ, β and w are constants that vary along the normalised axes only."""

from __future__ import annotations

import numpy as np

from ..graph import Graph, Node
from .rewrite import Names, consumers, producers
from .shapes import probe_types
from .stats import record


class _Match:
    def __init__(self, graph: Graph, types: dict):
        self.outputs = {v.name for v in graph.outputs}
        self.uses, self.prod = consumers(graph.nodes), producers(graph.nodes)
        self.w, self.types = graph.initializers, types

    def readers(self, value) -> list:
        """The distinct nodes reading value (d·d reads d twice)."""
        if value in self.outputs:
            return []
        return list({id(n): n for n in self.uses.get(value, [])}.values())

    def only_reader(self, value, op=None):
        r = self.readers(value)
        return r[0] if len(r) == 1 and (op is None or r[0].op == op) else None

    def const(self, name):
        v = self.w.get(name)
        return v if v is not None and v.dtype == np.float32 else None

    def scalar(self, name):
        v = self.const(name)
        return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else None

    def trailing_mean(self, node, x) -> int | None:
        """The first reduced axis when node is ReduceMean(x) over x's trailing axes with
        keepdims, else None."""
        t = self.types.get(x)
        if node is None or node.op != "ReduceMean" or node.inputs[0] != x or not node.attrs.get("keepdims", 1) \
                or t is None or t.shape is None or t.dtype != "float32" or len(node.inputs) < 2:
            return None
        axes = self.w.get(node.inputs[1])
        rank = len(t.shape)
        if axes is None or axes.size == 0:
            return None
        axes = sorted(int(a) % rank for a in axes.reshape(-1))
        if axes != list(range(rank - len(axes), rank)) or any(t.shape[a] is None for a in axes):
            return None
        return axes[0]

    def square(self, value):
        """A node computing value² (Pow(value, 2) or value·value)."""
        for n in self.readers(value):
            if (n.op == "Pow" and n.inputs[0] == value and self.scalar(n.inputs[1]) == 2.0) or \
                    (n.op == "Mul" and n.inputs == [value, value]):
                return n
        return None

    def inverse_sqrt_times(self, value, numerator):
        """From value (mean square + eps): the nodes computing numerator / Sqrt(value), as
        Sqrt then Div, or Sqrt, Reciprocal (or 1 / ·) then Mul; ([nodes], output) or None."""
        sqrt = self.only_reader(value, "Sqrt")
        if sqrt is None:
            return None
        s = sqrt.outputs[0]
        div = self.only_reader(s, "Div")
        if div is not None and div.inputs == [numerator, s]:
            return [sqrt, div], div.outputs[0]
        rec = self.only_reader(s, "Reciprocal")
        if rec is None and div is not None and div.inputs[1] == s and self.scalar(div.inputs[0]) == 1.0:
            rec = div
        mul = self.only_reader(rec.outputs[0], "Mul") if rec is not None else None
        if mul is not None and numerator in mul.inputs and rec.outputs[0] in mul.inputs:
            return [sqrt, rec, mul], mul.outputs[0]
        return None

    def affine(self, value, op, norm_shape):
        """(node, constant broadcast to norm_shape, output) when value's only reader is
        op(value, c) with a float32 constant c varying along the normalised axes only."""
        node = self.only_reader(value, op)
        if node is None or len(node.inputs) != 2:
            return None
        c = self.const(node.inputs[1] if node.inputs[0] == value else node.inputs[0])
        if c is None:
            return None
        lead = c.ndim - len(norm_shape)
        if lead > 0 and any(d != 1 for d in c.shape[:lead]):
            return None
        try:
            full = np.broadcast_to(c.reshape(c.shape[max(lead, 0):]), norm_shape)
        except ValueError:
            return None
        return node, np.ascontiguousarray(full, np.float32), node.outputs[0]


def _eps_after(m: _Match, value):
    add = m.only_reader(value, "Add")
    if add is None:
        return None
    eps = m.scalar(add.inputs[1] if add.inputs[0] == value else add.inputs[0])
    return None if eps is None or eps < 0 else (add, eps)


def _layer_norm(m: _Match, mean):
    """Nodes and parts of the LayerNorm decomposition starting at ReduceMean `mean`."""
    x = mean.inputs[0]
    axis = m.trailing_mean(mean, x)
    sub = m.only_reader(mean.outputs[0], "Sub")
    if axis is None or sub is None or sub.inputs != [x, mean.outputs[0]]:
        return None
    d = sub.outputs[0]
    sq = m.square(d)
    var = m.only_reader(sq.outputs[0]) if sq is not None else None
    eps = _eps_after(m, var.outputs[0]) if var is not None and m.trailing_mean(var, sq.outputs[0]) == axis else None
    tail = m.inverse_sqrt_times(eps[0].outputs[0], d) if eps is not None else None
    if tail is None or len(m.readers(d)) != 2:
        return None
    return x, axis, [mean, sub, sq, var, eps[0]] + tail[0], tail[1], eps[1]


def _rms_norm(m: _Match, mean):
    sq = m.prod.get(mean.inputs[0])
    x = sq.inputs[0] if sq is not None else None
    if sq is None or m.square(x) is not sq or m.only_reader(sq.outputs[0]) is not mean:
        return None
    axis = m.trailing_mean(mean, sq.outputs[0])
    eps = _eps_after(m, mean.outputs[0]) if axis is not None else None
    tail = m.inverse_sqrt_times(eps[0].outputs[0], x) if eps is not None else None
    if tail is None:
        return None
    return x, axis, [sq, mean, eps[0]] + tail[0], tail[1], eps[1]


def fuse_layernorm(graph: Graph) -> Graph:
    if not any(n.op == "ReduceMean" for n in graph.nodes):
        return graph
    types = probe_types(graph)
    if types is None:
        return graph
    m = _Match(graph, types)
    names = Names(graph)
    weights = dict(graph.initializers)
    position = {id(n): k for k, n in enumerate(graph.nodes)}
    dropped, replaced = set(), {}
    for mean in graph.nodes:
        if mean.op != "ReduceMean":
            continue
        found, op = _layer_norm(m, mean), "LayerNormalization"
        if found is None:
            found, op = _rms_norm(m, mean), "RMSNormalization"
        if found is None:
            continue
        x, axis, chain, y, eps = found
        norm_shape = m.types[x].shape[axis:]
        params = []
        for k, bin_op in enumerate(("Mul", "Add")[:2 if op == "LayerNormalization" else 1]):
            aff = m.affine(y, bin_op, norm_shape)
            if aff is None:
                break
            chain.append(aff[0])
            params.append(aff[1])
            y = aff[2]
        if not params:  # no γ: a scale of ones (LayerNormalization and RMSNormalization need one)
            params.append(np.ones(norm_shape, np.float32))
        if any(id(n) in dropped for n in chain):
            continue
        inputs = [x]
        for p, what in zip(params, ("scale", "bias")):
            inputs.append(names.fresh(f"{mean.name}/{what}"))
            weights[inputs[-1]] = p
        dropped.update(id(n) for n in chain)
        last = max(chain, key=lambda n: position[id(n)])
        replaced[id(last)] = Node(op, inputs, [y], {"axis": axis, "epsilon": eps}, f"{mean.name}/{op}")
        record("layer_norm" if op == "LayerNormalization" else "rms_norm")
    if not replaced:
        return graph
    nodes = [replaced[id(n)] if id(n) in replaced else n for n in graph.nodes
             if id(n) in replaced or id(n) not in dropped]
    return graph.replace(nodes=nodes, initializers=weights)
