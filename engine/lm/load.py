"""Language-model files for engine.load: a GGUF file, or a Hugging Face folder (config.json with
a causal-LM architecture + model.safetensors [+ tokenizer.json, tokenizer_config.json])."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import EngineError

OPTIONS = ("dtype", "max_sequences", "max_context", "kv_block_tokens", "kv_blocks")


def is_hf_decoder_folder(path: Path) -> bool:
    """A folder holding a Hugging Face causal-LM checkpoint (not an .engine folder)."""
    config = path / "config.json"
    if not path.is_dir() or not config.is_file():
        return False
    if not any(path.glob("*.safetensors")) and not (path / "model.safetensors.index.json").is_file():
        return False
    try:
        archs = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    return any(str(a).endswith("ForCausalLM") or str(a).endswith("LMHeadModel") for a in archs)


def load_language_model(path, **options):
    """A LanguageModel from a .gguf path or a Hugging Face folder. options: dtype ("native" keeps
    the file's quantized/bf16 weights, "f32" dequantises them), max_sequences, max_context,
    kv_block_tokens, kv_blocks (the Decoder's)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise EngineError(f"load: unknown option(s) {', '.join(unknown)} for a language model "
                          f"(known: {', '.join(OPTIONS)})")
    path = Path(path)
    dtype = options.pop("dtype", "native")
    if path.suffix.lower() == ".gguf":
        return _from_gguf(path, dtype, options)
    return _from_hf(path, dtype, options)


def _from_gguf(path: Path, dtype: str, decoder_options: dict):
    from ..formats.gguf import read_gguf
    from .chat_template import ChatTemplate
    from .decoder import Decoder
    from .gguf_weights import decoder_from_gguf
    from .model import LanguageModel
    from .tokenizer import Tokenizer

    g = read_gguf(path)
    spec, weights = decoder_from_gguf(g, dtype)
    md = g.metadata
    tokenizer = Tokenizer.from_gguf_metadata(md) if "tokenizer.ggml.model" in md else None
    template = ChatTemplate.from_gguf_metadata(md) if "tokenizer.chat_template" in md else None
    decoder = Decoder(spec, weights, **decoder_options)
    decoder.source = g  # keeps the memory map alive as long as the weights that view it
    return LanguageModel(decoder, tokenizer, template, name=md.get("general.name") or path.stem,
                         path=str(path), eos_ids=tokenizer.eos_ids if tokenizer else _eos(md))


def _eos(md: dict) -> tuple:
    eos = md.get("tokenizer.ggml.eos_token_id")
    return () if eos is None else (int(eos),)


def _from_hf(path: Path, dtype: str, decoder_options: dict):
    from .decoder import Decoder
    from .hf_checkpoint import read_hf_checkpoint
    from .hf_tokenizer import hf_chat_template, hf_tokenizer
    from .model import LanguageModel

    if dtype not in ("native", "f32"):
        raise EngineError(f"{path}: dtype '{dtype}' is not one of native, f32")
    spec, weights, config = read_hf_checkpoint(path)
    if dtype == "f32":
        weights = _dequantized(weights)
    tokenizer = hf_tokenizer(path, config)
    eos = config.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
    if tokenizer is not None:
        eos_ids = tuple(dict.fromkeys((*eos_ids, *tokenizer.eos_ids)))
    decoder = Decoder(spec, weights, **decoder_options)
    return LanguageModel(decoder, tokenizer, hf_chat_template(path, tokenizer), name=path.name, path=str(path),
                         eos_ids=eos_ids)


def _dequantized(weights: dict) -> dict:
    from .decoder import Weight
    from .gguf_weights import dequantize

    out = {}
    for name, w in weights.items():
        if isinstance(w, Weight) and w.type != "F32":
            w = Weight(dequantize(w.data, w.type, *w.shape), "F32", w.shape)
        out[name] = w
    return out

