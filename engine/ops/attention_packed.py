"""PackedAttention: attention over one fused QKV projection's output (engine-internal; made by
engine/passes/fuse_qkv.py). Input (batch, seq, (q_heads + 2·kv_heads)·head_dim) holds Q, then K,
then V along the last axis; the kernel reads the three column ranges in place, so the fused
GEMM's output is never split or copied. Attributes as Attention's (q_num_heads, kv_num_heads,
is_causal, scale, softcap); an optional attn_mask as Attention's. Output (batch, seq, q_heads·head_dim).
"""

from __future__ import annotations

from ..errors import ShapeError
from ..graph import Node
from .attention import AttnDims, attention_check, emit_attention
from .registry import Tensor, TensorType, register


def _split(node, qkv, mask):
    """(the equivalent Attention node, its input tensors, head_dim) for a PackedAttention."""
    where = f"node '{node.name}' (PackedAttention)"
    hq, hkv = node.attrs.get("q_num_heads"), node.attrs.get("kv_num_heads")
    if not hq or not hkv:
        raise ShapeError(f"{where}: needs the q_num_heads and kv_num_heads attributes")
    if qkv.dtype != "float32" or len(qkv.shape) != 3 or qkv.shape[2] % (hq + 2 * hkv):
        raise ShapeError(f"{where}: QKV must be float32 (batch, seq, (q_heads + 2·kv_heads)·head_dim), "
                         f"got {qkv.dtype} {qkv.shape}")
    B, S, width = qkv.shape
    D = width // (hq + 2 * hkv)
    q, kv = Tensor((B, S, hq * D), qkv.dtype), Tensor((B, S, hkv * D), qkv.dtype)
    plain = Node("Attention", ["q", "k", "v"] + (["mask"] if mask is not None else []), node.outputs[:1],
                 node.attrs, node.name)
    return plain, [q, kv, kv] + ([mask] if mask is not None else []), D


def packed_check(node) -> None:
    attention_check(node)
    if len(node.inputs) not in (1, 2) or len(node.outputs) != 1:
        raise ShapeError(f"node '{node.name}' (PackedAttention): expects QKV and an optional attn_mask, one output")


def packed_type(node, ins):
    plain, tensors, _ = _split(node, ins[0], ins[1] if len(ins) > 1 else None)
    return [TensorType(AttnDims(plain, tensors).y_shape, ins[0].dtype)]


def packed_lower(ctx, node):
    qkv = node.inputs[0]
    mask = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1] else ""
    plain, tensors, D = _split(node, Tensor(ctx.shape(qkv), ctx.dtype(qkv)),
                               Tensor(ctx.shape(mask), ctx.dtype(mask)) if mask else None)
    d = AttnDims(plain, tensors)
    width = ctx.shape(qkv)[2]
    emit_attention(ctx, node, d, [qkv, qkv, qkv, mask], packed=(0, d.Hq * D, (d.Hq + d.Hkv) * D, width))


register("PackedAttention", packed_type, packed_lower, check=packed_check)
