"""Dynamic batching for one served model version.

Requests wait in one queue. Each instance is a thread that takes the oldest request and every
queued request of the same signature (input shapes past the batch dim, and dtypes) that fits in
max_batch_size rows, stacks them, runs the model once (the native call releases the GIL) and
hands each request its rows of the outputs. Requests of other signatures are never mixed in;
they keep their place for the next batch.

So batches form by themselves under load: while an instance computes, requests pile up, and
the next batch takes them all. `max_queue_delay_us` additionally holds a batch open (up to that
long after its oldest request arrived) until it reaches the largest preferred size or the
max; the default 0 never waits, which is best for latency. Requests are completed through a
callback on the instance thread; front ends hand the result to their event loop from there.

An instance is a slot, not only a thread: a front end that owns its thread (the socket
server's connection threads, in-process calls) uses `submit_inline`, which runs the batch on
the calling thread when a slot is free. A Python thread hand-off costs ~25 us each way here,
more than a small model's compute, so the low-latency path makes none. Event-loop front ends
use `submit`, which wakes an instance thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Optional

import numpy as np

from .. import _C

_SCAN_LIMIT = 256  # queued requests of other signatures looked past per batch


class Pending:
    """One request in the queue. `done(outputs, error)` is called exactly once, from an
    instance thread (or from close() with an error)."""
    __slots__ = ("feeds", "rows", "key", "done", "t_received", "t_enqueue", "t_start", "t_end", "batch_size")

    def __init__(self, feeds: dict, rows: int, key, done: Callable):
        self.feeds = feeds
        self.rows = rows
        self.key = key
        self.done = done
        self.t_received = 0.0  # when the front end got it (for the total latency); 0: at enqueue
        self.t_enqueue = 0.0
        self.t_start = 0.0
        self.t_end = 0.0
        self.batch_size = 0


class Batcher:
    """run(feeds) -> {output: array} is the model call. With max_batch_size 0 (or batching
    off) every request runs alone, as sent."""

    def __init__(self, run: Callable, *, max_batch_size: int, batching: bool = True,
                 preferred_batch_sizes: tuple = (), max_queue_delay_us: int = 0, instances: int = 1,
                 serial_threads: bool = False, on_batch: Optional[Callable] = None, name: str = "model"):
        self._run = run
        self._max = max_batch_size if batching else 0
        self._preferred = tuple(sorted(preferred_batch_sizes))
        self._delay = max_queue_delay_us / 1e6
        self._target = (self._preferred[-1] if self._preferred else self._max) or 1
        self._serial = serial_threads
        self._on_batch = on_batch
        self._queue: deque = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._busy = 0
        self._free = instances  # slots not computing
        self._workers = [threading.Thread(target=self._work, name=f"engine-serve-{name}-{i}", daemon=True)
                         for i in range(instances)]
        for w in self._workers:
            w.start()

    # -- submitting -------------------------------------------------------------------

    def submit(self, p: Pending, wake: bool = True) -> bool:
        """Queue a request; False when the batcher is closed (the caller reports it).
        wake=False queues without waking an instance thread: for a front end that queues
        several requests and then submits the last with submit_inline, which takes them all."""
        p.t_enqueue = time.perf_counter()
        if not p.t_received:
            p.t_received = p.t_enqueue
        with self._cond:
            if self._closed:
                return False
            self._queue.append(p)
            if wake:
                self._cond.notify()
        return True

    def wake(self) -> None:
        """Wake an instance thread if requests queued with wake=False are still waiting."""
        with self._cond:
            if self._queue and self._free:
                self._cond.notify()

    def submit_inline(self, p: Pending, max_batches: int = 8) -> bool:
        """Queue a request and, if an instance slot is free, run batches on this thread
        (this request's first) until the queue is empty or max_batches ran; then any work
        left goes to the instance threads. False when closed."""
        p.t_enqueue = time.perf_counter()
        if not p.t_received:
            p.t_received = p.t_enqueue
        cond = self._cond
        with cond:
            if self._closed:
                return False
            self._queue.append(p)
            if not self._free:
                return True  # an instance is computing; it takes this next
            self._free -= 1
            batch = self._pop_batch()
            self._busy += 1
        ran = 0
        serial = self._serial and not _C.thread_serial()
        if serial:
            _C.set_thread_serial(True)
        try:
            while True:
                try:
                    self._execute(batch)
                finally:
                    ran += 1
                    with cond:
                        self._busy -= 1
                        if self._closed:
                            cond.notify_all()
                        if not self._queue or ran >= max_batches:
                            self._free += 1
                            if self._queue:
                                cond.notify()
                            batch = None
                        else:
                            batch = self._pop_batch()
                            self._busy += 1
                if batch is None:
                    return True
        finally:
            if serial:
                _C.set_thread_serial(False)

    @property
    def pending(self) -> int:
        """Requests queued or computing."""
        return len(self._queue) + self._busy

    def close(self, timeout: Optional[float] = None) -> bool:
        """Stop taking requests, finish the queued ones, join the instances. Returns False if
        they did not finish within timeout (they are daemon threads and end with the process)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            while self._queue or self._busy:  # drain: queued and computing requests finish
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
        for w in self._workers:
            if w is threading.current_thread():
                continue
            w.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(w.is_alive() for w in self._workers if w is not threading.current_thread())

    # -- instances --------------------------------------------------------------------

    def _work(self) -> None:
        if self._serial:
            _C.set_thread_serial(True)
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._execute(batch)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._free += 1
                    if self._queue or self._closed:
                        self._cond.notify_all() if self._closed else self._cond.notify()

    def _take(self) -> Optional[list]:
        with self._cond:
            q = self._queue
            while not q or not self._free:
                if self._closed and not q:
                    return None
                self._cond.wait()
            if self._delay > 0 and self._max:
                deadline = q[0].t_enqueue + self._delay
                while not self._closed and self._rows_like(q[0]) < self._target:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            batch = self._pop_batch()
            self._busy += 1
            self._free -= 1
            if q and self._free:  # more work than this instance takes: wake another
                self._cond.notify()
            return batch

    def _rows_like(self, head: Pending) -> int:
        return sum(p.rows for p in self._queue if p.key == head.key)

    def _pop_batch(self) -> list:
        q = self._queue
        head = q.popleft()
        batch, rows = [head], head.rows
        if not self._max:
            return batch
        skipped = []
        while q and rows < self._max and len(skipped) < _SCAN_LIMIT:
            p = q.popleft()
            if p.key == head.key and rows + p.rows <= self._max:
                batch.append(p)
                rows += p.rows
            else:
                skipped.append(p)
        if self._preferred and rows not in self._preferred:
            fits = [s for s in self._preferred if s <= rows]
            if fits:  # give back requests past the largest preferred size reached
                while len(batch) > 1 and rows - batch[-1].rows >= fits[-1]:
                    last = batch.pop()
                    rows -= last.rows
                    skipped.append(last)
        if skipped:
            q.extendleft(reversed(skipped))
        return batch

    def _execute(self, batch: list) -> None:
        t0 = time.perf_counter()
        for p in batch:
            p.t_start = t0
            p.batch_size = len(batch)
        try:
            if len(batch) == 1:
                outs = self._run(batch[0].feeds)
                parts = [outs]
            else:
                names = batch[0].feeds.keys()
                feeds = {n: np.concatenate([p.feeds[n] for p in batch]) for n in names}
                outs = self._run(feeds)
                parts = _split(outs, batch)
        except BaseException as e:  # every request hears about a failed batch
            t1 = time.perf_counter()
            for p in batch:
                p.t_end = t1
                _complete(p, None, e)
            if self._on_batch is not None:
                self._on_batch(batch, t0, t1, e)
            return
        t1 = time.perf_counter()
        for p, part in zip(batch, parts):
            p.t_end = t1
            _complete(p, part, None)
        if self._on_batch is not None:
            self._on_batch(batch, t0, t1, None)


def _split(outs: dict, batch: list) -> list:
    total = sum(p.rows for p in batch)
    for name, v in outs.items():
        if v.ndim == 0 or v.shape[0] != total:
            raise RuntimeError(f"output {name!r} has shape {v.shape}, not {total} rows: the model does not "
                               "batch along dim 0; set max_batch_size 0 in its config.json")
    parts, at = [], 0
    for p in batch:
        parts.append({n: v[at:at + p.rows] for n, v in outs.items()})
        at += p.rows
    return parts


def _complete(p: Pending, outputs, error) -> None:
    try:
        p.done(outputs, error)
    except Exception:  # a front end's callback must not kill the instance
        import logging
        logging.getLogger("engine.serve").exception("request completion callback failed")
