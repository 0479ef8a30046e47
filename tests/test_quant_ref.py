"""engine.lm.quant_ref against the gguf package's own numpy dequantisation: random blocks of
every type and every tensor of the SmolLM2 file, compared bit for bit."""

import numpy as np
import pytest

from engine.errors import ModelFormatError
from engine.formats.gguf import BLOCK_SIZES, read_gguf
from engine.lm.quant_ref import dequantize
from gguf_helpers import smollm2_path

gguf = pytest.importorskip("gguf")
# Scale fields (byte offsets of f16 values) of the k-quants, which gguf cannot quantize to.
_K_SCALES = {"Q4_K": (0, 2), "Q6_K": (208,)}


def _random_blocks(type_name, n_blocks, rng):
    """Raw bytes of `n_blocks` blocks: quantized random floats where gguf can quantize, else
    random bytes with finite, modest f16 scales."""
    block, block_bytes = BLOCK_SIZES[type_name]
    qtype = gguf.GGMLQuantizationType[type_name]
    if type_name in _K_SCALES:
        raw = rng.integers(0, 256, (n_blocks, block_bytes), dtype=np.uint8)
        for at in _K_SCALES[type_name]:
            scales = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
            raw[:, at:at + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
        return raw
    floats = rng.standard_normal((n_blocks, block)).astype(np.float32) * 3
    if type_name == "F32":
        return floats.view(np.uint8)
    if type_name == "F16":
        return floats.astype(np.float16).view(np.uint8)
    return gguf.quants.quantize(floats, qtype)


def _same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("type_name", list(BLOCK_SIZES))
def test_random_blocks_match_gguf(type_name, rng):
    raw = _random_blocks(type_name, 64, rng)
    block = BLOCK_SIZES[type_name][0]
    ours = dequantize(raw, type_name, (8, 8 * block))
    reference = gguf.quants.dequantize(raw.reshape(8, -1), gguf.GGMLQuantizationType[type_name])
    assert ours.dtype == np.float32 and np.isfinite(ours).all()
    assert _same_bits(ours, reference)


def test_every_smollm2_tensor_matches_gguf():
    path = smollm2_path()
    reference = {t.name: t for t in gguf.GGUFReader(path).tensors}
    for t in read_gguf(path).tensors.values():
        want = gguf.quants.dequantize(reference[t.name].data, reference[t.name].tensor_type)
        assert _same_bits(dequantize(t.data, t.type, t.shape), want), t.name


def test_wrong_sizes_and_types_are_named():
    raw = np.zeros(34 * 2, np.uint8)
    with pytest.raises(ModelFormatError, match="68 bytes of Q8_0 do not hold shape \\(3, 32\\)"):
        dequantize(raw, "Q8_0", (3, 32))
    with pytest.raises(ModelFormatError, match="Q5_0 is not supported"):
        dequantize(raw, "Q5_0", (2, 32))
