"""Fine-tuning a model imported from ONNX: a torch CNN (Conv, BatchNorm, ReLU, MaxPool,
Linear) exported, loaded with engine.load, trained with compile / fit — one SGD step equals
torch's train-mode step (batch statistics, running statistics updated), and fitting lowers
the loss."""

import numpy as np
import pytest

import engine
from engine import losses, optimizers

torch = pytest.importorskip("torch")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(torch.flatten(x, 1))


@pytest.fixture
def exported(tmp_path):
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # running statistics other than the defaults
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    net.eval()
    path = tmp_path / "cnn.onnx"
    # as exported for fine-tuning: BatchNorm kept (not folded into the conv)
    torch.onnx.export(net, torch.zeros(2, 1, 8, 8), path, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}}, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE,
                      do_constant_folding=False)
    return net, path


def test_one_sgd_step_equals_torch_train_mode(exported):
    net, path = exported
    rng = np.random.default_rng(0)
    x = rng.random((16, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    m = engine.load(path)
    m.compile(optimizer=optimizers.SGD(0.1), loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = m.train_on_batch(x, y)

    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    tl = torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(y))
    tl.backward()
    opt.step()
    assert loss == pytest.approx(tl.item(), rel=1e-5)
    ours = m.get_weights()
    theirs = {k: v.detach().numpy() for k, v in net.state_dict().items() if v.dtype == torch.float32}
    matched = 0
    for name, value in theirs.items():  # torch's exporter keeps the parameter names
        if name in ours:
            np.testing.assert_allclose(ours[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
            matched += 1
    assert matched >= 6  # conv/bn/fc weights and biases, and the BN running statistics
    net.eval()
    np.testing.assert_allclose(m.predict(x), net(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_fit_lowers_the_loss(exported):
    from sklearn.datasets import load_digits

    _, path = exported
    d = load_digits()
    x = (d.images[:, None] / 16.0).astype(np.float32)
    y = d.target
    m = engine.load(path)
    m.compile(optimizer=optimizers.Adam(3e-3), loss=losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["sparse_categorical_accuracy"])
    h = m.fit(x, y, epochs=3, batch_size=64, verbose=0, seed=0)
    assert h.history["loss"][-1] < h.history["loss"][0] / 2
    assert h.history["sparse_categorical_accuracy"][-1] > 0.9
