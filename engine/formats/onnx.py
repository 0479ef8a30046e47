"""ONNX models (read with the `onnx` package) as engine Graphs.

    >>> g = onnx.read("resnet50.onnx")        # a path or the file's bytes

What happens here: the protobuf is parsed (a truncated or corrupt file is a ModelFormatError);
model-local functions are inlined; initializers become weights (external data files are read
relative to the model's folder only); every node is mapped onto the engine's ops by
`onnx_ops.convert`, which also brings nodes from older opsets to one form (attributes that
later opsets moved to inputs become constant inputs, and so on); an op the engine does not
implement fails here, at load time, naming the op, its domain, the opset and the node.
Values keep ONNX's names, element types and symbolic dims (`dim_param` -> a named dim).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import dtypes
from ..errors import EngineError, GraphError, ModelFormatError, UnsupportedOpError
from ..graph import Graph, Node, Value

# Largest model the protobuf parser takes in one piece (onnx's own limit is 2 GiB).
_MAX_PROTO_BYTES = 2 << 30


def read(source, name: str | None = None) -> Graph:
    """A Graph from an .onnx path or the file's bytes."""
    import onnx

    if isinstance(source, (bytes, bytearray, memoryview)):
        data, base, name = bytes(source), None, name or "<bytes>"
    else:
        path = Path(source)
        name = name or str(path)
        try:
            size = path.stat().st_size
            if size > _MAX_PROTO_BYTES:
                raise ModelFormatError(f"{name}: {size} bytes is more than one ONNX protobuf may hold "
                                       "(2 GiB); large weights belong in external data files")
            data = path.read_bytes()
        except OSError as e:
            raise ModelFormatError(f"{name}: cannot read ({e})") from None
        base = path.resolve().parent
    try:
        model = onnx.ModelProto()
        model.ParseFromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError and friends
        raise ModelFormatError(f"{name}: not a valid ONNX model (truncated or corrupt protobuf: {e})") from None
    if not model.HasField("graph") or not model.graph.node and not model.graph.output:
        raise ModelFormatError(f"{name}: not an ONNX model (no graph)")
    if model.functions:
        try:
            from onnx import inliner
            model = inliner.inline_local_functions(model)
        except Exception as e:
            raise ModelFormatError(f"{name}: cannot inline the model's local functions ({e})") from None
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    reader = _GraphReader(name, base, opsets)
    graph = reader.graph(model.graph)
    graph.metadata.update({
        "format": "onnx",
        "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "ir_version": model.ir_version,
        "opset_imports": opsets,
        "doc_string": model.doc_string,
        "metadata_props": {p.key: p.value for p in model.metadata_props},
        "graph_name": model.graph.name,
    })
    return graph


class _GraphReader:
    def __init__(self, name: str, base: Path | None, opsets: dict):
        self.name, self.base, self.opsets = name, base, opsets

    # -- graphs ---------------------------------------------------------------------------

    def graph(self, g, outer_names: frozenset = frozenset()) -> Graph:
        from . import onnx_ops

        weights = {}
        for t in g.initializer:
            weights[t.name] = self.tensor(t, f"initializer '{t.name}'")
        for t in g.sparse_initializer:
            raise UnsupportedOpError(f"{self.name}: sparse initializer '{t.values.name}' is not supported")
        inputs = [self.value(v) for v in g.input if v.name not in weights]
        outputs = [self.value(v) for v in g.output]
        nodes: list[Node] = []
        ctx = onnx_ops.ConvertContext(self, weights, outer_names)
        for i, n in enumerate(g.node):
            node_name = n.name or f"{n.op_type}_{i}"
            domain = n.domain or "ai.onnx"
            if domain not in ("ai.onnx", "ai.onnx.ml") or domain not in self.opsets and domain != "ai.onnx":
                raise UnsupportedOpError(f"{self.name}: node '{node_name}': op {n.op_type} of domain "
                                         f"'{n.domain}' is not supported (only the default ONNX domain)")
            opset = self.opsets.get(domain, self.opsets.get("ai.onnx", 1))
            attrs = {a.name: self.attribute(a, node_name) for a in n.attribute}
            nodes.extend(onnx_ops.convert(ctx, n.op_type, node_name, list(n.input), list(n.output), attrs, opset))
        graph = Graph(inputs, outputs, nodes, weights)
        _check_defined(self.name, graph, outer_names)
        return graph

    def subgraph(self, g) -> Graph:
        """A body graph (If/Loop/Scan): values it reads from enclosing graphs become extra
        inputs after its own (typed when it first runs)."""
        graph = self.graph(g, _EVERYTHING)
        defined = {v.name for v in graph.inputs} | set(graph.initializers)
        free = []
        for node in graph.nodes:
            for i in node.inputs:
                if i and i not in defined and i not in free:
                    free.append(i)
            defined.update(o for o in node.outputs if o)
        free += [v.name for v in graph.outputs if v.name not in defined and v.name not in free]
        return graph.replace(inputs=list(graph.inputs) + [Value(n, None, "float32") for n in free])

    def value(self, v) -> Value:
        t = v.type
        if t.WhichOneof("value") is None:  # untyped (bodies of inlined functions): typed when run
            return Value(v.name, None, "float32")
        if not t.HasField("tensor_type"):
            kind = t.WhichOneof("value")
            raise UnsupportedOpError(f"{self.name}: value '{v.name}' is a {kind}; only tensors are "
                                     "supported (sequence/map/optional types are out of scope)")
        dtype = self.elem_type(t.tensor_type.elem_type, f"value '{v.name}'")
        if not t.tensor_type.HasField("shape"):
            return Value(v.name, None, dtype)
        dims = []
        for d in t.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        return Value(v.name, tuple(dims), dtype)

    def elem_type(self, code: int, what: str) -> str:
        try:
            name = dtypes.from_code(code)
        except EngineError:
            import onnx
            tname = onnx.TensorProto.DataType.Name(code) if code in onnx.TensorProto.DataType.values() else code
            raise UnsupportedOpError(f"{self.name}: {what} has element type {tname}, which this engine "
                                     "does not support") from None
        if name == "bfloat16":
            raise UnsupportedOpError(f"{self.name}: {what} is bfloat16, which this engine does not "
                                     "support in ONNX graphs yet")
        return name

    # -- tensors --------------------------------------------------------------------------

    def tensor(self, t, what: str) -> np.ndarray:
        from onnx import TensorProto, numpy_helper

        self.elem_type(t.data_type, what)
        if t.data_location == TensorProto.EXTERNAL:
            t = self._with_external_data(t, what)
        want = dtypes.to_numpy(dtypes.from_code(t.data_type))
        if t.raw_data and want.kind != "b":  # the common case: one copy, straight from the bytes
            raw = t.raw_data
            n = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
            if len(raw) != n * want.itemsize:
                raise ModelFormatError(f"{self.name}: {what} is corrupt ({len(raw)} bytes of data for "
                                       f"{n} {dtypes.from_code(t.data_type)} values)")
            return np.frombuffer(raw, dtype=want.newbyteorder("<")).astype(want, copy=False).reshape(tuple(t.dims))
        try:
            arr = numpy_helper.to_array(t)
        except Exception as e:
            raise ModelFormatError(f"{self.name}: {what} is corrupt ({e})") from None
        return dtypes.contiguous(arr, dtype=want)

    def _with_external_data(self, t, what: str):
        """A copy of `t` with its bytes read from the external file, which must lie inside the
        model's folder."""
        from onnx import TensorProto

        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        if self.base is None:
            raise ModelFormatError(f"{self.name}: {what} keeps its data in an external file "
                                   f"('{location}'); load the model from its path, not from bytes")
        if not location or os.path.isabs(location):
            raise ModelFormatError(f"{self.name}: {what}: external data location {location!r} must be "
                                   "a relative path inside the model's folder")
        target = (self.base / location).resolve()
        if self.base != target and self.base not in target.parents:
            raise ModelFormatError(f"{self.name}: {what}: external data location {location!r} points "
                                   "outside the model's folder; refused")
        try:
            offset, length = int(info.get("offset", 0)), info.get("length")
            with open(target, "rb") as f:
                f.seek(offset)
                raw = f.read() if length is None else f.read(int(length))
        except FileNotFoundError:
            raise ModelFormatError(f"{self.name}: {what}: external data file '{location}' is missing") from None
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"{self.name}: {what}: cannot read external data '{location}' ({e})") from None
        if length is not None and len(raw) != int(length):
            raise ModelFormatError(f"{self.name}: {what}: external data file '{location}' is truncated "
                                   f"(wanted {length} bytes at offset {offset}, got {len(raw)})")
        copy = TensorProto()
        copy.CopyFrom(t)
        del copy.external_data[:]
        copy.data_location = TensorProto.DEFAULT
        copy.raw_data = raw
        return copy

    # -- attributes -----------------------------------------------------------------------

    def attribute(self, a, node: str):
        from onnx import AttributeProto as A

        what = f"node '{node}' attribute '{a.name}'"
        if a.ref_attr_name:
            raise GraphError(f"{self.name}: {what} refers to a function attribute outside a function")
        kind = a.type
        if kind == A.FLOAT:
            return float(a.f)
        if kind == A.INT:
            return int(a.i)
        if kind == A.STRING:
            return _text(a.s)
        if kind == A.TENSOR:
            return self.tensor(a.t, what)
        if kind == A.GRAPH:
            return a.g  # converted by the op that owns it (If/Loop/Scan), with its outer scope
        if kind == A.FLOATS:
            return [float(v) for v in a.floats]
        if kind == A.INTS:
            return [int(v) for v in a.ints]
        if kind == A.STRINGS:
            return [_text(v) for v in a.strings]
        if kind == A.TENSORS:
            return [self.tensor(t, what) for t in a.tensors]
        if kind == A.GRAPHS:
            return list(a.graphs)
        raise UnsupportedOpError(f"{self.name}: {what} has an unsupported attribute type {kind}")


class _Everything(frozenset):
    """The outer scope of a body graph while it is converted: every name may come from it."""

    def __contains__(self, item) -> bool:
        return True


_EVERYTHING = _Everything()


def _text(b: bytes):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _check_defined(name: str, graph: Graph, outer: frozenset) -> None:
    """Every node input is a graph input, weight, outer-scope value or an earlier output."""
    defined = {v.name for v in graph.inputs} | set(graph.initializers)
    for node in graph.nodes:
        for i in node.inputs:
            if i and i not in defined and i not in outer:
                raise GraphError(f"{name}: node '{node.name}' ({node.op}) reads '{i}', which is neither a "
                                 "graph input, a weight nor the output of an earlier node (missing "
                                 "initializer, or the graph has a cycle or is out of order)")
        defined.update(o for o in node.outputs if o)
    for v in graph.outputs:
        if v.name not in defined and v.name not in outer:
            raise GraphError(f"{name}: graph output '{v.name}' is never produced")
