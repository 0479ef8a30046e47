"""The seed CNN trained by the engine and by PyTorch from the same weights: one SGD step gives
the same weights, and epochs of Adam (torch's convention) track torch's loss."""

import numpy as np
import pytest

import engine
from engine import optimizers
from engine.nn import Conv2D, Dense, Flatten, Input, MaxPooling2D, Sequential

torch = pytest.importorskip("torch")


def seed_cnn(size, hidden):
    engine.nn.set_random_seed(0)
    return Sequential([Input((size, size, 1)), Conv2D(32, (3, 3), activation="relu"), MaxPooling2D((2, 2)),
                       Flatten(), Dense(hidden, activation="relu"), Dense(10, activation="softmax")])


def torch_twin(model, size):
    """The same network in torch (NCHW), weights copied from the engine model."""
    k, kb, d1, d1b, d2, d2b = model.get_weights()
    half = (size - 2) // 2
    conv = torch.nn.Conv2d(1, 32, 3)
    fc1, fc2 = torch.nn.Linear(half * half * 32, d1.shape[1]), torch.nn.Linear(d1.shape[1], 10)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(k.transpose(3, 2, 0, 1)))
        conv.bias.copy_(torch.tensor(kb))
        # engine flattens NHWC (h, w, c); torch NCHW (c, h, w): permute the rows of the kernel
        rows = d1.reshape(half, half, 32, -1).transpose(2, 0, 1, 3).reshape(half * half * 32, -1)
        fc1.weight.copy_(torch.tensor(rows.T))
        fc1.bias.copy_(torch.tensor(d1b))
        fc2.weight.copy_(torch.tensor(d2.T))
        fc2.bias.copy_(torch.tensor(d2b))
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), fc1,
                              torch.nn.ReLU(), fc2)
    return net, lambda: [conv.weight.detach().numpy().transpose(2, 3, 1, 0), conv.bias.detach().numpy(),
                         fc1.weight.detach().numpy().T.reshape(32, half, half, -1).transpose(1, 2, 0, 3)
                         .reshape(half * half * 32, -1), fc1.bias.detach().numpy(),
                         fc2.weight.detach().numpy().T, fc2.bias.detach().numpy()]


def test_one_sgd_step_of_the_seed_cnn_equals_torch():
    rng = np.random.default_rng(0)
    x = rng.random((16, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    model = seed_cnn(28, 128)
    net, weights = torch_twin(model, 28)
    model.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    loss = model.train_on_batch(x, y)

    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    tl = torch.nn.functional.cross_entropy(net(torch.tensor(x.transpose(0, 3, 1, 2))), torch.tensor(y))
    tl.backward()
    opt.step()
    assert loss == pytest.approx(tl.item(), rel=1e-5)
    for ours, theirs in zip(model.get_weights(), weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_adam_epochs_track_torch_on_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[:512, :, :, None] / 16.0).astype(np.float32)
    y = d.target[:512]
    model = seed_cnn(8, 64)
    net, _ = torch_twin(model, 8)
    model.compile(optimizer=optimizers.Adam(1e-3, convention="torch"), loss="sparse_categorical_crossentropy")
    ours = model.fit(x, y, epochs=3, batch_size=32, shuffle=False, verbose=0).history["loss"]

    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = torch.tensor(x.transpose(0, 3, 1, 2)), torch.tensor(y)
    theirs = []
    for _ in range(3):
        total = 0.0
        for b in range(0, len(x), 32):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xt[b:b + 32]), yt[b:b + 32])
            loss.backward()
            opt.step()
            total += loss.item()
        theirs.append(total / (len(x) // 32))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    assert ours[-1] < ours[0]
