"""The tokenizer and chat template of a Hugging Face folder: tokenizer.json (read by the
`tokenizers` package), tokenizer_config.json (special tokens, add_bos_token, chat_template) or
chat_template.jinja. A folder without tokenizer.json gives None: the model then takes token ids."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import EngineError, ModelFormatError


def _tokenizer_config(folder: Path) -> dict:
    p = folder / "tokenizer_config.json"
    if not p.is_file():
        return {}
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"{p}: not readable JSON ({e})") from None
    return doc if isinstance(doc, dict) else {}


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def hf_tokenizer(folder: Path, model_config: dict):
    from .tokenizer import Tokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        import tokenizers
    except ImportError:
        raise EngineError("language-model tokenizers need the `tokenizers` package: "
                          "pip install 'engine[text]'") from None
    try:
        backend = tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exception for a malformed file
        raise ModelFormatError(f"{path}: not a tokenizers file ({e})") from None
    cfg = _tokenizer_config(folder)

    def token_id(key: str, config_key: str):
        text = _token_text(cfg.get(key))
        found = backend.token_to_id(text) if text is not None else None
        return found if found is not None else model_config.get(config_key)

    bos, eos = token_id("bos_token", "bos_token_id"), token_id("eos_token", "eos_token_id")
    eos_ids = eos if isinstance(eos, list) else ([] if eos is None else [eos])
    return Tokenizer(backend, bos_id=bos, eos_ids=eos_ids, unk_id=token_id("unk_token", "unk_token_id"),
                     pad_id=token_id("pad_token", "pad_token_id"), add_bos=bool(cfg.get("add_bos_token", False)),
                     add_eos=bool(cfg.get("add_eos_token", False)))


def hf_chat_template(folder: Path, tokenizer):
    from .chat_template import ChatTemplate

    cfg = _tokenizer_config(folder)
    source = cfg.get("chat_template")
    jinja = folder / "chat_template.jinja"
    if source is None and jinja.is_file():
        source = jinja.read_text(encoding="utf-8")
    if isinstance(source, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("default")
    if not isinstance(source, str):
        return None
    tokens = {k: _token_text(cfg.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    return ChatTemplate(source, **tokens)
