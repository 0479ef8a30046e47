"""Continuous batching for one language model: many generations share each decoder step.

    sched = Scheduler(lm.decoder, lm.tokenizer, eos_ids=lm.eos_ids, max_tokens_per_step=512)
    handle = sched.submit(prompt_ids, SamplingParams(temperature=0), 64, ("\\n\\n",), sink)
    handle.cancel()            # from any thread; its sequence and KV blocks are freed next step
    sched.close(timeout=30)    # no new requests; the running ones finish, then the thread ends

One thread per model. It sleeps on a condition while nothing runs (no CPU when idle). Each step:
  1. drop cancelled requests (close their sequences, which frees their KV blocks);
  2. build one batch under max_tokens_per_step: one token per decoding sequence first (they
     keep their latency), then the rest of partly prefilled prompts, then new requests while a
     sequence slot and KV room are free; a prompt longer than what is left is prefilled in
     chunks over several steps;
  3. ONE decoder.forward for all rows, ONE sample() for the rows whose prompt is complete;
  4. deliver each new token to its request's sink as an Event (token id, text piece), and a
     last Event with finish_reason "stop" (an EOS id or a stop string), "length" or
     "cancelled"; a finished sequence is closed at once.

KV room is reserved at admission for prompt + max_new_tokens, so a running sequence never finds
the pool exhausted: a request waits (it is never refused) until room frees up. A request that
could never fit (longer than the context, or than the whole pool) is refused at submit.

A failing forward fails only the requests that make it fail: the decoder changes nothing when
it raises, so the batch is retried one row at a time and only rows that fail again get an Event
with `error`. A sink that raises is treated as a client gone: its request is cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import EngineError
from .sampling import SamplingParams, SequenceSampler, sample
from .stops import TokenText

log = logging.getLogger("engine.lm")


class GenerationError(EngineError, ValueError):
    """A generation request that can never run as asked (HTTP 400): the message says the numbers."""
    status = 400


class SchedulerClosedError(EngineError):
    """The scheduler no longer takes requests (its model is unloading; HTTP 503)."""
    status = 503


@dataclass(frozen=True)
class Event:
    """What a sink receives: a token (token_id set, text possibly "" while a character or a
    possible stop string is held back), or the end (finish_reason set, with the held-back text)."""
    token_id: Optional[int] = None
    text: str = ""
    finish_reason: Optional[str] = None   # "stop" | "length" | "cancelled" | "error"
    error: Optional[str] = None
    prompt_tokens: int = 0                # the request's usage, on the last Event
    completion_tokens: int = 0


class Observer:
    """Metric hooks, called on the scheduler thread (engine/serve/metrics.py implements them)."""

    def prompt_tokens(self, n: int) -> None: ...
    def generated_tokens(self, n: int) -> None: ...
    def first_token(self, seconds: float) -> None: ...
    def inter_token(self, seconds: float) -> None: ...
    def finished(self, reason: str) -> None: ...


class Handle:
    """One submitted generation; cancel() from any thread. Counts for `usage` are read after the end."""

    def __init__(self, scheduler: "Scheduler", prompt_ids: list, params: SamplingParams, max_new_tokens: int,
                 stops: Sequence[str], sink: Callable[[Event], None], reserve_blocks: int):
        self._scheduler = scheduler
        self.prompt_ids = prompt_ids
        self.params, self.max_new_tokens, self.sink = params, max_new_tokens, sink
        self.stops = list(stops)
        self.reserve_blocks = reserve_blocks
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.finish_reason: Optional[str] = None
        self.cancelled = False
        self.t_submit = time.perf_counter()
        self.t_last: Optional[float] = None
        # scheduler-thread state
        self.seq: Optional[int] = None
        self.prefilled = 0                # prompt tokens already in the cache
        self.next_token: Optional[int] = None
        self.sampler: Optional[SequenceSampler] = None
        self.text: Optional[TokenText] = None  # made at admission

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def cancel(self) -> None:
        if not self.cancelled and self.finish_reason is None:
            self.cancelled = True
            self._scheduler._wake()


class Scheduler:
    def __init__(self, decoder, tokenizer, *, eos_ids: Sequence[int] = (), max_sequences: Optional[int] = None,
                 max_tokens_per_step: int = 512, observer: Optional[Observer] = None, name: str = "lm",
                 lock: Optional[threading.Lock] = None):
        if max_tokens_per_step < 1:
            raise GenerationError(f"max_tokens_per_step must be >= 1, got {max_tokens_per_step}")
        self.decoder, self.tokenizer = decoder, tokenizer
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        self.max_sequences = min(max_sequences or decoder.max_sequences, decoder.max_sequences)
        if max_tokens_per_step < self.max_sequences:
            raise GenerationError(f"max_tokens_per_step {max_tokens_per_step} is below max_sequences "
                                  f"{self.max_sequences}: every decoding sequence needs its token in each step")
        self.max_tokens_per_step = max_tokens_per_step
        self.max_context = decoder.max_context
        spec = getattr(decoder, "spec", None)  # the decoder's vocabulary (may be padded past the tokenizer's)
        self.vocab_size = spec.vocab_size if spec is not None else tokenizer.vocab_size
        self.observer = observer or Observer()
        self.name = name
        # LanguageModel.lock: the decoder takes one call at a time (lm.generate may share it)
        self._decoder_lock = lock if lock is not None else threading.Lock()
        self._cond = threading.Condition()
        self._waiting: deque = deque()
        self._running: list = []
        self._reserved = 0                # KV blocks promised to running requests
        self._closing = False
        self.steps = 0                    # counters, read by metrics and tests
        self.failed_steps = 0
        self._thread = threading.Thread(target=self._loop, name=f"engine-lm-{name}", daemon=True)
        self._thread.start()

    # -- submitting ---------------------------------------------------------------------

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams, max_new_tokens: int,
               stops: Sequence[str] = (), sink: Callable[[Event], None] = lambda e: None) -> Handle:
        """Queue a generation. Raises GenerationError for what can never run (numbers in the
        message), SamplingError for bad parameters, SchedulerClosedError while closing."""
        prompt_ids = [int(t) for t in prompt_ids]
        if not prompt_ids:
            raise GenerationError("the prompt is empty: give at least one token")
        vocab = self.vocab_size
        bad = [t for t in prompt_ids if not 0 <= t < vocab]
        if bad:
            raise GenerationError(f"prompt token id {bad[0]} is outside this model's vocabulary [0, {vocab})")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        total = len(prompt_ids) + max_new_tokens
        if total > self.max_context:
            raise GenerationError(
                f"this model's context is {self.max_context} tokens; the prompt has {len(prompt_ids)} and "
                f"{max_new_tokens} more were asked for ({total}): shorten the prompt or ask for fewer tokens")
        params.check()
        block_tokens = self.decoder.kv_block_tokens
        blocks = -(-total // block_tokens)
        pool = self.decoder.kv_usage()[1]
        if blocks > pool:
            raise GenerationError(f"prompt + max_new_tokens = {total} tokens need {blocks} KV blocks of "
                                  f"{block_tokens}; the cache holds {pool}")
        h = Handle(self, prompt_ids, params, max_new_tokens, tuple(stops), sink, blocks)
        with self._cond:
            if self._closing:
                raise SchedulerClosedError(f"model '{self.name}' is unloading; it takes no new requests")
            self._waiting.append(h)
            self._cond.notify()
        return h

    # -- state for metrics --------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def kv_usage(self) -> tuple:
        return self.decoder.kv_usage()

    # -- closing ------------------------------------------------------------------------

    def close(self, timeout: Optional[float] = None) -> bool:
        """Refuse new requests, let queued and running ones finish (within `timeout`, then cancel
        them), stop the thread. True when everything finished on its own."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        clean = not self._thread.is_alive()
        if not clean:
            with self._cond:
                for h in list(self._waiting) + list(self._running):
                    h.cancelled = True
                self._cond.notify()
            self._thread.join()
        return clean

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    # -- the thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._running and not self._waiting and not self._closing:
                    self._cond.wait()
                if self._closing and not self._running and not self._waiting:
                    return
            try:
                self._step()
            except Exception as e:  # a bug in a step: fail what is running, keep the thread
                log.exception("scheduler %s: step failed", self.name)
                for h in list(self._running):
                    self._finish(h, "error", error=f"{type(e).__name__}: {e}")

    def _step(self) -> None:
        self._drop_cancelled()
        rows = self._plan()
        if not rows:
            return
        self.steps += 1
        logits, rows_out, failed = self._forward(rows)
        for h, why in failed:
            self._finish(h, "error", error=why)
        # rows whose prompt is all in: they sample (a prefill chunk that is not the last does not)
        ready = [(rows[j][0], k) for k, j in enumerate(rows_out)]
        ready = [(h, k) for h, k in ready if h.finish_reason is None and
                 (h.next_token is not None or h.prefilled == len(h.prompt_ids))]
        if not ready:
            return
        at = [k for _, k in ready]
        block = logits if len(at) == len(logits) else logits[at]  # every row, in order: no copy
        tokens = sample(block, [h.sampler for h, _ in ready])
        now = time.perf_counter()
        for (h, _), t in zip(ready, tokens):
            self._deliver(h, int(t), now)

    def _drop_cancelled(self) -> None:
        with self._cond:
            gone = [h for h in self._waiting if h.cancelled]
            for h in gone:
                self._waiting.remove(h)
        for h in gone:
            self._finish(h, "cancelled")
        for h in [h for h in self._running if h.cancelled]:
            self._finish(h, "cancelled")

    def _plan(self) -> list:
        """[(handle, tokens to append)] for this step, within the token budget."""
        budget = self.max_tokens_per_step
        rows = []
        for h in self._running:  # decoding sequences: one token each
            if h.next_token is not None and budget > 0:
                rows.append((h, [h.next_token]))
                budget -= 1
        for h in self._running:  # prompts prefilled in part
            if h.next_token is None and budget > 0:
                chunk = h.prompt_ids[h.prefilled:h.prefilled + budget]
                rows.append((h, chunk))
                budget -= len(chunk)
        while budget > 0 and len(self._running) < self.max_sequences:
            with self._cond:
                if not self._waiting:
                    break
                h = self._waiting[0]
                if self._reserved + h.reserve_blocks > self.decoder.kv_usage()[1]:
                    break  # first come, first served: wait for KV room rather than overtake
                self._waiting.popleft()
            try:
                with self._decoder_lock:
                    h.seq = self.decoder.open()
            except EngineError:  # every decoder slot taken (by someone outside the scheduler)
                with self._cond:
                    self._waiting.appendleft(h)
                break
            self._reserved += h.reserve_blocks
            h.sampler = SequenceSampler(h.params, h.prompt_ids)
            h.text = TokenText(self.tokenizer, h.stops)
            self._running.append(h)
            self.observer.prompt_tokens(len(h.prompt_ids))
            chunk = h.prompt_ids[:budget]
            rows.append((h, chunk))
            budget -= len(chunk)
        return rows

    def _forward(self, rows: list) -> tuple:
        """(logits, the indices of `rows` they belong to, [(handle, error)]). When the batch fails,
        each row alone finds the culprits (the decoder changed nothing)."""
        try:
            with self._decoder_lock:
                out = self.decoder.forward([h.seq for h, _ in rows], [t for _, t in rows])
            self._advance(rows)
            return out, list(range(len(rows))), []
        except EngineError as e:
            if len(rows) == 1:
                self.failed_steps += 1
                return None, [], [(rows[0][0], str(e))]
            log.warning("scheduler %s: a batch of %d failed (%s); retrying row by row", self.name, len(rows), e)
        outs, good, failed = [], [], []
        for i, (h, t) in enumerate(rows):
            try:
                with self._decoder_lock:
                    outs.append(self.decoder.forward([h.seq], [t])[0])
                good.append(i)
                self._advance([(h, t)])
            except EngineError as e:
                self.failed_steps += 1
                failed.append((h, str(e)))
        return (np.stack(outs) if outs else None), good, failed

    @staticmethod
    def _advance(rows: list) -> None:
        for h, t in rows:
            if h.next_token is None:
                h.prefilled += len(t)

    def _deliver(self, h: Handle, token: int, now: float) -> None:
        h.sampler.accept(token)
        self.observer.generated_tokens(1)
        if h.t_last is None:
            self.observer.first_token(now - h.t_submit)
        else:
            self.observer.inter_token(now - h.t_last)
        h.t_last = now
        if token in self.eos_ids:
            h.completion_tokens += 1
            self._finish(h, "stop")
            return
        h.completion_tokens += 1
        text = h.text.push(token)
        if not self._send(h, Event(token, text)):
            return
        if h.text.stopped:
            self._finish(h, "stop", flush=False)
        elif h.completion_tokens >= h.max_new_tokens:
            self._finish(h, "length")
        else:
            h.next_token = token

    def _send(self, h: Handle, event: Event) -> bool:
        try:
            h.sink(event)
            return True
        except Exception:  # the client is gone (or its sink is broken): stop generating for it
            log.debug("scheduler %s: a sink raised; cancelling its request", self.name, exc_info=True)
            h.cancelled = True
            self._finish(h, "cancelled", notify=False)
            return False

    def _finish(self, h: Handle, reason: str, *, error: Optional[str] = None, flush: bool = True,
                notify: bool = True) -> None:
        if h.finish_reason is not None:
            return
        text = ""
        if flush and reason in ("stop", "length") and h.text is not None:
            text = h.text.finish()
        h.finish_reason = reason
        if h in self._running:
            self._running.remove(h)
            self._reserved -= h.reserve_blocks
        if h.seq is not None:
            with self._decoder_lock:
                self.decoder.close(h.seq)
            h.seq = None
        self.observer.finished(reason)
        if notify:
            try:
                h.sink(Event(None, text, reason, error, h.prompt_tokens, h.completion_tokens))
            except Exception:
                log.debug("scheduler %s: a sink raised on the final event", self.name, exc_info=True)
