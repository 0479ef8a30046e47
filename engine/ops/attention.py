"""Attention (ONNX opset 23-25) and RotaryEmbedding (ONNX opset 23).

Attention: 3-D (batch, seq, heads·dim) or 4-D (batch, heads, seq, dim) Q/K/V, grouped-query
heads, attn_mask (bool, or additive of Q's type; broadcast to (batch, q_heads, q_len, keys), a
short one masks the remaining keys), is_causal with the bottom-right (cache-offset) frontier,
left/right windows, scale, softcap, past/present key and value, nonpad_kv_seqlen, and
qk_matmul_output in modes 0-3. One `attention` kernel does it all; float16 computes in float32
through scratch buffers, float64 in double. softmax_precision is accepted and computed at
float32 precision or better.
"""

from __future__ import annotations

import math

from ..errors import GraphError, ShapeError
from .registry import Tensor, TensorType, register
from .seq_util import FLOAT_TYPES, float_attr, int_attr
from .views import strides_of


def _where(node) -> str:
    return f"node '{node.name}' ({node.op})"


def attention_check(node) -> None:
    int_attr(node, "is_causal", 0, {0, 1})
    int_attr(node, "qk_matmul_output_mode", 0, {0, 1, 2, 3})
    for key in ("left_window_size", "right_window_size"):
        if int_attr(node, key, -1) < -1:
            raise GraphError(f"{_where(node)}: attribute '{key}' must be -1 or non-negative")
    for key in ("q_num_heads", "kv_num_heads"):
        v = node.attrs.get(key)
        if v is not None and int_attr(node, key, 0) <= 0:
            raise GraphError(f"{_where(node)}: attribute '{key}' must be positive, got {v}")
    sp = node.attrs.get("softmax_precision")
    if sp is not None and int_attr(node, "softmax_precision", 1) not in (1, 10, 11, 16):
        raise GraphError(f"{_where(node)}: softmax_precision must be 1, 10, 11 or 16, got {sp}")
    float_attr(node, "scale", None)
    float_attr(node, "softcap", 0.0)
    if len(node.outputs) > 4:
        raise GraphError(f"{_where(node)}: at most 4 outputs, got {len(node.outputs)}")


class AttnDims:
    """Sizes of one Attention node, checked against every input."""

    def __init__(self, node, ins):
        attention_check(node)
        w = _where(node)
        if len(ins) < 3 or any(t is None for t in ins[:3]):
            raise ShapeError(f"{w}: Q, K and V are required")
        if len(ins) > 7:
            raise ShapeError(f"{w}: at most 7 inputs, got {len(ins)}")
        q, k, v = ins[:3]
        mask, pk, pv, nonpad = (list(ins[3:]) + [None] * 4)[:4]
        self.dtype = q.dtype
        if self.dtype not in FLOAT_TYPES:
            raise ShapeError(f"{w}: Q must be float32, float16 or float64, got {self.dtype}")
        for name, t in (("K", k), ("V", v), ("past_key", pk), ("past_value", pv)):
            if t is not None and t.dtype != self.dtype:
                raise ShapeError(f"{w}: {name} must be {self.dtype} like Q, got {t.dtype}")
        rank = len(q.shape)
        if rank not in (3, 4) or len(k.shape) != rank or len(v.shape) != rank:
            raise ShapeError(f"{w}: Q, K, V must all be 3-D or all 4-D, got {q.shape}, {k.shape}, {v.shape}")
        self.in3d = rank == 3
        qh, kvh = node.attrs.get("q_num_heads"), node.attrs.get("kv_num_heads")
        if self.in3d:
            if qh is None or kvh is None:
                raise ShapeError(f"{w}: 3-D inputs need the q_num_heads and kv_num_heads attributes")
            (B, Sq, hq), (bk, L, hk), (bv, Lv, hv) = q.shape, k.shape, v.shape
            for what, total, heads in (("Q", hq, qh), ("K", hk, kvh), ("V", hv, kvh)):
                if total % heads:
                    raise ShapeError(f"{w}: {what}'s hidden size {total} is not a multiple of {heads} heads")
            Hq, Hkv, D, Dk, Dv = qh, kvh, hq // qh, hk // kvh, hv // kvh
        else:
            (B, Hq, Sq, D), (bk, Hkv, L, Dk), (bv, hv_, Lv, Dv) = q.shape, k.shape, v.shape
            if hv_ != Hkv:
                raise ShapeError(f"{w}: K has {Hkv} heads, V {hv_}")
            if (qh is not None and qh != Hq) or (kvh is not None and kvh != Hkv):
                raise ShapeError(f"{w}: q_num_heads/kv_num_heads ({qh}, {kvh}) differ from the inputs' heads "
                                 f"({Hq}, {Hkv})")
        if bk != B or bv != B:
            raise ShapeError(f"{w}: batch sizes differ: Q {B}, K {bk}, V {bv}")
        if Lv != L:
            raise ShapeError(f"{w}: K has {L} positions, V {Lv}")
        if Dk != D:
            raise ShapeError(f"{w}: Q's head size {D} differs from K's {Dk}")
        if Hkv == 0 or Hq % Hkv:
            raise ShapeError(f"{w}: q heads ({Hq}) must be a multiple of kv heads ({Hkv})")
        if (pk is None) != (pv is None):
            raise ShapeError(f"{w}: past_key and past_value go together")
        P = 0
        if pk is not None:
            if nonpad is not None:
                raise ShapeError(f"{w}: nonpad_kv_seqlen cannot be combined with past_key/past_value")
            if len(pk.shape) != 4 or pk.shape[:2] != (B, Hkv) or pk.shape[3] != D:
                raise ShapeError(f"{w}: past_key must be ({B}, {Hkv}, past, {D}), got {pk.shape}")
            P = pk.shape[2]
            if tuple(pv.shape) != (B, Hkv, P, Dv):
                raise ShapeError(f"{w}: past_value must be {(B, Hkv, P, Dv)}, got {pv.shape}")
        if nonpad is not None and (nonpad.dtype != "int64" or tuple(nonpad.shape) != (B,)):
            raise ShapeError(f"{w}: nonpad_kv_seqlen must be int64 of shape ({B},), got {nonpad.dtype} {nonpad.shape}")
        self.B, self.Hq, self.Hkv, self.Sq, self.L, self.P, self.D, self.Dv = B, Hq, Hkv, Sq, L, P, D, Dv
        self.Lt = P + L
        self.mask = None
        if mask is not None:
            if mask.dtype not in ("bool", self.dtype):
                raise ShapeError(f"{w}: attn_mask must be bool or {self.dtype}, got {mask.dtype}")
            if not 1 <= len(mask.shape) <= 4:
                raise ShapeError(f"{w}: attn_mask must have rank 1 to 4, got {mask.shape}")
            full = (1,) * (4 - len(mask.shape)) + tuple(mask.shape)
            for d, (m, n) in enumerate(zip(full[:3], (B, Hq, Sq))):
                if m not in (1, n):
                    raise ShapeError(f"{w}: attn_mask {mask.shape} does not broadcast to {(B, Hq, Sq, self.Lt)}")
            if full[3] > self.Lt:
                raise ShapeError(f"{w}: attn_mask covers {full[3]} keys, more than the {self.Lt} there are")
            self.mask = full
        self.y_shape = (B, Sq, Hq * Dv) if self.in3d else (B, Hq, Sq, Dv)


def attention_type(node, ins):
    d = AttnDims(node, ins)
    t = d.dtype
    types = [TensorType(d.y_shape, t), TensorType((d.B, d.Hkv, d.Lt, d.D), t), TensorType((d.B, d.Hkv, d.Lt, d.Dv), t),
             TensorType((d.B, d.Hq, d.Sq, d.Lt), t)]
    return types[:len(node.outputs)]


def mask_layout(ctx, mask: str, d: AttnDims) -> tuple:
    """The kernels' description of attn_mask: kind (0 none, 1 bool, 2 additive), [keys, batch
    stride, head stride, row stride] (0 on broadcast dims) and its element count."""
    if not mask:
        return 0, [0, 0, 0, 0], 0
    full = d.mask
    st = strides_of(full)
    return 1 if ctx.dtype(mask) == "bool" else 2, [full[3]] + [st[i] if full[i] > 1 else 0 for i in range(3)], \
        math.prod(full)


def attention_lower(ctx, node):
    d = AttnDims(node, [Tensor(ctx.shape(i), ctx.dtype(i)) if i else None for i in node.inputs])
    emit_attention(ctx, node, d, node.inputs)


def emit_attention(ctx, node, d: AttnDims, inputs, packed=(0, 0, 0, 0)):
    """The `attention` kernel call for `node` with sizes `d`. packed = (q_col, k_col, v_col,
    row_stride): Q, K and V are column ranges of one (batch, seq, row_stride) tensor."""
    ins = list(inputs) + [""] * (7 - len(inputs))
    q, k, v, mask, pk, pv, nonpad = ins
    outs = list(node.outputs) + [""] * (4 - len(node.outputs))
    dt = d.dtype
    y = outs[0] or ctx.scratch(d.y_shape, dt)
    has_past = bool(pk)
    has_present = has_past or bool(outs[1]) or bool(outs[2])
    kouts = [y]
    if has_present:
        kouts += [outs[1] or ctx.scratch((d.B, d.Hkv, d.Lt, d.D), dt),
                  outs[2] or ctx.scratch((d.B, d.Hkv, d.Lt, d.Dv), dt)]
    has_qk = bool(outs[3])
    if has_qk:
        kouts.append(outs[3])
    mask_kind, mask_geom, mask_elems = mask_layout(ctx, mask, d)
    scratch = [""] * 6
    if dt == "float16":  # float32 stand-ins for the float16 values (same layouts)
        f32 = lambda shape: ctx.scratch(shape, "float32")  # noqa: E731
        kv_shape = lambda dim: (d.B, d.Hkv, d.Lt, dim) if has_present else ctx.shape(k if dim == d.D else v)  # noqa: E731
        scratch = [f32(ctx.shape(q)), f32(kv_shape(d.D)), f32(kv_shape(d.Dv)),
                   f32(ctx.shape(mask)) if mask_kind == 2 else "", f32(d.y_shape),
                   f32((d.B, d.Hq, d.Sq, d.Lt)) if has_qk else ""]
    scale = float_attr(node, "scale", None)
    if scale is None:
        scale = 1.0 / math.sqrt(d.D) if d.D else 1.0
    ctx.kernel("attention", [q, k, v, mask, pk, pv, nonpad, *scratch], kouts,
               ints=[d.B, d.Hq, d.Hkv, d.Sq, d.L, d.P, d.D, d.Dv, int(d.in3d), node.attrs.get("is_causal", 0),
                     node.attrs.get("left_window_size", -1), node.attrs.get("right_window_size", -1),
                     node.attrs.get("qk_matmul_output_mode", 0), int(has_past), int(has_present), int(has_qk),
                     mask_kind, *mask_geom, mask_elems, *packed],
               floats=[scale, float_attr(node, "softcap", 0.0)], dtype=dt)


register("Attention", attention_type, attention_lower, check=attention_check)


# -- RotaryEmbedding -------------------------------------------------------------------------

def rotary_check(node) -> None:
    int_attr(node, "interleaved", 0, {0, 1})
    if int_attr(node, "rotary_embedding_dim", 0) < 0:
        raise GraphError(f"{_where(node)}: rotary_embedding_dim must be non-negative")
    nh = node.attrs.get("num_heads")
    if nh is not None and int_attr(node, "num_heads", 0) <= 0:
        raise GraphError(f"{_where(node)}: num_heads must be positive, got {nh}")


def _rotary_dims(node, ins):
    rotary_check(node)
    w = _where(node)
    if len(ins) < 3 or any(t is None for t in ins[:3]) or len(ins) > 4:
        raise ShapeError(f"{w}: expects X, cos_cache, sin_cache and optional position_ids")
    x, cos, sin = ins[:3]
    pos = ins[3] if len(ins) > 3 else None
    if x.dtype not in ("float32", "float16"):
        raise ShapeError(f"{w}: X must be float32 or float16, got {x.dtype}")
    if cos.dtype != x.dtype or sin.dtype != x.dtype:
        raise ShapeError(f"{w}: cos_cache and sin_cache must be {x.dtype} like X")
    if len(x.shape) == 4:
        B, H, S, D = x.shape
        in3d = False
    elif len(x.shape) == 3:
        nh = node.attrs.get("num_heads")
        if not nh:
            raise ShapeError(f"{w}: a 3-D input needs the num_heads attribute")
        B, S, hidden = x.shape
        if hidden % nh:
            raise ShapeError(f"{w}: hidden size {hidden} is not a multiple of num_heads {nh}")
        H, D, in3d = nh, hidden // nh, True
    else:
        raise ShapeError(f"{w}: X must be 3-D or 4-D, got {x.shape}")
    rot = node.attrs.get("rotary_embedding_dim", 0) or D
    if rot % 2 or rot > D:
        raise ShapeError(f"{w}: rotary_embedding_dim {rot} must be even and at most the head size {D}")
    if pos is not None:
        if pos.dtype != "int64" or tuple(pos.shape) != (B, S):
            raise ShapeError(f"{w}: position_ids must be int64 of shape {(B, S)}, got {pos.dtype} {pos.shape}")
        if len(cos.shape) != 2 or cos.shape[1] != rot // 2:
            raise ShapeError(f"{w}: cos_cache must be (max_position, {rot // 2}), got {cos.shape}")
        rows = cos.shape[0]
    else:
        if tuple(cos.shape) != (B, S, rot // 2):
            raise ShapeError(f"{w}: without position_ids cos_cache must be {(B, S, rot // 2)}, got {cos.shape}")
        rows = B * S
    if tuple(sin.shape) != tuple(cos.shape):
        raise ShapeError(f"{w}: sin_cache {sin.shape} differs from cos_cache {cos.shape}")
    return B, S, H, D, rot, in3d, rows


def rotary_type(node, ins):
    _rotary_dims(node, ins)
    return [TensorType(ins[0].shape, ins[0].dtype)]


def rotary_lower(ctx, node):
    B, S, H, D, rot, in3d, rows = _rotary_dims(node, [Tensor(ctx.shape(i), ctx.dtype(i)) if i else None
                                                      for i in node.inputs])
    ins = list(node.inputs) + [""] * (4 - len(node.inputs))
    ctx.kernel("rotary_embedding", ins[:4], node.outputs[:1],
               ints=[B, S, H, D, rot, node.attrs.get("interleaved", 0), int(in3d), rows])


register("RotaryEmbedding", rotary_type, rotary_lower, check=rotary_check, inplace=True)
