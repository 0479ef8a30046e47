"""Tensors of a .safetensors file as read-only numpy views of one memory map (no copy).

The format: an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets: [begin, end]}} (offsets from the end of the header), then the raw data. Read
here rather than with safetensors.safe_open(framework="np") because numpy has no bfloat16:
BF16 (and F16) tensors come back as their raw bytes, which the quantized kernels take as is.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import ModelFormatError, UnsupportedOpError

# safetensors dtype -> (numpy dtype of the view, engine weight type)
DTYPES = {"F32": (np.dtype("<f4"), "F32"), "F16": (np.dtype("<f2"), "F16"),
          "BF16": (np.dtype("<u2"), "BF16")}


def read_safetensors(path: str) -> dict[str, tuple[np.ndarray, str]]:
    """{name: (array, type)}: array a read-only view with the tensor's shape (BF16 as uint16
    bits), type "F32" | "F16" | "BF16". Other dtypes raise UnsupportedOpError naming the tensor."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
            raise ModelFormatError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        n = int.from_bytes(raw_len, "little")
        if n <= 0 or 8 + n > size:
            raise ModelFormatError(f"{path}: safetensors header length {n} does not fit the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ModelFormatError(f"{path}: safetensors header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"{path}: safetensors header is not an object")
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if size > 8 + n else np.zeros(0, np.uint8)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ModelFormatError(f"{path}: tensor '{name}' has a malformed header entry") from None
        if dtype not in DTYPES:
            raise UnsupportedOpError(f"{path}: tensor '{name}' has dtype {dtype} (supported: "
                                     f"{', '.join(DTYPES)})")
        np_dtype, wtype = DTYPES[dtype]
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= begin <= end <= data.size or end - begin != count * np_dtype.itemsize:
            raise ModelFormatError(f"{path}: tensor '{name}' data offsets [{begin}, {end}) do not hold "
                                   f"{dtype} {shape} inside the file")
        arr = data[begin:end].view(np_dtype).reshape(shape)
        out[name] = (arr if arr.flags.aligned else arr.copy(), wtype)  # (kernels read aligned values)
    return out
