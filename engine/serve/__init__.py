"""Serving: `engine serve` — a model repository with versions and hot reload, dynamic batching,
KServe v2 / TF Serving HTTP, a binary socket protocol, Prometheus metrics.

    from engine.serve import Client, Server
    with Server(repository="models", http_port=0, socket_port=0) as s:
        y = Client(s.socket_address).predict("digits", x)

Pieces: config.py (config.json), repository.py (the folder), served.py (one loaded version),
batcher.py (dynamic batching), manager.py (versions, hot reload), metrics.py, auth.py,
limits.py; the fronts: http.py (ASGI app), socket_server.py + protocol.py + client.py;
server.py runs them all. Language models (model.gguf, or a Hugging Face folder): served_lm.py
with engine/lm/scheduler.py, OpenAI's API in openai.py + openai_http.py.
"""

from __future__ import annotations


def __getattr__(name):  # the fronts import their server libraries only when used
    if name == "Server":
        from .server import Server
        return Server
    if name == "Client":
        from .client import Client
        return Client
    if name == "ModelManager":
        from .manager import ModelManager
        return ModelManager
    raise AttributeError(f"module 'engine.serve' has no attribute {name!r}")
