"""engine.load on a Hugging Face decoder folder (config.json + model.safetensors + tokenizer files):
a LanguageModel whose logits, greedy generation, tokenizer and chat template equal transformers'."""

from __future__ import annotations

import json

import numpy as np
import pytest

import engine
from gguf_smollm2 import smollm2_reference
from lm_tiny_models import assert_close, llama_folder, reference_logits

VOCAB = 49152  # SmolLM2's tokenizer, saved next to a tiny random Llama of that vocabulary


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch = pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("tiny-llama")
    model = llama_folder(path, vocab_size=VOCAB, layers=2, seed=3, bos_token_id=1, eos_token_id=2)
    tok = smollm2_reference()
    tok.save_pretrained(str(path))
    torch.set_num_threads(2)
    return path, model, tok


def test_an_hf_folder_loads_as_a_language_model(folder):
    path, model, tok = folder
    lm = engine.load(path)
    assert isinstance(lm, engine.lm.LanguageModel)
    assert lm.vocab_size == VOCAB and lm.decoder.spec.arch == "llama" and not lm.decoder.spec.rope_interleaved
    text = "Hello, world!  Unicode: café 日本語"
    assert lm.encode(text) == tok(text).input_ids
    ids = lm.encode("The quick brown fox")
    assert_close(lm.logits(ids), reference_logits(model, ids))


def test_greedy_generation_equals_transformers(folder):
    torch = pytest.importorskip("torch")
    path, model, tok = folder
    lm = engine.load(path)
    ids = tok("Once upon a time").input_ids
    with torch.no_grad():
        want = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                              eos_token_id=None)[0, len(ids):].tolist()
    assert lm.generate_ids(ids, max_new_tokens=12) == want


def test_chat_template_from_tokenizer_config(folder):
    path, _, tok = folder
    lm = engine.load(path)
    messages = [{"role": "user", "content": "Hi there"}]
    want = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert lm.render_chat(messages) == want
    assert lm.chat_ids(messages) == tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                            return_dict=False)


def test_f32_option_and_unknown_options(folder):
    path, _, _ = folder
    lm = engine.load(path, dtype="f32", max_context=64, max_sequences=2)
    assert lm.max_context == 64 and lm.decoder.max_sequences == 2
    with pytest.raises(engine.EngineError, match="unknown option"):
        engine.load(path, context=3)
    with pytest.raises(engine.EngineError, match="dtype"):
        engine.load(path, dtype="int3")


def test_a_folder_without_tokenizer_takes_ids(tmp_path):
    llama_folder(tmp_path, layers=1)
    lm = engine.load(tmp_path)
    assert lm.tokenizer is None
    assert len(lm.generate_ids([1, 2, 3], max_new_tokens=3)) == 3
    with pytest.raises(engine.EngineError, match="no tokenizer"):
        lm.generate("text")


def test_graph_options_and_non_lm_folders_are_refused(tmp_path):
    cfg = {"architectures": ["BertModel"], "model_type": "bert"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(engine.EngineError):  # not a causal LM: read as an .engine folder, which it is not
        engine.load(tmp_path)
    m = engine.nn.Sequential([engine.nn.Input((3,)), engine.nn.Dense(2)])
    m.save(tmp_path / "m.engine")
    with pytest.raises(engine.EngineError, match="language models only"):
        engine.load(tmp_path / "m.engine", max_context=4)
    assert engine.load(tmp_path / "m.engine").predict(np.ones((1, 3), np.float32)).shape == (1, 2)
