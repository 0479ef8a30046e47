"""Read a GGUF file (llama.cpp's weight format): metadata as plain Python values and each tensor
as a read-only view of its raw block bytes in the memory-mapped file (no copy, no dequantising).

Parsing is the `gguf` package's reader; around it we check what it does not — the magic, the
version, every read staying inside the file, each tensor's type, size and place — so a corrupt
file becomes a ModelFormatError naming the file and the key or tensor, never a crash.

Shapes are numpy row-major: GGUF lists dims fastest-first, so a GGUF [576, 49152] tensor is
(49152, 576) here, and its rows of 576 are the contiguous, block-quantised unit.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import EngineError, ModelFormatError, UnsupportedOpError

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
# ggml type name -> (elements per block, bytes per block); the types our kernels implement.
BLOCK_SIZES = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q4_0": (32, 18), "Q4_1": (32, 20),
               "Q8_0": (32, 34), "Q4_K": (256, 144), "Q6_K": (256, 210)}


@dataclass(frozen=True)
class GgufTensor:
    """One tensor: `shape` row-major, `type` a ggml type name, `data` its raw bytes (uint8, read-only)."""

    name: str
    shape: tuple[int, ...]
    type: str
    data: np.ndarray = field(repr=False)


@dataclass
class GgufFile:
    """A parsed GGUF file. Example: `read_gguf("m.gguf").tensors["token_embd.weight"].shape`."""

    path: str
    version: int
    metadata: dict
    tensors: dict[str, GgufTensor]
    alignment: int
    file_size: int
    architecture: str | None = field(default=None)


def read_gguf(path: str | os.PathLike) -> GgufFile:
    """Parse the GGUF file at `path`. Example: `read_gguf(p).metadata["llama.block_count"]`."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read GGUF file: {e}") from e
    _check_header(path, head)
    import gguf  # the lm extra; imported here so `engine` imports without it

    reader_class = _checked_reader_class(gguf.GGUFReader)
    try:
        reader = reader_class(path, "r")
        metadata = {name: f.contents() for name, f in reader.fields.items()
                    if not name.startswith("GGUF.")}
        tensors = {}
        for f in reader.tensor_fields:
            if f.name in tensors:
                raise ModelFormatError(f"{path}: tensor '{f.name}' appears twice")
            tensors[f.name] = _tensor(path, reader, f, size)
    except EngineError:
        raise
    except Exception as e:  # the package's own complaints about a corrupt file
        raise ModelFormatError(f"{path}: corrupt GGUF file: {type(e).__name__}: {e}") from e
    arch = metadata.get("general.architecture")
    return GgufFile(path, int(struct.unpack("<I", head[4:8])[0]), metadata, tensors,
                    int(reader.alignment), size, arch if isinstance(arch, str) else None)


def _check_header(path: str, head: bytes) -> None:
    if len(head) < 8 or head[:4] != _MAGIC:
        raise ModelFormatError(f"{path}: not a GGUF file (magic {head[:4]!r}, expected {_MAGIC!r})")
    version = struct.unpack("<I", head[4:8])[0]
    if version & 0xFFFF == 0:
        raise ModelFormatError(f"{path}: big-endian GGUF files are not supported")
    if version not in _VERSIONS:
        raise ModelFormatError(f"{path}: GGUF version {version} is not supported "
                               f"(supported: {', '.join(map(str, _VERSIONS))})")


def _checked_reader_class(base):
    """The package's reader with every read bounds-checked and tensor building left to us."""

    class CheckedReader(base):
        def __init__(self, path, mode):
            self.filename, self.where = path, "in the header"
            super().__init__(path, mode)

        def _get(self, offset, dtype, count=1, override_order=None):
            if type(self.data) is np.memmap:  # plain views of the same pages: slicing a memmap
                self.data = self.data.view(np.ndarray)  # costs ~3x more, times ~250k reads
            end = int(offset) + np.dtype(dtype).itemsize * int(count)
            if end > len(self.data):
                raise ModelFormatError(
                    f"{self.filename}: truncated {self.where}: a read at byte {offset} needs "
                    f"{end} bytes, the file has {len(self.data)}")
            return super()._get(offset, dtype, count, override_order)

        def _push_field(self, f, skip_sum=False):
            self.where = f"after metadata key '{f.name}'"
            return super()._push_field(f, skip_sum)

        def _get_tensor_info_field(self, offset):
            self.where = f"in the tensor info at byte {offset}"
            return super()._get_tensor_info_field(offset)

        def _build_tensors(self, start_offs, fields):
            self.tensor_fields = fields

    return CheckedReader


def _tensor(path: str, reader, f, file_size: int) -> GgufTensor:
    import gguf

    _, _, _, dims, raw_type, offset = f.parts
    name = f.name
    where = f"{path}: tensor '{name}'"
    try:
        type_name = gguf.GGMLQuantizationType(int(raw_type[0])).name
    except ValueError:
        raise ModelFormatError(f"{where}: unknown ggml type id {int(raw_type[0])}") from None
    if type_name not in BLOCK_SIZES:
        raise UnsupportedOpError(f"{where}: ggml type {type_name} is not supported "
                                 f"(supported: {', '.join(BLOCK_SIZES)})")
    shape = tuple(int(d) for d in reversed(dims.tolist()))
    block, block_bytes = BLOCK_SIZES[type_name]
    if not shape or shape[-1] % block:
        raise ModelFormatError(f"{where}: row length {shape[-1] if shape else None} is not a "
                               f"multiple of the {type_name} block size {block}")
    n_bytes = int(np.prod(shape, dtype=object)) // block * block_bytes  # Python ints: no overflow
    if int(offset[0]) % reader.alignment:
        raise ModelFormatError(f"{where}: data offset {int(offset[0])} is not a multiple of "
                               f"the alignment {reader.alignment}")
    start = reader.data_offset + int(offset[0])
    if start + n_bytes > file_size:  # a truncated file, or dims no file could hold
        raise ModelFormatError(f"{where}: data runs past the end of the file (shape {shape} of "
                               f"{type_name} is {n_bytes} bytes at byte {start}, the file has "
                               f"{file_size})")
    return GgufTensor(name, shape, type_name, reader.data[start:start + n_bytes].view(np.ndarray))
