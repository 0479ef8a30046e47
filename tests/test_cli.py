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


def test_every_cli_error_is_a_clean_message_and_exit_2(tmp_path, capsys):
    nn.Sequential([nn.Input((3,)), nn.Dense(2)]).save(tmp_path / "m.engine")
    model = str(tmp_path / "m.engine")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    np.savez(tmp_path / "wrong.npz", other=np.zeros((1, 3), np.float32), more=np.zeros(1))
    cases = [
        (["predict", model, str(tmp_path / "missing.npy")], "missing.npy: no such file"),
        (["predict", model, str(tmp_path / "obj.npy")], "not a readable .npy/.npz"),
        (["predict", model, str(tmp_path / "junk.npy")], "not a readable .npy/.npz"),
        (["predict", model, str(tmp_path / "wrong.npz")], "no array for input"),
        (["predict", str(tmp_path / "junk.npy"), str(tmp_path / "obj.npy")], "junk.npy"),
        (["info", str(tmp_path)], "graph.json"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    x = np.ones((1, 3), np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", model, str(tmp_path / "x.npy"), "-o", str(tmp_path / "no_dir" / "y.npy")]) == 2
    assert "No such file" in capsys.readouterr().err


def test_predict_npz_for_named_inputs_and_outputs(tmp_path, capsys):
    i1, i2 = nn.Input((3,), name="a"), nn.Input((3,), name="b")
    d = nn.Dense(2, name="head")
    m = nn.Model([i1, i2], [d(i1), d(i2)])
    m.save(tmp_path / "two.engine")
    a, b = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
    np.savez(tmp_path / "x.npz", a=a, b=b)
    assert main(["predict", str(tmp_path / "two.engine"), str(tmp_path / "x.npz"),
                 "-o", str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz") as y:
        ya, yb = m.predict([a, b])
        np.testing.assert_array_equal(y["head"], ya)
        np.testing.assert_array_equal(y["head/call_1"], yb)


def test_info_and_predict_on_onnx(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(3, dtype=np.float32) * 2, "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="unit"),
              str(tmp_path / "m.onnx"))
    assert main(["info", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "('batch', 3)" in out and "producer unit" in out and "Dense" in out
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    assert main(["predict", str(tmp_path / "m.onnx"), str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.full((2, 3), 2))
