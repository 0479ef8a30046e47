"""A Hugging Face checkpoint folder (config.json + model.safetensors, or shards listed in
model.safetensors.index.json) as a DecoderSpec and canonical decoder weights.

Architectures: LlamaForCausalLM, MistralForCausalLM (attention exact up to its sliding window,
so max_context is capped there), Qwen2ForCausalLM (Q/K/V biases), GPT2LMHeadModel.
Matrices stay memory-mapped where they can (F32 as float32 views; F16 / BF16 as their raw bytes
for quant_matmul); norms, biases and GPT-2's position table become float32 arrays, and
GPT-2's Conv1D matrices, stored (in, out), are transposed to (out, in) (a copy).
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import ModelFormatError, UnsupportedOpError
from .config import LlamaConfig
from .decoder import DecoderSpec, Weight
from .safetensors_mmap import read_safetensors

LLAMA_LIKE = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
GPT2 = ("GPT2LMHeadModel",)


def read_hf_checkpoint(folder: str) -> tuple[DecoderSpec, dict, dict]:
    """(spec, weights by canonical name, config.json as a dict). Example:
    `spec, w, cfg = read_hf_checkpoint("SmolLM2-135M"); Decoder(spec, w)`."""
    config_path = os.path.join(folder, "config.json")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except OSError as e:
        raise ModelFormatError(f"{config_path}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise ModelFormatError(f"{config_path}: not JSON ({e})") from None
    if not isinstance(config, dict):
        raise ModelFormatError(f"{config_path}: not a JSON object")
    archs = config.get("architectures") or [config.get("model_type", "?")]
    arch = archs[0] if isinstance(archs, list) and archs else str(archs)
    tensors = _read_tensors(folder)
    if arch in LLAMA_LIKE:
        spec, weights = _llama(config, arch, tensors)
    elif arch in GPT2:
        spec, weights = _gpt2(config, tensors)
    else:
        raise UnsupportedOpError(f"{config_path}: architecture '{arch}' is not supported "
                                 f"(supported: {', '.join(LLAMA_LIKE + GPT2)})")
    return spec, weights, config


def _read_tensors(folder: str) -> dict[str, tuple[np.ndarray, str]]:
    single, index = os.path.join(folder, "model.safetensors"), os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(single):
        return read_safetensors(single)
    if not os.path.exists(index):
        raise ModelFormatError(f"{folder}: neither model.safetensors nor model.safetensors.index.json "
                               f"(only safetensors checkpoints are read)")
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelFormatError(f"{index}: no readable weight_map ({e})") from None
    tensors = {}
    for shard in sorted(set(weight_map.values())):
        if os.path.basename(shard) != shard:
            raise ModelFormatError(f"{index}: shard name '{shard}' is not a plain file name")
        tensors.update(read_safetensors(os.path.join(folder, shard)))
    missing = [n for n in weight_map if n not in tensors]
    if missing:
        raise ModelFormatError(f"{index}: tensors {missing[:3]} are not in their shards")
    return tensors


class _Tensors:
    """Named access with errors that name the tensor and the expected shape."""

    def __init__(self, tensors: dict, prefix: str = ""):
        self.t, self.prefix = tensors, prefix

    def has(self, name: str) -> bool:
        return self.prefix + name in self.t

    def get(self, name: str, shape: tuple) -> tuple[np.ndarray, str]:
        full = self.prefix + name
        if full not in self.t:
            raise ModelFormatError(f"checkpoint: missing tensor '{full}'")
        arr, wtype = self.t[full]
        if tuple(arr.shape) != tuple(shape):
            raise ModelFormatError(f"checkpoint: tensor '{full}' has shape {tuple(arr.shape)}, "
                                   f"expected {tuple(shape)}")
        return arr, wtype

    def matrix(self, name: str, shape: tuple, transpose: bool = False) -> Weight:
        """A weight (rows = outputs); transpose: stored (in, out) as GPT-2's Conv1D."""
        arr, wtype = self.get(name, shape[::-1] if transpose else shape)
        if transpose:
            arr = np.ascontiguousarray(arr.T)
        if wtype == "F32":
            return Weight(arr, "F32", tuple(shape))
        return Weight(np.ascontiguousarray(arr).reshape(-1).view(np.uint8), wtype, tuple(shape))

    def vector(self, name: str, n: int) -> np.ndarray:
        arr, wtype = self.get(name, (n,))
        return to_f32(arr, wtype)


def to_f32(arr: np.ndarray, wtype: str) -> np.ndarray:
    if wtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _llama(config: dict, arch: str, tensors: dict) -> tuple[DecoderSpec, dict]:
    for key in ("mlp_bias",):
        if config.get(key):
            raise UnsupportedOpError(f"config.json: {arch} with {key}=true is not supported")
    cfg = LlamaConfig.from_hf(config)
    spec = DecoderSpec.from_llama(cfg, rope_interleaved=False)
    window = config.get("sliding_window")
    use_window = config.get("use_sliding_window", arch == "MistralForCausalLM")
    if window and use_window and window < spec.max_context:  # attention is exact up to the window
        spec = _replace(spec, max_context=int(window))
    t = _Tensors(tensors, "model.")
    D, hd, H, KV, F, V = spec.hidden, spec.head_dim, spec.n_heads, spec.n_kv_heads, spec.intermediate, spec.vocab_size
    w = {"tok_embeddings": t.matrix("embed_tokens.weight", (V, D)), "norm": t.vector("norm.weight", D)}
    if "lm_head.weight" in tensors and not spec.tied_embeddings:
        w["output"] = _Tensors(tensors).matrix("lm_head.weight", (V, D))
    elif not spec.tied_embeddings:
        raise ModelFormatError("checkpoint: missing tensor 'lm_head.weight' (tie_word_embeddings is false)")
    for i in range(spec.n_layers):
        p, q = f"layers.{i}.", f"layers.{i}."
        w[q + "attn_norm"] = t.vector(p + "input_layernorm.weight", D)
        w[q + "ffn_norm"] = t.vector(p + "post_attention_layernorm.weight", D)
        for ours, theirs, rows in (("wq", "q_proj", H * hd), ("wk", "k_proj", KV * hd), ("wv", "v_proj", KV * hd)):
            w[q + ours] = t.matrix(f"{p}self_attn.{theirs}.weight", (rows, D))
            if t.has(f"{p}self_attn.{theirs}.bias"):  # Qwen2, Llama attention_bias
                w[q + "b" + ours[1]] = t.vector(f"{p}self_attn.{theirs}.bias", rows)
        w[q + "wo"] = t.matrix(p + "self_attn.o_proj.weight", (D, H * hd))
        if t.has(p + "self_attn.o_proj.bias"):
            w[q + "bo"] = t.vector(p + "self_attn.o_proj.bias", D)
        w[q + "w_gate"] = t.matrix(p + "mlp.gate_proj.weight", (F, D))
        w[q + "w_up"] = t.matrix(p + "mlp.up_proj.weight", (F, D))
        w[q + "w_down"] = t.matrix(p + "mlp.down_proj.weight", (D, F))
    return spec, w


def _gpt2(config: dict, tensors: dict) -> tuple[DecoderSpec, dict]:
    act = config.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise UnsupportedOpError(f"config.json: GPT-2 activation '{act}' is not supported (gelu_new only)")
    if config.get("scale_attn_by_inverse_layer_idx") or not config.get("scale_attn_weights", True):
        raise UnsupportedOpError("config.json: GPT-2 attention scaling other than 1/sqrt(head_dim) is not supported")
    try:
        D, H, L = int(config["n_embd"]), int(config["n_head"]), int(config["n_layer"])
        V, ctx = int(config["vocab_size"]), int(config["n_positions"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFormatError(f"config.json: GPT-2 config lacks {e}") from None
    F = int(config.get("n_inner") or 4 * D)
    spec = DecoderSpec(arch="gpt2", vocab_size=V, hidden=D, n_layers=L, n_heads=H, n_kv_heads=H,
                       head_dim=D // H, intermediate=F, norm="layer",
                       norm_eps=float(config.get("layer_norm_epsilon", 1e-5)), mlp="gelu_tanh",
                       position="learned", max_context=ctx, tied_embeddings=True, linear_bias=True)
    t = _Tensors(tensors, "transformer." if "transformer.wte.weight" in tensors else "")
    wpe, wpe_type = t.get("wpe.weight", (ctx, D))
    w = {"tok_embeddings": t.matrix("wte.weight", (V, D)), "pos_embeddings": to_f32(wpe, wpe_type),
         "norm": t.vector("ln_f.weight", D), "norm_bias": t.vector("ln_f.bias", D)}
    for i in range(L):
        p, q = f"h.{i}.", f"layers.{i}."
        w[q + "attn_norm"], w[q + "attn_norm_bias"] = t.vector(p + "ln_1.weight", D), t.vector(p + "ln_1.bias", D)
        w[q + "ffn_norm"], w[q + "ffn_norm_bias"] = t.vector(p + "ln_2.weight", D), t.vector(p + "ln_2.bias", D)
        w[q + "wqkv"] = t.matrix(p + "attn.c_attn.weight", (3 * D, D), transpose=True)
        w[q + "bqkv"] = t.vector(p + "attn.c_attn.bias", 3 * D)
        w[q + "wo"] = t.matrix(p + "attn.c_proj.weight", (D, D), transpose=True)
        w[q + "bo"] = t.vector(p + "attn.c_proj.bias", D)
        w[q + "w_up"] = t.matrix(p + "mlp.c_fc.weight", (F, D), transpose=True)
        w[q + "b_up"] = t.vector(p + "mlp.c_fc.bias", F)
        w[q + "w_down"] = t.matrix(p + "mlp.c_proj.weight", (D, F), transpose=True)
        w[q + "b_down"] = t.vector(p + "mlp.c_proj.bias", D)
    return spec, w


def _replace(spec: DecoderSpec, **kw) -> DecoderSpec:
    from dataclasses import replace
    return replace(spec, **kw)
