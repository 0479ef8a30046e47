"""The shape of a Llama-family decoder, from GGUF metadata or a Hugging Face config.json."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelFormatError, UnsupportedOpError


@dataclass(frozen=True)
class LlamaConfig:
    """Sizes and constants of a Llama decoder. Example:
    `LlamaConfig.from_gguf(read_gguf(p).metadata).n_kv_heads  # 3 for SmolLM2-135M`."""

    vocab_size: int
    hidden: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    rope_theta: float
    rope_dim: int
    rms_eps: float
    context_length: int
    bos_id: int | None
    eos_id: int | None
    tied_embeddings: bool

    @classmethod
    def from_gguf(cls, metadata: dict, tensor_names=None) -> LlamaConfig:
        """From GGUF metadata (`GgufFile.metadata`). Embeddings count as tied when the file
        has no `output.weight` tensor (pass `tensor_names` to decide; without it, untied)."""
        arch = _need(metadata, "general.architecture", "GGUF metadata")
        if arch != "llama":
            raise ModelFormatError(f"GGUF metadata: architecture '{arch}' is not a Llama model")

        def key(name, default=_MISSING):
            return _need(metadata, f"llama.{name}", "GGUF metadata", default)

        hidden, n_heads = int(key("embedding_length")), int(key("attention.head_count"))
        head_dim = int(key("attention.key_length", hidden // n_heads))
        vocab = key("vocab_size", None)
        if vocab is None:  # older files: the tokenizer's token list is the vocabulary
            vocab = len(_need(metadata, "tokenizer.ggml.tokens", "GGUF metadata"))
        return cls(
            vocab_size=int(vocab), hidden=hidden, n_layers=int(key("block_count")),
            n_heads=n_heads, n_kv_heads=int(key("attention.head_count_kv", n_heads)),
            head_dim=head_dim, intermediate=int(key("feed_forward_length")),
            rope_theta=float(key("rope.freq_base", 10000.0)),
            rope_dim=int(key("rope.dimension_count", head_dim)),
            rms_eps=float(key("attention.layer_norm_rms_epsilon")),
            context_length=int(key("context_length")),
            bos_id=_optional_int(metadata.get("tokenizer.ggml.bos_token_id")),
            eos_id=_optional_int(metadata.get("tokenizer.ggml.eos_token_id")),
            tied_embeddings=tensor_names is not None and "output.weight" not in tensor_names)

    @classmethod
    def from_hf(cls, config: dict) -> LlamaConfig:
        """From a Hugging Face Llama config.json (as a dict)."""
        def key(name, default=_MISSING):
            return _need(config, name, "config.json", default)

        hidden, n_heads = int(key("hidden_size")), int(key("num_attention_heads"))
        head_dim = int(key("head_dim", None) or hidden // n_heads)
        eos = config.get("eos_token_id")
        # transformers 5 writes rope_parameters; older config.json files rope_theta/rope_scaling.
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise UnsupportedOpError(f"config.json: rope scaling {rope} is not supported")
        return cls(
            vocab_size=int(key("vocab_size")), hidden=hidden,
            n_layers=int(key("num_hidden_layers")), n_heads=n_heads,
            n_kv_heads=int(key("num_key_value_heads", n_heads)), head_dim=head_dim,
            intermediate=int(key("intermediate_size")),
            rope_theta=float(rope.get("rope_theta", key("rope_theta", 10000.0))),
            rope_dim=head_dim,
            rms_eps=float(key("rms_norm_eps")),
            context_length=int(key("max_position_embeddings")),
            bos_id=_optional_int(config.get("bos_token_id")),
            eos_id=_optional_int(eos[0] if isinstance(eos, list) and eos else eos),
            tied_embeddings=bool(config.get("tie_word_embeddings", False)))


_MISSING = object()


def _need(d: dict, name: str, where: str, default=_MISSING):
    if name in d:
        return d[name]
    if default is _MISSING:
        raise ModelFormatError(f"{where}: missing key '{name}'")
    return default


def _optional_int(v) -> int | None:
    return None if v is None else int(v)
