"""OpenAI's routes on the HTTP front (the ASGI app in http.py hands them over whole):

    GET  /v1/models                      the served language models
    GET  /v1/models/{m}                  one of them (another model's /v1/models/{m} is TF Serving's status)
    POST /v1/chat/completions            messages through the model's chat template
    POST /v1/completions                 a prompt (text or token ids)

A generation is submitted to the model's Scheduler; its thread hands each Event to this event
loop (call_soon_threadsafe into an asyncio.Queue), and a stream sends what has arrived per
wake-up as server-sent events. A task waits on receive() for the client's disconnect and cancels
the generation, which frees its sequence and KV blocks at the scheduler's next step. Errors are
in OpenAI's shape (openai.py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from typing import Optional

from ..errors import EngineError
from . import openai as oa
from .auth import bearer_matches
from .tensors import NotFoundError

log = logging.getLogger("engine.serve")

CHAT, COMPLETIONS, MODELS = "/v1/chat/completions", "/v1/completions", "/v1/models"
_INLINE_BODY_BYTES = 8 << 10  # encoding a prompt this long takes well under a millisecond
_JSON = (b"content-type", b"application/json")
_SSE = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))


class OpenAIRoutes:
    def __init__(self, app, http_error: type):
        self.app = app
        self.manager = app.manager
        self._http_error = http_error  # http.py's HttpError (413, 408 ... from reading the body)
        self._box: Optional[_Mailbox] = None

    def owns(self, path: str) -> bool:
        if path in (CHAT, COMPLETIONS, MODELS):
            return True
        if path.startswith("/v1/models/"):
            name = path[11:]
            return bool(name) and "/" not in name and ":" not in name and self._served_lm(name) is not None
        return False

    def _mailbox(self) -> "_Mailbox":
        loop = asyncio.get_running_loop()
        box = self._box
        if box is None or box.loop is not loop:
            box = self._box = _Mailbox(loop)
        return box

    def _served_lm(self, name: str):
        try:
            sv = self.manager.resolve(name)
        except EngineError:
            return None
        return sv if getattr(sv, "is_language_model", False) else None

    async def handle(self, scope, receive, send, request_cls, t0: float) -> None:
        started, close, r = [False], False, None

        async def tracked_send(msg):
            started[0] = True
            await send(msg)
        try:
            r = request_cls(scope, receive, t0)
            if self.app.token is not None and not bearer_matches(self.app.token, r.authorization):
                raise oa.OpenAIError("missing or wrong API key: send 'Authorization: Bearer <token>' (the openai "
                                     "client's api_key)", 401, code="invalid_api_key")
            await self._route(r, tracked_send)
            return
        except oa.OpenAIError as e:
            status, body = e.status, oa.error_object(str(e), e.status, e.param, e.code)
        except self._http_error as e:
            status, body, close = e.status, oa.error_object(e.message, e.status), e.close
        except EngineError as e:  # the manager's errors carry their status (404, 503)
            status = getattr(e, "status", 500)
            body = oa.error_object(str(e), status)
        except Exception as e:
            log.exception("HTTP %s %s failed", scope.get("method"), scope.get("path"))
            status, body = 500, oa.error_object(f"internal error: {type(e).__name__}", 500)
        if started[0]:  # the stream had begun: nothing more can be said in HTTP
            return
        data = oa.dumps(body)
        headers = [_JSON, (b"content-length", b"%d" % len(data))]
        if close or r is None or r.has_unread_body():  # never make the server swallow a body nobody reads
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _route(self, r, send) -> None:
        if r.path == MODELS or r.path.startswith("/v1/models/"):
            _allow(r, "GET")
            if r.path == MODELS:
                data = oa.model_list([oa.model_object(sv.name, sv.created) for sv in self._language_models()])
            else:
                sv = self._served_lm(r.path[11:])
                if sv is None:
                    raise _no_model(r.path[11:])
                data = oa.model_object(sv.name, sv.created)
            return await _send_json(send, 200, data)
        _allow(r, "POST")
        body = await self.app._body(r)
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise oa.OpenAIError(f"the request body is not valid JSON: {e}") from None
        req = oa.parse_chat(obj) if r.path == CHAT else oa.parse_completion(obj)
        await self._generate(r, send, req, len(body))

    def _language_models(self) -> list:
        out = []
        for name in self.manager.model_names():
            sv = self._served_lm(name)
            if sv is not None:
                out.append(sv)
        return out

    async def _generate(self, r, send, req: oa.GenerationRequest, body_bytes: int) -> None:
        from ..lm.scheduler import SchedulerClosedError
        queue: asyncio.Queue = asyncio.Queue()
        sink = functools.partial(self._mailbox().post, queue)  # raises once the loop is gone: cancels

        for attempt in range(3):  # a version closing between resolve and submit: route again
            sv = self._resolve(req.model)
            try:
                if body_bytes > _INLINE_BODY_BYTES:  # a long prompt: template and tokenizer off the loop
                    handle = await asyncio.to_thread(sv.start, req, sink)
                else:
                    handle = sv.start(req, sink)
                break
            except SchedulerClosedError:
                if attempt == 2:
                    raise
        if sv.metrics is not None:
            sv.metrics.accept()
        watcher = asyncio.create_task(_cancel_on_disconnect(r.receive, handle))
        try:
            created, rid = int(time.time()), oa.new_id(req.chat)
            if req.stream:
                await self._stream(send, queue, handle, req, sv, rid, created)
            else:
                await self._whole(send, queue, handle, req, sv, rid, created)
        finally:
            watcher.cancel()
            handle.cancel()  # a no-op once finished; frees the sequence if this task was cancelled
            if sv.metrics is not None:
                sv.metrics.abandon()  # counted out of in-flight

    def _resolve(self, name: str):
        try:
            sv = self.manager.resolve(name)
        except NotFoundError:
            raise _no_model(name) from None
        if not getattr(sv, "is_language_model", False):
            raise oa.OpenAIError(f"model '{name}' is not a language model; send tensors to /v2/models/{name}/infer",
                                 param="model", code="model_not_found")
        return sv

    async def _whole(self, send, queue, handle, req, sv, rid, created) -> None:
        parts = []
        while True:
            e = await queue.get()
            parts.append(e.text)
            if e.finish_reason is not None:
                break
        _raise_for(e, sv)
        use = oa.usage(handle.prompt_tokens, handle.completion_tokens)
        text = "".join(parts)
        data = (oa.chat_response(rid, created, sv.name, text, e.finish_reason, use) if req.chat else
                oa.completion_response(rid, created, sv.name, text, e.finish_reason, use))
        await _send_json(send, 200, data, _model_headers(sv))

    async def _stream(self, send, queue, handle, req, sv, rid, created) -> None:
        if req.chat:
            def chunk(text, reason):
                return oa.sse(oa.chat_chunk(rid, created, sv.name, {"content": text} if text or not reason else {},
                                            reason))
        else:
            def chunk(text, reason):
                return oa.sse(oa.completion_response(rid, created, sv.name, text, reason))
        first = await queue.get()  # errors before the first token still get an HTTP status
        if first.finish_reason in ("error", "cancelled"):
            _raise_for(first, sv)
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE, *_model_headers(sv)]})
        out = [oa.sse(oa.chat_chunk(rid, created, sv.name, {"role": "assistant", "content": ""}, None))] \
            if req.chat else []
        e = first
        while True:
            if e.finish_reason is not None:
                break
            if e.text:
                out.append(chunk(e.text, None))
            if queue.empty():  # send what this wake-up brought, then wait for more
                await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
                out = []
            e = await queue.get()
        if e.finish_reason == "error":
            out.append(oa.sse(oa.error_object(f"model '{sv.name}': generation failed: {e.error}", 500)))
        else:
            if e.text:
                out.append(chunk(e.text, None))
            out.append(chunk("", e.finish_reason))
        if req.include_usage:
            use = oa.usage(handle.prompt_tokens, handle.completion_tokens)
            out.append(oa.sse(oa.chat_chunk(rid, created, sv.name, None, None, use) if req.chat else
                              oa.completion_response(rid, created, sv.name, "", None, use, with_choice=False)))
        out.append(oa.SSE_DONE)
        await send({"type": "http.response.body", "body": b"".join(out), "more_body": False})


class _Mailbox:
    """Events from scheduler threads to one event loop: the first of a burst schedules a drain
    (call_soon_threadsafe writes a pipe to wake the loop); the rest of the step's tokens, for
    every stream, ride along. One wake-up per decoder step rather than one per stream."""

    def __init__(self, loop):
        self.loop = loop
        self._lock = threading.Lock()
        self._items: list = []

    def post(self, queue: asyncio.Queue, event) -> None:
        with self._lock:
            self._items.append((queue, event))
            if len(self._items) > 1:
                return
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody listens; raising cancels the generation
            with self._lock:
                self._items.clear()
            raise

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for queue, event in items:
            queue.put_nowait(event)


async def _cancel_on_disconnect(receive, handle) -> None:
    """uvicorn answers receive() with http.disconnect when the client goes (or the response ended)."""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            handle.cancel()
            return


def _raise_for(e, sv) -> None:
    if e.finish_reason == "error":
        raise oa.OpenAIError(f"model '{sv.name}': generation failed: {e.error}", 500)
    if e.finish_reason == "cancelled":
        raise oa.OpenAIError(f"model '{sv.name}': the generation was cancelled (the server is stopping)", 503)


def _no_model(name: str) -> oa.OpenAIError:
    return oa.OpenAIError(f"The model '{name}' does not exist or is not a served language model (GET /v1/models "
                          "lists them)", 404, param="model", code="model_not_found")


def _allow(r, method: str) -> None:
    if r.method != method and not (method == "GET" and r.method == "HEAD"):
        raise oa.OpenAIError(f"{r.method} is not allowed on {r.path}; use {method}", 405)


def _model_headers(sv) -> tuple:
    return (b"x-model-version", b"%d" % sv.version), (b"x-model-sha256", sv.sha256.encode())


async def _send_json(send, status: int, obj, headers: tuple = ()) -> None:
    data = oa.dumps(obj)
    await send({"type": "http.response.start", "status": status,
                "headers": [_JSON, *headers, (b"content-length", b"%d" % len(data))]})
    await send({"type": "http.response.body", "body": data})
