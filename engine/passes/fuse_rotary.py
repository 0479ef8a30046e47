"""Rotary position embedding written out as Hugging Face models compute it — on the heads
(B, H, S, D): y = x·cos + rotate_half(x)·sin, rotate_half(x) = Concat(−x[..., D/2:], x[..., :D/2])
— becomes one RotaryEmbedding node (ONNX opset 23, the non-interleaved form; the attention
fusion later moves it onto the (B, S, H·D) projection).

RotaryEmbedding rotates the pairs (k, k + D/2) by one angle, so it equals the written-out form
only when cos and sin repeat their first half in their second: proved from the graph (cos and sin
computed elementwise from Concat(f, f) along the last axis, as HF's rotary classes do) or read
off constant tables. Its caches are those halves, (B, S, D/2); a table shared by the batch
(HF's position ids of shape (1, S)) is expanded to the batch."""

from __future__ import annotations

import numpy as np

from ..graph import Graph, Node
from .probes import Probes
from .rewrite import Names, consumers, producers
from .stats import record

_ELEMENTWISE = {"Cos", "Sin", "Cast", "Identity"}


class _Match:
    def __init__(self, graph: Graph, probes: Probes):
        self.outputs = {v.name for v in graph.outputs}
        self.uses, self.prod = consumers(graph.nodes), producers(graph.nodes)
        self.w, self.p = graph.initializers, probes
        self.inputs = [v for v in graph.inputs if probes.shapes(v.name) is not None and len(v.shape) >= 2]

    def ints(self, name):
        """A constant's integers; also a value fixed by the shapes that is the same at both
        probes (slice bounds computed from a static dim, as TorchScript exports do)."""
        if not name:
            return None
        v = self.w.get(name)
        if v is None:
            known = self.p.known(name)
            if known is None or not np.array_equal(*known):
                return None
            v = known[0]
        return [int(i) for i in v.reshape(-1)]

    def slice_of(self, name, x, dim):
        """(start, end) when `name` is x sliced along its last axis (step 1), else None."""
        n = self.prod.get(name)
        if n is None or n.op != "Slice" or n.inputs[0] != x:
            return None
        ins = list(n.inputs) + [""] * (5 - len(n.inputs))
        starts, ends, axes, steps = (self.ints(i) for i in ins[1:5])
        if any(v is None or len(v) != 1 for v in (starts, ends, axes)) or axes[0] % 4 != 3 \
                or (ins[4] and steps != [1]):
            return None
        start = starts[0] + dim if starts[0] < 0 else starts[0]
        end = ends[0] + dim if ends[0] < 0 else ends[0]
        return max(0, start), min(dim, end)

    def rotate_half(self, name, x, dim):
        """Whether `name` is Concat(Neg(x[..., h:]), x[..., :h]) along the last axis."""
        cat = self.prod.get(name)
        if cat is None or cat.op != "Concat" or len(cat.inputs) != 2 or int(cat.attrs.get("axis", 0)) % 4 != 3:
            return False
        neg = self.prod.get(cat.inputs[0])
        h = dim // 2
        return neg is not None and neg.op == "Neg" and self.slice_of(neg.inputs[0], x, dim) == (h, dim) \
            and self.slice_of(cat.inputs[1], x, dim) == (0, h)

    def repeats_halves(self, name, trig: str) -> bool:
        """Whether `name` is computed elementwise (Cast, Identity, scalar Mul, `trig`) from
        Concat(f, f) along the last axis: its two halves are equal."""
        n = self.prod.get(name)
        seen_trig = False
        while n is not None and (n.op in _ELEMENTWISE or (n.op == "Mul" and self._scalar_mul(n))):
            if n.op in ("Cos", "Sin"):
                if n.op != trig or seen_trig:
                    return False
                seen_trig = True
            src = n.inputs[0] if n.op != "Mul" else next(i for i in n.inputs if not self._is_scalar(i))
            n = self.prod.get(src)
        if not seen_trig or n is None or n.op != "Concat" or len(n.inputs) != 2 or n.inputs[0] != n.inputs[1]:
            return False
        rank = len(self.p.shapes(n.outputs[0])[0])
        return int(n.attrs.get("axis", 0)) % rank == rank - 1

    def _is_scalar(self, name):
        v = self.w.get(name)
        return v is not None and v.size == 1

    def _scalar_mul(self, n):
        return len(n.inputs) == 2 and sum(self._is_scalar(i) for i in n.inputs) == 1


def _table(m: _Match, name: str, trig: str, x: str):
    """How to make the (b, S, D/2) cache from the (b, 1, S, D) table `name`: ("slice", the
    rank-3 value to halve) or ("const", array); None unless its halves are provably equal."""
    xs = m.p.shapes(x)
    ts = m.p.shapes(name)
    if ts is None or any(len(t) != 4 or t[1:] != (1, s[2], s[3]) or t[0] not in (1, s[0]) for t, s in zip(ts, xs)):
        return None
    half = xs[0][3] // 2
    if name in m.w:
        c = m.w[name]
        if not np.array_equal(c[..., :half], c[..., half:]):
            return None
        return "const", np.ascontiguousarray(c[:, 0, :, :half])
    un = m.prod.get(name)
    if un is None or un.op != "Unsqueeze" or m.ints(un.inputs[1]) not in ([1], [-3]) \
            or not m.repeats_halves(un.inputs[0], trig):
        return None
    return "slice", un.inputs[0]


def _rotary(m: _Match, add: Node):
    """(x, cos table, sin table) when add computes x·cos + rotate_half(x)·sin."""
    if len(add.inputs) != 2:
        return None
    for a, b in (add.inputs, add.inputs[::-1]):
        ma, mb = m.prod.get(a), m.prod.get(b)
        if ma is None or mb is None or ma.op != "Mul" or mb.op != "Mul" or len(ma.inputs) != 2 or len(mb.inputs) != 2:
            continue
        for x, cos in (ma.inputs, ma.inputs[::-1]):
            shapes = m.p.shapes(x)
            if shapes is None or any(len(s) != 4 for s in shapes) or shapes[0][3] != shapes[1][3] \
                    or shapes[0][3] % 2 or m.p.dtype(x) != "float32":
                continue
            dim = shapes[0][3]
            for rh, sin in (mb.inputs, mb.inputs[::-1]):
                if m.rotate_half(rh, x, dim):
                    return x, cos, sin
    return None


def fuse_rotary(graph: Graph) -> Graph:
    if not any(n.op == "Neg" for n in graph.nodes):
        return graph
    probes = Probes.of(graph)
    if probes is None:
        return graph
    m = _Match(graph, probes)
    names, weights = Names(graph), dict(graph.initializers)
    caches: dict = {}  # table name -> cache value name (shared by every layer)
    inserted: dict = {}  # id(add) -> nodes to put in its place
    for add in graph.nodes:
        if add.op != "Add" or add.outputs[0] in m.outputs:
            continue
        found = _rotary(m, add)
        if found is None:
            continue
        x, cos, sin = found
        tables = [(_table(m, cos, "Cos", x), cos), (_table(m, sin, "Sin", x), sin)]
        if any(t is None for t, _ in tables):
            continue
        new = []
        cache_names = []
        for (kind, src), table in tables:
            if table not in caches:
                caches[table] = _cache(m, kind, src, x, names, weights, new)
            cache_names.append(caches[table])
        new.append(Node("RotaryEmbedding", [x] + cache_names, list(add.outputs), {}, f"{add.name}/rotary"))
        inserted[id(add)] = new
        record("rotary")
    if not inserted:
        return graph
    nodes = []
    for n in graph.nodes:
        nodes += inserted.get(id(n), [n])
    return graph.replace(nodes=nodes, initializers=weights)


def _cache(m: _Match, kind: str, src, x: str, names: Names, weights: dict, new: list) -> str:
    """The (B, S, D/2) cache for table `src`, its nodes appended to `new` (they run before the
    first rotary that reads it, so before every later one)."""
    xs = m.p.shapes(x)
    half = xs[0][3] // 2

    def const(hint, value):
        name = names.fresh(hint)
        weights[name] = np.asarray(value)
        return name

    if kind == "const":
        value, batch = const(f"{x}/rotary_cache", src), src.shape[0]
    else:
        value = names.fresh(f"{src}/half")
        new.append(Node("Slice", [src, const(f"{src}/start", np.array([0], np.int64)),
                                  const(f"{src}/end", np.array([half], np.int64)),
                                  const(f"{src}/axis", np.array([-1], np.int64))], [value]))
        batch = m.p.shapes(src)[0][0]
    if batch == xs[0][0] and batch == xs[1][0]:
        return value
    # A table shared by the batch: expanded to (B, S, D/2), B and S read off a graph input of
    # that (B, S, ...) shape when there is one (token ids: nothing keeps x's computation alive
    # once the attention fusion has moved the rotation), else off x (B, H, S, D).
    bs = [(s[0], s[2]) for s in xs]
    source = next((v.name for v in m.inputs if [s[:2] for s in m.p.shapes(v.name)] == bs), None)
    if source is not None:
        dims = [names.fresh(f"{source}/batch_seq")]
        new.append(Node("Shape", [source], dims, {"start": 0, "end": 2}))
    else:
        dims = [names.fresh(f"{x}/batch"), names.fresh(f"{x}/seq")]
        new.append(Node("Shape", [x], [dims[0]], {"start": 0, "end": 1}))
        new.append(Node("Shape", [x], [dims[1]], {"start": 2, "end": 3}))
    shape = names.fresh(f"{value}/shape")
    new.append(Node("Concat", dims + [const(f"{value}/half_dim", np.array([half], np.int64))], [shape], {"axis": 0}))
    out = names.fresh(f"{value}/batch")
    new.append(Node("Expand", [value, shape], [out]))
    return out
