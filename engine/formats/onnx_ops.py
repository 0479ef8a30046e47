"""ONNX nodes -> engine nodes, one opset form per op.

The engine's ops named like ONNX's follow the newest opset's semantics. A node from an older
opset is brought to that form here: attributes that later opsets turned into inputs become
constant inputs (Pad, Slice, Squeeze, Unsqueeze, Split, Reduce*, TopK, Resize,
Dropout), renamed or retired ops map onto their successors (Upsample -> Resize, Scatter ->
ScatterElements), and Softmax-family ops before opset 13 get `coerce_2d`. An op with a
function body in the ONNX spec that the engine has no kernel for is expanded into that body
(its nodes are engine ops). Anything else fails at load, naming op, domain, opset and node.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .. import dtypes
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
        self.weights[name] = dtypes.contiguous(value)
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
    ctx.weights[outputs[0]] = dtypes.contiguous(v)
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
    if opset < 11:  # bounds stay attributes: the engine's Clip takes them in the input's type
        inputs = inputs[:1]
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


@converter("Concat")
def _concat(ctx, name, inputs, outputs, attrs, opset):
    if opset < 4:  # axis was optional, default 1
        attrs.setdefault("axis", 1)
    return _node("Concat", name, inputs, outputs, attrs)


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
    """Upsample (retired in opset 10): Resize with asymmetric coordinates, nearest rounding
    down. Scales are input 1 from opset 9, an attribute in 7-8, height/width_scale before."""
    mode = attrs.pop("mode", "nearest")
    if "scales" in attrs:
        scales = ctx.const(name, np.asarray(attrs.pop("scales"), np.float32))
    elif "height_scale" in attrs or "width_scale" in attrs:  # opset 1: NCHW
        hw = [attrs.pop("height_scale", 1.0), attrs.pop("width_scale", 1.0)]
        scales = ctx.const(name, np.asarray([1.0, 1.0] + hw, np.float32))
    else:
        scales = inputs[1]
    resize_attrs = {"mode": "linear" if mode in ("linear", "bilinear") else mode,
                    "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    return _node("Resize", name, [inputs[0], "", scales], outputs, resize_attrs)


@converter("Resize")
def _resize(ctx, name, inputs, outputs, attrs, opset):
    if opset >= 11:
        return _node("Resize", name, inputs, outputs, attrs)
    # Opset 10: (X, scales), asymmetric coordinates; nearest rounds down along axes that grow
    # and up along axes that shrink (onnxruntime; the opset-10 cases of onnx 1.5). With known
    # scales that mix both, one Resize per rounding, each over its own axes.
    attrs["coordinate_transformation_mode"] = "asymmetric"
    scales = ctx.weights.get(inputs[1])
    if attrs.get("mode", "nearest") != "nearest" or scales is None or not np.any(np.asarray(scales) < 1):
        attrs["nearest_mode"] = "floor"
        return _node("Resize", name, [inputs[0], "", inputs[1]], outputs, attrs)
    scales = np.asarray(scales, np.float32).reshape(-1)
    down = [d for d, f in enumerate(scales) if f < 1]
    up = [d for d, f in enumerate(scales) if f >= 1]
    if not up:
        return _node("Resize", name, [inputs[0], "", inputs[1]], outputs, dict(attrs, nearest_mode="ceil"))
    grown = f"{name}/grown"
    return (_node("Resize", f"{name}/up", [inputs[0], "", ctx.const(name, scales[up])], [grown],
                  dict(attrs, nearest_mode="floor", axes=up))
            + _node("Resize", f"{name}/down", [grown, "", ctx.const(name, scales[down])], outputs,
                    dict(attrs, nearest_mode="ceil", axes=down)))


@converter("Scatter")
def _scatter(ctx, name, inputs, outputs, attrs, opset):
    return _node("ScatterElements", name, inputs, outputs, attrs)


def _legacy_broadcast(op: str):
    """Before opset 7 these ops broadcast only with `broadcast=1`, the right operand aligned
    with the left from `axis` (suffix-aligned without it): numpy broadcasting covers the rest,
    and the ops take the axis as `broadcast_axis`."""
    def conv(ctx, name, inputs, outputs, attrs, opset):
        attrs.pop("consumed_inputs", None)
        if opset < 7:
            axis = attrs.pop("axis", None)
            if attrs.pop("broadcast", 0) and axis is not None:
                attrs["broadcast_axis"] = int(axis)
        return _node(op, name, inputs, outputs, attrs)
    return conv


for _op in ("Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less"):
    _CONVERTERS[_op] = _legacy_broadcast(_op)


def _softmax_conv(op: str):
    def conv(ctx, name, inputs, outputs, attrs, opset):
        if opset < 13:
            attrs.setdefault("axis", 1)
            attrs["coerce_2d"] = 1
        return _node(op, name, inputs, outputs, attrs)
    return conv


for _op in ("Softmax", "LogSoftmax", "Hardmax"):
    _CONVERTERS[_op] = _softmax_conv(_op)


# -- control flow: bodies become engine graphs, the values they read from outside extra inputs --

def _with_outer(ctx, proto):
    """(body graph, names it reads from enclosing graphs): those follow its own inputs."""
    body = ctx.reader.subgraph(proto)
    return body, [v.name for v in body.inputs[len(proto.input):]]


@converter("If")
def _if(ctx, name, inputs, outputs, attrs, opset):
    from ..graph import Value

    then_b, then_outer = _with_outer(ctx, attrs["then_branch"])
    else_b, else_outer = _with_outer(ctx, attrs["else_branch"])
    outer = list(dict.fromkeys(then_outer + else_outer))  # both branches take all, in one order
    then_b = then_b.replace(inputs=[Value(n, None, "float32") for n in outer])
    else_b = else_b.replace(inputs=[Value(n, None, "float32") for n in outer])
    return _node("If", name, [inputs[0]] + outer, outputs, {"then_branch": then_b, "else_branch": else_b})


@converter("Loop")
def _loop(ctx, name, inputs, outputs, attrs, opset):
    body, outer = _with_outer(ctx, attrs["body"])
    inputs = _pad_inputs(inputs, 2)
    return _node("Loop", name, inputs + outer, outputs, {"body": body, "num_carried": len(inputs) - 2})


@converter("Scan")
def _scan(ctx, name, inputs, outputs, attrs, opset):
    body, outer = _with_outer(ctx, attrs.pop("body"))
    if opset < 9:  # batch-major with an optional sequence_lens input first
        attrs["batch_major"] = 1
    return _node("Scan", name, inputs + outer, outputs, {**attrs, "body": body, "num_own_inputs": len(inputs)})


# -- recurrent layers and attention: several optional outputs --------------------------------

def _name_absent_outputs(op: str):
    """Graph validation takes "" (an absent output) as a name, so a node may skip only one
    output; LSTM/GRU/RNN/Attention may skip several (Attention's Y, "", "", qk_matmul_output).
    Trailing absent outputs are dropped, any further inner ones get placeholder names (computed,
    never read)."""
    def conv(ctx, name, inputs, outputs, attrs, opset):
        outputs = list(outputs)
        while outputs and not outputs[-1]:
            outputs.pop()
        blanks = [i for i, o in enumerate(outputs) if not o]
        for i in blanks[1:]:
            outputs[i] = f"{name}/unused_output_{i}"
        return _node(op, name, inputs, outputs, attrs)
    return conv


for _op in ("LSTM", "GRU", "RNN", "Attention"):
    _CONVERTERS[_op] = _name_absent_outputs(_op)


# -- normalisations (reduce family) -------------------------------------------------------------

@converter("BatchNormalization")
def _batch_norm(ctx, name, inputs, outputs, attrs, opset):
    for legacy in ("is_test", "spatial", "consumed_inputs"):
        attrs.pop(legacy, None)
    if opset < 14 and len([o for o in outputs if o]) > 1:  # before opset 14, extra outputs meant training
        attrs["training_mode"] = 1
        outputs = outputs[:3]
    return _node("BatchNormalization", name, inputs, outputs, attrs)


@converter("InstanceNormalization")
def _instance_norm(ctx, name, inputs, outputs, attrs, opset):
    attrs.pop("consumed_inputs", None)
    return _node("InstanceNormalization", name, inputs, outputs, attrs)


@converter("GroupNormalization")
def _group_norm(ctx, name, inputs, outputs, attrs, opset):
    if opset < 21:  # opset 18: scale and bias per group, not per channel
        attrs["scale_per_group"] = 1
    return _node("GroupNormalization", name, inputs, outputs, attrs)


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
