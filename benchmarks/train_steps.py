"""Training steps and epochs, engine against PyTorch and Keras on the same nets, the same
batches and the same initial weights, same thread count for all, one process.

    python -m benchmarks --only train        # or: python -m benchmarks.train_steps [--threads N] [--quick]

Rows:

* seed-000 CNN, one training step at batch 64 and 256: Input(28, 28, 1) -> Conv2D(32, 3x3,
  relu) -> MaxPooling2D(2x2) -> Flatten -> Dense(128, relu) -> Dense(10, softmax), Adam,
  sparse categorical cross-entropy. Engine: ``model.train_on_batch(x, y)`` (forward, loss,
  backward and the Adam update as one native program); PyTorch: the same net as an
  ``nn.Sequential`` on NCHW input (conv kernel HWIO -> OIHW, the first Dense's rows permuted
  from Keras's HWC flatten order to CHW, Dense kernels transposed), ``F.cross_entropy`` on
  the logits, ``zero_grad`` + ``backward`` + ``torch.optim.Adam`` (default and fused=True; the
  faster is the peer). Target: engine <= 0.5x the best peer.
* seed-004 LSTM, one training step at batch 64: Input(100 int ids) -> Embedding(1000, 64) ->
  LSTM(64, return_sequences) -> Dense(32, relu) -> Dense(1), mse, Adam. PyTorch:
  nn.Embedding + nn.LSTM(batch_first) + Linear (Keras gates i,f,c,o are torch's i,f,g,o;
  kernels transposed; Keras's one bias in bias_ih, bias_hh zero). Target: <= 0.7x.
* One epoch on scikit-learn's digits (8x8x1 images / 16, the 1347 training samples of a 75/25
  split, batch 32, verbose=0): a seed-000-style CNN for 8x8 input and an MLP (Dense(64, relu)
  -> Dense(10, softmax) on the 64 pixels); engine ``fit`` against Keras 3 ``fit`` (torch
  backend). Each framework's first fit() plans / traces and is not counted; then one
  ``fit(epochs=1)`` per round, the epoch timed by a callback (on_epoch_begin -> on_epoch_end).

Before anything is timed: the engine's predict() and every peer's forward on the same weights
and batch must agree (<= 1e-4), and the loss of the first step of each (before any update)
must agree with the engine's (relative 1e-4); a row that fails is not timed. Steps are timed
with ``timing.measure`` (median of single steps; they keep updating the weights, as training
does), round-robin, order rotated each round, the best round kept. A net whose layers have no
backward rule in the engine yet (``NoGradientError``) gets "n/a" in the engine column; the
peers are still checked and timed.
"""

from __future__ import annotations

import math
import os
import re
import time

import numpy as np

from .timing import measure

STEP_TOL = 1e-4  # relative, first-step loss; absolute on the forward outputs
CNN_BATCHES = (64, 256)
LSTM_BATCH, VOCAB, EMBED, UNITS, DENSE, SEQ = 64, 1000, 64, 64, 32, 100
DIGITS_BATCH = 32
NAMES = {"engine": "engine", "engine trainer": "engine (Trainer)", "torch": "PyTorch",
         "torch fused": "PyTorch fused", "keras": "Keras"}
ENGINE_KEYS = ("engine", "engine trainer")


class _NA(Exception):
    """The engine cannot train this net yet (a layer without a backward rule)."""


def _na_text(e: Exception) -> str:
    m = re.search(r"op (\w+) has no backward rule", str(e))
    return f"n/a ({m.group(1) if m else 'training'} training not on main)"


def _is_no_gradient(e: Exception) -> bool:
    try:
        from engine.autograd import NoGradientError
    except ImportError:  # an engine without training at all
        return False
    return isinstance(e, NoGradientError)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


# ----------------------------------------------------------------------------- nets

def _engine_cnn(weights):
    from . import models as M
    m = M.engine_sequential("cnn")
    m.set_weights(weights)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return m


def _torch_cnn(weights):
    import torch
    from torch import nn

    from . import models as M
    net = nn.Sequential(nn.Conv2d(M.IMG[2], M.CONV_OC, (M.KH, M.KW)), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
                        nn.Linear(M.FLAT, M.HIDDEN), nn.ReLU(), nn.Linear(M.HIDDEN, M.CLASSES))
    k, b, w1, b1, w2, b2 = weights
    sd = {"0.weight": k.transpose(3, 2, 0, 1), "0.bias": b, "4.weight": M.dense1_rows_chw(w1).T, "4.bias": b1,
          "6.weight": w2.T, "6.bias": b2}
    net.load_state_dict({n: torch.from_numpy(np.ascontiguousarray(v)) for n, v in sd.items()})
    return net


def _lstm_weights(seed: int = 4) -> list[np.ndarray]:
    """Keras order and layouts; small non-zero values everywhere (biases included) so the
    check exercises every weight's mapping."""
    rng = np.random.default_rng(seed)
    shapes = [(VOCAB, EMBED), (EMBED, 4 * UNITS), (UNITS, 4 * UNITS), (4 * UNITS,), (UNITS, DENSE), (DENSE,),
              (DENSE, 1), (1,)]
    return [rng.normal(0.0, 0.1, s).astype(np.float32) for s in shapes]


def _engine_lstm(weights):
    from engine import nn
    m = nn.Sequential([nn.Input((SEQ,), dtype="int32"), nn.Embedding(input_dim=VOCAB, output_dim=EMBED),
                       nn.LSTM(UNITS, return_sequences=True), nn.Dense(DENSE, activation="relu"), nn.Dense(1)])
    m.set_weights(weights)
    m.compile(optimizer="adam", loss="mse")
    return m


def _torch_lstm(weights):
    from .keras_models import torch_seed004

    return torch_seed004(weights)


# ----------------------------------------------------------------------------- one training step

def _torch_step(net, x, y, loss_fn, fused: bool):
    """step() -> the batch loss (a float, as train_on_batch returns it): zero_grad, forward,
    loss, backward, Adam step."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True) if fused else torch.optim.Adam(net.parameters(),
                                                                                                  lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def _engine_step(model, x, y):
    """The row: the engine's train_on_batch (Keras's API), one native program per call (forward, loss, backward,
    Adam update)."""
    return lambda: model.train_on_batch(x, y)


def _engine_trainer_step(model, x, y):
    """The note: the model's Trainer called directly, which skips train_on_batch's per-call
    Python (argument checks, output-shape inference, trained weights written back to the
    layers). Private API: if it moves, only the note goes."""
    feeds = model._feeds(x)
    yy = model._targets(y, len(y), model._pred_shape(feeds))
    trainer = model._get_trainer()
    return lambda: trainer.train_batch(feeds, yy)[0]


def _step_case(case: str, batch: int, target: float, threads: int, log, quick: bool, *, make_engine, make_torch,
               x, y, xt, yt, loss_fn, probs) -> dict:
    """One step-time row. make_engine() -> engine nn model (compiled, weights set);
    make_torch() -> torch module on the same weights; x, y: the engine's batch (NHWC /
    int ids, numpy); xt, yt: torch's; loss_fn(out, yt); probs(out) -> what engine.predict gives."""
    import torch

    row = {"case": case, "kind": "step", "batch": batch, "threads": threads, "target": target, "ms": {},
           "errors": {}, "checks": {}, "notes": []}
    # Forward outputs first: the weight mapping, independent of the engine's training.
    model = make_engine()
    want = np.asarray(model.predict(x), np.float64)
    steps, first_loss = {}, {}
    for name, fused in (("torch", False), ("torch fused", True)):
        try:
            net = make_torch()
            with torch.no_grad():
                got = np.asarray(probs(net(xt)), np.float64)
            d = float(np.abs(got - want).max()) if got.shape == want.shape else math.inf
            row["checks"][f"{name} forward vs engine predict"] = d
            if not d <= STEP_TOL:
                row["errors"][name] = f"forward differs from the engine's predict by {d:.3g} (shape {got.shape})"
                continue
            step = _torch_step(net, xt, yt, loss_fn, fused)
            first_loss[name] = step()
            steps[name] = step
        except Exception as e:
            row["errors"][name] = f"{type(e).__name__}: {str(e)[:200]}"
    # The engine: its first step's loss against torch's first (same weights, same batch).
    try:
        tob = _engine_step(model, x, y)
        first_loss["engine"] = float(tob())
        steps["engine"] = tob
        try:  # the same program without train_on_batch's per-call Python (a note, not the row)
            steps["engine trainer"] = _engine_trainer_step(model, x, y)
        except Exception as e:
            row["notes"].append(f"engine Trainer not timed: {type(e).__name__}: {str(e)[:120]}")
    except Exception as e:
        if _is_no_gradient(e):
            row["na"] = _na_text(e)
            row["notes"].append(f"engine: {e}")
        else:
            row["errors"]["engine"] = f"{type(e).__name__}: {str(e)[:200]}"
    ref = first_loss.get("torch", first_loss.get("torch fused"))
    row["first_loss"] = dict(first_loss)
    for name in list(first_loss) if ref is not None else []:
        r = _rel(first_loss[name], ref)
        row["checks"][f"{name} first-step loss rel. diff"] = r
        if not r <= STEP_TOL:
            row["errors"][name] = f"first-step loss {first_loss[name]:.7g} vs PyTorch's {ref:.7g} (rel. {r:.2g})"
            steps.pop(name)
            if name == "engine":
                steps.pop("engine trainer", None)
    for name, msg in row["errors"].items():
        log(f"  {case} b{batch} {name}: NOT TIMED: {msg}")
    _time_round_robin(steps, row, quick)
    return row


def _time_round_robin(steps: dict, row: dict, quick: bool) -> None:
    rounds, min_time, min_calls = (1, 0.3, 3) if quick else (3, 1.0, 5)
    best: dict[str, float] = {}
    order = list(steps)
    for r in range(rounds):  # round-robin, order rotated: the machine's noise hits everyone
        k = r % max(1, len(order))
        for name in order[k:] + order[:k]:
            t = measure(steps[name], min_time=min_time, min_calls=min_calls, warmup_time=0.05, warmup_calls=2)
            best[name] = min(best.get(name, math.inf), t.median_us)
    row["ms"] = {k: v / 1e3 for k, v in best.items()}
    _ratio(row)


def _ratio(row: dict) -> None:
    peers = {k: v for k, v in row["ms"].items() if k not in ENGINE_KEYS}
    if peers:
        row["best_peer"] = min(peers, key=peers.get)
        if "engine" in row["ms"]:
            row["ratio"] = row["ms"]["engine"] / peers[row["best_peer"]]


def run_cnn(threads: int, log, quick: bool) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from . import models as M
    weights = M.make_weights("cnn")
    rows = []
    for batch in CNN_BATCHES:
        x = M.make_input("cnn", batch)
        y = np.random.default_rng(batch).integers(0, M.CLASSES, batch).astype(np.int64)
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        yt = torch.from_numpy(y)
        rows.append(_step_case("CNN seed-000 step", batch, 0.5, threads, log, quick,
                               make_engine=lambda: _engine_cnn(weights), make_torch=lambda: _torch_cnn(weights),
                               x=x, y=y, xt=xt, yt=yt, loss_fn=F.cross_entropy,
                               probs=lambda out: torch.softmax(out, -1).numpy()))
    return rows


def run_lstm(threads: int, log, quick: bool) -> list[dict]:
    import torch
    import torch.nn.functional as F

    weights = _lstm_weights()
    rng = np.random.default_rng(40)
    x = rng.integers(0, VOCAB, (LSTM_BATCH, SEQ)).astype(np.int32)
    y = rng.normal(0.0, 0.5, (LSTM_BATCH, SEQ, 1)).astype(np.float32)
    xt, yt = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y)
    return [_step_case("LSTM seed-004 step", LSTM_BATCH, 0.7, threads, log, quick,
                       make_engine=lambda: _engine_lstm(weights), make_torch=lambda: _torch_lstm(weights),
                       x=x, y=y, xt=xt, yt=yt, loss_fn=F.mse_loss, probs=lambda out: out.numpy())]


# ----------------------------------------------------------------------------- digits epochs

def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1)
    x_train, _, y_train, _ = train_test_split(x, d.target.astype(np.int64), test_size=0.25, random_state=0)
    return np.ascontiguousarray(x_train), np.ascontiguousarray(y_train)  # 1347 samples


def _digits_engine(kind: str):
    from engine import nn
    if kind == "cnn":
        layers = [nn.Input((8, 8, 1)), nn.Conv2D(32, 3, activation="relu"), nn.MaxPooling2D(), nn.Flatten(),
                  nn.Dense(64, activation="relu"), nn.Dense(10, activation="softmax")]
    else:
        layers = [nn.Input((64,)), nn.Dense(64, activation="relu"), nn.Dense(10, activation="softmax")]
    m = nn.Sequential(layers)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return m


def _digits_keras(kind: str, weights):
    os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"Keras runs on the {keras.backend.backend()} backend, not torch")
    L = keras.layers
    if kind == "cnn":
        layers = [keras.Input((8, 8, 1)), L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                  L.Dense(64, activation="relu"), L.Dense(10, activation="softmax")]
    else:
        layers = [keras.Input((64,)), L.Dense(64, activation="relu"), L.Dense(10, activation="softmax")]
    m = keras.Sequential(layers)
    m.set_weights(weights)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return m


def _epoch_timer(base):
    class EpochTimer(base):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []
            self._t0 = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._t0)
    return EpochTimer()


def _digits_case(kind: str, threads: int, log, quick: bool, data) -> dict:
    import engine.callbacks

    x, y = data
    if kind == "mlp":
        x = np.ascontiguousarray(x.reshape(len(x), -1))
    case = {"cnn": "digits CNN epoch", "mlp": "digits MLP epoch"}[kind]
    row = {"case": case, "kind": "epoch", "batch": DIGITS_BATCH, "samples": len(x), "threads": threads,
           "target": None, "ms": {}, "errors": {}, "checks": {}, "notes": [], "fit_ms": {}}
    emodel = _digits_engine(kind)
    weights = emodel.get_weights()
    fits = {}

    # Same first batch from the same weights: the first step's losses must agree.
    xb, yb = x[:DIGITS_BATCH], y[:DIGITS_BATCH]
    first = {}
    try:
        first["engine"] = float(emodel.train_on_batch(xb, yb))
        fits["engine"] = (emodel, _epoch_timer(engine.callbacks.Callback))
    except Exception as e:
        if _is_no_gradient(e):
            row["na"] = _na_text(e)
            row["notes"].append(f"engine: {e}")
        else:
            row["errors"]["engine"] = f"{type(e).__name__}: {str(e)[:200]}"
    try:
        kmodel = _digits_keras(kind, weights)
        import keras
        first["keras"] = float(np.asarray(kmodel.train_on_batch(xb, yb)).reshape(-1)[0])
        fits["keras"] = (kmodel, _epoch_timer(keras.callbacks.Callback))
    except ImportError as e:
        row["notes"].append(f"Keras left out: not installed ({e.name or e})")
    except Exception as e:
        row["errors"]["keras"] = f"{type(e).__name__}: {str(e)[:200]}"
    row["first_loss"] = dict(first)
    if "engine" in first and "keras" in first:
        r = _rel(first["engine"], first["keras"])
        row["checks"]["engine first-step loss rel. diff vs Keras"] = r
        if not r <= STEP_TOL:
            row["errors"]["engine"] = f"first-step loss {first['engine']:.7g} vs Keras's {first['keras']:.7g}"
            fits.pop("engine")
    for name, msg in row["errors"].items():
        log(f"  {case} {name}: NOT TIMED: {msg}")

    def fit(name):
        model, timer = fits[name]
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=DIGITS_BATCH, epochs=1, verbose=0, callbacks=[timer])
        return time.perf_counter() - t0

    for name in list(fits):  # the first epoch plans (engine) / traces and builds (Keras): not counted
        try:
            fit(name)
        except Exception as e:
            row["errors"][name] = f"{type(e).__name__}: {str(e)[:200]}"
            log(f"  {case} {name}: fit failed: {row['errors'][name]}")
            fits.pop(name)
    for name in fits:
        fits[name][1].times.clear()
    rounds = 1 if quick else 3
    order, wall = list(fits), {}
    for r in range(rounds):
        k = r % max(1, len(order))
        for name in order[k:] + order[:k]:
            wall.setdefault(name, []).append(fit(name))
    row["ms"] = {name: min(fits[name][1].times) * 1e3 for name in fits}  # best round's epoch
    row["fit_ms"] = {name: min(v) * 1e3 for name, v in wall.items()}
    row["epoch_ms_all"] = {name: [t * 1e3 for t in fits[name][1].times] for name in fits}
    _ratio(row)
    return row


def run_digits(threads: int, log, quick: bool) -> list[dict]:
    try:
        data = _digits()
    except ImportError as e:
        return [{"case": f"digits {k.upper()} epoch", "kind": "epoch", "ms": {}, "errors": {},
                 "notes": [f"left out: scikit-learn not installed ({e.name or e})"]} for k in ("cnn", "mlp")]
    return [_digits_case(kind, threads, log, quick, data) for kind in ("cnn", "mlp")]


# ----------------------------------------------------------------------------- entry points

def run(threads: int, log=print, quick: bool = False) -> list[dict]:
    import torch

    import engine

    engine.set_num_threads(threads)
    torch.set_num_threads(threads)
    rows = []
    for part in (run_cnn, run_lstm, run_digits):
        t0 = time.perf_counter()
        try:
            new = part(threads, log, quick)
        except Exception as e:  # one part's failure leaves the others' rows
            new = [{"case": part.__name__[4:], "kind": "?", "ms": {}, "errors": {"run": f"{type(e).__name__}: {e}"},
                    "notes": []}]
            log(f"  {part.__name__}: failed: {type(e).__name__}: {e}")
        for r in new:
            ms = r.get("ms", {})
            log(f"  {r['case']}" + (f" b{r['batch']}" if r.get("batch") else "") + ": "
                + ", ".join(f"{NAMES.get(k, k)} {v:.2f} ms" for k, v in ms.items())
                + (f"  engine {r['na']}" if r.get("na") else ""))
        log(f"  ({part.__name__[4:]}: {time.perf_counter() - t0:.1f} s)")
        rows += new
    return rows


def table(rows: list[dict], format_table) -> str:
    body, notes = [], []
    for r in rows:
        ms = r.get("ms", {})
        case = r["case"] + (f", batch {r['batch']}" if r.get("batch") else "")
        if r.get("na"):
            eng = r["na"]
        elif "engine" in ms:
            eng = f"{ms['engine']:.2f}"
        else:
            eng = "FAIL" if "engine" in r.get("errors", {}) else "-"
        bp = r.get("best_peer")
        body.append([case, eng, f"{ms[bp]:.2f}" if bp else "-", NAMES.get(bp, "-") if bp else "-",
                     ("-" if "ratio" not in r else f"{r['ratio']:.2f}" if r["ratio"] >= 0.1 else f"{r['ratio']:.3f}"),
                     f"<= {r['target']:.1f}" if r.get("target") else "-"])
        if "engine trainer" in ms and "engine" in ms:
            notes.append(f"  {case}: engine Trainer.train_batch directly {ms['engine trainer']:.2f} ms "
                         f"(train_on_batch adds {ms['engine'] - ms['engine trainer']:.2f} ms per call)")
        others = [k for k in ms if k not in ENGINE_KEYS and k != bp]
        if others:
            notes.append(f"  {case}: " + ", ".join(f"{NAMES.get(k, k)} {ms[k]:.2f} ms" for k in others))
        for k, msg in r.get("errors", {}).items():
            notes.append(f"  ! {case}: {NAMES.get(k, k)} not timed: {msg}")
        for msg in r.get("notes", []):
            if not msg.startswith("engine: "):
                notes.append(f"  {case}: {msg}")
    out = format_table(["case", "engine ms", "peer ms", "best peer", "engine/best peer", "target"], body,
                       "Training: median time per step (train_on_batch) or per epoch (fit, second epoch on), "
                       "milliseconds (lower is better)")
    return out + ("\n" + "\n".join(notes) if notes else "")


if __name__ == "__main__":
    import argparse

    from .run import format_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    print(table(run(a.threads, quick=a.quick), format_table))
