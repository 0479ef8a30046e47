"""The tokenizer of a language model, built from a GGUF file's metadata with Hugging Face
`tokenizers` (the `text` extra, imported when a tokenizer is built), and a stream decoder that
turns generated ids into text pieces without splitting a UTF-8 character between pieces."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from engine.errors import EngineError


class Tokenizer:
    """Text <-> token ids, with the model's special tokens and BOS/EOS rules.

    >>> tok = Tokenizer.from_gguf_metadata(metadata)
    >>> tok.decode(tok.encode("Hello"))
    'Hello'
    """

    def __init__(self, backend, *, bos_id=None, eos_ids=(), unk_id=None, pad_id=None, add_bos=False, add_eos=False):
        self._backend = backend
        self.bos_id: int | None = bos_id
        self.eos_ids: tuple[int, ...] = tuple(eos_ids)
        self.unk_id: int | None = unk_id
        self.pad_id: int | None = pad_id
        self.add_bos = add_bos and bos_id is not None
        self.add_eos = add_eos and bool(self.eos_ids)

    @classmethod
    def from_gguf_metadata(cls, md: dict) -> Tokenizer:
        """Build from a GGUF metadata dict {key: python value} (llama.cpp's `tokenizer.ggml.*` keys).

        >>> Tokenizer.from_gguf_metadata({"tokenizer.ggml.model": "gpt2", ...}).vocab_size
        49152
        """
        try:
            import tokenizers  # noqa: F401
        except ImportError:
            raise EngineError(
                "language-model tokenizers need the `tokenizers` package: pip install 'engine[text]'"
            ) from None
        from engine.lm.gguf_vocab import build_backend

        def token_id(name):
            return md.get(f"tokenizer.ggml.{name}_token_id")

        eos_ids = dict.fromkeys(i for i in (token_id("eos"), token_id("eot"), token_id("eom")) if i is not None)
        return cls(
            build_backend(md),
            bos_id=token_id("bos"),
            eos_ids=eos_ids,
            unk_id=token_id("unknown"),
            pad_id=token_id("padding"),
            # llama.cpp adds BOS to a SentencePiece vocabulary unless the file says not to.
            add_bos=md.get("tokenizer.ggml.add_bos_token", md["tokenizer.ggml.model"] == "llama"),
            add_eos=md.get("tokenizer.ggml.add_eos_token", False),
        )

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int | None:
        """The first end-of-sequence id (generation stops at any of `eos_ids`)."""
        return self.eos_ids[0] if self.eos_ids else None

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._backend.id_to_token(token_id)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; special-token strings in it ("<|im_start|>") map to their ids.

        >>> tok.encode("<|im_start|>user")
        [1, 4093]
        """
        return self._with_specials(self._backend.encode(text, add_special_tokens=False).ids, add_special_tokens)

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
        return [self._with_specials(e.ids, add_special_tokens) for e in encodings]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def stream_decoder(self, skip_special_tokens: bool = False) -> StreamDecoder:
        return StreamDecoder(self, skip_special_tokens)

    def _with_specials(self, ids: list[int], add: bool) -> list[int]:
        if add and self.add_bos:
            ids = [self.bos_id, *ids]
        if add and self.add_eos:
            ids = [*ids, self.eos_ids[0]]
        return ids


class StreamDecoder:
    """Text pieces for ids that arrive one at a time: their concatenation equals `decode` of all
    ids. A piece is held back while it ends in an incomplete UTF-8 character (decoded as U+FFFD).

    >>> stream = tok.stream_decoder()
    >>> "".join(stream.push(i) for i in ids) + stream.flush() == tok.decode(ids)
    True
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False):
        self._decode = lambda ids: tokenizer.decode(ids, skip_special_tokens)
        self._ids: list[int] = []
        # Text is decoded from _prefix, the start of the last emitted piece, not from 0: a step
        # costs O(1), and both decodes below begin at a character boundary with the same context
        # (SentencePiece's decoder drops the first token's leading space in both alike).
        self._prefix = 0
        self._read = 0  # the text of ids[:_read] has been emitted

    def push(self, token_id: int) -> str:
        """The new text that `token_id` completes ("" while a character is still partial)."""
        self._ids.append(token_id)
        done = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(done) or text.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(done) :]

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character decodes as U+FFFD)."""
        done = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        self._read = len(self._ids)
        return text[len(done) :]

    def __call__(self, ids: Iterable[int]) -> Iterator[str]:
        """The non-empty pieces for a stream of ids, then what is left at its end."""
        for token_id in ids:
            if piece := self.push(token_id):
                yield piece
        if rest := self.flush():
            yield rest
