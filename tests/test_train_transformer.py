"""A small transformer classifier (Embedding(mask_zero) → TransformerEncoderLayer → masked
mean pooling → Dense) trained with compile/fit and, from the same weights, by torch: the loss of
every step and the weights after it agree (SGD and Adam, dropout 0)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import losses, nn, optimizers

torch = pytest.importorskip("torch")
from torch_transformer import encoder_weights, randomized  # noqa: E402

V, E, H, F, C, T = 13, 8, 2, 16, 3, 6


class TorchTwin(torch.nn.Module):
    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.emb = torch.nn.Embedding(V, E)
        self.enc = randomized(torch.nn.TransformerEncoderLayer(E, H, F, dropout=0.0, batch_first=True))
        self.fc = torch.nn.Linear(E, C)
        with torch.no_grad():
            self.emb.weight.copy_(torch.randn(V, E, generator=gen))
            self.fc.weight.copy_(torch.randn(C, E, generator=gen) * 0.3)

    def forward(self, ids):
        keep = ids != 0
        h = self.enc(self.emb(ids), src_key_padding_mask=~keep)
        return self.fc((h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True))

    def keras_weights(self) -> list:
        return ([self.emb.weight.detach().numpy()] + encoder_weights(self.enc)
                + [self.fc.weight.detach().numpy().T, self.fc.bias.detach().numpy()])


def classifier():
    ids = nn.Input((T,), dtype="int64")
    x = nn.Embedding(V, E, mask_zero=True)(ids)
    x = nn.TransformerEncoderLayer(F, H)(x)  # the Embedding's mask is its padding mask ...
    x = nn.GlobalAveragePooling1D()(x)       # ... and the pooling's
    return nn.Model(ids, nn.Dense(C)(x))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_steps_match_torch(optimizer):
    rng = np.random.default_rng(0)
    x = rng.integers(1, V, (12, T))
    x[0, 3:] = x[5, 4:] = x[9, 1:] = 0  # padded rows
    y = rng.integers(0, C, 12)
    twin = TorchTwin().train()
    model = classifier()
    model.set_weights(twin.keras_weights())
    if optimizer == "sgd":
        ours, theirs = optimizers.SGD(0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
    else:
        ours, theirs = optimizers.Adam(1e-2, convention="torch"), torch.optim.Adam(twin.parameters(), lr=1e-2)
    model.compile(optimizer=ours, loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    names = [f"{layer.name}/{n}" for layer in model.layers for n in layer.all_weight_names()]
    for step in range(3):
        xb, yb = x[4 * step:4 * step + 4], y[4 * step:4 * step + 4]
        loss = model.fit(xb, yb, batch_size=4, epochs=1, shuffle=False, verbose=0).history["loss"][0]
        theirs.zero_grad()
        want = torch.nn.functional.cross_entropy(twin(torch.tensor(xb)), torch.tensor(yb))
        want.backward()
        theirs.step()
        assert loss == pytest.approx(want.item(), rel=1e-5), f"step {step}"
        for name, a, b in zip(names, model.get_weights(), twin.keras_weights()):
            if optimizer == "adam" and name.endswith("/key/bias"):
                # zero gradient in exact arithmetic (it adds one q·b to every score of a query):
                # Adam turns its rounding noise into steps of ±lr
                continue
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"step {step}: {name}")
