"""The server's Prometheus metrics (prometheus-client), one registry per server so several
servers in one process (tests, embedders) keep separate counts.

Per model and version: requests and failures, latency histograms for the time queued, the
time computing (the batch the request rode in) and the total (received to answered), the
batch sizes run, requests in flight, the load time and the state. Request metrics are
recorded on the instance threads, once per batch, in plain counters exported by a collector
at scrape time: the front ends' threads only count a request in (~0.1 us, where a
prometheus_client observation costs ~2 us and a request made ~15 of them).
"""

from __future__ import annotations

import itertools
import threading
import time
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the HTTP front)

STATES = ["loading", "ready", "unloading", "unavailable", "failed"]
_LATENCY_BUCKETS = (25e-6, 50e-6, 100e-6, 200e-6, 400e-6, 800e-6, 1.6e-3, 3.2e-3, 6.4e-3, 12.8e-3,
                    25.6e-3, 51.2e-3, 0.1024, 0.2048, 0.4096, 0.8192, 1.6384, 3.2768, float("inf"))
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, float("inf"))
_LABELS = ("model", "version")


class ServerMetrics:
    def __init__(self):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.failures = Counter("engine_request_failures", "Inference requests that failed",
                                _LABELS + ("reason",), registry=r)
        self.load_seconds = Gauge("engine_model_load_seconds", "Time to load and warm a version",
                                  _LABELS, registry=r)
        self.state = Enum("engine_model_state", "State of a model version", _LABELS, states=STATES,
                          registry=r)
        self._versions: dict = {}  # (model, version) -> VersionMetrics, kept after unload (counters persist)
        self._lock = threading.Lock()
        r.register(_VersionCollector(self))

    def for_version(self, model: str, version: int) -> "VersionMetrics":
        key = (model, str(version))
        with self._lock:
            vm = self._versions.get(key)
            if vm is None:
                vm = self._versions[key] = VersionMetrics(self, model, str(version))
            return vm

    def versions(self) -> list:
        with self._lock:
            return list(self._versions.values())

    def set_state(self, model: str, version: int, state: str) -> None:
        self.state.labels(model, str(version)).state(state)

    def failure(self, model: str, version, reason: str) -> None:
        self.failures.labels(model, str(version or ""), reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class FastHistogram:
    """Bucket counts and a sum, updated under its owner's lock: a bisect and two adds, where
    prometheus_client's Histogram.observe costs a lock and a Python loop per bucket."""
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds):
        self.bounds = list(bounds)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def add(self, v: float) -> None:
        self.counts[bisect_left(self.bounds, v)] += 1
        self.sum += v


class VersionMetrics:
    """One version's request metrics. The front end's thread only counts a request in
    (`accepted`, an atomic itertools counter); everything else is recorded once per batch on the
    instance thread, under one lock, and turned into Prometheus families at scrape time."""

    def __init__(self, m: ServerMetrics, model: str, version: str):
        self._m, self._model, self._version = m, model, version
        self._accepted = itertools.count()
        self._lock = threading.Lock()
        self.completed = 0
        self.queue = FastHistogram(_LATENCY_BUCKETS)
        self.compute = FastHistogram(_LATENCY_BUCKETS)
        self.total = FastHistogram(_LATENCY_BUCKETS)
        self.batch_size = FastHistogram(_BATCH_BUCKETS)

    def accept(self) -> None:
        next(self._accepted)

    def abandon(self) -> None:
        """An accepted request that was never queued (its version closed): not in flight."""
        with self._lock:
            self.completed += 1

    @property
    def accepted(self) -> int:
        # itertools.count's repr holds the next value; reading it does not advance it
        return int(repr(self._accepted)[6:-1])

    @property
    def inflight(self) -> int:
        return self.accepted - self.completed

    def failure(self, reason: str) -> None:
        self._m.failures.labels(self._model, self._version, reason).inc()

    def on_batch(self, batch: list, t0: float, t1: float, error) -> None:
        """The batcher's callback, on the instance thread, after the batch's requests were answered."""
        compute = t1 - t0
        with self._lock:
            self.completed += len(batch)
            self.batch_size.add(len(batch))
            for p in batch:
                self.queue.add(t0 - p.t_enqueue)
                self.compute.add(compute)
                self.total.add(time.perf_counter() - p.t_received)
        if error is not None:
            self._m.failures.labels(self._model, self._version, "compute").inc(len(batch))

    def snapshot(self) -> dict:
        """The numbers as plain data (for the dashboard and tests)."""
        with self._lock:
            return {"model": self._model, "version": self._version, "requests": self.accepted,
                    "completed": self.completed, "in_flight": self.inflight,
                    **{k: (list(h.counts), h.sum) for k, h in
                       (("queue", self.queue), ("compute", self.compute), ("total", self.total),
                        ("batch_size", self.batch_size))}}


class _VersionCollector:
    """Exports every version's VersionMetrics at scrape time."""

    def __init__(self, m: ServerMetrics):
        self._m = m

    def describe(self):
        return []

    def collect(self):
        versions = self._m.versions()
        requests = CounterMetricFamily("engine_requests", "Inference requests accepted", labels=_LABELS)
        inflight = GaugeMetricFamily("engine_requests_in_flight", "Requests accepted and not yet answered",
                                     labels=_LABELS)
        hists = {k: [] for k in ("queue", "compute", "total", "batch_size")}
        for vm in versions:
            labels = [vm._model, vm._version]
            with vm._lock:
                requests.add_metric(labels, vm.accepted)
                inflight.add_metric(labels, vm.inflight)
                for k in hists:
                    hists[k].append((labels, getattr(vm, k)))
        yield requests
        yield inflight
        for key, (name, doc) in _HISTOGRAMS.items():
            fam = HistogramMetricFamily(name, doc, labels=_LABELS)
            for labels, h in hists[key]:
                cum, buckets = 0, []
                for bound, n in zip(h.bounds, h.counts):
                    cum += n
                    buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cum))
                fam.add_metric(labels, buckets, h.sum)
            yield fam


_HISTOGRAMS = {
    "queue": ("engine_request_queue_seconds", "Time a request waited for a batch"),
    "compute": ("engine_request_compute_seconds", "Time computing the batch a request rode in"),
    "total": ("engine_request_seconds", "Time from receipt to answer"),
    "batch_size": ("engine_batch_size", "Requests per batch run"),
}
