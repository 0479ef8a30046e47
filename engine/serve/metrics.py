"""The server's Prometheus metrics (prometheus-client), one registry per server so several
servers in one process (tests, embedders) keep separate counts.

Per model and version: requests and failures, latency histograms for the time queued, the
time computing (the batch the request rode in) and the total (received to answered), the
batch sizes run, requests in flight, the load time and the state. Histograms are observed on
the instance threads, per batch, so the event loops only count.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the HTTP front)

STATES = ["loading", "ready", "unloading", "unavailable", "failed"]
_LATENCY_BUCKETS = (25e-6, 50e-6, 100e-6, 200e-6, 400e-6, 800e-6, 1.6e-3, 3.2e-3, 6.4e-3, 12.8e-3,
                    25.6e-3, 51.2e-3, 0.1024, 0.2048, 0.4096, 0.8192, 1.6384, 3.2768, float("inf"))
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, float("inf"))
_LABELS = ("model", "version")


class ServerMetrics:
    def __init__(self):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("engine_requests", "Inference requests received", _LABELS, registry=r)
        self.failures = Counter("engine_request_failures", "Inference requests that failed",
                                _LABELS + ("reason",), registry=r)
        self.queue = Histogram("engine_request_queue_seconds", "Time a request waited for a batch",
                               _LABELS, buckets=_LATENCY_BUCKETS, registry=r)
        self.compute = Histogram("engine_request_compute_seconds",
                                 "Time computing the batch a request rode in", _LABELS,
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.total = Histogram("engine_request_seconds", "Time from receipt to answer", _LABELS,
                               buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("engine_batch_size", "Requests per batch run", _LABELS,
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.inflight = Gauge("engine_requests_in_flight", "Requests received and not yet answered",
                              _LABELS, registry=r)
        self.load_seconds = Gauge("engine_model_load_seconds", "Time to load and warm a version",
                                  _LABELS, registry=r)
        self.state = Enum("engine_model_state", "State of a model version", _LABELS, states=STATES,
                          registry=r)

    def for_version(self, model: str, version: int) -> "VersionMetrics":
        return VersionMetrics(self, model, str(version))

    def set_state(self, model: str, version: int, state: str) -> None:
        self.state.labels(model, str(version)).state(state)

    def failure(self, model: str, version, reason: str) -> None:
        self.failures.labels(model, str(version or ""), reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class VersionMetrics:
    """The label children of one version, bound once (a labels() lookup costs more than the
    observation)."""

    def __init__(self, m: ServerMetrics, model: str, version: str):
        self._m, self._model, self._version = m, model, version
        self.requests = m.requests.labels(model, version)
        self.queue = m.queue.labels(model, version)
        self.compute = m.compute.labels(model, version)
        self.total = m.total.labels(model, version)
        self.batch_size = m.batch_size.labels(model, version)
        self.inflight = m.inflight.labels(model, version)

    def failure(self, reason: str) -> None:
        self._m.failures.labels(self._model, self._version, reason).inc()

    def on_batch(self, batch: list, t0: float, t1: float, error) -> None:
        """The batcher's callback, on the instance thread."""
        self.batch_size.observe(len(batch))
        compute = t1 - t0
        for p in batch:
            self.queue.observe(t0 - p.t_enqueue)
            self.compute.observe(compute)
