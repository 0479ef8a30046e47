"""numpy reference dequantisation of GGUF (ggml) weight blocks to float32.

Written from the block layouts (all little-endian; f16 = IEEE half):
  Q4_0  32 values, 18 bytes: d f16 | 16 bytes of nibbles. Byte j: low nibble = value j,
        high nibble = value j+16. x = (q - 8) * d.
  Q4_1  32 values, 20 bytes: d f16 | m f16 | 16 bytes of nibbles as Q4_0. x = q * d + m.
  Q8_0  32 values, 34 bytes: d f16 | 32 int8. x = q * d.
  Q4_K  256 values, 144 bytes: d f16 | dmin f16 | 12 bytes of 6-bit scales and mins for 8
        sub-blocks of 32 | 128 bytes of nibbles. Bytes 32c..32c+31 hold sub-block 2c in their
        low nibbles and 2c+1 in their high nibbles. x = (d * sc) * q - (dmin * m).
  Q6_K  256 values, 210 bytes: ql 128 bytes (low 4 bits) | qh 64 bytes (high 2 bits) |
        16 int8 scales (one per 16 values) | d f16. x = (d * scale) * (q - 32).
The multiplication order matches ggml's C reference, so results are bit-exact with it.
This is the reference the quantized matrix kernels are tested against; it is not fast.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelFormatError
from ..formats.gguf import BLOCK_SIZES


def dequantize(raw: np.ndarray, type_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """float32 array of `shape` from the raw bytes of a ggml tensor (row-major shape, as
    engine.formats.gguf gives it). Example: `dequantize(t.data, t.type, t.shape)`."""
    if type_name not in _DEQUANTIZE:
        raise ModelFormatError(f"dequantize: ggml type {type_name} is not supported "
                               f"(supported: {', '.join(_DEQUANTIZE)})")
    block, block_bytes = BLOCK_SIZES[type_name]
    n = int(np.prod(shape, dtype=np.int64))
    raw = np.asarray(raw).view(np.uint8).reshape(-1)
    if n % block or raw.size != n // block * block_bytes:
        raise ModelFormatError(f"dequantize: {raw.size} bytes of {type_name} do not hold "
                               f"shape {tuple(shape)} ({block} values per {block_bytes} bytes)")
    blocks = raw.reshape(n // block, block_bytes)
    return _DEQUANTIZE[type_name](blocks).reshape(shape)


def _f16(b: np.ndarray) -> np.ndarray:
    """Column of float32 from 2-byte little-endian half floats (n_blocks, 2) -> (n_blocks, 1)."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, k) bytes -> (n, 2k): all low nibbles, then all high nibbles."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _f32(blocks):
    return np.ascontiguousarray(blocks).view("<f4").astype(np.float32)


def _f16_values(blocks):
    return np.ascontiguousarray(blocks).view("<f2").astype(np.float32)


def _bf16(blocks):
    # bf16 is the top half of a float32.
    return (np.ascontiguousarray(blocks).view("<u2").astype(np.uint32) << 16).view(np.float32)


def _q4_0(blocks):
    d = _f16(blocks[:, :2])
    q = _nibbles(blocks[:, 2:]).astype(np.int8) - np.int8(8)
    return q.astype(np.float32) * d


def _q4_1(blocks):
    d, m = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
    return _nibbles(blocks[:, 4:]).astype(np.float32) * d + m


def _q8_0(blocks):
    d = _f16(blocks[:, :2])
    return blocks[:, 2:].view(np.int8).astype(np.float32) * d


def _k4_scales_mins(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 packed bytes -> (n, 8) scales and (n, 8) mins, 6 bits each. Sub-blocks 0-3 keep
    theirs in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 have their
    low 4 bits in bytes 8-11 (scale: low nibble, min: high nibble) and their top 2 bits in the
    spare top bits of bytes 0-3 (scales) and 4-7 (mins)."""
    lo_sc, lo_m, packed = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([lo_sc & 63, (packed & 0x0F) | ((lo_sc >> 6) << 4)], axis=1)
    m = np.concatenate([lo_m & 63, (packed >> 4) | ((lo_m >> 6) << 4)], axis=1)
    return sc.astype(np.float32), m.astype(np.float32)


def _q4_k(blocks):
    n = blocks.shape[0]
    d, dmin = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
    sc, m = _k4_scales_mins(blocks[:, 4:16])
    # (n, 4 chunks, 32 bytes) -> (n, 4, 2 halves, 32) -> (n, 8 sub-blocks, 32 values)
    qs = blocks[:, 16:].reshape(n, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    q = (qs & 0x0F).reshape(n, 8, 32).astype(np.float32)
    return ((d * sc)[..., None] * q - (dmin * m)[..., None]).reshape(n, 256)


def _q6_k(blocks):
    n = blocks.shape[0]
    ql = blocks[:, :128].reshape(n, 2, 64)  # two halves of 128 values each
    qh = blocks[:, 128:192].reshape(n, 2, 32)
    scales = blocks[:, 192:208].view(np.int8).astype(np.float32)  # one per 16 values
    d = _f16(blocks[:, 208:210])
    # Within a half, value 32k + l (k = 0..3, l = 0..31): low 4 bits from ql[l + 32(k % 2)]
    # (low nibble for k < 2, high for k >= 2), high 2 bits from qh[l] at bit 2k.
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2)  # (n, 2, 128) in value order
    high = (qh[:, :, None, :] >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)) & 3
    q = (low | (high.reshape(n, 2, 128) << 4)).astype(np.int8) - np.int8(32)
    scale = (d * scales).reshape(n, 16, 1)
    return (scale * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, 256)


_DEQUANTIZE = {"F32": _f32, "F16": _f16_values, "BF16": _bf16, "Q4_0": _q4_0, "Q4_1": _q4_1,
               "Q8_0": _q8_0, "Q4_K": _q4_k, "Q6_K": _q6_k}
