"""torch.nn transformer layers as references for engine.nn's: random weights, and their weights
in Keras's layouts and keras_hub's order (torch's in_proj_weight split into query, key and
value)."""

from __future__ import annotations

import torch


def randomized(module, seed=0):
    """`module` in eval mode with random weights (LayerNorm gammas near 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        for m in module.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight += 1.0
    return module.eval()


def attention_weights(mha) -> list:
    """torch MultiheadAttention → Keras's query, key, value, attention_output kernels and biases."""
    E, H = mha.embed_dim, mha.num_heads
    w, b = mha.in_proj_weight.detach().numpy(), mha.in_proj_bias.detach().numpy()
    out = []
    for i in range(3):
        out += [w[i * E:(i + 1) * E].T.reshape(E, H, E // H), b[i * E:(i + 1) * E].reshape(H, E // H)]
    return out + [mha.out_proj.weight.detach().numpy().T.reshape(H, E // H, E), mha.out_proj.bias.detach().numpy()]


def params(*modules) -> list:
    """LayerNorm (gamma, beta) and Linear (kernel (in, out), bias) weights in Keras's layouts."""
    out = []
    for m in modules:
        w, b = m.weight.detach().numpy(), m.bias.detach().numpy()
        out += [w.T if isinstance(m, torch.nn.Linear) else w, b]
    return out


def encoder_weights(t) -> list:
    """A TransformerEncoderLayer's weights in TransformerEncoderLayer's (keras_hub's) order."""
    return attention_weights(t.self_attn) + params(t.norm1, t.norm2, t.linear1, t.linear2)


def decoder_weights(t, cross=True) -> list:
    """A TransformerDecoderLayer's weights in TransformerDecoderLayer's order (without the
    cross-attention block for a decoder-only layer)."""
    out = attention_weights(t.self_attn) + params(t.norm1)
    if cross:
        out += attention_weights(t.multihead_attn) + params(t.norm2)
    return out + params(t.linear1, t.linear2, t.norm3)


def causal(T):
    """torch's causal mask (True hides a key)."""
    return torch.ones(T, T, dtype=torch.bool).triu(1)
