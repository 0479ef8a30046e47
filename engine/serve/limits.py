"""Limits every front end enforces, each answered with a clear 4xx or error frame rather
than a crash, a hang or unbounded memory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 64 << 20    # one request's body / frame, headers included
    max_connections: int = 1024          # open client connections per front end
    read_timeout_s: float = 30.0         # a request must arrive whole within this
    idle_timeout_s: float = 300.0        # a keep-alive connection with no request is closed
    max_inflight_per_connection: int = 1024  # socket protocol: requests pipelined on one connection
