"""A client for the socket protocol (docs/protocol.md): one connection, many requests in flight.

    from engine.serve.client import Client
    with Client("127.0.0.1:8001") as c:              # or "unix:/run/engine.sock"
        probs = c.predict("digits", x)               # one output: an array; several: a dict
        r = c.infer("digits", {"x": x}, version=2)   # Result(outputs, model, version, sha256)
        futures = [c.submit("digits", {"x": xi}) for xi in xs]
        ys = [f.result() for f in futures]
        for piece in c.generate("smol", "Once upon a time", max_tokens=32, temperature=0):
            print(piece.text, end="")                # a language model, token by token

Thread-safe, without a reader thread: a thread waiting for an answer reads the socket itself
(one at a time; the others sleep), hands every answer it reads to the thread waiting for it,
and when its own arrives passes the reading to a waiter. At one request in flight nobody
hands anything to another thread (a hand-off costs ~25 us each way, more than the model).

The connection opens on first use and again after it drops; infer/predict resend a request
once when a reused connection turns out to be dead (inference has no side effects). Server
errors raise ServerError(code, message); a timeout raises ClientTimeout; a dropped
connection ConnectionLost.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
import time
from typing import NamedTuple, Optional, Union

import numpy as np

from ..errors import EngineError
from . import protocol as P
from .protocol import Result, ServerError

__all__ = ["Client", "ClientError", "ClientTimeout", "ConnectionLost", "Future", "Generation", "Piece", "Result",
           "ServerError"]

_RECV_BYTES = 1 << 16
_JOIN_BELOW = 1 << 16


class ClientError(EngineError):
    """A request could not be completed for a reason on this side of the server."""


class ClientTimeout(ClientError, TimeoutError):
    """No answer within the client's timeout."""


class ConnectionLost(ClientError, ConnectionError):
    """The connection closed or failed before the answer arrived."""


class Future:
    """One request in flight: result(timeout=None) waits for it (reading the socket if no
    other thread is) and returns a Result or raises."""
    __slots__ = ("_client", "request_id", "_conn", "_value", "_error", "_done", "_wake", "_signaled", "fresh")

    def __init__(self, client: "Client", request_id: int):
        self._client = client
        self.request_id = request_id
        self._conn = None
        self._value: Optional[Result] = None
        self._error: Optional[BaseException] = None
        self._done = False
        self._wake = None               # a held Lock once a thread sleeps on this future (see _wait)
        self._signaled = False
        self.fresh = False              # sent on a connection opened for it

    def done(self) -> bool:
        return self._done

    def result(self, timeout: Optional[float] = None) -> Result:
        if not self._done:
            self._client._wait(self, self._client.timeout if timeout is None else timeout)
        if self._error is not None:
            raise self._error
        return self._value


class Piece(NamedTuple):
    """One streamed piece of a generation: the token (None for the tail held back to the end)
    and the text it completes ("" while a character or a possible stop string is incomplete)."""
    token_id: Optional[int]
    text: str


class Generation:
    """A streaming generation on its own connection: iterate for Pieces; afterwards `text`,
    `finish_reason` ("stop", "length", "cancelled"), `usage`, `model`, `version`. close() (or
    leaving the `with`) hangs up, which makes the server cancel it and free its cache."""

    def __init__(self, sock: socket.socket, request_id: int, address):
        self._sock, self._rid, self._address = sock, request_id, address
        self._reader = P.FrameReader(1 << 26)
        self.text = ""
        self.finish_reason: Optional[str] = None
        self.usage: Optional[dict] = None
        self.model: Optional[str] = None
        self.version: Optional[int] = None

    def __iter__(self):
        try:
            while self.finish_reason is None:
                try:
                    data = self._sock.recv(_RECV_BYTES)
                except socket.timeout:
                    raise ClientTimeout(f"no token from {self._address} within the client's timeout") from None
                except OSError as e:
                    raise ConnectionLost(f"connection to {self._address} lost: {e.strerror or e}") from None
                if not data:
                    raise ConnectionLost(f"connection to {self._address} lost: the server closed it")
                for f in self._reader.feed(data):
                    piece = self._frame(f)
                    if piece is not None:
                        self.text += piece.text
                        yield piece
        finally:
            if self.finish_reason is None:
                self.close()

    def _frame(self, f: P.Frame) -> Optional[Piece]:
        if f.kind == P.ERROR:
            self.close()
            raise P.decode_error(f)
        if f.request_id != self._rid:
            return None
        if f.kind == P.TOKEN:
            return Piece(*P.decode_token(f))
        if f.kind == P.END:
            end = P.decode_end(f)
            self.finish_reason, self.usage = end.get("finish_reason"), end.get("usage")
            self.model, self.version = end.get("model"), end.get("version")
            self.close()
            return Piece(None, end["text"]) if end.get("text") else None
        return None

    def cancel(self) -> None:
        """Ask the server to stop; iteration then ends with finish_reason "cancelled"."""
        try:
            self._sock.sendall(P.encode_cancel(self._rid))
        except OSError:
            pass

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Generation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Conn:
    """One connection. The socket is blocking, its timeouts are the kernel's (SO_RCVTIMEO,
    SO_SNDTIMEO): a send or recv is then one system call, where a Python socket timeout adds
    a poll() before each, and one socket object can be read and written by different threads
    with different deadlines."""
    __slots__ = ("dead", "reader", "recv_timeout", "sock")

    def __init__(self, sock: socket.socket, timeout: Optional[float]):
        sock.settimeout(None)
        self.sock = sock
        _set_timeout(sock, socket.SO_SNDTIMEO, timeout)
        self.recv_timeout = _set_timeout(sock, socket.SO_RCVTIMEO, timeout)
        self.reader = P.FrameReader(1 << 33)  # answers are as large as the model makes them
        self.dead: Optional[BaseException] = None


class Client:
    """Client(address, token=None, timeout=10.0, max_inflight=512).

    address: "host:port", "[v6addr]:port", a (host, port) tuple, or "unix:/path/to.sock".
    timeout: seconds to connect, and for each request's answer. max_inflight: submit() waits
    for older answers beyond this many (keep it at or below the server's
    max_inflight_per_connection, which stops reading past its limit)."""

    def __init__(self, address: Union[str, tuple], token: Optional[str] = None, timeout: float = 10.0,
                 max_inflight: int = 512):
        self.address = address
        self.token = token
        self.timeout = timeout
        self.max_inflight = max_inflight
        self._family, self._target = _parse_address(address)
        self._conn: Optional[_Conn] = None
        self._ids = itertools.count(1)
        self._pending: dict = {}          # request id -> Future
        self._waiting: dict = {}          # futures a thread waits on (ordered: oldest first)
        self._state = threading.Lock()    # guards _pending, _waiting, Future._signaled
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._closed = False

    # -- requests ---------------------------------------------------------------------

    def predict(self, model: str, x, version: Optional[int] = None, outputs: Optional[list] = None):
        """x: an array (for a model with one input) or {input name: array}. Returns an array
        when one output comes back, else {output name: array}.

            probs = client.predict("digits", np.zeros((1, 8, 8, 1), np.float32))
        """
        out = self.infer(model, x, version=version, outputs=outputs).outputs
        return next(iter(out.values())) if len(out) == 1 else out

    def infer(self, model: str, inputs, version: Optional[int] = None, outputs: Optional[list] = None,
              timeout: Optional[float] = None) -> Result:
        """Send one request and wait for its Result(outputs, model, version, sha256)."""
        for attempt in (0, 1):
            fut = self.submit(model, inputs, version=version, outputs=outputs)
            try:
                return fut.result(timeout)
            except ConnectionLost:
                if attempt or fut.fresh:  # a fresh connection that fails is not a stale one
                    raise

    def submit(self, model: str, inputs, version: Optional[int] = None, outputs: Optional[list] = None) -> Future:
        """Send one request now; its Future's result() waits for the answer."""
        if self._closed:
            raise ClientError("the client is closed")
        if isinstance(inputs, np.ndarray):
            inputs = {"": inputs}  # the protocol's name for a model's only input
        elif not isinstance(inputs, dict):
            raise TypeError("inputs: a numpy array or a dict {input name: array}")
        rid = next(self._ids)
        parts, size = P.encode_request_parts(rid, model, inputs, version, outputs)
        data = b"".join(parts) if size < _JOIN_BELOW else parts
        fut = Future(self, rid)
        if len(self._pending) >= self.max_inflight:
            self._make_room()
        with self._send_lock:
            conn = self._conn
            if conn is None or conn.dead is not None:
                conn = self._connect()
                fut.fresh = True
            fut._conn = conn
            with self._state:
                self._pending[rid] = fut
            try:
                if type(data) is list:
                    _sendmsg_all(conn.sock, data)
                else:
                    conn.sock.sendall(data)
            except BlockingIOError:  # SO_SNDTIMEO: the server stopped reading; part of a frame may be out
                self._lost(conn, None, "a send timed out")
                raise ClientTimeout(f"the server at {self.address} took no request for {self.timeout:g} s "
                                    "(too many in flight?)") from None
            except OSError as e:  # a partial frame leaves the stream unusable: drop the connection
                self._lost(conn, e)
        return fut

    def generate(self, model: str, prompt=None, *, messages: Optional[list] = None, version: Optional[int] = None,
                 **params) -> Generation:
        """Start a generation on a language model, streamed on a connection of its own: a prompt
        (text or token ids) or chat `messages`, and OpenAI's fields as keywords (max_tokens,
        temperature, top_p, top_k, min_p, repetition_penalty, seed, stop).

            g = client.generate("smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=64)
            text = "".join(p.text for p in g); g.finish_reason, g.usage
        """
        if self._closed:
            raise ClientError("the client is closed")
        if (prompt is None) == (messages is None):
            raise ClientError("generate: give a prompt or messages (one of them)")
        body = {"model": model, **params}
        body.update({"messages": messages} if messages is not None else {"prompt": prompt})
        if version is not None:
            body["version"] = version
        rid = next(self._ids)
        s = self._open_socket()
        try:
            s.sendall(P.encode_generate(rid, body))
        except OSError as e:
            s.close()
            raise ConnectionLost(f"connection to {self.address} lost: {e.strerror or e}") from None
        return Generation(s, rid, self.address)

    def _make_room(self) -> None:
        with self._state:
            oldest = next(iter(self._pending.values()), None)
        if oldest is not None:
            try:
                oldest.result()
            except Exception:  # its owner will see the error when it asks
                pass

    def close(self) -> None:
        """Close the connection; requests still in flight fail with ConnectionLost."""
        self._closed = True
        conn = self._conn
        if conn is not None:
            self._lost(conn, None, "the client was closed")

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- connection ---------------------------------------------------------------------

    def _connect(self) -> _Conn:
        """A new connection (send lock held), the AUTH frame sent when there is a token."""
        conn = _Conn(self._open_socket(), self.timeout)
        old, self._conn = self._conn, conn
        if old is not None and old.dead is None:
            self._lost(old, None, "replaced")
        return conn

    def _open_socket(self) -> socket.socket:
        """A connected socket (timeout: the client's), authenticated when there is a token."""
        s = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self._target)
            if self._family != socket.AF_UNIX:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.token is not None:
                s.sendall(P.encode_auth(self.token))
        except socket.timeout:
            s.close()
            raise ClientTimeout(f"connecting to {self.address} took over {self.timeout:g} s") from None
        except OSError as e:
            s.close()
            raise ConnectionLost(f"cannot connect to {self.address}: {e.strerror or e}") from None
        return s

    def _lost(self, conn: _Conn, error: Optional[BaseException], why: str = "") -> None:
        """Mark `conn` dead and fail every request waiting on it."""
        if isinstance(error, ServerError):
            exc = error
        else:
            reason = why or (f"{error.strerror or error}" if isinstance(error, OSError) and error else
                             "the server closed the connection")
            exc = ConnectionLost(f"connection to {self.address} lost: {reason}")
        with self._state:
            if conn.dead is not None:
                return
            conn.dead = exc
            for rid, fut in list(self._pending.items()):
                if fut._conn is conn:
                    del self._pending[rid]
                    _settle(fut, None, exc)
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread reading it
        except OSError:
            pass
        conn.sock.close()

    # -- waiting and reading ---------------------------------------------------------------

    def _wait(self, fut: Future, timeout: Optional[float]) -> None:
        """Until `fut` is done: read the socket if no thread does, else sleep until woken (by
        the reader handing over our answer, or the reading)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waiting = False
        try:
            while not fut._done:
                if self._recv_lock.acquire(False):
                    try:
                        self._read_until(fut, deadline, timeout)
                    finally:
                        self._recv_lock.release()
                        if self._waiting:  # one that registers after this looks at the lock again
                            self._pass_reading(fut)
                    continue
                if not waiting:  # register, then try the lock once more: its reader may be gone
                    with self._state:
                        if fut._wake is None:
                            fut._wake = threading.Lock()  # held: the cheapest wake-up there is
                            fut._wake.acquire()
                        self._waiting[fut] = None
                    waiting = True
                    continue
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self._timed_out(fut, timeout)
                if fut._wake.acquire(True, -1 if left is None else left):
                    with self._state:  # consumed the signal (only then: see _settle)
                        fut._signaled = False
        finally:
            if waiting:
                with self._state:
                    self._waiting.pop(fut, None)

    def _pass_reading(self, me: Future) -> None:
        """The reader is leaving: wake one waiter to take over the socket."""
        with self._state:
            for f in self._waiting:
                if f is not me and not f._done and not f._signaled:
                    f._signaled = True
                    f._wake.release()
                    return

    def _timed_out(self, fut: Future, timeout: Optional[float]) -> None:
        with self._state:
            if fut._done:
                return
            self._pending.pop(fut.request_id, None)  # a late answer is dropped
        raise ClientTimeout(f"no answer from {self.address} within {timeout:g} s (request {fut.request_id})")

    def _read_until(self, fut: Future, deadline: Optional[float], timeout: Optional[float]) -> None:
        """Read answers (recv lock held) until `fut`'s arrives, handing each to its future."""
        conn = fut._conn
        while not fut._done:
            if conn.dead is not None:  # failed before we got here; _lost settled fut
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self._timed_out(fut, timeout)
            if left is not None and not 0.9 * conn.recv_timeout <= left <= 1.5 * conn.recv_timeout:
                # rarely (a call's own timeout, or a long wait): keep the overshoot within 10%
                conn.recv_timeout = _set_timeout(conn.sock, socket.SO_RCVTIMEO, left)
            try:
                data = conn.sock.recv(_RECV_BYTES)
            except BlockingIOError:  # SO_RCVTIMEO ran out: look at the deadline again
                continue
            except OSError as e:
                self._lost(conn, e)
                return
            if not data:
                self._lost(conn, None)
                return
            try:
                frames = conn.reader.feed(data)
            except P.ProtocolError as e:
                self._lost(conn, None, f"unreadable answer: {e}")
                return
            for f in frames:
                self._dispatch(conn, f)

    def _dispatch(self, conn: _Conn, frame: P.Frame) -> None:
        try:
            rid, value = P.decode_response(frame)
            error = None
        except ServerError as e:
            if e.closing:  # the server closes next: this error is every waiting request's answer
                self._lost(conn, e)
                return
            rid, value, error = e.request_id, None, e
        except P.ProtocolError as e:
            rid, value, error = frame.request_id, None, ClientError(f"unreadable answer: {e}")
        with self._state:
            fut = self._pending.pop(rid, None)
            if fut is not None:
                _settle(fut, value, error)


def _settle(fut: Future, value, error) -> None:
    """Complete a future and wake its thread (state lock held)."""
    fut._value, fut._error, fut._done = value, error, True
    if fut._wake is not None and not fut._signaled:  # None: no thread sleeps on it
        fut._signaled = True
        fut._wake.release()


def _sendmsg_all(sock: socket.socket, parts: list) -> None:
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        n = sock.sendmsg(views)
        while n and views:
            if n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][n:]
                n = 0


def _set_timeout(sock: socket.socket, option: int, seconds: Optional[float]) -> float:
    """Set a kernel socket timeout; None waits an hour at a time (the callers loop). Returns it."""
    seconds = 3600.0 if seconds is None else min(max(seconds, 1e-3), 3600.0)
    sec = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", sec, int((seconds - sec) * 1e6)))
    return seconds


def _parse_address(address) -> tuple:
    if isinstance(address, tuple):
        return (socket.AF_INET6 if ":" in address[0] else socket.AF_INET), (address[0], int(address[1]))
    if address.startswith("unix:"):
        return socket.AF_UNIX, address[5:]
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ClientError(f"address {address!r}: expected 'host:port' or 'unix:/path'")
    host = host.strip("[]") or "127.0.0.1"
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, int(port))
