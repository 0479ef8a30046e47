"""The operator's dashboard `engine serve` shows at `/`: static files plus two JSON routes.

    GET /                              the page (dashboard/index.html); no token needed
    GET /dashboard/<file>              its scripts, styles and vendored uPlot; no token needed
    GET /dashboard/api/models          every model and version: state and reason, config, inputs/outputs,
                                       file sha256 and size, the training history saved by fit
    GET /dashboard/api/stats           each version's cumulative request counters and histogram bucket
                                       counts (the numbers /metrics exports), the bucket bounds, failures

The API routes need the bearer token when the server has one; the page holds no data, so it
loads without it and asks for the token. Counters are cumulative on purpose: the browser turns
the deltas between two polls into rates and percentiles, so the server keeps no time series and
any number of open pages cost only their polls. Actions (load, unload, try-it) use the existing
v2 routes. Static files are a fixed table read once from this package: a path that is not in it
is a 404, so no request path ever reaches the file system.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

from ..errors import EngineError
from . import kserve
from .config import read_config
from .metrics import _BATCH_BUCKETS, _LATENCY_BUCKETS
from .repository import scan

STATIC_DIR = Path(__file__).with_name("dashboard")
API_PREFIX = "/dashboard/api/"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
          ".txt": "text/plain; charset=utf-8"}
# The page runs only its own files: no inline script, nothing from elsewhere. uPlot sets
# element styles from script, which style-src 'unsafe-inline' allows.
_PAGE_HEADERS = ((b"content-security-policy", (b"default-src 'self'; img-src 'self' data: blob:; "
                                               b"style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")),
                 (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-cache"),
                 (b"referrer-policy", b"no-referrer"))
_JSON_HEADERS = ((b"content-type", b"application/json"), (b"cache-control", b"no-store"))


class DashboardError(EngineError):
    """A dashboard route that does not exist (404)."""
    status = 404


def is_public(path: str) -> bool:
    """The page and its files load without the token; its API does not."""
    return path == "/" or (path.startswith("/dashboard/") and not path.startswith(API_PREFIX))


class Dashboard:
    """Answers the dashboard's routes for one server.

    >>> Dashboard(manager).route("/dashboard/api/models")[0]
    200
    """

    def __init__(self, manager):
        self.manager = manager
        self._files: Optional[dict] = None

    def route(self, path: str) -> tuple:
        """(status, body, headers) for a GET of `path` (`/` or under `/dashboard/`)."""
        if path.startswith(API_PREFIX):
            what = path[len(API_PREFIX):]
            if what == "models":
                return 200, kserve.dumps(models_state(self.manager)), list(_JSON_HEADERS)
            if what == "stats":
                return 200, kserve.dumps(stats(self.manager.metrics)), list(_JSON_HEADERS)
            raise DashboardError(f"no dashboard API route {path}; there are {API_PREFIX}models and "
                                 f"{API_PREFIX}stats")
        name = "index.html" if path in ("/", "/dashboard/") else path[len("/dashboard/"):]
        found = self._static().get(name)
        if found is None:
            raise DashboardError(f"no dashboard file {path}")
        body, ctype = found
        return 200, body, [(b"content-type", ctype.encode()), *_PAGE_HEADERS]

    def _static(self) -> dict:
        if self._files is None:  # read once: a few hundred kB, and no path from a request is ever opened
            files = {}
            for p in sorted(STATIC_DIR.rglob("*")):
                ctype = _TYPES.get(p.suffix)
                if p.is_file() and ctype is not None:
                    files[p.relative_to(STATIC_DIR).as_posix()] = (p.read_bytes(), ctype)
            self._files = files
        return self._files


def models_state(manager) -> dict:
    """Every model the manager knows (and those in the repository it never loaded), their
    versions with state and reason, and for the ready ones what they serve (signature, file
    hash and size, the History saved by fit)."""
    models: dict = {}
    for e in manager.index():
        m = models.setdefault(e["name"], {"name": e["name"], "error": "", "config": None, "versions": []})
        if e["version"] == "":  # the model itself failed (config.json unreadable)
            m["error"] = e["reason"]
            continue
        v = {"version": int(e["version"]), "state": e["state"], "reason": e["reason"],
             "sha256": e.get("sha256", ""), "size": e.get("size", 0), "load_seconds": e.get("load_seconds")}
        m["versions"].append(v)
    for name, entry in scan(manager.repository).items():  # on disk, never loaded: Load offers it
        if name not in models:
            models[name] = {"name": name, "error": entry.config_error or "", "config": None, "versions": [
                {"version": v, "state": "UNAVAILABLE", "reason": "not loaded", "sha256": "", "size": 0,
                 "load_seconds": None} for v in sorted(entry.versions)]}
    for name, m in models.items():
        ready = {sv.version: sv for sv in manager.ready_versions(name)}
        for v in m["versions"]:
            sv = ready.get(v["version"])
            if sv is not None:
                v.update(_served(sv))
                m["config"] = sv.config.raw
        if m["config"] is None and not m["error"]:
            m["config"] = _config_on_disk(manager.repository / name)
    return {"time": time.time(), "models": list(models.values())}


def _served(sv) -> dict:
    meta = sv.metadata()
    return {"platform": meta["platform"], "inputs": meta["inputs"], "outputs": meta["outputs"],
            "max_batch_size": meta["max_batch_size"], "sha256": sv.sha256, "size": sv.size,
            "file": sv.path.name, "loaded_at": sv.loaded_at, "history": training_history(sv.model)}


def training_history(model) -> Optional[dict]:
    """The Keras-style History a model trained with fit carries ({metric: [per epoch]}), or None."""
    meta = getattr(model, "metadata", None) or {}
    training = meta.get("training") if isinstance(meta, dict) else None
    history = training.get("history") if isinstance(training, dict) else None
    if not isinstance(history, dict) or not history:
        return None
    out = {}
    for k, values in history.items():
        try:
            out[str(k)] = [float(x) if math.isfinite(float(x)) else None for x in values]
        except (TypeError, ValueError):  # a custom entry that is not a number series: not a curve
            continue
    return out or None


def _config_on_disk(folder: Path) -> Optional[dict]:
    try:
        return read_config(folder).raw
    except EngineError:
        return None


def stats(metrics) -> dict:
    """Cumulative counters and bucket counts per version, and failures by reason, at one time."""
    versions = []
    for vm in metrics.versions():
        s = vm.snapshot()
        for k in ("queue", "compute", "total", "batch_size"):
            counts, total = s[k]
            s[k] = {"counts": counts, "sum": total}
        versions.append(s)
    failures = []
    for family in metrics.failures.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                failures.append({**sample.labels, "count": sample.value})
    return {"time": time.time(), "latency_buckets": _bounds(_LATENCY_BUCKETS),
            "batch_buckets": _bounds(_BATCH_BUCKETS), "versions": versions, "failures": failures}


def _bounds(bounds) -> list:
    return [None if math.isinf(b) else b for b in bounds]  # JSON has no infinity: the last bucket is open
