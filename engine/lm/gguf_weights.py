"""A Llama-family GGUF file as a DecoderSpec and the decoder's canonical weights.

The quantized matrices stay the file's memory-mapped blocks (no copy); with dtype="f32" every
matrix is dequantised once at load (the reference path the tests compare with transformers).
llama.cpp's converter permutes the Q and K rows so that RoPE rotates adjacent pairs; the spec says
so (rope_interleaved=True) rather than the weights being permuted back.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelFormatError, UnsupportedOpError
from ..formats.gguf import GgufFile
from .config import LlamaConfig
from .decoder import DecoderSpec, Weight

# GGUF tensor name (per block, `blk.{i}.` prefix) -> the decoder's name (`layers.{i}.` prefix).
_BLOCK_MATRICES = {"attn_q": "wq", "attn_k": "wk", "attn_v": "wv", "attn_output": "wo",
                   "ffn_gate": "w_gate", "ffn_up": "w_up", "ffn_down": "w_down"}
_BLOCK_VECTORS = {"attn_norm": "attn_norm", "ffn_norm": "ffn_norm"}
ARCHITECTURES = ("llama",)
DTYPES = ("native", "f32")


def decoder_from_gguf(g: GgufFile, dtype: str = "native") -> tuple[DecoderSpec, dict]:
    """(spec, weights) for the Decoder. dtype "native" keeps each tensor's own type; "f32"
    dequantises every matrix."""
    if dtype not in DTYPES:
        raise UnsupportedOpError(f"{g.path}: dtype '{dtype}' is not one of {', '.join(DTYPES)}")
    arch = g.metadata.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise UnsupportedOpError(f"{g.path}: GGUF architecture '{arch}' is not supported "
                                 f"(this engine runs {', '.join(ARCHITECTURES)})")
    try:
        cfg = LlamaConfig.from_gguf(g.metadata, g.tensors.keys())
    except ModelFormatError as e:
        raise ModelFormatError(f"{g.path}: {e}") from None
    spec = DecoderSpec.from_llama(cfg, rope_interleaved=True)

    weights = {"tok_embeddings": _matrix(g, "token_embd.weight", dtype),
               "norm": _vector(g, "output_norm.weight")}
    if not cfg.tied_embeddings:
        weights["output"] = _matrix(g, "output.weight", dtype)
    for i in range(cfg.n_layers):
        for src, dst in _BLOCK_MATRICES.items():
            weights[f"layers.{i}.{dst}"] = _matrix(g, f"blk.{i}.{src}.weight", dtype)
        for src, dst in _BLOCK_VECTORS.items():
            weights[f"layers.{i}.{dst}"] = _vector(g, f"blk.{i}.{src}.weight")
    return spec, weights


def _tensor(g: GgufFile, name: str):
    t = g.tensors.get(name)
    if t is None:
        raise ModelFormatError(f"{g.path}: tensor '{name}' is missing")
    return t


def _matrix(g: GgufFile, name: str, dtype: str) -> Weight:
    t = _tensor(g, name)
    if len(t.shape) != 2:
        raise ModelFormatError(f"{g.path}: tensor '{name}' has shape {t.shape}; expected a matrix")
    n, k = t.shape
    if t.type == "F32":
        return Weight(t.data.view(np.float32).reshape(n, k), "F32", (n, k))
    if dtype == "f32":
        return Weight(dequantize(t.data, t.type, n, k), "F32", (n, k))
    return Weight(t.data, t.type, (n, k))


def _vector(g: GgufFile, name: str) -> np.ndarray:
    t = _tensor(g, name)
    if len(t.shape) != 1 or t.type != "F32":
        raise ModelFormatError(f"{g.path}: tensor '{name}' is {t.type} of shape {t.shape}; "
                               "expected an F32 vector")
    return t.data.view(np.float32)


def dequantize(data: np.ndarray, type_name: str, n: int, k: int) -> np.ndarray:
    """float32 (n, k) from raw blocks, with the native kernel."""
    from .. import _C
    return _C.quant_dequantize(data, type_name, n, k)
