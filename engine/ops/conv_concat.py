"""Conv2DConcat: several Conv2Ds whose outputs are concatenated along the channels (NHWC),
computed as one node: each conv writes its channels straight into its slice of the output, so
the Concat's copy of every tensor disappears (SqueezeNet's fire modules, Inception blocks).
Made by passes/fuse_concat.py; inputs [x0, w0, b0, x1, w1, b1, ...] (b may be ""), attrs
`convs`: one Conv2D attribute dict per part."""

from __future__ import annotations

from ..errors import GraphError, ShapeError
from ..graph import Node
from .activations import resolve
from .registry import TensorType, register
from .spatial import conv_check, conv_params


def _parts(node):
    convs = node.attrs.get("convs")
    if not isinstance(convs, list) or not convs or len(node.inputs) != 3 * len(convs):
        raise GraphError(f"node '{node.name}' (Conv2DConcat): needs attribute 'convs' (one dict per conv) "
                         f"and 3 inputs per conv, got {len(node.inputs)} inputs")
    return [Node("Conv2D", node.inputs[3 * i:3 * i + 3], node.outputs, dict(a), node.name)
            for i, a in enumerate(convs)]


def concat_check(node):
    for part in _parts(node):
        if "maxpool" in part.attrs:
            raise GraphError(f"node '{node.name}' (Conv2DConcat): a part cannot fuse a max-pool")
        conv_check(part)


def concat_type(node, ins):
    out, channels = None, 0
    for i, part in enumerate(_parts(node)):
        x, w, b = ins[3 * i:3 * i + 3]
        s = conv_params(part, x.shape, w.shape)
        if b is not None and b.shape != (w.shape[3],):
            raise ShapeError(f"node '{node.name}' (Conv2DConcat): bias {i} must have shape ({w.shape[3]},)")
        if out is None:
            out = (x.shape[0], s.OH, s.OW, x.dtype)
        elif (x.shape[0], s.OH, s.OW, x.dtype) != out:
            raise ShapeError(f"node '{node.name}' (Conv2DConcat): conv {i} gives {x.dtype} "
                             f"({x.shape[0]}, {s.OH}, {s.OW}), conv 0 gives {out[3]} {out[:3]}")
        channels += w.shape[3]
    return [TensorType((*out[:3], channels), out[3])]


def concat_lower(ctx, node):
    parts = _parts(node)
    total = sum(ctx.const(p.inputs[1]).shape[3] for p in parts)
    offset = 0
    for p in parts:
        x, w_name, b_name = p.inputs
        s = conv_params(p, ctx.shape(x), ctx.const(w_name).shape)
        key = ("conv", w_name, b_name, s.H, s.W)  # the same packing as a plain Conv2D's
        packed = ctx.cached(key, lambda: ctx.pack_conv2d(s, ctx.const(w_name), ctx.const(b_name) if b_name else None))
        act, a, b = resolve(p.attrs, node.name)
        ctx.kernel("conv2d", [x], node.outputs, ints=[s.N, act, 0, 0, offset, total], floats=[a, b], state=packed)
        offset += s.OC


register("Conv2DConcat", concat_type, concat_lower, check=concat_check)
