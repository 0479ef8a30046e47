"""One loaded, servable model version: the model, its public signature, its batcher.

Requests arrive as {input name: numpy array}; `prepare` checks them against the signature
(names, datatype, rank, fixed dims, batch size) before they are queued, so a bad request is
refused on its own and never reaches a batch with good ones.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np

from ..errors import EngineError
from .batcher import Batcher, Pending
from .config import ConfigError, ModelConfig
from .metrics import ServerMetrics
from .repository import VersionFiles, sha256_file
from .tensors import NotFoundError, RequestError, TensorSpec, dtype_to_datatype


class ServedVersion:
    def __init__(self, name: str, version: int, files: VersionFiles, config: ModelConfig,
                 metrics: Optional[ServerMetrics] = None):
        t0 = time.perf_counter()
        self.name, self.version, self.config = name, version, config
        self.path = files.path
        self.size = files.path.stat().st_size
        self.sha256 = sha256_file(files.path)
        self.model = _load(files)
        self.max_batch_size = _batch_limit(self.model, config, files.path)
        self.inputs = _signature(self.model.inputs, config.inputs, self.max_batch_size, "inputs", files.path)
        self.outputs = _signature(self.model.outputs, config.outputs, self.max_batch_size, "outputs", files.path)
        self._in_by_name = {s.name: s for s in self.inputs}
        self._np_dtypes = {s.name: _np(s) for s in self.inputs}
        self._out_rename = {s.model_name: s.name for s in self.outputs if s.model_name != s.name}
        self._single = len(self.inputs) == 1 and len(self.outputs) == 1
        self._warm()
        self.metrics = metrics.for_version(name, version) if metrics is not None else None
        self.batcher = Batcher(
            self._run, max_batch_size=self.max_batch_size, batching=config.dynamic_batching,
            preferred_batch_sizes=config.preferred_batch_sizes, max_queue_delay_us=config.max_queue_delay_us,
            instances=config.instances, serial_threads=config.threads_per_instance == 1,
            on_batch=self.metrics.on_batch if self.metrics is not None else None, name=f"{name}-{version}")
        self.loaded_at = time.time()
        self.load_seconds = time.perf_counter() - t0

    # -- requests ---------------------------------------------------------------------

    def input_spec(self, name: str) -> TensorSpec:
        spec = self._in_by_name.get(name)
        if spec is None:
            raise NotFoundError(f"model '{self.name}' version {self.version} has no input {name!r}; its inputs "
                                f"are {[s.name for s in self.inputs]}")
        return spec

    def prepare(self, inputs: dict) -> Pending:
        """Check a request's inputs; a Pending without a callback yet."""
        for name in inputs:
            self.input_spec(name)
        feeds, key, rows = {}, [], None
        for spec in self.inputs:
            a = inputs.get(spec.name)
            if a is None:
                raise RequestError(f"model '{self.name}': missing input '{spec.name}' "
                                   f"({spec.datatype} {list(spec.shape)})")
            if a.dtype != self._np_dtypes[spec.name]:
                raise RequestError(f"input '{spec.name}': datatype {_datatype_of(a)}, the model takes {spec.datatype}")
            if a.ndim != len(spec.shape) or any(w != -1 and w != g for w, g in zip(spec.shape, a.shape)):
                raise RequestError(f"input '{spec.name}': shape {list(a.shape)} does not match {list(spec.shape)}")
            if self.max_batch_size:
                n = a.shape[0]
                if n < 1 or n > self.max_batch_size:
                    raise RequestError(f"input '{spec.name}': batch of {n}; this model takes 1 to "
                                       f"{self.max_batch_size} rows per request")
                if rows is not None and n != rows:
                    raise RequestError(f"inputs differ in batch size ({rows} and {n})")
                rows = n
                key.append(a.shape[1:])
            else:
                key.append(a.shape)
            feeds[spec.model_name] = a
        return Pending(feeds, rows or 1, tuple(key), None)

    def submit(self, p: Pending, done: Callable, inline: Optional[bool] = False) -> bool:
        """inline True: run on this thread if a slot is free; False: wake an instance thread;
        None: queue only (a later inline submit, or a running batch, takes it)."""
        p.done = done
        if inline:
            return self.batcher.submit_inline(p)
        return self.batcher.submit(p, wake=inline is not None)

    def _run(self, feeds: dict) -> dict:
        if self._single:
            (x,) = feeds.values()
            y = self.model.predict(x)
            return {self.outputs[0].name: y}
        outs = self.model.run(feeds)
        if self._out_rename:
            outs = {self._out_rename.get(k, k): v for k, v in outs.items()}
        return outs

    def _warm(self) -> None:
        for b in self.config.warmup_batch_sizes:
            if self.max_batch_size and b > self.max_batch_size:
                continue
            feeds = {}
            for s in self.inputs:
                shape = [d if d != -1 else 1 for d in s.shape]
                if self.max_batch_size:
                    shape[0] = b
                feeds[s.model_name] = np.zeros(shape, self._np_dtypes[s.name])
            try:
                self._run(feeds)
            except EngineError as e:
                raise EngineError(f"{self.path}: warm-up at batch {b} failed: {e}") from None

    def close(self, timeout: Optional[float] = None) -> bool:
        return self.batcher.close(timeout)

    # -- description ------------------------------------------------------------------

    def metadata(self) -> dict:
        """KServe v2 model metadata."""
        return {"name": self.name, "versions": [str(self.version)], "platform": _platform(self.path),
                "inputs": [s.as_json() for s in self.inputs], "outputs": [s.as_json() for s in self.outputs],
                "sha256": self.sha256, "max_batch_size": self.max_batch_size}


def _load(files: VersionFiles):
    import engine
    if files.architecture is None:
        return engine.load(files.path)
    net = _architecture(files.architecture)
    net.load_state_dict(str(files.path))  # the restricted reader: never unpickles code
    return engine.Model(net.to_graph())


def _architecture(path):
    """The engine.nn network a .pth state dict fills: a Keras model config, from a .keras
    archive's config.json or a JSON file (Keras's model.to_json()). Layers are rebuilt from
    their configs; no code in the file runs."""
    import json
    import zipfile

    from ..errors import ModelFormatError
    from ..formats.keras_config import ConfigReader
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as z:
                info = z.getinfo("config.json")
                if info.file_size > 64 << 20:
                    raise ModelFormatError(f"{path}: config.json is {info.file_size} bytes")
                text = z.read(info)
        else:
            text = path.read_bytes()
        config = json.loads(text)
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as e:
        raise ModelFormatError(f"{path}: not a Keras model config (.keras or .json): {e}") from None
    return ConfigReader(str(path), False).model(config).model


def _batch_limit(model, config: ModelConfig, path) -> int:
    """The rows one batched call may hold: the config's, when every input has a free first dim."""
    if not config.max_batch_size:
        return 0
    # None or a symbolic name ('batch' in an ONNX export) is free; an int is fixed.
    fixed = [i.name for i in model.inputs if not i.shape or isinstance(i.shape[0], int)]
    if not fixed:
        return config.max_batch_size
    if config.raw.get("max_batch_size"):
        raise ConfigError(f"{path}: max_batch_size {config.max_batch_size} needs a free batch dim, but input(s) "
                          f"{fixed} have a fixed first dim; set max_batch_size 0")
    return 0


def _signature(infos, decls, max_batch: int, what: str, path) -> tuple:
    model_names = [i.name for i in infos]
    if decls:
        if all(d.name in model_names for d in decls):
            by_model = {d.name: d for d in decls}
        elif len(decls) == len(infos):  # names for a format that lacks meaningful ones
            by_model = {i.name: d for i, d in zip(infos, decls)}
        else:
            raise ConfigError(f"{path}: config {what} {[d.name for d in decls]} do not match the model's "
                              f"{model_names} (name them as the model does, or list all in order)")
    else:
        by_model = {}
    specs = []
    for i in infos:
        shape = [-1 if d is None or not isinstance(d, int) else d for d in (i.shape or ())]
        if max_batch and shape:
            shape[0] = -1
        datatype = dtype_to_datatype(i.dtype)
        d = by_model.get(i.name)
        name = i.name
        if d is not None:
            name = d.name
            if d.datatype is not None and d.datatype != datatype:
                raise ConfigError(f"{path}: config gives {what[:-1]} '{d.name}' datatype {d.datatype}, "
                                  f"the model has {datatype}")
            if d.shape is not None:
                if len(d.shape) != len(shape) or any(m != -1 and c != m for c, m in zip(d.shape, shape)):
                    raise ConfigError(f"{path}: config gives {what[:-1]} '{d.name}' shape {list(d.shape)}, "
                                      f"the model has {shape}")
                shape = list(d.shape)
        specs.append(TensorSpec(name, datatype, tuple(shape), i.name))
    return tuple(specs)


def _np(spec: TensorSpec) -> np.dtype:
    from .tensors import numpy_dtype
    return numpy_dtype(spec.datatype)


def _datatype_of(a: np.ndarray) -> str:
    try:
        return dtype_to_datatype(a.dtype.name)
    except KeyError:
        return str(a.dtype)


def _platform(path) -> str:
    return {".onnx": "onnx", ".engine": "engine", ".h5": "keras", ".keras": "keras",
            ".pth": "pytorch"}.get(path.suffix, "engine")
