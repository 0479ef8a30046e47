"""The baseline: the model server people write by hand today, FastAPI + uvicorn + onnxruntime.

    python -m benchmarks.serve_baseline --model-file cnn.onnx [--name cnn] [--threads 2] [--mode async|sync]

A pydantic model of the KServe v2 JSON request, one ``onnxruntime.InferenceSession``
(``intra_op_num_threads`` = the engine's thread count), ``np.asarray(data, float32).reshape(shape)``,
``sess.run``, the v2 JSON answer. ``--mode async`` is the common form (an ``async def`` endpoint
calling ``sess.run`` on the event loop); ``--mode sync`` is a plain ``def`` endpoint, which
FastAPI runs in its thread pool. The benchmark runs both and reports the better one.

It runs as its own process under uvicorn, one worker, with the loop and HTTP parser uvicorn picks
(``auto``: uvloop and httptools when installed), access log off (the setting that favours it).
It binds port 0 on 127.0.0.1, prints ``{"address": "127.0.0.1:PORT", "pid": N}`` on stdout
and serves until stdin closes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
from typing import Optional

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class InferTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferRequest(BaseModel):
    id: Optional[str] = None
    inputs: list[InferTensor]


def create_app(model_file: str, *, name: str = "cnn", threads: int = 2, mode: str = "async",
               spinning: bool = True) -> FastAPI:
    """The FastAPI app serving ``model_file`` as model ``name`` on ``/v2/models/{name}/infer``.
    ``spinning=False`` stops onnxruntime's pool threads from spinning between calls (not its
    default; it leaves the cores to the event loop)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model_file, so, providers=["CPUExecutionProvider"])
    output_names = [o.name for o in sess.get_outputs()]
    app = FastAPI()

    def predict(model_name: str, req: InferRequest) -> dict:
        if model_name != name:
            raise HTTPException(404, f"unknown model {model_name!r}")
        try:
            feeds = {t.name: np.asarray(t.data, dtype=np.float32).reshape(t.shape) for t in req.inputs}
            outs = sess.run(None, feeds)
        except Exception as e:  # a wrong shape or input name is the client's mistake, not a 500
            raise HTTPException(400, str(e)) from None
        return {"model_name": name, "id": req.id, "outputs": [
            {"name": n, "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}
            for n, y in zip(output_names, outs)]}

    if mode == "async":
        @app.post("/v2/models/{model_name}/infer")
        async def infer(model_name: str, req: InferRequest):
            return predict(model_name, req)
    elif mode == "sync":
        @app.post("/v2/models/{model_name}/infer")
        def infer(model_name: str, req: InferRequest):  # FastAPI runs it in its thread pool
            return predict(model_name, req)
    else:
        raise ValueError(f"mode must be 'async' or 'sync', got {mode!r}")

    @app.get("/v2/health/ready")
    async def ready():
        return {"ready": True}

    return app


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.serve_baseline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-file", required=True)
    ap.add_argument("--name", default="cnn")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--mode", choices=("async", "sync"), default="async")
    ap.add_argument("--no-spinning", action="store_true", help="onnxruntime session.intra_op.allow_spinning=0")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args(argv)
    import uvicorn

    app = create_app(a.model_file, name=a.name, threads=a.threads, mode=a.mode, spinning=not a.no_spinning)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((a.host, a.port))
    sock.listen(1024)
    server = uvicorn.Server(uvicorn.Config(app, loop="auto", http="auto", workers=1, log_level="warning",
                                           access_log=False, lifespan="off"))

    def stop_when_stdin_closes() -> None:
        sys.stdin.read()
        server.should_exit = True
    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    host, port = sock.getsockname()[:2]
    print(json.dumps({"address": f"{host}:{port}", "pid": os.getpid()}), flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
