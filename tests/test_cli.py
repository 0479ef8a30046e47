"""`engine demo | info | predict`: the README's main job and the small CLI around a model."""

import numpy as np

from engine import nn
from engine.cli import main


def test_demo_runs_and_reports(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 693,962" in out          # the seed-000 CNN
    assert "loaded: <engine.Model" in out and "batch   1:" in out and "batch  64:" in out


def test_info_and_predict(tmp_path, capsys):
    m = nn.Sequential([nn.Input((3,)), nn.Dense(2, activation="softmax")])
    m.save(tmp_path / "m.engine")
    assert main(["info", str(tmp_path / "m.engine")]) == 0
    assert "(None, 3)" in capsys.readouterr().out
    x = np.random.default_rng(0).random((4, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(tmp_path / "m.engine"), str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "y.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), m.predict(x), rtol=1e-6)


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.engine")]) == 2
    assert "no such file" in capsys.readouterr().err
    nn.Sequential([nn.Input((3,)), nn.Dense(2)]).save(tmp_path / "m.engine")
    np.save(tmp_path / "x64.npy", np.random.default_rng(0).random((2, 3)))  # float64, inexact
    assert main(["predict", str(tmp_path / "m.engine"), str(tmp_path / "x64.npy")]) == 2
    assert "float64" in capsys.readouterr().err
