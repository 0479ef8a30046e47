"""The socket front: the binary protocol (protocol.py, docs/protocol.md) over TCP and a Unix
socket, for services that embed the engine and want the lowest latency.

Threads, not an event loop: a Python thread hand-off costs ~25 us each way here, more than
a small model computes, so the hot path makes none. Each connection has its own thread that
blocks in poll/recv and decodes every whole frame one recv() returned. All but the last are
only queued in the model's batcher; the last is submitted with `inline=True`: when an
instance slot is free the batch runs right there, taking the queued ones and whatever other
connections queued meanwhile; otherwise it waits in the queue and whichever thread runs the
next batch completes it.

So a completion may run on another connection's thread (or an instance thread), and it must
never wait on a slow client. Sockets are non-blocking: answers are written with send() (the
ones a thread produces while it handles a read of several requests gathered into one send()
per connection); what the kernel does not take goes to that connection's outbox, which a
single flusher thread writes as the socket drains. A client that stops reading therefore
only fills its own outbox; at max_inflight_per_connection unanswered requests its thread
stops reading from it (TCP pushes back on the client), and it is closed if nothing moves
for idle_timeout_s.

Frames that break the layout are answered with an ERROR frame: inside a well-framed request
(unknown model, wrong dtype, ...) only that request fails; a bad header or an oversize frame
(the stream cannot be resynchronised) gets ERROR with the closing flag, and the connection
closes. Nothing a client sends reaches another connection.
"""

from __future__ import annotations

import functools
import logging
import os
import select
import socket
import stat
import threading
import time
from collections import deque
from typing import Optional

from ..errors import EngineError
from . import protocol as P
from .auth import token_matches
from .limits import Limits
from .tensors import RequestError

log = logging.getLogger("engine.serve")

_RECV_BYTES = 1 << 16          # below glibc's mmap threshold: a recv() buffer is a cheap malloc
_JOIN_BELOW = 1 << 16          # answers smaller than this are joined into one buffer, larger use sendmsg
_LINGER_S = 1.0                # after a closing ERROR: read and drop what the client still sends
_LINGER_BYTES = 64 << 20
_POLLIN = select.POLLIN | select.POLLPRI


class SocketServer:
    """Serve `manager` over the binary protocol.

        srv = SocketServer(manager, port=0, unix_path="/tmp/engine.sock").start()
        host, port = srv.address
        ...
        srv.close(timeout=10)

    port=None listens on no TCP port (a Unix socket only)."""

    def __init__(self, manager, *, host: str = "127.0.0.1", port: Optional[int] = 0,
                 unix_path: Optional[str] = None, token: Optional[str] = None, limits: Limits = Limits()):
        if port is None and unix_path is None:
            raise EngineError("socket server: give a TCP port, a unix_path, or both")
        self.manager = manager
        self.host, self.port = host, port
        self.unix_path = None if unix_path is None else os.fspath(unix_path)
        self.token = token
        self.limits = limits
        self._listeners: list = []
        self._unix_id = None              # (st_dev, st_ino) of the socket file we created
        self._conns: set = set()
        self._lock = threading.Lock()     # guards _conns
        self._stop_r, self._stop_w = -1, -1
        self._stopping = False
        self._deadline: Optional[float] = None  # set by close(): connections finish by then
        self._acceptor: Optional[threading.Thread] = None
        self._flusher: Optional[_Flusher] = None
        self._closed = False
        self.address: Optional[tuple] = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> "SocketServer":
        self._stop_r, self._stop_w = os.pipe()  # written once at close: wakes every poll at once
        try:
            if self.port is not None:
                self._listen_tcp()
            if self.unix_path is not None:
                self._listen_unix()
        except BaseException:
            self._close_listeners()
            raise
        self._flusher = _Flusher()
        self._acceptor = threading.Thread(target=self._accept_loop, name="engine-socket-accept", daemon=True)
        self._acceptor.start()
        return self

    def _listen_tcp(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((self.host, self.port))
        except OSError as e:
            s.close()
            raise EngineError(f"serve: cannot bind the socket protocol on {self.host}:{self.port} "
                              f"({e.strerror or e})") from None
        s.listen(1024)
        s.setblocking(False)
        self._listeners.append(s)
        self.address = s.getsockname()[:2]

    def _listen_unix(self) -> None:
        path = self.unix_path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise EngineError(f"serve: {path} exists and is not a socket; not replacing it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                raise EngineError(f"serve: a server is already listening on {path}")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)  # a stale socket left by a process that died
            finally:
                probe.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(path)
        except OSError as e:
            s.close()
            raise EngineError(f"serve: cannot bind the unix socket {path} ({e.strerror or e})") from None
        st = os.lstat(path)
        self._unix_id = (st.st_dev, st.st_ino)
        s.listen(1024)
        s.setblocking(False)
        self._listeners.append(s)

    def close(self, timeout: Optional[float] = 30.0) -> None:
        """Stop accepting; answer every request already received (new ones get ERROR 503);
        close the connections; remove the unix socket file this server created."""
        if self._closed:
            return
        self._closed = True
        deadline = None if timeout is None else time.monotonic() + timeout
        self._deadline = deadline
        self._stopping = True
        if self._stop_w >= 0:
            os.write(self._stop_w, b"x")
        if self._acceptor is not None:
            self._acceptor.join(_left(deadline))
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.wake()
        for c in conns:
            c.thread.join(_left(deadline))
        for c in conns:  # threads that outlived the deadline: cut their connections
            c.abort()
        self._close_listeners()
        if self._flusher is not None:
            self._flusher.stop()
        for fd in (self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._stop_r = self._stop_w = -1

    def _close_listeners(self) -> None:
        for s in self._listeners:
            s.close()
        self._listeners = []
        if self._unix_id is not None:
            try:
                st = os.lstat(self.unix_path)
                if (st.st_dev, st.st_ino) == self._unix_id:  # only the file we made, not a successor's
                    os.unlink(self.unix_path)
            except FileNotFoundError:
                pass
            self._unix_id = None

    def __enter__(self) -> "SocketServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- accepting --------------------------------------------------------------------

    def _accept_loop(self) -> None:
        poller = select.poll()
        by_fd = {s.fileno(): s for s in self._listeners}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while not self._stopping:
            for fd, _ in poller.poll():
                s = by_fd.get(fd)
                if s is None or self._stopping:
                    continue
                try:
                    sock, _ = s.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:  # out of fds, or the client gave up: keep serving
                    log.warning("socket server: accept failed: %s", e)
                    time.sleep(0.01)
                    continue
                try:
                    self._admit(sock)
                except Exception:  # e.g. no thread to spare: refuse this one, keep accepting
                    log.exception("socket server: could not serve a new connection")
                    self._forget_socket(sock)

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            full = len(self._conns) >= self.limits.max_connections
            if not full:
                conn = _Connection(self, sock)
                self._conns.add(conn)
        if full:
            try:
                sock.send(P.encode_error(0, 503, f"too many connections (the limit is "
                                                 f"{self.limits.max_connections})", closing=True))
            except OSError:
                pass
            _linger_close(sock, 0.05)
            return
        conn.thread.start()

    def _forget_socket(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns = {c for c in self._conns if c.sock is not sock}
        sock.close()

    def _forget(self, conn: "_Connection") -> None:
        with self._lock:
            self._conns.discard(conn)


class _Connection:
    """One client connection: its thread reads and submits; any thread may answer."""

    def __init__(self, server: SocketServer, sock: socket.socket):
        self.server = server
        self.manager = server.manager
        self.limits = server.limits
        self.sock = sock
        self.fd = sock.fileno()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # an answer went out, or the outbox drained
        self.outbox: deque = deque()                    # [memoryview, counts as an answer]
        self.unanswered = 0                             # requests received, answer not yet sent
        self.quiet = set()                              # versions with requests queued unwoken this read
        self.closed = False
        self.authed = server.token is None
        self.waiters = 0                                # threads waiting on `changed`
        self.max_inflight = max(1, self.limits.max_inflight_per_connection)
        self.lingers = False                            # a closing ERROR was sent (see _linger_close)
        self.generations: dict = {}                     # request id -> scheduler Handle (language models)
        self.thread = threading.Thread(target=self._run, name="engine-socket-conn", daemon=True)

    # -- the connection's own thread ---------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:  # a bug here must cost one connection, never the server
            log.exception("socket server: connection failed")
        finally:
            self._finish()
            self.server._forget(self)

    def _serve(self) -> None:
        limits, sock = self.limits, self.sock
        poller = select.poll()
        poller.register(self.fd, _POLLIN)
        poller.register(self.server._stop_r, select.POLLIN)
        reader = P.FrameReader(limits.max_request_bytes)
        last = time.monotonic()      # the connection was last busy: a frame arrived, or answers were due
        frame_start = 0.0            # when the partial frame in the reader began to arrive
        while not self.server._stopping:
            now = time.monotonic()
            if reader.partial:
                wait = frame_start + limits.read_timeout_s - now
            elif self.unanswered:
                last = now  # answers are coming; the client is not idle
                wait = limits.idle_timeout_s
            else:
                wait = last + limits.idle_timeout_s - now
            events = poller.poll(max(0, int(wait * 1000) + 1))
            if not events:
                if reader.partial and time.monotonic() >= frame_start + limits.read_timeout_s:
                    self._send_closing(408, f"a frame did not arrive whole within {limits.read_timeout_s:g} s")
                    return
                if not reader.partial and not self.unanswered and time.monotonic() >= last + limits.idle_timeout_s:
                    return
                continue
            if self.server._stopping:
                break
            try:
                data = sock.recv(_RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            if not data:
                return
            completed = self._feed(reader, data)
            if completed < 0:
                return
            if completed or reader.partial:
                now = time.monotonic()
                if completed:
                    last = now
                if not reader.partial:
                    frame_start = 0.0
                elif completed or not frame_start:  # a new frame began in this data
                    frame_start = now
        self._refuse_rest(reader)

    def _feed(self, reader: P.FrameReader, data: bytes) -> int:
        """Handle every whole frame in `data`: how many, or -1 when the connection must close."""
        try:
            frames = reader.feed(data)
        except P.ProtocolError as e:
            for f in e.frames:
                if not self._handle(f, True):
                    return -1
            self._send_closing(e.status, str(e))
            return -1
        last = len(frames) - 1
        # several requests in one read: gather their answers; one alone: answer it at once
        _local.gathered = {} if last > 0 else None
        try:
            for i, f in enumerate(frames):
                if self.unanswered >= self.max_inflight:
                    _flush_gathered()  # some of those unanswered may be waiting right here
                    self._wake_quiet()
                    if not self._wait_capacity():
                        return -1
                if not self._handle(f, i == last):
                    return -1
        finally:
            self._wake_quiet()
            _flush_gathered()
            _local.gathered = None
        return len(frames)

    def _wake_quiet(self) -> None:
        """Requests queued without waking anyone are normally taken by the read's last request,
        run inline; if that one failed or was no request, an instance thread takes them."""
        while self.quiet:
            self.quiet.pop().batcher.wake()

    def _handle(self, f: P.Frame, run: bool) -> bool:
        """`run`: the last frame of this read; the earlier ones only queue (see _request)."""
        if f.kind == P.REQUEST and self.authed:
            self._request(f, run)
            return True
        if f.kind == P.GENERATE and self.authed:
            self._generate(f)
            return True
        if f.kind == P.CANCEL and self.authed:
            handle = self.generations.get(f.request_id)
            if handle is not None:
                handle.cancel()
            return True
        if f.kind == P.AUTH:
            if token_matches(self.server.token, P.decode_auth(f)):
                self.authed = True
                return True
            self._send_closing(401, "wrong token", f.request_id)
            return False
        if not self.authed:
            self._send_closing(401, "this server needs a token: send an AUTH frame first", f.request_id)
            return False
        self._send_closing(400, f"a client may send AUTH, REQUEST, GENERATE and CANCEL frames, not kind {f.kind}",
                           f.request_id)
        return False

    def _request(self, f: P.Frame, run: bool) -> None:
        """Submit one request. Of several that arrived together, all but the last are only
        queued, and the last runs inline: it then takes the others into its batch, where
        running each inline as it is decoded would compute them one by one."""
        rid = f.request_id
        with self.lock:
            self.unanswered += 1
        try:
            req = P.decode_request(f)
            inputs = req.inputs
            if req.outputs or "" in inputs:
                sv = self.manager.resolve(req.model, req.version)
                if req.outputs:
                    _check_outputs(sv, req.outputs)
                if "" in inputs and not getattr(sv, "is_language_model", False):  # an LM says what to send
                    inputs = _name_only_input(sv, inputs)

            def done(sv, outputs, error, wanted=req.outputs):
                self._answer(rid, sv, outputs, error, wanted)

            sv = self.manager.infer(req.model, req.version, inputs, done, inline=True if run else None)
            if not run:
                self.quiet.add(sv)
        except EngineError as e:
            self._reply(P.encode_error(rid, getattr(e, "status", 400), str(e)))
        except Exception as e:  # never let one request take the connection down
            log.exception("socket server: request %d failed", rid)
            self._reply(P.encode_error(rid, 500, f"internal error: {type(e).__name__}"))

    def _generate(self, f: P.Frame) -> None:
        """Start a generation: TOKEN frames as the scheduler's thread produces tokens, then one
        END (or ERROR) frame, which is the request's answer."""
        from ..lm.scheduler import SchedulerClosedError
        from . import openai as oa
        rid = f.request_id
        with self.lock:
            self.unanswered += 1
        try:
            body = P.decode_generate(f)
            req = oa.parse_chat(body) if "messages" in body else oa.parse_completion(body)
            version = body.get("version")
            if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
                raise RequestError(f"'version' must be a positive integer, got {version!r}")
            for attempt in range(3):  # a version closing between resolve and submit: route again
                sv = self.manager.resolve(req.model, version)
                if not getattr(sv, "is_language_model", False):
                    raise RequestError(f"model '{sv.name}' is not a language model; send it REQUEST frames")
                try:
                    handle = sv.start(req, functools.partial(self._generated, rid, sv))
                    self.generations[rid] = handle
                    if handle.done:  # finished before it was recorded
                        self.generations.pop(rid, None)
                    break
                except SchedulerClosedError:
                    if attempt == 2:
                        raise
        except EngineError as e:
            self._reply(P.encode_error(rid, getattr(e, "status", 400), str(e)))
        except Exception as e:
            log.exception("socket server: generation %d failed", rid)
            self._reply(P.encode_error(rid, 500, f"internal error: {type(e).__name__}"))

    def _generated(self, rid: int, sv, event) -> None:
        """The scheduler's sink (its thread): a TOKEN frame, or the END / ERROR that answers."""
        if event.finish_reason is None:
            if self.closed:  # the client is gone: raising cancels the generation
                self.generations.pop(rid, None)
                with self.lock:
                    self.unanswered -= 1
                raise ConnectionError("the connection closed")
            self._write(P.encode_token(rid, event.token_id, event.text), 0, closing=False)
            return
        self.generations.pop(rid, None)
        if event.finish_reason == "error":
            self._write(P.encode_error(rid, 500, f"model '{sv.name}' version {sv.version}: {event.error}"), 1)
            return
        usage = {"prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens,
                 "total_tokens": event.prompt_tokens + event.completion_tokens}
        self._write(P.encode_end(rid, {"finish_reason": event.finish_reason, "text": event.text, "usage": usage,
                                       "model": sv.name, "version": sv.version}), 1)

    def _wait_capacity(self) -> bool:
        """Block until fewer than max_inflight requests are unanswered (this thread reads no
        more meanwhile: TCP pushes back on the client). False if nothing moved for
        idle_timeout_s (the client does not read its answers) or the connection broke."""
        with self.lock:
            while self.unanswered >= self.max_inflight and not self.closed:
                before = self.unanswered
                if not self._wait(self.limits.idle_timeout_s) and self.unanswered == before:
                    log.info("socket server: closing a connection that read no answer for %.0f s",
                             self.limits.idle_timeout_s)
                    return False
        return not self.closed

    def _wait(self, timeout: Optional[float]) -> bool:
        """Wait on `changed` (lock held), counted so answering threads notify only when needed."""
        self.waiters += 1
        try:
            return self.changed.wait(timeout)
        finally:
            self.waiters -= 1

    def _refuse_rest(self, reader: P.FrameReader) -> None:
        """Stopping: requests already in the socket buffer get ERROR 503 rather than silence."""
        try:
            while True:
                data = self.sock.recv(_RECV_BYTES)
                if not data:
                    return
                for f in reader.feed(data):
                    if f.kind == P.REQUEST:
                        with self.lock:
                            self.unanswered += 1
                        self._write(P.encode_error(f.request_id, 503, "the server is stopping"), 1)
        except (OSError, P.ProtocolError):
            return

    def _finish(self) -> None:
        """Wait (bounded) for every answer to be written, then close. A client that closed its
        end cancels its generations (their KV cache is freed); a stopping server lets them end."""
        if not self.server._stopping:
            for handle in list(self.generations.values()):
                handle.cancel()
        own_end = time.monotonic() + self.limits.idle_timeout_s
        with self.lock:
            while (self.unanswered or self.outbox) and not self.closed:
                # close() may begin while we wait: then its deadline rules
                end = self.server._deadline if self.server._stopping else own_end
                left = _left(end)
                if left is not None and left <= 0:
                    break
                self._wait(left if left is None else min(left, 0.25))
        if self.server._stopping and not self.closed:
            self._send_closing(503, "the server is stopping")
        self._drain_outbox(0.5)
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.outbox.clear()
        if self.lingers:  # when stopping everything was read already: a short wait will do
            _linger_close(self.sock, 0.1 if self.server._stopping else _LINGER_S)
        else:
            self.sock.close()

    def _drain_outbox(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        with self.lock:
            while self.outbox and not self.closed:
                left = end - time.monotonic()
                if left <= 0:
                    return
                self._wait(left)

    # -- answering: any thread ---------------------------------------------------------

    def _answer(self, rid: int, sv, outputs, error, wanted) -> None:
        """The batcher's completion for one request (whichever thread ran the batch)."""
        try:
            if error is None and wanted:
                missing = [n for n in wanted if n not in outputs]
                if missing:
                    raise _MissingOutput(f"model '{sv.name}' version {sv.version} has no output(s) {missing}")
                outputs = {n: outputs[n] for n in wanted}
            if error is None:
                parts, size = P.encode_response_parts(rid, sv.name, sv.version, sv.sha256, outputs)
                data = b"".join(parts) if size < _JOIN_BELOW else parts
            else:
                code = getattr(error, "status", 500) if isinstance(error, EngineError) else 500
                data = P.encode_error(rid, code, f"model '{sv.name}' version {sv.version}: {error}")
        except Exception as e:
            data = P.encode_error(rid, getattr(e, "status", 500), str(e))
        self._reply(data)

    def _reply(self, data) -> None:
        """Send one answer; on a connection thread that is handling a read, gather it with the
        others that thread produces for the same connection (one send() for a batch's worth:
        the send is the costliest step of an answer)."""
        gathered = getattr(_local, "gathered", None)
        if gathered is None or type(data) is not bytes:
            self._write(data, 1)
            return
        mine = gathered.get(self)
        if mine is None:
            gathered[self] = [data]
        else:
            mine.append(data)
            if len(mine) >= _GATHER_MAX:
                del gathered[self]
                self._write(b"".join(mine), len(mine))

    def _write(self, data, answers: int, closing: bool = True) -> None:
        """Write `data` (bytes, or a list of buffers for sendmsg) holding `answers` answers,
        without blocking; what the kernel does not take goes to the outbox. A frame that
        answers nothing is the closing ERROR, unless `closing` is False (a TOKEN frame)."""
        with self.lock:
            if self.closed:
                self.unanswered -= answers
                self.changed.notify_all()
                return
            if answers == 0 and closing:
                self.lingers = True  # a closing ERROR frame: close gently after it
            if not self.outbox:
                try:
                    if type(data) is list:
                        n = self.sock.sendmsg(data)
                        data = b"".join(data)  # rare: a large answer, for the remainder
                    else:
                        n = self.sock.send(data)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError:  # the client went away: its answers go nowhere
                    self.unanswered -= answers
                    self._broken()
                    return
                if n == len(data):
                    self.unanswered -= answers
                    if self.waiters:
                        self.changed.notify_all()
                    return
                data = memoryview(data)[n:]
            elif type(data) is list:
                data = memoryview(b"".join(data))
            else:
                data = memoryview(data)
            self.outbox.append([data, answers])
            stalled = len(self.outbox) == 1
        if stalled:
            self.server._flusher.add(self)

    def _send_closing(self, code: int, message: str, rid: int = 0) -> None:
        """Send an ERROR frame that tells the client the connection closes next."""
        _flush_gathered()
        self._write(P.encode_error(rid, code, message, closing=True), 0)

    def flush(self) -> bool:
        """The flusher's call when the socket is writable; True when nothing is left to write."""
        with self.lock:
            ob = self.outbox
            while ob and not self.closed:
                entry = ob[0]
                try:
                    n = self.sock.send(entry[0])
                except (BlockingIOError, InterruptedError):
                    return False
                except OSError:
                    self._broken()
                    break
                if n < len(entry[0]):
                    entry[0] = entry[0][n:]
                    return False
                ob.popleft()
                self.unanswered -= entry[1]
            self.changed.notify_all()
            return True

    def _broken(self) -> None:
        """The peer is gone (lock held): drop what was queued; the owner thread closes."""
        self.unanswered -= sum(e[1] for e in self.outbox)
        self.outbox.clear()
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the owner's poll
        except OSError:
            pass
        self.changed.notify_all()

    def wake(self) -> None:
        with self.lock:
            self.changed.notify_all()

    def abort(self) -> None:
        with self.lock:
            if not self.closed:
                self._broken()


_local = threading.local()  # .gathered: {connection: [answer bytes]} while a read is handled
_GATHER_MAX = 32             # answers gathered for one connection before they are sent anyway


def _flush_gathered() -> None:
    gathered = getattr(_local, "gathered", None)
    if gathered:
        items = list(gathered.items())
        gathered.clear()
        for conn, answers in items:
            conn._write(answers[0] if len(answers) == 1 else b"".join(answers), len(answers))


class _MissingOutput(EngineError, LookupError):
    status = 404


def _check_outputs(sv, wanted: list) -> None:
    names = {s.name for s in sv.outputs}
    missing = [n for n in wanted if n not in names]
    if missing:
        raise _MissingOutput(f"model '{sv.name}' version {sv.version} has no output(s) {missing}; "
                             f"its outputs are {sorted(names)}")


def _name_only_input(sv, inputs: dict) -> dict:
    """An input sent with the empty name is the model's only input (Client.predict(model, x))."""
    if len(inputs) != 1 or len(sv.inputs) != 1:
        raise RequestError(f"model '{sv.name}' has inputs {[s.name for s in sv.inputs]}: name each one")
    return {sv.inputs[0].name: inputs[""]}


class _Flusher:
    """One thread that writes the outboxes of connections whose client reads slowly."""

    def __init__(self):
        self._lock = threading.Lock()
        self._stalled: dict = {}  # fd -> _Connection
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="engine-socket-flush", daemon=True)
        self._thread.start()

    def add(self, conn: _Connection) -> None:
        with self._lock:
            self._stalled[conn.fd] = conn
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # the pipe is full of wake-ups already
            pass

    def stop(self) -> None:
        self._stop = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self._thread.join(5.0)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        while not self._stop:
            with self._lock:
                stalled = dict(self._stalled)
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            for fd in stalled:
                poller.register(fd, select.POLLOUT)
            for fd, _ in poller.poll():
                if fd == self._wake_r:
                    os.read(self._wake_r, 4096)
                    continue
                conn = stalled.get(fd)
                if conn is not None and conn.flush():
                    with self._lock:
                        if self._stalled.get(fd) is conn and not conn.outbox:
                            del self._stalled[fd]


def _linger_close(sock: socket.socket, seconds: float) -> None:
    """Close after our last frame: shut our side, then read and drop what the client still
    sends for a moment, so the kernel does not answer it with a reset that could destroy the
    ERROR frame before the client reads it."""
    try:
        sock.shutdown(socket.SHUT_WR)
        end = time.monotonic() + seconds
        got = 0
        p = select.poll()
        p.register(sock.fileno(), _POLLIN)
        while got < _LINGER_BYTES:
            left = end - time.monotonic()
            if left <= 0 or not p.poll(int(left * 1000) + 1):
                break
            data = sock.recv(_RECV_BYTES)
            if not data:
                break
            got += len(data)
    except OSError:
        pass
    finally:
        sock.close()


def _left(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
