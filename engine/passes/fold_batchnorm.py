"""Conv (+ bias) followed by an inference BatchNormalization with constant statistics becomes
one Conv with scaled weights and a new bias: y = (conv(x) - mean) · γ/√(var+ε) + β costs
nothing per call. Works for ONNX Conv (OIHW filters), engine Conv2D (HWIO) and Dense."""

from __future__ import annotations

import numpy as np

from ..graph import Graph, Node
from .rewrite import Names, consumers, producers
from .stats import record

# Where the output channel sits in each producer's weight.
_CHANNEL_AXIS = {"Conv": 0, "Conv2D": 3, "Dense": 1}


def fold_batchnorm(graph: Graph) -> Graph:
    outputs = {v.name for v in graph.outputs}
    uses, prod = consumers(graph.nodes), producers(graph.nodes)
    weights = dict(graph.initializers)
    names = Names(graph)
    replaced, dropped = {}, set()
    for bn in graph.nodes:
        if bn.op != "BatchNormalization" or bn.attrs.get("training_mode") or len([o for o in bn.outputs if o]) != 1:
            continue
        x = bn.inputs[0]
        conv = prod.get(x)
        if (conv is None or conv.op not in _CHANNEL_AXIS or id(conv) in dropped or x in outputs
                or len(uses.get(x, [])) != 1 or conv.attrs.get("activation") not in (None, "linear")
                or "maxpool" in conv.attrs or len(conv.inputs) > 3):  # BN(conv + residual): no
            continue
        params = [weights.get(i) for i in bn.inputs[1:5]]
        w = weights.get(conv.inputs[1])
        if any(p is None for p in params) or w is None or w.dtype.kind != "f":
            continue
        scale, beta, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
        eps = float(bn.attrs.get("epsilon", 1e-5))
        axis = _CHANNEL_AXIS[conv.op]
        channels = w.shape[axis]
        if not all(p.size == channels for p in (scale, beta, mean, var)):
            continue
        factor = scale / np.sqrt(var + eps)
        shape = [1] * w.ndim
        shape[axis] = channels
        b_name = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2] else ""
        if b_name and b_name not in weights:
            continue
        b = np.asarray(weights[b_name], np.float64) if b_name else np.zeros(channels)
        new_w = names.fresh(f"{conv.name}/bn_weight")
        new_b = names.fresh(f"{conv.name}/bn_bias")
        weights[new_w] = (w.astype(np.float64) * factor.reshape(shape)).astype(w.dtype)
        weights[new_b] = ((b - mean) * factor + beta).astype(w.dtype)
        replaced[id(conv)] = Node(conv.op, [conv.inputs[0], new_w, new_b], list(bn.outputs), dict(conv.attrs),
                                  conv.name)
        dropped.add(id(bn))
        record("batchnorm_folded")
    if not replaced:
        return graph
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in dropped]
    return graph.replace(nodes=nodes, initializers=weights)
