"""`engine bench http://host:port --model m`: load on a live KServe v2 server.

    result = bench_server("http://127.0.0.1:8000", model="digits", concurrency=[1, 16], seconds=3)

The model's first input (name, datatype, shape) is read from `GET /v2/models/{m}`; a request is
built once from it (v2 JSON, or the binary tensor extension with binary=True), sent once and its
answer checked (200, the output present with the right batch) before anything is timed. Then for
each concurrency the closed-loop generator (engine/bench/loadgen.py) runs in a worker process of
its own, so `loadgen_cores` is the generator's CPU alone: near 1.0 means its single event loop
was saturated and the figures are the generator's limit, not the server's.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request

from ..errors import EngineError
from . import inputs as inp
from .loadgen import Workload, decode_v2_outputs, http_request, parse_http_response
from .runner import Worker, WorkerFailed, machine

_DTYPES = {"FP32": "float32", "FP64": "float64", "INT64": "int64", "INT32": "int32"}
LOADGEN_BOUND = 0.9  # cores: the generator is one event loop, so one core is its ceiling


def _metadata(base: str, model: str) -> dict:
    url = f"{base}/v2/models/{urllib.parse.quote(model)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise EngineError(f"bench: {url}: HTTP {e.code} {e.read()[:200].decode(errors='replace')}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise EngineError(f"bench: {url}: no model metadata ({e})") from None


def _probe(w: Workload, batch: int) -> None:
    """One request on a blocking socket, decoded in full: a benchmark never times error answers."""
    try:
        with socket.create_connection((w.host, w.port), timeout=10) as s:
            s.sendall(http_request(w))
            raw = b""
            while True:
                status, headers, body, used = parse_http_response(raw)
                if used:
                    break
                chunk = s.recv(1 << 16)
                if not chunk:
                    raise EngineError("bench: the server closed the connection before answering")
                raw += chunk
    except OSError as e:
        raise EngineError(f"bench: {w.host}:{w.port}: {e}") from None
    if status != 200:
        raise EngineError(f"bench: the check request got HTTP {status}: {body[:300].decode(errors='replace')}")
    out = decode_v2_outputs(headers, body)
    y = out.get(w.output_name)
    if y is None or y.shape[:1] != (batch,):
        raise EngineError(f"bench: the check answer has no output {w.output_name!r} with batch {batch} "
                          f"(it has {[(k, v.shape) for k, v in out.items()]})")


def bench_server(url: str, *, model: str, concurrency, seconds: float = 10.0, warmup: float = 1.0,
                 batch: int = 1, shapes: dict | None = None, seed: int = 0, binary: bool = False,
                 progress=None) -> dict:
    """Closed-loop load at each concurrency; the result dict documented in docs/bench.md."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise EngineError(f"bench: {url!r}: expected http://HOST:PORT (https is not supported by the generator)")
    if not model:
        raise EngineError("bench: server mode needs --model NAME")
    base = f"http://{parsed.netloc}"
    meta = _metadata(base, model)
    try:
        spec, out_spec = meta["inputs"][0], meta["outputs"][0]
        dtype = _DTYPES[spec["datatype"]]
    except (KeyError, IndexError, TypeError):
        raise EngineError(f"bench: model {model!r}: metadata without a usable input/output: {meta}") from None
    model_shape = tuple(None if int(d) < 0 else int(d) for d in spec["shape"])
    sig = [(spec["name"], model_shape, dtype)]
    x = inp.make_inputs(sig, batch, shapes or {}, seed)[spec["name"]]
    w = Workload("v2binary" if binary else "v2json", parsed.hostname, parsed.port or 80, model,
                 spec["name"], out_spec["name"], x)
    _probe(w, batch)
    results = []
    worker = Worker("loadgen")
    try:
        for i, c in enumerate(concurrency):
            try:
                r = worker.call("load_test", w.__dict__, {"concurrency": c, "duration": seconds, "warmup": warmup},
                                timeout=warmup + seconds + 60)
            except WorkerFailed as e:
                raise EngineError(f"bench: the load generator failed at concurrency {c}: {e}") from None
            results.append({"concurrency": c, "requests": r["requests"], "rps": r["rps"],
                            **{k.replace("_us", "_ms"): (None if r[k] is None else r[k] / 1e3)
                               for k in ("p50_us", "p90_us", "p99_us", "mean_us")},
                            "errors": r["errors"], "error_reasons": r["error_reasons"],
                            "loadgen_cores": r["loadgen_cores"],
                            "loadgen_cpu_us_per_req": r["loadgen_cpu_us_per_req"],
                            "loadgen_bound": r["loadgen_cores"] >= LOADGEN_BOUND})
            if progress:
                progress(i + 1, len(concurrency))
    finally:
        worker.close()
    return {"schema": "engine-bench/1", "mode": "server", "url": url, "model": model,
            "settings": {"concurrency": list(concurrency), "seconds": seconds, "warmup": warmup, "batch": batch,
                         "kind": w.kind, "seed": seed},
            "input": {"name": spec["name"], "datatype": spec["datatype"], "shape": list(x.shape)},
            "machine": machine(), "results": results}
