"""Resize (and Upsample) against onnxruntime, ONNX's reference implementation and torch's
F.interpolate; Einsum against np.einsum. Random odd shapes, size-1 and size-0 dims, every
element type; bad input is a clear EngineError."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import engine
from engine.ops import resize as resize_op

ALL_TYPES = ["float32", "float64", "float16", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
             "uint64"]


def _model(op, inputs, consts, attrs, opset=19):
    """One-node ONNX model: `inputs` {name: array} are graph inputs, `consts` a list of
    (name, array | None) initializer inputs after them (None: absent optional input)."""
    names = list(inputs)
    inits = []
    for name, v in consts:
        if v is None:
            names.append("")
        else:
            inits.append(numpy_helper.from_array(np.asarray(v), name))
            names.append(name)
    while names and names[-1] == "":
        names.pop()
    first = next(iter(inputs.values()))
    vin = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in inputs.items()]
    vout = [helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(first.dtype), None)]
    graph = helper.make_graph([helper.make_node(op, names, ["y"], **attrs)], "g", vin, vout, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _engine(model, feeds, optimize=True):
    return engine.load(model.SerializeToString(), optimize=optimize).run(None, feeds)[0]


def _ort(model, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _reference(model, feeds):
    return ReferenceEvaluator(model).run(None, feeds)[0]


def _resize(x, scales=None, sizes=None, roi=None, opset=19, **attrs):
    consts = [("roi", roi), ("scales", None if scales is None else np.asarray(scales, np.float32)),
              ("sizes", None if sizes is None else np.asarray(sizes, np.int64))]
    return _model("Resize", {"x": x}, consts, attrs, opset)


def _data(shape, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.uniform(-4, 4, shape).astype(dt)
    lo, hi = (0, 200) if dt.kind == "u" else (-100, 100)
    return rng.integers(lo, hi, shape).astype(dt)


def _close(got, want, dtype):
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    if np.dtype(dtype).kind in "iu":  # accumulated in float32 vs the reference's float64
        assert np.abs(got.astype(np.float64) - want.astype(np.float64)).max(initial=0) <= 1
    else:
        tol = 2e-3 if dtype == "float16" else 1e-5
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol)


@pytest.fixture(params=["fused", "separable"])
def path(request, monkeypatch):
    """Runs the test with the last two axes resized in one pass, and one pass per axis."""
    monkeypatch.setattr(resize_op, "_fused_pays", lambda *a: request.param == "fused")
    return request.param


# -- Resize against onnxruntime (float32) -----------------------------------------------------------

COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric"]


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("coords", COORDS)
def test_scales_every_mode_vs_ort(mode, coords):
    """onnxruntime where scale·size is whole; else it sizes align_corners and
    half_pixel_symmetric by the rounded output length, unlike ONNX's reference (and its
    test cases), which the engine follows."""
    x = _data((2, 3, 6, 5), seed=1)
    for scales in ([1, 1, 2.5, 0.6], [1, 1, 0.5, 3.0], [1, 1, 1.0, 1.7]):
        m = _resize(x, scales, mode=mode, coordinate_transformation_mode=coords)
        got = _engine(m, {"x": x})
        _close(got, _reference(m, {"x": x}), "float32")
        if all(float(np.float32(s)) * n == int(float(np.float32(s)) * n) for s, n in zip(scales, x.shape)):
            np.testing.assert_allclose(got, _ort(m, {"x": x}), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
@pytest.mark.parametrize("sizes", [[1, 2, 9, 4], [2, 1, 3, 11], [1, 1, 1, 1]])
def test_sizes_nearest_modes_vs_ort(nearest_mode, sizes):
    x = _data((1, 2, 5, 6), seed=2)
    m = _resize(x, sizes=sizes, mode="nearest", nearest_mode=nearest_mode)
    np.testing.assert_array_equal(_engine(m, {"x": x}), _ort(m, {"x": x}))


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales", [[1, 1, 0.4, 0.7], [1, 1, 2.0, 0.3], [1, 1, 1.5, 1.25]])
def test_antialias_vs_ort(mode, scales):
    x = _data((2, 2, 11, 9), seed=3)
    m = _resize(x, scales, mode=mode, antialias=1)
    np.testing.assert_allclose(_engine(m, {"x": x}), _ort(m, {"x": x}), rtol=1e-5, atol=1e-5)


def test_cubic_coeff_and_exclude_outside_vs_ort():
    x = _data((1, 3, 6, 7), seed=4)
    for scales in ([1, 1, 2.0, 1.5], [1, 1, 0.8, 0.5]):
        m = _resize(x, scales, mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1)
        np.testing.assert_allclose(_engine(m, {"x": x}), _ort(m, {"x": x}), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_tf_crop_and_resize_extrapolation_vs_ort(mode, path):
    x = _data((1, 2, 6, 8), seed=5)
    roi = np.array([0, 0, -0.2, 0.3, 1, 1, 0.9, 1.4], np.float32)
    m = _resize(x, sizes=[1, 2, 5, 7], roi=roi, mode=mode, coordinate_transformation_mode="tf_crop_and_resize",
                extrapolation_value=-3.0)
    np.testing.assert_allclose(_engine(m, {"x": x}), _ort(m, {"x": x}), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("axes", [[2, 3], [-1, -2], [1]])
def test_axes_and_aspect_ratio_vs_ort(policy, axes):
    x = _data((2, 3, 5, 7), seed=6)
    sizes = {2: [9, 4], 1: [5]}[len(axes)]
    m = _resize(x, sizes=sizes, mode="linear", axes=axes, keep_aspect_ratio_policy=policy)
    # onnxruntime mishandles negative axes with an aspect-ratio policy: it gets them as given.
    same = _resize(x, sizes=sizes, mode="linear", axes=[a % 4 for a in axes], keep_aspect_ratio_policy=policy)
    np.testing.assert_allclose(_engine(m, {"x": x}), _ort(same, {"x": x}), rtol=1e-5, atol=1e-5)


def test_large_threaded(threads, path):
    x = _data((2, 3, 67, 45), seed=7)
    for mode, scales in (("linear", [1, 1, 2.0, 2.0]), ("nearest", [1, 1, 1.6, 2.3]), ("cubic", [1, 1, 0.7, 1.3])):
        m = _resize(x, scales, mode=mode)
        # (not onnxruntime: it finds source coordinates in float32, so nearest ties can differ)
        _close(_engine(m, {"x": x}), _reference(m, {"x": x}), "float32")


def test_every_isa_vs_ort(isa, path):
    x = _data((1, 3, 13, 29), seed=8)  # rows longer than one vector, with tails
    for mode in ("linear", "cubic"):
        for scales in ([1, 1, 1.5, 0.7], [1, 1, 0.5, 2.2]):
            m = _resize(x, scales, mode=mode)
            np.testing.assert_allclose(_engine(m, {"x": x}), _ort(m, {"x": x}), rtol=1e-5, atol=1e-5)
    h = x.astype(np.float16)
    m = _resize(h, [1, 1, 1.5, 1.7], mode="linear")
    _close(_engine(m, {"x": h}), _reference(m, {"x": h}), "float16")


# -- every element type, N-d, empty, against ONNX's reference --------------------------------------

@pytest.mark.parametrize("dtype", ALL_TYPES + ["bool"])
def test_nearest_every_type(dtype):
    x = _data((2, 3, 5), dtype, seed=9)
    m = _resize(x, [1.0, 1.5, 0.6], mode="nearest", nearest_mode="round_prefer_ceil")
    want = _reference(m, {"x": x}) if dtype != "bool" else _reference(
        _resize(x.astype(np.uint8), [1.0, 1.5, 0.6], mode="nearest", nearest_mode="round_prefer_ceil"),
        {"x": x.astype(np.uint8)}).astype(bool)
    np.testing.assert_array_equal(_engine(m, {"x": x}), want)


@pytest.mark.parametrize("dtype", ALL_TYPES)
@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_blend_every_type(dtype, mode, path):
    x = _data((3, 4, 5), dtype, seed=10)
    m = _resize(x, [1.0, 1.75, 0.6], mode=mode, coordinate_transformation_mode="align_corners")
    _close(_engine(m, {"x": x}), _reference(m, {"x": x}), dtype)


def test_integer_rounding_and_saturation():
    x = np.array([[0, 255, 0, 255]], np.uint8)  # cubic overshoots past 0 and 255
    m = _resize(x, [1.0, 2.5], mode="cubic")
    np.testing.assert_array_equal(_engine(m, {"x": x}), _reference(m, {"x": x}))


@pytest.mark.parametrize("shape,scales", [((7,), [2.3]), ((3, 4, 5, 2, 3), [1, 1.5, 0.5, 2, 1.4])])
def test_nd_linear(shape, scales):
    x = _data(shape, seed=11)
    m = _resize(x, scales, mode="linear")
    _close(_engine(m, {"x": x}), _reference(m, {"x": x}), "float32")


def test_size_zero_dims():
    x = _data((0, 3, 4, 5), seed=12)
    for mode in ("nearest", "linear"):
        m = _resize(x, [1, 1, 2, 2], mode=mode)
        assert _engine(m, {"x": x}).shape == (0, 3, 8, 10)
    x = _data((1, 3, 4, 5), seed=12)
    m = _resize(x, [1, 1, 0.2, 2], mode="linear")  # floor(0.8) == 0 rows
    assert _engine(m, {"x": x}).shape == (1, 3, 0, 10)


def test_identity_is_a_copy():
    x = _data((2, 3, 4), seed=13)
    x[0, 0, 0] = np.inf  # an identity axis must not blend the inf into its neighbours
    m = _resize(x, [1, 1, 1], mode="cubic")
    np.testing.assert_array_equal(_engine(m, {"x": x}), x)


# -- torch's F.interpolate ---------------------------------------------------------------------------

@pytest.mark.parametrize("align", [False, True])
def test_bilinear_bicubic_vs_torch(align):
    x = _data((2, 3, 9, 14), seed=14)
    coords = "align_corners" if align else "pytorch_half_pixel"
    for mode, tmode in (("linear", "bilinear"), ("cubic", "bicubic")):
        m = _resize(x, sizes=[2, 3, 17, 5], mode=mode, coordinate_transformation_mode=coords)
        want = F.interpolate(torch.from_numpy(x), size=(17, 5), mode=tmode, align_corners=align).numpy()
        np.testing.assert_allclose(_engine(m, {"x": x}), want, rtol=1e-4, atol=1e-4)


def test_nearest_and_trilinear_vs_torch():
    x = _data((1, 2, 5, 6, 7), seed=15)
    m = _resize(x, sizes=[1, 2, 10, 3, 9], mode="nearest", coordinate_transformation_mode="asymmetric",
                nearest_mode="floor")
    want = F.interpolate(torch.from_numpy(x), size=(10, 3, 9), mode="nearest").numpy()
    np.testing.assert_array_equal(_engine(m, {"x": x}), want)
    m = _resize(x, sizes=[1, 2, 10, 3, 9], mode="linear")
    want = F.interpolate(torch.from_numpy(x), size=(10, 3, 9), mode="trilinear").numpy()
    np.testing.assert_allclose(_engine(m, {"x": x}), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode,tmode,a", [("linear", "bilinear", -0.75), ("cubic", "bicubic", -0.5)])
def test_antialias_vs_torch(mode, tmode, a):
    """torch (like PIL) drops the taps outside the image: ONNX's exclude_outside=1."""
    x = _data((1, 3, 23, 17), seed=16)
    m = _resize(x, sizes=[1, 3, 7, 6], mode=mode, antialias=1, exclude_outside=1, cubic_coeff_a=a)
    want = F.interpolate(torch.from_numpy(x), size=(7, 6), mode=tmode, antialias=True).numpy()
    np.testing.assert_allclose(_engine(m, {"x": x}), want, rtol=1e-4, atol=1e-4)


# -- older forms: Upsample, Resize-10/11 ----------------------------------------------------------

def test_upsample_opsets_vs_ort():
    x = _data((1, 2, 3, 4), seed=17)
    scales = np.array([1, 1, 2, 3], np.float32)
    m9 = _model("Upsample", {"x": x}, [("scales", scales)], {"mode": "nearest"}, opset=9)
    m7 = _model("Upsample", {"x": x}, [], {"mode": "linear", "scales": [1.0, 1.0, 2.0, 3.0]}, opset=7)
    for m in (m9, m7):
        np.testing.assert_allclose(_engine(m, {"x": x}), _ort(m, {"x": x}), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scales", [[1, 1, 0.6, 0.6], [1, 1, 2.0, 0.5], [1, 1, 1.5, 3.0]])
def test_resize_opset10_vs_ort(scales):
    x = _data((1, 2, 5, 7), seed=18)
    for mode in ("nearest", "linear"):
        m = _model("Resize", {"x": x}, [("scales", np.array(scales, np.float32))], {"mode": mode}, opset=10)
        np.testing.assert_allclose(_engine(m, {"x": x}), _ort(m, {"x": x}), rtol=1e-5, atol=1e-6)


def test_resize_opset11_empty_scales_with_sizes_vs_ort():
    x = _data((1, 1, 4, 6), seed=19)
    m = _model("Resize", {"x": x}, [("roi", np.zeros(0, np.float32)), ("scales", np.zeros(0, np.float32)),
                                    ("sizes", np.array([1, 1, 7, 3], np.int64))], {"mode": "linear"}, opset=11)
    np.testing.assert_allclose(_engine(m, {"x": x}, optimize=False), _ort(m, {"x": x}), rtol=1e-5, atol=1e-6)


# -- bad input ---------------------------------------------------------------------------------------

def test_bad_resize_input():
    x = _data((1, 1, 4, 4))
    # scales fed as a graph input: the model is planned per value of it (not refused)
    m = _model("Resize", {"x": x, "s": np.ones(4, np.float32)}, [], {})
    m.graph.node[0].input[:] = ["x", "", "s"]
    for scale in (1.0, 2.0):
        s_in = np.array([1, 1, scale, scale], np.float32)
        np.testing.assert_array_equal(_engine(m, {"x": x, "s": s_in}), np.kron(x, np.ones((1, 1, int(scale), int(scale)))))
    cases = [
        (dict(scales=[1, 1, 2], mode="linear"), engine.ShapeError, "3 values for 4 axes"),
        (dict(scales=[1, 1, -2, 2]), engine.ShapeError, "positive"),
        (dict(scales=[1, 1, 2, 2], sizes=[1, 1, 8, 8]), engine.ShapeError, "exactly one"),
        (dict(sizes=[3, 3], axes=[2, 2]), engine.ShapeError, "repeated axis"),
        (dict(sizes=[3, 3], axes=[2, 4]), engine.ShapeError, "out of range"),
        (dict(scales=[1, 1, 2, 2], mode="bicubic"), engine.GraphError, "attribute 'mode'"),
        (dict(scales=[1, 1, 2, 2], antialias=1), engine.GraphError, "antialias"),
        (dict(scales=[1, 1, 2, 2], coordinate_transformation_mode="tf_crop_and_resize",
              roi=np.zeros(3, np.float32)), engine.ShapeError, "roi needs 8"),
    ]
    for kw, err, msg in cases:
        with pytest.raises(err, match=msg):
            _engine(_resize(x, **kw), {"x": x})
    b = np.zeros((1, 1, 2, 2), bool)
    with pytest.raises(engine.DTypeError, match="numeric"):
        _engine(_resize(b, [1, 1, 2, 2], mode="linear"), {"x": b})


# -- Einsum ---------------------------------------------------------------------------------------------

EQUATIONS = [
    ("ij->ji", [(3, 4)]), ("ij->i", [(3, 4)]), ("ij->j", [(5, 1)]), ("ij", [(3, 4)]), ("ii->i", [(5, 5)]),
    ("ii", [(4, 4)]), ("...ii->...i", [(3, 5, 5)]), ("i,i", [(5,), (5,)]), ("i,j->ij", [(3,), (4,)]),
    ("bij,bjk->bik", [(5, 2, 3), (5, 3, 4)]), ("ij,jk", [(2, 3), (3, 7)]), ("ij,kj->ik", [(4, 3), (5, 3)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]), ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
    ("abc,cd->", [(2, 3, 4), (4, 5)]), ("ijk,ikl->jl", [(3, 2, 4), (3, 4, 5)]), ("iij,jk->ik", [(3, 3, 4), (4, 2)]),
    ("ij,jk->ik", [(2, 1), (3, 4)]), ("a b c , c d -> d a", [(2, 3, 4), (4, 3)]), ("Ab,bA->A", [(3, 4), (4, 3)]),
    ("ij,ij->ij", [(3, 4), (3, 4)]), ("bhqd,bhkd->bhqk", [(2, 3, 5, 8), (2, 3, 7, 8)]), ("...", [(2, 3)]),
    ("i...->...", [(3, 2, 2)]), ("ij,jk->ik", [(0, 3), (3, 4)]), ("ij,jk->ik", [(2, 0), (0, 4)]),
]


@pytest.mark.parametrize("eq,shapes", EQUATIONS, ids=[e for e, _ in EQUATIONS])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_einsum_vs_numpy(eq, shapes, dtype):
    xs = {f"x{i}": _data(s, dtype, seed=i) for i, s in enumerate(shapes)}
    m = _model("Einsum", xs, [], {"equation": eq}, opset=12)
    want = np.einsum(eq.replace(" ", ""), *[x.astype(np.float64) for x in xs.values()])
    got = _engine(m, xs)
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float16", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                                   "uint64"])
def test_einsum_every_type(dtype):
    for eq, shapes in (("bij,bjk->bik", [(3, 2, 5), (3, 5, 4)]), ("ii->", [(6, 6)]), ("ijk->kj", [(3, 4, 5)]),
                       ("i,i", [(300,), (300,)])):
        xs = {f"x{i}": _data(s, dtype, seed=i) for i, s in enumerate(shapes)}
        m = _model("Einsum", xs, [], {"equation": eq}, opset=12)
        got = _engine(m, xs)
        if dtype == "float16":
            want = np.einsum(eq, *[x.astype(np.float32) for x in xs.values()]).astype(np.float16)
            np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=0.5)
        else:  # integers wrap like numpy's
            np.testing.assert_array_equal(got, np.einsum(eq, *xs.values()))


def test_einsum_every_isa(isa):
    for eq, shapes, dtype in (("bij,bjk->bik", [(3, 9, 37), (3, 37, 21)], "float64"), ("ij->i", [(7, 300)], "float32"),
                              ("ij->j", [(300, 7)], "int32"), ("ijk->", [(5, 6, 7)], "int8")):
        xs = {f"x{i}": _data(s, dtype, seed=i) for i, s in enumerate(shapes)}
        got = _engine(_model("Einsum", xs, [], {"equation": eq}, opset=12), xs)
        if np.dtype(dtype).kind == "f":
            np.testing.assert_allclose(got, np.einsum(eq, *[x.astype(np.float64) for x in xs.values()]), rtol=1e-5)
        else:
            np.testing.assert_array_equal(got, np.einsum(eq, *xs.values()))


def test_einsum_large_threaded(threads):
    xs = {"a": _data((4, 70, 90), "float64", 1), "b": _data((4, 90, 60), "float64", 2), "c": _data((300, 200), seed=3)}
    m = _model("Einsum", {"a": xs["a"], "b": xs["b"]}, [], {"equation": "bij,bjk->bki"}, opset=12)
    np.testing.assert_allclose(_engine(m, {"a": xs["a"], "b": xs["b"]}), np.einsum("bij,bjk->bki", xs["a"], xs["b"]),
                               rtol=1e-10)
    for eq in ("ij->i", "ij->j", "ij->"):
        m = _model("Einsum", {"c": xs["c"]}, [], {"equation": eq}, opset=12)
        np.testing.assert_allclose(_engine(m, {"c": xs["c"]}), np.einsum(eq, xs["c"].astype(np.float64)), rtol=1e-4)


def test_bad_einsum_input():
    x = _data((2, 3))
    cases = [("ij,jk->ik", engine.ShapeError, "2 terms for 1 inputs"), ("ijk->i", engine.ShapeError, "rank 2"),
             ("ij->ik", engine.ShapeError, "label 'k' is in no input"), ("ij->ii", engine.ShapeError, "repeats"),
             ("i1->i", engine.GraphError, "bad term"), ("ii->i", engine.ShapeError, "sizes 2 and 3")]
    for eq, err, msg in cases:
        with pytest.raises(err, match=msg):
            _engine(_model("Einsum", {"x": x}, [], {"equation": eq}, opset=12), {"x": x})
    b = _data((4, 5))
    with pytest.raises(engine.ShapeError, match="sizes 3 and 4"):
        _engine(_model("Einsum", {"x": x, "b": b}, [], {"equation": "ij,jk->ik"}, opset=12), {"x": x, "b": b})


# -- ONNX's own Resize cases, parameters as constants --------------------------------------------

def test_onnx_resize_cases_with_constant_parameters():
    """ONNX's node cases feed roi/scales/sizes as graph inputs, which this engine needs known
    when planning (tests/test_onnx_node_suite.py runs them as they are); here they are
    weights, so every case checks the kernels against the ONNX reference outputs."""
    from conformance import onnx_cases as oc

    cases = [c for c in oc.node_cases() if c.op in ("Resize", "Upsample") and c.in_scope]
    assert len(cases) >= 38
    for case in cases:
        model = onnx.load(str(case.path / "model.onnx"))
        for feeds, want in oc.data_sets(case):
            params = list(model.graph.input[1:])
            for v in params:
                model.graph.initializer.append(numpy_helper.from_array(feeds[v.name], v.name))
                model.graph.input.remove(v)
            x = model.graph.input[0].name
            got = engine.load(model.SerializeToString()).run(None, {x: feeds[x]})
            assert oc.compare(got, want, case.rtol, case.atol) == "", case.name
            break
