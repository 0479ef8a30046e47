"""Small models and repositories for the serving tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np


def digits_model(seed: int = 0, width: int = 16):
    """A small CNN on (None, 8, 8, 1) named input 'x', output 'probs'."""
    from engine import nn
    nn.set_random_seed(seed)
    return nn.Sequential([nn.Input((8, 8, 1), name="x"), nn.Conv2D(width, (3, 3), activation="relu"),
                          nn.Flatten(), nn.Dense(10, activation="softmax", name="probs")])


def write_version(repo: Path, name: str, version: int, model=None, seed: int = 0, config: dict = None) -> Path:
    """Save `model` (default: digits_model(seed)) as <repo>/<name>/<version>/model.engine."""
    folder = Path(repo) / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (model if model is not None else digits_model(seed)).save(folder / "model.engine")
    if config is not None:
        (Path(repo) / name / "config.json").write_text(json.dumps(config))
    return folder / "model.engine"


def remove_version(repo: Path, name: str, version: int) -> None:
    shutil.rmtree(Path(repo) / name / str(version))


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 8, 8, 1), dtype=np.float32)
