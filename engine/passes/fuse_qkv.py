"""Q, K and V projections of one input -> one GEMM. Three Dense nodes that read the same x with
constant weights (and all or none with a bias, no activation), feeding nothing but the Q, K and V
of one 3-D self-attention node, become one Dense whose weights are the three side by side, and
the Attention becomes a PackedAttention that reads the three column ranges of that output in
place: one pass over x and one wider GEMM instead of three narrow ones, and no split copy.
A projection exported fused already (GPT-2's c_attn: one GEMM, then a three-way Split of the
last axis) loses its Split copy the same way."""

from __future__ import annotations

import numpy as np

from ..graph import Graph, Node
from .rewrite import Names, consumers, producers
from .stats import record


def fuse_qkv(graph: Graph) -> Graph:
    uses, prod = consumers(graph.nodes), producers(graph.nodes)
    outputs = {v.name for v in graph.outputs}
    weights = dict(graph.initializers)
    names = Names(graph)
    replaced, dropped = {}, set()
    for att in graph.nodes:
        split = _split_projection(att, uses, prod, weights, outputs)
        if split is not None and id(split) not in dropped:
            dropped.add(id(split))
            replaced[id(att)] = (_packed(att, split.inputs[0]),)
            record("fused_qkv")
            continue
        projections = _projections(att, uses, prod, weights, outputs)
        if projections is None or any(id(p) in dropped for p in projections):
            continue
        x = projections[0].inputs[0]
        w = np.concatenate([weights[p.inputs[1]] for p in projections], axis=1)
        w_name = names.fresh(f"{att.name}/qkv_kernel")
        weights[w_name] = np.ascontiguousarray(w)
        ins = [x, w_name]
        if len(projections[0].inputs) > 2:
            b_name = names.fresh(f"{att.name}/qkv_bias")
            weights[b_name] = np.concatenate([weights[p.inputs[2]] for p in projections])
            ins.append(b_name)
        qkv = names.fresh(f"{att.name}/qkv")
        dense = Node("Dense", ins, [qkv], {}, names.fresh(f"{att.name}/qkv_dense"))
        dropped.update(id(p) for p in projections)
        replaced[id(att)] = (dense, _packed(att, qkv))
        record("fused_qkv")
    if not replaced:
        return graph
    nodes = []
    for n in graph.nodes:
        if id(n) in replaced:
            nodes.extend(replaced[id(n)])
        elif id(n) not in dropped:
            nodes.append(n)
    used = {i for n in nodes for i in n.inputs}
    return graph.replace(nodes=nodes, initializers={k: v for k, v in weights.items() if k in used})


_KEPT = ("q_num_heads", "kv_num_heads", "is_causal", "scale", "softcap")


def _packed(att, qkv):
    mask = att.inputs[3:4] if len(att.inputs) > 3 and att.inputs[3] else []
    return Node("PackedAttention", [qkv] + mask, list(att.outputs), {k: v for k, v in att.attrs.items() if k in _KEPT},
                att.name)


def _fusable(att) -> bool:
    """A 3-D self-attention node without a cache, windows or extra outputs (what PackedAttention does)."""
    a = att.attrs
    return att.op == "Attention" and len(att.outputs) == 1 and len(att.inputs) <= 4 and bool(a.get("q_num_heads")) \
        and bool(a.get("kv_num_heads")) and len(set(att.inputs[:3])) == 3 and all(k in _KEPT for k in a)


def _split_projection(att, uses, prod, weights, outputs):
    """The Split of a fusable Attention node whose Q, K, V are its three outputs, in order, on the
    last axis (sizes Hq·D, Hkv·D, Hkv·D), each read by the attention alone; else None."""
    if not _fusable(att):
        return None
    split = prod.get(att.inputs[0])
    if split is None or split.op != "Split" or list(split.outputs) != list(att.inputs[:3]) \
            or split.attrs.get("axis") not in (-1, 2):
        return None
    hq, hkv = att.attrs["q_num_heads"], att.attrs["kv_num_heads"]
    if len(split.inputs) > 1 and split.inputs[1]:
        sizes = weights.get(split.inputs[1])
        if sizes is None or sizes.size != 3:
            return None
        nq, nk, nv = (int(v) for v in sizes.reshape(-1))
        if nk != nv or nq * hkv != nk * hq:
            return None
    elif hq != hkv:
        return None  # equal thirds hold Q, K, V only when they have as many heads
    if any(o in outputs or len(uses.get(o, [])) != 1 for o in split.outputs):
        return None
    return split


def _projections(att, uses, prod, weights, outputs):
    """The Q, K, V Dense nodes of a fusable Attention node, or None."""
    if not _fusable(att):
        return None
    a = att.attrs
    ps = [prod.get(v) for v in att.inputs[:3]]
    if any(p is None or p.op != "Dense" or p.attrs.get("activation") not in (None, 0, "", "linear") for p in ps):
        return None
    if len({p.inputs[0] for p in ps}) != 1 or len({len(p.inputs) for p in ps}) != 1:
        return None
    ws = [weights.get(p.inputs[1]) for p in ps]
    if any(w is None or w.dtype != np.float32 or w.ndim != 2 for w in ws) or len({w.shape[0] for w in ws}) != 1:
        return None
    if len(ps[0].inputs) > 2 and any(weights.get(p.inputs[2]) is None or weights[p.inputs[2]].ndim != 1 for p in ps):
        return None
    hq, hkv = a["q_num_heads"], a["kv_num_heads"]
    nq, nk, nv = (w.shape[1] for w in ws)
    if nq % hq or nk != nv or nk * hq != nq * hkv:
        return None  # packed attention needs one head size for Q, K and V
    for p in ps:
        if p.outputs[0] in outputs or len(uses.get(p.outputs[0], [])) != 1:
            return None
    return ps
