"""Model file formats. Each reader turns a file into a Graph with its weights."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelFormatError
from . import native

# Readers for these arrive with the import issue; named here so the error says so.
_PLANNED = {".onnx": "ONNX", ".h5": "Keras HDF5", ".keras": "Keras", ".pth": "PyTorch",
            ".pt": "PyTorch"}


def read_graph(path):
    p = Path(path)
    if not p.exists():
        raise ModelFormatError(f"{p}: no such file or directory")
    suffix = p.suffix.lower()
    if p.is_dir() or suffix == ".engine":
        return native.load(p)
    if suffix in _PLANNED:
        raise ModelFormatError(f"{p}: {_PLANNED[suffix]} import is not implemented yet; "
                               "this version reads .engine models")
    return native.load(p)  # unknown suffix: try the native format, which checks its header


__all__ = ["read_graph", "native"]
