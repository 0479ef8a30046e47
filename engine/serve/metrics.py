"""The server's Prometheus metrics (prometheus-client), one registry per server so several
servers in one process (tests, embedders) keep separate counts.

Per model and version: requests and failures, latency histograms for the time queued, the
time computing (the batch the request rode in) and the total (received to answered), the
batch sizes run, requests in flight, the load time and the state. Per language model: time to
first token and inter-token latency histograms, prompt and generated token counters (tokens/s
is rate() of them), finished generations by reason, running and waiting sequences and KV-cache
blocks used / in the pool (read from the scheduler at scrape time). Request metrics are
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
_TOKEN_BUCKETS = (1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, float("inf"))
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
        self._lms: dict = {}       # (model, version) -> LanguageModelMetrics, likewise
        self._lock = threading.Lock()
        r.register(_VersionCollector(self))

    def for_version(self, model: str, version: int) -> "VersionMetrics":
        key = (model, str(version))
        with self._lock:
            vm = self._versions.get(key)
            if vm is None:
                vm = self._versions[key] = VersionMetrics(self, model, str(version))
            return vm

    def for_language_model(self, model: str, version: int) -> "LanguageModelMetrics":
        key = (model, str(version))
        with self._lock:
            lm = self._lms.get(key)
            if lm is None:
                lm = self._lms[key] = LanguageModelMetrics(model, str(version))
            return lm

    def language_models(self) -> list:
        with self._lock:
            return list(self._lms.values())

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
        yield from _language_model_families(self._m.language_models())
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


class LanguageModelMetrics:
    """One language model's generation metrics: the scheduler's Observer (its thread records
    tokens and latencies under a lock), and its live gauges read at scrape time."""

    def __init__(self, model: str, version: str):
        self.labels = [model, version]
        self._lock = threading.Lock()
        self.prompt = 0
        self.generated = 0
        self.finished_by: dict = {}
        self.ttft = FastHistogram(_TOKEN_BUCKETS)
        self.itl = FastHistogram(_TOKEN_BUCKETS)
        self._scheduler = None

    def attach(self, scheduler) -> None:
        self._scheduler = scheduler

    def detach(self) -> None:
        self._scheduler = None

    # the scheduler's Observer hooks
    def prompt_tokens(self, n: int) -> None:
        with self._lock:
            self.prompt += n

    def generated_tokens(self, n: int) -> None:
        with self._lock:
            self.generated += n

    def first_token(self, seconds: float) -> None:
        with self._lock:
            self.ttft.add(seconds)

    def inter_token(self, seconds: float) -> None:
        with self._lock:
            self.itl.add(seconds)

    def finished(self, reason: str) -> None:
        with self._lock:
            self.finished_by[reason] = self.finished_by.get(reason, 0) + 1

    def gauges(self) -> dict:
        s = self._scheduler
        if s is None:
            return {"running": 0, "waiting": 0, "kv_used": 0, "kv_total": 0}
        used, total = s.kv_usage()
        return {"running": s.running, "waiting": s.waiting, "kv_used": used, "kv_total": total}

    def snapshot(self) -> dict:
        with self._lock:
            return {"prompt_tokens": self.prompt, "generated_tokens": self.generated,
                    "finished": dict(self.finished_by), "ttft": (list(self.ttft.counts), self.ttft.sum),
                    "itl": (list(self.itl.counts), self.itl.sum), **self.gauges()}


def _language_model_families(lms: list):
    if not lms:
        return
    fams = {
        "prompt": CounterMetricFamily("engine_lm_prompt_tokens", "Prompt tokens prefilled", labels=_LABELS),
        "generated": CounterMetricFamily("engine_lm_generated_tokens", "Tokens generated", labels=_LABELS),
        "running": GaugeMetricFamily("engine_lm_sequences_running", "Generations being decoded", labels=_LABELS),
        "waiting": GaugeMetricFamily("engine_lm_sequences_waiting", "Generations queued for a slot", labels=_LABELS),
        "kv_used": GaugeMetricFamily("engine_lm_kv_blocks_used", "KV-cache blocks in use", labels=_LABELS),
        "kv_total": GaugeMetricFamily("engine_lm_kv_blocks_total", "KV-cache blocks in the pool", labels=_LABELS),
    }
    finished = CounterMetricFamily("engine_lm_generations_finished", "Generations ended, by finish reason",
                                   labels=_LABELS + ("reason",))
    ttft = HistogramMetricFamily("engine_lm_time_to_first_token_seconds", "Submit to first generated token",
                                 labels=_LABELS)
    itl = HistogramMetricFamily("engine_lm_inter_token_seconds", "Time between a generation's tokens",
                                labels=_LABELS)
    for lm in lms:
        gauges = lm.gauges()
        with lm._lock:
            fams["prompt"].add_metric(lm.labels, lm.prompt)
            fams["generated"].add_metric(lm.labels, lm.generated)
            for reason, n in sorted(lm.finished_by.items()):
                finished.add_metric(lm.labels + [reason], n)
            for fam, h in ((ttft, lm.ttft), (itl, lm.itl)):
                fam.add_metric(lm.labels, _buckets(h), h.sum)
        for key in ("running", "waiting", "kv_used", "kv_total"):
            fams[key].add_metric(lm.labels, gauges[key])
    yield from fams.values()
    yield from (finished, ttft, itl)


def _buckets(h: FastHistogram) -> list:
    cum, out = 0, []
    for bound, n in zip(h.bounds, h.counts):
        cum += n
        out.append(("+Inf" if bound == float("inf") else repr(float(bound)), cum))
    return out
