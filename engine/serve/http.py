"""The HTTP front end: a raw ASGI app (uvicorn with httptools parses HTTP; no framework).

    app = create_app(manager, token="s3cret-token", limits=Limits())
    uvicorn.run(app, http="httptools", loop="uvloop", lifespan="off")

Routes (KServe v2 / Open Inference Protocol as Triton serves it, TF Serving REST, metrics):

    GET  /v2/health/live | /v2/health/ready                 200 / 400, never need the token
    GET  /v2                                                server metadata
    GET  /v2/models/{m}[/versions/{v}]                      model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready                200 / 400
    POST /v2/models/{m}[/versions/{v}]/infer                JSON or binary tensors (kserve.py)
    POST /v2/repository/index                               every version and its state
    POST /v2/repository/models/{m}/load | /unload
    POST /v1/models/{m}[/versions/{v}]:predict              TF Serving rows or columns (tfserving.py)
    GET  /v1/models/{m}[/versions/{v}]                      TF Serving model status
    GET  /v1/models, /v1/models/{language model}            OpenAI's model list / model (openai_http.py)
    POST /v1/chat/completions | /v1/completions             OpenAI's generation, streamed as SSE or whole
    GET  /metrics                                           Prometheus text format
    GET  /, /dashboard/...                                  the dashboard page and files (dashboard.py), no token
    GET  /dashboard/api/models | /dashboard/api/stats       the dashboard's JSON

Inference never runs on the event loop: manager.infer queues the request and its batcher's
instance thread calls back; _Completions hands results to the loop, one wake-up per burst, so
a batch of 64 costs the loop one wake-up rather than 64. Errors are {"error": message} with
the status the manager's exception carries (400, 404, 503), 413 for a body over
limits.max_request_bytes (refused from Content-Length before reading, else counted while
reading), 408 for a body that does not arrive within limits.read_timeout_s, 500 when the model
fails. Payloads are never logged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import zlib
from typing import Optional

from .. import __version__
from ..errors import EngineError
from . import kserve, tfserving
from .auth import bearer_matches
from .dashboard import Dashboard, is_public
from .limits import Limits
from .metrics import CONTENT_TYPE_LATEST
from .openai_http import OpenAIRoutes
from .tensors import RequestError

log = logging.getLogger("engine.serve")

_JSON = (b"content-type", b"application/json")
_BINARY = (b"content-type", b"application/octet-stream")
_CLOSE = (b"connection", b"close")
_GET = ("GET", "HEAD")
_POST = ("POST",)
_TOKEN_HINT = "send the header 'Authorization: Bearer <token>'"


def create_app(manager, *, token: Optional[str] = None, limits: Limits = Limits()) -> HttpApp:
    """The ASGI app serving `manager` (a ModelManager).

    >>> app = create_app(ModelManager("models"), token=None)
    """
    return HttpApp(manager, token=token, limits=limits)


class HttpError(Exception):
    """An HTTP error answer; `close` ends the connection (a body we will not read)."""

    def __init__(self, status: int, message: str, headers: tuple = (), close: bool = False):
        super().__init__(message)
        self.status, self.message, self.headers, self.close = status, message, headers, close


class _Request:
    __slots__ = ("authorization", "body_read", "chunked", "encoding", "header_length", "length", "method", "path",
                 "receive", "t0")

    def __init__(self, scope, receive, t0):
        self.method, self.path, self.receive, self.t0 = scope["method"], scope["path"], receive, t0
        self.authorization = self.length = self.header_length = self.encoding = None
        self.chunked = self.body_read = False
        for k, v in scope["headers"]:  # one pass over the few headers we use
            if k == b"content-length":
                self.length = _int_header(k, v)
            elif k == b"authorization":
                self.authorization = v
            elif k == b"inference-header-content-length":
                self.header_length = _int_header(k, v)
            elif k == b"content-encoding":
                self.encoding = v.strip().lower()
            elif k == b"transfer-encoding":
                self.chunked = b"chunked" in v.lower()

    def has_unread_body(self) -> bool:
        return not self.body_read and (self.chunked or bool(self.length))


def _int_header(name: bytes, value: bytes) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise HttpError(400, f"header {name.decode()} must be a non-negative integer", close=True)
    return n


class _Completions:
    """Results from instance threads to one event loop. The first result of a burst schedules a
    drain with call_soon_threadsafe (a pipe write that wakes the loop); results arriving before
    the drain runs ride along."""
    __slots__ = ("_items", "_lock", "_scheduled", "loop")

    def __init__(self, loop):
        self.loop = loop
        self._lock = threading.Lock()
        self._items = []
        self._scheduled = False

    def push(self, fut, served, outputs, error) -> None:
        with self._lock:
            self._items.append((fut, (served, outputs, error)))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        for fut, result in items:
            if not fut.done():  # a request cancelled while computing (server shutting down)
                fut.set_result(result)


class _BodyDeadlines:
    """The requests of one loop that are reading their body, and when each must have it all.
    One timer checks them every `tick` (a timer per request would cost more than the rest of
    a small request's handling); an overdue one is cancelled where it waits for the body."""
    __slots__ = ("_reading", "_timer", "expired", "loop", "tick", "timeout")

    def __init__(self, loop, timeout: float):
        self.loop, self.timeout = loop, timeout
        self.tick = min(1.0, max(0.01, timeout / 10))
        self.expired: set = set()
        self._reading: dict = {}  # task -> deadline (loop.time())
        self._timer = None

    def start(self, task) -> None:
        self._reading[task] = self.loop.time() + self.timeout
        if self._timer is None:
            self._timer = self.loop.call_later(self.tick, self._check)

    def finish(self, task) -> None:
        self._reading.pop(task, None)

    def _check(self) -> None:
        now = self.loop.time()
        for task, deadline in list(self._reading.items()):
            if deadline <= now:  # the task waits in receive(): the cancel lands there
                del self._reading[task]
                self.expired.add(task)
                task.cancel()
        self._timer = self.loop.call_later(self.tick, self._check) if self._reading else None


class _LoopState:
    __slots__ = ("completions", "deadlines", "loop")

    def __init__(self, loop, read_timeout: float):
        self.loop = loop
        self.completions = _Completions(loop)
        self.deadlines = _BodyDeadlines(loop, read_timeout)


class HttpApp:
    """The ASGI callable (see the module docstring for its routes); create it with create_app.

    >>> uvicorn.run(HttpApp(manager, token=None), http="httptools", lifespan="off")
    """

    def __init__(self, manager, *, token: Optional[str] = None, limits: Limits = Limits()):
        self.manager = manager
        self.token = token
        self.limits = limits
        self._state: Optional[_LoopState] = None
        self._dashboard = Dashboard(manager)
        self._openai = OpenAIRoutes(self, HttpError)
        self._fixed = {
            "/v2/health/live": (_GET, self._live),
            "/v2/health/ready": (_GET, self._ready),
            "/v2": (_GET, self._server_metadata),
            "/v2/": (_GET, self._server_metadata),
            "/v2/repository/index": (_POST, self._index),
            "/metrics": (_GET, self._metrics),
        }

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        t0 = time.perf_counter()
        if scope["path"].startswith("/v1/") and self._openai.owns(scope["path"]):
            await self._openai.handle(scope, receive, send, _Request, t0)
            return
        r, close = None, False
        try:
            r = _Request(scope, receive, t0)
            if self.token is not None and not r.path.startswith("/v2/health/") and not is_public(r.path) and \
                    not bearer_matches(self.token, r.authorization):
                raise HttpError(401, f"missing or wrong bearer token: {_TOKEN_HINT}",
                                ((b"www-authenticate", b"Bearer"),))
            status, body, headers = await self._route(r)
        except HttpError as e:
            status, body, headers, close = e.status, _error(e.message), [_JSON, *e.headers], e.close
        except EngineError as e:  # the manager's errors carry their status (400, 404, 503)
            status, body, headers = getattr(e, "status", 500), _error(str(e)), [_JSON]
        except Exception as e:  # a bug: answer 500 and log it (the traceback holds no payload)
            log.exception("HTTP %s %s failed", scope.get("method"), scope.get("path"))
            status, body, headers = 500, _error(f"internal error: {type(e).__name__}"), [_JSON]
        if close or r is None or r.has_unread_body():  # never make the server swallow a body nobody reads
            headers.append(_CLOSE)
        headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- routing ----------------------------------------------------------------------

    async def _route(self, r: _Request) -> tuple:
        path = r.path
        if path.startswith("/v2/models/"):
            return await self._v2_model(r, path[11:])
        if path.startswith("/v1/models/"):
            return await self._v1_model(r, path[11:])
        if path.startswith("/v2/repository/models/"):
            name, _, action = path[22:].partition("/")
            if action == "load":
                _allow(r, _POST)
                return await self._load(r, name)
            if action == "unload":
                _allow(r, _POST)
                return await self._unload(r, name)
            raise _no_route(r)
        if path == "/" or path.startswith("/dashboard/"):
            _allow(r, _GET)
            return self._dashboard.route(path)
        route = self._fixed.get(path)
        if route is None:
            raise _no_route(r)
        _allow(r, route[0])
        return await route[1](r)

    async def _v2_model(self, r: _Request, rest: str) -> tuple:
        parts = rest.split("/")
        name = parts[0]
        if len(parts) >= 3 and parts[1] == "versions":
            version, tail = _version(parts[2]), parts[3:]
        else:
            version, tail = None, parts[1:]
        if tail == ["infer"]:
            _allow(r, _POST)
            return await self._infer(r, name, version)
        if not tail:
            _allow(r, _GET)
            return self._model_metadata(name, version)
        if tail == ["ready"]:
            _allow(r, _GET)
            return self._model_ready(name, version)
        raise _no_route(r)

    async def _v1_model(self, r: _Request, rest: str) -> tuple:
        rest, colon, verb = rest.partition(":")
        parts = rest.split("/")
        name, version = parts[0], None
        if len(parts) == 3 and parts[1] == "versions":
            version = _version(parts[2])
        elif len(parts) == 3 and parts[1] == "labels":
            raise HttpError(404, "version labels are not supported; name the version: /v1/models/{m}/versions/{v}")
        elif len(parts) != 1:
            raise _no_route(r)
        if not colon:
            _allow(r, _GET)
            return self._tf_status(name, version)
        if verb == "predict":
            _allow(r, _POST)
            return await self._predict(r, name, version)
        raise HttpError(404, f"':{verb}' is not supported; this server answers ':predict'")

    # -- inference --------------------------------------------------------------------

    async def _infer(self, r: _Request, name: str, version: Optional[int]) -> tuple:
        body = await self._body(r)
        try:
            req = kserve.decode_request(body, r.header_length)
            if req.outputs:
                kserve.check_outputs(req, self.manager.resolve(name, version))
        except EngineError as e:
            self._count_failure(name, version, e)
            raise
        served, outputs = await self._compute(name, version, req.inputs, r.t0)
        body, header_length = kserve.encode_response(served, outputs, req)
        headers = [_BINARY if header_length is not None else _JSON, *_model_headers(served)]
        if header_length is not None:
            headers.append((b"inference-header-content-length", b"%d" % header_length))
        return 200, body, headers

    async def _predict(self, r: _Request, name: str, version: Optional[int]) -> tuple:
        body = await self._body(r)
        served = self.manager.resolve(name, version)
        try:
            inputs, form = tfserving.decode_predict(body, served)
        except EngineError as e:
            self._count_failure(name, version, e)
            raise
        served, outputs = await self._compute(name, version, inputs, r.t0)
        return 200, tfserving.encode_predict(outputs, form), [_JSON, *_model_headers(served)]

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._state
        if state is None or state.loop is not loop:  # first request, or the app moved to a new loop
            state = self._state = _LoopState(loop, self.limits.read_timeout_s)
        return state

    async def _compute(self, name: str, version: Optional[int], inputs: dict, t0: float) -> tuple:
        state = self._loop_state()
        fut = state.loop.create_future()
        self.manager.infer(name, version, inputs, functools.partial(state.completions.push, fut), t_received=t0)
        served, outputs, error = await fut
        if error is not None:
            status = getattr(error, "status", 500)
            raise HttpError(status, f"model '{served.name}' version {served.version}: inference failed: {error}")
        return served, outputs

    def _count_failure(self, name: str, version: Optional[int], error: Exception) -> None:
        """Count a request the manager never saw (undecodable), for a model that exists only:
        a label per made-up model name would grow the metrics without bound."""
        try:
            served = self.manager.resolve(name, version)
        except EngineError:
            return
        if served.metrics is not None:
            served.metrics.failure(type(error).__name__)

    async def _body(self, r: _Request) -> bytes:
        """The whole body, within limits.max_request_bytes (413) and read_timeout_s (408)."""
        limit = self.limits.max_request_bytes
        if r.length is not None and r.length > limit:
            raise HttpError(413, f"the request body is {r.length} bytes; this server takes at most {limit}",
                            close=True)
        chunks, total, more = [], 0, True
        too_large = HttpError(413, f"the request body is over {limit} bytes, this server's limit", close=True)
        deadlines = self._loop_state().deadlines
        task = asyncio.current_task()
        deadlines.start(task)
        try:
            while more:
                msg = await r.receive()
                if msg["type"] == "http.disconnect":
                    raise HttpError(400, "the client disconnected before sending the whole body")
                chunk, more = msg.get("body", b""), msg.get("more_body", False)
                total += len(chunk)
                if total > limit:
                    await _drain(r, more, _DRAIN_BYTES)
                    raise too_large
                chunks.append(chunk)
        except asyncio.CancelledError:
            if task not in deadlines.expired:  # cancelled by someone else (shutdown): let it end
                raise
            deadlines.expired.discard(task)
            task.uncancel()
            if total > limit:  # the deadline cut the drain short: the answer is still 413
                raise too_large from None
            raise HttpError(408, f"the request body did not arrive within {self.limits.read_timeout_s:g} s "
                            f"({total} bytes came)", close=True) from None
        finally:
            deadlines.finish(task)
        r.body_read = True
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if r.encoding is not None and r.encoding != b"identity":
            body = _decompress(body, r.encoding, limit)
        return body

    # -- metadata, health, repository -------------------------------------------------

    async def _live(self, r: _Request) -> tuple:
        return 200, b'{"live":true}', [_JSON]

    async def _ready(self, r: _Request) -> tuple:
        ready = self.manager.all_ready()
        return (200 if ready else 400), kserve.dumps({"ready": ready}), [_JSON]

    async def _server_metadata(self, r: _Request) -> tuple:
        return 200, kserve.dumps(kserve.server_metadata(__version__)), [_JSON]

    def _model_metadata(self, name: str, version: Optional[int]) -> tuple:
        served = self.manager.resolve(name, version)
        meta = served.metadata()
        if version is None:  # the model: every version that serves
            meta["versions"] = [str(s.version) for s in self.manager.ready_versions(name)]
        return 200, kserve.dumps(meta), [_JSON, *_model_headers(served)]

    def _model_ready(self, name: str, version: Optional[int]) -> tuple:
        try:
            self.manager.resolve(name, version)
        except EngineError as e:
            if getattr(e, "status", None) == 404:
                raise
            return 400, kserve.dumps({"name": name, "ready": False, "error": str(e)}), [_JSON]
        return 200, kserve.dumps({"name": name, "ready": True}), [_JSON]

    async def _index(self, r: _Request) -> tuple:
        req = await self._json_object(r, "the repository index request")
        ready_only = req.get("ready", False)
        if not isinstance(ready_only, bool):
            raise RequestError("'ready' must be true or false")
        index = self.manager.index()
        if ready_only:
            index = [e for e in index if e["state"] == "READY"]
        return 200, kserve.dumps(index), [_JSON]

    async def _load(self, r: _Request, name: str) -> tuple:
        req = await self._json_object(r, "the load request")
        params = req.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError("'parameters' must be an object")
        if "config" in params or any(k.startswith("file:") for k in params):
            raise RequestError("loading with a config or files sent in the request is not supported; put them "
                               "in the model repository and load by name")
        try:  # loading reads and warms the model: seconds, so off the event loop
            await asyncio.to_thread(self.manager.load_model, name)
        except EngineError as e:
            if hasattr(e, "status"):
                raise
            raise HttpError(400, f"failed to load model '{name}': {e}") from None
        return 200, b"{}", [_JSON]

    async def _unload(self, r: _Request, name: str) -> tuple:
        await self._json_object(r, "the unload request")
        await asyncio.to_thread(self.manager.unload_model, name)  # drains the model's queue first
        return 200, b"{}", [_JSON]

    async def _json_object(self, r: _Request, what: str) -> dict:
        body = await self._body(r)
        if not body.strip():
            return {}
        req = kserve.loads(body, what)
        if not isinstance(req, dict):
            raise RequestError(f"{what} must be a JSON object")
        return req

    def _tf_status(self, name: str, version: Optional[int]) -> tuple:
        status = tfserving.model_status(self.manager.status(name), version)
        if not status["model_version_status"]:
            which = f"model '{name}'" + (f" version {version}" if version is not None else "")
            raise HttpError(404, f"{which} is not in the repository")
        return 200, kserve.dumps(status), [_JSON]

    async def _metrics(self, r: _Request) -> tuple:
        return 200, self.manager.metrics.exposition(), [(b"content-type", CONTENT_TYPE_LATEST.encode())]


def _model_headers(served) -> tuple:
    return (b"x-model-version", b"%d" % served.version), (b"x-model-sha256", served.sha256.encode())


def _allow(r: _Request, methods: tuple) -> None:
    if r.method not in methods:
        raise HttpError(405, f"{r.method} is not allowed on {r.path}; use {' or '.join(methods)}",
                        ((b"allow", ", ".join(methods).encode()),))


def _no_route(r: _Request) -> HttpError:
    return HttpError(404, f"no route {r.path}; see /v2/models/{{model}}/infer, /v1/models/{{model}}:predict")


def _version(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise HttpError(400, f"a version must be a positive integer, got {text!r}")
    return int(text)


def _error(message: str) -> bytes:
    return kserve.dumps({"error": message})


# How much of an over-limit body is read and thrown away before the 413: closing a socket with
# unread input makes the kernel send a reset, and a client still sending (curl, most libraries)
# would see "connection reset" instead of the answer. A bigger body is cut off regardless.
_DRAIN_BYTES = 4 << 20


async def _drain(r: _Request, more: bool, budget: int) -> None:
    """Read and discard the rest of the body, up to `budget` bytes."""
    while more and budget > 0:
        msg = await r.receive()
        if msg["type"] == "http.disconnect":
            return
        more = msg.get("more_body", False)
        budget -= len(msg.get("body", b""))


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    """A gzip or deflate (zlib) body, inflated to at most `limit` bytes: a small compressed body
    must not expand past the limit in memory."""
    if encoding == b"gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == b"deflate":
        d = zlib.decompressobj(zlib.MAX_WBITS)
    else:
        raise HttpError(415, f"Content-Encoding {encoding.decode('latin-1')!r} is not supported; "
                        "send gzip, deflate or identity")
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise HttpError(400, f"the {encoding.decode()} body does not decompress: {e}") from None
    if len(out) > limit:
        raise HttpError(413, f"the request body inflates to over {limit} bytes, this server's limit")
    if not d.eof:
        raise HttpError(400, f"the {encoding.decode()} body is truncated")
    return out


async def _lifespan(receive, send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
