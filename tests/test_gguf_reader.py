"""engine.formats.gguf: metadata and tensor views from real and tiny GGUF files, and a clear
ModelFormatError / UnsupportedOpError (never a crash) for every kind of bad file."""

import struct

import numpy as np
import pytest

from engine.errors import EngineError, ModelFormatError, UnsupportedOpError
from engine.formats.gguf import read_gguf
from gguf_helpers import smollm2_path, write_gguf

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def smollm2():
    return read_gguf(smollm2_path())


@pytest.fixture
def tiny(tmp_path, rng):
    tensors = {"tensor_one": (rng.standard_normal((4, 64)), "Q4_0"),
               "tensor_two": (rng.standard_normal((3, 5)), "F32")}
    metadata = {"x.count": 7, "x.text": "hello", "x.list": [1, 2, 3]}
    return write_gguf(tmp_path / "tiny.gguf", tensors, metadata)


def test_smollm2_metadata_and_tensors(smollm2):
    m = smollm2.metadata
    assert smollm2.architecture == "llama" and smollm2.version == 3 and smollm2.alignment == 32
    assert m["llama.block_count"] == 30 and m["llama.embedding_length"] == 576
    assert (m["llama.attention.head_count"], m["llama.attention.head_count_kv"]) == (9, 3)
    assert len(m["tokenizer.ggml.tokens"]) == 49152 and m["tokenizer.ggml.tokens"][1] == "<|im_start|>"
    assert all(isinstance(t, int) for t in m["tokenizer.ggml.token_type"][:10])
    assert isinstance(m["tokenizer.ggml.add_bos_token"], bool)
    assert len(smollm2.tensors) == 272
    emb = smollm2.tensors["token_embd.weight"]
    assert (emb.shape, emb.type) == ((49152, 576), "Q8_0")  # row-major: GGUF lists [576, 49152]
    assert emb.data.dtype == np.uint8 and emb.data.size == 49152 * 576 // 32 * 34
    assert smollm2.tensors["blk.0.ffn_down.weight"].shape == (576, 1536)
    assert {t.type for t in smollm2.tensors.values()} == {"Q8_0", "Q4_1", "F32"}


def test_tensor_data_is_a_read_only_view_of_the_file(smollm2):
    reference = {t.name: t for t in gguf.GGUFReader(smollm2.path).tensors}
    for name in ("token_embd.weight", "blk.29.attn_v.weight", "output_norm.weight"):
        t = smollm2.tensors[name]
        assert not t.data.flags.writeable and not t.data.flags.owndata
        assert np.array_equal(t.data, reference[name].data.reshape(-1).view(np.uint8))


def test_tiny_file_round_trips_metadata_and_types(tmp_path, rng):
    floats = rng.standard_normal((2, 256)).astype(np.float32)
    tensors = {"f16": (floats, "F16"), "bf16": (floats, "BF16"), "q4_1": (floats, "Q4_1"),
               "q8_0": (floats, "Q8_0"), "f32": (floats[:, :7], "F32")}
    meta = {"a.flag": False, "a.eps": 0.25, "a.words": ["x", "yz"], "a.ids": [3, 1, 2]}
    f = read_gguf(write_gguf(tmp_path / "t.gguf", tensors, meta))
    assert {k: f.metadata[k] for k in meta} == meta
    assert {n: (t.shape, t.type) for n, t in f.tensors.items()} == {
        "f16": ((2, 256), "F16"), "bf16": ((2, 256), "BF16"), "q4_1": ((2, 256), "Q4_1"),
        "q8_0": ((2, 256), "Q8_0"), "f32": ((2, 7), "F32")}
    assert np.array_equal(f.tensors["f32"].data.view(np.float32).reshape(2, 7), floats[:, :7])


def test_not_gguf_and_bad_versions(tmp_path, tiny):
    raw = tiny.read_bytes()
    cases = {"magic": b"GGUX" + raw[4:], "empty": b"", "v1": raw[:4] + struct.pack("<I", 1) + raw[8:],
             "v9": raw[:4] + struct.pack("<I", 9) + raw[8:],
             "big-endian": raw[:4] + struct.pack(">I", 3) + raw[8:]}
    for label, content in cases.items():
        path = tmp_path / f"{label}.gguf"
        path.write_bytes(content)
        with pytest.raises(ModelFormatError, match=f"{path.name}.*(not a GGUF|version|big-endian)"):
            read_gguf(path)
    with pytest.raises(ModelFormatError, match="cannot read"):
        read_gguf(tmp_path / "missing.gguf")


@pytest.mark.parametrize("cut", [10, 30, 1000, 600_000, 1_785_000, 1_790_000])
def test_truncated_copies_of_smollm2(tmp_path, cut):
    path = tmp_path / "cut.gguf"
    with open(smollm2_path(), "rb") as f:
        path.write_bytes(f.read(cut))
    with pytest.raises(ModelFormatError, match="cut.gguf.*(truncated|past the end)"):
        read_gguf(path)


def test_tensor_data_past_the_end_names_the_tensor(tmp_path, tiny):
    path = tmp_path / "short.gguf"
    path.write_bytes(tiny.read_bytes()[:-8])  # the last 4 are padding
    with pytest.raises(ModelFormatError, match="short.gguf: tensor 'tensor_two'.*past the end"):
        read_gguf(path)


def _patch(path, marker, offset, fmt, *values):
    """Overwrite the `fmt` fields `offset` bytes after the end of `marker` in the file."""
    raw = bytearray(path.read_bytes())
    at = raw.index(marker) + len(marker) + offset
    struct.pack_into(fmt, raw, at, *values)
    path.write_bytes(bytes(raw))


def test_metadata_string_and_array_running_past_the_end(tiny):
    original = tiny.read_bytes()
    _patch(tiny, b"x.text", 4, "<Q", 2**40)  # after the key: u32 type, then the u64 length
    with pytest.raises(ModelFormatError, match="tiny.gguf: truncated after metadata key 'x.count'"):
        read_gguf(tiny)
    tiny.write_bytes(original)
    _patch(tiny, b"x.list", 8, "<Q", 2**60)  # after the key: u32 ARRAY, u32 item type, u64 count
    with pytest.raises(ModelFormatError, match="tiny.gguf: truncated after metadata key 'x.text'"):
        read_gguf(tiny)


def test_impossible_dims(tiny):
    original = tiny.read_bytes()
    for dims in [(64, 2**40), (2**62, 2**62)]:  # GGUF order; the second's product overflows 64 bits
        tiny.write_bytes(original)
        _patch(tiny, b"tensor_one", 4, "<QQ", *dims)  # after the u32 n_dims
        with pytest.raises(ModelFormatError, match="tensor 'tensor_one'.*past the end"):
            read_gguf(tiny)


def test_unsupported_and_unknown_types(tmp_path, rng, tiny):
    path = write_gguf(tmp_path / "q5.gguf", {"odd_one": (rng.standard_normal((2, 64)), "Q5_0")})
    with pytest.raises(UnsupportedOpError, match="q5.gguf: tensor 'odd_one'.*Q5_0 is not supported"):
        read_gguf(path)
    _patch(tiny, b"tensor_one", 4 + 16, "<I", 99)  # after n_dims and two u64 dims: the type
    with pytest.raises(ModelFormatError, match="tensor 'tensor_one'.*unknown ggml type id 99"):
        read_gguf(tiny)


def test_random_header_corruption_never_crashes(tmp_path, tiny, rng):
    """Flipped bytes anywhere in the header give a result or an EngineError, nothing else."""
    original = np.frombuffer(tiny.read_bytes(), np.uint8)
    header_end = original.size - 4 * 64 // 32 * 18 - 64  # roughly where tensor data begins
    path = tmp_path / "fuzz.gguf"
    for _ in range(300):
        raw = original.copy()
        at = rng.integers(0, header_end, size=rng.integers(1, 4))
        raw[at] = rng.integers(0, 256, size=at.size)
        path.write_bytes(raw.tobytes())
        try:
            read_gguf(path)
        except EngineError:
            pass
