"""engine.nn.TransformerEncoderLayer / TransformerDecoderLayer against torch.nn's
TransformerEncoderLayer / TransformerDecoderLayer (batch_first=True, post- and pre-norm, relu and
gelu) with torch's weights copied across (in_proj_weight split into query, key and value), with
padding masks, attention masks and causal self-attention."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import nn

torch = pytest.importorskip("torch")
from torch_transformer import causal, decoder_weights, encoder_weights, randomized  # noqa: E402

ATOL = 2e-5


def close(got, want, what):
    np.testing.assert_allclose(got, want.detach().numpy(), atol=ATOL, rtol=1e-4, err_msg=what)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("E,H,F,T,batch", [(12, 3, 20, 5, 2), (16, 4, 24, 1, 1), (10, 2, 7, 9, 3)])
def test_encoder_layer_matches_torch(norm_first, activation, E, H, F, T, batch):
    t = randomized(torch.nn.TransformerEncoderLayer(E, H, F, dropout=0.0, activation=activation, batch_first=True,
                                                    norm_first=norm_first, layer_norm_eps=1e-5))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, T, E)).astype(np.float32)
    keep = np.ones((batch, T), bool)
    keep[-1, T // 2 + 1:] = False  # the last row padded
    X, P = nn.Input((None, E)), nn.Input((None,), dtype="bool")
    model = nn.Model([X, P], nn.TransformerEncoderLayer(F, H, activation=activation, normalize_first=norm_first)(
        X, padding_mask=P))
    model.set_weights(encoder_weights(t))
    with torch.no_grad():
        want = t(torch.tensor(x), src_key_padding_mask=torch.tensor(~keep))
    close(model.predict([x, keep]), want, f"encoder norm_first={norm_first} {activation}")


def test_encoder_layers_stack_with_an_attention_mask_and_an_embedding_mask():
    """Two layers over Embedding(mask_zero=True): the Embedding's mask is the padding mask; an
    explicit (B, T, T) attention_mask (True: attend) is ANDed in. torch: the same layers with an
    additive float mask."""
    E, H, F, V, T = 8, 2, 16, 11, 6
    layers = [randomized(torch.nn.TransformerEncoderLayer(E, H, F, dropout=0.0, batch_first=True), seed=s)
              for s in range(2)]
    emb = torch.nn.Embedding(V, E)
    ids = np.array([[3, 4, 5, 6, 0, 0], [7, 1, 2, 9, 10, 3]], np.int64)
    rng = np.random.default_rng(1)
    attend = rng.random((2, T, T)) < 0.7
    attend[:, :, 0] = True
    t_in, a_in = nn.Input((T,), dtype="int64"), nn.Input((T, T), dtype="bool")
    x = nn.Embedding(V, E, mask_zero=True)(t_in)
    for _ in layers:
        x = nn.TransformerEncoderLayer(F, H)(x, attention_mask=a_in)
    model = nn.Model([t_in, a_in], x)
    model.set_weights([emb.weight.detach().numpy()] + [w for t in layers for w in encoder_weights(t)])
    hidden = ~(attend & (ids != 0)[:, None, :])  # torch: True hides a key
    bias = torch.tensor(np.where(hidden, -np.inf, 0.0).astype(np.float32)).repeat_interleave(H, 0)
    with torch.no_grad():
        y = emb(torch.tensor(ids))
        for t in layers:
            y = t(y, src_mask=bias)
    close(model.predict([ids, attend]), y, "stacked encoder")


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_decoder_layer_with_cross_attention_matches_torch(norm_first, activation):
    E, H, F, T, S = 12, 3, 20, 5, 7
    t = randomized(torch.nn.TransformerDecoderLayer(E, H, F, dropout=0.0, activation=activation, batch_first=True,
                                                    norm_first=norm_first))
    rng = np.random.default_rng(2)
    x, memory = rng.normal(size=(2, T, E)).astype(np.float32), rng.normal(size=(2, S, E)).astype(np.float32)
    tkeep, mkeep = np.ones((2, T), bool), np.ones((2, S), bool)
    tkeep[1, 4:] = False
    mkeep[0, 5:] = False
    X, M = nn.Input((T, E)), nn.Input((S, E))
    TP, MP = nn.Input((T,), dtype="bool"), nn.Input((S,), dtype="bool")
    layer = nn.TransformerDecoderLayer(F, H, activation=activation, normalize_first=norm_first)
    model = nn.Model([X, M, TP, MP], layer(X, M, decoder_padding_mask=TP, encoder_padding_mask=MP))
    model.set_weights(decoder_weights(t))
    with torch.no_grad():
        want = t(torch.tensor(x), torch.tensor(memory), tgt_mask=causal(T), tgt_is_causal=True,
                 tgt_key_padding_mask=torch.tensor(~tkeep),
                 memory_key_padding_mask=torch.tensor(~mkeep))
    close(model.predict([x, memory, tkeep, mkeep]), want, f"decoder norm_first={norm_first} {activation}")


def test_decoder_only_layer_is_causal():
    """Without an encoder sequence there is no cross-attention (GPT-style): torch's decoder
    layer with its cross-attention block removed is the reference."""
    E, H, F, T = 8, 2, 12, 6
    t = randomized(torch.nn.TransformerDecoderLayer(E, H, F, dropout=0.0, batch_first=True, norm_first=True))
    x = np.random.default_rng(3).normal(size=(2, T, E)).astype(np.float32)
    X = nn.Input((None, E))
    layer = nn.TransformerDecoderLayer(F, H, normalize_first=True)
    model = nn.Model(X, layer(X))
    model.set_weights(decoder_weights(t, cross=False))
    assert len(layer.weights) == 8 + 2 + 4 + 2
    with torch.no_grad():
        xt = torch.tensor(x)
        h = t.norm1(xt)
        y = xt + t.self_attn(h, h, h, attn_mask=causal(T), is_causal=True)[0]
        want = y + t._ff_block(t.norm3(y))
    close(model.predict(x), want, "decoder only")
    # a later token never changes an earlier output
    x2 = x.copy()
    x2[:, -1] += 1.0
    np.testing.assert_array_equal(model.predict(x2)[:, :-1], model.predict(x)[:, :-1])


def test_weight_names_follow_keras_hub():
    X = nn.Input((4, 8))
    enc = nn.TransformerEncoderLayer(16, 2, name="enc")
    enc(X)
    assert enc.all_weight_names()[:2] == ["enc/self_attention_layer/query/kernel",
                                          "enc/self_attention_layer/query/bias"]
    assert enc.all_weight_names()[8:] == [
        "enc/self_attention_layer_norm/gamma", "enc/self_attention_layer_norm/beta", "enc/feedforward_layer_norm/gamma",
        "enc/feedforward_layer_norm/beta", "enc/feedforward_intermediate_dense/kernel",
        "enc/feedforward_intermediate_dense/bias", "enc/feedforward_output_dense/kernel",
        "enc/feedforward_output_dense/bias"]


def test_bad_calls_are_clear_errors():
    X, M = nn.Input((4, 8)), nn.Input((5, 8))
    dec = nn.TransformerDecoderLayer(16, 2)
    dec(X, M)
    with pytest.raises(engine.EngineError, match="cross-attention"):
        dec(X)
    with pytest.raises(engine.ShapeError, match="padding_mask must have rank 2"):
        nn.TransformerEncoderLayer(16, 2)(X, padding_mask=nn.Input((4, 4), dtype="bool"))
    with pytest.raises(engine.ShapeError, match="cannot be split into 16 heads"):
        nn.TransformerEncoderLayer(16, 16)(X)
    with pytest.raises(engine.EngineError, match="intermediate_dim"):
        nn.TransformerEncoderLayer(0, 2)
    with pytest.raises(engine.EngineError, match="unknown activation"):
        nn.TransformerEncoderLayer(8, 2, activation="nope")
