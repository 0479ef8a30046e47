"""Latency measurement: warm up, then time calls one by one and report the median.

Every call is timed on its own with ``perf_counter_ns`` (about 50 ns of overhead, small
against the microseconds a call takes), so the median and percentiles describe single-call
latency, the figure a caller with one request in hand sees. The garbage collector is off while
timing.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable


@dataclass
class Timing:
    median_us: float
    p10_us: float
    p90_us: float
    mean_us: float
    calls: int

    def as_dict(self) -> dict:
        return asdict(self)


def measure(fn: Callable[[], object], *, min_time: float = 0.5, min_calls: int = 20,
            max_calls: int = 200_000, warmup_time: float = 0.1, warmup_calls: int = 5) -> Timing:
    """Time ``fn()`` until both ``min_time`` seconds and ``min_calls`` calls are reached."""
    perf = time.perf_counter_ns
    t_end = perf() + int(warmup_time * 1e9)
    n = 0
    while n < warmup_calls or perf() < t_end:
        fn()
        n += 1
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        samples: list[int] = []
        append = samples.append
        deadline = perf() + int(min_time * 1e9)
        while True:
            t0 = perf()
            fn()
            t1 = perf()
            append(t1 - t0)
            if (t1 >= deadline and len(samples) >= min_calls) or len(samples) >= max_calls:
                break
    finally:
        if gc_was_on:
            gc.enable()
    samples.sort()
    k = len(samples)
    return Timing(
        median_us=statistics.median(samples) / 1e3,
        p10_us=samples[k // 10] / 1e3,
        p90_us=samples[min(k - 1, (9 * k) // 10)] / 1e3,
        mean_us=sum(samples) / k / 1e3,
        calls=k,
    )


def round_robin(fns: dict, arg, rounds: int, **measure_kw) -> dict:
    """{name: median µs} of each ``fns[name](arg)``: timed round-robin for ``rounds`` rounds,
    the order rotated each round, each framework's best round kept (resists interference from
    other processes on a shared machine)."""
    best: dict = {}
    order = list(fns)
    for r in range(rounds):
        k = r % max(1, len(order))
        for name in order[k:] + order[:k]:
            t = measure(lambda: fns[name](arg), **measure_kw)
            if name not in best or t.median_us < best[name]:
                best[name] = t.median_us
    return best


def best_peer(latency: dict, engine: str = "engine"):
    """(fastest peer, engine latency / its latency), or (None, None) without both."""
    peers = {k: v for k, v in latency.items() if k != engine}
    if not peers or engine not in latency:
        return None, None
    bp = min(peers, key=peers.get)
    return bp, latency[engine] / peers[bp]
