"""Every engine.nn layer against real Keras 3 (torch backend): the same constructor arguments
give the same weights (order, shapes) and, with Keras's perturbed weights set through
set_weights, the same outputs; the model saved by Keras as .keras and .h5 loads with
engine.load and gives them too."""

from __future__ import annotations

import re

import numpy as np
import pytest

import engine
from keras_util import assert_close, check_files, engine_outputs, inputs_for, keras, keras_outputs, nn, perturb

L = keras.layers

# (id, layer factory over a layers module (keras.layers or engine.nn), input shape, input dtype)
CASES = [
    ("dense", lambda m: m.Dense(5, activation="relu"), (6,), None),
    ("dense_3d_nobias", lambda m: m.Dense(4, use_bias=False, activation="gelu"), (3, 6), None),
    ("dense_softmax", lambda m: m.Dense(4, activation="softmax"), (6,), None),
    ("dense_mish", lambda m: m.Dense(4, activation="mish"), (6,), None),
    ("embedding", lambda m: m.Embedding(12, 4), (5,), "int32"),
    ("dropout", lambda m: m.Dropout(0.4), (6,), None),
    ("spatial_dropout1d", lambda m: m.SpatialDropout1D(0.3), (4, 3), None),
    ("spatial_dropout2d", lambda m: m.SpatialDropout2D(0.3), (4, 4, 3), None),
    ("relu", lambda m: m.ReLU(), (7,), None),
    ("relu_max", lambda m: m.ReLU(max_value=0.5), (7,), None),
    ("relu_slope", lambda m: m.ReLU(negative_slope=0.1), (7,), None),
    ("relu_all", lambda m: m.ReLU(max_value=1.0, negative_slope=0.2, threshold=0.3), (7,), None),
    ("leaky_relu", lambda m: m.LeakyReLU(), (7,), None),
    ("leaky_relu_01", lambda m: m.LeakyReLU(negative_slope=0.1), (7,), None),
    ("prelu", lambda m: m.PReLU(), (4, 3), None),
    ("prelu_shared", lambda m: m.PReLU(shared_axes=[1, 2]), (4, 4, 3), None),
    ("elu", lambda m: m.ELU(alpha=0.5), (7,), None),
    ("softmax", lambda m: m.Softmax(), (7,), None),
    ("softmax_axis1", lambda m: m.Softmax(axis=1), (4, 3), None),
    ("conv1d", lambda m: m.Conv1D(4, 3), (9, 3), None),
    ("conv1d_same_s2", lambda m: m.Conv1D(4, 3, strides=2, padding="same", activation="tanh"), (9, 3), None),
    ("conv1d_causal_dil", lambda m: m.Conv1D(4, 3, padding="causal", dilation_rate=2), (9, 3), None),
    ("conv1d_groups", lambda m: m.Conv1D(4, 2, groups=2), (9, 4), None),
    ("conv2d", lambda m: m.Conv2D(4, (3, 2), strides=2, padding="same", activation="relu"), (9, 8, 3), None),
    ("conv2d_dil", lambda m: m.Conv2D(4, 3, dilation_rate=2), (9, 9, 3), None),
    ("conv2d_groups_nobias", lambda m: m.Conv2D(4, 3, groups=2, use_bias=False), (7, 7, 4), None),
    ("conv2d_selu", lambda m: m.Conv2D(3, 1, activation="softsign"), (5, 5, 2), None),
    ("conv3d_same", lambda m: m.Conv3D(3, 2, strides=(1, 2, 2), padding="same", activation="relu"), (4, 5, 5, 2), None),
    ("conv3d", lambda m: m.Conv3D(2, (2, 3, 2)), (4, 5, 5, 2), None),
    ("depthwise2d", lambda m: m.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (6, 6, 3), None),
    ("depthwise2d_s2", lambda m: m.DepthwiseConv2D((3, 3), strides=2, activation="relu"), (7, 7, 3), None),
    ("depthwise1d", lambda m: m.DepthwiseConv1D(3, depth_multiplier=2), (8, 3), None),
    ("separable2d", lambda m: m.SeparableConv2D(5, 3, padding="same", depth_multiplier=2, activation="relu"),
     (6, 6, 3), None),
    ("separable1d", lambda m: m.SeparableConv1D(4, 3, strides=2), (9, 3), None),
    ("conv2d_transpose_same", lambda m: m.Conv2DTranspose(3, 3, strides=2, padding="same"), (4, 5, 2), None),
    ("conv2d_transpose_valid", lambda m: m.Conv2DTranspose(3, 3, strides=2), (4, 5, 2), None),
    ("conv2d_transpose_k4", lambda m: m.Conv2DTranspose(2, 4, strides=2, padding="same", activation="relu"),
     (4, 4, 2), None),
    ("conv2d_transpose_outpad", lambda m: m.Conv2DTranspose(2, (3, 2), strides=(2, 3), output_padding=(1, 2)),
     (3, 4, 2), None),
    ("conv2d_transpose_dil", lambda m: m.Conv2DTranspose(2, 3, dilation_rate=2), (4, 4, 2), None),
    ("conv1d_transpose", lambda m: m.Conv1DTranspose(3, 3, strides=2, padding="same"), (6, 2), None),
    ("conv3d_transpose", lambda m: m.Conv3DTranspose(2, 2, strides=2), (2, 3, 3, 2), None),
    ("maxpool1d", lambda m: m.MaxPooling1D(2), (9, 3), None),
    ("maxpool1d_same", lambda m: m.MaxPooling1D(3, strides=2, padding="same"), (9, 3), None),
    ("avgpool1d_same", lambda m: m.AveragePooling1D(2, padding="same"), (9, 3), None),
    ("maxpool2d", lambda m: m.MaxPooling2D(), (8, 7, 3), None),
    ("maxpool2d_same", lambda m: m.MaxPooling2D(3, strides=2, padding="same"), (8, 7, 3), None),
    ("avgpool2d", lambda m: m.AveragePooling2D(2), (8, 7, 3), None),
    ("avgpool2d_same", lambda m: m.AveragePooling2D(3, strides=1, padding="same"), (6, 5, 3), None),
    ("maxpool3d", lambda m: m.MaxPooling3D(2), (4, 5, 4, 2), None),
    ("avgpool3d_same", lambda m: m.AveragePooling3D(2, padding="same"), (4, 5, 4, 2), None),
    ("gap1d", lambda m: m.GlobalAveragePooling1D(), (5, 3), None),
    ("gmp1d_keep", lambda m: m.GlobalMaxPooling1D(keepdims=True), (5, 3), None),
    ("gap2d", lambda m: m.GlobalAveragePooling2D(), (4, 5, 3), None),
    ("gap2d_keep", lambda m: m.GlobalAveragePooling2D(keepdims=True), (4, 5, 3), None),
    ("gmp2d", lambda m: m.GlobalMaxPooling2D(), (4, 5, 3), None),
    ("gap3d", lambda m: m.GlobalAveragePooling3D(), (2, 4, 5, 3), None),
    ("flatten", lambda m: m.Flatten(), (4, 5, 3), None),
    ("reshape", lambda m: m.Reshape((6, -1)), (4, 3), None),
    ("permute", lambda m: m.Permute((2, 1, 3)), (4, 5, 3), None),
    ("repeat_vector", lambda m: m.RepeatVector(3), (4,), None),
    ("zero_padding1d", lambda m: m.ZeroPadding1D((1, 2)), (4, 3), None),
    ("zero_padding2d", lambda m: m.ZeroPadding2D(((1, 0), (2, 1))), (4, 5, 3), None),
    ("zero_padding3d", lambda m: m.ZeroPadding3D(1), (2, 3, 2, 2), None),
    ("cropping1d", lambda m: m.Cropping1D((1, 2)), (6, 3), None),
    ("cropping2d", lambda m: m.Cropping2D(((1, 0), (0, 2))), (5, 6, 3), None),
    ("cropping3d", lambda m: m.Cropping3D(1), (4, 4, 5, 2), None),
    ("upsampling1d", lambda m: m.UpSampling1D(3), (4, 3), None),
    ("upsampling2d", lambda m: m.UpSampling2D((2, 3)), (3, 4, 2), None),
    ("upsampling2d_bilinear", lambda m: m.UpSampling2D(2, interpolation="bilinear"), (3, 4, 2), None),
    ("upsampling3d", lambda m: m.UpSampling3D(2), (2, 3, 2, 2), None),
    ("batchnorm", lambda m: m.BatchNormalization(), (4, 5, 3), None),
    ("batchnorm_axis1", lambda m: m.BatchNormalization(axis=1, epsilon=0.01), (4, 3), None),
    ("batchnorm_plain", lambda m: m.BatchNormalization(center=False, scale=False), (6,), None),
    ("layernorm", lambda m: m.LayerNormalization(), (4, 6), None),
    ("layernorm_axes", lambda m: m.LayerNormalization(axis=[2, 3]), (4, 5, 3), None),
    ("groupnorm", lambda m: m.GroupNormalization(groups=2), (4, 5, 6), None),
    ("groupnorm_instance", lambda m: m.GroupNormalization(groups=-1, scale=False), (5, 4), None),
    ("groupnorm_2d", lambda m: m.GroupNormalization(groups=3), (6,), None),
    ("unit_norm", lambda m: m.UnitNormalization(), (5,), None),
    ("rescaling", lambda m: m.Rescaling(1 / 255.0, offset=-0.5), (4, 3), None),
    ("normalization_given", lambda m: m.Normalization(mean=[0.5, -1.0, 2.0], variance=[4.0, 0.25, 1.0]),
     (4, 3), None),
    ("normalization_adapted", lambda m: m.Normalization(axis=-1), (4, 3), None),
    ("normalization_invert", lambda m: m.Normalization(mean=0.5, variance=4.0, invert=True), (4, 3), None),
    ("lstm", lambda m: m.LSTM(4), (6, 3), None),
    ("lstm_seq_back", lambda m: m.LSTM(4, return_sequences=True, go_backwards=True), (6, 3), None),
    ("lstm_acts", lambda m: m.LSTM(3, activation="relu", recurrent_activation="hard_sigmoid", use_bias=False),
     (5, 3), None),
    ("gru", lambda m: m.GRU(4, return_sequences=True), (6, 3), None),
    ("gru_v1", lambda m: m.GRU(4, reset_after=False, go_backwards=True), (6, 3), None),
    ("simple_rnn", lambda m: m.SimpleRNN(4, activation="relu", return_sequences=True), (6, 3), None),
    ("bidirectional_concat", lambda m: m.Bidirectional(m.LSTM(3, return_sequences=True)), (5, 3), None),
    ("bidirectional_sum", lambda m: m.Bidirectional(m.GRU(3), merge_mode="sum"), (5, 3), None),
    ("bidirectional_ave", lambda m: m.Bidirectional(m.SimpleRNN(3, return_sequences=True), merge_mode="ave"),
     (5, 3), None),
    ("bidirectional_mul", lambda m: m.Bidirectional(m.LSTM(2), merge_mode="mul"), (5, 3), None),
    ("time_distributed_dense", lambda m: m.TimeDistributed(m.Dense(3, activation="relu")), (4, 5), None),
    ("time_distributed_conv", lambda m: m.TimeDistributed(m.Conv2D(2, 3, padding="same")), (3, 5, 5, 2), None),
]


def _models(factory, shape, dtype):
    k = keras.Sequential([keras.Input(shape, dtype=dtype), factory(L)])
    perturb(k)
    e = nn.Sequential([nn.Input(shape, dtype=dtype), factory(nn)])
    return k, e


@pytest.mark.parametrize("factory,shape,dtype", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_layer_matches_keras(factory, shape, dtype, tmp_path):
    k, e = _models(factory, shape, dtype)
    want_shapes = [tuple(w.shape) for w in k.get_weights()]
    assert [w.shape for w in e.get_weights()] == want_shapes  # Keras's weight order and layouts
    e.set_weights(k.get_weights())
    xs = inputs_for(k)
    want = keras_outputs(k, xs)
    assert_close(engine_outputs(e, xs), want, "engine.nn")
    assert e.count_params() == k.count_params()
    check_files(k, tmp_path, xs)


ACTIVATIONS = ["linear", "relu", "sigmoid", "tanh", "elu", "selu", "softplus", "softsign", "gelu", "silu", "swish",
               "mish", "hard_sigmoid", "hard_silu", "hard_swish", "relu6", "leaky_relu", "log_softmax", "softmax",
               "exponential", "celu", "hard_tanh", "hard_shrink", "soft_shrink", "log_sigmoid", "tanh_shrink",
               "sparse_plus", "squareplus", "sparse_sigmoid"]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_activation_name(name):
    x = np.linspace(-4, 4, 42, dtype=np.float32).reshape(2, 21)
    want = np.asarray(keras.activations.get(name)(x))
    act = nn.Sequential([nn.Input((21,)), nn.Activation(name)]).predict(x)
    np.testing.assert_allclose(act, want, atol=1e-5, rtol=1e-5)
    dense = nn.Sequential([nn.Input((21,)), nn.Dense(21, activation=name)])
    dense.set_weights([np.eye(21, dtype=np.float32), np.zeros(21, np.float32)])
    np.testing.assert_allclose(dense.predict(x), want, atol=1e-5, rtol=1e-5)


def test_layer_normalization_off_the_last_axes():
    """Keras's torch backend cannot normalise non-trailing axes; numpy is the reference."""
    e = nn.Sequential([nn.Input((4, 3)), nn.LayerNormalization(axis=1, epsilon=0.01)])
    gamma, beta = np.linspace(0.5, 2, 4, dtype=np.float32), np.linspace(-1, 1, 4, dtype=np.float32)
    e.set_weights([gamma, beta])
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)
    mean, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    want = (x - mean) / np.sqrt(var + 0.01) * gamma[:, None] + beta[:, None]
    np.testing.assert_allclose(e.predict(x), want, atol=1e-5)


def test_refused_activations_and_arguments():
    with pytest.raises(engine.UnsupportedOpError, match="sparsemax"):
        nn.Dense(3, activation="sparsemax")
    with pytest.raises(engine.UnsupportedOpError, match="stateful"):
        nn.LSTM(3, stateful=True)
    with pytest.raises(engine.UnsupportedOpError, match="channels_last"):
        nn.Conv2D(3, 3, data_format="channels_first")


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "GRU_v1", "SimpleRNN"])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
def test_recurrent_masks(cell, return_sequences, go_backwards, zero_output_for_mask):
    """Embedding(mask_zero=True) -> RNN: masked steps keep the state and repeat the previous
    output (or zeros); rows masked at the start, the end, in the middle and entirely."""
    kw = dict(return_sequences=return_sequences, go_backwards=go_backwards,
              zero_output_for_mask=zero_output_for_mask)
    if cell == "GRU_v1":
        cell, kw["reset_after"] = "GRU", False

    def build(m):
        return [m.Input((7,), dtype="int32"), m.Embedding(20, 5, mask_zero=True), getattr(m, cell)(4, **kw)]
    k, e = keras.Sequential(build(L)), nn.Sequential(build(nn))
    perturb(k)
    e.set_weights(k.get_weights())
    x = np.random.default_rng(0).integers(1, 20, (6, 7))
    x[0, :2] = 0
    x[1, :] = 0
    x[2, 3:] = 0
    x[3, 5] = 0
    np.testing.assert_allclose(e.predict(x), k.predict(x, verbose=0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell,units,batch,steps", [
    ("LSTM", 40, 14, 20), ("GRU", 40, 14, 20), ("GRU_v1", 40, 14, 20), ("SimpleRNN", 64, 14, 20),
    ("LSTM", 130, 1, 7), ("GRU", 130, 1, 7), ("GRU_v1", 160, 1, 7), ("SimpleRNN", 400, 1, 7)])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_recurrent_masks_kernel_paths(cell, units, batch, steps, go_backwards, threads):
    """Masks on the recurrent kernel's threaded paths (rows split at batch 14, unit blocks split
    at batch 1 with many units) and with partial blocks of units, on 1 and 2 threads."""
    kw = dict(return_sequences=True, go_backwards=go_backwards)
    if cell == "GRU_v1":
        cell, kw["reset_after"] = "GRU", False

    def build(m):
        return [m.Input((steps,), dtype="int32"), m.Embedding(20, 5, mask_zero=True), getattr(m, cell)(units, **kw)]
    k, e = keras.Sequential(build(L)), nn.Sequential(build(nn))
    perturb(k)
    k.set_weights([w / np.float32(np.sqrt(w.shape[0])) if w.ndim == 2 and w.shape[0] == units else w
                   for w in k.get_weights()])  # recurrent kernels scaled: many units stay non-chaotic
    e.set_weights(k.get_weights())
    x = np.random.default_rng(1).integers(1, 20, (batch, steps))
    x[0, :2] = 0
    x[0, steps // 2] = 0
    x[-1, -3:] = 0
    if batch > 2:
        x[1, :] = 0
    np.testing.assert_allclose(e.predict(x), k.predict(x, verbose=0), atol=1e-4, rtol=1e-4)


def _functional(build):
    """A functional model from build(layers_module) -> (inputs, outputs), in Keras and engine.nn."""
    ki, ko = build(L)
    k = keras.Model(ki, ko)
    perturb(k)
    ei, eo = build(nn)
    e = nn.Model(ei, eo)
    assert [w.shape for w in e.get_weights()] == [tuple(w.shape) for w in k.get_weights()]
    e.set_weights(k.get_weights())
    return k, e


def _check_functional(build, tmp_path, xs=None):
    k, e = _functional(build)
    xs = inputs_for(k) if xs is None else xs
    want = keras_outputs(k, xs)
    assert_close(engine_outputs(e, xs), want, "engine.nn")
    check_files(k, tmp_path, xs)


MERGES = [
    ("add", lambda m, a, b: m.Add()([a, b])),
    ("subtract", lambda m, a, b: m.Subtract()([a, b])),
    ("multiply", lambda m, a, b: m.Multiply()([a, b])),
    ("average", lambda m, a, b: m.Average()([a, b])),
    ("maximum", lambda m, a, b: m.Maximum()([a, b])),
    ("minimum", lambda m, a, b: m.Minimum()([a, b])),
    ("concatenate", lambda m, a, b: m.Concatenate()([a, b])),
    ("concatenate_axis1", lambda m, a, b: m.Concatenate(axis=1)([a, b])),
    ("dot", lambda m, a, b: m.Dot(axes=2)([a, b])),
    ("dot_normalize", lambda m, a, b: m.Dot(axes=(1, 1), normalize=True)([a, b])),
]


@pytest.mark.parametrize("merge", [c[1] for c in MERGES], ids=[c[0] for c in MERGES])
def test_merge_layers(merge, tmp_path):
    def build(m):
        a, b = m.Input((4, 3), name="a"), m.Input((4, 3), name="b")
        return [a, b], m.Dense(2)(merge(m, m.Dense(3)(a), b))
    _check_functional(build, tmp_path)


@pytest.mark.parametrize("merge", [c[1] for c in MERGES if not c[0].startswith("dot")],
                         ids=[c[0] for c in MERGES if not c[0].startswith("dot")])
def test_merge_masks(merge, tmp_path):
    """Two masked branches merged, then an LSTM that uses the merged mask."""
    def build(m):
        a, b = m.Input((6,), dtype="int32", name="a"), m.Input((6,), dtype="int32", name="b")
        ea = m.Embedding(10, 3, mask_zero=True)(a)
        eb = m.Embedding(10, 3, mask_zero=True)(b)
        return [a, b], m.LSTM(4, return_sequences=True)(merge(m, ea, eb))
    _check_functional(build, tmp_path)


def test_concatenate_mask_with_an_unmasked_input(tmp_path):
    def build(m):
        a, b = m.Input((6,), dtype="int32", name="a"), m.Input((6, 2), name="b")
        merged = m.Concatenate(axis=1)([m.Embedding(10, 2, mask_zero=True)(a), b])
        return [a, b], m.GRU(3)(merged)
    _check_functional(build, tmp_path)


def test_masked_pooling_dense_and_time_distributed(tmp_path):
    def build(m):
        ids = m.Input((7,), dtype="int32", name="ids")
        x = m.Embedding(15, 4, mask_zero=True)(ids)
        x = m.TimeDistributed(m.Dense(5, activation="tanh"))(x)
        x = m.Dense(4)(x)
        return ids, [m.GlobalAveragePooling1D()(x), m.LSTM(3)(x)]
    _check_functional(build, tmp_path)


def test_masking_layer(tmp_path):
    def build(m):
        x = m.Input((6, 3), name="x")
        return x, m.LSTM(4, return_sequences=True)(m.Masking(mask_value=0.0)(x))
    x = np.random.default_rng(0).normal(size=(3, 6, 3)).astype(np.float32)
    x[0, 4:] = 0
    x[2, 1] = 0
    _check_functional(build, tmp_path, [x])


@pytest.mark.parametrize("cell,n", [("LSTM", 2), ("GRU", 1), ("SimpleRNN", 1)])
def test_return_state_and_initial_state(cell, n, tmp_path):
    def build(m):
        x, s = m.Input((5, 3), name="seq"), m.Input((2,), name="ctx")
        states = [m.Dense(4, activation="tanh", name=f"init{i}")(s) for i in range(n)]
        out = getattr(m, cell)(4, return_sequences=True, return_state=True, name="rnn")(x, initial_state=states)
        y = getattr(m, cell)(4, go_backwards=True, name="rnn2")(out[0], initial_state=list(out[1:]))
        return [x, s], [y] + list(out[1:])
    _check_functional(build, tmp_path)


def test_bidirectional_masks_states_and_no_merge(tmp_path):
    def build(m):
        ids = m.Input((6,), dtype="int32", name="ids")
        x = m.Embedding(12, 4, mask_zero=True)(ids)
        seq = m.Bidirectional(m.LSTM(3, return_sequences=True))(x)
        both = m.Bidirectional(m.GRU(2, return_state=True), merge_mode=None)(seq)
        return ids, list(both)
    _check_functional(build, tmp_path)


def test_shared_layer_and_multiple_outputs(tmp_path):
    def build(m):
        a, b = m.Input((5,), name="a"), m.Input((5,), name="b")
        shared = m.Dense(4, activation="relu", name="shared")
        ha, hb = shared(a), shared(b)
        return [a, b], [m.Dense(1, name="out_a")(ha), m.Add(name="sum")([ha, hb])]
    _check_functional(build, tmp_path)


def test_summary_counts_like_keras():
    k, e = _models(lambda m: m.BatchNormalization(), (4, 3), None)
    lines = []
    e.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Total params: 12 (48.00 B)" in text
    assert "Trainable params: 6 (24.00 B)" in text and "Non-trainable params: 6 (24.00 B)" in text


def test_layer_names_like_keras():
    layers = [nn.Conv2D(1, 1), nn.GlobalAveragePooling1D(), nn.ReLU(), nn.PReLU(), nn.SimpleRNN(1), nn.Conv2DTranspose(1, 1)]
    names = [re.sub(r"_\d+$", "", layer.name) for layer in layers]
    assert names == ["conv2d", "global_average_pooling1d", "re_lu", "p_re_lu", "simple_rnn", "conv2d_transpose"]
