"""The movement family (shapes, copies between views, padding, gather/scatter) on random
shapes and every element type, against onnx's reference implementation (and numpy). Each op
runs twice: with its data as a graph input (native kernels) and with every input known when
planning (the numpy evaluation); both must match the reference exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import engine
from engine import _C, dtypes
from engine.graph import Graph, Node, Value

TYPES = ["float32", "float64", "float16", "int8", "uint8", "int16", "uint16", "int32", "int64", "uint32",
         "uint64", "bool"]
BIG = 1 << 17  # elements: enough bytes for the kernels to split work over the pool


def data(shape, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    dt = dtypes.to_numpy(dtype)
    if dt.kind == "f":
        return rng.uniform(-8, 8, shape).astype(dt)
    lo = 0 if dt.kind == "u" else -100
    return rng.integers(lo, 100, shape).astype(dt)


def ints(*v, dtype=np.int64):
    return np.array(v, dtype)


def engine_run(op, inputs, attrs=None, known=(), n_out=1, fold=False):
    """One node: input i is a weight when i is in `known` (or fold), else a graph input."""
    names, graph_inputs, weights, feeds = [], [], {}, {}
    for i, a in enumerate(inputs):
        if a is None:
            names.append("")
            continue
        name = f"in{i}"
        names.append(name)
        # 0-d graph inputs reach plans as shape (1,) (np.ascontiguousarray in model.py; reported),
        # so scalars are given as weights here.
        if fold or i in known or np.ndim(a) == 0:
            weights[name] = a
        else:
            graph_inputs.append(Value(name, a.shape, dtypes.from_numpy(a.dtype)))
            feeds[name] = a
    if not graph_inputs:  # a graph needs an input: an unused one
        graph_inputs.append(Value("unused", (1,)))
        feeds["unused"] = np.zeros(1, np.float32)
    outs = [f"out{k}" for k in range(n_out)]
    graph = Graph(graph_inputs, [Value(o, None) for o in outs], [Node(op, names, outs, dict(attrs or {}))], weights)
    got = engine.Model(graph).run(feeds)
    return [got[o] for o in outs]


def _scalars_fold() -> bool:
    """Whether the planner keeps 0-d values computed ahead as 0-d (passes/shapes.py's _as_type
    made them shape (1,) with np.ascontiguousarray when this was written; reported)."""
    try:
        return engine_run("Size", [np.zeros(2, np.float32)])[0].shape == ()
    except engine.ShapeError:
        return False


SCALARS_FOLD = _scalars_fold()
needs_scalar_folding = pytest.mark.skipif(not SCALARS_FOLD, reason="the planner cannot hold 0-d values yet")


def reference(op, inputs, attrs=None, n_out=1):
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(inputs)]
    node = helper.make_node(op, names, [f"out{k}" for k in range(n_out)], **(attrs or {}))
    vi = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
          for n, a in zip(names, inputs) if a is not None]
    outs = [helper.make_tensor_value_info(f"out{k}", onnx.TensorProto.UNDEFINED, None) for k in range(n_out)]
    model = helper.make_model(helper.make_graph([node], "g", vi, outs))
    return ReferenceEvaluator(model).run(None, {n: a for n, a in zip(names, inputs) if a is not None})


def check(op, inputs, attrs=None, known=(), n_out=1, want=None):
    """Kernel path and plan-time path against the reference (or `want`), bit for bit."""
    want = reference(op, inputs, attrs, n_out) if want is None else want
    scalar_out = any(np.ndim(w) == 0 for w in want)
    for fold in (False, True) if SCALARS_FOLD or not scalar_out else (False,):
        got = engine_run(op, inputs, attrs, known, n_out, fold)
        for g, w in zip(got, want):
            w = np.asarray(w)
            assert g.dtype == w.dtype and g.shape == w.shape, (op, fold, g.dtype, w.dtype, g.shape, w.shape)
            np.testing.assert_array_equal(g, w, err_msg=f"{op} {attrs} fold={fold}")
    return got


# -- shapes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,attrs", [((2, 3, 4), {}), ((2, 3, 4), {"start": 1}), ((2, 3, 4), {"end": -1}),
                                         ((5,), {"start": -9, "end": 9}), ((2, 3), {"start": 2, "end": 1}),
                                         ((), {})])
@needs_scalar_folding
def test_shape_and_size(shape, attrs):
    x = data(shape)
    check("Shape", [x], attrs)
    assert engine_run("Size", [x])[0] == x.size


@pytest.mark.parametrize("shape,target,allowzero", [
    ((2, 3, 4), (4, -1), 0), ((2, 3, 4), (0, 0, -1), 0), ((2, 0, 4), (0, -1), 0), ((2, 0, 4), (4, 0), 1),
    ((6,), (1, 2, 1, 3), 0), ((1,), (), 0), ((3, 4), (-1,), 0)])
@pytest.mark.parametrize("dtype", ["float16", "int64", "bool"])
def test_reshape(shape, target, allowzero, dtype):
    check("Reshape", [data(shape, dtype), ints(*target)], {"allowzero": allowzero}, known=(1,))


def test_reshape_attribute_form_of_engine_nn():
    x = data((3, 2, 4))
    got = engine_run("Reshape", [x], {"shape": [0, -1, 2]})[0]
    np.testing.assert_array_equal(got, x.reshape(3, -1, 2))


@pytest.mark.parametrize("shape,axes", [((1, 3, 1, 2), (0, -2)), ((1, 3, 1, 2), None), ((1,), (0,)),
                                        ((4, 1, 0), (1,))])
def test_squeeze(shape, axes):
    axes_in = None if axes is None else ints(*axes)
    check("Squeeze", [data(shape, "int8"), axes_in], known=(1,))


@pytest.mark.parametrize("shape,axes", [((3, 2), (0, -1)), ((), (0,)), ((3, 2), (3, 1, 0)), ((0, 2), (-2,))])
def test_unsqueeze(shape, axes):
    check("Unsqueeze", [data(shape, "uint16"), ints(*axes)], known=(1,))


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -4])
def test_flatten_and_identity(axis):
    x = data((2, 3, 0, 5) if axis == 2 else (2, 3, 4, 5), "float64")
    check("Flatten", [x], {"axis": axis})
    check("Identity", [x])


# -- copies between views --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", TYPES)
def test_transpose_every_type(dtype):
    x = data((3, 1, 5, 2), dtype)
    check("Transpose", [x], {"perm": [2, 0, 3, 1]})
    check("Transpose", [x])


@pytest.mark.parametrize("seed", range(6))
def test_transpose_random(seed):
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 7))
    shape = tuple(int(d) for d in rng.integers(0 if seed == 3 else 1, 6, rank))
    check("Transpose", [data(shape, "int32", seed)], {"perm": [int(p) for p in rng.permutation(rank)]})


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32", "int64"])
def test_transpose_tiled(dtype, threads):
    # transposes are copied in tiles (edges of every size), big ones over the pool
    rng = np.random.default_rng(7)
    for shape, perm in [((37, 70), (1, 0)), ((3, 5, 33, 2), (0, 2, 3, 1)), ((2, 3, 4, 5, 6), (4, 2, 0, 3, 1)),
                        ((300, 7, 129), (2, 0, 1)), ((64, 2, 2, 9, 40), (0, 3, 1, 4, 2))]:
        x = data(shape, dtype, seed=int(rng.integers(100)))
        check("Transpose", [x], {"perm": list(perm)}, want=[np.transpose(x, perm)])


def test_depth_to_space_big(threads):
    x = data((2, 64, 40, 56), "float32")
    check("DepthToSpace", [x], {"blocksize": 4})


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "uint8"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(dtype, axis):
    parts = []
    for i, size in enumerate((3, 0, 1)):
        s = [2, 3, 4]
        s[axis] = size
        parts.append(data(tuple(s), dtype, seed=i))
    check("Concat", parts, {"axis": axis})


@pytest.mark.parametrize("split,attrs,dim", [((2, 0, 3), {}, 5), (None, {"num_outputs": 3}, 7),
                                             (None, {"num_outputs": 2}, 4), ((1, 1), {}, 2)])
@pytest.mark.parametrize("axis", [0, -1])
def test_split(split, attrs, dim, axis):
    shape = [dim, 3] if axis == 0 else [3, dim]
    x = data(tuple(shape), "float16")
    n = len(split) if split is not None else attrs["num_outputs"]
    inputs = [x, None if split is None else ints(*split)]
    check("Split", inputs, {**attrs, "axis": axis}, known=(1,), n_out=n)


SLICES = [  # starts, ends, axes, steps
    ((1, 0), (2, 3), (0, 1), (1, 2)), ((0, 1), (-1, 1000), None, None), ((-1,), (-100,), (1,), (-1,)),
    ((20, -30), (-20, 40), (0, -1), (-2, 3)), ((5,), (2,), (2,), (1,)), ((3,), (9223372036854775807,), (2,), (1,)),
    ((4, 1), (-9223372036854775808, -1), (-1, 0), (-3, 1)), ((0,), (1,), (1,), (5,))]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
@pytest.mark.parametrize("dtype", ["float32", "uint64", "bool"])
def test_slice(starts, ends, axes, steps, dtype):
    x = data((4, 5, 6), dtype)
    inputs = [x, ints(*starts), ints(*ends), None if axes is None else ints(*axes),
              None if steps is None else ints(*steps)]
    if axes is None and steps is not None:
        inputs[3] = ints(*range(len(starts)))
    check("Slice", inputs, known=(1, 2, 3, 4))


def test_slice_int32_params_and_big(threads):
    x = data((257, 515), "float32")
    check("Slice", [x, ints(255, 3, dtype=np.int32), ints(-300, 511, dtype=np.int32), ints(0, 1, dtype=np.int32),
                    ints(-1, 2, dtype=np.int32)], known=(1, 2, 3, 4))


@pytest.mark.parametrize("shape,target", [((3, 1), (2, 1, 6)), ((1,), (4, 0)), ((2, 3), (3,)),
                                          ((4, 1, 2), (1, 5, 1)), ((), (2, 2))])
@pytest.mark.parametrize("dtype", ["int16", "float64", "bool"])
def test_expand(shape, target, dtype):
    check("Expand", [data(shape, dtype), ints(*target)], known=(1,))


@pytest.mark.parametrize("shape,reps", [((2, 3), (2, 2)), ((3,), (0,)), ((1, 2, 3), (3, 1, 2)),
                                        ((2, 1, 3, 1, 2, 1, 2, 1, 2), (2, 2, 1, 2, 1, 2, 1, 2, 2))])
@pytest.mark.parametrize("dtype", ["uint8", "float32", "int64"])
def test_tile(shape, reps, dtype):
    check("Tile", [data(shape, dtype), ints(*reps)], known=(1,))


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("dtype", ["float32", "int8", "float16"])
def test_depth_to_space_and_back(mode, dtype):
    x = data((2, 12, 3, 5), dtype)
    y = check("DepthToSpace", [x], {"blocksize": 2, "mode": mode})[0]
    back = check("SpaceToDepth", [y], {"blocksize": 2, "mode": mode},
                 want=[x] if mode == "DCR" else None)[0]
    np.testing.assert_array_equal(back, x)


# -- padding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [(1, 2, 0, 3, 1, 2), (0, 0, 0, 0, 0, 0), (2, 0, 3, 1, 4, 0), (3, 5, 2, 4, 6, 4)])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bool"])
def test_pad(mode, pads, dtype):
    x = data((3, 4, 5), dtype)
    if mode == "reflect" and max(pads) >= 3:
        pads = tuple(min(p, 2) for p in pads)
    want = [np.pad(x, list(zip(pads[:3], pads[3:])), mode=mode)]
    check("Pad", [x, ints(*pads)], {"mode": mode}, known=(1,), want=want)


def test_pad_constant_value_axes_and_cropping():
    x = data((4, 5, 6), "int32")
    value = np.array(7, np.int32)
    want = np.pad(x, [(0, 0), (2, 0), (0, 0)], constant_values=7)[:, :, 1:-2]
    check("Pad", [x, ints(2, -1, 0, -2), value, ints(1, -1)], known=(1, 3), want=[want])
    # the value may come from data: read by the kernel when it runs
    got = engine_run("Pad", [x, ints(2, -1, 0, -2), value, ints(1, -1)], known=(1, 3))[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_big_and_empty(mode, threads):
    x = data((3, 130, 257), "float32")
    pads = (0, 2, 1, 1, 3, 2)
    want = np.pad(x, list(zip(pads[:3], pads[3:])), mode=mode)
    check("Pad", [x, ints(*pads)], {"mode": mode}, known=(1,), want=[want])
    e = data((2, 0, 3), "float32")
    if mode == "constant":
        check("Pad", [e, ints(0, 1, 0, 0, 2, 0)], known=(1,))


# -- generators ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3), (0,), pytest.param((), marks=needs_scalar_folding), (70000,)])
@pytest.mark.parametrize("value", [None, np.array([2.5], np.float16), np.array([7], np.int64),
                                   np.array([True])])
def test_constant_of_shape(shape, value):
    attrs = {} if value is None else {"value": value}
    want = np.full(shape, 0 if value is None else value[0], np.float32 if value is None else value.dtype)
    check("ConstantOfShape", [ints(*shape)], attrs, known=(0,), want=[want])


@pytest.mark.parametrize("shape,k", [((3, 4), 0), ((4, 3), 1), ((5, 5), -2), ((2, 3), 5), ((300, 400), -3)])
@pytest.mark.parametrize("dtype", ["float32", "int32", "bool"])
def test_eyelike(shape, k, dtype):
    x = data(shape, "float32")
    got = check("EyeLike", [x], {"k": k, "dtype": dtypes.code(dtype)},
                want=[np.eye(*shape, k=k, dtype=dtypes.to_numpy(dtype))])
    assert got[0].dtype == dtypes.to_numpy(dtype)


@pytest.mark.parametrize("start,limit,delta,dtype", [
    (3, 9, 3, "int32"), (10, 4, -2, "int64"), (1, 1, 1, "int16"), (0.5, 7.3, 0.7, "float32"),
    (-1.0, 2.0, 0.25, "float64"), (1.0, 5.0, 0.5, "float16"), (0, 100000, 1, "int32"),
    (0.0, 7000.0, 0.1, "float32")])
def test_range(start, limit, delta, dtype):
    dt = dtypes.to_numpy(dtype)
    ins = [np.array(v, dt) for v in (start, limit, delta)]
    n = len(np.arange(float(start), float(limit), float(delta)))
    compute = np.float32 if dtype == "float16" else np.float64
    want = np.array(start, compute) + np.arange(n, dtype=compute) * np.array(delta, compute)
    want = (start + np.arange(n) * delta if dt.kind == "i" else want).astype(dt)
    for fold in (False, True):
        got = engine_run("Range", ins, known=(0, 1, 2), fold=fold)[0]
        assert got.dtype == dt and got.shape == (n,)
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-6)


def test_range_float16_kernel_every_isa(isa):
    ins = [np.array(v, np.float16) for v in (-3.0, 77.0, 0.0009765625)]
    got = engine_run("Range", ins, known=(0, 1, 2))[0]  # 81920 elements: the kernel, not numpy
    want = (np.float32(-3) + np.arange(81920, dtype=np.float32) * np.float32(ins[2])).astype(np.float16)
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-3)


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("shape,k", [((4, 5), 0), ((2, 3, 4), -1), ((3, 6), 2), ((5, 2), -7), ((1, 4), 9),
                                     ((3, 300, 200), 1)])
@pytest.mark.parametrize("dtype", ["int8", "float64"])
def test_trilu(upper, shape, k, dtype):
    x = data(shape, dtype)
    want = reference("Trilu", [x, np.array(k, np.int64)], {"upper": upper})
    check("Trilu", [x, np.array([k], np.int64)], {"upper": upper}, want=want)  # k from data: read when run
    check("Trilu", [x, np.array(k, np.int64)], {"upper": upper}, known=(1,))


def test_trilu_isa(isa):
    x = data((4, 4), "float16")
    check("Trilu", [x], {"upper": 0})


# -- gather ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "int64", "bool"])
@pytest.mark.parametrize("shape,idx,axis", [((5, 4), [[0, -1], [3, 2]], 0), ((3, 5, 2), [4, -5, 0], 1),
                                            ((3, 5), 2, -1), ((4, 3), np.zeros((2, 0), int), 0),
                                            ((0, 3), [1, 2], 1)])
@pytest.mark.parametrize("index_type", [np.int32, np.int64])
def test_gather(dtype, shape, idx, axis, index_type):
    check("Gather", [data(shape, dtype), np.array(idx, index_type)], {"axis": axis})


def test_gather_big(threads):
    table = data((5000, 64), "float32")
    idx = np.random.default_rng(0).integers(-5000, 5000, (40, 50))
    check("Gather", [table, idx], known=(0,))
    columns = np.random.default_rng(1).integers(-500, 500, 300).astype(np.int32)  # single elements
    check("Gather", [data((600, 500), "float16"), columns], {"axis": 1})


@pytest.mark.parametrize("dtype", ["float32", "int16", "bool", "float64"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("index_type", [np.int32, np.int64])
def test_gather_elements(dtype, axis, index_type):
    x = data((4, 5, 3), dtype)
    shape = list(x.shape)
    shape[axis] = 6
    idx = np.random.default_rng(1).integers(-x.shape[axis], x.shape[axis], shape).astype(index_type)
    check("GatherElements", [x, idx], {"axis": axis}, want=[_torch_gather(x, idx, axis)])


def _torch_gather(x, idx, axis):
    """torch.gather's semantics (the onnx reference trips on negative axes and big inputs):
    take_along_axis on the data cropped to the indices' extent outside `axis`."""
    axis %= x.ndim
    crop = tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(idx.shape))
    return np.take_along_axis(x[crop], np.where(idx < 0, idx + x.shape[axis], idx), axis)


def test_gather_elements_indices_smaller_than_data():
    x = data((4, 5, 3), "float32")
    idx = np.random.default_rng(1).integers(0, 5, (3, 7, 2))
    check("GatherElements", [x, idx], {"axis": 1}, want=[_torch_gather(x, idx, 1)])


def test_gather_elements_big(threads):
    x = data((300, 600), "float32")
    idx = np.random.default_rng(2).integers(-300, 300, (300, 600))
    check("GatherElements", [x, idx], {"axis": 0}, want=[_torch_gather(x, idx, 0)])


@pytest.mark.parametrize("shape,idx,batch_dims", [
    ((2, 2), [[0, 0], [1, 1]], 0), ((2, 2, 2), [[0, 1], [1, 0]], 0), ((2, 2, 2), [[[0, 1]], [[1, 0]]], 0),
    ((2, 2, 2), [[1], [0]], 1), ((3, 4, 5), [[[2, -1], [0, 3]], [[1, 1], [-3, 0]], [[0, 0], [2, 2]]], 1),
    ((2, 3, 4, 2), [[[1], [0], [3]], [[2], [2], [0]]], 2), ((4, 3), np.zeros((0, 1), int), 0)])
@pytest.mark.parametrize("dtype", ["float32", "int8", "float16"])
def test_gather_nd(shape, idx, batch_dims, dtype):
    check("GatherND", [data(shape, dtype), np.array(idx, np.int64)], {"batch_dims": batch_dims})


# -- scatter ---------------------------------------------------------------------------------

REDUCTIONS = ["none", "add", "mul", "max", "min"]


def _unique_rows(rng, n, size):
    return rng.permutation(size)[:n]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", ["float32", "int32", "uint8", "float64"])
@pytest.mark.parametrize("axis", [0, -1])
def test_scatter_elements(reduction, dtype, axis):
    rng = np.random.default_rng(3)
    x = data((5, 4, 3), dtype)
    shape, ax = [2, 3, 2], axis % 3
    if reduction == "none":  # unique targets: ONNX leaves the order of duplicates undefined
        perm = np.argsort(rng.random(tuple(x.shape[d] if d == ax else shape[d] for d in range(3))), axis=ax)
        idx = np.take(perm, range(shape[ax]), axis=ax) - (x.shape[ax] if axis < 0 else 0)
    else:
        idx = rng.integers(-x.shape[axis], x.shape[axis], shape)
    upd = data(tuple(shape), dtype, seed=4)
    if dtype in ("float16", "uint8") and reduction == "mul":
        upd = (upd % 3).astype(upd.dtype)
    check("ScatterElements", [x, idx, upd], {"axis": axis, "reduction": reduction})


@pytest.mark.parametrize("reduction", REDUCTIONS[1:])
def test_scatter_reductions_float16_every_isa(reduction, isa):
    # float16 is reduced in float32 and rounded once: F16C on avx2/avx512, software otherwise
    x = data((6, 5), "float16")
    idx = np.random.default_rng(8).integers(-6, 6, (9, 5))
    upd = data((9, 5), "float16", seed=9)
    check("ScatterElements", [x, idx, upd], {"reduction": reduction})
    check("ScatterND", [x, idx[:, :1], np.concatenate([upd] * 1)[:, :5]], {"reduction": reduction})


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", ["float32", "int16", "bool", "uint64"])
@pytest.mark.filterwarnings("ignore:overflow")
def test_scatter_nd(reduction, dtype):
    if dtype == "bool" and reduction != "none":
        pytest.skip("the reference cannot reduce bools")
    rng = np.random.default_rng(5)
    x = data((4, 3, 5), dtype)
    rows = rng.permutation(4)[:3] if reduction == "none" else rng.integers(-4, 4, 3)
    idx = rows.reshape(3, 1).astype(np.int64)
    check("ScatterND", [x, idx, data((3, 3, 5), dtype, seed=6)], {"reduction": reduction})
    # element tuples: depth = rank
    idx = np.array([[0, 1, 2], [3, -1, 4], [1, 0, 0]] + ([] if reduction == "none" else [[3, 2, -1]]))
    check("ScatterND", [x, idx, data((len(idx),), dtype, seed=7)], {"reduction": reduction})


def test_scatter_bool_reductions():
    x = np.array([True, False, False, True])
    idx = np.array([[0], [1], [1], [3]])
    upd = np.array([False, True, False, False])
    got_add = engine_run("ScatterND", [x, idx, upd], {"reduction": "add"})[0]
    got_mul = engine_run("ScatterND", [x, idx, upd], {"reduction": "mul"})[0]
    np.testing.assert_array_equal(got_add, [True, True, False, True])
    np.testing.assert_array_equal(got_mul, [False, False, False, False])


def test_scatter_big_in_place():
    # updates into a big intermediate (the Expand's output dies at the scatter: in place)
    x = data((1,), "float32")
    idx = np.array([[5], [70000], [-1]])
    graph = Graph([Value("x", (1,)), Value("u", (3,))], [Value("y", None)],
                  [Node("Expand", ["x", "shape"], ["big"]), Node("ScatterND", ["big", "idx", "u"], ["y"])],
                  {"shape": ints(BIG), "idx": idx})
    u = data((3,), "float32", seed=1)
    y = engine.Model(graph).run({"x": x, "u": u})["y"]
    want = np.full(BIG, x[0], np.float32)
    want[[5, 70000, -1]] = u
    np.testing.assert_array_equal(y, want)


# -- OneHot, Dropout -------------------------------------------------------------------------

@pytest.mark.parametrize("index_type", ["int64", "int32", "float32", "uint8", "float16"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_onehot(index_type, axis):
    idx = np.array([[1, 9, -2], [0, -4, 3]]).astype(dtypes.to_numpy(index_type))
    if index_type.startswith("uint"):
        idx = np.abs(idx.astype(np.int64)).astype(dtypes.to_numpy(index_type))
    values = np.array([2, 5], np.int32)
    check("OneHot", [idx, np.array(4, np.int64), values], {"axis": axis}, known=(1,))
    check("OneHot", [idx, np.array(3.0, np.float32), np.array([0.5, -1.5], np.float16)], {"axis": axis},
          known=(1,))


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_dropout_inference(dtype):
    x = data((3, 4), dtype)
    want = [x, np.ones(x.shape, bool)]
    check("Dropout", [x], n_out=2, want=want)
    check("Dropout", [x, np.array(0.3, np.float32), np.array(False)], n_out=2, want=want)
    check("Dropout", [x, np.array(0.0, np.float16), np.array(True)], n_out=2, want=want)
    check("Dropout", [x, np.array(0.3, np.float64)], want=want[:1])


def test_dropout_with_an_unread_mask_is_removed():
    # SqueezeNet's Dropout names its mask output but nothing reads it: the node goes, so it
    # does not split the NHWC conv trunk with a transpose pair.
    from engine.graph import Graph, Node, Value
    from engine.passes import simplify

    g = Graph([Value("x", (2, 3))], [Value("y", (2, 3))],
              [Node("Dropout", ["x"], ["d", "mask"]), Node("Relu", ["d"], ["y"])])
    assert [n.op for n in simplify(g).nodes] == ["Relu"]
    kept = g.replace(outputs=g.outputs + [Value("mask", (2, 3), "bool")])
    assert [n.op for n in simplify(kept).nodes] == ["Dropout", "Relu"]


# -- bad input: a clear EngineError, no crash ------------------------------------------------

@pytest.mark.parametrize("op,inputs,attrs", [
    ("Gather", [data((3, 4)), np.array([0, 3], np.int64)], {}),
    ("Gather", [data((3, 4)), np.array([-4], np.int32)], {}),
    ("GatherElements", [data((3, 4)), np.array([[0, 5, 1]])], {"axis": 1}),
    ("GatherND", [data((3, 4)), np.array([[1, 4]])], {}),
    ("ScatterElements", [data((3, 4)), np.array([[3]]), data((1, 1))], {}),
    ("ScatterND", [data((3, 4)), np.array([[-4]]), data((1, 4))], {"reduction": "add"})])
def test_out_of_range_indices(op, inputs, attrs):
    graph_inputs = [Value(f"in{i}", a.shape, dtypes.from_numpy(a.dtype)) for i, a in enumerate(inputs)]
    names = [v.name for v in graph_inputs]
    model = engine.Model(Graph(graph_inputs, [Value("y", None)], [Node(op, names, ["y"], attrs)]))
    feeds = dict(zip(names, inputs))
    with pytest.raises(engine.KernelError, match=f"{op}: index -?\\d+ is out of range"):
        model.run(feeds)
    ok = dict(feeds, in1=np.zeros_like(inputs[1]))
    model.run(ok)  # the model still works
    with pytest.raises(engine.ShapeError, match="out of range"):  # known indices: at plan time
        engine_run(op, inputs, attrs, fold=True)


@pytest.mark.parametrize("op,inputs,want", [
    ("Reshape", [data((2, 3)), ints(3, 2)], lambda x, s: x.reshape(3, 2)),
    ("Slice", [data((2, 3)), ints(0), ints(1)], lambda x, s, e: x[:1])])
def test_shape_inputs_from_data(op, inputs, want):
    """A shape that comes from data is refused with a ShapeError naming the value (the planner
    may instead plan for that data: then the result is right)."""
    from engine.ops.axes import ValueNotKnown
    try:
        got = engine_run(op, inputs)[0]
    except ValueNotKnown as e:
        assert "must be known when the model is planned" in str(e) and e.name == "in1"
    else:
        np.testing.assert_array_equal(got, want(*inputs))


@pytest.mark.parametrize("op,inputs,attrs,match", [
    ("Reshape", [data((2, 3)), ints(4, -1)], {}, "cannot reshape"),
    ("Reshape", [data((2, 3)), ints(0, -1, -1)], {}, "bad target shape"),
    ("Reshape", [data((2, 3)), ints(0, -1)], {"allowzero": 1}, "both 0 and -1"),
    ("Transpose", [data((2, 3))], {"perm": [0, 0]}, "not a permutation"),
    ("Squeeze", [data((2, 3)), ints(0)], {}, "cannot squeeze"),
    ("Unsqueeze", [data((2, 3)), ints(1, 1)], {}, "twice"),
    ("Slice", [data((2, 3)), ints(0), ints(1), ints(0), ints(0)], {}, "step"),
    ("Expand", [data((2, 3)), ints(4, 3, 2)], {}, "cannot be expanded"),
    ("Tile", [data((2, 3)), ints(2)], {}, "repeats"),
    ("Split", [data((5, 3)), ints(2, 2)], {}, "adding up"),
    ("Pad", [data((2, 3)), ints(1, 1)], {}, "begin and an end"),
    ("Pad", [data((2, 0)), ints(0, 1, 0, 1)], {"mode": "reflect"}, "empty dim"),
    ("DepthToSpace", [data((1, 3, 2, 2))], {"blocksize": 2}, "multiple"),
    ("Concat", [data((2, 3)), data((3, 2))], {"axis": 0}, "does not match"),
    ("GatherND", [data((2, 3)), ints(0, 1, 0)], {}, "exceed"),
    ("ScatterND", [data((2, 3)), ints(0).reshape(1, 1), data((1, 2))], {}, "updates have shape"),
    ("OneHot", [ints(1), ints(3), data((3,))], {}, "off_value, on_value"),
])
def test_bad_shapes_name_the_node(op, inputs, attrs, match):
    with pytest.raises(engine.ShapeError, match=rf"node '{op}:out0' \({op}\): .*{match}"):
        engine_run(op, inputs, attrs, known=tuple(range(1, len(inputs))))


@pytest.mark.parametrize("op,attrs", [("Pad", {"mode": "mirror"}), ("ScatterND", {"reduction": "sum"}),
                                      ("Concat", {}), ("Trilu", {"upper": 2})])
def test_bad_attributes_fail_at_load(op, attrs):
    n = {"Pad": 2, "ScatterND": 3, "Concat": 1, "Trilu": 1}[op]
    names = [f"x{i}" for i in range(n)]
    graph = Graph([Value(x, (2, 2)) for x in names], [Value("y", None)], [Node(op, names, ["y"], attrs)])
    with pytest.raises(engine.GraphError, match=op):
        engine.Model(graph)


def test_training_dropout_is_refused():
    x = data((2, 3))
    with pytest.raises(engine.KernelError, match="training mode"):  # from data: when the step runs
        engine_run("Dropout", [x, np.array([0.5], np.float32), np.array([True])])
    with pytest.raises(engine.UnsupportedOpError, match="training-mode Dropout"):  # known: when planned
        engine_run("Dropout", [x, np.array(0.5, np.float32), np.array(True)], known=(1, 2))


def test_kernels_registered_for_every_type():
    table = set(_C.kernels())
    for k in ("strided_copy", "fill", "pad", "trilu", "onehot", "range", "dropout", "gather", "gather_elements",
              "gather_nd", "scatter_elements", "scatter_nd"):
        assert (k, "any") in table
