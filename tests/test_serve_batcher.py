"""The dynamic batcher on its own: stacking, signatures never mixed, preferred sizes, queue
delay, parallel instances, failures, draining on close."""

import threading
import time

import numpy as np
import pytest

from engine.serve.batcher import Batcher, Pending


def _collect(n):
    results, errors, left = {}, {}, threading.Semaphore(0)

    def make(i):
        def done(outputs, error):
            (errors if error is not None else results)[i] = error if error is not None else outputs
            left.release()
        return done

    def wait(timeout=10):
        for _ in range(n):
            assert left.acquire(timeout=timeout), "a request was never completed"
    return results, errors, make, wait


class Recorder:
    """A model call: doubles 'x' (any shape) after `delay`, recording batch sizes and overlap."""

    def __init__(self, delay=0.0):
        self.delay, self.batches, self.active, self.most_active = delay, [], 0, 0
        self.lock = threading.Lock()

    def __call__(self, feeds):
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.batches.append(len(feeds["x"]))
        time.sleep(self.delay)
        with self.lock:
            self.active -= 1
        return {"y": feeds["x"] * 2}


def _pending(x, done):
    return Pending({"x": x}, len(x), (x.shape[1:],), done)


@pytest.mark.parametrize("inline", [False, True])
def test_stacks_requests_and_splits_results(inline):
    run = Recorder(delay=0.005)
    b = Batcher(run, max_batch_size=64)
    n = 64
    xs = [np.full((1 + i % 3, 4), i, np.float32) for i in range(n)]
    results, errors, make, wait = _collect(n)
    threads = [threading.Thread(target=(b.submit_inline if inline else b.submit), args=(_pending(x, make(i)),))
               for i, x in enumerate(xs)]
    for t in threads:
        t.start()
    wait()
    for t in threads:
        t.join()
    assert not errors
    for i, x in enumerate(xs):
        np.testing.assert_array_equal(results[i]["y"], x * 2)
    assert max(run.batches) > 1, "concurrent requests were never stacked"
    assert sum(run.batches) == sum(len(x) for x in xs)
    assert b.close(5)


def test_signatures_are_never_mixed():
    seen = []

    def run(feeds):
        seen.append(feeds["x"].shape)
        time.sleep(0.002)
        return {"y": feeds["x"] + 1}

    b = Batcher(run, max_batch_size=32)
    results, errors, make, wait = _collect(40)
    xs = [np.ones((1, 3 + i % 2), np.float32) * i for i in range(40)]
    for i, x in enumerate(xs):
        b.submit(_pending(x, make(i)))
    wait()
    assert not errors
    for i, x in enumerate(xs):
        np.testing.assert_array_equal(results[i]["y"], x + 1)
    assert {s[1] for s in seen} == {3, 4}  # each batch holds one width only (concatenate would fail otherwise)
    b.close(5)


def test_max_batch_size_bounds_rows():
    run = Recorder(delay=0.01)
    b = Batcher(run, max_batch_size=5)
    results, errors, make, wait = _collect(30)
    for i in range(30):
        b.submit(_pending(np.ones((2, 2), np.float32), make(i)))
    wait()
    assert not errors and max(run.batches) <= 5
    b.close(5)


def test_queue_delay_forms_preferred_batches():
    run = Recorder()
    b = Batcher(run, max_batch_size=16, preferred_batch_sizes=(8,), max_queue_delay_us=200_000)
    results, errors, make, wait = _collect(8)
    for i in range(8):  # arrive one by one, well within the delay
        b.submit(_pending(np.ones((1, 2), np.float32), make(i)))
        time.sleep(0.002)
    wait()
    assert run.batches == [8]
    b.close(5)


def test_queue_delay_expires_with_a_partial_batch():
    run = Recorder()
    b = Batcher(run, max_batch_size=16, preferred_batch_sizes=(8,), max_queue_delay_us=20_000)
    results, errors, make, wait = _collect(3)
    t0 = time.perf_counter()
    for i in range(3):
        b.submit(_pending(np.ones((1, 2), np.float32), make(i)))
    wait()
    assert run.batches == [3] and time.perf_counter() - t0 < 1.0
    b.close(5)


def test_no_batching_runs_each_request_alone():
    run = Recorder(delay=0.002)
    b = Batcher(run, max_batch_size=0)
    results, errors, make, wait = _collect(10)
    for i in range(10):
        b.submit(_pending(np.ones((1, 2), np.float32), make(i)))
    wait()
    assert run.batches == [1] * 10
    b.close(5)


def test_instances_run_batches_in_parallel():
    run = Recorder(delay=0.05)
    b = Batcher(run, max_batch_size=1, instances=3, serial_threads=True)
    results, errors, make, wait = _collect(6)
    for i in range(6):
        b.submit(_pending(np.ones((1, 2), np.float32), make(i)))
    wait()
    assert run.most_active == 3
    b.close(5)


def test_failed_batch_reports_to_every_request_and_batcher_survives():
    calls = []

    def run(feeds):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("kernel exploded")
        return {"y": feeds["x"]}

    b = Batcher(run, max_batch_size=8)
    results, errors, make, wait = _collect(1)
    b.submit(_pending(np.ones((1, 2), np.float32), make(0)))
    wait()
    assert "kernel exploded" in str(errors[0])
    results, errors, make, wait = _collect(1)
    b.submit(_pending(np.ones((1, 2), np.float32), make(0)))
    wait()
    assert not errors and 0 in results
    b.close(5)


def test_output_without_batch_dim_is_an_error_not_a_wrong_split():
    def slow(feeds):
        time.sleep(0.05)
        return {"y": np.zeros(5, np.float32)}

    b = Batcher(slow, max_batch_size=8)
    results, errors, make, wait = _collect(3)
    for i in range(3):
        b.submit(_pending(np.ones((1, 2), np.float32), make(i)))
    wait()
    batched = [e for e in errors.values() if "max_batch_size 0" in str(e)]
    assert batched, "a batch whose output lacks the batch dim must fail, not be split wrongly"
    b.close(5)


def test_close_drains_queued_requests_then_refuses():
    run = Recorder(delay=0.01)
    b = Batcher(run, max_batch_size=1)
    results, errors, make, wait = _collect(10)
    for i in range(10):
        b.submit(_pending(np.ones((1, 2), np.float32), make(i)))
    assert b.close(10)
    wait(0.1)  # all answered by the time close returns
    assert len(results) == 10 and not errors
    assert not b.submit(_pending(np.ones((1, 2), np.float32), make(0)))
    assert not b.submit_inline(_pending(np.ones((1, 2), np.float32), make(0)))
