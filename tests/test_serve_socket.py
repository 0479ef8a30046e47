"""The binary socket protocol (docs/protocol.md): frames, the server and the client, on real
servers over loopback TCP and a Unix socket. Expected values come from engine.load(path)
.predict of the same file, or from numpy; every error kind is checked for its code, and for
leaving the server (and the connection, where the stream is still in sync) working."""

import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import engine
from engine import nn
from engine.serve import protocol as P
from engine.serve.client import Client, ClientTimeout, ServerError
from engine.serve.limits import Limits
from engine.serve.repository import sha256_file
from engine.serve.server import Server
from serve_helpers import images, write_version

RTOL, ATOL = 1e-6, 1e-7  # batched vs unbatched: float rounding, not bit for bit


# -- models and servers -----------------------------------------------------------------


def two_head_model():
    """Inputs 'a' (4) and 'b' (3); outputs 'head_sum' (2) and 'head_max' (5)."""
    nn.set_random_seed(1)
    a, b = nn.Input((4,), name="a"), nn.Input((3,), name="b")
    h = nn.Concatenate()([a, b])
    return nn.Model(inputs=[a, b], outputs=[nn.Dense(2, name="head_sum")(h),
                                            nn.Dense(5, activation="relu", name="head_max")(h)])


def slow_model():
    """Two convolutions on 64x64x16: tens of ms for a batch of 32 rows."""
    nn.set_random_seed(2)
    return nn.Sequential([nn.Input((64, 64, 16), name="x"), nn.Conv2D(32, (3, 3), activation="relu"),
                          nn.Conv2D(32, (3, 3), activation="relu"), nn.Flatten(), nn.Dense(1, name="score")])


def wide_model():
    """A 64 KiB answer per row: fills a client's socket buffers quickly."""
    nn.set_random_seed(3)
    return nn.Sequential([nn.Input((8,), name="x"), nn.Dense(16384, name="wide")])


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("socket") / "models"
    paths = {"digits": write_version(root, "digits", 1),
             "digits2": write_version(root, "digits", 2, seed=5),
             "two": write_version(root, "two", 1, model=two_head_model()),
             "slow": write_version(root, "slow", 1, model=slow_model(), config={"instances": 1}),
             "wide": write_version(root, "wide", 1, model=wide_model())}
    (root / "digits" / "config.json").write_text('{"version_policy": {"all": true}}')
    return root, paths


@pytest.fixture(scope="module")
def refs(repo):
    return {k: engine.load(p) for k, p in repo[1].items()}


@pytest.fixture
def start(repo):
    """start(**Server kwargs) -> a started Server with only the socket front; all are stopped
    when the test ends."""
    servers = []

    def _start(**kw):
        kw.setdefault("http_port", None)
        kw.setdefault("socket_port", 0)
        kw.setdefault("control", "explicit")
        s = Server(repo[0], **kw).start()
        servers.append(s)
        return s

    yield _start
    for s in servers:
        s.stop(timeout=10)


@pytest.fixture
def server(start):
    return start()


def connect(server, timeout=5.0) -> socket.socket:
    host, port = server.socket_address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_frames(sock, n=None, timeout=5.0):
    """Frames from `sock` until n arrived or the server closed; returns (frames, closed)."""
    reader, frames = P.FrameReader(1 << 30), []
    deadline = time.monotonic() + timeout
    while n is None or len(frames) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out with {len(frames)} frames"
        sock.settimeout(left)
        try:
            data = sock.recv(1 << 16)
        except ConnectionResetError:
            return frames, True
        if not data:
            return frames, True
        frames += reader.feed(data)
    return frames, False


def meta_end(frame) -> int:
    """Where a REQUEST's metadata ends (docs/protocol.md: its length is the u32 at 16)."""
    return P.META_AT + int.from_bytes(frame[16:20], "little")


def peer(sock):
    try:
        return sock.getpeername()
    except OSError:  # closed meanwhile
        return None


def metric(server, name, model, version=1) -> float:
    """A sample from the server's Prometheus exposition."""
    prefix = f'{name}{{model="{model}",version="{version}"}} '
    for line in server.metrics.exposition().decode().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0.0


def answer(frame):
    try:
        return P.decode_response(frame)[1]
    except ServerError as e:
        return e


def assert_served(server, refs, n=3):
    """The server still answers a fresh client correctly."""
    with Client(server.socket_address) as c:
        for i in range(n):
            x = images(1, seed=100 + i)
            np.testing.assert_allclose(c.predict("digits", x, version=1), refs["digits"].predict(x), RTOL, ATOL)


# -- frames: pure functions -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int8", "int16", "int32", "int64",
                                   "uint8", "uint16", "uint32", "uint64", "bool"])
def test_request_round_trips_every_dtype(dtype, rng):
    a = (rng.random((2, 3, 5)) * 100).astype(dtype)
    frame = P.encode_request(42, "m", {"t": a, "empty": np.zeros((0, 4), dtype)}, version=3, outputs=["o1", "o2"])
    (f,) = P.FrameReader().feed(frame)
    req = P.decode_request(f)
    assert (req.request_id, req.model, req.version, req.outputs) == (42, "m", 3, ["o1", "o2"])
    assert req.inputs["t"].dtype == np.dtype(dtype) and np.array_equal(req.inputs["t"], a)
    assert req.inputs["empty"].shape == (0, 4)
    assert req.inputs["t"].ctypes.data % 8 == 0  # aligned: the padding did its job


def test_non_contiguous_and_big_endian_inputs_are_sent_as_values(rng):
    a = rng.random((4, 6)).astype(np.float32)
    be = a.astype(">f8")
    req = P.decode_request(P.FrameReader().feed(P.encode_request(1, "m", {"t": a.T, "be": be}))[0])
    assert np.array_equal(req.inputs["t"], a.T) and np.array_equal(req.inputs["be"], a.astype(np.float64))


def test_reader_splits_a_stream_cut_anywhere(rng):
    arrays = [rng.random((i + 1, 3)).astype(np.float32) for i in range(20)]
    stream = b"".join(P.encode_request(i + 1, "model" * (i % 3), {"x": a}) for i, a in enumerate(arrays))
    for cuts in ([1], [3, 5, 7], [100, 1000], [len(stream)]):
        reader, frames, at, k = P.FrameReader(), [], 0, 0
        while at < len(stream):
            frames += reader.feed(stream[at:at + cuts[k % len(cuts)]])
            at += cuts[k % len(cuts)]
            k += 1
        assert reader.partial == 0
        assert [f.request_id for f in frames] == list(range(1, 21))
        for f, a in zip(frames, arrays):
            x = P.decode_request(f).inputs["x"]
            assert np.array_equal(x, a) and x.ctypes.data % 8 == 0


def test_response_and_error_round_trip():
    y = {"probs": np.arange(10, dtype=np.float32).reshape(1, 10)}
    (f,) = P.FrameReader().feed(P.encode_response(9, "digits", 2, "ab" * 32, y))
    rid, r = P.decode_response(f)
    assert (rid, r.model, r.version, r.sha256) == (9, "digits", 2, "ab" * 32)
    assert np.array_equal(r.outputs["probs"], y["probs"]) and r.outputs["probs"].flags.writeable
    (f,) = P.FrameReader().feed(P.encode_error(4, 404, "no such model", closing=True))
    with pytest.raises(ServerError) as e:
        P.decode_response(f)
    assert (e.value.code, e.value.message, e.value.request_id, e.value.closing) == (404, "no such model", 4, True)


@pytest.mark.parametrize("data, status", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),                  # not this protocol
    (b"\xff\xff\xff\x7f" + b"\x02\x01\x00\x00" + bytes(8), 413),   # a request of 2 GiB
    (b"\x20\x00\x00\x00" + b"\x09\x01\x00\x00" + bytes(28), 400),  # kind 9 (5-8: generation)
    (b"\x20\x00\x00\x00" + b"\x02\x09\x00\x00" + bytes(28), 400),  # protocol version 9
    (b"\x04\x00\x00\x00" + b"\x02\x01\x00\x00" + bytes(12), 400),  # shorter than a header
])
def test_reader_refuses_what_is_not_a_frame(data, status):
    with pytest.raises(P.ProtocolError) as e:
        P.FrameReader(1 << 20).feed(data)
    assert e.value.fatal and e.value.status == status


def test_decode_refuses_a_body_that_lies_about_its_sizes():
    frame = bytearray(P.encode_request(1, "m", {"x": np.zeros((2, 2), np.float32)}))
    end = meta_end(frame)
    frame[end - 8:end] = (99).to_bytes(8, "little")  # the descriptor's last field, nbytes: 16 -> 99
    (f,) = P.FrameReader().feed(bytes(frame))
    with pytest.raises(P.RequestError, match="99 bytes of data"):
        P.decode_request(f)


# -- round trips ----------------------------------------------------------------------------


def test_predict_over_tcp_matches_engine_predict(server, repo, refs):
    with Client(server.socket_address) as c:
        for n in (1, 3):
            x = images(n, seed=n)
            np.testing.assert_allclose(c.predict("digits", x), refs["digits2"].predict(x), RTOL, ATOL)
            np.testing.assert_allclose(c.predict("digits", {"x": x}, version=1), refs["digits"].predict(x),
                                       RTOL, ATOL)
        r = c.infer("digits", {"x": images(1)}, version=1)
    assert (r.model, r.version, r.sha256) == ("digits", 1, sha256_file(repo[1]["digits"]))
    assert list(r.outputs) == ["probs"] and r.outputs["probs"].flags.writeable


def test_unix_socket_round_trip_and_its_file_is_removed(start, refs, tmp_path):
    path = tmp_path / "engine.sock"
    s = start(socket_port=None, unix_socket=str(path))
    assert s.socket_address is None and s.unix_socket == str(path)
    with Client(f"unix:{path}") as c:
        x = images(2, seed=7)
        np.testing.assert_allclose(c.predict("digits", x, version=1), refs["digits"].predict(x), RTOL, ATOL)
    s.stop(timeout=5)
    assert not path.exists()


def test_close_removes_only_the_socket_file_it_created(start, tmp_path):
    path = tmp_path / "engine.sock"
    s = start(socket_port=None, unix_socket=str(path))
    path.unlink()
    path.write_text("a successor's file")
    s.stop(timeout=5)
    assert path.read_text() == "a successor's file"


def test_unix_path_that_is_not_a_socket_is_refused(repo, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(engine.EngineError, match="not a socket"):
        Server(repo[0], http_port=None, socket_port=None, unix_socket=str(path), control="explicit").start()
    assert path.read_text() == "keep me"


def test_two_inputs_and_an_output_subset(server, refs):
    a = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    b = np.random.default_rng(1).random((3, 3), dtype=np.float32)
    want_sum, want_max = refs["two"].predict({"a": a, "b": b})
    with Client(server.socket_address) as c:
        both = c.predict("two", {"a": a, "b": b})
        only = c.infer("two", {"a": a, "b": b}, outputs=["head_max"]).outputs
    assert sorted(both) == ["head_max", "head_sum"] and list(only) == ["head_max"]
    np.testing.assert_allclose(both["head_sum"], want_sum, RTOL, ATOL)
    np.testing.assert_allclose(only["head_max"], want_max, RTOL, ATOL)


def test_the_client_written_from_the_spec_works(server, refs):
    """docs/protocol.md ends with a client built from the page alone: it must talk to the server."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    code = doc.split("## A client from this page alone", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    ns = {}
    exec(compile(code, "docs/protocol.md", "exec"), ns)
    x = images(2, seed=13)
    host, port = server.socket_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(ns["request_frame"](7, "digits", "x", x))
        rid, version, sha, outputs = ns["parse_answer"](ns["read_frame"](s))
        s.sendall(ns["request_frame"](8, "nope", "x", x))
        with pytest.raises(RuntimeError, match="404"):
            ns["parse_answer"](ns["read_frame"](s))
    assert (rid, version) == (7, 2) and sha == server.manager.resolve("digits").sha256
    np.testing.assert_allclose(outputs["probs"], refs["digits2"].predict(x), RTOL, ATOL)


# -- many in flight ---------------------------------------------------------------------------


def test_pipelined_requests_are_answered_out_of_order_by_id(server, refs):
    """A slow request and a fast one in one write: the fast one is answered first."""
    xs = np.random.default_rng(0).random((32, 64, 64, 16), dtype=np.float32)
    x = images(1, seed=3)
    with connect(server) as s:
        s.sendall(P.encode_request(1, "slow", {"x": xs}) + P.encode_request(2, "digits", {"x": x}, version=1))
        frames, _ = read_frames(s, 2, timeout=30)
    assert [f.request_id for f in frames] == [2, 1]
    np.testing.assert_allclose(answer(frames[0]).outputs["probs"], refs["digits"].predict(x), RTOL, ATOL)
    np.testing.assert_allclose(answer(frames[1]).outputs["score"], refs["slow"].predict(xs), 1e-5, 1e-5)


def test_threads_share_one_connection_and_each_gets_its_own_answer(server, refs):
    xs = images(120, seed=11)
    want = refs["digits"].predict(xs)
    got = [None] * len(xs)
    with Client(server.socket_address) as c:
        def work(k):
            for i in range(k, len(xs), 6):
                got[i] = c.predict("digits", xs[i:i + 1], version=1)
        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        futures = [c.submit("digits", xs[i:i + 1], version=1) for i in range(len(xs))]  # from one thread
        piped = [f.result() for f in futures]
        assert len(server._socket_server._conns) == 1  # all of it over one connection
    assert not any(t.is_alive() for t in threads)
    np.testing.assert_allclose(np.concatenate(got), want, RTOL, ATOL)
    np.testing.assert_allclose(np.concatenate([r.outputs["probs"] for r in piped]), want, RTOL, ATOL)


def test_64_concurrent_clients_get_correct_batched_answers(server, refs):
    xs = images(64 * 8, seed=21)
    want = refs["digits"].predict(xs)
    got = np.zeros_like(want)
    errors = []
    barrier = threading.Barrier(64)

    def work(k):
        try:
            with Client(server.socket_address, timeout=60) as c:
                barrier.wait(30)
                for i in range(k * 8, k * 8 + 8):
                    got[i] = c.predict("digits", xs[i:i + 1], version=1)[0]
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads)
    np.testing.assert_allclose(got, want, RTOL, ATOL)
    assert metric(server, "engine_batch_size_count", "digits") < 64 * 8, "no two requests ever shared a batch"


def test_max_inflight_per_connection_pushes_back_without_failing(start, refs):
    s = start(limits=Limits(max_inflight_per_connection=4))
    xs = images(200, seed=31)
    with Client(s.socket_address, max_inflight=200) as c:
        futures = [c.submit("digits", xs[i:i + 1], version=1) for i in range(len(xs))]
        got = np.concatenate([f.result().outputs["probs"] for f in futures])
    np.testing.assert_allclose(got, refs["digits"].predict(xs), RTOL, ATOL)


# -- errors: each answered with its code; the connection goes on ----------------------------


def _craft(body_edit):
    """A REQUEST for digits whose frame `body_edit` changes (bytes in, bytes out)."""
    return body_edit(P.encode_request(77, "digits", {"x": images(1)}, version=1))


@pytest.mark.parametrize("send, code, words", [
    (lambda c: c.predict("nope", images(1)), 404, "unknown model"),
    (lambda c: c.predict("digits", images(1), version=9), 404, "no version 9"),
    (lambda c: c.predict("digits", {"x": images(1), "extra": images(1)}), 404, "no input 'extra'"),
    (lambda c: c.predict("two", {"a": np.zeros((1, 4), np.float32)}), 400, "missing input 'b'"),
    (lambda c: c.predict("digits", images(1).astype(np.float64)), 400, "FP64, the model takes FP32"),
    (lambda c: c.predict("digits", np.zeros((1, 9, 8, 1), np.float32)), 400, "does not match"),
    (lambda c: c.predict("digits", np.zeros((8, 8, 1), np.float32)), 400, "does not match"),
    (lambda c: c.predict("digits", images(1), outputs=["logits"]), 404, "no output"),
    (lambda c: c.predict("two", np.zeros((1, 4), np.float32)), 400, "name each one"),
])
def test_bad_requests_get_an_error_and_the_connection_goes_on(server, refs, send, code, words):
    with Client(server.socket_address) as c:
        with pytest.raises(ServerError) as e:
            send(c)
        assert e.value.code == code and words in e.value.message, e.value
        conn = c._conn
        x = images(1, seed=9)
        np.testing.assert_allclose(c.predict("digits", x, version=1), refs["digits"].predict(x), RTOL, ATOL)
        assert c._conn is conn  # the same connection


def test_element_count_that_does_not_match_the_shape_is_400(server, refs):
    frame = bytearray(P.encode_request(5, "digits", {"x": images(1)}, version=1))
    dims_at = meta_end(frame) - 8 - 8 * 4  # rank 4: the shape, then nbytes, end the metadata
    frame[dims_at:dims_at + 8] = (2).to_bytes(8, "little")  # batch dim 1 -> 2, same data
    with connect(server) as s:
        s.sendall(bytes(frame) + P.encode_request(6, "digits", {"x": images(1)}, version=1))
        frames, closed = read_frames(s, 2)
    e = answer(frames[0])
    assert isinstance(e, ServerError) and e.code == 400 and "512 bytes" in e.message and not e.closing
    assert frames[0].request_id == 5 and frames[1].request_id == 6 and not isinstance(answer(frames[1]), Exception)
    assert not closed


def test_bf16_is_refused_with_400(server):
    frame = bytearray(P.encode_request(5, "digits", {"x": np.zeros((1, 8, 8, 1), np.float16)}, version=1))
    i = frame.index(b"x", 32) - 4  # tensor header: u16 name length, u8 datatype, u8 rank, name
    frame[i + 2] = P.DATATYPE_CODES["BF16"]
    with connect(server) as s:
        s.sendall(bytes(frame))
        (f,), _ = read_frames(s, 1)
    assert answer(f).code == 400 and "BF16" in answer(f).message


def test_oversize_frame_gets_413_and_the_connection_closes(start, refs):
    s = start(limits=Limits(max_request_bytes=100_000))
    with Client(s.socket_address) as c:
        c.predict("digits", np.zeros((64, 8, 8, 1), np.float32) + images(1))  # 16 KiB: fine
        with pytest.raises(ServerError) as e:
            c.predict("digits", np.zeros((400, 8, 8, 1), np.float32))      # 100 KiB: not
        assert e.value.code == 413 and e.value.closing and "100000" in e.value.message
    assert_served(s, refs)


def test_garbage_gets_an_error_and_a_close_and_others_are_unaffected(server, refs):
    with Client(server.socket_address) as other:
        other.predict("digits", images(1))
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(64), b"\x10\x00\x00\x00" * 8):
            with connect(server) as s:
                s.sendall(junk)
                frames, closed = read_frames(s)
            assert closed and len(frames) == 1
            e = answer(frames[0])
            assert e.closing and e.code in (400, 413), e
        x = images(1, seed=4)
        np.testing.assert_allclose(other.predict("digits", x, version=1), refs["digits"].predict(x), RTOL, ATOL)


def test_a_frame_cut_short_then_silence_is_closed_after_the_read_timeout(start, refs):
    s = start(limits=Limits(read_timeout_s=0.3))
    frame = P.encode_request(1, "digits", {"x": images(1)}, version=1)
    with connect(s) as sock:
        t0 = time.monotonic()
        sock.sendall(frame[:100])
        assert_served(s, refs)  # others are served meanwhile
        frames, closed = read_frames(sock, timeout=10)
        waited = time.monotonic() - t0
    assert closed and 0.25 < waited < 5
    assert [answer(f).code for f in frames] == [408]


def test_an_idle_connection_is_closed_and_the_client_reconnects(start, refs):
    s = start(limits=Limits(idle_timeout_s=0.2))
    with Client(s.socket_address) as c:
        c.predict("digits", images(1))
        first = c._conn
        time.sleep(0.6)  # the server closes it meanwhile
        x = images(1, seed=2)
        np.testing.assert_allclose(c.predict("digits", x, version=1), refs["digits"].predict(x), RTOL, ATOL)
        assert c._conn is not first


def test_connections_over_the_limit_are_refused_with_503(start, refs):
    s = start(limits=Limits(max_connections=2))
    a, b = Client(s.socket_address), Client(s.socket_address)
    try:
        a.predict("digits", images(1))
        b.predict("digits", images(1))
        with Client(s.socket_address) as third:
            with pytest.raises(ServerError) as e:
                third.predict("digits", images(1))
        assert e.value.code == 503 and "too many connections" in e.value.message
        a.close()
        deadline = time.monotonic() + 5
        while True:  # the server notices the close a moment later
            try:
                assert_served(s, refs, n=1)
                break
            except ServerError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        a.close()
        b.close()


def test_auth_on_and_off(start, refs):
    s = start(token="s3cret-token")
    x = images(1, seed=6)
    with Client(s.socket_address, token="s3cret-token") as good:
        np.testing.assert_allclose(good.predict("digits", x, version=1), refs["digits"].predict(x), RTOL, ATOL)
    for token in ("wrong-token", None):
        with Client(s.socket_address, token=token) as bad:
            with pytest.raises(ServerError) as e:
                bad.predict("digits", x)
            assert e.value.code == 401 and e.value.closing
    with connect(s) as sock:  # a request before any AUTH frame
        sock.sendall(P.encode_request(3, "digits", {"x": x}))
        frames, closed = read_frames(sock)
    assert closed and [answer(f).code for f in frames] == [401]
    open_server = start()
    with Client(open_server.socket_address, token="any-token-at-all") as c:  # AUTH is accepted when off
        np.testing.assert_allclose(c.predict("digits", x, version=1), refs["digits"].predict(x), RTOL, ATOL)


def test_compute_failure_is_500(start, refs, monkeypatch):
    s = start()
    sv = s.manager.resolve("two")

    def boom(feeds):
        raise RuntimeError("kernel exploded")
    monkeypatch.setattr(sv.batcher, "_run", boom)
    with Client(s.socket_address) as c:
        with pytest.raises(ServerError) as e:
            c.predict("two", {"a": np.zeros((1, 4), np.float32), "b": np.zeros((1, 3), np.float32)})
        assert e.value.code == 500 and "kernel exploded" in e.value.message
        assert_served(s, refs, n=1)


# -- slow and stalled clients, timeouts, shutdown -----------------------------------------------


def test_a_client_that_never_reads_does_not_stall_others(start, refs):
    s = start(limits=Limits(max_inflight_per_connection=64, idle_timeout_s=30))
    x = np.ones((1, 8), np.float32)
    frame = b"".join(P.encode_request(i, "wide", {"x": x}) for i in range(1, 401))  # 400 x 64 KiB answers
    with connect(s) as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.settimeout(0.5)
        try:
            stalled.sendall(frame)  # the server stops reading from it: this may not finish
        except socket.timeout:
            pass
        with Client(s.socket_address, timeout=5) as c:
            t0 = time.monotonic()
            for i in range(50):
                xi = images(1, seed=i)
                np.testing.assert_allclose(c.predict("digits", xi, version=1), refs["digits"].predict(xi),
                                           RTOL, ATOL)
                np.testing.assert_allclose(c.predict("wide", x)[0], refs["wide"].predict(x)[0], 1e-5, 1e-5)
            assert time.monotonic() - t0 < 20
        # the server read no more than its in-flight limit from it, and holds those answers
        (conn,) = [k for k in list(s._socket_server._conns) if peer(k.sock) == stalled.getsockname()]
        assert 0 < conn.unanswered <= 64 and conn.outbox  # its answers wait in its own outbox


def test_client_timeout_raises_and_the_client_recovers(server, refs):
    xs = np.random.default_rng(0).random((32, 64, 64, 16), dtype=np.float32)
    with Client(server.socket_address, timeout=10) as c:
        with pytest.raises(ClientTimeout, match="within 0.001 s"):
            c.infer("slow", {"x": xs}, timeout=0.001)
        x = images(1, seed=8)
        np.testing.assert_allclose(c.predict("digits", x, version=1), refs["digits"].predict(x), RTOL, ATOL)


def test_connect_failure_is_a_clear_error(tmp_path):
    with Client(f"unix:{tmp_path / 'nobody.sock'}") as c:
        with pytest.raises(ConnectionError, match="cannot connect"):
            c.predict("digits", images(1))


def test_close_answers_every_request_in_flight(start, refs, monkeypatch):
    """Requests held in compute while stop() begins are all answered, then the server says
    it is stopping and closes."""
    s = start()
    batcher = s.manager.resolve("digits", 1).batcher
    gate, run = threading.Event(), batcher._run

    def held(feeds):
        assert gate.wait(30)
        return run(feeds)
    monkeypatch.setattr(batcher, "_run", held)
    xs = images(4, seed=12)
    socks = [connect(s) for _ in xs]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(P.encode_request(i + 1, "digits", {"x": xs[i:i + 1]}, version=1))
        deadline = time.monotonic() + 10
        while metric(s, "engine_requests_in_flight", "digits") < 4:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        stopper = threading.Thread(target=s.stop, kwargs={"timeout": 60})
        stopper.start()
        time.sleep(0.2)
        assert stopper.is_alive()  # draining: waiting for the four
        gate.set()
        results = [read_frames(sock, timeout=30) for sock in socks]
        stopper.join(60)
    finally:
        gate.set()
        for sock in socks:
            sock.close()
    want = refs["digits"].predict(xs)
    for i, (frames, closed) in enumerate(results):
        assert closed and [f.request_id for f in frames] == [i + 1, 0]
        np.testing.assert_allclose(answer(frames[0]).outputs["probs"], want[i:i + 1], RTOL, ATOL)
        bye = answer(frames[1])  # then the server says why it closes
        assert bye.code == 503 and bye.closing and "stopping" in bye.message
    with pytest.raises(OSError):
        connect(s, timeout=1)
