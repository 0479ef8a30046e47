"""Token sampling for language models: per-sequence settings and RNG, one native call per batch.

    params = SamplingParams(temperature=0.7, top_p=0.9, seed=1)
    s = SequenceSampler(params, prompt_ids=ids)
    tok = int(sample(logits[None], [s])[0]); s.accept(tok)

Per row, in this order: repetition penalty -> temperature -> top-k -> top-p -> min-p -> draw
(the semantics are in docs/lm-sampling.md and csrc/cpu/lm_sampling.h). Each sequence owns a
64-bit RNG state advanced once per call, so a seed reproduces its tokens whatever else is in the
batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine.errors import DTypeError, EngineError, ShapeError

_U64_MAX = 2**64 - 1
_I32_MAX = 2**31 - 1


class SamplingError(EngineError, ValueError):
    """A sampling setting is out of range, or the logits cannot be sampled (NaN, all -inf)."""


def _number(name: str, value, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SamplingError(f"{name} must be a number {allowed}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence picks its tokens. temperature 0 is greedy (argmax, lowest id on ties).

    >>> SamplingParams(temperature=0.8, top_k=40, top_p=0.95, seed=7).check()
    """

    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # over prompt + generated ids; 1 = off
    seed: int | None = None  # None: from os.urandom

    def check(self) -> None:
        """Raise SamplingError naming the first field out of its range."""
        t = _number("temperature", self.temperature, ">= 0")
        if not (t >= 0.0 and np.isfinite(t)):
            raise SamplingError(f"temperature must be finite and >= 0 (0 = greedy), got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
            raise SamplingError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        p = _number("top_p", self.top_p, "in (0, 1]")
        if not 0.0 < p <= 1.0:
            raise SamplingError(f"top_p must be in (0, 1] (1 = off), got {self.top_p!r}")
        mp = _number("min_p", self.min_p, "in [0, 1]")
        if not 0.0 <= mp <= 1.0:
            raise SamplingError(f"min_p must be in [0, 1] (0 = off), got {self.min_p!r}")
        rp = _number("repetition_penalty", self.repetition_penalty, "> 0")
        if not (rp > 0.0 and np.isfinite(rp)):
            raise SamplingError(f"repetition_penalty must be finite and > 0 (1 = off), got {self.repetition_penalty!r}")
        if self.seed is not None:
            whole = isinstance(self.seed, (int, np.integer)) and not isinstance(self.seed, bool)
            if not whole or not 0 <= self.seed <= _U64_MAX:
                raise SamplingError(f"seed must be None or an integer in [0, 2**64 - 1], got {self.seed!r}")


class SequenceSampler:
    """One sequence's sampling state: its params, RNG state and token history (for the penalty).

    >>> s = SequenceSampler(SamplingParams(repetition_penalty=1.1, seed=0), prompt_ids=[1, 2])
    >>> s.accept(5)
    """

    def __init__(self, params: SamplingParams, prompt_ids: Sequence[int] = ()):
        params.check()
        self.params = params
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little")
        self.rng_state = int(seed)  # splitmix64 state; any value is a fine seed
        self._row = (
            float(params.temperature),
            float(params.top_k),
            float(params.top_p),
            float(params.min_p),
            float(params.repetition_penalty),
        )
        self._penalise = params.repetition_penalty != 1.0
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() > _I32_MAX):
            raise SamplingError("prompt_ids must be token ids in [0, 2**31 - 1]")
        self._history = np.empty(max(64, 2 * ids.size), np.int32)
        self._history[: ids.size] = ids
        self._count = int(ids.size)

    def accept(self, token_id: int) -> None:
        """Record a generated token (the repetition penalty's history)."""
        if not 0 <= token_id <= _I32_MAX:
            raise SamplingError(f"accept: token id must be in [0, 2**31 - 1], got {token_id!r}")
        if self._count == self._history.size:
            grown = np.empty(2 * self._history.size, np.int32)
            grown[: self._count] = self._history[: self._count]
            self._history = grown
        self._history[self._count] = token_id
        self._count += 1

    @property
    def history(self) -> np.ndarray:
        """Prompt + accepted ids (what the repetition penalty applies to when it is on), a copy."""
        return self._history[: self._count].copy()

    def _penalty_ids(self) -> np.ndarray | None:
        return self._history[: self._count] if self._penalise and self._count else None


def sample(logits: np.ndarray, samplers: Sequence[SequenceSampler]) -> np.ndarray:
    """One token per row of `logits` (float32 (B, V)) for samplers[i]: int32 (B,).

    One native call for the batch; each sampler's RNG advances once; `logits` is not modified.
    NaN or +inf logits, or a row of all -inf, raise SamplingError naming the row.

    >>> sample(np.array([[0.0, 2.0, 1.0]], np.float32), [SequenceSampler(SamplingParams(temperature=0))])
    array([1], dtype=int32)
    """
    from engine import _C
    from engine.errors import KernelError

    if not isinstance(logits, np.ndarray):
        raise DTypeError(f"logits: expected a float32 numpy array, got {type(logits).__name__}")
    if logits.dtype != np.float32:
        raise DTypeError(f"logits: expected float32, got {logits.dtype}")
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ShapeError(f"logits: expected shape (batch, vocab) with vocab > 0, got {logits.shape}")
    if len(samplers) != logits.shape[0]:
        raise ShapeError(f"logits has {logits.shape[0]} rows but {len(samplers)} samplers were given")
    params = np.array([s._row for s in samplers], dtype=np.float64).reshape(len(samplers), 5)
    states = np.array([s.rng_state for s in samplers], dtype=np.uint64)
    histories = [s._penalty_ids() for s in samplers]
    try:
        out = _C.lm_sample(np.ascontiguousarray(logits), params, histories, states)
    except KernelError as e:
        raise SamplingError(str(e)) from None
    for s, st in zip(samplers, states.tolist()):
        s.rng_state = st
    return out


def support(
    logits_row: np.ndarray, params: SamplingParams, history: Sequence[int] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """The tokens `params` can draw from one row of logits (ids ascending) and their probabilities.

    >>> support(np.array([0.0, 2.0, 1.0], np.float32), SamplingParams(top_k=2))[0]
    array([1, 2], dtype=int32)
    """
    from engine import _C
    from engine.errors import KernelError

    params.check()
    s = SequenceSampler(params, history)
    row = np.ascontiguousarray(logits_row, dtype=np.float32)
    try:
        return _C.lm_sample_support(row, np.array(s._row, np.float64), s._penalty_ids())
    except KernelError as e:
        raise SamplingError(str(e)) from None
