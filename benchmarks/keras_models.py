"""Keras files, side by side: the seed-004 Embedding -> LSTM(return_sequences) -> Dense(relu)
-> Dense(1) net, built and saved as .h5 by real Keras 3 (torch backend), loaded by
engine.load; against Keras itself running the model it saved, PyTorch (the same net with the
same weights as a torch module), and onnxruntime and OpenVINO (that module exported to ONNX).
Sequence 100, batch 1 and 64, same threads for all, one process. Every peer's output is
checked against Keras's before anything is timed; ratios are against the best peer of the
same run. A peer that is not installed is reported, not fatal.

    python -m benchmarks --only keras
"""

from __future__ import annotations

import gc
import os
import tempfile
from pathlib import Path

import numpy as np

from .timing import best_peer, round_robin

# seed 004's shape, as tests/exports.py has it: vocabulary 1000, embedding 32, LSTM 64, Dense 32
VOCAB, EMBED, UNITS, DENSE, SEQ = 1000, 32, 64, 32, 100
BATCHES = (1, 64)
NAMES = {"engine": "engine", "keras": "Keras", "torch": "PyTorch", "ort": "onnxruntime", "openvino": "OpenVINO"}
PEERS = ("keras", "torch", "ort", "openvino")


def _keras_model(threads: int):
    os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported
    import keras
    import torch

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"Keras runs on the {keras.backend.backend()} backend, not torch")
    torch.set_num_threads(threads)
    L = keras.layers
    model = keras.Sequential([keras.Input((SEQ,), dtype="int32"), L.Embedding(VOCAB, EMBED),
                              L.LSTM(UNITS, return_sequences=True), L.Dense(DENSE, activation="relu"), L.Dense(1)])
    rng = np.random.default_rng(4)  # non-default weights: every bias and the recurrent kernel count
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _keras_predict(model):
    import torch

    def run(x):  # the model called directly: predict() adds a data pipeline per call
        with torch.inference_mode():
            return np.asarray(model(x, training=False).cpu())
    return run


def torch_seed004(weights: list):
    """The seed-004 net in torch with these (Keras-layout) weights, sizes read from them: Keras
    gates i,f,c,o are torch's i,f,g,o; Keras's one bias goes into bias_ih (bias_hh zero);
    Dense kernels (in, out) are Linear weights transposed. (benchmarks.train_steps trains it.)"""
    import torch
    from torch import nn

    emb, kernel, rec, bias, w1, b1, w2, b2 = weights
    vocab, embed = emb.shape
    units, dense = rec.shape[0], w1.shape[1]

    class Seed004(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.lstm = nn.Embedding(vocab, embed), nn.LSTM(embed, units, batch_first=True)
            self.fc1, self.fc2 = nn.Linear(units, dense), nn.Linear(dense, 1)

        def forward(self, ids):
            h, _ = self.lstm(self.emb(ids))
            return self.fc2(torch.relu(self.fc1(h)))

    m = Seed004()
    sd = {"emb.weight": emb, "lstm.weight_ih_l0": kernel.T, "lstm.weight_hh_l0": rec.T, "lstm.bias_ih_l0": bias,
          "lstm.bias_hh_l0": np.zeros_like(bias), "fc1.weight": w1.T, "fc1.bias": b1, "fc2.weight": w2.T,
          "fc2.bias": b2}
    m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()})
    return m


def _torch_module(weights: list):
    return torch_seed004(weights).eval()


def _torch_predict(module, threads: int):
    import torch
    torch.set_num_threads(threads)

    def run(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()
    return run


def _export_onnx(module, path: Path) -> Path:
    import torch
    ids = torch.zeros((2, SEQ), dtype=torch.int64)
    torch.onnx.export(module, (ids,), str(path), input_names=["ids"], output_names=["y"], opset_version=17,
                      dynamic_axes={"ids": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    return path


def _ort_predict(path: Path, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda x: s.run(None, {"ids": x})[0]


def _openvino_predict(path: Path, threads: int):
    import openvino as ov

    from .models import openvino_config
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", openvino_config(threads))
    req = compiled.create_infer_request()
    return lambda x: req.infer({0: x})[compiled.outputs[0]].copy()


def _engine_predict(path: Path, threads: int):
    import engine
    engine.set_num_threads(threads)
    m = engine.load(path)
    return m.predict, m


def build(threads: int, frameworks: list, workdir: Path, log) -> tuple[dict, object, dict]:
    """({framework: predict(ids int64) -> (batch, SEQ, 1)}, the engine Model, {peer: why not})."""
    fns, missing, engine_model = {}, {}, None
    try:
        kmodel = _keras_model(threads)
    except Exception as e:  # no Keras: nothing to load a file of
        return {}, None, {"keras": f"{type(e).__name__}: {e}"}
    h5 = workdir / "seed004.h5"
    kmodel.save(h5)
    if "keras" in frameworks:
        fns["keras"] = _keras_predict(kmodel)
    if "engine" in frameworks:
        try:
            fns["engine"], engine_model = _engine_predict(h5, threads)
        except Exception as e:
            missing["engine"] = f"{type(e).__name__}: {e}"
    module = None
    try:
        module = _torch_module([np.asarray(w) for w in kmodel.get_weights()])
    except ImportError as e:
        missing["torch"] = str(e)
    if module is not None and "torch" in frameworks:
        fns["torch"] = _torch_predict(module, threads)
    onnx = None
    if module is not None and ({"ort", "openvino"} & set(frameworks)):
        try:
            onnx = _export_onnx(module, workdir / "seed004.onnx")
        except Exception as e:
            missing["ort"] = missing["openvino"] = f"ONNX export failed: {type(e).__name__}: {e}"
    for fw, make in (("ort", _ort_predict), ("openvino", _openvino_predict)):
        if onnx is None or fw not in frameworks:
            continue
        try:
            fns[fw] = make(onnx, threads)
        except ImportError as e:
            missing[fw] = f"not installed ({e.name or e})"
        except Exception as e:
            missing[fw] = f"{type(e).__name__}: {str(e)[:160]}"
    for fw, why in missing.items():
        log(f"  keras seed004 {fw}: left out: {why}")
    return fns, engine_model, missing


def run(threads: int, frameworks: list, log, quick: bool = False) -> tuple[list[dict], dict]:
    frameworks = list(frameworks) + (["keras"] if "keras" not in frameworks else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="engine-bench-keras-") as tmp:
        fns, _, missing = build(threads, frameworks, Path(tmp), log)
        rng = np.random.default_rng(0)
        for batch in BATCHES:
            x = rng.integers(1, VOCAB, (batch, SEQ)).astype(np.int64)
            row = {"model": "seed004_lstm", "batch": batch, "seq": SEQ, "latency_us": {}, "max_abs_diff": {},
                   "errors": {}}
            ref = np.asarray(fns["keras"](x), np.float64) if "keras" in fns else None
            timed = {}
            for fw, fn in fns.items():
                try:
                    y = np.asarray(fn(x), np.float64)
                except Exception as e:
                    row["errors"][fw] = f"{type(e).__name__}: {str(e)[:200]}"
                    continue
                if ref is not None:
                    d = float(np.abs(y - ref).max()) if y.shape == ref.shape else float("inf")
                    row["max_abs_diff"][fw] = d
                    if not d <= 1e-4 * max(1.0, float(np.abs(ref).max())):
                        row["errors"][fw] = f"output differs from Keras's by {d:.3g} (shape {y.shape})"
                        continue
                timed[fw] = fn
            best = round_robin(timed, x, 1 if quick else 3, min_time=0.2 if quick else 0.5, min_calls=5,
                               warmup_calls=2)
            row["latency_us"] = best
            bp, ratio = best_peer(best)
            if bp is not None:
                row["best_peer"], row["ratio"] = bp, ratio
            rows.append(row)
            log(f"  seed004 batch {batch}: " + ", ".join(f"{k} {v / 1000:.2f} ms" for k, v in best.items())
                + "".join(f"  ! {k}: {v}" for k, v in row["errors"].items()))
        del fns
        gc.collect()
    return rows, missing


def table(rows: list, missing: dict, format_table, frameworks: list) -> str:
    cols = [f for f in ("engine",) + PEERS if f in frameworks or f == "keras"]
    headers = ["model", "batch"] + [f"{NAMES[f]} ms" for f in cols] + ["engine/best peer"]
    body = []
    for r in rows:
        lat = r["latency_us"]
        cells = [f"seed004 .h5 (seq {r['seq']})", r["batch"]]
        cells += [f"{lat[f] / 1000:.2f}" if f in lat else ("FAIL" if f in r["errors"] else "-") for f in cols]
        cells.append(f"{r['ratio']:.2f} ({NAMES[r['best_peer']]})" if "ratio" in r else "-")
        body.append(cells)
    out = format_table(headers, body, "Keras file (seed-004 Embedding->LSTM->Dense->Dense): median latency per "
                                      "call, milliseconds (lower is better)")
    notes = [f"  ! {NAMES[f]} left out: {why}" for f, why in missing.items()]
    notes += [f"  ! batch {r['batch']} {NAMES[f]} not timed: {m}" for r in rows for f, m in r["errors"].items()]
    return "\n".join([out] + notes)
