"""engine.lm.Tokenizer built from the SmolLM2 GGUF metadata against transformers' tokenizer for
the same file: equal ids on a corpus of ASCII, Unicode, whitespace, numbers, code and special-token
strings; decode inverts encode; the stream decoder's pieces add up to decode and never split a
UTF-8 character; bad metadata is a clear error."""

from __future__ import annotations

import pytest

from engine.errors import ModelFormatError, UnsupportedOpError
from engine.lm.tokenizer import Tokenizer

pytest.importorskip("tokenizers")
from gguf_smollm2 import smollm2_metadata, smollm2_reference  # noqa: E402

CORPUS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "",
    " ",
    "   leading, inner   runs and trailing   ",
    "tabs\tand\t\ttabs\nnewlines\n\n\r\nCRLF",
    "café naïve résumé Ünïcödé — “quotes”",
    "漢字かな交じり文、中文句子。한국어",
    "emoji 🙂👍🏽 family 👨‍👩‍👧 flag 🇫🇷",
    "مرحبا بالعالم שלום עולם",
    "In 2024, 365 days; pi=3.14159, 1,000,000 and 0x1F -42",
    "def square(x):\n    return x ** 2  # comment\n\nprint([square(i) for i in range(10)])\n",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text<|im_end|><|im_start|>",
    "it's I'll we've they'd YOU'RE",
    "a" * 300,
]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_gguf_metadata(smollm2_metadata())


@pytest.fixture(scope="module")
def ref():
    return smollm2_reference()


@pytest.mark.parametrize("text", CORPUS)
def test_ids_equal_transformers_and_decode_inverts(tok, ref, text):
    ids = tok.encode(text)
    assert ids == ref.encode(text)
    assert tok.decode(ids) == text == ref.decode(ids)


def test_batch_special_tokens_and_vocabulary(tok, ref):
    assert tok.encode_batch(CORPUS) == [ref.encode(t) for t in CORPUS]
    assert tok.vocab_size == len(ref) == 49152
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (1, 2, 2, 0)
    assert tok.eos_ids == (ref.eos_token_id,)
    assert tok.token_to_id("<|im_start|>") == ref.convert_tokens_to_ids("<|im_start|>") == 1
    assert tok.id_to_token(1) == "<|im_start|>"
    # The file says add_bos_token = False, so add_special_tokens adds nothing here.
    assert tok.encode("Hi", add_special_tokens=True) == tok.encode("Hi", add_special_tokens=False)
    ids = tok.encode(CORPUS[12])
    assert tok.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True)
    assert "<|im_start|>" not in tok.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("text", CORPUS)
def test_stream_pieces_add_up_to_decode(tok, text):
    ids = tok.encode(text)
    pieces = list(tok.stream_decoder()(ids))
    assert "".join(pieces) == tok.decode(ids)
    assert not any("\ufffd" in p for p in pieces)


def test_stream_holds_a_character_split_across_tokens(tok):
    ids = tok.encode("🙂")
    assert len(ids) > 1  # the emoji's 4 bytes span several byte-level tokens
    stream = tok.stream_decoder()
    pieces = [stream.push(i) for i in ids]
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == "🙂"
    stream = tok.stream_decoder()
    assert stream.push(ids[0]) == "" and stream.flush() == "\ufffd"  # a cut stream shows what it has


def test_bos_and_eos_flags(tok):
    md = dict(smollm2_metadata(), **{"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": True})
    flagged = Tokenizer.from_gguf_metadata(md)
    assert flagged.encode("Hi") == [1, *tok.encode("Hi"), 2]
    assert flagged.encode("Hi", add_special_tokens=False) == tok.encode("Hi")
    assert flagged.encode_batch(["Hi"]) == [[1, *tok.encode("Hi"), 2]]


def test_bad_metadata_is_a_clear_error():
    md = smollm2_metadata()
    with pytest.raises(UnsupportedOpError, match="tokenizer.ggml.pre 'no-such-regex'"):
        Tokenizer.from_gguf_metadata(dict(md, **{"tokenizer.ggml.pre": "no-such-regex"}))
    with pytest.raises(UnsupportedOpError, match="tokenizer.ggml.model 'rwkv'"):
        Tokenizer.from_gguf_metadata(dict(md, **{"tokenizer.ggml.model": "rwkv"}))
    with pytest.raises(ModelFormatError, match="tokenizer.ggml.merges"):
        Tokenizer.from_gguf_metadata({k: v for k, v in md.items() if k != "tokenizer.ggml.merges"})
    with pytest.raises(ModelFormatError, match="tokenizer.ggml.model"):
        Tokenizer.from_gguf_metadata({})


def _tiny_sentencepiece() -> dict:
    """A SentencePiece-style ("llama") vocabulary: control tokens, 256 byte tokens, then pieces
    whose scores rank the merges (earlier merges first)."""
    pieces = ["▁", "a", "d", "e", "h", "l", "o", "r", "t", "w", "1", "2", "he", "ll", "▁t", "▁the", "▁w", "or"]
    pieces += ["▁wor", "ld", "▁world", "llo", "▁he", "▁hello", "▁a", "12"]
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], *pieces],
        "tokenizer.ggml.scores": [0.0] * 259 + [-float(i) for i in range(len(pieces))],
        "tokenizer.ggml.token_type": [2, 3, 3, *[6] * 256, *[1] * len(pieces)],  # UNKNOWN, CONTROL, BYTE, NORMAL
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }


def test_sentencepiece_vocabulary_equals_transformers():
    mapping = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")
    md = _tiny_sentencepiece()
    tok = Tokenizer.from_gguf_metadata(md)
    fields = {"tokens": "tokens", "scores": "scores", "token_type": "token_type"}
    ref, _ = mapping.convert_gguf_tokenizer(
        "llama",
        {"tokenizer_type": "llama", "unk_token_id": 0, **{v: md[f"tokenizer.ggml.{k}"] for k, v in fields.items()}},
    )
    # Unknown characters fall back to <0xXX> byte tokens; a leading space merges into the "▁" prefix.
    for text in ["hello world", "the world 12 1212", "héllo wörld 🙂", "a\nb", "<s>hello</s>", "", " hello  world"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == ref.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text.removeprefix(" ")
    assert tok.encode("hello") == [1, tok.token_to_id("▁hello")]  # llama vocabularies add BOS by default
    ids = tok.encode("wörld 🙂")
    assert "".join(tok.stream_decoder()(ids)) == tok.decode(ids) == "<s> wörld 🙂"
    assert "".join(tok.stream_decoder(skip_special_tokens=True)(ids)) == tok.decode(ids, True) == "wörld 🙂"
