"""`Server`: one model manager behind the HTTP front (uvicorn in a thread) and the socket
front, started and stopped together.

    with Server(repository="models", http_port=0, socket_port=0) as s:
        print(s.http_address, s.socket_address)

Stopping (stop(), leaving the `with`, SIGTERM in `engine serve`) first stops both fronts from
accepting, lets the requests they hold finish and be answered, then drains and unloads the
models. Binds 127.0.0.1 unless told otherwise; a wider bind without a token is warned about.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Optional

from ..errors import EngineError
from .auth import load_token
from .limits import Limits
from .manager import ModelManager
from .metrics import ServerMetrics

log = logging.getLogger("engine.serve")


class Server:
    def __init__(self, repository="models", *, host: str = "127.0.0.1", http_port: Optional[int] = 8000,
                 socket_port: Optional[int] = 8001, unix_socket: Optional[str] = None,
                 token: Optional[str] = None, token_file: Optional[str] = None, limits: Limits = Limits(),
                 control: str = "poll", poll_interval: float = 2.0, drain_timeout: float = 30.0,
                 lm_loader=None):
        self.host = host
        self.limits = limits
        self.token = load_token(token_file, token)
        self.drain_timeout = drain_timeout
        self.metrics = ServerMetrics()
        self.manager = ModelManager(Path(repository), control=control, poll_interval=poll_interval,
                                    metrics=self.metrics, drain_timeout=drain_timeout, lm_loader=lm_loader)
        self._http_port, self._socket_port, self._unix = http_port, socket_port, unix_socket
        self._uvicorn = None
        self._http_thread: Optional[threading.Thread] = None
        self._http_sock: Optional[socket.socket] = None
        self._socket_server = None
        self._started = False
        self._stopped = threading.Event()
        if not _is_loopback(host) and self.token is None:
            log.warning("serve: binding %s without a token: anyone who can reach this address can call "
                        "and load/unload models; set --token-file or ENGINE_SERVE_TOKEN", host)

    # -- addresses ----------------------------------------------------------------------

    @property
    def http_address(self) -> Optional[str]:
        return _fmt_addr(self._http_sock.getsockname()) if self._http_sock is not None else None

    @property
    def socket_address(self) -> Optional[str]:
        s = self._socket_server
        return _fmt_addr(s.address) if s is not None and s.address is not None else None

    @property
    def unix_socket(self) -> Optional[str]:
        return self._socket_server.unix_path if self._socket_server is not None else None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> "Server":
        if self._started:
            return self
        self._started = True
        try:
            self.manager.start()
            if self._http_port is not None:
                self._start_http()
            if self._socket_port is not None or self._unix:
                from .socket_server import SocketServer
                self._socket_server = SocketServer(self.manager, host=self.host, port=self._socket_port,
                                                   unix_path=self._unix, token=self.token, limits=self.limits)
                self._socket_server.start()
        except BaseException:
            self.stop(timeout=5.0)
            raise
        return self

    def _start_http(self) -> None:
        import uvicorn

        from .http import create_app
        from .http_protocol import timed_protocol
        app = create_app(self.manager, token=self.token, limits=self.limits)
        self._http_sock = _bind(self.host, self._http_port)
        config = uvicorn.Config(
            app, loop=_loop(), http=timed_protocol(self.limits.read_timeout_s), lifespan="off",
            log_level="warning", access_log=False,
            timeout_keep_alive=max(1, int(self.limits.idle_timeout_s)),
            limit_concurrency=self.limits.max_connections, backlog=2048,
            timeout_graceful_shutdown=max(1, int(self.drain_timeout)), server_header=False,
            proxy_headers=False)  # X-Forwarded-* are not ours to trust; nothing here uses the client address
        self._uvicorn = uvicorn.Server(config)
        self._http_thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self._http_sock]},
                                             name="engine-serve-http", daemon=True)
        self._http_thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            if not self._http_thread.is_alive() or time.monotonic() > deadline:
                raise EngineError(f"serve: the HTTP server did not start on {self.http_address}")
            time.sleep(0.005)

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop accepting, answer what is in flight, unload the models. Idempotent."""
        if self._stopped.is_set():
            return
        timeout = self.drain_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True  # closes the listener, finishes open requests
        if self._socket_server is not None:
            self._socket_server.close(timeout)
        if self._http_thread is not None:
            self._http_thread.join(max(0.0, deadline - time.monotonic()))
        self.manager.close(max(0.0, deadline - time.monotonic()))
        if self._http_sock is not None:
            self._http_sock.close()
        self._stopped.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until stopped (by stop() from another thread or a signal handler)."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _loop() -> str:
    try:
        import uvloop  # noqa: F401
        return "uvloop"
    except ImportError:  # not on every platform
        return "asyncio"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as e:
        s.close()
        raise EngineError(f"serve: cannot bind HTTP on {host}:{port} ({e.strerror or e})") from None
    s.listen(2048)
    s.set_inheritable(True)
    return s


def _fmt_addr(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
