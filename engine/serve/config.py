"""A served model's `config.json` (`<repository>/<model>/config.json`), checked as it is read.

Every key is optional; a missing file means the defaults. A key we do not know, or a value
of the wrong kind, is a `ConfigError` naming the file and the key: a typo must not silently
serve a model with the wrong settings.

    {
      "max_batch_size": 32,                 # rows one batched call may hold; 0: no batching
      "dynamic_batching": {"preferred_batch_sizes": [8, 32], "max_queue_delay_us": 200},
      "instances": 1,                       # batches of this model that may run at once
      "threads_per_instance": 0,            # 0: the engine-wide kernel pool; 1: inline
      "version_policy": {"latest": 1},      # or {"all": true} or {"specific": [1, 3]}
      "inputs": [{"name": "x", "shape": [-1, 8, 8, 1], "datatype": "FP32"}],
      "outputs": [{"name": "probs"}],
      "warmup": {"batch_sizes": [1, 8]},    # or true / false
      "model_file": "model.onnx",           # when the version folder holds several
      "max_sequences": 8,                   # language models: generations decoded together
      "max_tokens_per_step": 512,           #   tokens one decoder step may take (prefill chunks + 1 per sequence)
      "max_context": 4096                   #   positions per sequence (default: the model's, at most 4096)
    }
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import EngineError
from .tensors import datatype_to_dtype

MODEL_FILES = ("model.engine", "model.onnx", "model.keras", "model.h5", "model.pth", "model.gguf",
               "model.safetensors", "model.safetensors.index.json")
_LM_KEYS = ("max_sequences", "max_tokens_per_step", "max_context")
_KEYS = {"name", "max_batch_size", "dynamic_batching", "instances", "threads_per_instance",
         "version_policy", "inputs", "outputs", "warmup", "model_file", "architecture", *_LM_KEYS}


class ConfigError(EngineError, ValueError):
    """A model's config.json is malformed (the message names the file and the key)."""


@dataclass(frozen=True)
class TensorDecl:
    """An input or output as config.json declares it: a public name, and optionally a shape
    (-1 for a free dim) and a KServe datatype, checked against the model at load."""
    name: str
    shape: Optional[tuple] = None
    datatype: Optional[str] = None


@dataclass(frozen=True)
class ModelConfig:
    max_batch_size: int = 64
    dynamic_batching: bool = True
    preferred_batch_sizes: tuple = ()
    max_queue_delay_us: int = 0
    instances: int = 1
    threads_per_instance: int = 0
    version_policy: tuple = ("latest", 1)  # ("latest", n) | ("all",) | ("specific", (v, ...))
    inputs: tuple = ()
    outputs: tuple = ()
    warmup_batch_sizes: tuple = (1,)
    model_file: Optional[str] = None
    architecture: Optional[str] = None  # for model.pth: the engine.nn model the state dict fills
    max_sequences: Optional[int] = None        # language models (None: the decoder's default)
    max_tokens_per_step: Optional[int] = None
    max_context: Optional[int] = None
    raw: dict = field(default_factory=dict, compare=False)

    def selects(self, versions: list) -> list:
        """The versions this policy serves, of those present (ascending ints)."""
        versions = sorted(versions)
        kind = self.version_policy[0]
        if kind == "all":
            return versions
        if kind == "specific":
            return [v for v in versions if v in self.version_policy[1]]
        return versions[-self.version_policy[1]:]


def read_config(model_dir: Path) -> ModelConfig:
    """The config of the model in `model_dir` (defaults when it has no config.json)."""
    path = Path(model_dir) / "config.json"
    if not path.exists():
        return ModelConfig()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not readable JSON ({e})") from None
    return parse_config(raw, str(path))


def parse_config(raw, where: str = "config") -> ModelConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known keys: {sorted(_KEYS)}")
    kw: dict = {"raw": raw}
    if "max_batch_size" in raw:
        kw["max_batch_size"] = _int(raw["max_batch_size"], where, "max_batch_size", 0)
    db = raw.get("dynamic_batching", True)
    if isinstance(db, bool):
        kw["dynamic_batching"] = db
    elif isinstance(db, dict):
        extra = set(db) - {"preferred_batch_sizes", "max_queue_delay_us"}
        if extra:
            raise ConfigError(f"{where}: dynamic_batching: unknown key(s) {sorted(extra)}")
        sizes = db.get("preferred_batch_sizes", [])
        if not isinstance(sizes, list):
            raise ConfigError(f"{where}: dynamic_batching.preferred_batch_sizes must be a list of ints")
        kw["preferred_batch_sizes"] = tuple(sorted(_int(s, where, "preferred_batch_sizes", 1) for s in sizes))
        kw["max_queue_delay_us"] = _int(db.get("max_queue_delay_us", 0), where, "max_queue_delay_us", 0)
    elif db is not None:
        raise ConfigError(f"{where}: dynamic_batching must be true, false or an object")
    else:
        kw["dynamic_batching"] = False
    if "instances" in raw:
        kw["instances"] = _int(raw["instances"], where, "instances", 1)
    if "threads_per_instance" in raw:
        kw["threads_per_instance"] = _int(raw["threads_per_instance"], where, "threads_per_instance", 0)
    if "version_policy" in raw:
        kw["version_policy"] = _policy(raw["version_policy"], where)
    for key in ("inputs", "outputs"):
        if key in raw:
            kw[key] = _decls(raw[key], where, key)
    for key in _LM_KEYS:
        if key in raw:
            kw[key] = _int(raw[key], where, key, 1)
    if "warmup" in raw:
        kw["warmup_batch_sizes"] = _warmup(raw["warmup"], where)
    for key in ("model_file", "architecture"):
        if key in raw:
            v = raw[key]
            if not isinstance(v, str) or not v or "/" in v or "\\" in v or v.startswith("."):
                raise ConfigError(f"{where}: {key} must be a plain file name inside the version folder, got {v!r}")
            kw[key] = v
    cfg = ModelConfig(**kw)
    if cfg.max_batch_size and any(s > cfg.max_batch_size for s in cfg.preferred_batch_sizes):
        raise ConfigError(f"{where}: preferred_batch_sizes {list(cfg.preferred_batch_sizes)} exceed "
                          f"max_batch_size {cfg.max_batch_size}")
    return cfg


def _int(v, where, key, lo) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{where}: {key} must be an int >= {lo}, got {v!r}")
    return v


def _policy(v, where) -> tuple:
    if isinstance(v, dict) and len(v) == 1:
        (kind, arg), = v.items()
        if kind == "latest":
            n = arg.get("num_versions") if isinstance(arg, dict) else arg
            return ("latest", _int(n, where, "version_policy.latest", 1))
        if kind == "all" and arg in (True, {}):
            return ("all",)
        if kind == "specific":
            vs = arg.get("versions") if isinstance(arg, dict) else arg
            if isinstance(vs, list) and vs:
                return ("specific", tuple(_int(x, where, "version_policy.specific", 1) for x in vs))
    raise ConfigError(f"{where}: version_policy must be {{\"latest\": N}}, {{\"all\": true}} or "
                      f"{{\"specific\": [versions]}}, got {v!r}")


def _decls(v, where, key) -> tuple:
    if not isinstance(v, list):
        raise ConfigError(f"{where}: {key} must be a list of {{name, shape, datatype}}")
    out = []
    for i, d in enumerate(v):
        at = f"{key}[{i}]"
        if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not d["name"]:
            raise ConfigError(f"{where}: {at} must be an object with a non-empty 'name'")
        extra = set(d) - {"name", "shape", "datatype"}
        if extra:
            raise ConfigError(f"{where}: {at}: unknown key(s) {sorted(extra)}")
        shape = d.get("shape")
        if shape is not None:
            if not isinstance(shape, list) or any(isinstance(s, bool) or not isinstance(s, int) or s < -1
                                                  for s in shape):
                raise ConfigError(f"{where}: {at}.shape must be a list of ints (-1 for a free dim), got {shape!r}")
            shape = tuple(shape)
        dt = d.get("datatype")
        if dt is not None:
            try:
                datatype_to_dtype(dt)
            except EngineError as e:
                raise ConfigError(f"{where}: {at}.datatype: {e}") from None
        out.append(TensorDecl(d["name"], shape, dt))
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: {key} repeats a name: {names}")
    return tuple(out)


def _warmup(v, where) -> tuple:
    if v is True:
        return (1,)
    if v is False or v is None:
        return ()
    if isinstance(v, dict) and set(v) <= {"batch_sizes"} and isinstance(v.get("batch_sizes", []), list):
        return tuple(_int(b, where, "warmup.batch_sizes", 1) for b in v.get("batch_sizes", []))
    raise ConfigError(f"{where}: warmup must be true, false or {{\"batch_sizes\": [ints]}}, got {v!r}")
