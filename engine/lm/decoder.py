"""The native decoder: a decoder-only transformer (Llama family, GPT-2) with a block KV cache,
run one batched step per native call (csrc/cpu/lm_decoder.h, docs/lm-decoder.md).

    dec = Decoder(spec, weights, max_sequences=4)
    s = dec.open()
    logits = dec.forward([s], [prompt_ids])          # (1, vocab): the prompt's last token
    logits = dec.forward([s], [[next_id]])           # one decode step
    dec.close(s)

Everything is checked here with messages that name the tensor or argument before the native
object is built or called, so a bad call changes nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import DTypeError, EngineError, ModelFormatError, ShapeError
from ..formats.gguf import BLOCK_SIZES

__all__ = ["DecoderSpec", "Weight", "Decoder", "DecoderError", "KvCacheFullError"]


class DecoderError(EngineError, ValueError):
    """A decoder call is invalid: unknown or closed sequence, bad token ids, context overflow."""


class KvCacheFullError(DecoderError):
    """The KV cache pool has too few free blocks for a step (close or truncate sequences)."""


_NORMS = ("rms", "layer")
_MLPS = ("swiglu", "gelu_tanh")
_POSITIONS = ("rope", "learned")


@dataclass(frozen=True)
class DecoderSpec:
    """The shape of a decoder. Example: `DecoderSpec.from_llama(LlamaConfig.from_gguf(md, names), True)`."""

    arch: str
    vocab_size: int
    hidden: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    norm: str
    norm_eps: float
    mlp: str
    position: str
    max_context: int
    tied_embeddings: bool
    linear_bias: bool = False
    rope_theta: float = 10000.0
    rope_dim: int = 0
    rope_interleaved: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "hidden", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                     "intermediate", "max_context"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ModelFormatError(f"DecoderSpec.{name}: expected a positive int, got {v!r}")
        if self.n_heads % self.n_kv_heads:
            raise ModelFormatError(f"DecoderSpec: n_heads {self.n_heads} is not a multiple of "
                                   f"n_kv_heads {self.n_kv_heads}")
        for name, allowed in (("norm", _NORMS), ("mlp", _MLPS), ("position", _POSITIONS)):
            if getattr(self, name) not in allowed:
                raise ModelFormatError(f"DecoderSpec.{name}: expected one of {allowed}, got "
                                       f"{getattr(self, name)!r}")
        if not (self.norm_eps > 0):
            raise ModelFormatError(f"DecoderSpec.norm_eps: expected > 0, got {self.norm_eps!r}")
        if self.position == "rope":
            rd = self.rope_dim or self.head_dim
            if rd % 2 or rd > self.head_dim or rd < 0:
                raise ModelFormatError(f"DecoderSpec.rope_dim: expected an even number <= head_dim "
                                       f"{self.head_dim}, got {self.rope_dim}")
            if not (self.rope_theta > 0):
                raise ModelFormatError(f"DecoderSpec.rope_theta: expected > 0, got {self.rope_theta!r}")

    @classmethod
    def from_llama(cls, cfg, rope_interleaved: bool) -> DecoderSpec:
        """From an engine.lm.config.LlamaConfig. rope_interleaved: True for GGUF weights (Q/K
        permuted by llama.cpp's converter), False for Hugging Face checkpoints."""
        return cls(arch="llama", vocab_size=cfg.vocab_size, hidden=cfg.hidden, n_layers=cfg.n_layers,
                   n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads, head_dim=cfg.head_dim,
                   intermediate=cfg.intermediate, norm="rms", norm_eps=cfg.rms_eps, mlp="swiglu",
                   position="rope", max_context=cfg.context_length,
                   tied_embeddings=cfg.tied_embeddings, rope_theta=cfg.rope_theta,
                   rope_dim=cfg.rope_dim if cfg.rope_dim != cfg.head_dim else 0,
                   rope_interleaved=rope_interleaved)


class Weight(NamedTuple):
    """One matrix, rows = outputs. F32: float32 (N, K); other types: the raw ggml blocks
    (uint8, N * row_bytes bytes; any contiguous array is viewed as bytes, never copied)."""

    data: np.ndarray
    type: str
    shape: tuple


def row_bytes(type_name: str, k: int) -> int:
    block, nbytes = BLOCK_SIZES[type_name]
    return k // block * nbytes


def expected_weights(spec: DecoderSpec, names) -> tuple[dict[str, tuple], set[str]]:
    """({name: shape} of every weight a model of `spec` may take (matrices 2-D, vectors 1-D),
    the names among them that may be left out). `names` (those given) decides between fused
    wqkv and separate wq/wk/wv per layer. Biases are required with linear_bias, optional
    otherwise (Qwen2: Q/K/V biases only)."""
    D, hd, H, KV, F = spec.hidden, spec.head_dim, spec.n_heads, spec.n_kv_heads, spec.intermediate
    layer_norm = spec.norm == "layer"
    want, biases = {"tok_embeddings": (spec.vocab_size, D), "norm": (D,)}, {}
    if layer_norm:
        want["norm_bias"] = (D,)
    if not spec.tied_embeddings:
        want["output"] = (spec.vocab_size, D)
    if spec.position == "learned":
        want["pos_embeddings"] = None  # (>= max_context, D): checked by the caller
    for i in range(spec.n_layers):
        p = f"layers.{i}."
        want[p + "attn_norm"] = want[p + "ffn_norm"] = (D,)
        if layer_norm:
            want[p + "attn_norm_bias"] = want[p + "ffn_norm_bias"] = (D,)
        if p + "wqkv" in names:
            want[p + "wqkv"] = ((H + 2 * KV) * hd, D)
            biases[p + "bqkv"] = ((H + 2 * KV) * hd,)
        else:
            want.update({p + "wq": (H * hd, D), p + "wk": (KV * hd, D), p + "wv": (KV * hd, D)})
            biases.update({p + "bq": (H * hd,), p + "bk": (KV * hd,), p + "bv": (KV * hd,)})
        want[p + "wo"] = (D, H * hd)
        if spec.mlp == "swiglu":
            want[p + "w_gate"] = (F, D)
        want[p + "w_up"], want[p + "w_down"] = (F, D), (D, F)
        biases.update({p + "bo": (D,), p + "b_up": (F,), p + "b_down": (D,)})
    want.update(biases)
    return want, set() if spec.linear_bias else set(biases)


def _check_matrix(name: str, w, shape: tuple) -> tuple[np.ndarray, str]:
    """(array for the native side, type) of one matrix, or a named error."""
    if not isinstance(w, Weight):
        if isinstance(w, np.ndarray) and w.dtype == np.float32:
            w = Weight(w, "F32", tuple(w.shape))
        else:
            raise DTypeError(f"weight '{name}': expected a Weight or a float32 array, got {type(w).__name__}")
    if w.type not in BLOCK_SIZES:
        raise DTypeError(f"weight '{name}': unknown type {w.type!r} (known: {', '.join(BLOCK_SIZES)})")
    if tuple(w.shape) != shape:
        raise ShapeError(f"weight '{name}': expected shape {shape}, got {tuple(w.shape)}")
    block = BLOCK_SIZES[w.type][0]
    if shape[1] % block:
        raise ShapeError(f"weight '{name}': {w.type} rows hold a multiple of {block} values, got {shape[1]}")
    data = w.data
    if not isinstance(data, np.ndarray):
        raise DTypeError(f"weight '{name}': data must be a numpy array, got {type(data).__name__}")
    if w.type == "F32":
        if data.dtype != np.float32 or data.shape != shape:
            raise DTypeError(f"weight '{name}': F32 data must be a float32 {shape} array, got "
                             f"{data.dtype} {data.shape}")
        return np.ascontiguousarray(data), "F32"
    if not data.flags.c_contiguous:
        raise ShapeError(f"weight '{name}': {w.type} blocks must be one contiguous array")
    want = shape[0] * row_bytes(w.type, shape[1])
    if data.nbytes != want:
        raise ShapeError(f"weight '{name}': {w.type} {shape} needs {want} bytes, got {data.nbytes}")
    return data.reshape(-1).view(np.uint8), w.type


def _check_vector(name: str, v, n: int) -> np.ndarray:
    if isinstance(v, Weight):
        v = v.data
    if not isinstance(v, np.ndarray) or v.dtype != np.float32:
        raise DTypeError(f"weight '{name}': expected a float32 array, got "
                         f"{getattr(v, 'dtype', type(v).__name__)}")
    if v.shape != (n,):
        raise ShapeError(f"weight '{name}': expected shape ({n},), got {v.shape}")
    return np.ascontiguousarray(v)


class Decoder:
    """A decoder over `weights` (canonical names, see expected_weights) with a KV cache of
    `kv_blocks` blocks of `kv_block_tokens` tokens, allocated once (default: room for every
    sequence at max_context; pages never written cost no memory). Thread-safe."""

    def __init__(self, spec: DecoderSpec, weights: dict, *, max_sequences: int = 8,
                 max_context: int | None = None, kv_block_tokens: int = 64, kv_blocks: int | None = None):
        from .. import _C

        if not isinstance(spec, DecoderSpec):
            raise ModelFormatError(f"Decoder: spec must be a DecoderSpec, got {type(spec).__name__}")
        for name, v in (("max_sequences", max_sequences), ("kv_block_tokens", kv_block_tokens)):
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise DecoderError(f"Decoder: {name} must be a positive int, got {v!r}")
        if max_context is None:
            max_context = min(spec.max_context, 4096)
        if not isinstance(max_context, (int, np.integer)) or not 0 < max_context <= spec.max_context:
            raise DecoderError(f"Decoder: max_context must be in [1, {spec.max_context}] (the model's "
                               f"limit), got {max_context!r}")
        per_seq = -(-max_context // kv_block_tokens)
        if kv_blocks is None:
            kv_blocks = max_sequences * per_seq
        if not isinstance(kv_blocks, (int, np.integer)) or kv_blocks <= 0:
            raise DecoderError(f"Decoder: kv_blocks must be a positive int, got {kv_blocks!r}")
        native = self._check_weights(spec, weights, max_context)
        self.spec, self.max_sequences = spec, int(max_sequences)
        self.max_context, self.kv_block_tokens = int(max_context), int(kv_block_tokens)
        self._weights = native  # the native object points into these arrays
        spec_dict = {k: getattr(spec, k) for k in spec.__dataclass_fields__}
        self._native = _C.LmDecoder(spec_dict, native, int(max_sequences), int(max_context),
                                    int(kv_block_tokens), int(kv_blocks))
        self._lock = threading.Lock()
        self._lengths: dict[int, int] = {}  # open sequences (mirrors the native cache)

    @staticmethod
    def _check_weights(spec: DecoderSpec, weights: dict, max_context: int) -> dict:
        if not isinstance(weights, dict):
            raise ModelFormatError(f"Decoder: weights must be a dict, got {type(weights).__name__}")
        want, optional = expected_weights(spec, weights)
        missing = [n for n in want if n not in weights and n not in optional]
        if missing:
            raise ModelFormatError(f"Decoder: missing weights {missing[:5]}"
                                   f"{' ...' if len(missing) > 5 else ''} for a {spec.arch} model")
        extra = sorted(set(weights) - set(want))
        if extra:
            raise ModelFormatError(f"Decoder: unexpected weights {extra[:5]}{' ...' if len(extra) > 5 else ''}")
        native = {}
        for name, shape in want.items():
            if name not in weights:
                continue
            w = weights[name]
            if name == "pos_embeddings":
                if not isinstance(w, np.ndarray) or w.dtype != np.float32 or w.ndim != 2 \
                        or w.shape[1] != spec.hidden or w.shape[0] < max_context:
                    raise ShapeError(f"weight 'pos_embeddings': expected float32 (>= {max_context}, "
                                     f"{spec.hidden}), got {getattr(w, 'dtype', type(w).__name__)} "
                                     f"{getattr(w, 'shape', '')}")
                native[name] = np.ascontiguousarray(w)
            elif len(shape) == 2:
                native[name] = _check_matrix(name, w, shape)
            else:
                native[name] = _check_vector(name, w, shape[0])
        return native

    def open(self) -> int:
        """A free sequence id (its cache empty)."""
        with self._lock:
            seq = self._native.open()
            if seq < 0:
                raise DecoderError(f"Decoder.open: all {self.max_sequences} sequences are open")
            self._lengths[seq] = 0
            return seq

    def close(self, seq: int) -> None:
        """Frees the sequence's cache blocks; closing a closed id does nothing."""
        with self._lock:
            if seq in self._lengths:
                self._native.close(seq)
                del self._lengths[seq]

    def length(self, seq: int) -> int:
        """Tokens in the sequence's cache."""
        with self._lock:
            return self._lengths[self._open_seq(seq, "length")]

    def truncate(self, seq: int, length: int) -> None:
        """Forgets the cached tokens from `length` on (frees whole blocks past it)."""
        with self._lock:
            n = self._lengths[self._open_seq(seq, "truncate")]
            if not isinstance(length, (int, np.integer)) or not 0 <= length <= n:
                raise DecoderError(f"Decoder.truncate: length must be in [0, {n}] for sequence {seq}, "
                                   f"got {length!r}")
            self._native.truncate(seq, int(length))
            self._lengths[seq] = int(length)

    def kv_usage(self) -> tuple[int, int]:
        """(blocks in use, blocks in the pool)."""
        return tuple(self._native.kv_usage())

    def forward(self, seqs, tokens, *, all_logits: bool = False) -> np.ndarray:
        """Appends tokens[i] to sequence seqs[i] (all in one native call) and returns float32
        logits: (len(seqs), vocab) for each sequence's last new token, or with all_logits
        (total new tokens, vocab), rows in order."""
        seqs, tokens = list(seqs), list(tokens)
        if not seqs:
            raise DecoderError("Decoder.forward: no sequences")
        if len(seqs) != len(tokens):
            raise DecoderError(f"Decoder.forward: {len(seqs)} sequences but {len(tokens)} token lists")
        rows = []
        for s, t in zip(seqs, tokens):
            try:
                a = np.asarray(t)
            except Exception:
                a = np.asarray([], dtype=object)
            if a.ndim != 1 or a.size == 0 or not (np.issubdtype(a.dtype, np.integer)):
                raise DecoderError(f"Decoder.forward: tokens for sequence {s} must be a non-empty "
                                   f"sequence of ints, got {t!r:.80}")
            if a.min() < 0 or a.max() >= self.spec.vocab_size:
                bad = a[(a < 0) | (a >= self.spec.vocab_size)][0]
                raise DecoderError(f"Decoder.forward: token id {int(bad)} for sequence {s} is out of "
                                   f"range [0, {self.spec.vocab_size})")
            rows.append(a.astype(np.int64, copy=False))
        with self._lock:
            need, seen = 0, set()
            for s, a in zip(seqs, rows):
                self._open_seq(s, "forward")
                if s in seen:
                    raise DecoderError(f"Decoder.forward: sequence {s} appears twice in one step")
                seen.add(s)
                n, new = self._lengths[s], self._lengths[s] + a.size
                if new > self.max_context:
                    raise DecoderError(f"Decoder.forward: sequence {s} would hold {new} tokens, over "
                                       f"max_context {self.max_context}")
                bt = self.kv_block_tokens
                need += -(-new // bt) - (-(-n // bt))
            used, total = self._native.kv_usage()
            if need > total - used:
                raise KvCacheFullError(f"Decoder.forward: the KV cache pool is exhausted: the step "
                                       f"needs {need} more blocks, {total - used} of {total} are free")
            counts = np.fromiter((a.size for a in rows), np.int64, len(rows))
            flat = np.concatenate(rows) if len(rows) > 1 else rows[0]
            out = self._native.forward(np.asarray(seqs, np.int64), counts, flat, bool(all_logits))
            for s, a in zip(seqs, rows):
                self._lengths[s] += a.size
            return out

    def _open_seq(self, seq, what: str) -> int:
        if isinstance(seq, bool) or not isinstance(seq, (int, np.integer)) or int(seq) not in self._lengths:
            raise DecoderError(f"Decoder.{what}: sequence {seq!r} is not open")
        return int(seq)
