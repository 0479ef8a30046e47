"""The native `.engine` format: a JSON graph plus safetensors weights.

One file (default): a safetensors file whose metadata holds the format name, the format
version and the graph JSON, so any safetensors reader can open the weights. Or a directory
(`save(..., directory=True)` or a path ending in '/'): `graph.json` + `weights.safetensors`.
Writes go to a temporary name in the same folder and are renamed into place, so a failed
write never leaves a half-written model; an existing target is replaced only if it is an
.engine model itself. See docs/engine-format.md.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy

from .. import dtypes
from ..errors import EngineError, ModelFormatError, SaveError
from ..graph import Graph, Node, Value

FORMAT_NAME = "engine"
# Bump on incompatible changes; readers refuse newer versions. 2: weights of every element
# type, tensor and subgraph attributes (stored as weights), graph metadata.
FORMAT_VERSION = 2
GRAPH_FILE, WEIGHTS_FILE = "graph.json", "weights.safetensors"
_HEADER_LIMIT = 100 << 20  # safetensors' own limit on the JSON header


# -- saving --------------------------------------------------------------------------------

def save(graph: Graph, path, directory: bool | None = None, extra: dict | None = None) -> None:
    """Write `graph` to `path` (a file, or a directory with a trailing separator). `extra`:
    more tensors stored under "__extra__/<name>" (a checkpoint's optimizer state), which
    loading the model ignores; `load_extra` reads them back."""
    from . import check_save_path

    path_s = check_save_path(path)
    if directory is None:  # a trailing separator or an existing directory asks for one
        directory = path_s.endswith(("/", os.sep)) or Path(path_s).is_dir()
    path = Path(path_s)
    weights: dict = {}
    graph_json = json.dumps(_encode_graph(graph, weights, ""), separators=(",", ":"))
    for k, v in (extra or {}).items():
        weights[EXTRA_PREFIX + k] = dtypes.contiguous(np.asarray(v))
    header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)}
    try:
        _check_replaceable(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            _write_directory(path, graph_json, header, weights)
        else:
            _write_file(path, safetensors.numpy.save(weights, metadata={**header, "graph": graph_json}))
    except EngineError:
        raise
    except OSError as e:
        raise SaveError(f"save: could not write '{path}': {e}") from e


def _check_replaceable(path: Path) -> None:
    """Refuse to replace anything that is not an .engine model we could have written."""
    if not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink():
        entries = sorted(os.listdir(path))
        if not entries or (set(entries) <= {GRAPH_FILE, WEIGHTS_FILE} and _is_model_dir(path)):
            return
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise SaveError(f"save: '{path}' is a directory holding other files ({shown}); refusing to "
                        f"replace it. Save to a path inside it, e.g. '{path / 'model.engine'}'")
    if path.is_symlink():
        raise SaveError(f"save: '{path}' is a symbolic link; refusing to replace it (save to "
                        f"'{os.path.realpath(path)}' to write its target)")
    if not path.is_file():
        raise SaveError(f"save: '{path}' exists and is not a regular file; refusing to replace it")
    if path.stat().st_size and not _is_model_file(path):
        raise SaveError(f"save: '{path}' exists and is not an .engine model; refusing to overwrite it")


def _is_model_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            head += f.read(n) if n <= _HEADER_LIMIT else b""
        return _header_metadata(head).get("format") == FORMAT_NAME
    except (OSError, ModelFormatError):
        return False


def _is_model_dir(path: Path) -> bool:
    try:
        return json.loads((path / GRAPH_FILE).read_text()).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _write_new(path: Path, data: bytes) -> None:
    """Create `path` (which must not exist) with `data`, flushed to disk. Mode 0o666 lets the
    umask decide the permissions, as open() and np.save do."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_file(path: Path, data: bytes) -> None:
    tmp = _temp_name(path)
    try:
        _write_new(tmp, data)
        _replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _write_directory(path: Path, graph_json: str, header: dict, weights: dict) -> None:
    tmp = _temp_name(path)
    os.mkdir(tmp, 0o777)
    try:
        _write_new(tmp / GRAPH_FILE, json.dumps({**header, "graph": json.loads(graph_json)}).encode())
        _write_new(tmp / WEIGHTS_FILE, safetensors.numpy.save(weights, metadata=header))
        _replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _replace(tmp: Path, path: Path) -> None:
    """Rename tmp over path. os.replace does it atomically when both are files; a directory
    (or a change between file and directory) goes through a short-lived old name that is
    removed at once. Only ever called after _check_replaceable approved the target."""
    if not os.path.lexists(path) or (tmp.is_file() and path.is_file()):
        os.replace(tmp, path)
        return
    old = _temp_name(path)
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    _remove(old)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


# -- loading -------------------------------------------------------------------------------

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
        if not isinstance(doc, dict):
            raise ModelFormatError(f"{meta_path}: expected a JSON object")
        _check_header(meta_path, doc)
        weights = _read_weights_file(weights_path)[0]
        return _graph_from_doc(path, doc.get("graph"), weights)
    weights, meta = _read_weights_file(path)
    return _graph_from_meta(path, meta, weights)


def loads(data: bytes, name: str = "<bytes>") -> Graph:
    """A single-file .engine model from its bytes (e.g. received over the network)."""
    meta = _header_metadata(data, name)
    try:
        weights = safetensors.numpy.load(bytes(data))
    except (safetensors.SafetensorError, ValueError) as e:
        raise ModelFormatError(f"{name}: corrupt or truncated weights ({e})") from None
    return _graph_from_meta(name, meta, weights)


def _header_metadata(data: bytes, name: str = "file") -> dict:
    """The __metadata__ of a safetensors header (8-byte length, then JSON)."""
    if len(data) < 8:
        raise ModelFormatError(f"{name}: truncated ({len(data)} bytes); not an .engine file")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8 or n > _HEADER_LIMIT:
        raise ModelFormatError(f"{name}: truncated or not an .engine file (header says {n} bytes, "
                               f"{len(data) - 8} follow)")
    try:
        header = json.loads(bytes(data[8:8 + n]))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{name}: corrupt header ({e})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def _read_weights_file(path: Path):
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


def _graph_from_meta(name, meta: dict, weights: dict) -> Graph:
    _check_header(name, meta)
    try:
        graph_doc = json.loads(meta["graph"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{name}: missing or corrupt graph ({e})") from None
    return _graph_from_doc(name, graph_doc, weights)


def _check_header(path, meta: dict) -> None:
    if meta.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{path}: not an .engine model (format field is "
                               f"{meta.get('format')!r}, expected {FORMAT_NAME!r})")
    try:
        version = int(meta.get("format_version", ""))
    except (TypeError, ValueError):
        raise ModelFormatError(f"{path}: bad format_version {meta.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise ModelFormatError(f"{path}: written by a newer engine (format version {version}; "
                               f"this engine reads up to {FORMAT_VERSION})")


EXTRA_PREFIX = "__extra__/"


def load_extra(path) -> dict:
    """The `extra` tensors a file saved with save(..., extra=...) holds ({} if none)."""
    p = Path(path)
    file = p / WEIGHTS_FILE if p.is_dir() else p
    try:
        with safetensors.safe_open(str(file), framework="numpy") as f:
            return {k[len(EXTRA_PREFIX):]: f.get_tensor(k) for k in f.keys() if k.startswith(EXTRA_PREFIX)}
    except (safetensors.SafetensorError, ValueError, OSError) as e:
        raise ModelFormatError(f"{path}: cannot read the saved training state: {e}") from None


def _graph_from_doc(path, doc, weights) -> Graph:
    try:
        graph = _decode_graph(doc, weights, "")
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ModelFormatError(f"{path}: malformed graph ({type(e).__name__}: {e})") from None
    for name, w in graph.initializers.items():
        try:
            dtypes.from_numpy(w.dtype)
        except EngineError:
            raise ModelFormatError(f"{path}: weight '{name}' has unsupported dtype {w.dtype}") from None
    try:
        graph.validate()
    except EngineError as e:
        raise type(e)(f"{path}: {e}") from None
    return graph


# -- graph <-> JSON with tensors and subgraphs kept as weights ----------------------------------
# A graph's own weights are stored under their names (a subgraph's under a prefix naming the
# node and attribute that hold it); an attribute holding an array becomes {"__tensor__": key},
# one holding a graph {"__graph__": {..., "prefix": ...}}.

def _encode_graph(graph: Graph, tensors: dict, prefix: str) -> dict:
    for k, v in graph.initializers.items():
        tensors[prefix + k] = dtypes.contiguous(v)
    doc = graph.to_json()
    doc["nodes"] = [dict(nd, attrs={a: _encode_attr(v, tensors, f"{prefix}{n.name}::{a}")
                                    for a, v in n.attrs.items()})
                    for nd, n in zip(doc["nodes"], graph.nodes)]
    doc["initializers"] = sorted(graph.initializers)
    if prefix:
        doc["prefix"] = prefix
    return doc


def _encode_attr(v, tensors: dict, key: str):
    if isinstance(v, np.ndarray):
        tensors[key] = dtypes.contiguous(v)
        return {"__tensor__": key}
    if isinstance(v, Graph):
        return {"__graph__": _encode_graph(v, tensors, key + "::")}
    if isinstance(v, (list, tuple)) and any(isinstance(x, (np.ndarray, Graph)) for x in v):
        return [_encode_attr(x, tensors, f"{key}::{i}") for i, x in enumerate(v)]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _decode_graph(doc: dict, tensors: dict, prefix: str) -> Graph:
    if "initializers" in doc:
        weights = {k: tensors[prefix + k] for k in doc["initializers"]}
    else:  # format version 1: every tensor is a weight of the one graph
        weights = dict(tensors)
    nodes = [Node(d["op"], list(d["inputs"]), list(d["outputs"]),
                  {a: _decode_attr(v, tensors) for a, v in dict(d.get("attrs", {})).items()}, d.get("name", ""))
             for d in doc["nodes"]]
    return Graph([Value.from_json(v) for v in doc["inputs"]], [Value.from_json(v) for v in doc["outputs"]],
                 nodes, weights, dict(doc.get("metadata", {})))


def _decode_attr(v, tensors: dict):
    if isinstance(v, dict) and "__tensor__" in v:
        return tensors[v["__tensor__"]]
    if isinstance(v, dict) and "__graph__" in v:
        return _decode_graph(v["__graph__"], tensors, v["__graph__"]["prefix"])
    if isinstance(v, list):
        return [_decode_attr(x, tensors) for x in v]
    return v
