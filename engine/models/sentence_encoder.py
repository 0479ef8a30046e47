"""SentenceEncoder: a sentence-transformers model folder run on the engine, tokenised with
Hugging Face `tokenizers` (the `text` extra, imported when an encoder is created).

The folder is what sentence-transformers saves: modules.json lists the modules in order, of
which these are read: Transformer (a BERT-family model: config.json, model.safetensors,
tokenizer.json, sentence_bert_config.json with max_seq_length and do_lower_case, in the
module's folder), Pooling (1_Pooling/config.json: CLS, mean, max, mean-sqrt-len, concatenated in
sentence-transformers' order when several are on) and Normalize (unit length). Any other
module is refused. Text is stripped (and lower-cased with do_lower_case), truncated to
max_seq_length tokens and padded to the longest in its batch; padded keys are masked in
attention and left out of the pooling, so a sentence gets the same embedding in any batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import EngineError, ModelFormatError, UnsupportedOpError
from .bert import BertConfig, BertEncoder

# Pooling modes in the order sentence-transformers concatenates them
_POOLING = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")
_REFUSED_POOLING = ("weightedmean_tokens", "lasttoken")


def _json(path: Path, required: bool = True) -> Optional[dict]:
    if not path.is_file():
        if required:
            raise ModelFormatError(f"{path}: missing (a sentence-transformers folder needs it)")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{path}: not a readable JSON file ({e})") from None


def _modules(folder: Path) -> dict:
    """{kind: module folder} for the Transformer, Pooling and Normalize modules."""
    listed = _json(folder / "modules.json")
    if not isinstance(listed, list):
        raise ModelFormatError(f"{folder / 'modules.json'}: not a list of modules")
    found = {}
    for m in listed:
        kind = str(m.get("type", "")).rsplit(".", 1)[-1] if isinstance(m, dict) else ""
        if kind not in ("Transformer", "Pooling", "Normalize"):
            raise UnsupportedOpError(f"{folder / 'modules.json'}: module {m!r} is not supported (Transformer, "
                                     "Pooling and Normalize are)")
        path = folder / str(m.get("path", ""))
        if folder.resolve() not in (path.resolve(), *path.resolve().parents):
            raise ModelFormatError(f"{folder / 'modules.json'}: module path {m.get('path')!r} leaves the folder")
        found[kind] = path
    for kind in ("Transformer", "Pooling"):
        if kind not in found:
            raise ModelFormatError(f"{folder / 'modules.json'}: no {kind} module")
    return found


def _pooling_modes(path: Path, hidden: int) -> list:
    cfg = _json(path / "config.json")
    dim = cfg.get("word_embedding_dimension", hidden)
    if dim != hidden:
        raise ModelFormatError(f"{path / 'config.json'}: word_embedding_dimension {dim} differs from the model's "
                               f"hidden_size {hidden}")
    for mode in _REFUSED_POOLING:
        if cfg.get(f"pooling_mode_{mode}"):
            raise UnsupportedOpError(f"{path / 'config.json'}: pooling mode {mode!r} is not supported "
                                     f"(supported: {', '.join(_POOLING)})")
    modes = [m for m in _POOLING if cfg.get(f"pooling_mode_{m}")]
    if not modes:
        raise ModelFormatError(f"{path / 'config.json'}: no pooling mode is on")
    return modes


def _tokenizer(path: Path, max_length: int, config: BertConfig):
    """tokenizer.json, truncating at max_length tokens and padding to the longest of a batch."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise EngineError("SentenceEncoder needs the `tokenizers` package: pip install 'engine[text]'") from None
    if not path.is_file():
        raise ModelFormatError(f"{path}: missing (a sentence-transformers folder needs it)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises plain Exceptions for bad files
        raise ModelFormatError(f"{path}: not a tokenizers file ({e})") from None
    padding = tok.padding or {}
    pad_id = padding.get("pad_id", config.pad_token_id)
    pad_token = padding.get("pad_token") or tok.id_to_token(pad_id) or "[PAD]"
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token, pad_type_id=padding.get("pad_type_id", 0))
    return tok


class SentenceEncoder:
    """Sentence embeddings from a sentence-transformers folder (all-MiniLM-L6-v2, ...).

    >>> enc = SentenceEncoder("all-MiniLM-L6-v2")
    >>> emb = enc.encode(["A sentence.", "Another one."])    # (2, 384) float32, unit length
    """

    def __init__(self, path, max_seq_length: Optional[int] = None):
        folder = Path(path)
        if not folder.is_dir():
            raise ModelFormatError(f"{folder}: not a sentence-transformers folder")
        modules = _modules(folder)
        model_dir = modules["Transformer"]
        self.encoder = BertEncoder.from_pretrained(model_dir)
        config = self.encoder.config
        st = _json(model_dir / "sentence_bert_config.json", required=False) or {}
        limit = config.max_length
        length = st.get("max_seq_length") if max_seq_length is None else max_seq_length
        length = limit if length is None else length
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= limit:
            raise EngineError(f"{folder}: max_seq_length must be an int in [1, {limit}] (the position embeddings' "
                              f"reach), got {length!r}")
        self.max_seq_length = length
        self.do_lower_case = bool(st.get("do_lower_case", False))
        self.pooling = _pooling_modes(modules["Pooling"], config.hidden_size)
        self.normalize = "Normalize" in modules
        self.tokenizer = _tokenizer(model_dir / "tokenizer.json", length, config)

    @property
    def dimension(self) -> int:
        """The length of an embedding."""
        return self.encoder.config.hidden_size * len(self.pooling)

    def encode(self, sentences, batch_size: int = 32, normalize_embeddings: bool = True) -> np.ndarray:
        """Embeddings of `sentences` (a list of str: (n, dimension) float32; one str: (dimension,)),
        L2-normalised when normalize_embeddings is set or the folder has a Normalize module.
        Sentences are batched by length (less padding); the result keeps their order."""
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise EngineError(f"encode: sentence {i} is {type(t).__name__}, not str")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EngineError(f"encode: batch_size must be a positive int, got {batch_size!r}")
        texts = [t.strip().lower() if self.do_lower_case else t.strip() for t in texts]
        out = np.zeros((len(texts), self.dimension), np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in rows])
            ids, mask, types = (np.array([getattr(e, k) for e in encodings], np.int64)
                                for k in ("ids", "attention_mask", "type_ids"))
            out[rows] = self._pool(self.encoder(ids, mask, types), mask)
        if normalize_embeddings or self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out[0] if single else out

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        keep = mask[..., None].astype(np.float32)
        count = np.maximum(keep.sum(1), 1e-9)
        parts = {"cls_token": lambda: hidden[:, 0],
                 "max_tokens": lambda: np.where(keep > 0, hidden, -1e9).max(1),
                 "mean_tokens": lambda: (hidden * keep).sum(1) / count,
                 "mean_sqrt_len_tokens": lambda: (hidden * keep).sum(1) / np.sqrt(count)}
        return np.concatenate([parts[m]() for m in self.pooling], axis=1)


__all__ = ["SentenceEncoder"]
