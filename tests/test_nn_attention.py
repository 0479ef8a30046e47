"""engine.nn.MultiHeadAttention against real Keras 3 (torch backend): the same constructor and
call arguments give the same weights (names, shapes, order) and, with Keras's perturbed weights
set through set_weights, the same outputs and attention scores; the models Keras saves as
.keras and .h5 load with engine.load; masks (Keras masks from Embedding(mask_zero=True),
value/key masks, attention_mask, use_causal_mask, sliding_window) combine as in Keras."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from keras_util import assert_close, check_files, keras, nn, perturb


class Api:
    """What a model factory needs from Keras or engine.nn."""

    def __init__(self, mod, layers):
        self.Input, self.Model, self.L = mod.Input, mod.Model, layers


KERAS, ENGINE = Api(keras, keras.layers), Api(nn, nn)


def both(factory, xs, atol=1e-4):
    """The factory's model in Keras (perturbed weights) and in engine.nn (Keras's weights via
    set_weights): the same weight shapes and outputs. Returns the Keras model."""
    kmodel, emodel = factory(KERAS), factory(ENGINE)
    perturb(kmodel)
    assert [tuple(w.shape) for w in kmodel.get_weights()] == [w.shape for w in emodel.get_weights()]
    emodel.set_weights(kmodel.get_weights())
    want = kmodel.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    want = [np.asarray(a) for a in (want if isinstance(want, (list, tuple)) else [want])]
    got = emodel.predict(xs if len(xs) > 1 else xs[0])
    assert_close(got if isinstance(got, list) else [got], want, factory.__name__, atol)
    return kmodel


def floats(*shape, seed=0):
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


def ids(batch, steps, seed=1):
    """Token ids with padding (0) at the end of row 0, one masked step inside row 1 and, with
    a third row, a row that is all padding."""
    x = np.random.default_rng(seed).integers(1, 9, (batch, steps)).astype(np.int32)
    x[0, -2:] = 0
    if batch > 1:
        x[1, 1] = 0
    if batch > 2:
        x[2] = 0
    return x


# -- projections, shapes, options -----------------------------------------------------------------

def mha_model(T, S, dq, dv, dk=None, batch_free=True, call=None, **kw):
    def factory(a):
        q = a.Input((T, dq))
        v = a.Input((S, dv))
        k = a.Input((S, dk)) if dk else None
        out = a.L.MultiHeadAttention(**kw)(q, v, key=k, **(call or {}))
        return a.Model([q, v] + ([k] if k is not None else []), out)
    factory.__name__ = f"mha{kw}{call or ''}"
    return factory


@pytest.mark.parametrize("kw,dims,call", [
    ({"num_heads": 2, "key_dim": 3}, (5, 7, 6, 6, None), None),
    ({"num_heads": 3, "key_dim": 5, "value_dim": 4, "output_shape": 11}, (5, 7, 6, 9, None), None),
    ({"num_heads": 1, "key_dim": 7}, (1, 3, 5, 5, None), None),
    ({"num_heads": 2, "key_dim": 3, "value_dim": 2, "output_shape": (2, 3)}, (4, 6, 5, 7, 3), None),
    ({"num_heads": 4, "key_dim": 2, "use_bias": False}, (6, 6, 8, 8, None), {"use_causal_mask": True}),
    ({"num_heads": 2, "key_dim": 3, "use_gate": True}, (5, 5, 6, 6, None), None),
    ({"num_heads": 2, "key_dim": 3, "sliding_window": 2}, (6, 6, 4, 4, None), {"use_causal_mask": True}),
    ({"num_heads": 2, "key_dim": 3, "sliding_window": 3}, (6, 8, 4, 5, None), None),
    ({"num_heads": 3, "key_dim": 4}, (5, 7, 6, 6, None), {"return_attention_scores": True, "use_causal_mask": True}),
])
@pytest.mark.parametrize("batch", [1, 3])
def test_projections_and_options_match_keras(kw, dims, call, batch):
    T, S, dq, dv, dk = dims
    xs = [floats(batch, T, dq), floats(batch, S, dv, seed=1)] + ([floats(batch, S, dk, seed=2)] if dk else [])
    both(mha_model(T, S, dq, dv, dk, call=call, **kw), xs)


def test_weights_have_keras_names_and_order():
    x = nn.Input((4, 6))
    layer = nn.MultiHeadAttention(2, 3, value_dim=5, output_shape=(2, 4), use_gate=True)
    layer(x, nn.Input((7, 8)))
    assert layer.all_weight_names() == ["query/kernel", "query/bias", "key/kernel", "key/bias", "gate/kernel",
                                        "gate/bias", "value/kernel", "value/bias", "attention_output/kernel",
                                        "attention_output/bias"]
    assert [w.shape for w in layer.weights] == [(6, 2, 3), (2, 3), (8, 2, 3), (2, 3), (6, 2, 5), (2, 5), (8, 2, 5),
                                                (2, 5), (2, 5, 2, 4), (2, 4)]


# -- masks -----------------------------------------------------------------------------------------
# A row left with no key gets zero weights, as Keras's masked softmax gives; Keras 3.15 takes that
# path only with dropout or return_attention_scores, and otherwise (torch's fused attention)
# averages every value for such a row. So tests with empty rows ask Keras for the scores.

def embedded_attention(a, **call):
    """Embedding(mask_zero) → MultiHeadAttention(x, x): the query's and value's Keras masks."""
    t = a.Input((None,), dtype="int32")
    x = a.L.Embedding(10, 8, mask_zero=True)(t)
    out = a.L.MultiHeadAttention(2, 4, name="self_attention")(x, x, return_attention_scores=True, **call)
    return t, out


def test_keras_masks_hide_keys_and_empty_query_rows():
    def masked(a):
        t, (out, scores) = embedded_attention(a)
        return a.Model(t, [out, scores])
    both(masked, [ids(3, 6)])


def test_keras_masks_with_causal_mask_and_scores():
    def causal(a):
        t, (out, scores) = embedded_attention(a, use_causal_mask=True)
        # out carries the query's mask: a second layer sees it as its query and value masks
        y, scores2 = a.L.MultiHeadAttention(2, 3, value_dim=5, name="second")(out, out, return_attention_scores=True)
        return a.Model(t, [out, scores, y, scores2])
    both(causal, [ids(3, 6)])


@pytest.mark.parametrize("empty_rows", [False, True])
def test_explicit_value_mask_and_attention_mask(empty_rows):
    T, S = 5, 6

    def explicit(a):
        q, v = a.Input((T, 4)), a.Input((S, 6))
        vm, am = a.Input((S,), dtype="bool"), a.Input((T, S), dtype="bool")
        y = a.L.MultiHeadAttention(2, 3)(q, v, value_mask=vm, attention_mask=am, use_causal_mask=True,
                                         return_attention_scores=empty_rows)
        return a.Model([q, v, vm, am], y)
    rng = np.random.default_rng(3)
    vm = rng.random((3, S)) < 0.7
    am = rng.random((3, T, S)) < 0.8
    vm[:, 0] = am[:, :, 0] = True  # every query keeps key 0 ...
    if empty_rows:
        vm[2] = False  # ... but in this batch: no key at all, the output is the projection's bias
        am[1, 3] = False
    both(explicit, [floats(3, T, 4), floats(3, S, 6, seed=1), vm, am])


def test_explicit_query_mask_empties_rows():
    """Keras 3.15 ignores an explicit query_mask (it reads only the query's own Keras mask):
    engine.nn honours it; its rows equal those of a query masked by an Embedding."""
    q = nn.Input((5, 4))
    qm = nn.Input((5,), dtype="bool")
    layer = nn.MultiHeadAttention(2, 3)
    y, s = layer(q, q, query_mask=qm, return_attention_scores=True)
    model = nn.Model([q, qm], [y, s])
    x, keep = floats(2, 5, 4), np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], bool)
    y, s = model.predict([x, keep])
    bias = model.get_weights()[-1]
    np.testing.assert_allclose(y[~keep], np.broadcast_to(bias, y[~keep].shape), atol=1e-6)
    assert np.all(s.transpose(0, 2, 1, 3)[~keep] == 0)
    np.testing.assert_allclose(s.sum(-1).transpose(0, 2, 1)[keep], 1, rtol=1e-5)


def test_keras_files_with_attention_load(tmp_path):
    """Keras saves MultiHeadAttention's weights per projection (query_dense, ...; .keras) or
    under its own name (.h5); both load, masks and call arguments included."""
    def saved(a):
        t, (out, _) = embedded_attention(a, use_causal_mask=True)
        y, scores = a.L.MultiHeadAttention(3, 2, value_dim=4, use_gate=True, output_shape=(2, 3),
                                           name="cross")(out, out, return_attention_scores=True)
        return a.Model(t, [y, scores])
    kmodel = both(saved, [ids(3, 6)])
    check_files(kmodel, tmp_path, [ids(3, 6)])


def test_keras_file_with_key_and_attention_mask(tmp_path):
    q, v, k = keras.Input((4, 5)), keras.Input((6, 3)), keras.Input((6, 7))
    am = keras.Input((4, 6), dtype="bool")
    y = keras.layers.MultiHeadAttention(2, 3, output_shape=8)(q, v, key=k, attention_mask=am)
    kmodel = keras.Model([q, v, k, am], y)
    perturb(kmodel)
    mask = np.random.default_rng(0).random((2, 4, 6)) < 0.6
    check_files(kmodel, tmp_path, [floats(2, 4, 5), floats(2, 6, 3, seed=1), floats(2, 6, 7, seed=2), mask])


# -- training form ---------------------------------------------------------------------------------

def test_training_graph_passes_dropout_to_the_attention_node():
    x = nn.Input((5, 8))
    y = nn.MultiHeadAttention(2, 4, dropout=0.25, seed=7, name="mha")(x, x)
    model = nn.Model(x, y)
    [train] = [n for n in model.to_graph(training=True).nodes if n.op == "Attention"]
    [infer] = [n for n in model.to_graph().nodes if n.op == "Attention"]
    assert train.attrs["dropout"] == 0.25 and train.attrs["seed"] == 7
    assert "dropout" not in infer.attrs


# -- refused ---------------------------------------------------------------------------------------

def test_bad_arguments_are_clear_errors():
    x = nn.Input((5, 8))
    with pytest.raises(engine.UnsupportedOpError, match="attention_axes"):
        nn.MultiHeadAttention(2, 4, attention_axes=(1, 2))(x, x)
    with pytest.raises(engine.UnsupportedOpError, match=r"\(batch, seq, features\)"):
        x4 = nn.Input((3, 5, 8))
        nn.MultiHeadAttention(2, 4)(x4, x4)
    with pytest.raises(engine.EngineError, match="num_heads"):
        nn.MultiHeadAttention(0, 4)
    with pytest.raises(engine.EngineError, match="key_dim"):
        nn.MultiHeadAttention(2, 2.5)
    with pytest.raises(engine.EngineError, match="dropout"):
        nn.MultiHeadAttention(2, 4, dropout=1.0)
    with pytest.raises(engine.ShapeError, match="attention_mask must have rank"):
        nn.MultiHeadAttention(2, 4)(x, x, attention_mask=nn.Input((), dtype="bool"))
    with pytest.raises(engine.EngineError, match="attention_mask must be a symbolic tensor"):
        nn.MultiHeadAttention(2, 4)(x, x, attention_mask=np.ones((5, 5), bool))
    with pytest.raises(engine.EngineError, match="value is required"):
        nn.MultiHeadAttention(2, 4)(x, None)
    with pytest.raises(engine.ShapeError, match="same length"):
        nn.MultiHeadAttention(2, 4)(x, nn.Input((6, 8)), key=nn.Input((7, 8)))
