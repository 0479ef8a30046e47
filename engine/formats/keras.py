"""Keras models as engine Graphs, read with h5py (in a child process, h5_tree.py) and zipfile
(no TensorFlow or Keras needed).

    >>> g = keras.read("model.h5")      # Keras 2 / Keras 3 legacy HDF5: model_config + model_weights
    >>> g = keras.read("model.keras")   # Keras 3 zip: config.json + model.weights.h5

The saved config is rebuilt as an engine.nn model (keras_config.py), the weights are read
into its layers (keras_weights.py), and the model's graph is returned. A file whose config
asks for something engine.nn does not implement fails here, naming the layer.

Safety: a truncated or corrupt file is a ModelFormatError naming it; a zip entry is read
into memory (never extracted) and only after its declared size has been checked against a
limit, against the archive's size and, when compressed, against a largest expansion;
the config may not create more weight values than the file could hold; every array's shape
is checked before it is read; nothing named by the file is imported or executed.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from ..errors import EngineError, ModelFormatError
from ..graph import Graph

MAX_CONFIG_BYTES = 64 << 20          # config.json / model_config
MAX_WEIGHTS_BYTES = 32 << 30         # model.weights.h5
# A compressed entry may expand at most this much past a floor (Keras's own zip-bomb rule;
# Keras writes its entries uncompressed, so only a re-zipped file is compressed at all).
_MAX_EXPANSION, _EXPANSION_FLOOR = 100, 256 << 20


def read(source, name: str | None = None) -> Graph:
    """A Graph from a .h5/.keras path or the file's bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), name or "<bytes>"
        size = len(data)
        opener = lambda: io.BytesIO(data)  # noqa: E731
    else:
        path = Path(source)
        name = name or str(path)
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError as e:
            raise ModelFormatError(f"{name}: cannot read ({e})") from None
        data = None
        opener = lambda: open(path, "rb")  # noqa: E731
    head = data[:8] if data is not None else head
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return _read_h5(data if data is not None else path, name, size)
    if head.startswith(b"PK"):
        return _read_zip(opener, name, size)
    raise ModelFormatError(f"{name}: not a Keras file (neither HDF5 nor a .keras zip archive)")


def _json(text, name: str, what: str):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str) or len(text) > MAX_CONFIG_BYTES:
        raise ModelFormatError(f"{name}: {what} is missing or too large")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ModelFormatError(f"{name}: {what} is not valid JSON ({e})") from None


def _version(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v or "")


def _build(name: str, config, keras_version: str, weight_bytes: int, set_weights, metadata: dict) -> Graph:
    from ..nn.base import weight_budget
    from .keras_config import ConfigReader

    keras2 = keras_version[:1] in ("1", "2")  # Keras 2 meant other things by some names (hard_sigmoid)
    # Every weight comes from the file: half its bytes in values covers float16 weights too.
    with weight_budget(weight_bytes // 2 + 4096):
        try:
            built = ConfigReader(name, keras2).model(config)
        except RecursionError:
            raise ModelFormatError(f"{name}: the model config nests too deeply") from None
        except EngineError as e:
            if str(e).startswith(name):
                raise
            raise type(e)(f"{name}: {e}") from None
    set_weights(built)
    try:
        graph = built.model.to_graph()
    except EngineError as e:
        raise type(e)(f"{name}: {e}") from None
    graph.metadata.update({"format": "keras", "keras_version": keras_version, **metadata})
    return graph


def _read_h5(source, name: str, size: int) -> Graph:
    from . import h5_tree, keras_weights

    f = h5_tree.read(source, name, ("model_weights/",))
    raw = f.attrs.get("model_config")
    if raw is None:
        what = "weights only (model.save_weights)" if ("layer_names" in f.attrs or "layers" in f) else "no Keras model"
        raise ModelFormatError(f"{name}: this HDF5 file holds {what}: there is no model_config; save the "
                               "whole model with model.save(...)")
    config = _json(raw, name, "model_config")
    group = f.get("model_weights")
    if not isinstance(group, h5_tree.Group):
        raise ModelFormatError(f"{name}: the file has no model_weights group")
    version = _version(f.attrs.get("keras_version") or group.attrs.get("keras_version"))
    return _build(name, config, version, size, lambda built: keras_weights.set_legacy(name, group, built),
                  {"backend": _version(f.attrs.get("backend")), "container": "h5"})


def _entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, limit: int, archive_size: int) -> bytes:
    """One zip entry's bytes, after checking what it claims to hold."""
    size = info.file_size
    if size > limit:
        raise ModelFormatError(f"{name}: '{info.filename}' claims {size:,} bytes, more than the limit ({limit:,})")
    if info.compress_size > archive_size:
        raise ModelFormatError(f"{name}: '{info.filename}' claims more compressed bytes than the archive holds")
    stored = info.compress_type == zipfile.ZIP_STORED
    bomb = size > _EXPANSION_FLOOR and size > _MAX_EXPANSION * info.compress_size
    if (stored and size > archive_size) or (not stored and bomb):
        raise ModelFormatError(f"{name}: '{info.filename}' claims {size:,} bytes, more than its "
                               f"{info.compress_size:,} stored bytes can hold (a zip bomb or a corrupt archive)")
    try:
        with zf.open(info) as f:
            data = f.read(size + 1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as e:
        raise ModelFormatError(f"{name}: cannot read '{info.filename}' (corrupt archive: {e})") from None
    if len(data) != size:
        raise ModelFormatError(f"{name}: '{info.filename}' holds {len(data):,} bytes, not the {size:,} it claims")
    return data


def _read_zip(opener, name: str, size: int) -> Graph:
    from . import h5_tree, keras_weights

    with opener() as fileobj:
        try:
            zf = zipfile.ZipFile(fileobj)
            infos = {i.filename: i for i in zf.infolist()}
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise ModelFormatError(f"{name}: not a readable zip archive (truncated or corrupt: {e})") from None
        with zf:
            if "config.json" not in infos:
                if "data.pkl" in infos or any(n.endswith("/data.pkl") for n in infos):
                    raise ModelFormatError(f"{name}: this zip is a PyTorch file, not a Keras model")
                raise ModelFormatError(f"{name}: not a .keras archive (no config.json)")
            config = _json(_entry(zf, infos["config.json"], name, MAX_CONFIG_BYTES, size), name, "config.json")
            meta = {}
            if "metadata.json" in infos:
                meta = _json(_entry(zf, infos["metadata.json"], name, MAX_CONFIG_BYTES, size), name, "metadata.json")
            version = str(meta.get("keras_version", "3")) if isinstance(meta, dict) else "3"
            if "model.weights.h5" not in infos:
                other = [n for n in infos if n.startswith("model.weights")]
                raise ModelFormatError(f"{name}: the archive has no model.weights.h5" +
                                       (f" (found {other}: only the HDF5 weights format is supported)" if other else ""))
            weights = _entry(zf, infos["model.weights.h5"], name, MAX_WEIGHTS_BYTES, size)
    h5 = h5_tree.read(weights, f"{name}: model.weights.h5", ("layers/",))
    return _build(name, config, version, len(weights), lambda built: keras_weights.set_v3(name, h5, built),
                  {"container": "keras"})
