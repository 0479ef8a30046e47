"""LanguageModel: what engine.load returns for a GGUF file or a Hugging Face decoder folder.

    lm = engine.load("SmolLM2-135M-Instruct.Q4_1.gguf")
    lm.chat([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=32)
    for piece in lm.generate("Once upon a time", temperature=0.8, top_p=0.95, seed=1, stream=True): ...
    lm.logits(ids)                                    # (len(ids), vocab) float32

Generation runs one sequence at a time on the calling thread, each step one native decoder call
and one native sampling call. Defaults are greedy (temperature 0), as in transformers; pass a
temperature to sample. A server shares the model's decoder through engine.lm.scheduler instead.
"""

from __future__ import annotations

import threading
from typing import Iterator, Sequence

import numpy as np

from ..errors import EngineError
from .decoder import Decoder


class LanguageModel:
    def __init__(self, decoder: Decoder, tokenizer, chat_template=None, *, name: str = "", path: str = "",
                 eos_ids: Sequence[int] = ()):
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.name, self.path = name, path
        self.eos_ids = tuple(eos_ids)
        # The decoder's scratch is per decoder: one forward at a time (sequences interleave freely).
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        s = self.decoder.spec
        return (f"LanguageModel({self.name!r}, {s.arch}, {s.n_layers} layers, hidden {s.hidden}, "
                f"vocab {s.vocab_size}, context {self.decoder.max_context})")

    @property
    def vocab_size(self) -> int:
        return self.decoder.spec.vocab_size

    @property
    def max_context(self) -> int:
        return self.decoder.max_context

    # -- text <-> ids ---------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._need_tokenizer().encode(text, add_special_tokens)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._need_tokenizer().decode([int(i) for i in ids], skip_special_tokens)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        if self.chat_template is None:
            raise EngineError(f"{self.name}: the model carries no chat template; use generate() with a prompt")
        _check_messages(messages)
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt)

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """The prompt ids of a chat: the template's text, whose special tokens it spells itself."""
        return self.encode(self.render_chat(messages), add_special_tokens=False)

    # -- evaluation -------------------------------------------------------------------------

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """float32 (len(token_ids), vocab): row i scores the token after token_ids[: i + 1]."""
        ids = self._check_ids(token_ids, "logits")
        with self.lock:
            seq = self.decoder.open()
            try:
                return self.decoder.forward([seq], [ids], all_logits=True)
            finally:
                self.decoder.close(seq)

    # -- generation -------------------------------------------------------------------------

    def generate(self, prompt: str | Sequence[int], *, max_new_tokens: int = 64, stream: bool = False,
                 stop: str | Sequence[str] = (), **sampling) -> str | Iterator[str]:
        """The text generated after `prompt` (a string, or token ids), stopping at an end-of-sequence
        token, a stop string (not included) or max_new_tokens. `sampling`: temperature (0 =
        greedy, the default), top_k, top_p, min_p, repetition_penalty, seed. With stream=True, an
        iterator of text pieces as they are decoded."""
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        pieces = self._pieces(ids, max_new_tokens, stop, sampling)
        return pieces if stream else "".join(pieces)

    def chat(self, messages: list[dict], *, max_new_tokens: int = 256, stream: bool = False,
             stop: str | Sequence[str] = (), **sampling) -> str | Iterator[str]:
        """The assistant's reply to `messages` ([{"role": ..., "content": ...}, ...])."""
        pieces = self._pieces(self.chat_ids(messages), max_new_tokens, stop, sampling)
        return pieces if stream else "".join(pieces)

    def generate_ids(self, prompt_ids: Sequence[int], *, max_new_tokens: int = 64, **sampling) -> list[int]:
        """The generated token ids (stopping at end-of-sequence or max_new_tokens)."""
        return list(self._tokens(self._check_ids(prompt_ids, "generate"), max_new_tokens, sampling))

    def _pieces(self, ids: list[int], max_new_tokens: int, stop, sampling: dict) -> Iterator[str]:
        from .stops import TokenText

        tokens = self._tokens(self._check_ids(ids, "generate"), max_new_tokens, sampling)
        text = TokenText(self._need_tokenizer(), [stop] if isinstance(stop, str) else list(stop))

        def pieces():
            try:
                for token in tokens:
                    if out := text.push(token):
                        yield out
                    if text.stopped:
                        return
                if tail := text.finish():
                    yield tail
            finally:
                tokens.close()  # frees the sequence when the caller stops early

        return pieces()

    def _tokens(self, ids: list[int], max_new_tokens: int, sampling: dict) -> Iterator[int]:
        from .sampling import SamplingParams, SequenceSampler, sample

        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise EngineError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
        try:
            params = SamplingParams(**{"temperature": 0.0, **sampling})
        except TypeError as e:
            raise EngineError(f"generate: {e}") from None
        params.check()
        room = self.max_context - len(ids)
        if max_new_tokens > room:
            raise EngineError(f"generate: the prompt is {len(ids)} tokens and max_new_tokens {max_new_tokens}; "
                              f"together they exceed the context of {self.max_context} tokens")
        sampler = SequenceSampler(params, ids)

        def steps():
            if max_new_tokens == 0:
                return
            with self.lock:
                seq = self.decoder.open()
            try:
                feed = ids
                for _ in range(max_new_tokens):
                    with self.lock:
                        logits = self.decoder.forward([seq], [feed])
                    token = int(sample(logits, [sampler])[0])
                    sampler.accept(token)
                    yield token
                    if token in self.eos_ids:
                        return
                    feed = [token]
            finally:
                with self.lock:
                    self.decoder.close(seq)

        return steps()

    # -- checks -----------------------------------------------------------------------------

    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise EngineError(f"{self.name}: the model has no tokenizer; pass token ids")
        return self.tokenizer

    def _check_ids(self, token_ids, what: str) -> list[int]:
        arr = np.asarray(token_ids)
        if arr.ndim != 1 or arr.size == 0 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == object):
            raise EngineError(f"{what}: expected a non-empty 1-D sequence of token ids, got "
                              f"{type(token_ids).__name__} of shape {arr.shape}")
        ids = [int(i) for i in arr]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise EngineError(f"{what}: token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        if len(ids) > self.max_context:
            raise EngineError(f"{what}: {len(ids)} tokens exceed the context of {self.max_context} tokens")
        return ids


def _check_messages(messages) -> None:
    if not isinstance(messages, list) or not messages:
        raise EngineError("chat: messages must be a non-empty list of {'role': ..., 'content': ...}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise EngineError(f"chat: message {i} must be a dict with a 'role' string and 'content'")
