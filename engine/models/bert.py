"""BERT-family encoders (BERT, MiniLM, RoBERTa, ...) built from engine.nn layers, with the
weights of a Hugging Face checkpoint: `config.json` and `model.safetensors`.

The network is BERT's: word + position + token-type embeddings, LayerNorm, then per layer
self-attention (MultiHeadAttention; padding keys hidden by the attention mask) + residual +
LayerNorm and a feed-forward network (Dense with the config's activation, Dense) + residual +
LayerNorm. Its output is the last hidden state. RoBERTa-style checkpoints (model_type
roberta / xlm-roberta / camembert) number positions from pad_token_id + 1 and skip padding.

Checkpoint keys are read with or without their model prefix ("bert.", "roberta."); every
tensor's shape is checked against the config before it is read, and the file is read with
safetensors (never pickle).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np
import safetensors

from .. import nn
from ..errors import EngineError, ModelFormatError, ShapeError, UnsupportedOpError

# config.json's hidden_act -> engine.nn activation
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "gelu_fast": "gelu_tanh", "silu": "silu", "swish": "silu", "tanh": "tanh"}
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert")  # positions from pad_token_id + 1
_PREFIXES = ("", "bert.", "roberta.")
_KINDS = {"int": int, "float": (int, float), "str": str}  # config field types (annotations are strings here)


@dataclass(frozen=True)
class BertConfig:
    """The config.json fields the encoder needs (Hugging Face's names)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    hidden_act: str = "gelu"
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    model_type: str = "bert"

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "BertConfig":
        if not isinstance(d, dict):
            raise ModelFormatError(f"{source}: not a JSON object")
        values = {}
        for f in fields(cls):
            v = d.get(f.name)
            if v is None:
                if f.default is MISSING:
                    raise ModelFormatError(f"{source}: field '{f.name}' is missing")
                continue
            if not isinstance(v, _KINDS[f.type]) or isinstance(v, bool):
                raise ModelFormatError(f"{source}: field '{f.name}' must be {f.type}, got {v!r}")
            values[f.name] = v
        config = cls(**values)
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            if getattr(config, name) < 1:
                raise ModelFormatError(f"{source}: field '{name}' must be positive, got {getattr(config, name)}")
        if config.hidden_size % config.num_attention_heads:
            raise ModelFormatError(f"{source}: hidden_size {config.hidden_size} is not a multiple of "
                                   f"num_attention_heads {config.num_attention_heads}")
        if config.hidden_act not in _ACTIVATIONS:
            raise UnsupportedOpError(f"{source}: hidden_act {config.hidden_act!r} is not supported (supported: "
                                     f"{', '.join(sorted(_ACTIVATIONS))})")
        kind = d.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise UnsupportedOpError(f"{source}: position_embedding_type {kind!r} is not supported (absolute is)")
        return config

    @classmethod
    def from_file(cls, path) -> "BertConfig":
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelFormatError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFormatError(f"{path}: not a readable JSON file ({e})") from None
        return cls.from_dict(d, str(path))

    @property
    def position_offset(self) -> int:
        """The first position id (RoBERTa's start after the padding index)."""
        return self.pad_token_id + 1 if self.model_type in _OFFSET_POSITIONS else 0

    @property
    def max_length(self) -> int:
        """The longest sequence the position embeddings cover."""
        return self.max_position_embeddings - self.position_offset


def build_bert(config: BertConfig) -> nn.Model:
    """The engine.nn model: inputs input_ids, attention_mask, token_type_ids, position_ids (all
    (batch, seq) int64), output the last hidden state (batch, seq, hidden_size). Layer names
    follow the checkpoint's module names."""
    ids, mask, types, positions = (nn.Input((None,), dtype="int64", name=n)
                                   for n in ("input_ids", "attention_mask", "token_type_ids", "position_ids"))
    h = config.hidden_size
    zeros = {"kernel_initializer": "zeros"}  # the checkpoint's weights replace them: no random draws
    x = nn.Add(name="embeddings.sum")([
        nn.Embedding(n, h, embeddings_initializer="zeros", name=f"embeddings.{name}")(t)
        for n, name, t in ((config.vocab_size, "word_embeddings", ids),
                           (config.max_position_embeddings, "position_embeddings", positions),
                           (config.type_vocab_size, "token_type_embeddings", types))])
    x = nn.LayerNormalization(epsilon=config.layer_norm_eps, name="embeddings.LayerNorm")(x)
    keep = nn.ops.NotEqual(name="attention_mask.keep")(mask, 0)
    act = _ACTIVATIONS[config.hidden_act]
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        a = nn.MultiHeadAttention(config.num_attention_heads, h // config.num_attention_heads, **zeros,
                                  name=p + "attention")(x, x, value_mask=keep)
        x = nn.Add(name=p + "attention.residual")([a, x])
        x = nn.LayerNormalization(epsilon=config.layer_norm_eps, name=p + "attention.output.LayerNorm")(x)
        f = nn.Dense(config.intermediate_size, activation=act, **zeros, name=p + "intermediate.dense")(x)
        f = nn.Dense(h, **zeros, name=p + "output.dense")(f)
        x = nn.Add(name=p + "output.residual")([f, x])
        x = nn.LayerNormalization(epsilon=config.layer_norm_eps, name=p + "output.LayerNorm")(x)
    return nn.Model([ids, mask, types, positions], x, name=config.model_type)


class _Checkpoint:
    """The tensors of a model.safetensors file, found with or without the model prefix,
    each checked against the shape the config needs before it is read."""

    def __init__(self, path):
        self.path = str(path)
        try:
            self.file = safetensors.safe_open(self.path, framework="numpy")
            keys = set(self.file.keys())
        except FileNotFoundError:
            raise ModelFormatError(f"{self.path}: no such file") from None
        except (safetensors.SafetensorError, ValueError, OSError) as e:
            raise ModelFormatError(f"{self.path}: not a readable safetensors file ({e})") from None
        self.keys = keys
        self.prefix = next((p for p in _PREFIXES if f"{p}embeddings.word_embeddings.weight" in keys), "")

    def tensor(self, name: str, shape: tuple, alternative: Optional[str] = None) -> np.ndarray:
        key = self.prefix + name
        if key not in self.keys and alternative is not None and self.prefix + alternative in self.keys:
            key = self.prefix + alternative  # old checkpoints: LayerNorm.gamma / .beta
        if key not in self.keys:
            raise ModelFormatError(f"{self.path}: tensor '{key}' is missing (the config needs shape {shape})")
        view = self.file.get_slice(key)
        got = tuple(view.get_shape())
        if got != tuple(shape):
            raise ModelFormatError(f"{self.path}: tensor '{key}' has shape {got}, the config needs {tuple(shape)}")
        if view.get_dtype() not in ("F32", "F16", "F64"):
            raise ModelFormatError(f"{self.path}: tensor '{key}' is {view.get_dtype()}; float32, float16 and "
                                   "float64 checkpoints are supported")
        return np.asarray(self.file.get_tensor(key), dtype=np.float32)


def load_weights(model: nn.Model, config: BertConfig, path) -> None:
    """Set `model` (from build_bert(config)) to the checkpoint's weights, converted from torch's
    layouts (Linear (out, in)) to engine.nn's (Keras's)."""
    ckpt = _Checkpoint(path)
    h, heads, inter = config.hidden_size, config.num_attention_heads, config.intermediate_size
    d = h // heads

    def norm(name):
        return [ckpt.tensor(f"{name}.weight", (h,), f"{name}.gamma"), ckpt.tensor(f"{name}.bias", (h,), f"{name}.beta")]

    def linear(name, n_in, n_out):
        return [ckpt.tensor(f"{name}.weight", (n_out, n_in)).T, ckpt.tensor(f"{name}.bias", (n_out,))]

    values = {"embeddings.word_embeddings": [ckpt.tensor("embeddings.word_embeddings.weight", (config.vocab_size, h))],
              "embeddings.position_embeddings": [ckpt.tensor("embeddings.position_embeddings.weight",
                                                             (config.max_position_embeddings, h))],
              "embeddings.token_type_embeddings": [ckpt.tensor("embeddings.token_type_embeddings.weight",
                                                               (config.type_vocab_size, h))],
              "embeddings.LayerNorm": norm("embeddings.LayerNorm")}
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        attention = []
        for proj in ("query", "key", "value"):
            kernel, bias = linear(f"{p}attention.self.{proj}", h, h)
            attention += [kernel.reshape(h, heads, d), bias.reshape(heads, d)]
        kernel, bias = linear(f"{p}attention.output.dense", h, h)
        values[p + "attention"] = attention + [kernel.reshape(heads, d, h), bias]
        values[p + "attention.output.LayerNorm"] = norm(f"{p}attention.output.LayerNorm")
        values[p + "intermediate.dense"] = linear(f"{p}intermediate.dense", h, inter)
        values[p + "output.dense"] = linear(f"{p}output.dense", inter, h)
        values[p + "output.LayerNorm"] = norm(f"{p}output.LayerNorm")
    model.set_weights([w for layer in model.layers for w in values.get(layer.name, [])])


class BertEncoder:
    """A BERT-family encoder on the engine: token ids in, the last hidden state out.

    >>> enc = BertEncoder.from_pretrained("path/to/folder")    # config.json + model.safetensors
    >>> hidden = enc(input_ids, attention_mask)                 # (batch, seq, hidden) float32
    """

    def __init__(self, config: BertConfig, model: nn.Model):
        self.config, self.model = config, model

    @classmethod
    def from_pretrained(cls, folder) -> "BertEncoder":
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelFormatError(f"{folder}: not a model folder (config.json and model.safetensors)")
        config = BertConfig.from_file(folder / "config.json")
        model = build_bert(config)
        load_weights(model, config, folder / "model.safetensors")
        return cls(config, model)

    def position_ids(self, input_ids: np.ndarray) -> np.ndarray:
        """BERT's 0, 1, 2, ...; RoBERTa's from pad_token_id + 1 over the non-padding tokens."""
        if self.config.position_offset:
            keep = input_ids != self.config.pad_token_id
            return np.cumsum(keep, axis=1) * keep + self.config.pad_token_id
        return np.broadcast_to(np.arange(input_ids.shape[1], dtype=np.int64), input_ids.shape)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ShapeError(f"{self.config.model_type}: input_ids must be integer (batch, seq), got {ids.dtype} "
                             f"{ids.shape}")
        if ids.shape[1] > self.config.max_length:
            raise ShapeError(f"{self.config.model_type}: {ids.shape[1]} tokens, more than the {self.config.max_length} "
                             "the position embeddings cover")
        ids = ids.astype(np.int64)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
        for name, v in (("attention_mask", mask), ("token_type_ids", types)):
            if v.shape != ids.shape:
                raise ShapeError(f"{self.config.model_type}: {name} must have input_ids' shape {ids.shape}, "
                                 f"got {v.shape}")
        for name, v, n in (("input_ids", ids, self.config.vocab_size), ("token_type_ids", types,
                                                                         self.config.type_vocab_size)):
            if v.size and (v.min() < 0 or v.max() >= n):  # a negative id would wrap around in Gather
                raise EngineError(f"{self.config.model_type}: {name} must lie in [0, {n}), got values from "
                                  f"{v.min()} to {v.max()}")
        positions = np.ascontiguousarray(self.position_ids(ids), dtype=np.int64)
        return self.model.predict([ids, mask.astype(np.int64), types.astype(np.int64), positions])


__all__ = ["BertConfig", "BertEncoder", "build_bert", "load_weights"]
