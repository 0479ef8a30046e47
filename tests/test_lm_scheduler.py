"""engine.lm.scheduler against FakeDecoder (tests/lm_fakes.py), whose greedy output is a known
function of the prompt: chunked prefill, admission under sequence/token/KV budgets, finish
reasons, stop strings, cancellation and failure isolation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from lm_fakes import FakeDecoder, greedy_reference, smollm2_tokenizer_and_template  # noqa: E402

from engine.lm.sampling import SamplingParams  # noqa: E402
from engine.lm.scheduler import Event, GenerationError, Scheduler  # noqa: E402

GREEDY = SamplingParams(temperature=0.0)
TIMEOUT = 20


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer_and_template()[0]


class Collect:
    """A sink: every event, and a flag when the last one came."""

    def __init__(self):
        self.events: list[Event] = []
        self.finished = threading.Event()

    def __call__(self, e: Event) -> None:
        self.events.append(e)
        if e.finish_reason is not None:
            self.finished.set()

    def wait(self) -> "Collect":
        assert self.finished.wait(TIMEOUT), "generation did not finish"
        return self

    @property
    def ids(self):
        return [e.token_id for e in self.events if e.token_id is not None]

    @property
    def text(self):
        return "".join(e.text for e in self.events)

    @property
    def reason(self):
        return self.events[-1].finish_reason


def prompts(n, lengths, vocab, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(200, vocab, size=int(lengths[i % len(lengths)])).tolist() for i in range(n)]


def run(sched, prompt_list, max_new, stops=()):
    sinks = [Collect() for _ in prompt_list]
    handles = [sched.submit(p, GREEDY, max_new, stops, s) for p, s in zip(prompt_list, sinks)]
    for s in sinks:
        s.wait()
    return sinks, handles


def test_concurrent_greedy_equals_reference_with_chunked_prefill(tok):
    dec = FakeDecoder(tok.vocab_size, max_sequences=4, max_context=128, step_delay=0.001)
    sched = Scheduler(dec, tok, max_tokens_per_step=16, name="t")
    try:
        ps = prompts(6, [1, 5, 37, 50, 16, 17], tok.vocab_size)
        sinks, handles = run(sched, ps, 12)
        for p, s, h in zip(ps, sinks, handles):
            ref = greedy_reference(dec, p, 12)
            assert s.ids == ref and s.reason == "length"
            assert s.text == tok.decode(ref)  # the stream decoder's pieces add up to the whole
            assert (h.prompt_tokens, h.completion_tokens) == (len(p), 12)
        for call in dec.calls:  # the token budget and the sequence limit hold in every step
            assert sum(n for _, n in call) <= 16 and len(call) <= 4
        # every prompt token went in exactly once (the 37 and 50 in chunks), then 11 decode tokens each
        assert sum(n for call in dec.calls for _, n in call) == sum(map(len, ps)) + 6 * 11
        assert dec.open_sequences() == 0 and dec.kv_usage()[0] == 0
    finally:
        assert sched.close(TIMEOUT)


def test_prefill_chunks_cover_prompt_exactly(tok):
    dec = FakeDecoder(tok.vocab_size, max_sequences=1, max_context=128)
    sched = Scheduler(dec, tok, max_tokens_per_step=7)
    try:
        (p,) = prompts(1, [30], tok.vocab_size, seed=3)
        (s,), _ = run(sched, [p], 3)
        assert [n for call in dec.calls for _, n in call] == [7, 7, 7, 7, 2, 1, 1]
        assert s.ids == greedy_reference(dec, p, 3)
    finally:
        sched.close(TIMEOUT)


def test_requests_over_max_sequences_wait_and_complete(tok):
    dec = FakeDecoder(tok.vocab_size, max_sequences=8, max_context=64, step_delay=0.002)
    sched = Scheduler(dec, tok, max_sequences=2, max_tokens_per_step=64)
    try:
        ps = prompts(5, [4, 9], tok.vocab_size, seed=1)
        sinks, _ = run(sched, ps, 5)
        assert max(len(c) for c in dec.calls) == 2
        assert [s.ids for s in sinks] == [greedy_reference(dec, p, 5) for p in ps]
    finally:
        sched.close(TIMEOUT)


def test_kv_room_is_reserved_so_a_request_waits_rather_than_fails(tok):
    # 4 blocks of 16 tokens; each request needs 40 tokens = 3 blocks: only one fits at a time
    dec = FakeDecoder(tok.vocab_size, max_sequences=4, max_context=64, kv_blocks=4, kv_block_tokens=16)
    sched = Scheduler(dec, tok, max_tokens_per_step=64)
    try:
        ps = prompts(3, [30], tok.vocab_size, seed=2)
        sinks, _ = run(sched, ps, 10)
        assert all(s.reason == "length" for s in sinks)
        assert max(len(c) for c in dec.calls) == 1
        assert [s.ids for s in sinks] == [greedy_reference(dec, p, 10) for p in ps]
    finally:
        sched.close(TIMEOUT)


def test_eos_finishes_with_stop_and_is_not_emitted(tok):
    eos = tok.eos_ids[0]
    dec = FakeDecoder(tok.vocab_size, max_context=64, eos_id=eos, eos_at=12)
    sched = Scheduler(dec, tok, eos_ids=tok.eos_ids)
    try:
        (p,) = prompts(1, [8], tok.vocab_size)
        (s,), (h,) = run(sched, [p], 20)
        assert s.reason == "stop" and len(s.ids) == 4 and eos not in s.ids  # positions 8..11, EOS at 12
        assert s.ids == greedy_reference(dec, p, 20, eos_ids=(eos,))
        assert h.completion_tokens == 5  # the EOS counts as generated, as OpenAI's usage does
    finally:
        sched.close(TIMEOUT)


def test_stop_string_cuts_text_and_finishes(tok):
    dec = FakeDecoder(tok.vocab_size, max_context=64)
    sched = Scheduler(dec, tok)
    try:
        (p,) = prompts(1, [6], tok.vocab_size, seed=5)
        full = tok.decode(greedy_reference(dec, p, 20))
        stop = full[len(full) // 2:len(full) // 2 + 3]
        cut = full[:full.index(stop)]
        (s,), _ = run(sched, [p], 20, stops=[stop, "never-there"])
        assert s.reason == "stop" and s.text == cut
        (s2,), _ = run(sched, [p], 20, stops=["never-there"])
        assert s2.reason == "length" and s2.text == full  # held-back text is flushed at the end
    finally:
        sched.close(TIMEOUT)


def test_cancel_frees_sequence_and_cache(tok):
    dec = FakeDecoder(tok.vocab_size, max_context=256, step_delay=0.01)
    sched = Scheduler(dec, tok)
    try:
        got_one = threading.Event()
        s = Collect()

        def sink(e):
            s(e)
            got_one.set()
        h = sched.submit(prompts(1, [20], tok.vocab_size)[0], GREEDY, 200, (), sink)
        assert got_one.wait(TIMEOUT)
        assert dec.kv_usage()[0] > 0
        h.cancel()
        s.wait()
        assert s.reason == "cancelled" and len(s.ids) < 200
        assert sched.running == 0 and dec.open_sequences() == 0 and dec.kv_usage()[0] == 0
    finally:
        sched.close(TIMEOUT)


def test_a_sink_that_raises_cancels_only_its_request(tok):
    dec = FakeDecoder(tok.vocab_size, max_context=64)
    sched = Scheduler(dec, tok)
    try:
        def broken(e):
            raise ConnectionResetError("client went away")
        p1, p2 = prompts(2, [5], tok.vocab_size, seed=7)
        h = sched.submit(p1, GREEDY, 30, (), broken)
        (s,), _ = run(sched, [p2], 10)
        assert s.ids == greedy_reference(dec, p2, 10)
        assert h.finish_reason == "cancelled" and dec.open_sequences() == 0
    finally:
        sched.close(TIMEOUT)


def test_a_failing_row_fails_alone_and_the_thread_survives(tok):
    poison = 777
    dec = FakeDecoder(tok.vocab_size, max_context=64, poison=frozenset({poison}))
    sched = Scheduler(dec, tok)
    try:
        good = prompts(3, [6], tok.vocab_size, seed=8)
        bad = good[0][:3] + [poison] + good[0][3:]
        sinks, _ = run(sched, [good[0], bad, good[1]], 6)
        assert sinks[1].reason == "error" and "poisoned" in sinks[1].events[-1].error
        assert sinks[0].ids == greedy_reference(dec, good[0], 6)
        assert sinks[2].ids == greedy_reference(dec, good[1], 6)
        (s,), _ = run(sched, [good[2]], 4)  # still serving
        assert s.ids == greedy_reference(dec, good[2], 4) and dec.open_sequences() == 0
    finally:
        sched.close(TIMEOUT)


def test_refused_at_submit_with_the_numbers(tok):
    dec = FakeDecoder(tok.vocab_size, max_context=64)
    sched = Scheduler(dec, tok)
    try:
        with pytest.raises(GenerationError, match=r"context is 64 tokens; the prompt has 60 and 10"):
            sched.submit([300] * 60, GREEDY, 10)
        with pytest.raises(GenerationError, match="empty"):
            sched.submit([], GREEDY, 10)
        with pytest.raises(GenerationError, match="vocabulary"):
            sched.submit([tok.vocab_size], GREEDY, 10)
        with pytest.raises(GenerationError, match="max_new_tokens"):
            sched.submit([300], GREEDY, 0)
        assert sched.waiting == 0
    finally:
        sched.close(TIMEOUT)


def test_step_budget_must_cover_every_decoding_sequence(tok):
    with pytest.raises(GenerationError, match="max_tokens_per_step 3 is below max_sequences 4"):
        Scheduler(FakeDecoder(tok.vocab_size, max_sequences=4), tok, max_tokens_per_step=3)


def test_idle_thread_does_no_steps_and_close_refuses_new_work(tok):
    dec = FakeDecoder(tok.vocab_size, max_context=64)
    sched = Scheduler(dec, tok)
    run(sched, prompts(1, [4], tok.vocab_size), 3)
    steps = sched.steps
    threading.Event().wait(0.2)
    assert sched.steps == steps
    assert sched.close(TIMEOUT)
    from engine.lm.scheduler import SchedulerClosedError
    with pytest.raises(SchedulerClosedError):
        sched.submit([300], GREEDY, 1)


def test_seeded_sampling_is_reproducible_across_batches(tok):
    dec = FakeDecoder(tok.vocab_size, max_context=64)
    sched = Scheduler(dec, tok)
    try:
        p = prompts(1, [5], tok.vocab_size)[0]
        params = SamplingParams(temperature=5.0, seed=1234)
        a, b = Collect(), Collect()
        sched.submit(p, params, 8, (), a)
        sched.submit(p, params, 8, (), b)
        a.wait(), b.wait()
        assert a.ids == b.ids and len(a.ids) == 8
    finally:
        sched.close(TIMEOUT)
