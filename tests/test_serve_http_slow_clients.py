"""Slow and oversized request heads: a client that trickles its headers, or sends nothing, is
cut off after the read timeout; endless headers are refused; other clients are served
meanwhile."""

import http.client
import socket
import time

import pytest

from engine.serve import Server
from engine.serve.limits import Limits
from serve_helpers import write_version


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("models")
    write_version(repo, "digits", 1)
    with Server(repo, http_port=0, socket_port=None, control="explicit", limits=Limits(read_timeout_s=0.6)) as s:
        yield s


def _connect(server):
    host, port = server.http_address.split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def _read_all(s, timeout=10) -> bytes:
    s.settimeout(timeout)
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


def _live(server) -> int:
    host, port = server.http_address.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", "/v2/health/live")
    status = c.getresponse().status
    c.close()
    return status


def test_trickled_headers_are_cut_off(server):
    s = _connect(server)
    t0 = time.monotonic()
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
    for _ in range(3):  # keep sending, slowly, never finishing the headers
        time.sleep(0.2)
        assert _live(server) == 200  # others are served meanwhile
        try:
            s.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
    reply = _read_all(s)
    s.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    assert time.monotonic() - t0 < 5


def test_silent_connection_is_closed(server):
    s = _connect(server)
    reply = _read_all(s)
    s.close()
    assert reply.startswith(b"HTTP/1.1 408")


def test_endless_headers_are_refused(server):
    s = _connect(server)
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
    try:
        for _ in range(100):
            s.sendall(b"X-Big: " + b"a" * 4000 + b"\r\n")
    except OSError:  # the server closed the connection mid-stream
        pass
    reply = _read_all(s)
    s.close()
    assert reply.startswith(b"HTTP/1.1 431") or reply == b"", reply[:100]
    assert _live(server) == 200


def test_keep_alive_connection_serves_requests_after_the_timeout(server):
    host, port = server.http_address.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", "/v2/health/live")
    assert c.getresponse().read() and True
    time.sleep(0.3)  # idle between requests is the keep-alive timeout's business, not this one's
    c.request("GET", "/v2/health/live")
    assert c.getresponse().status == 200
    c.close()
