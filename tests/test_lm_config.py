"""engine.lm.config.LlamaConfig from SmolLM2's GGUF metadata and from a Hugging Face config."""

import pytest

from engine.errors import ModelFormatError, UnsupportedOpError
from engine.formats.gguf import read_gguf
from engine.lm.config import LlamaConfig
from gguf_helpers import smollm2_path

# SmolLM2-135M-Instruct, as published (its config.json on the Hugging Face hub).
SMOLLM2 = LlamaConfig(vocab_size=49152, hidden=576, n_layers=30, n_heads=9, n_kv_heads=3,
                      head_dim=64, intermediate=1536, rope_theta=100000.0, rope_dim=64,
                      rms_eps=1e-5, context_length=8192, bos_id=1, eos_id=2,
                      tied_embeddings=True)


@pytest.fixture(scope="module")
def smollm2():
    return read_gguf(smollm2_path())


def test_from_gguf_smollm2(smollm2):
    f = smollm2
    config = LlamaConfig.from_gguf(f.metadata, f.tensors)
    # rms_eps is stored as float32 in the file: compare it at that precision.
    assert config == LlamaConfig(**{**SMOLLM2.__dict__, "rms_eps": config.rms_eps})
    assert config.rms_eps == pytest.approx(1e-5, rel=1e-7)


def test_from_hf_smollm2():
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaConfig(vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                                  num_attention_heads=9, num_key_value_heads=3,
                                  intermediate_size=1536, rope_theta=100000.0, rms_norm_eps=1e-5,
                                  max_position_embeddings=8192, bos_token_id=1, eos_token_id=2,
                                  tie_word_embeddings=True)
    assert LlamaConfig.from_hf(hf.to_dict()) == SMOLLM2


def test_from_hf_older_config_json():
    """The keys of SmolLM2's own config.json (written by transformers 4: top-level rope_theta)."""
    config = {"vocab_size": 49152, "hidden_size": 576, "num_hidden_layers": 30,
              "num_attention_heads": 9, "num_key_value_heads": 3, "intermediate_size": 1536,
              "rope_theta": 100000, "rope_scaling": None, "rms_norm_eps": 1e-05,
              "max_position_embeddings": 8192, "bos_token_id": 1, "eos_token_id": 2,
              "tie_word_embeddings": True}
    assert LlamaConfig.from_hf(config) == SMOLLM2
    with pytest.raises(UnsupportedOpError, match="rope scaling .*llama3.* is not supported"):
        LlamaConfig.from_hf({**config, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})


def test_missing_keys_are_named(smollm2):
    metadata = dict(smollm2.metadata)
    del metadata["llama.block_count"]
    with pytest.raises(ModelFormatError, match="GGUF metadata: missing key 'llama.block_count'"):
        LlamaConfig.from_gguf(metadata)
    with pytest.raises(ModelFormatError, match="architecture 'gpt2' is not a Llama"):
        LlamaConfig.from_gguf({**metadata, "general.architecture": "gpt2"})
    with pytest.raises(ModelFormatError, match="config.json: missing key 'hidden_size'"):
        LlamaConfig.from_hf({"vocab_size": 10})
