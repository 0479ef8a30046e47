"""A GGUF `llama` model's tensors as a DecoderSpec and canonical decoder weights (the file's own
blocks, memory-mapped: nothing is copied unless float32 is asked for)."""

from __future__ import annotations

import numpy as np

from ..errors import ModelFormatError
from .config import LlamaConfig
from .decoder import DecoderSpec, Weight
from .quant_ref import dequantize

_LAYER_NAMES = {"attn_norm": "attn_norm", "attn_q": "wq", "attn_k": "wk", "attn_v": "wv",
                "attn_output": "wo", "ffn_norm": "ffn_norm", "ffn_gate": "w_gate", "ffn_up": "w_up",
                "ffn_down": "w_down"}
_TOP_NAMES = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}


def gguf_decoder_weights(gguf, *, f32: bool = False) -> tuple[DecoderSpec, dict]:
    """(spec, weights) of an engine.formats.gguf.GgufFile holding a llama model. RoPE is
    interleaved (llama.cpp's converter permuted Q/K). f32: dequantise every matrix to float32
    (engine/lm/quant_ref.py) instead of passing the blocks through."""
    spec = DecoderSpec.from_llama(LlamaConfig.from_gguf(gguf.metadata, gguf.tensors.keys()), rope_interleaved=True)
    weights = {}
    for name, t in gguf.tensors.items():
        parts = name.split(".")
        if parts[-1] != "weight":
            raise ModelFormatError(f"GGUF tensor '{name}': not a weight this decoder knows")
        if parts[0] == "blk" and len(parts) == 4 and parts[2] in _LAYER_NAMES:
            ours = f"layers.{int(parts[1])}.{_LAYER_NAMES[parts[2]]}"
        elif len(parts) == 2 and parts[0] in _TOP_NAMES:
            ours = _TOP_NAMES[parts[0]]
        else:
            raise ModelFormatError(f"GGUF tensor '{name}': not a weight this decoder knows")
        if len(t.shape) == 1:  # norms: float32 vectors
            weights[ours] = dequantize(t.data, t.type, t.shape)
        elif f32:
            weights[ours] = Weight(np.ascontiguousarray(dequantize(t.data, t.type, t.shape)), "F32", t.shape)
        else:
            weights[ours] = Weight(t.data, t.type, t.shape)
    return spec, weights
