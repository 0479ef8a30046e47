"""What a model repository folder holds, read without loading anything:

    <repository>/<model>/config.json            optional (engine/serve/config.py)
    <repository>/<model>/<version>/model.onnx   versions are positive ints; one model file each
                                                (.engine, .onnx, .keras, .h5, or .pth with an
                                                architecture file named by config.json; a
                                                language model: model.gguf, or a Hugging Face
                                                folder, config.json + model.safetensors or its sharded index)

A scan gives, per model, its config (or the error reading it) and per version the model file
with a fingerprint (size, mtime_ns) that says when a file was replaced. Names that are not
models (hidden folders, files at the top) are skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .config import MODEL_FILES, ConfigError, ModelConfig, read_config

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class VersionFiles:
    path: Path                     # the model file
    fingerprint: tuple             # (size, mtime_ns) of the model file, its config.json and shards
    architecture: Optional[Path] = None


@dataclass
class ModelEntry:
    name: str
    folder: Path
    config: Optional[ModelConfig]
    config_error: Optional[str] = None
    config_fingerprint: tuple = ()
    versions: dict = field(default_factory=dict)  # int -> VersionFiles | str (why not servable)


def valid_model_name(name: str) -> bool:
    return bool(_MODEL_NAME.match(name)) and name not in (".", "..")


def scan(repository: Path) -> dict:
    """{model name: ModelEntry} for every model folder in the repository."""
    repository = Path(repository)
    out = {}
    try:
        children = sorted(repository.iterdir())
    except OSError:
        return out
    for folder in children:
        if folder.name.startswith(".") or not folder.is_dir() or not valid_model_name(folder.name):
            continue
        out[folder.name] = scan_model(folder)
    return out


def scan_model(folder: Path) -> ModelEntry:
    cfg_path = folder / "config.json"
    try:
        config, error = read_config(folder), None
    except ConfigError as e:
        config, error = None, str(e)
    entry = ModelEntry(folder.name, folder, config, error, _stat(cfg_path))
    try:
        children = list(folder.iterdir())
    except OSError:
        children = []
    for d in children:
        if not d.is_dir() or not d.name.isdigit() or int(d.name) < 1:
            continue
        entry.versions[int(d.name)] = _version_files(d, config)
    return entry


def _version_files(d: Path, config: Optional[ModelConfig]):
    if config is not None and config.model_file:
        candidates = [config.model_file]
    else:
        candidates = MODEL_FILES
    found = [d / c for c in candidates if (d / c).is_file()]
    if not found:
        return f"{d}: no model file (expected one of {', '.join(candidates)})"
    if len(found) > 1:
        return f"{d}: several model files ({', '.join(p.name for p in found)}); name one with model_file in config.json"
    path = found[0]
    arch = None
    if path.suffix == ".pth":
        if config is None or not config.architecture:
            return (f"{path}: a .pth state dict holds weights only; name the network it fills with "
                    "\"architecture\" (a .keras file or Keras model JSON in the same folder) in config.json")
        arch = d / config.architecture
        if not arch.is_file():
            return f"{arch}: the architecture file config.json names is missing"
    shards = ()
    if is_safetensors(path):  # a Hugging Face folder: its config.json says what the weights are
        arch = d / "config.json"
        if not arch.is_file():
            return f"{path}: a Hugging Face model folder needs its config.json next to {path.name}"
        if path.name.endswith(".index.json"):
            try:
                shards = tuple(sorted({d / f for f in json.loads(path.read_text())["weight_map"].values()}))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                return f"{path}: not a safetensors index (a \"weight_map\" of tensor names to shard files): {e}"
            missing = [p.name for p in shards if not p.is_file()]
            if missing:
                return f"{path}: shards it lists are missing: {', '.join(missing)}"
    # A version changes (hot reload) when any of its files does: a shard too.
    stamp = _stat(path) + (_stat(arch) if arch else ()) + tuple(x for p in shards for x in _stat(p))
    return VersionFiles(path, stamp, arch)


def is_safetensors(path: Path) -> bool:
    """model.safetensors, or the index of a sharded checkpoint (model.safetensors.index.json)."""
    return path.suffix == ".safetensors" or path.name.endswith(".safetensors.index.json")


def _stat(p: Path) -> tuple:
    try:
        st = p.stat()
    except OSError:
        return ()
    return (st.st_size, st.st_mtime_ns)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
