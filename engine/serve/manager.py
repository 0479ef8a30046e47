"""The model manager: which versions are loaded, which serve, and swapping them safely.

Routing is a dict {model: versions ready, oldest first} that is replaced whole, never edited,
so a request reads one consistent table without a lock. A new or changed version is loaded and
warmed off to the side, then published in one assignment; only then are replaced or removed
versions taken out of the table, and their batchers drain (finish what they queued) before
they unload. A request that picked a version just as it closed is routed again, so a reload
fails no request. A version that fails to load is reported (state `failed`, with the reason)
and whatever served before keeps serving.

Control modes: "poll" (scan the repository every poll_interval seconds), "explicit" (load at
start, then only the repository API changes anything), "none" (load nothing at start).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Optional

from ..errors import EngineError
from .metrics import ServerMetrics
from .repository import ModelEntry, VersionFiles, scan, scan_model, valid_model_name
from .served import ServedVersion
from .served_lm import ServedLanguageModel, is_language_model
from .tensors import NotFoundError, UnavailableError

log = logging.getLogger("engine.serve")
CONTROL_MODES = ("poll", "explicit", "none")


@dataclass(frozen=True)
class VersionStatus:
    model: str
    version: int
    state: str                      # loading | ready | unloading | unavailable | failed
    reason: str = ""
    path: str = ""
    sha256: str = ""
    size: int = 0
    load_seconds: float = 0.0
    fingerprint: tuple = ()

    def as_json(self) -> dict:
        d = {"name": self.model, "version": str(self.version), "state": self.state.upper(), "reason": self.reason}
        if self.sha256:
            d.update(sha256=self.sha256, size=self.size, load_seconds=round(self.load_seconds, 4))
        return d


class ModelManager:
    def __init__(self, repository, *, control: str = "poll", poll_interval: float = 2.0,
                 metrics: Optional[ServerMetrics] = None, drain_timeout: float = 30.0,
                 lm_loader: Optional[Callable] = None):
        if control not in CONTROL_MODES:
            raise EngineError(f"serve: control must be one of {CONTROL_MODES}, got {control!r}")
        self.repository = Path(repository)
        if not self.repository.is_dir():
            raise EngineError(f"serve: model repository {self.repository} is not a folder")
        self.control = control
        self.poll_interval = poll_interval
        self.metrics = metrics if metrics is not None else ServerMetrics()
        self.drain_timeout = drain_timeout
        self.lm_loader = lm_loader           # engine.load for language models unless told (tests)
        self._routes: dict = {}              # name -> tuple of ServedVersion, ascending version
        self._status: dict = {}              # (name, version) -> VersionStatus
        self._model_errors: dict = {}        # name -> reason (config.json unreadable)
        self._unloaded: set = set()          # unloaded through the API: the poller leaves them
        self._sync_lock = threading.RLock()  # one reconciliation at a time
        self._stop = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        if self.control != "none":
            self.sync()
        if self.control == "poll":
            self._watcher = threading.Thread(target=self._watch, name="engine-serve-watch", daemon=True)
            self._watcher.start()

    def close(self, timeout: Optional[float] = None) -> None:
        """Stop watching, then drain and unload every version."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        with self._sync_lock:
            self._closed = True
            routes, self._routes = self._routes, {}
        deadline = time.monotonic() + (self.drain_timeout if timeout is None else timeout)
        for versions in routes.values():
            for sv in versions:
                sv.close(max(0.0, deadline - time.monotonic()))

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.sync()
            except Exception:  # the watcher must outlive any one bad scan
                log.exception("repository scan failed")

    # -- reconciliation ---------------------------------------------------------------

    def sync(self) -> None:
        """Bring what is served in line with the repository (all models but API-unloaded ones)."""
        with self._sync_lock:
            entries = scan(self.repository)
            for name in list(self._routes) + [m for (m, _) in self._status]:
                if name not in entries and name not in self._unloaded:
                    self._retire_model(name, "removed from the repository")
            for name, entry in entries.items():
                if name not in self._unloaded:
                    self._reconcile(entry)

    def load_model(self, name: str) -> None:
        """The repository API's load: (re)load a model's versions now, even one unloaded
        before. Raises if the model is missing or no wanted version could be loaded."""
        if not valid_model_name(name):
            raise NotFoundError(f"no model named {name!r} in the repository")
        folder = self.repository / name
        if not folder.is_dir():
            raise NotFoundError(f"no model named {name!r} in the repository {self.repository}")
        with self._sync_lock:
            self._unloaded.discard(name)
            failures = self._reconcile(scan_model(folder))
            if failures:
                raise EngineError(f"model '{name}': " + "; ".join(failures))
            if not self._routes.get(name):
                reasons = [s.reason for (m, _), s in self._status.items() if m == name and s.reason]
                why = "; ".join(reasons) or "no versions"
                raise EngineError(f"model '{name}' has no version that loaded: {why}")

    def unload_model(self, name: str) -> None:
        """The repository API's unload: drain and unload every version; the poller leaves
        the model alone until it is loaded again."""
        with self._sync_lock:
            if name not in self._routes and not any(m == name for (m, _) in self._status):
                raise NotFoundError(f"no model named {name!r} is loaded")
            self._unloaded.add(name)
            self._retire_model(name, "unloaded by request")

    def _reconcile(self, entry: ModelEntry) -> list:
        """Load what the entry wants, retire what it no longer has; the load failures."""
        name = entry.name
        if entry.config is None:  # keep serving what we have; say why nothing changes
            self._model_errors[name] = entry.config_error
            log.error("model %s: %s", name, entry.config_error)
            return [entry.config_error]
        self._model_errors.pop(name, None)
        present = {v: f for v, f in entry.versions.items()}
        for v, f in present.items():
            if isinstance(f, str):
                self._set_status(VersionStatus(name, v, "failed", f))
        loadable = [v for v, f in present.items() if isinstance(f, VersionFiles)]
        wanted = entry.config.selects(loadable)
        serving = {sv.version: sv for sv in self._routes.get(name, ())}
        failures = []
        for v in wanted:
            files = present[v]
            fp = files.fingerprint + entry.config_fingerprint
            old = self._status.get((name, v))
            if v in serving and old is not None and old.fingerprint == fp:
                continue
            if old is not None and old.fingerprint == fp and (old.state == "failed" or v in serving):
                continue  # same bytes failed before: do not retry on every poll
            why = self._load_version(name, v, files, entry, fp)
            if why:
                failures.append(f"version {v}: {why}")
        # Retire only against what is ready now: a wanted version that failed to load leaves
        # the one it would have replaced serving.
        ready_now = {sv.version for sv in self._routes.get(name, ())}
        keep = entry.config.selects([v for v in loadable if v in ready_now])
        for v, sv in serving.items():
            if v not in keep:
                reason = ("removed from the repository" if v not in present
                          else "no longer selected by the version policy")
                self._retire(name, [sv], reason)
        for (m, v), st in list(self._status.items()):
            if m == name and v not in present and st.state == "failed":
                del self._status[(m, v)]
        return failures

    def _load_version(self, name: str, v: int, files: VersionFiles, entry: ModelEntry, fp: tuple) -> Optional[str]:
        """Load, warm and publish one version; the reason it failed, or None."""
        prev = self._status.get((name, v))
        if prev is None or prev.state != "ready":
            self._set_status(VersionStatus(name, v, "loading", path=str(files.path), fingerprint=fp))
        t0 = time.perf_counter()
        try:
            if is_language_model(files.path):
                sv = ServedLanguageModel(name, v, files, entry.config, self.metrics, self.lm_loader)
            else:
                sv = ServedVersion(name, v, files, entry.config, self.metrics)
        except Exception as e:  # any failure to load is reported; the previous version serves on
            reason = str(e) if isinstance(e, EngineError) else f"{type(e).__name__}: {e}"
            log.error("model %s version %d failed to load: %s", name, v, reason)
            if any(s.version == v for s in self._routes.get(name, ())) and prev is not None:
                # the old bytes of this version are still loaded: they keep serving, and say so
                log.error("model %s version %d: the previously loaded file keeps serving", name, v)
                self._set_status(replace(prev, reason=f"reload failed, the previous file serves: {reason}",
                                         fingerprint=fp))
            else:
                self._set_status(VersionStatus(name, v, "failed", reason, str(files.path), fingerprint=fp))
            return reason
        self.metrics.load_seconds.labels(name, str(v)).set(time.perf_counter() - t0)
        if self._closed:
            sv.close()
            return None
        old = [s for s in self._routes.get(name, ()) if s.version == v]
        versions = tuple(sorted([s for s in self._routes.get(name, ()) if s.version != v] + [sv],
                                key=lambda s: s.version))
        self._publish(name, versions)
        self._set_status(VersionStatus(name, v, "ready", "", str(files.path), sv.sha256, sv.size,
                                       sv.load_seconds, fp))
        log.info("model %s version %d ready (%.0f ms, sha256 %s)", name, v, sv.load_seconds * 1e3, sv.sha256[:12])
        if old:
            self._drain(old)
        return None

    def _retire_model(self, name: str, reason: str) -> None:
        self._retire(name, list(self._routes.get(name, ())), reason)
        for key in [k for k in self._status if k[0] == name]:
            st = self._status[key]
            if st.state != "unavailable":
                self._set_status(replace(st, state="unavailable", reason=reason))
        self._model_errors.pop(name, None)

    def _retire(self, name: str, gone: list, reason: str) -> None:
        """Take versions out of routing, then drain and unload them."""
        if not gone:
            return
        keep = tuple(s for s in self._routes.get(name, ()) if s not in gone)
        self._publish(name, keep)
        for sv in gone:
            st = self._status.get((name, sv.version))
            if st is not None and st.sha256 == sv.sha256:
                self._set_status(replace(st, state="unloading", reason=reason))
        self._drain(gone)
        for sv in gone:
            st = self._status.get((name, sv.version))
            if st is not None and st.state == "unloading":
                self._set_status(replace(st, state="unavailable", reason=reason))
            log.info("model %s version %d unloaded (%s)", name, sv.version, reason)

    def _drain(self, versions: list) -> None:
        for sv in versions:
            if not sv.close(self.drain_timeout):
                log.error("model %s version %d: requests still running after %.0f s", sv.name, sv.version,
                          self.drain_timeout)

    def _publish(self, name: str, versions: tuple) -> None:
        routes = dict(self._routes)
        if versions:
            routes[name] = versions
        else:
            routes.pop(name, None)
        self._routes = routes  # one assignment: readers see the old table or the new one

    def _set_status(self, st: VersionStatus) -> None:
        self._status[(st.model, st.version)] = st
        self.metrics.set_state(st.model, st.version, st.state)

    # -- requests ---------------------------------------------------------------------

    def resolve(self, name: str, version: Optional[int] = None) -> ServedVersion:
        """The version that serves a request: the one named, or the newest ready one."""
        versions = self._routes.get(name)
        if not versions:
            if self._closed:
                raise UnavailableError("the server is stopping")
            if name in self._status_models():
                raise UnavailableError(f"model '{name}' has no ready version ({self._why(name)})")
            raise NotFoundError(f"unknown model '{name}'")
        if version is None:
            return versions[-1]
        for sv in versions:
            if sv.version == version:
                return sv
        st = self._status.get((name, version))
        if st is not None:
            raise UnavailableError(f"model '{name}' version {version} is {st.state}" +
                                   (f": {st.reason}" if st.reason else ""))
        raise NotFoundError(f"model '{name}' has no version {version}; ready: {[s.version for s in versions]}")

    def infer(self, name: str, version: Optional[int], inputs: dict, done: Callable,
              t_received: Optional[float] = None, inline: Optional[bool] = False) -> ServedVersion:
        """Check and queue a request. done(served_version, outputs, error) is called once, from
        an instance thread. inline=True may run the batch on this thread, before infer returns
        (front ends that own their thread; never an event loop); inline=None queues without
        waking anyone, for a front end that submits several requests and the last one inline.
        Bad requests raise here (NotFoundError, RequestError, UnavailableError) and are
        counted as failures."""
        for _ in range(3):  # a version closing between resolve and submit: route again
            sv = self.resolve(name, version)
            m = sv.metrics
            try:
                p = sv.prepare(inputs)
            except EngineError as e:
                m.failure(type(e).__name__)
                raise
            p.t_received = t_received or 0.0
            m.accept()  # before submit: an inline batch may finish before submit returns
            if sv.submit(p, partial(done, sv), inline):
                return sv
            m.abandon()
        raise UnavailableError(f"model '{name}' is being unloaded")

    # -- status -----------------------------------------------------------------------

    def model_names(self) -> list:
        """The models with a ready version, sorted."""
        return sorted(self._routes)

    def ready_versions(self, name: str) -> tuple:
        return self._routes.get(name, ())

    def is_ready(self, name: str, version: Optional[int] = None) -> bool:
        versions = self._routes.get(name, ())
        return bool(versions) if version is None else any(s.version == version for s in versions)

    def all_ready(self) -> bool:
        """Every model that has a config and a loadable version serves at least one."""
        return all(self._routes.get(m) for m in self._status_models() if m not in self._unloaded)

    def index(self) -> list:
        """The repository extension's index: every version we know of, with its state."""
        out = [st.as_json() for (_, _), st in sorted(self._status.items())]
        for name, reason in sorted(self._model_errors.items()):
            out.append({"name": name, "version": "", "state": "FAILED", "reason": reason})
        return out

    def status(self, name: str) -> list:
        return [st for (m, _), st in sorted(self._status.items()) if m == name]

    def _status_models(self) -> set:
        return {m for (m, _) in self._status} | set(self._model_errors)

    def _why(self, name: str) -> str:
        if name in self._model_errors:
            return self._model_errors[name]
        sts = self.status(name)
        return "; ".join(f"version {s.version} {s.state}" + (f": {s.reason}" if s.reason else "") for s in sts) \
            or "no versions"
