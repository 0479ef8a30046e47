"""Scaled dot-product attention written out as exporters emit it becomes one Attention node
(ONNX opset 23 semantics, 3-D inputs), which runs on the engine's flash kernel:

    Q/K/V projections (B, S, H·D) -> split heads -> [rotary] -> [repeat kv heads]
      -> Softmax(scale · Q·Kᵀ [+ mask]) [NaN guard] · V -> merge heads (B, S, H·D)

becomes Attention(Q, K, V, [mask]; q_num_heads, kv_num_heads, scale, [is_causal]) reading the
projections directly (no head transposes) and writing the merged heads. A RotaryEmbedding on
the heads (fuse_rotary) moves onto the projection (num_heads attribute).

What is matched is the computation, not its spelling: the scores path (MatMul, scalar Mul/Div,
one mask Add, Softmax over the last axis, the IsNaN/Where guard of SDPA exports, MatMul) node by
node; the layout changes around it (Reshape/Transpose in the eager form, the Reshape(-1, L, D) /
Transpose / Reshape of the SDPA decomposition's Kᵀ, Unsqueeze/Expand/Reshape of grouped-query
heads, the scale folded onto Q and K) by running them on index tensors at two probe sizes
(chains.py) and comparing with where Attention reads and writes each element.

Semantics kept exactly: a row whose keys are all masked gets zero weights in the kernel. The
graph does the same when it has the NaN guard; without one, softmax of an all −inf row is NaN,
so the mask must be provably finite (its value range, propagated from its constants and casts:
HF's Where(mask, 0, finfo.min) is; (1 − mask)·finfo.min of an int64 input is not, since a mask
value of −1 would overflow) — else the pattern is left alone. A mask fixed by the shapes that is
exactly the causal triangle (0 on and below the diagonal, ≤ −1e30 above, queries = keys) becomes
is_causal=1, which also skips the masked tiles."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..graph import Graph, Node
from .chains import MOVES, chain_source, data_input, runs_as, scale_of, scalar_factor, trace_back
from .dead_code import eliminate_dead_code
from .probes import Probes
from .rewrite import Names, consumers, producers
from .stats import record

_Q_LINKS = (MOVES - {"Expand"}) | {"Scale", "RotaryEmbedding"}
_K_LINKS = MOVES | {"Scale", "RotaryEmbedding"}
_V_LINKS = MOVES
_OUT_LINKS = MOVES - {"Expand"}
_FLOAT_MAX = float(np.finfo(np.float32).max)
_MASKED = -1e30  # an additive mask at or below this zeroes a weight exactly (exp underflows)


class _Core(NamedTuple):
    qk: Node          # MatMul(Q', Kᵀ')
    pv: Node          # MatMul(P, V')
    mask: str | None  # the additive mask
    scale: float      # scalar factors between qk and the mask add
    guarded: bool     # the NaN guard after Softmax


class _Heads(NamedTuple):
    source: str       # the (B, S, heads·dim) projection
    heads: int
    rotary: Node | None
    scale: float


class _Graph:
    def __init__(self, graph: Graph, probes: Probes):
        self.graph, self.p = graph, probes
        self.outputs = {v.name for v in graph.outputs}
        self.uses, self.prod = consumers(graph.nodes), producers(graph.nodes)
        self.w = graph.initializers
        self.inputs = {v.name: v for v in graph.inputs}
        self._bounds: dict = {}

    def only_reader(self, value):
        r = self.uses.get(value, [])
        return r[0] if len(r) == 1 and value not in self.outputs else None

    def private(self, value, reader) -> bool:
        return self.only_reader(value) is reader

    def scalar(self, name, want) -> bool:
        v = self.w.get(name)
        return v is not None and v.size == 1 and float(v.reshape(-1)[0]) == want

    # -- value ranges: can the mask be -inf (or NaN)? --

    def finite(self, name) -> bool:
        b = self.bounds(name)
        return b is not None and -_FLOAT_MAX <= b[0] and b[1] <= _FLOAT_MAX

    def bounds(self, name):
        """(lo, hi) bounding every value of `name`, or None when unbounded or unknown."""
        if name not in self._bounds:
            self._bounds[name] = None  # cycles cannot occur; this only stops re-entry
            self._bounds[name] = self._compute_bounds(name)
        return self._bounds[name]

    def _compute_bounds(self, name):
        if name in self.w:
            v = self.w[name]
            if v.size == 0 or v.dtype.kind not in "fiub":
                return None
            v = v.astype(np.float64)
            return None if np.isnan(v).any() else (float(v.min()), float(v.max()))
        if name in self.inputs:
            return _type_bounds(self.inputs[name].dtype)
        n = self.prod.get(name)
        if n is None:
            return None
        if n.op in ("Not", "And", "Or", "Xor", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
                    "IsNaN", "IsInf"):
            return 0.0, 1.0
        if n.op == "Cast":
            src = self.bounds(n.inputs[0])
            return src if src is not None else _type_bounds(self.p.dtype(n.inputs[0]))
        if n.op == "Where":
            return _hull(self.bounds(n.inputs[1]), self.bounds(n.inputs[2]))
        if n.op in MOVES or n.op in ("Slice", "Gather", "GatherElements", "GatherND", "Tile"):
            return self.bounds(n.inputs[0])
        if n.op in ("Concat", "Max", "Min"):
            parts = [self.bounds(i) for i in n.inputs]
            return None if any(p is None for p in parts) else _hull(*parts)
        if n.op == "Neg":
            b = self.bounds(n.inputs[0])
            return None if b is None else (-b[1], -b[0])
        if n.op in ("Add", "Sub", "Mul") and len(n.inputs) == 2:
            a, b = self.bounds(n.inputs[0]), self.bounds(n.inputs[1])
            if a is None or b is None:
                return None
            if n.op == "Add":
                return a[0] + b[0], a[1] + b[1]
            if n.op == "Sub":
                return a[0] - b[1], a[1] - b[0]
            products = [x * y for x in a for y in b]
            return min(products), max(products)
        return None


def _type_bounds(dtype):
    if dtype == "bool":
        return 0.0, 1.0
    if dtype is not None and dtype.startswith(("int", "uint")):
        info = np.iinfo(np.dtype(dtype))
        return float(info.min), float(info.max)
    return None


def _hull(*parts):
    if any(p is None for p in parts):
        return None
    return min(p[0] for p in parts), max(p[1] for p in parts)


def _core(g: _Graph, softmax: Node) -> _Core | None:
    """The scores path around a Softmax, each intermediate read by the next node only."""
    shapes = g.p.shapes(softmax.inputs[0])
    if shapes is None or any(len(s) != 4 for s in shapes) or g.p.dtype(softmax.inputs[0]) != "float32" \
            or softmax.attrs.get("axis", -1) not in (-1, 3):
        return None
    probs, guarded = softmax.outputs[0], False
    readers = [] if probs in g.outputs else g.uses.get(probs, [])
    if sorted(n.op for n in readers) == ["IsNaN", "Where"]:  # SDPA: Where(IsNaN(P), 0, P)
        isnan, where = sorted(readers, key=lambda n: n.op != "IsNaN")
        if not (where.inputs[0] == isnan.outputs[0] and g.private(isnan.outputs[0], where)
                and g.scalar(where.inputs[1], 0.0) and where.inputs[2] == probs):
            return None
        probs, guarded = where.outputs[0], True
    pv = g.only_reader(probs)
    if pv is None or pv.op != "MatMul" or pv.inputs[0] != probs:
        return None
    scores, mask = softmax.inputs[0], None
    node = g.prod.get(scores)
    if node is not None and node.op == "Add" and g.private(scores, softmax):
        for s, mk in (node.inputs, node.inputs[::-1]):
            if _leads_to_matmul(g, s):
                scores, mask = s, mk
                break
        else:
            return None
        reader = node
    else:
        reader = softmax
    scale = 1.0
    while True:
        node = g.prod.get(scores)
        if node is None or not g.private(scores, reader):
            return None
        if node.op == "MatMul":
            return _Core(node, pv, mask, scale, guarded)
        step = scalar_factor(node, g.w)
        if step is None:
            return None
        scores, scale, reader = step[0], scale * step[1], node


def _leads_to_matmul(g: _Graph, value) -> bool:
    n = g.prod.get(value)
    while n is not None and scalar_factor(n, g.w) is not None:
        n = g.prod.get(scalar_factor(n, g.w)[0])
    return n is not None and n.op == "MatMul"


def _split(index, batch, seq, heads, dim):
    """(B, S, heads·dim) -> (B, heads, S, dim): the heads of a projection."""
    return index.reshape(batch, seq, heads, dim).transpose(0, 2, 1, 3)


def _heads(g: _Graph, target: str, links: set, seq_axis: int, dim: int, q_heads: int, final) -> _Heads | None:
    """The projection a chain of layout changes reads, most upstream first: (B, seq, heads·dim)
    whose split heads, after `final(split, repeat)`, are what the chain delivers to `target`."""
    nodes = trace_back(target, g.prod, g.w, links)
    tshapes = g.p.shapes(target)
    for i in range(len(nodes) + 1):
        sub = nodes[i:]
        src = chain_source(sub, g.w, target)
        shapes = g.p.shapes(src)
        if shapes is None or any(len(s) != 3 for s in shapes) or g.p.dtype(src) != "float32":
            continue
        batch_seq = [(t[0], t[seq_axis]) for t in tshapes]
        if [s[:2] for s in shapes] != batch_seq or shapes[0][2] != shapes[1][2] or shapes[0][2] % dim:
            continue
        heads = shapes[0][2] // dim
        if q_heads % heads:
            continue
        rotary = [n for n in sub if n.op == "RotaryEmbedding"]
        if len(rotary) > 1 or (rotary and not _heads_rotary(g, rotary[0])):
            continue

        def split(index, k, heads=heads):
            b, s = batch_seq[k]
            return _split(index, b, s, heads, dim)

        checkpoints = {id(rotary[0]): split} if rotary else None
        if runs_as(g.p, src, sub, lambda index, k: final(split(index, k), q_heads // heads), checkpoints):
            return _Heads(src, heads, rotary[0] if rotary else None, scale_of(sub, g.w))
    return None


def _heads_rotary(g: _Graph, node: Node) -> bool:
    """A RotaryEmbedding on (B, H, S, D) heads without position ids (fuse_rotary's form)."""
    return len(node.inputs) == 3 and "num_heads" not in node.attrs and not node.attrs.get("rotary_embedding_dim")


def _merged(g: _Graph, y: str, q_heads: int, v_dim: int):
    """A value after the P·V product y (B, H, S, Dv), through single-reader layout changes, that
    holds the merged heads (B, S, H·Dv) in row-major order: (value, None) when it has exactly
    that shape, else (value, its Reshape target)."""
    nodes, value = [], y
    while True:
        readers = [] if value in g.outputs else [n for n in g.uses.get(value, []) if n.op not in ("Shape", "Size")]
        n = readers[0] if len(readers) == 1 else None  # a Shape reader dies with its Reshape, or keeps the chain
        if n is None or n.op not in _OUT_LINKS or data_input(n, g.w) != value:
            break
        nodes.append(n)
        value = n.outputs[0]
    ys = g.p.shapes(y)
    moved = [i for i in range(1, len(nodes) + 1)
             if runs_as(g.p, y, nodes[:i], lambda index, k: index.transpose(0, 2, 1, 3), flat=True)]
    for i in moved:  # the nearest value of exactly (B, S, H·Dv): later Reshapes stay (views)
        z = nodes[i - 1].outputs[0]
        if all(s == (t[0], t[2], q_heads * v_dim) for s, t in zip(g.p.shapes(z), ys)):
            return z, None
    for i in reversed(moved):  # else the furthest one a constant Reshape target can describe
        z = nodes[i - 1].outputs[0]
        target = g.p.static_shape(z)
        if target is not None:
            return z, target
    return None


def _causal(g: _Graph, mask: str, scores_shapes) -> bool:
    """Whether the additive mask, fixed by the shapes, is exactly the causal triangle."""
    vals = g.p.known(mask)
    if vals is None:
        return False
    for v, (b, h, s, l) in zip(vals, scores_shapes):
        if s != l or v.ndim > 4:
            return False
        full = np.broadcast_to(v.reshape((1,) * (4 - v.ndim) + v.shape), (b, h, s, l))
        below = np.tril(np.ones((s, l), bool))
        if not (np.all(full[..., below] == 0) and np.all(full[..., ~below] <= _MASKED)):
            return False
    return True


def _mask_fits(g: _Graph, mask: str, scores_shapes) -> bool:
    """A float32 mask that broadcasts to the scores (B, H, S, L) and covers every key."""
    shapes = g.p.shapes(mask)
    if shapes is None or g.p.dtype(mask) != "float32":
        return False
    for m, full in zip(shapes, scores_shapes):
        if not 1 <= len(m) <= 4:
            return False
        padded = (1,) * (4 - len(m)) + tuple(m)
        if padded[3] != full[3] or any(a not in (1, b) for a, b in zip(padded[:3], full[:3])):
            return False
    return True


def fuse_attention(graph: Graph) -> Graph:
    if not any(n.op == "Softmax" for n in graph.nodes):
        return graph
    probes = Probes.of(graph)
    if probes is None:
        return graph
    g = _Graph(graph, probes)
    names = Names(graph)
    weights = dict(graph.initializers)
    fused = []  # (the replaced node, the nodes in its place, the scores MatMul)
    for softmax in graph.nodes:
        if softmax.op == "Softmax":
            found = _fuse_one(g, softmax, names, weights)
            if found is not None:
                fused.append(found)
    # A value of the old computation read elsewhere (a Shape feeding a live Reshape, say) keeps
    # it alive: such a fusion would compute attention twice, so it is left undone.
    while fused:
        placed = {id(last): new for last, new, _ in fused}
        nodes = []
        for n in graph.nodes:
            nodes += placed.get(id(n), [n])
        out = eliminate_dead_code(graph.replace(nodes=nodes, initializers=weights))
        alive = {id(n) for n in out.nodes}
        kept = [f for f in fused if id(f[2]) not in alive]
        if len(kept) == len(fused):
            record("attention", len(fused))
            return out
        fused = kept
    return graph


def _fuse_one(g: _Graph, softmax: Node, names: Names, weights: dict):
    core = _core(g, softmax)
    if core is None:
        return None
    scores = g.p.shapes(core.qk.outputs[0])
    qs, ks, vs = (g.p.shapes(core.qk.inputs[0]), g.p.shapes(core.qk.inputs[1]), g.p.shapes(core.pv.inputs[1]))
    if any(s is None or any(len(x) != 4 for x in s) for s in (qs, ks, vs)):
        return None
    q_heads, dim, v_dim = qs[0][1], qs[0][3], vs[0][3]
    if any(x[1] != q_heads or x[3] != dim for x in qs) or any(x[3] != v_dim or x[1] != q_heads for x in vs):
        return None
    q = _heads(g, core.qk.inputs[0], _Q_LINKS, 2, dim, q_heads, lambda s, rep: s if rep == 1 else None)
    k = _heads(g, core.qk.inputs[1], _K_LINKS, 3, dim, q_heads,
               lambda s, rep: np.repeat(s, rep, axis=1).transpose(0, 1, 3, 2))
    v = _heads(g, core.pv.inputs[1], _V_LINKS, 2, v_dim, q_heads, lambda s, rep: np.repeat(s, rep, axis=1))
    if q is None or k is None or v is None or k.heads != v.heads:
        return None
    merged = _merged(g, core.pv.outputs[0], q_heads, v_dim)
    if merged is None:
        return None
    attrs = {"q_num_heads": q_heads, "kv_num_heads": k.heads, "scale": q.scale * k.scale * core.scale}
    inputs = [None, None, v.source]
    if core.mask is not None:
        if not _mask_fits(g, core.mask, scores):
            return None
        if _causal(g, core.mask, scores):
            attrs["is_causal"] = 1
        elif core.guarded or g.finite(core.mask):
            inputs.append(core.mask)
        else:
            return None
    new = []
    for slot, heads in ((0, q), (1, k)):
        inputs[slot] = heads.source
        if heads.rotary is not None:  # the same rotation on the projection: num_heads says where heads are
            rotated = names.fresh(f"{heads.rotary.outputs[0]}/3d")
            new.append(Node("RotaryEmbedding", [heads.source] + heads.rotary.inputs[1:], [rotated],
                            {**heads.rotary.attrs, "num_heads": heads.heads}, f"{heads.rotary.name}/3d"))
            inputs[slot] = rotated
    z, target = merged
    y = z if target is None else names.fresh(f"{softmax.name}/attention")
    new.append(Node("Attention", inputs, [y], attrs, f"{softmax.name}/attention"))
    if target is not None:
        shape = names.fresh(f"{y}/shape")
        weights[shape] = target
        new.append(Node("Reshape", [y, shape], [z]))
    return g.prod[z], new, core.qk
