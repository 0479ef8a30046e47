"""The cost of the first call at a new input signature (a batch size not seen before).

The engine plans once per input signature; onnxruntime, given a symbolic batch dimension,
allocates per call instead. A service that sees many batch sizes pays this once per size (the
engine caches plans, LRU, 64 by default), so it matters how much it is. For each framework the
model is loaded and warmed at batch 1, then each new batch size is called twice in a row:
`first` is the first call, `next` the second, `extra` their difference. Medians over the sizes.
"""

from __future__ import annotations

import time

import numpy as np

from . import models as M

NEW_BATCHES = (2, 3, 5, 7, 9, 12, 17, 24, 31, 40, 48, 63)


def _first_and_next(predict, model: str) -> tuple[float, float]:
    predict(M.make_input(model, 1))
    firsts, nexts = [], []
    for b in NEW_BATCHES:
        x = M.make_input(model, b)
        t0 = time.perf_counter_ns()
        predict(x)
        t1 = time.perf_counter_ns()
        predict(x)
        t2 = time.perf_counter_ns()
        firsts.append((t1 - t0) / 1e3)
        nexts.append((t2 - t1) / 1e3)
    return float(np.median(firsts)), float(np.median(nexts))


def run(threads: int, frameworks: list[str], log) -> list[dict]:
    rows = []
    for model in M.MODELS:
        weights = M.make_weights(model)
        for fw in frameworks:
            if fw not in ("engine", "ort"):
                continue  # OpenVINO and PyTorch: no per-signature step to compare
            try:
                # A fresh model, symbolic batch for onnxruntime; the engine's batch is always free.
                predict = (M.build_predict("engine", model, weights, threads) if fw == "engine"
                           else M.ort_predict(M.build_ort(model, weights, threads, batch=None)))
                first, nxt = _first_and_next(predict, model)
            except Exception as e:
                log(f"  first call {model} {fw}: {type(e).__name__}: {e}")
                continue
            rows.append({"model": model, "framework": fw, "first_us": first, "next_us": nxt,
                         "extra_us": first - nxt})
            log(f"  first call {model} {fw}: first {first:.0f} us, next {nxt:.0f} us")
    return rows


def table(rows: list[dict], format_table) -> str:
    body = [[r["model"], M.FRAMEWORK_NAMES[r["framework"]], f"{r['first_us']:.0f}", f"{r['next_us']:.0f}",
             f"{r['extra_us']:.0f}"] for r in rows]
    return format_table(["model", "framework", "first call us", "next call us", "extra us"], body,
                        "First call at a new batch size (median over batch sizes 2..63; lower is better)",
                        left=(0, 1))
