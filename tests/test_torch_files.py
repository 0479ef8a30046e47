"""PyTorch weight files: torch.save'd state dicts (zip and legacy formats) and safetensors,
read without torch by a restricted unpickler, mapped onto engine.nn layers by
`load_state_dict`; hostile and broken files refused with nothing executed; and
engine.from_torch on live modules. Files are written by real torch; outputs compared with
torch's own."""

import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch
from torch import nn as tnn

import engine
from engine import nn
from engine.formats import torch as torch_format
from engine.nn import Layer

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class Seed003(tnn.Module):  # seed 4 of SEED-EXAMPLES.md, as written there
    def __init__(self):
        super(Seed003, self).__init__()
        self.layer1 = tnn.Linear(1000, 500)
        self.layer2 = tnn.Linear(500, 100)
        self.layer3 = tnn.Linear(100, 1)

    def forward(self, x):
        x = torch.relu(self.layer1(x))
        x = torch.relu(self.layer2(x))
        return self.layer3(x)


def seed003_engine():
    return nn.Sequential([nn.Input((1000,)), nn.Dense(500, activation="relu"),
                          nn.Dense(100, activation="relu"), nn.Dense(1)])


def _torch_out(module, x):
    with torch.no_grad():
        return module.eval()(torch.from_numpy(x)).numpy()


# -- the seed-003 MLP, every way its weights arrive -----------------------------------------------

@pytest.mark.parametrize("how", ["zip", "legacy", "safetensors", "tensors", "arrays", "bytes"])
def test_seed003_state_dict_matches_torch(tmp_path, how):
    model = Seed003()
    sd = model.state_dict()
    path = tmp_path / "model.pth"
    if how == "zip":
        torch.save(sd, path)
        source = str(path)
    elif how == "legacy":
        torch.save(sd, path, _use_new_zipfile_serialization=False)
        source = path
    elif how == "safetensors":
        from safetensors.torch import save_file
        source = tmp_path / "model.safetensors"
        save_file(sd, str(source))
    elif how == "tensors":
        source = sd
    elif how == "arrays":
        source = {k: v.numpy() for k, v in sd.items()}
    else:
        buf = io.BytesIO()
        torch.save(sd, buf)
        source = buf.getvalue()
    net = seed003_engine()
    assert net.load_state_dict(source) == ([], [])
    x = np.random.default_rng(0).standard_normal((5, 1000), dtype=np.float32)
    np.testing.assert_allclose(net.predict(x), _torch_out(model, x), atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit's
def test_engine_load_of_a_state_dict_says_what_to_do(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(Seed003().state_dict(), path)
    for source in (path, path.read_bytes()):
        with pytest.raises(engine.ModelFormatError, match=r"load_state_dict.*from_torch"):
            engine.load(source)
    torch.save(Seed003().state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(engine.ModelFormatError, match="legacy.pt.*load_state_dict"):
        engine.load(tmp_path / "legacy.pt")
    torch.jit.save(torch.jit.script(tnn.Linear(2, 2)), tmp_path / "script.pt")
    with pytest.raises(engine.ModelFormatError, match="TorchScript.*ONNX"):
        engine.load(tmp_path / "script.pt")


def test_keys_naming_the_engine_layers_match_by_name():
    net = seed003_engine()
    dense = [layer.name for layer in net.layers]
    torch_model = Seed003()
    sd = torch_model.state_dict()
    # written in reverse order, keyed by the engine layers' names: the names decide
    renamed = {}
    for name, t in reversed(list(zip(dense, ("layer1", "layer2", "layer3")))):
        renamed[f"{name}.weight"], renamed[f"{name}.bias"] = sd[f"{t}.weight"], sd[f"{t}.bias"]
    net.load_state_dict(renamed)
    x = np.random.default_rng(1).standard_normal((2, 1000), dtype=np.float32)
    np.testing.assert_allclose(net.predict(x), _torch_out(torch_model, x), atol=1e-5)


def test_registration_order_differs_from_forward_order_shapes_decide():
    class Reordered(tnn.Module):
        def __init__(self):
            super().__init__()
            self.head = tnn.Linear(8, 3)     # registered first, used last
            self.body = tnn.Linear(5, 8)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    m = Reordered()
    net = nn.Sequential([nn.Input((5,)), nn.Dense(8, activation="relu"), nn.Dense(3)])
    net.load_state_dict(m.state_dict())
    x = np.random.default_rng(2).standard_normal((3, 5), dtype=np.float32)
    np.testing.assert_allclose(net.predict(x), _torch_out(m, x), atol=1e-5)


# -- a CNN: Conv2d OIHW -> HWIO, and the Linear after Flatten (torch flattens C,H,W) ---------------

class SmallCNN(tnn.Module):
    def __init__(self, bn=False):
        super().__init__()
        self.conv = tnn.Conv2d(3, 6, 3, padding=1)
        self.bn = tnn.BatchNorm2d(6) if bn else None
        self.conv2 = tnn.Conv2d(6, 4, 3, stride=2)
        self.fc = tnn.Linear(4 * 3 * 3, 10)
        self.out = tnn.Linear(10, 2)

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        x = torch.relu(x)
        x = torch.relu(self.conv2(tnn.functional.max_pool2d(x, 2)))
        return self.out(torch.relu(self.fc(torch.flatten(x, 1))))


def _cnn_engine(bn: bool):
    layers = [nn.Input((14, 14, 3)), nn.Conv2D(6, 3, padding="same")]
    if bn:
        layers.append(nn.BatchNormalization(epsilon=1e-5))
    layers += [nn.ReLU(), nn.MaxPooling2D(2), nn.Conv2D(4, 3, strides=2, activation="relu"), nn.Flatten(),
               nn.Dropout(0.5), nn.Dense(10, activation="relu"), nn.Dense(2)]
    return nn.Sequential(layers)


def _randomize_bn(m):
    for mod in m.modules():
        if isinstance(mod, (tnn.BatchNorm1d, tnn.BatchNorm2d)):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            if mod.affine:
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.uniform_(-0.5, 0.5)
            mod.num_batches_tracked.fill_(7)


@pytest.mark.parametrize("bn", [False, True])
def test_cnn_matches_torch(tmp_path, bn):
    if bn and not hasattr(nn, "BatchNormalization"):
        pytest.skip("engine.nn.BatchNormalization arrives with the Keras half of the issue")
    m = SmallCNN(bn)
    _randomize_bn(m)
    torch.save(m.state_dict(), tmp_path / "cnn.pth")
    net = _cnn_engine(bn)
    net.load_state_dict(tmp_path / "cnn.pth")
    x = np.random.default_rng(3).standard_normal((2, 3, 14, 14), dtype=np.float32)
    np.testing.assert_allclose(net.predict(x.transpose(0, 2, 3, 1)), _torch_out(m, x), atol=1e-5, rtol=1e-5)


# -- every mapping, through stand-in layers with Keras's weight shapes -----------------------------
# The real classes (Conv1D, LSTM, ...) come from the Keras half of the issue; the mapping looks
# layers up by class name, so stand-ins of the same name check the conversions here, each
# against a numpy implementation of Keras's semantics fed the converted weights.

def standin(kind: str, weight_shapes, out_shape=None, **attrs):
    def build(self, input_shape):
        self.weights = [np.zeros(s, np.float32) for s in weight_shapes]

    cls = type(kind, (Layer,), {"build": build,
                                "compute_output_shape": lambda self, s: out_shape or s})
    layer = cls()
    layer.__dict__.update(attrs)
    return layer


def load_into(layer, input_shape, state_dict, **kw):
    net = nn.Sequential([nn.Input(input_shape), layer])
    net.load_state_dict(state_dict, **kw)
    return layer.get_weights()


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def keras_lstm(x, kernel, rec, bias):
    n, u = x.shape[0], rec.shape[0]
    h, c, out = np.zeros((n, u)), np.zeros((n, u)), []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ rec + bias
        i, f, g, o = sigmoid(z[:, :u]), sigmoid(z[:, u:2 * u]), np.tanh(z[:, 2 * u:3 * u]), sigmoid(z[:, 3 * u:])
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


def keras_gru(x, kernel, rec, bias):  # reset_after=True
    n, u = x.shape[0], rec.shape[0]
    h, out = np.zeros((n, u)), []
    for t in range(x.shape[1]):
        xz, hz = x[:, t] @ kernel + bias[0], h @ rec + bias[1]
        z = sigmoid(xz[:, :u] + hz[:, :u])
        r = sigmoid(xz[:, u:2 * u] + hz[:, u:2 * u])
        hh = np.tanh(xz[:, 2 * u:] + r * hz[:, 2 * u:])
        h = z * h + (1 - z) * hh
        out.append(h)
    return np.stack(out, 1)


def keras_rnn(x, kernel, rec, bias):
    h, out = np.zeros((x.shape[0], rec.shape[0])), []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ kernel + h @ rec + bias)
        out.append(h)
    return np.stack(out, 1)


def _perturb(module):
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.6, 0.6)
    return module


def test_lstm_gates_and_summed_biases():
    m = _perturb(tnn.LSTM(5, 4, batch_first=True))
    w = load_into(standin("LSTM", [(5, 16), (4, 16), (16,)]), (7, 5), m.state_dict())
    x = np.random.default_rng(4).standard_normal((2, 7, 5)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(keras_lstm(x, *w), ref, atol=1e-5)


def test_gru_gate_order_and_bias_rows():
    m = _perturb(tnn.GRU(5, 3, batch_first=True))
    w = load_into(standin("GRU", [(5, 9), (3, 9), (2, 9)]), (6, 5), m.state_dict())
    x = np.random.default_rng(5).standard_normal((2, 6, 5)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(keras_gru(x, *w), ref, atol=1e-5)


def test_gru_reset_after_false_is_refused():
    m = tnn.GRU(5, 3, batch_first=True)
    with pytest.raises(engine.EngineError, match="reset_after=True"):
        load_into(standin("GRU", [(5, 9), (3, 9), (9,)]), (6, 5), m.state_dict())


def test_simple_rnn():
    m = _perturb(tnn.RNN(4, 3, batch_first=True))
    w = load_into(standin("SimpleRNN", [(4, 3), (3, 3), (3,)]), (5, 4), m.state_dict())
    x = np.random.default_rng(6).standard_normal((2, 5, 4)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(keras_rnn(x, *w), ref, atol=1e-5)


def test_bidirectional_and_stacked_lstm():
    m = _perturb(tnn.LSTM(5, 4, num_layers=2, bidirectional=True, batch_first=True))
    shapes = [(5, 16), (4, 16), (16,)]
    first = standin("Bidirectional", shapes * 2, (None, 7, 8), forward_layer=standin("LSTM", shapes))
    second = standin("Bidirectional", [(8, 16), (4, 16), (16,)] * 2, (None, 7, 8),
                     forward_layer=standin("LSTM", shapes))
    net = nn.Sequential([nn.Input((7, 5)), first, second])
    net.load_state_dict(m.state_dict())
    x = np.random.default_rng(7).standard_normal((2, 7, 5)).astype(np.float32)
    h = x
    for layer in (first, second):
        w = layer.get_weights()
        fwd = keras_lstm(h, *w[:3])
        bwd = keras_lstm(h[:, ::-1], *w[3:])[:, ::-1]
        h = np.concatenate([fwd, bwd], -1)
    with torch.no_grad():
        ref = m(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(h, ref, atol=1e-5)


def _windows(x, k, axes):
    return np.lib.stride_tricks.sliding_window_view(x, k, axis=axes)


def test_conv1d_and_conv3d_kernels():
    m1 = _perturb(tnn.Conv1d(3, 4, 2))
    w = load_into(standin("Conv1D", [(2, 3, 4), (4,)], (None, 5, 4)), (6, 3), m1.state_dict())
    x = np.random.default_rng(8).standard_normal((2, 3, 6)).astype(np.float32)      # NCL
    mine = np.einsum("nlck,kco->nlo", _windows(x.transpose(0, 2, 1), 2, 1), w[0]) + w[1]
    np.testing.assert_allclose(mine, _torch_out(m1, x).transpose(0, 2, 1), atol=1e-5)

    m3 = _perturb(tnn.Conv3d(2, 3, (2, 3, 2)))
    w = load_into(standin("Conv3D", [(2, 3, 2, 2, 3), (3,)], (None, 3, 2, 3, 3)), (4, 4, 4, 2), m3.state_dict())
    x = np.random.default_rng(9).standard_normal((2, 2, 4, 4, 4)).astype(np.float32)  # NCDHW
    win = _windows(x.transpose(0, 2, 3, 4, 1), (2, 3, 2), (1, 2, 3))              # n d h w c kd kh kw
    mine = np.einsum("ndhwcxyz,xyzco->ndhwo", win, w[0]) + w[1]
    np.testing.assert_allclose(mine, _torch_out(m3, x).transpose(0, 2, 3, 4, 1), atol=1e-5)


def test_conv2d_transpose_kernel():
    m = _perturb(tnn.ConvTranspose2d(3, 5, 3, stride=2))
    kernel, bias = load_into(standin("Conv2DTranspose", [(3, 3, 5, 3), (5,)], (None, 9, 9, 5)), (4, 4, 3),
                             m.state_dict())
    x = np.random.default_rng(10).standard_normal((2, 4, 4, 3)).astype(np.float32)
    out = np.zeros((2, 9, 9, 5), np.float32)
    for dy in range(3):
        for dx in range(3):  # Keras: out[y*s + dy, x*s + dx] += x[y, x] . kernel[dy, dx] (filters, in)
            out[:, dy:dy + 7:2, dx:dx + 7:2] += np.einsum("nhwi,oi->nhwo", x, kernel[dy, dx])
    np.testing.assert_allclose(out + bias, _torch_out(m, x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1), atol=1e-5)


def test_depthwise_conv2d_kernel():
    m = _perturb(tnn.Conv2d(3, 6, 2, groups=3))
    kernel, bias = load_into(standin("DepthwiseConv2D", [(2, 2, 3, 2), (6,)], (None, 4, 4, 6)), (5, 5, 3),
                             m.state_dict())
    x = np.random.default_rng(11).standard_normal((2, 5, 5, 3)).astype(np.float32)
    mine = np.einsum("nhwcyx,yxcm->nhwcm", _windows(x, (2, 2), (1, 2)), kernel).reshape(2, 4, 4, 6) + bias
    np.testing.assert_allclose(mine, _torch_out(m, x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1), atol=1e-5)


def test_batch_norm_statistics_and_affine_flags():
    m = tnn.BatchNorm1d(4)
    _randomize_bn(m)
    sd = m.state_dict()
    layer = standin("BatchNormalization", [(4,)] * 4, epsilon=1e-5)
    gamma, beta, mean, var = load_into(layer, (4,), sd)
    x = np.random.default_rng(12).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose((x - mean) / np.sqrt(var + 1e-5) * gamma + beta, _torch_out(m, x), atol=1e-5)
    # center=False: no beta; a torch BN without affine fills gamma with ones
    got = load_into(standin("BatchNormalization", [(4,)] * 3, center=False, epsilon=1e-5), (4,), sd,
                    strict=False)
    np.testing.assert_array_equal(got[0], sd["weight"].numpy())
    m2 = tnn.BatchNorm1d(4, affine=False)
    _randomize_bn(m2)
    got = load_into(standin("BatchNormalization", [(4,)] * 4, epsilon=1e-5), (4,), m2.state_dict())
    np.testing.assert_array_equal(got[0], np.ones(4))
    np.testing.assert_array_equal(got[3], m2.running_var.numpy())


def test_epsilon_other_than_torchs_default_warns():
    with pytest.warns(UserWarning, match="eps"):
        load_into(standin("BatchNormalization", [(4,)] * 4, epsilon=1e-3), (4,), tnn.BatchNorm1d(4).state_dict())


def test_layer_norm_group_norm_embedding_prelu():
    ln = _perturb(tnn.LayerNorm(6))
    gamma, beta = load_into(standin("LayerNormalization", [(6,), (6,)], epsilon=1e-5), (3, 6), ln.state_dict())
    np.testing.assert_array_equal(gamma, ln.weight.detach().numpy())
    np.testing.assert_array_equal(beta, ln.bias.detach().numpy())
    gn = _perturb(tnn.GroupNorm(2, 6))
    gamma, beta = load_into(standin("GroupNormalization", [(6,), (6,)], epsilon=1e-5), (4, 4, 6), gn.state_dict())
    np.testing.assert_array_equal(beta, gn.bias.detach().numpy())
    emb = tnn.Embedding(11, 4)
    (table,) = load_into(standin("Embedding", [(11, 4)], (None, 5, 4)), (5,), emb.state_dict())
    np.testing.assert_array_equal(table, emb.weight.detach().numpy())

    pr = _perturb(tnn.PReLU(3))
    (alpha,) = load_into(standin("PReLU", [(4, 4, 3)]), (4, 4, 3), pr.state_dict())
    x = np.random.default_rng(13).standard_normal((2, 4, 4, 3)).astype(np.float32)
    mine = np.maximum(x, 0) + alpha * np.minimum(x, 0)
    np.testing.assert_allclose(mine, _torch_out(pr, x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1), atol=1e-6)
    (alpha,) = load_into(standin("PReLU", [(1, 1, 3)]), (4, 4, 3), tnn.PReLU().state_dict())  # one slope
    np.testing.assert_array_equal(alpha, np.full((1, 1, 3), 0.25, np.float32))


def test_time_distributed_dense():
    lin = _perturb(tnn.Linear(4, 3))
    inner = nn.Dense(3)
    kernel, bias = load_into(standin("TimeDistributed", [(4, 3), (3,)], (None, 5, 3), layer=inner), (5, 4),
                             lin.state_dict())
    np.testing.assert_array_equal(kernel, lin.weight.detach().numpy().T)


def test_flattened_conv_features_permute_batch_norm_too():
    cnn = nn.Conv2D(2, 3)
    bn = standin("BatchNormalization", [(18,)] * 4, epsilon=1e-5)
    net = nn.Sequential([nn.Input((5, 5, 1)), cnn, nn.Flatten(), bn, nn.Dense(4)])
    tm = tnn.Sequential(tnn.Conv2d(1, 2, 3), tnn.Flatten(), tnn.BatchNorm1d(18), tnn.Linear(18, 4))
    _randomize_bn(tm)
    net.load_state_dict(tm.state_dict())
    w = tm[2].weight.detach().numpy()
    np.testing.assert_array_equal(bn.get_weights()[0], w.reshape(2, 3, 3).transpose(1, 2, 0).reshape(-1))
    lw = tm[3].weight.detach().numpy()
    np.testing.assert_array_equal(net.layers[-1].get_weights()[0],
                                  lw.reshape(4, 2, 3, 3).transpose(0, 2, 3, 1).reshape(4, -1).T)


# -- mismatches: clear errors naming the key, nothing changed --------------------------------------

def test_shape_mismatch_names_key_expected_and_got():
    net = nn.Sequential([nn.Input((1000,)), nn.Dense(500), nn.Dense(1)])
    before = net.get_weights()
    with pytest.raises(engine.ShapeError, match=r"'layer2.weight' has shape \(100, 500\), expected \(1, 500\)"):
        net.load_state_dict(Seed003().state_dict())
    assert all(np.array_equal(a, b) for a, b in zip(before, net.get_weights()))  # untouched


def test_missing_and_unexpected_keys():
    sd = Seed003().state_dict()
    net = nn.Sequential([nn.Input((1000,)), nn.Dense(500), nn.Dense(100), nn.Dense(1), nn.Dense(3)])
    with pytest.raises(engine.EngineError, match=r"missing parameters for layer 'dense_\d+'.*weight \(3, 1\)"):
        net.load_state_dict(sd)
    result = net.load_state_dict(sd, strict=False)
    assert result.unexpected_keys == [] and len(result.missing_keys) == 2

    net = nn.Sequential([nn.Input((1000,)), nn.Dense(500), nn.Dense(100)])
    with pytest.raises(engine.EngineError, match=r"unexpected keys 'layer3.weight' \(1, 100\), 'layer3.bias'"):
        net.load_state_dict(sd)
    assert net.load_state_dict(sd, strict=False).unexpected_keys == ["layer3.weight", "layer3.bias"]


def test_layer_without_mapping_and_checkpoint_dicts(tmp_path):
    net = nn.Sequential([nn.Input((4,)), standin("Normalization", [(4,), (4,), ()]), nn.Dense(2)])
    sd = tnn.Linear(4, 2).state_dict()
    with pytest.raises(engine.EngineError, match="'normalization.*' \\(Normalization\\) has no torch mapping"):
        net.load_state_dict(sd)
    assert net.load_state_dict(sd, strict=False).missing_keys[0].startswith("normalization")
    torch.save({"epoch": 3, "model_state_dict": sd}, tmp_path / "ckpt.pt")
    with pytest.raises(engine.ModelFormatError, match="'model_state_dict'.*checkpoint"):
        net.load_state_dict(tmp_path / "ckpt.pt")
    with pytest.raises(engine.ModelFormatError, match="no such file"):
        net.load_state_dict(tmp_path / "absent.pth")


# -- the reader: storages, views, element types ----------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True])
def test_views_shared_storages_and_every_dtype(legacy):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        "t": base.T, "rows": base[1:, 2:5], "row0": base[0], "step": base[:, ::2], "expand": torch.ones(1).expand(3, 4),
        "empty": torch.zeros(0, 3), "scalar": torch.tensor(2.5),
        "float16": torch.randn(3).half(), "float64": torch.randn(2, 2).double(), "int64": torch.arange(5),
        "int32": torch.tensor([1, -2], dtype=torch.int32), "int8": torch.tensor([-1, 2], dtype=torch.int8),
        "uint8": torch.tensor([250, 3], dtype=torch.uint8), "bool": torch.tensor([True, False]),
        "bfloat16": torch.randn(2, 3).bfloat16(), "uint16": torch.tensor([1, 65535]).to(torch.uint16),
        "complex64": torch.randn(2, dtype=torch.complex64),
    }
    buf = io.BytesIO()
    torch.save(tensors, buf, _use_new_zipfile_serialization=not legacy)
    got = torch_format.load(buf.getvalue())
    for k, v in tensors.items():
        want = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()  # bfloat16 -> float32, exactly
        assert got[k].dtype == want.dtype and got[k].shape == want.shape, k
        np.testing.assert_array_equal(got[k], want, err_msg=k)
        assert got[k].flags.c_contiguous and got[k].flags.writeable
    assert got["t"].base is None  # a copy, not a view into the file's bytes


def test_big_endian_archive():
    w = torch.randn(3, 4, dtype=torch.float64)
    buf = io.BytesIO()
    torch.save({"w": w, "i": torch.arange(3, dtype=torch.int32)}, buf)
    swapped = {"0": w.numpy().astype(">f8").tobytes(), "1": np.arange(3, dtype=">i4").tobytes()}

    def to_big(name, data):
        if name.endswith("byteorder"):
            return b"big"
        key = name.rsplit("/", 1)[-1]
        return swapped[key] if "/data/" in name else data

    got = torch_format.load(_rezip(buf.getvalue(), to_big))
    np.testing.assert_array_equal(got["w"], w.numpy())
    np.testing.assert_array_equal(got["i"], np.arange(3))
    assert got["w"].dtype.isnative


def test_containers_and_parameters():
    p = tnn.Parameter(torch.randn(3))
    p.note = "kept by torch, dropped here"
    buf = io.BytesIO()
    torch.save({"list": [torch.ones(2), (torch.zeros(1), {"p": p})], "n": 3, "s": "x"}, buf)
    got = torch_format.load(buf.getvalue())
    np.testing.assert_array_equal(got["list"][1][1]["p"], p.detach().numpy())
    assert got["n"] == 3 and got["s"] == "x" and isinstance(got["list"][1], tuple)


# -- hostile and broken files ----------------------------------------------------------------------

class _Payload:
    """Pickles to a call of `func(*args)` on load (what an attacker's file holds)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _torch_zip(data_pkl: bytes, extra=()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        for name, data in extra:
            z.writestr(f"archive/{name}", data)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def _legacy(payload) -> bytes:
    parts = [pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})]
    return b"".join(parts) + pickle.dumps(payload, protocol=2) + pickle.dumps([], protocol=2)


def _hostile_files(marker):
    import builtins
    import posix
    import subprocess

    cmd = f"touch {marker}"
    return {
        "raw os.system": pickle.dumps(_Payload(os.system, cmd)),
        "raw posix.system, protocol 0": pickle.dumps(_Payload(posix.system, cmd), protocol=0),
        "raw builtins.eval": pickle.dumps(_Payload(builtins.eval, f"__import__('os').system('{cmd}')")),
        "raw builtins.exec": pickle.dumps(_Payload(builtins.exec, f"open('{marker}', 'w')")),
        "subprocess in a nested __reduce__": pickle.dumps(
            {"layer.weight": [1, {"x": _Payload(subprocess.call, ["touch", str(marker)])}]}, protocol=2),
        "inside the zip's data.pkl": _torch_zip(pickle.dumps({"w": _Payload(os.system, cmd)}, protocol=2)),
        "zip, nested in an OrderedDict": _torch_zip(pickle.dumps(
            __import__("collections").OrderedDict(a=[_Payload(builtins.eval, "1")]), protocol=2)),
        "legacy, after a valid header": _legacy({"w": _Payload(os.system, cmd)}),
        "open() via builtins": pickle.dumps(_Payload(builtins.open, str(marker), "w")),
    }


def test_hostile_pickles_are_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    for what, data in _hostile_files(marker).items():
        path = tmp_path / "evil.pth"
        path.write_bytes(data)
        for source in (path, data):
            with pytest.raises(engine.ModelFormatError, match=r"global '(posix|os|builtins|subprocess|io)\.\w+'.*refused") as e:
                torch_format.load(source)
            assert "state_dict" in str(e.value), what
        with pytest.raises(engine.ModelFormatError, match="evil.pth"):
            seed003_engine().load_state_dict(path)
        assert not marker.exists(), what


def test_forged_calls_and_build_on_our_objects_are_refused():
    # A pickle may BUILD (set attributes) on any object it holds, call an allowed global with
    # other arguments, or carry length fields and memo indices that make pickle's own reader
    # allocate without bound: each is refused before it reaches anything of ours.
    build_on_global = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__NsN"
                       b"\x86\x86b.")
    call_storage_class = b"\x80\x02ctorch\nFloatStorage\n)R."
    forged_tensor = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nX\x01\x00\x00\x00x\x85R."
    unknown_pid = b"\x80\x02X\x03\x00\x00\x00abcQ."
    inst_call = b"(S'touch pwned'\nios\nsystem\n."                    # protocol 0's INST
    memo_bomb = b"\x80\x02K\x01r\xff\xff\xff\xff."                     # memo slot 2**32 - 1
    huge_bytes = b"\x80\x02\x8e" + struct.pack("<Q", 1 << 62) + b"ab."    # BINBYTES8 of 4 EiB
    for data, match in [(build_on_global, "BUILD"), (call_storage_class, "torch.FloatStorage"),
                        (forged_tensor, "bad arguments"), (unknown_pid, "persistent reference"),
                        (inst_call, "opcode INST"), (memo_bomb, "memo slot"), (huge_bytes, "truncated")]:
        with pytest.raises(engine.ModelFormatError, match=match):
            torch_format.load(data)
        with pytest.raises(engine.ModelFormatError, match=match):
            torch_format.load(_torch_zip(data))


def test_whole_pickled_module_is_refused_with_the_state_dict_hint(tmp_path):
    for legacy in (False, True):
        path = tmp_path / "whole.pth"
        torch.save(tnn.Linear(3, 2), path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(engine.ModelFormatError, match=r"whole pickled torch.nn module.*state_dict\(\)"):
            torch_format.load(path)
        torch.save(Seed003(), path, _use_new_zipfile_serialization=not legacy)  # the user's own class
        with pytest.raises(engine.ModelFormatError, match=r"whole pickled torch.nn module.*Seed003|state_dict"):
            seed003_engine().load_state_dict(path)


def test_zip_entry_claiming_a_huge_size(tmp_path):
    buf = io.BytesIO()
    torch.save(tnn.Linear(3, 2).state_dict(), buf)
    data = bytearray(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        name = next(i.filename for i in z.infolist() if i.filename.endswith("data/0")).encode()
    # its central directory record (name at +46): the uncompressed size (at +24) says ~4 GiB
    cd = data.index(b"PK\x01\x02")
    while data[cd + 46:cd + 46 + len(name)] != name:
        cd = data.index(b"PK\x01\x02", cd + 4)
    struct.pack_into("<I", data, cd + 24, 0xFFFFFFF0)
    (tmp_path / "huge.pth").write_bytes(bytes(data))
    with pytest.raises(engine.ModelFormatError, match=r"huge.pth: zip entry '.*data/0' claims 4294967280 bytes"):
        torch_format.load(tmp_path / "huge.pth")


def _rezip(data: bytes, change) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w") as zout:
        for i in zin.infolist():
            content = change(i.filename, zin.read(i))
            if content is not None:
                zout.writestr(i.filename, content)
    return out.getvalue()


def test_storage_shorter_than_its_tensor_and_missing_storage():
    buf = io.BytesIO()
    torch.save({"w": torch.randn(4, 5)}, buf)
    short = _rezip(buf.getvalue(), lambda n, d: d[:40] if n.endswith("data/0") else d)
    with pytest.raises(engine.ModelFormatError, match=r"tensor 'w' .* reads element 19 of a storage holding 10"):
        torch_format.load(short)
    gone = _rezip(buf.getvalue(), lambda n, d: None if n.endswith("data/0") else d)
    with pytest.raises(engine.ModelFormatError, match="no entry '.*data/0'"):
        torch_format.load(gone)
    legacy = io.BytesIO()
    torch.save({"w": torch.randn(4, 5)}, legacy, _use_new_zipfile_serialization=False)
    data = bytearray(legacy.getvalue())
    struct.pack_into("<q", data, len(data) - 80 - 8, 1 << 40)  # the storage's element count
    with pytest.raises(engine.ModelFormatError, match="claims 1099511627776 elements"):
        torch_format.load(bytes(data))


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_and_corrupt_files(tmp_path, legacy):
    buf = io.BytesIO()
    torch.save(Seed003().state_dict(), buf, _use_new_zipfile_serialization=not legacy)
    data = buf.getvalue()
    path = tmp_path / "cut.pth"
    for cut in (1, 20, 200, len(data) // 2, len(data) - 100, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(engine.ModelFormatError, match="cut.pth"):
            torch_format.load(path)
    garbled = bytearray(data)
    garbled[len(data) // 3:len(data) // 3 + 64] = os.urandom(64)
    path.write_bytes(bytes(garbled))
    try:
        torch_format.load(path)  # may land in weight bytes: then it loads, with other numbers
    except engine.ModelFormatError:
        pass
    for junk in (b"", b"PK\x03\x04garbage", os.urandom(500), b"\x80\x02K\x05."):
        path.write_bytes(junk)
        with pytest.raises(engine.ModelFormatError, match="cut.pth"):
            torch_format.load(path)


def test_safetensors_bfloat16_and_broken(tmp_path):
    from safetensors.torch import save_file

    sd = {"layer10.bias": torch.randn(3).bfloat16(), "layer2.weight": torch.randn(2, 3), "a": torch.arange(4)}
    save_file(sd, str(tmp_path / "w.safetensors"))
    got = torch_format.read_state_dict(tmp_path / "w.safetensors")
    assert list(got) == ["a", "layer2.weight", "layer10.bias"]  # natural order: 2 before 10
    np.testing.assert_array_equal(got["layer10.bias"], sd["layer10.bias"].float().numpy())
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-5])
    with pytest.raises(engine.ModelFormatError, match="cut.safetensors"):
        torch_format.read_state_dict(tmp_path / "cut.safetensors")


# -- engine.from_torch ----------------------------------------------------------------------------

def test_from_torch_small_cnn_with_batch_norm(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = SmallCNN(bn=True)
    _randomize_bn(m)
    m.train()
    x = torch.randn(2, 3, 14, 14)
    model = engine.from_torch(m, x)
    assert m.training  # the module's mode is restored
    assert os.listdir(tmp_path) == []  # nothing written
    x5 = np.random.default_rng(14).standard_normal((5, 3, 14, 14), dtype=np.float32)  # another batch size
    np.testing.assert_allclose(model.predict(x5), _torch_out(m, x5), atol=1e-4, rtol=1e-4)


class Seed004Net(tnn.Module):  # seed 5's Embedding -> LSTM -> Dense(relu) -> Dense(1), in torch
    def __init__(self, vocab=100, dim=16, units=24):
        super().__init__()
        self.emb, self.lstm = tnn.Embedding(vocab, dim), tnn.LSTM(dim, units, batch_first=True)
        self.fc1, self.fc2 = tnn.Linear(units, 12), tnn.Linear(12, 1)

    def forward(self, ids):
        h, _ = self.lstm(self.emb(ids))
        return self.fc2(torch.relu(self.fc1(h)))


def test_from_torch_seed004_lstm_net():
    m = _perturb(Seed004Net())
    ids = torch.randint(0, 100, (2, 20))
    model = engine.from_torch(m, {"ids": ids})
    assert [i.name for i in model.inputs] == ["ids"]
    other = torch.randint(0, 100, (3, 20)).numpy()
    with torch.no_grad():
        ref = m(torch.from_numpy(other)).numpy()
    np.testing.assert_allclose(model.predict(other), ref, atol=1e-4, rtol=1e-4)


def test_from_torch_falls_back_to_the_dynamo_exporter(monkeypatch):
    export = torch.onnx.export

    def no_torchscript(*args, dynamo=True, **kwargs):
        if not dynamo:
            raise RuntimeError("the TorchScript exporter cannot take this module")
        return export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_torchscript)
    m = _perturb(tnn.Sequential(tnn.Linear(5, 4), tnn.ReLU(), tnn.Linear(4, 2)))
    model = engine.from_torch(m, torch.randn(2, 5))
    x = np.random.default_rng(16).standard_normal((7, 5), dtype=np.float32)
    np.testing.assert_allclose(model.predict(x), _torch_out(m, x), atol=1e-5)


def test_from_torch_checks_the_result():
    with pytest.raises(engine.EngineError, match="torch.nn.Module"):
        engine.from_torch(object(), torch.randn(1))

    class Different(tnn.Module):  # exports one computation, runs another
        def forward(self, x):
            if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
                return x * 2
            return x * 3

    with pytest.raises(engine.EngineError, match="differs from torch's"):
        engine.from_torch(Different(), torch.ones(2, 3))


# -- the real engine.nn layers of the Keras half, once they exist ----------------------------------

def test_seed004_state_dict_into_engine_nn():
    if not all(hasattr(nn, k) for k in ("Embedding", "LSTM")):
        pytest.skip("engine.nn.Embedding/LSTM arrive with the Keras half of the issue")
    m = _perturb(Seed004Net())
    net = nn.Sequential([nn.Embedding(input_dim=100, output_dim=16, input_length=20),
                         nn.LSTM(units=24, return_sequences=True), nn.Dense(units=12, activation="relu"),
                         nn.Dense(units=1)])
    net.load_state_dict(m.state_dict())
    ids = np.random.default_rng(15).integers(0, 100, (3, 20))
    with torch.no_grad():
        ref = m(torch.from_numpy(ids)).numpy()
    try:
        got = net.predict(ids.astype(np.int32))
    except engine.DTypeError:  # a float32 input, as Keras declares it
        got = net.predict(ids.astype(np.float32))
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
