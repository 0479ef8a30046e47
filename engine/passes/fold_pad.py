"""A zero Pad on the spatial dims feeding a Conv becomes part of the Conv's own padding
(TensorFlow-style 'same' padding is exported as Pad -> Conv): one op instead of two, and the
conv trunk stays in one layout."""

from __future__ import annotations

import numpy as np

from ..graph import Graph, Node
from .rewrite import consumers, producers
from .stats import record


def fold_pad_into_conv(graph: Graph) -> Graph:
    outputs = {v.name for v in graph.outputs}
    uses, prod = consumers(graph.nodes), producers(graph.nodes)
    replaced, dropped = {}, set()
    for conv in graph.nodes:
        if conv.op != "Conv" or conv.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
            continue
        pad = prod.get(conv.inputs[0])
        if pad is None or pad.op != "Pad" or id(pad) in dropped or pad.outputs[0] in outputs \
                or len(uses.get(pad.outputs[0], [])) != 1:
            continue
        amounts = _zero_pad_amounts(pad, graph.initializers)
        w = graph.initializers.get(conv.inputs[1])
        if amounts is None or w is None or len(amounts) != 2 * w.ndim:
            continue
        rank = w.ndim
        begins, ends = amounts[:rank], amounts[rank:]
        if begins[0] or begins[1] or ends[0] or ends[1] or min(amounts) < 0:
            continue  # padding batch or channels, or cropping: not a conv padding
        spatial = rank - 2
        old = [int(p) for p in conv.attrs.get("pads", [0] * (2 * spatial))]
        new = [old[i] + begins[2 + i] for i in range(spatial)] + [old[spatial + i] + ends[2 + i] for i in range(spatial)]
        replaced[id(conv)] = Node("Conv", [pad.inputs[0]] + list(conv.inputs[1:]), list(conv.outputs),
                                  {**conv.attrs, "pads": new}, conv.name)
        dropped.add(id(pad))
        record("pad_folded")
    if not replaced:
        return graph
    return graph.replace(nodes=[replaced.get(id(n), n) for n in graph.nodes if id(n) not in dropped])


def _zero_pad_amounts(pad: Node, weights: dict):
    """The pads of a constant-mode Pad with value 0 and constant pads (all axes), else None."""
    mode = pad.attrs.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode != "constant" or len(pad.inputs) < 2 or pad.inputs[1] not in weights:
        return None
    if len(pad.inputs) > 2 and pad.inputs[2]:
        value = weights.get(pad.inputs[2])
        if value is None or np.any(np.asarray(value) != 0):
            return None
    if len(pad.inputs) > 3 and pad.inputs[3]:
        return None  # an axes input: rare; left alone
    return [int(p) for p in np.asarray(weights[pad.inputs[1]]).reshape(-1)]
