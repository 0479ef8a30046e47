"""Tiny random-weight transformers models saved as safetensors checkpoints, and their reference
logits from transformers itself (the independent reference of the decoder tests)."""

import numpy as np

torch = None
transformers = None


def _imports():
    global torch, transformers
    import pytest
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")


def llama_folder(path, *, head_dim=16, layers=2, tied=False, seed=0, dtype=None, **extra):
    """A LlamaForCausalLM (hidden 64, 4 heads, 2 kv heads, vocab 300) saved into `path`."""
    _imports()
    torch.manual_seed(seed)
    args = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim, max_position_embeddings=1024,
                tie_word_embeddings=tied, rms_norm_eps=1e-5, rope_theta=500.0)
    cfg = transformers.LlamaConfig(**{**args, **extra})
    model = transformers.LlamaForCausalLM(cfg).eval()
    _randomise_norms(model)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(str(path))
    return model


def gpt2_folder(path, seed=0):
    """A GPT2LMHeadModel (n_embd 48, 3 heads, 2 layers, 40 positions, vocab 200) saved into `path`."""
    _imports()
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=200, n_positions=40, n_embd=48, n_layer=2, n_head=3)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    _randomise_norms(model)
    model.save_pretrained(str(path))
    return model


def _randomise_norms(model):
    # Fresh norms are all ones (and zero biases): make them matter.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.2)


def reference_logits(model, ids) -> np.ndarray:
    """(len(ids), vocab) float32 logits of one sequence."""
    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits[0].float().numpy()


def assert_close(got, want, rel=1e-4):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-6)
    assert err <= rel, f"relative error {err:.3g} > {rel}"
