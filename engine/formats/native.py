"""The native `.engine` format: a JSON graph plus safetensors weights.

One file (default): a safetensors file whose metadata holds the format name, the format
version and the graph JSON, so any safetensors reader can open the weights. Or a directory
(`save(..., directory=True)` or a path ending in '/'): `graph.json` + `weights.safetensors`.
Writes go to a temporary name in the same folder and are renamed into place, so a failed
write never leaves a half-written model. See docs/engine-format.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy

from ..errors import EngineError, ModelFormatError
from ..graph import Graph

FORMAT_NAME = "engine"
FORMAT_VERSION = 1  # bump on incompatible changes; readers refuse newer versions
GRAPH_FILE, WEIGHTS_FILE = "graph.json", "weights.safetensors"


def save(graph: Graph, path, directory: bool | None = None) -> None:
    if directory is None:  # a trailing separator or an existing directory asks for one
        directory = str(path).endswith(("/", os.sep)) or Path(path).is_dir()
    path = Path(path)
    weights = {k: np.ascontiguousarray(v) for k, v in graph.initializers.items()}
    header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)}
    graph_json = json.dumps(graph.to_json(), separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        _write_directory(path, graph_json, header, weights)
    else:
        data = safetensors.numpy.save(weights, metadata={**header, "graph": graph_json})
        _atomic_write(path, data)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _write_directory(path: Path, graph_json: str, header: dict, weights: dict) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        (tmp / GRAPH_FILE).write_text(json.dumps({**header, "graph": json.loads(graph_json)}))
        safetensors.numpy.save_file(weights, str(tmp / WEIGHTS_FILE), metadata=header)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(path) -> Graph:
    path = Path(path)
    if path.is_dir():
        meta_path, weights_path = path / GRAPH_FILE, path / WEIGHTS_FILE
        try:
            doc = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise ModelFormatError(f"{path}: an .engine directory must hold {GRAPH_FILE}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelFormatError(f"{meta_path}: corrupt graph JSON ({e})") from None
        _check_header(meta_path, doc)
        weights = _read_weights(weights_path)[0]
        graph_doc = doc.get("graph")
    else:
        weights, meta = _read_weights(path)
        _check_header(path, meta)
        try:
            graph_doc = json.loads(meta["graph"])
        except (KeyError, json.JSONDecodeError) as e:
            raise ModelFormatError(f"{path}: missing or corrupt graph ({e})") from None
    return _graph_from_doc(path, graph_doc, weights)


def _read_weights(path: Path):
    if not path.exists():
        raise ModelFormatError(f"{path}: no such file")
    size = path.stat().st_size
    if size < 8:
        raise ModelFormatError(f"{path}: truncated ({size} bytes); not an .engine file")
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
    if header_len > size - 8:
        raise ModelFormatError(f"{path}: truncated or not an .engine file (header says "
                               f"{header_len} bytes, file has {size - 8} after it)")
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except (safetensors.SafetensorError, ValueError, OSError) as e:
        raise ModelFormatError(f"{path}: corrupt or truncated weights ({e})") from None
    return weights, meta


def _check_header(path, meta: dict) -> None:
    if meta.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{path}: not an .engine model (format field is "
                               f"{meta.get('format')!r}, expected {FORMAT_NAME!r})")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise ModelFormatError(f"{path}: bad format_version {meta.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise ModelFormatError(f"{path}: written by a newer engine (format version {version}; "
                               f"this engine reads up to {FORMAT_VERSION})")


def _graph_from_doc(path, doc, weights) -> Graph:
    try:
        graph = Graph.from_json(doc, weights)
    except (KeyError, TypeError, AttributeError) as e:
        raise ModelFormatError(f"{path}: malformed graph ({type(e).__name__}: {e})") from None
    for name, w in graph.initializers.items():
        if w.dtype != np.float32:
            raise ModelFormatError(f"{path}: weight '{name}' has dtype {w.dtype}, expected float32")
    try:
        graph.validate()
    except EngineError as e:
        raise type(e)(f"{path}: {e}") from None
    return graph
