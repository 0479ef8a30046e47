"""Build a Hugging Face `tokenizers.Tokenizer` from the vocabulary a GGUF file carries in its
metadata (llama.cpp's key names): byte-level BPE ("gpt2") and SentencePiece-style BPE ("llama").

The file names its pre-tokenizer (`tokenizer.ggml.pre`) but not the regex: llama.cpp keeps the
regexes in code (llama-vocab.cpp), so they are copied here in a table. An unknown name is an error,
not a silent fallback: a wrong split gives plausible but wrong ids.
"""

from __future__ import annotations

from engine.errors import ModelFormatError, UnsupportedOpError

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_GPT2 = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",)
_DIGITS = (r"\p{N}", *_GPT2)  # each digit alone, then GPT-2's split (StarCoder, SmolLM)
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
)
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
)

# tokenizer.ggml.pre -> the regexes that split text, in turn, before bytes map to BPE symbols (llama-vocab.cpp).
PRE_TOKENIZERS: dict[str, tuple[str, ...]] = {
    "default": _GPT2,
    "gpt-2": _GPT2,
    "gpt2": _GPT2,
    "phi-2": _GPT2,
    "jina-es": _GPT2,
    "jina-de": _GPT2,
    "smollm": _DIGITS,
    "starcoder": _DIGITS,
    "refact": _DIGITS,
    "command-r": _DIGITS,
    "codeshell": _DIGITS,
    "llama-bpe": _LLAMA3,
    "llama3": _LLAMA3,
    "falcon3": _LLAMA3,
    "smaug-bpe": _LLAMA3,
    "dbrx": _LLAMA3,
    "qwen2": _QWEN2,
    "deepseek-r1-qwen": _QWEN2,
}


def build_backend(md: dict):
    """The `tokenizers.Tokenizer` the metadata describes (special tokens added, not yet the BOS rule).

    >>> backend = build_backend({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm", ...})
    """
    model = _field(md, "tokenizer.ggml.model")
    if model == "gpt2":
        backend = _byte_level_bpe(md)
    elif model == "llama":
        backend = _sentencepiece_bpe(md)
    else:
        raise UnsupportedOpError(f"GGUF tokenizer.ggml.model {model!r} is not supported (supported: 'gpt2', 'llama')")
    _add_special_tokens(backend, md)
    return backend


def _field(md: dict, key: str):
    if key not in md:
        raise ModelFormatError(f"GGUF metadata has no {key!r}: cannot build the tokenizer")
    return md[key]


def _byte_level_bpe(md: dict):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    pre = md.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise UnsupportedOpError(
            f"GGUF tokenizer.ggml.pre {pre!r} is not a known pre-tokenizer (known: {', '.join(sorted(PRE_TOKENIZERS))})"
        )
    tokens = _field(md, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _field(md, "tokenizer.ggml.merges")]
    vocab = {token: i for i, token in enumerate(tokens)}
    backend = Tokenizer(models.BPE(vocab, merges, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in PRE_TOKENIZERS[pre]]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    backend.decoder = decoders.ByteLevel()
    return backend


def _sentencepiece_bpe(md: dict):
    """llama.cpp's SPM tokenizer: BPE where the better-scored merged piece merges first, with
    unknown characters spelled as <0xXX> byte tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokens = _field(md, "tokenizer.ggml.tokens")
    scores = _field(md, "tokenizer.ggml.scores")
    types = md.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    vocab = {token: i for i, token in enumerate(tokens)}
    unk_id = md.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if unk_id is not None else None
    merges = md.get("tokenizer.ggml.merges")
    merges = [tuple(m.split(" ", 1)) for m in merges] if merges else _merges_from_scores(tokens, scores, types, vocab)
    backend = Tokenizer(models.BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    add_prefix = md.get("tokenizer.ggml.add_space_prefix", True)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first" if add_prefix else "never", split=False
    )
    backend.decoder = decoders.Sequence(
        [
            decoders.Replace("\u2581", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", int(add_prefix), 0),
        ]
    )
    return backend


def _merges_from_scores(tokens, scores, types, vocab) -> list[tuple[str, str]]:
    """Every split of a normal token into two vocabulary pieces is a merge, ranked by the merged
    token's score (higher first), as SentencePiece's BPE ranks them."""
    ranked = []
    for token, score, kind in zip(tokens, scores, types):
        if kind != NORMAL:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                ranked.append((-score, vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _add_special_tokens(backend, md: dict) -> None:
    """CONTROL tokens (<|im_start|>) become special tokens and USER_DEFINED ones plain added tokens,
    so both match whole in text instead of being split by the model."""
    from tokenizers import AddedToken

    tokens = md["tokenizer.ggml.tokens"]
    types = md.get("tokenizer.ggml.token_type") or ()
    control = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == CONTROL]
    user = [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == USER_DEFINED]
    backend.add_special_tokens(control)
    backend.add_tokens(user)
