"""Model file formats. Each reader turns a file (a path, or the file's bytes) into a Graph
with its weights. Which reader runs is decided by the suffix of a path, or by the first bytes
of the content when there is no telling suffix."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EngineError, ModelFormatError
from . import native

# Suffixes of the formats engine.load reads besides .engine (save() refuses to write them).
_FOREIGN = {".onnx": "ONNX", ".h5": "Keras HDF5", ".hdf5": "Keras HDF5", ".keras": "Keras",
            ".pth": "PyTorch", ".pt": "PyTorch", ".gguf": "GGUF"}
_KERAS = (".h5", ".hdf5", ".keras")

# What the first bytes of a file say it is (checked when the suffix does not tell).
_MAGIC = [(b"GGUF", "GGUF")]


def language_model_path(source) -> Path | None:
    """The path when `source` names a language model (a .gguf file, or a Hugging Face causal-LM
    folder), else None."""
    if not isinstance(source, (str, os.PathLike)) or not os.fspath(source):
        return None
    p = Path(source)
    if p.suffix.lower() == ".gguf" and p.is_file():
        return p
    from ..lm.load import is_hf_decoder_folder
    return p if is_hf_decoder_folder(p) else None


def read_graph(source):
    """A Graph from a path (str / os.PathLike), the file's bytes, or a binary file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read_bytes(bytes(source), "<bytes>")
    if hasattr(source, "read"):
        name = getattr(source, "name", "<file object>")
        try:
            data = source.read()
        except OSError as e:
            raise ModelFormatError(f"{name}: could not read ({e})") from None
        if not isinstance(data, (bytes, bytearray)):
            raise EngineError(f"load: {name} is a text-mode file object; open it with 'rb'")
        return _read_bytes(bytes(data), str(name))
    if not isinstance(source, (str, os.PathLike)):
        raise EngineError(f"load: expected a path, bytes or a binary file object, got "
                          f"{type(source).__name__}")
    if not os.fspath(source):
        raise EngineError("load: empty path")
    p = Path(source)
    if not p.exists():
        raise ModelFormatError(f"{p}: no such file or directory")
    suffix = p.suffix.lower()
    if p.is_dir() or suffix == ".engine":
        return native.load(p)
    if suffix == ".onnx":
        from . import onnx
        return onnx.read(p)
    if suffix in _KERAS:
        from . import keras
        return keras.read(p)
    if suffix in (".pth", ".pt"):  # weights without a network
        from . import torch as torch_format
        raise torch_format.not_a_model(p)
    if suffix == ".gguf":
        raise ModelFormatError(f"{p}: a GGUF file holds a language model, not a graph; "
                               "engine.load returns it as a LanguageModel")
    return native.load(p)  # unknown suffix: try the native format, which checks its header


def _read_bytes(data: bytes, name: str):
    from . import torch as torch_format
    if torch_format.is_torch_file(data):
        raise torch_format.not_a_model(data, name)
    if data.startswith(b"\x89HDF\r\n\x1a\n") or (data.startswith(b"PK\x03\x04") and _is_keras_zip(data)):
        from . import keras
        return keras.read(data, name)
    if data.startswith(b"PK\x03\x04"):
        raise ModelFormatError(f"{name}: a zip archive that is neither a Keras model (.keras, with a "
                               "config.json) nor a PyTorch file")
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise ModelFormatError(f"{name}: a {what} language model is memory-mapped from its file; "
                                   "pass its path to engine.load")
    if data[8:9] == b"{" or len(data) < 9:  # a safetensors header: the native format
        return native.loads(data, name)
    from . import onnx  # anything else may be an ONNX protobuf; the reader says if it is not
    return onnx.read(data, name)


def _is_keras_zip(data: bytes) -> bool:
    import io
    import zipfile
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return "config.json" in zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def check_save_path(path) -> str:
    """The path as a string if the native format may be written there, else EngineError:
    a suffix that engine.load would read as another format is refused, so that what is saved
    always loads back."""
    if not isinstance(path, (str, os.PathLike)):
        raise EngineError(f"save: expected a path (str or os.PathLike), got {type(path).__name__}")
    s = os.fspath(path)
    if isinstance(s, bytes):
        s = os.fsdecode(s)
    if not s.strip():
        raise EngineError("save: empty path")
    suffix = Path(s).suffix.lower()
    if suffix in _FOREIGN:
        raise ModelFormatError(f"save: '{s}' names a {_FOREIGN[suffix]} file, but save() writes the "
                               f"native .engine format (exporting {_FOREIGN[suffix]} is not "
                               "implemented); use a '.engine' path")
    return s


__all__ = ["read_graph", "language_model_path", "check_save_path", "native"]
