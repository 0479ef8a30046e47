"""Closed-loop load generator for a v2 (KServe) HTTP or engine-socket server: the core that
`engine bench http://...` and `benchmarks/serve_load.py` share.

    w = Workload("v2json", "127.0.0.1", 8000, "digits", "x", "probs", x)
    summary = run_load(w, concurrency=16, duration=3.0, warmup=0.5)   # rps, p50/p90/p99, errors

N virtual clients each send their next request as soon as the answer to the previous one
arrives, for ``warmup`` + ``duration`` seconds; every latency is recorded and the timed window's
rps, p50, p90 and p99 come back with the error count (any non-200 answer, lost connection or
request left unanswered counts) and the CPU this process used (``loadgen_cores``: how close the
generator itself is to being the bottleneck).

Kinds:

* ``v2json`` / ``v2binary``: KServe v2 ``POST /v2/models/<m>/infer``, JSON tensor or the binary
  tensor extension. One raw keep-alive HTTP/1.1 connection per virtual client on asyncio + uvloop,
  the request bytes encoded once, the answer parsed no further than its status line and
  Content-Length: a few microseconds of CPU per request, far less than any server spends.
* ``socket``: the engine's binary protocol (``engine/serve/protocol.py``). Concurrency is the
  number of requests in flight, pipelined over ``min(concurrency, 4)`` connections; each slot
  keeps its own pre-encoded frame (its request id is the slot number, unique among the requests
  in flight) and sends it again when its answer arrives.

Before anything is timed, one request of the kind may be sent on a plain blocking socket and its
answer decoded in full and compared with ``expect``, so a benchmark never times error answers.
``serve_trivial`` runs a minimal HTTP server (a canned 200 answer to every request) to show what
this generator can drive. Clock: ``time.monotonic`` (CLOCK_MONOTONIC, the same in every process),
so sample stamps line up with events another process records.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field

import numpy as np

KINDS = ("v2json", "v2binary", "socket")
clock = time.monotonic


class VerifyError(Exception):
    """The check answer before timing was wrong: nothing is timed."""


# ----------------------------------------------------------------------------- requests

@dataclass(frozen=True)
class Workload:
    kind: str
    host: str
    port: int
    model: str
    input_name: str
    output_name: str
    x: np.ndarray
    version: int | None = None

    @property
    def infer_path(self) -> str:
        v = f"/versions/{self.version}" if self.version is not None else ""
        return f"/v2/models/{self.model}{v}/infer"


def _datatype(a: np.ndarray) -> str:
    return {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32"}[a.dtype.name]


def http_request(w: Workload) -> bytes:
    """The whole HTTP/1.1 request (headers and body) for a v2 kind."""
    x = np.ascontiguousarray(w.x)
    tensor = {"name": w.input_name, "shape": list(x.shape), "datatype": _datatype(x)}
    headers = [f"POST {w.infer_path} HTTP/1.1", f"Host: {w.host}:{w.port}"]
    if w.kind == "v2json":
        tensor["data"] = x.ravel().tolist()  # Python floats: repr round-trips the float32 values exactly
        body = json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()
        headers.append("Content-Type: application/json")
    elif w.kind == "v2binary":
        tensor["parameters"] = {"binary_data_size": x.nbytes}
        outputs = [{"name": w.output_name, "parameters": {"binary_data": True}}]
        head = json.dumps({"inputs": [tensor], "outputs": outputs}, separators=(",", ":")).encode()
        body = head + x.tobytes()
        headers += ["Content-Type: application/octet-stream", f"Inference-Header-Content-Length: {len(head)}"]
    else:
        raise ValueError(f"not an HTTP kind: {w.kind!r}")
    headers.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def parse_http_response(raw: bytes) -> tuple[int, dict, bytes, int]:
    """(status, lower-cased headers, body, bytes used) of the first whole response in raw; used = 0
    when raw does not hold one yet."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return 0, {}, b"", 0
    lines = raw[:end].decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" not in headers:
        raise VerifyError(f"HTTP answer without Content-Length (headers {sorted(headers)})")
    n = int(headers["content-length"])
    if len(raw) < end + 4 + n:
        return 0, {}, b"", 0
    return status, headers, raw[end + 4:end + 4 + n], end + 4 + n


def decode_v2_outputs(headers: dict, body: bytes) -> dict:
    """{output name: array} of a KServe v2 answer, JSON or binary tensor extension."""
    n_json = int(headers.get("inference-header-content-length", len(body)))
    doc = json.loads(body[:n_json])
    out, offset = {}, n_json
    for o in doc["outputs"]:
        dtype = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}[o["datatype"]]
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            a = np.frombuffer(body[offset:offset + size], dtype=dtype)
            offset += size
        else:
            a = np.asarray(o["data"], dtype=dtype)
        out[o["name"]] = a.reshape(o["shape"])
    return out


def _compare(outputs: dict, name: str, expect: np.ndarray, what: str) -> None:
    if name not in outputs:
        raise VerifyError(f"{what}: the answer has no output {name!r} (it has {sorted(outputs)})")
    y = np.asarray(outputs[name])
    if y.shape != expect.shape:
        raise VerifyError(f"{what}: output {name!r} has shape {y.shape}, expected {expect.shape}")
    if not np.allclose(y, expect, rtol=1e-4, atol=1e-5):
        d = float(np.abs(y.astype(np.float64) - expect).max())
        raise VerifyError(f"{what}: output {name!r} differs from the reference by {d:.3g}")


def _recv_until(sock: socket.socket, have: bytes, done, timeout: float = 10.0):
    sock.settimeout(timeout)
    while True:
        r = done(have)
        if r is not None:
            return r
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise VerifyError("the server closed the connection before answering")
        have += chunk


def verify_http(w: Workload, request: bytes, expect: np.ndarray) -> None:
    """Send one request on a blocking socket, decode the whole answer, compare with expect."""
    with socket.create_connection((w.host, w.port), timeout=10) as s:
        s.sendall(request)

        def whole(raw):
            status, headers, body, used = parse_http_response(raw)
            return (status, headers, body) if used else None
        status, headers, body = _recv_until(s, b"", whole)
    if status != 200:
        raise VerifyError(f"{w.kind}: HTTP {status}: {body[:300]!r}")
    _compare(decode_v2_outputs(headers, body), w.output_name, expect, w.kind)


# ----------------------------------------------------------------------------- socket protocol

def socket_frames(w: Workload, n: int) -> list[bytes]:
    """One pre-encoded request frame per in-flight slot; slot i carries request id i + 1."""
    from engine.serve import protocol
    x = np.ascontiguousarray(w.x)
    return [protocol.encode_request(i + 1, w.model, {w.input_name: x}, version=w.version) for i in range(n)]


def verify_socket(w: Workload, frame: bytes, expect: np.ndarray) -> None:
    from engine.serve import protocol
    reader = protocol.FrameReader()
    with socket.create_connection((w.host, w.port), timeout=10) as s:
        s.sendall(frame)
        frames: list = []
        while not frames:
            chunk = s.recv(1 << 16)
            if not chunk:
                raise VerifyError("socket: the server closed the connection before answering")
            frames = reader.feed(chunk)
    try:
        _, result = protocol.decode_response(frames[0])
    except protocol.ServerError as e:
        raise VerifyError(f"socket: error answer: {e}") from None
    _compare(result.outputs, w.output_name, expect, "socket")


# ----------------------------------------------------------------------------- the closed loop

@dataclass
class Run:
    """Every request's send time, latency and outcome; the window's CPU readings."""
    t_warm: float
    t_end: float
    server_pid: int | None = None
    t0: list = field(default_factory=list)
    t1: list = field(default_factory=list)
    ok: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)  # reason -> count
    inflight: int = 0
    cpu: dict = field(default_factory=dict)

    def record(self, t0: float, t1: float, ok: bool, reason: str = "") -> None:
        self.t0.append(t0)
        self.t1.append(t1)
        self.ok.append(ok)
        if not ok:
            self.errors[reason] = self.errors.get(reason, 0) + 1

    def mark(self, name: str) -> None:
        self.cpu[name] = (clock(), time.process_time(), _proc_cpu(self.server_pid))


def _proc_cpu(pid: int | None) -> float | None:
    """user + system CPU seconds of a process (all its threads), from /proc."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class _HttpClient(asyncio.Protocol):
    """One virtual client: one connection, one request in flight, resent on each answer."""

    def __init__(self, run: Run, request: bytes, stopped) -> None:
        self.run, self.request, self.stopped = run, request, stopped
        self.transport = None
        self.buf = b""
        self.end = -1          # index in buf where the current answer ends, -1: headers not seen yet
        self.status = b""
        self.t_sent = 0.0
        self.busy = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self) -> None:
        self.busy = True
        self.run.inflight += 1
        self.t_sent = clock()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            if self.end < 0:
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    break
                head = buf[:i].lower()
                j = head.find(b"\r\ncontent-length:")
                if j < 0:  # chunked or close-delimited: not what a v2 server sends; give up on it
                    self._fail("answer without Content-Length")
                    return
                k = head.find(b"\r\n", j + 2)
                self.status = buf[9:12]
                self.end = i + 4 + int(head[j + 17:k if k > 0 else len(head)])
            if len(buf) < self.end:
                break
            buf, self.end = buf[self.end:], -1
            ok = self.status == b"200"
            self._answered(ok, "" if ok else f"HTTP {self.status.decode('latin-1')}")
        self.buf = buf

    def _answered(self, ok: bool, reason: str) -> None:
        t1 = clock()
        self.run.record(self.t_sent, t1, ok, reason)
        self.run.inflight -= 1
        self.busy = False
        if t1 < self.run.t_end:
            self.send()
        elif self.run.inflight == 0:
            self.stopped()

    def _fail(self, reason: str) -> None:
        if self.busy:
            self.busy = False
            self.run.inflight -= 1
            self.run.record(self.t_sent, clock(), False, reason)
            if self.run.inflight == 0 and clock() >= self.run.t_end:
                self.stopped()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        if self.busy:
            self._fail("connection lost")


class _SocketClient(asyncio.Protocol):
    """One connection with several slots in flight; each answer resends its slot's frame."""

    def __init__(self, run: Run, frames: dict, stopped) -> None:
        from engine.serve import protocol
        self.protocol = protocol
        self.run, self.frames, self.stopped = run, frames, stopped   # frames: request id -> bytes
        self.reader = protocol.FrameReader()
        self.t_sent: dict = {}
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, rid: int) -> None:
        self.run.inflight += 1
        self.t_sent[rid] = clock()
        self.transport.write(self.frames[rid])

    def start(self) -> None:
        for rid in self.frames:
            self.send(rid)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except Exception as e:  # noqa: BLE001  a malformed stream: count what is in flight as lost
            self._fail_all(f"bad frame: {type(e).__name__}")
            return
        for f in frames:
            t0 = self.t_sent.pop(f.request_id, None)
            if t0 is None:  # a connection-level error (id 0): the connection closes next
                continue
            t1 = clock()
            if f.kind == self.protocol.RESPONSE:  # not decoded: the first answer was checked in full
                self.run.record(t0, t1, True)
            else:
                err = self.protocol.decode_error(f)
                self.run.record(t0, t1, False, f"error frame {err.code}")
            self.run.inflight -= 1
            if t1 < self.run.t_end:
                self.send(f.request_id)
        if self.run.inflight == 0 and clock() >= self.run.t_end:
            self.stopped()

    def _fail_all(self, reason: str) -> None:
        now = clock()
        for t0 in self.t_sent.values():
            self.run.record(t0, now, False, reason)
            self.run.inflight -= 1
        self.t_sent.clear()
        if self.transport is not None:
            self.transport.close()
        if self.run.inflight == 0 and now >= self.run.t_end:
            self.stopped()

    def connection_lost(self, exc) -> None:
        if self.t_sent:
            self._fail_all("connection lost")


async def _drive(w: Workload, concurrency: int, duration: float, warmup: float, connections: int,
                 server_pid: int | None, drain_s: float) -> Run:
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    def stopped() -> None:
        if not finished.done():
            finished.set_result(None)

    if w.kind == "socket":
        n_conn = max(1, min(concurrency, connections))
        frames = socket_frames(w, concurrency)
        groups = [{i + 1: frames[i] for i in range(c, concurrency, n_conn)} for c in range(n_conn)]
        run = Run(0.0, 0.0, server_pid)
        clients = []
        for g in groups:
            _, c = await loop.create_connection(lambda g=g: _SocketClient(run, g, stopped), w.host, w.port)
            clients.append(c)
    else:
        request = http_request(w)
        run = Run(0.0, 0.0, server_pid)
        clients = []
        for _ in range(concurrency):
            _, c = await loop.create_connection(lambda: _HttpClient(run, request, stopped), w.host, w.port)
            clients.append(c)
    t_start = clock()
    run.t_warm, run.t_end = t_start + warmup, t_start + warmup + duration
    loop.call_later(warmup, run.mark, "start")
    loop.call_later(warmup + duration, run.mark, "end")
    for c in clients:
        if w.kind == "socket":
            c.start()
        else:
            c.send()
    # Answers stop the run once the window is over and nothing is in flight; a server that
    # stops answering is given drain_s more, then what it still owes counts as errors.
    try:
        await asyncio.wait_for(asyncio.shield(finished), warmup + duration + drain_s)
    except asyncio.TimeoutError:
        pass
    if run.inflight:
        run.errors["unanswered at the end"] = run.inflight
    if "end" not in run.cpu:
        run.mark("end")
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0)
    return run


def summarize(run: Run, duration: float) -> dict:
    """rps over the timed window and latency percentiles of the requests sent and answered in it."""
    t0 = np.asarray(run.t0)
    t1 = np.asarray(run.t1)
    ok = np.asarray(run.ok, dtype=bool)
    done_in = (t1 >= run.t_warm) & (t1 <= run.t_end)
    inside = (t0 >= run.t_warm) & done_in & ok
    lat = np.sort((t1[inside] - t0[inside]) * 1e6)

    def pct(p):
        return float(np.percentile(lat, p)) if lat.size else None
    wall0, cpu0, srv0 = run.cpu.get("start", (run.t_warm, 0.0, None))
    wall1, cpu1, srv1 = run.cpu.get("end", (run.t_end, 0.0, None))
    wall = max(wall1 - wall0, 1e-9)
    n_ok = int((done_in & ok).sum())
    out = {
        "requests": n_ok,
        "rps": n_ok / duration,
        "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99),
        "mean_us": float(lat.mean()) if lat.size else None,
        "errors": int(sum(run.errors.values())),
        "error_reasons": dict(run.errors),
        "loadgen_cores": (cpu1 - cpu0) / wall,
        "loadgen_cpu_us_per_req": (cpu1 - cpu0) / n_ok * 1e6 if n_ok else None,
    }
    if srv0 is not None and srv1 is not None:
        out["server_cores"] = (srv1 - srv0) / wall
        out["server_cpu_us_per_req"] = (srv1 - srv0) / n_ok * 1e6 if n_ok else None
    return out


def window_stats(t0: np.ndarray, lat_us: np.ndarray, ok: np.ndarray, lo: float, hi: float) -> dict:
    """p99 and counts of the requests sent in [lo, hi] against those sent outside it."""
    inside = (t0 >= lo) & (t0 <= hi)

    def p99(mask):
        m = mask & ok
        return float(np.percentile(lat_us[m], 99)) if m.any() else None
    return {"p99_in_us": p99(inside), "p99_out_us": p99(~inside), "requests_in": int((inside & ok).sum()),
            "requests_out": int((~inside & ok).sum()), "failed_in": int((inside & ~ok).sum()),
            "failed": int((~ok).sum())}


def run_load(w: Workload, *, concurrency: int, duration: float, warmup: float = 0.5, expect=None,
             connections: int = 4, server_pid: int | None = None, drain_s: float = 5.0,
             samples: str | None = None) -> dict:
    """Verify (unless expect is None), then drive the closed loop in this process; the summary dict."""
    if expect is not None:
        if w.kind == "socket":
            verify_socket(w, socket_frames(w, 1)[0], expect)
        else:
            verify_http(w, http_request(w), expect)
    try:
        import uvloop
        new_loop = uvloop.new_event_loop
    except ImportError:  # the figures then include asyncio's own overhead
        new_loop = asyncio.new_event_loop
    loop = new_loop()
    gc.collect()
    gc.disable()  # no collector pauses inside the timed window; the run allocates no cycles
    try:
        run = loop.run_until_complete(_drive(w, concurrency, duration, warmup, connections, server_pid, drain_s))
    finally:
        gc.enable()
        loop.close()
    out = {"kind": w.kind, "concurrency": concurrency, "duration_s": duration, "warmup_s": warmup,
           "verified": expect is not None, **summarize(run, duration)}
    if samples:
        t0, t1 = np.asarray(run.t0), np.asarray(run.t1)
        np.savez(samples, t0=t0, latency_us=(t1 - t0) * 1e6, ok=np.asarray(run.ok, dtype=bool),
                 t_warm=run.t_warm, t_end=run.t_end)
        out["samples"] = samples
    return out


# ----------------------------------------------------------------------------- trivial server

class _TrivialHttp(asyncio.Protocol):
    """Answers every HTTP/1.1 request (headers + Content-Length body) with a canned 200."""
    ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")

    def connection_made(self, transport) -> None:
        self.transport, self.buf = transport, b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while True:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                break
            head = buf[:i].lower()
            j = head.find(b"\r\ncontent-length:")
            n = 0
            if j >= 0:
                k = head.find(b"\r\n", j + 2)
                n = int(head[j + 17:k if k > 0 else len(head)])
            if len(buf) < i + 4 + n:
                break
            buf = buf[i + 4 + n:]
            self.transport.write(self.ANSWER)
        self.buf = buf


def serve_trivial(host: str = "127.0.0.1", port: int = 0) -> None:
    """Print {"address", "pid"} as JSON, serve until stdin closes."""
    import threading
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(_TrivialHttp, host, port, backlog=1024))
    h, p = server.sockets[0].getsockname()[:2]
    print(json.dumps({"address": f"{h}:{p}", "pid": os.getpid()}), flush=True)

    def wait_stdin():
        sys.stdin.read()
        loop.call_soon_threadsafe(loop.stop)
    threading.Thread(target=wait_stdin, daemon=True).start()
    loop.run_forever()
    server.close()
