"""Layout: ONNX convolutions are NCHW; the engine's conv kernels are NHWC (channels contiguous,
filters HWIO, pre-packed). This pass moves whole trunks into NHWC once: every 2-D Conv becomes
a `Conv2D`, pools, global average pooling, inference BatchNormalization, elementwise ops and
channel Concats that read NHWC values follow, and a Transpose is inserted only where a value
crosses between the two layouts (a graph input entering the trunk, a value leaving it for an
op that stays NCHW, a graph output). Where the trunk ends in Flatten -> Gemm/MatMul with
constant weights, the weight rows are permuted instead, so no transpose remains at all; a
Transpose that only moves size-1 dims (after global pooling) becomes a free Reshape later
(passes/simplify.py).

Converted values get new names (`<name>/nhwc`); the NCHW name is produced by a transpose only
if something still reads it, so the graph's inputs and outputs keep their names and layouts.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..graph import Graph, Node
from .rewrite import Names, consumers
from .shapes import probe_types

TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]

_UNARY = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish",
          "Softplus", "Softsign", "Gelu", "Mish", "Swish", "Erf", "Exp", "Log", "Neg", "Abs", "Sqrt",
          "Reciprocal", "Clip", "Floor", "Ceil", "Round", "Sign", "Identity", "Cast", "ThresholdedRelu",
          "Shrink", "Dropout"}
_BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu", "Sum", "Mean"}


def to_nhwc(graph: Graph) -> Graph:
    if not any(n.op == "Conv" for n in graph.nodes):
        return graph
    types = probe_types(graph)
    if types is None:
        return graph
    return _Layout(graph, types).run()


class _Layout:
    def __init__(self, graph: Graph, types: dict):
        self.g, self.types = graph, types
        self.weights = dict(graph.initializers)
        self.names = Names(graph)
        self.uses = consumers(graph.nodes)
        self.out: list[Node] = []
        self.nhwc: dict[str, str] = {}           # NCHW name -> name of its NHWC version
        self.nchw_ready = {v.name for v in graph.inputs} | set(graph.initializers)
        self.row_perm: dict[str, np.ndarray] = {}  # flattened NHWC value -> weight row order

    # -- driver ---------------------------------------------------------------------------

    def run(self) -> Graph:
        rules = {"Conv": self.conv, "MaxPool": self.pool, "AveragePool": self.pool,
                 "GlobalAveragePool": self.global_pool, "BatchNormalization": self.batchnorm,
                 "Concat": self.concat, "Flatten": self.flatten}
        for node in self.g.nodes:
            rule = rules.get(node.op)
            if rule is None and node.op in _UNARY:
                rule = self.unary
            elif rule is None and node.op in _BINARY:
                rule = self.binary
            if rule is None or not rule(node):
                self.keep(node)
        for v in self.g.outputs:
            self.nchw(v.name)
        return self.g.replace(nodes=self.out, initializers=self.weights)

    def keep(self, node: Node) -> None:
        """An op that stays NCHW: its NHWC inputs are transposed back first."""
        inputs = [self.nchw(i) if i else i for i in node.inputs]
        if node.op in ("Gemm", "MatMul") and node.inputs and node.inputs[0] in self.row_perm:
            node = self._permuted_linear(node)
            inputs = list(node.inputs)
        self.out.append(Node(node.op, inputs, list(node.outputs), node.attrs, node.name))
        self.nchw_ready.update(o for o in node.outputs if o)

    # -- moving values between layouts ------------------------------------------------------

    def shape(self, name):
        t = self.types.get(name)
        return None if t is None else t.shape

    def is_activation4d(self, name) -> bool:
        s = self.shape(name)
        return name not in self.weights and s is not None and len(s) == 4

    def nhwc_of(self, name: str) -> str:
        """The NHWC version of a 4-D value (a transpose is added the first time)."""
        if name not in self.nhwc:
            new = self.names.fresh(f"{name}/nhwc")
            self.out.append(Node("Transpose", [self.nchw(name)], [new], {"perm": TO_NHWC}, self.names.fresh(new)))
            self.nhwc[name] = new
        return self.nhwc[name]

    def nchw(self, name: str) -> str:
        """The NCHW value `name` (transposed back from its NHWC version if only that exists)."""
        if name in self.nchw_ready or name not in self.nhwc:
            return name
        self.out.append(Node("Transpose", [self.nhwc[name]], [name], {"perm": TO_NCHW}, self.names.fresh(name)))
        self.nchw_ready.add(name)
        return name

    def produce(self, node: Node, op: str, inputs: list, attrs: dict) -> None:
        """Emit the NHWC form of `node`: its (single) output becomes `<output>/nhwc`."""
        out = node.outputs[0]
        new = self.names.fresh(f"{out}/nhwc")
        self.out.append(Node(op, inputs, [new], attrs, node.name))
        self.nhwc[out] = new

    # -- rules ------------------------------------------------------------------------------

    def conv(self, node: Node) -> bool:
        x, w_name = node.inputs[0], node.inputs[1]
        w = self.weights.get(w_name)
        xs = self.shape(x)
        if w is None or w.ndim != 4 or w.dtype != np.float32 or xs is None or len(xs) != 4 or len(node.outputs) != 1:
            return False
        a = node.attrs
        kh, kw = w.shape[2], w.shape[3]
        strides = [int(s) for s in a.get("strides", [1, 1])]
        dil = [int(d) for d in a.get("dilations", [1, 1])]
        padding = _padding(a, xs[2:], (kh, kw), strides, dil)
        if padding is None:
            return False
        b = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
        if b is not None and b not in self.weights:
            return False
        hwio = self.names.fresh(f"{w_name}/hwio")
        self.weights[hwio] = dtypes.contiguous(w.transpose(2, 3, 1, 0))
        inputs = [self.nhwc_of(x), hwio] + ([b] if b else [])
        self.produce(node, "Conv2D", inputs, {"strides": strides, "dilations": dil, "padding": padding,
                                              "groups": int(a.get("group", 1))})
        return True

    def pool(self, node: Node) -> bool:
        x = node.inputs[0]
        if x not in self.nhwc or len([o for o in node.outputs if o]) != 1:
            return False
        a = node.attrs
        k = [int(v) for v in a.get("kernel_shape", [])]
        if len(k) != 2:
            return False
        strides = [int(s) for s in a.get("strides", [1, 1])]
        dil = [int(d) for d in a.get("dilations", [1, 1])]
        padding = _padding(a, self.shape(x)[2:], k, strides, dil)
        if padding is None:
            return False
        attrs = {"pool_size": k, "strides": strides, "padding": padding, "dilations": dil,
                 "ceil_mode": bool(a.get("ceil_mode", 0))}
        if node.op == "AveragePool":
            attrs["count_include_pad"] = bool(a.get("count_include_pad", 0))
        self.produce(node, "MaxPool2D" if node.op == "MaxPool" else "AvgPool2D", [self.nhwc[x]], attrs)
        return True

    def global_pool(self, node: Node) -> bool:
        x = node.inputs[0]
        if x not in self.nhwc:
            return False
        self.produce(node, "GlobalAveragePool2D", [self.nhwc[x]], {"keepdims": True})
        return True

    def batchnorm(self, node: Node) -> bool:
        x = node.inputs[0]
        params = [self.weights.get(i) for i in node.inputs[1:5]]
        if x not in self.nhwc or node.attrs.get("training_mode") or any(p is None for p in params) \
                or len([o for o in node.outputs if o]) != 1:
            return False
        scale, beta, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
        factor = scale / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
        f_name, s_name = self.names.fresh(f"{node.name}/scale"), self.names.fresh(f"{node.name}/shift")
        self.weights[f_name] = factor.astype(np.float32)
        self.weights[s_name] = (beta - mean * factor).astype(np.float32)
        mid = self.names.fresh(f"{node.outputs[0]}/scaled")
        self.out.append(Node("Mul", [self.nhwc[x], f_name], [mid], {}, self.names.fresh(f"{node.name}/mul")))
        self.produce(node, "Add", [mid, s_name], {})
        return True

    def unary(self, node: Node) -> bool:
        x = node.inputs[0] if node.inputs else ""
        if x not in self.nhwc or len([o for o in node.outputs if o]) != 1:
            return False
        if any(i and (i not in self.weights or self.weights[i].ndim > 0) for i in node.inputs[1:]):
            return False  # only scalar extra inputs (Clip's min/max) carry over unchanged
        self.produce(node, node.op, [self.nhwc[x]] + list(node.inputs[1:]), dict(node.attrs))
        return True

    def binary(self, node: Node) -> bool:
        if not any(i in self.nhwc for i in node.inputs) or len(node.outputs) != 1:
            return False
        inputs = []
        for i in node.inputs:
            if i in self.nhwc or self.is_activation4d(i):
                inputs.append(self.nhwc_of(i))
            elif i in self.weights and self.weights[i].ndim <= 4:
                c = self.weights[i]
                c4 = c.reshape((1,) * (4 - c.ndim) + c.shape).transpose(TO_NHWC)
                name = self.names.fresh(f"{i}/nhwc")
                self.weights[name] = dtypes.contiguous(c4)
                inputs.append(name)
            else:
                return False
        self.produce(node, node.op, inputs, dict(node.attrs))
        return True

    def concat(self, node: Node) -> bool:
        axis = int(node.attrs.get("axis", 0))
        if axis not in (1, -3) or not any(i in self.nhwc for i in node.inputs) \
                or not all(i in self.nhwc or self.is_activation4d(i) for i in node.inputs):
            return False
        self.produce(node, "Concat", [self.nhwc_of(i) for i in node.inputs], {"axis": 3})
        return True

    def flatten(self, node: Node) -> bool:
        """Flatten(axis=1) of an NHWC value whose only readers are Gemm/MatMul with constant
        weights: flatten in NHWC order and permute those weights' rows to match."""
        x, y = node.inputs[0], node.outputs[0]
        s = self.shape(x)
        if x not in self.nhwc or int(node.attrs.get("axis", 1)) != 1 or s is None or None in s[1:]:
            return False
        readers = self.uses.get(y, [])
        outputs = {v.name for v in self.g.outputs}
        if y in outputs or not readers or not all(_linear_reads(r, y, self.weights) for r in readers):
            return False
        _, c, h, w = s
        hh, ww, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
        self.row_perm[y] = (cc * h * w + hh * w + ww).reshape(-1)  # NHWC position -> NCHW row
        self.out.append(Node("Flatten", [self.nhwc[x]], [y], {"axis": 1}, node.name))
        self.nchw_ready.add(y)  # same shape; only the readers (rewritten below) see the order
        return True

    def _permuted_linear(self, node: Node) -> Node:
        perm = self.row_perm[node.inputs[0]]
        w_name = node.inputs[1]
        w = self.weights[w_name]
        trans = node.op == "Gemm" and node.attrs.get("transB", 0)
        new = self.names.fresh(f"{w_name}/nhwc_rows")
        self.weights[new] = dtypes.contiguous(w[:, perm] if trans else w[perm])
        return Node(node.op, [node.inputs[0], new] + list(node.inputs[2:]), list(node.outputs), node.attrs,
                    node.name)


def _linear_reads(node: Node, value: str, weights: dict) -> bool:
    """node reads `value` as the left operand of a product with a constant 2-D weight."""
    if node.op not in ("Gemm", "MatMul") or node.inputs[0] != value or value in node.inputs[1:]:
        return False
    if node.op == "Gemm" and node.attrs.get("transA", 0):
        return False
    w = weights.get(node.inputs[1])
    return w is not None and w.ndim == 2


def _padding(attrs: dict, spatial, kernel, strides, dil):
    """[top, left, bottom, right] for the NHWC op, or 'same'/'valid'; None if it needs
    spatial sizes that are not fixed."""
    auto = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto == "VALID":
        return "valid"
    if auto == "SAME_UPPER":
        return "same"
    if auto == "SAME_LOWER":
        if None in spatial:
            return None
        pads = []
        for n, k, s, d in zip(spatial, kernel, strides, dil):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total - total // 2, total // 2))  # the extra pixel at the start
        return [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]
    p = [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]
    if len(p) != 4:
        return None
    return [p[0], p[1], p[2], p[3]]
