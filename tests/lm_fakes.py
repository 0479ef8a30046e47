"""Stand-ins for the native decoder and the language model (interfaces section 2 and 4) for the
scheduler and serving tests: the bookkeeping is real, the arithmetic is not.

FakeDecoder's logits depend only on (the row's last token, its position), peaking at
`fake_next(token, position)`, so a greedy generation is a pure function of the prompt, whatever
batch, chunking or order the scheduler chooses: exactly what the tests compare against.
FakeLanguageModel carries the REAL SmolLM2 tokenizer and chat template.
"""

from __future__ import annotations

import functools
import threading
import time

import numpy as np

from engine.errors import EngineError

FIRST_ORDINARY_ID = 200  # SmolLM2's special tokens live below this


def fake_next(token: int, position: int, vocab: int) -> int:
    """The token FakeDecoder's logits favour after `token` at `position`."""
    span = vocab - FIRST_ORDINARY_ID
    return FIRST_ORDINARY_ID + (token * 7919 + position * 104729 + 13) % span


class FakeDecoder:
    """Section 2's Decoder with real open/close/length/truncate/kv_usage bookkeeping over a small
    block pool, one forward per batch, an optional per-step delay, and optional poison tokens
    that make a forward raise (as a native failure would, changing nothing)."""

    def __init__(self, vocab_size: int, *, max_sequences: int = 8, max_context: int = 256,
                 kv_block_tokens: int = 16, kv_blocks: int | None = None, step_delay: float = 0.0,
                 eos_id: int | None = None, eos_at: int | None = None, poison: frozenset = frozenset()):
        self.vocab_size = vocab_size
        self.max_sequences, self.max_context, self.kv_block_tokens = max_sequences, max_context, kv_block_tokens
        self.kv_blocks = kv_blocks if kv_blocks is not None else max_sequences * -(-max_context // kv_block_tokens)
        self.step_delay = step_delay
        self.eos_id, self.eos_at = eos_id, eos_at  # the token at position eos_at is eos_id
        self.poison = poison
        self._lengths: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._lock = threading.Lock()
        self.calls: list[list[tuple[int, int]]] = []  # per forward: [(seq, tokens appended)]

    # -- section 2 ------------------------------------------------------------------
    def open(self) -> int:
        with self._lock:
            for seq in range(self.max_sequences):
                if seq not in self._lengths:
                    self._lengths[seq] = 0
                    return seq
        raise EngineError(f"decoder: all {self.max_sequences} sequences are open")

    def close(self, seq: int) -> None:
        with self._lock:
            self._lengths.pop(seq, None)
            self._last.pop(seq, None)

    def length(self, seq: int) -> int:
        return self._lengths[seq]

    def truncate(self, seq: int, length: int) -> None:
        self._lengths[seq] = min(self._lengths[seq], length)

    def kv_usage(self) -> tuple[int, int]:
        with self._lock:
            return sum(self._blocks(n) for n in self._lengths.values()), self.kv_blocks

    def forward(self, seqs, tokens, *, all_logits=False) -> np.ndarray:
        seqs, tokens = list(seqs), [list(t) for t in tokens]
        with self._lock:
            if len(seqs) != len(tokens) or not seqs:
                raise EngineError("decoder.forward: seqs and tokens must be non-empty and of equal length")
            if len(set(seqs)) != len(seqs):
                raise EngineError(f"decoder.forward: a sequence appears twice in {seqs}")
            new_blocks = 0
            for s, t in zip(seqs, tokens):
                if s not in self._lengths:
                    raise EngineError(f"decoder.forward: sequence {s} is not open")
                if not t:
                    raise EngineError(f"decoder.forward: no tokens for sequence {s}")
                if any(not 0 <= x < self.vocab_size for x in t):
                    raise EngineError(f"decoder.forward: a token id of sequence {s} is outside [0, {self.vocab_size})")
                if self._lengths[s] + len(t) > self.max_context:
                    raise EngineError(f"decoder.forward: sequence {s} would exceed max_context {self.max_context}")
                if self.poison & set(t):
                    raise EngineError(f"decoder.forward: poisoned token in sequence {s}")
                new_blocks += self._blocks(self._lengths[s] + len(t)) - self._blocks(self._lengths[s])
            used = sum(self._blocks(n) for n in self._lengths.values())
            if used + new_blocks > self.kv_blocks:
                raise EngineError(f"decoder.forward: KV pool exhausted ({used} + {new_blocks} > {self.kv_blocks})")
            rows = []
            for s, t in zip(seqs, tokens):
                start = self._lengths[s]
                self._lengths[s] = start + len(t)
                positions = range(start, start + len(t))
                rows.extend(zip(t, positions) if all_logits else [(t[-1], start + len(t) - 1)])
            self.calls.append([(s, len(t)) for s, t in zip(seqs, tokens)])
        if self.step_delay:
            time.sleep(self.step_delay)
        return np.stack([self._logits(tok, pos) for tok, pos in rows])

    # -- helpers ----------------------------------------------------------------------
    def favourite(self, token: int, position: int) -> int:
        if self.eos_at is not None and position + 1 >= self.eos_at:
            return self.eos_id
        return fake_next(token, position, self.vocab_size)

    def _logits(self, token: int, position: int) -> np.ndarray:
        row = _background(self.vocab_size).copy()
        row[self.favourite(token, position)] = 10.0
        return row

    def _blocks(self, n: int) -> int:
        return -(-n // self.kv_block_tokens)

    def open_sequences(self) -> int:
        with self._lock:
            return len(self._lengths)


@functools.cache
def _background(vocab: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, vocab).astype(np.float32)


def greedy_reference(decoder: FakeDecoder, prompt_ids: list[int], max_new_tokens: int, eos_ids=()) -> list[int]:
    """The greedy continuation of `prompt_ids`, computed from the fake's rule directly."""
    out, token, position = [], prompt_ids[-1], len(prompt_ids) - 1
    for _ in range(max_new_tokens):
        token = decoder.favourite(token, position)
        position += 1
        if token in eos_ids:
            break
        out.append(token)
    return out


@functools.cache
def smollm2_tokenizer_and_template():
    from engine.formats.gguf import read_gguf
    from engine.lm.chat_template import ChatTemplate
    from engine.lm.tokenizer import Tokenizer

    from gguf_smollm2 import smollm2_path
    md = read_gguf(str(smollm2_path())).metadata
    return Tokenizer.from_gguf_metadata(md), ChatTemplate.from_gguf_metadata(md)


class FakeLanguageModel:
    """Section 4's LanguageModel over a FakeDecoder, with SmolLM2's real tokenizer and template."""

    def __init__(self, decoder: FakeDecoder | None = None, *, name: str = "fake-smollm2", path: str = "", **decoder_kw):
        self.tokenizer, self.chat_template = smollm2_tokenizer_and_template()
        self.eos_ids = tuple(self.tokenizer.eos_ids)
        self.decoder = decoder if decoder is not None else FakeDecoder(self.tokenizer.vocab_size, **decoder_kw)
        self.name, self.path = name, path

    def render_chat(self, messages, add_generation_prompt=True) -> str:
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt)

    def logits(self, token_ids) -> np.ndarray:
        seq = self.decoder.open()
        try:
            return self.decoder.forward([seq], [list(token_ids)], all_logits=True)
        finally:
            self.decoder.close(seq)

    def generate(self, prompt, *, max_new_tokens=64, stop=(), stream=False, **sampling):
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        text = self.tokenizer.decode(greedy_reference(self.decoder, ids, max_new_tokens, self.eos_ids))
        for s in stop:
            if s and s in text:
                text = text[:text.index(s)]
        return iter([text]) if stream else text

    def chat(self, messages, **kw):
        return self.generate(self.render_chat(messages), **kw)


class FakeLoader:
    """Server(lm_loader=...): a FakeLanguageModel for every language-model version, remembering
    the keyword arguments (config.json's max_sequences / max_context) it was called with."""

    def __init__(self, step_delay: float = 0.002):
        self.step_delay = step_delay
        self.models, self.kwargs = [], []

    def __call__(self, path, **kw):
        self.kwargs.append(kw)
        vocab = smollm2_tokenizer_and_template()[0].vocab_size
        decoder = FakeDecoder(vocab, max_sequences=8, max_context=kw.get("max_context", 256),
                              step_delay=self.step_delay)
        lm = FakeLanguageModel(decoder, name=path.parent.parent.name, path=str(path))
        self.models.append(lm)
        return lm


def write_lm_version(repo, name: str, version: int = 1, config: dict | None = None):
    """<repo>/<name>/<version>/model.gguf as a placeholder file: FakeLoader never reads it."""
    import json
    import pathlib
    folder = pathlib.Path(repo) / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.gguf").write_bytes(b"GGUF placeholder: FakeLoader builds the model")
    if config is not None:
        (pathlib.Path(repo) / name / "config.json").write_text(json.dumps(config))
