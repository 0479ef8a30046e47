"""ONNX models, side by side: the engine (engine.load on the .onnx file), onnxruntime (the same
file), OpenVINO (the same file, f32) and PyTorch (the module it was exported from), same
threads, one process.

Models: ResNet-50 and MobileNetV2 (transformers configs, random weights), the seed-004
Embedding->LSTM->Dense->Dense net at sequence 100, and SqueezeNet from the onnx wheel's `light`
suite (random weights; no torch module, so no PyTorch column); batch 1 and 8. The transformer
section runs the same way over BERT-base and all-MiniLM-L6-v2 (real weights) at sequence 128,
batch 1 and 8, ViT-base at 224 and a GPT-2 decoder (12 layers, LM head) at sequence 256, batch 1. Plus load time: file -> first prediction, against onnxruntime's session
creation + first run. Outputs are checked against onnxruntime before anything is timed.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path

import numpy as np

from .timing import best_peer, round_robin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CNN_MODELS = ("resnet50", "mobilenetv2", "seed_lstm", "squeezenet")
TRANSFORMER_MODELS = ("bert-base", "minilm", "vit-base", "gpt2")
MODELS = CNN_MODELS + TRANSFORMER_MODELS
BATCHES = (1, 8)
BATCHES_OF = {"vit-base": (1,), "gpt2": (1,)}
_HF_NAMES = {"resnet50": "resnet", "mobilenetv2": "mobilenet", "bert-base": "bert", "minilm": "minilm",
             "vit-base": "vit", "gpt2": "gpt2"}


def _source(name: str):
    """(onnx path, feeds at batch 1, torch module or None)."""
    import exports

    if name in _HF_NAMES:
        # Transformers go through torch's default (dynamo) exporter, as users' files now do.
        path, feeds = exports.export(_HF_NAMES[name], size="full", dynamo=name in TRANSFORMER_MODELS)
        module = exports._Positional(exports._hf(_HF_NAMES[name], "full")[0], list(feeds))
    elif name == "seed_lstm":
        path, feeds = exports.export("seed_lstm")
        module = exports.seed_module("seed_lstm")[0]
        feeds = {k: v[:1] for k, v in feeds.items()}
    elif name == "squeezenet":
        from conformance import onnx_cases as oc
        src = oc.model_data_dir() / "light" / "light_squeezenet.onnx"
        path = exports.random_weights_like(src, exports.CACHE / "light_squeezenet_random.onnx")
        feeds = {"data_0": np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)}
        module = None
    else:
        raise ValueError(name)
    if module is not None:
        module.eval()
    return path, feeds, module


def _batch_is_free(path) -> bool:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    dims = [v.type.tensor_type.shape.dim[0] for v in m.graph.input if v.name not in inits]
    return all(not d.HasField("dim_value") for d in dims)


def _at_batch(feeds: dict, batch: int) -> dict:
    return {k: np.ascontiguousarray(np.repeat(v[:1], batch, axis=0)) for k, v in feeds.items()}


def _engine(path, threads):
    import engine
    engine.set_num_threads(threads)
    m = engine.load(path)
    return lambda f: m.run(None, f)


def _ort(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda f: s.run(None, f)


def _openvino(path, threads):
    import openvino as ov

    from .models import openvino_config
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", openvino_config(threads))
    req = compiled.create_infer_request()

    def run(f):
        res = req.infer(f)
        return [res[o] for o in compiled.outputs]
    return run


def _torch(module, threads):
    import torch
    torch.set_num_threads(threads)

    def run(f):
        with torch.inference_mode():
            out = module(*[torch.from_numpy(v) for v in f.values()])
        out = out if isinstance(out, tuple) else (out,)
        return [o.numpy() for o in out]
    return run


BUILDERS = {"engine": _engine, "ort": _ort, "openvino": _openvino}


def run(threads: int, frameworks: list[str], log, quick: bool = False,
        models: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Rows and load times of `models` (default: CNN_MODELS)."""
    unknown = sorted(set(models or ()) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown onnx model(s) {unknown}; known: {', '.join(MODELS)}")
    rows, loads = [], []
    for name in models or CNN_MODELS:
        try:
            path, feeds, module = _source(name)
        except Exception as e:
            log(f"  {name}: cannot export ({type(e).__name__}: {e})")
            continue
        fns = {}
        for fw in frameworks:
            if fw == "torch" and module is None:
                continue  # no source module (a model-zoo file)
            try:
                fns[fw] = _torch(module, threads) if fw == "torch" else BUILDERS[fw](path, threads)
            except Exception as e:
                if fw != "torch" or module is not None:
                    log(f"  {name} {fw}: build failed: {type(e).__name__}: {str(e)[:200]}")
        loads.append(_load_times(name, path, feeds, threads, frameworks))
        for batch in BATCHES_OF.get(name, BATCHES):
            if batch != 1 and not _batch_is_free(path):
                continue  # the file fixes its batch size
            f = _at_batch(feeds, batch)
            row = {"model": name, "batch": batch, "latency_us": {}, "max_abs_diff": {}, "errors": {}}
            try:
                ref = fns["ort"](f) if "ort" in fns else None
            except Exception as e:
                log(f"  {name} batch {batch}: onnxruntime failed ({type(e).__name__}); no reference, row skipped")
                continue
            timed = {}
            for fw, fn in fns.items():
                try:
                    out = fn(f)
                except Exception as e:
                    row["errors"][fw] = f"{type(e).__name__}: {str(e)[:200]}"
                    continue
                if ref is not None:
                    d = max(float(np.abs(np.asarray(a, np.float64) - b).max()) for a, b in zip(out, ref))
                    row["max_abs_diff"][fw] = d
                    if not d <= 2e-3 * max(1.0, max(float(np.abs(b).max()) for b in ref)):
                        row["errors"][fw] = f"output differs from onnxruntime by {d:.3g}"
                        continue
                timed[fw] = fn
            best = round_robin(timed, f, 1 if quick else 3, min_time=0.2 if quick else 0.5, min_calls=5,
                               warmup_calls=2)
            row["latency_us"] = best
            bp, ratio = best_peer(best)
            if bp is not None:
                row["best_peer"], row["ratio"] = bp, ratio
                if "ort" in best:
                    row["ratio_ort"] = best["engine"] / best["ort"]
            rows.append(row)
            log(f"  {name} batch {batch}: " + ", ".join(f"{k} {v / 1000:.2f} ms" for k, v in best.items())
                + "".join(f"  ! {k}: {v}" for k, v in row["errors"].items()))
        del fns
        gc.collect()
    return rows, loads


def _load_times(name, path, feeds, threads, frameworks) -> dict:
    """Seconds from the file to the first prediction (engine) and to onnxruntime's first run,
    each with its libraries already imported (import onnx, once per process, is ~0.1-0.9 s)."""
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    out = {"model": name, "file_mb": os.path.getsize(path) / 1e6}
    for fw in ("engine", "ort"):
        if fw not in frameworks:
            continue
        gc.collect()
        t0 = time.perf_counter()
        try:
            BUILDERS[fw](path, threads)(feeds)
            out[fw] = time.perf_counter() - t0
        except Exception as e:
            out[fw] = None
            out[f"{fw}_error"] = f"{type(e).__name__}: {str(e)[:160]}"
    return out


NAMES = {"engine": "engine", "ort": "onnxruntime", "openvino": "OpenVINO", "torch": "PyTorch"}


def table(rows, loads, format_table, frameworks) -> str:
    headers = ["model", "batch"] + [f"{NAMES[f]} ms" for f in frameworks] + ["engine/onnxruntime", "engine/best peer"]
    body = []
    for r in rows:
        lat = r["latency_us"]
        cells = [r["model"], r["batch"]]
        cells += [f"{lat[f] / 1000:.2f}" if f in lat else ("FAIL" if f in r["errors"] else "-") for f in frameworks]
        cells.append(f"{r['ratio_ort']:.2f}" if "ratio_ort" in r else "-")
        cells.append(f"{r['ratio']:.2f} ({NAMES[r['best_peer']]})" if "ratio" in r else "-")
        body.append(cells)
    t1 = format_table(headers, body, "ONNX models: median latency per run() call, milliseconds (lower is better)")
    lbody = [[r["model"], f"{r['file_mb']:.1f}", _s(r.get("engine")), _s(r.get("ort")),
              f"{r['engine'] / r['ort']:.2f}" if r.get("engine") and r.get("ort") else "-"] for r in loads]
    t2 = format_table(["model", "file MB", "engine load s", "onnxruntime load s", "engine/onnxruntime"], lbody,
                      "Load: file -> first prediction, seconds (lower is better)")
    return t1 + "\n\n" + t2


def _s(v):
    return "-" if v is None else f"{v:.2f}"
