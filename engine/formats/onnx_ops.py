"""ONNX nodes -> engine nodes, one opset form per op.

The engine's ops named like ONNX's follow the newest opset's semantics. A node from an older
opset is brought to that form here: attributes that later opsets turned into inputs become
constant inputs (Clip, Pad, Slice, Squeeze, Unsqueeze, Split, Reduce*, TopK, Resize,
Dropout), renamed or retired ops map onto their successors (Upsample -> Resize, Scatter ->
ScatterElements), and Softmax-family ops before opset 13 get `coerce_2d`. An op with a
function body in the ONNX spec that the engine has no kernel for is expanded into that body
(its nodes are engine ops). Anything else fails at load, naming op, domain, opset and node.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import UnsupportedOpError
from ..graph import Node
from ..ops import OPS


class ConvertContext:
    """What a conversion may do besides returning nodes: add constant weights, read the
    reader's settings, convert subgraphs."""

    def __init__(self, reader, weights: dict, outer: frozenset):
        self.reader, self.weights, self.outer = reader, weights, outer
        self._n = 0

    def const(self, hint: str, value) -> str:
        """Add a constant weight; returns its (unique) name."""
        self._n += 1
        name = f"{hint}/const_{self._n}"
        while name in self.weights:
            self._n += 1
            name = f"{hint}/const_{self._n}"
        self.weights[name] = np.ascontiguousarray(value)
        return name


Converter = Callable  # (ctx, name, inputs, outputs, attrs, opset) -> list[Node]
_CONVERTERS: dict[str, Converter] = {}


def converter(*ops: str):
    def wrap(fn):
        for op in ops:
            _CONVERTERS[op] = fn
        return fn
    return wrap


def convert(ctx: ConvertContext, op: str, name: str, inputs: list, outputs: list, attrs: dict,
            opset: int) -> list[Node]:
    if op in _CONVERTERS:
        return _CONVERTERS[op](ctx, name, inputs, outputs, attrs, opset)
    if op in OPS:
        return [Node(op, inputs, outputs, attrs, name)]
    expanded = _expand_function(ctx, op, name, inputs, outputs, attrs, opset)
    if expanded is not None:
        return expanded
    raise UnsupportedOpError(f"{ctx.reader.name}: node '{name}': op {op} (domain ai.onnx, opset {opset}) "
                             "is not supported by this engine")


def _expand_function(ctx, op, name, inputs, outputs, attrs, opset):
    """The nodes of `op`'s function body from the ONNX spec, converted in turn; None if the
    spec has no (context-free) function body for it at this opset."""
    import onnx
    from onnx import helper

    try:
        schema = onnx.defs.get_schema(op, opset, "")
    except Exception:
        return None
    if not schema.has_function:
        return None
    body = schema.function_body
    formal_in = list(body.input)
    formal_out = list(body.output)
    rename = {f: a for f, a in zip(formal_in, inputs)}
    rename.update({f: a for f, a in zip(formal_out, outputs)})
    rename.update({f: "" for f in formal_in[len(inputs):]})
    defaults = {a.name: a for a in schema.attributes.values()}
    nodes: list[Node] = []
    for i, fn in enumerate(body.node):
        fn_attrs = {}
        for a in fn.attribute:
            if a.ref_attr_name:  # bound to the caller's attribute (or the schema default)
                if a.ref_attr_name in attrs:
                    fn_attrs[a.name] = attrs[a.ref_attr_name]
                elif a.ref_attr_name in defaults and defaults[a.ref_attr_name].default_value.type:
                    fn_attrs[a.name] = helper.get_attribute_value(defaults[a.ref_attr_name].default_value)
                continue
            fn_attrs[a.name] = ctx.reader.attribute(a, name)
        local = lambda v: "" if not v else rename.get(v, f"{name}/{v}")  # noqa: E731
        fn_opset = next((o.version for o in body.opset_import if o.domain in ("", "ai.onnx")), opset)
        nodes.extend(convert(ctx, fn.op_type, f"{name}/{fn.op_type}_{i}", [local(v) for v in fn.input],
                             [local(v) for v in fn.output], fn_attrs, fn_opset))
    return nodes


def _node(op, name, inputs, outputs, attrs=None):
    return [Node(op, list(inputs), list(outputs), dict(attrs or {}), name)]


def _pad_inputs(inputs: list, n: int) -> list:
    return list(inputs) + [""] * (n - len(inputs))


# -- constants ---------------------------------------------------------------------------------

@converter("Constant")
def _constant(ctx, name, inputs, outputs, attrs, opset):
    if "value" in attrs:
        v = attrs["value"]
    elif "value_float" in attrs:
        v = np.array(attrs["value_float"], np.float32)
    elif "value_floats" in attrs:
        v = np.array(attrs["value_floats"], np.float32)
    elif "value_int" in attrs:
        v = np.array(attrs["value_int"], np.int64)
    elif "value_ints" in attrs:
        v = np.array(attrs["value_ints"], np.int64)
    else:
        kind = next(iter(attrs), "nothing")
        raise UnsupportedOpError(f"{ctx.reader.name}: node '{name}': Constant holding {kind} is not supported")
    ctx.weights[outputs[0]] = np.ascontiguousarray(v)
    return []


# -- attributes that became inputs -------------------------------------------------------------

def _move(ctx, name, inputs, attrs, attr, position, dtype):
    """Attribute `attr` (if present) becomes constant input `position`."""
    inputs = list(inputs)
    if attr in attrs:
        value = attrs.pop(attr)
        inputs = _pad_inputs(inputs, position) + [ctx.const(name, np.asarray(value, dtype))] + inputs[position + 1:]
    return inputs


@converter("Clip")
def _clip(ctx, name, inputs, outputs, attrs, opset):
    if opset < 11:
        inputs = _pad_inputs(inputs, 1)
        lo, hi = attrs.pop("min", None), attrs.pop("max", None)
        inputs = inputs[:1] + [ctx.const(name, np.float32(lo)) if lo is not None else "",
                               ctx.const(name, np.float32(hi)) if hi is not None else ""]
    return _node("Clip", name, inputs, outputs, attrs)


@converter("Pad")
def _pad(ctx, name, inputs, outputs, attrs, opset):
    if opset < 11:
        pads = attrs.pop("pads", attrs.pop("paddings", None))
        value = attrs.pop("value", 0.0)
        inputs = [inputs[0], ctx.const(name, np.asarray(pads, np.int64)), ctx.const(name, np.float32(value))]
    return _node("Pad", name, inputs, outputs, attrs)


@converter("Slice")
def _slice(ctx, name, inputs, outputs, attrs, opset):
    if opset < 10:
        starts, ends = attrs.pop("starts"), attrs.pop("ends")
        axes = attrs.pop("axes", None)
        inputs = [inputs[0], ctx.const(name, np.asarray(starts, np.int64)), ctx.const(name, np.asarray(ends, np.int64))]
        if axes is not None:
            inputs.append(ctx.const(name, np.asarray(axes, np.int64)))
    return _node("Slice", name, inputs, outputs, attrs)


def _axes_to_input(op: str, since: int):
    """Before opset `since`, `axes` is an attribute; from then on, input 1."""
    def conv(ctx, name, inputs, outputs, attrs, opset):
        if opset < since:
            inputs = _move(ctx, name, inputs, attrs, "axes", 1, np.int64)
        return _node(op, name, inputs, outputs, attrs)
    return conv


for _op in ("Squeeze", "Unsqueeze"):
    _CONVERTERS[_op] = _axes_to_input(_op, 13)
_CONVERTERS["ReduceSum"] = _axes_to_input("ReduceSum", 13)
for _op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
            "ReduceLogSumExp", "ReduceSumSquare"):
    _CONVERTERS[_op] = _axes_to_input(_op, 18)


@converter("Split")
def _split(ctx, name, inputs, outputs, attrs, opset):
    if opset < 13:
        inputs = _move(ctx, name, inputs, attrs, "split", 1, np.int64)
    return _node("Split", name, inputs, outputs, attrs)


@converter("TopK")
def _topk(ctx, name, inputs, outputs, attrs, opset):
    if opset < 10:
        inputs = [inputs[0], ctx.const(name, np.asarray([attrs.pop("k")], np.int64))]
    return _node("TopK", name, inputs, outputs, attrs)


@converter("Dropout")
def _dropout(ctx, name, inputs, outputs, attrs, opset):
    attrs.pop("is_test", None)
    if opset < 12:
        attrs.pop("ratio", None)
        inputs = inputs[:1]
    return _node("Dropout", name, inputs, outputs, attrs)


@converter("Upsample")
def _upsample(ctx, name, inputs, outputs, attrs, opset):
    mode = attrs.pop("mode", "nearest")
    if "scales" in attrs:  # opset 7-8: an attribute
        scales = ctx.const(name, np.asarray(attrs.pop("scales"), np.float32))
    else:
        scales = inputs[1]
    resize_attrs = {"mode": "linear" if mode in ("linear", "bilinear") else mode,
                    "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    return _node("Resize", name, [inputs[0], "", scales], outputs, resize_attrs)


@converter("Resize")
def _resize(ctx, name, inputs, outputs, attrs, opset):
    if opset < 11:  # (X, scales), asymmetric coordinates, floor rounding
        attrs.setdefault("coordinate_transformation_mode", "asymmetric")
        attrs.setdefault("nearest_mode", "floor")
        inputs = [inputs[0], "", inputs[1]]
    return _node("Resize", name, inputs, outputs, attrs)


@converter("Scatter")
def _scatter(ctx, name, inputs, outputs, attrs, opset):
    return _node("ScatterElements", name, inputs, outputs, attrs)


def _softmax_conv(op: str):
    def conv(ctx, name, inputs, outputs, attrs, opset):
        if opset < 13:
            attrs.setdefault("axis", 1)
            attrs["coerce_2d"] = 1
        return _node(op, name, inputs, outputs, attrs)
    return conv


for _op in ("Softmax", "LogSoftmax", "Hardmax"):
    _CONVERTERS[_op] = _softmax_conv(_op)


# -- convolution, pooling, GEMM (the nchw + linear family) ------------------------------------

@converter("Gemm")
def _gemm(ctx, name, inputs, outputs, attrs, opset):
    attrs.pop("broadcast", None)  # opset < 7: C's broadcasting was opt-in; now it always applies
    return _node("Gemm", name, inputs, outputs, attrs)


@converter("LpPool")
def _lppool(ctx, name, inputs, outputs, attrs, opset):
    p = attrs.get("p")
    if isinstance(p, float) and p.is_integer():  # opset 1: p was a float
        attrs["p"] = int(p)
    return _node("LpPool", name, inputs, outputs, attrs)
