"""The planner and executor: plans per signature, buffer reuse, aliasing, fresh outputs."""

import threading

import numpy as np
import pytest

import engine
from engine.graph import Graph, Node, Value
from engine.passes import fuse_activations
from engine.runtime.arena import ArenaAllocator
from helpers import rand


def chain_graph(n_layers=6, width=64):
    nodes, weights, x = [], {}, "x"
    for i in range(n_layers):
        weights[f"w{i}"] = rand(width, width, seed=i) * 0.2
        nodes.append(Node("Dense", [x, f"w{i}"], [f"h{i}"], {"activation": "tanh"}))
        x = f"h{i}"
    return Graph([Value("x", (None, width))], [Value(x, (None, width))], nodes, weights)


def reference_chain(g, x):
    for i in range(len(g.nodes)):
        x = np.tanh(x @ g.initializers[f"w{i}"])
    return x


def test_buffers_are_reused_by_liveness():
    g = chain_graph()
    m = engine.Model(g)
    x = rand(10, 64)
    np.testing.assert_allclose(m.predict(x), reference_chain(g, x), atol=1e-5)
    plan = m._plan((x.shape,))
    # 5 intermediates of 10x64 floats, but at most two are ever live at once.
    assert plan.arena_bytes <= 2 * 10 * 64 * 4


def test_one_plan_per_signature_and_any_batch():
    g = chain_graph(2, 8)
    m = engine.Model(g)
    for b in (1, 3, 1, 64, 3):
        x = rand(b, 8, seed=b)
        np.testing.assert_allclose(m.predict(x), reference_chain(g, x), atol=1e-5)
    assert m.cached_signatures == [((1, 8),), ((64, 8),), ((3, 8),)]  # LRU order


def test_outputs_are_fresh_arrays():
    m = engine.Model(chain_graph(2, 8))
    x1, x2 = rand(2, 8, seed=1), rand(2, 8, seed=2)
    y1 = m.predict(x1)
    keep = y1.copy()
    y2 = m.predict(x2)
    assert not np.shares_memory(y1, y2)
    np.testing.assert_array_equal(y1, keep)  # the second call did not overwrite the first
    y1[:] = 0
    np.testing.assert_array_equal(m.predict(x2), y2)  # nor did mutating a result matter


def test_outputs_that_alias_other_values_are_copied():
    # Outputs: an input itself, a reshape of an intermediate, and the intermediate twice.
    g = Graph([Value("x", (None, 4))],
              [Value("x", (None, 4)), Value("flat", (None,)), Value("h", (None, 4)),
               Value("h", (None, 4))],
              [Node("Relu", ["x"], ["h"]), Node("Reshape", ["h"], ["flat"], {"shape": [-1]})])
    m = engine.Model(g)
    x = rand(3, 4)
    out = m.run({"x": x})
    np.testing.assert_array_equal(out["x"], x)
    assert not np.shares_memory(out["x"], x)
    np.testing.assert_array_equal(out["flat"], np.maximum(x, 0).ravel())
    np.testing.assert_array_equal(out["h"], np.maximum(x, 0))


def test_in_place_chain_and_output_read_later():
    # h is both a graph output and read by later nodes; t1/t2 can run in place.
    g = Graph([Value("x", (None, 5))], [Value("h", (None, 5)), Value("z", (None, 5))],
              [Node("Exp", ["x"], ["h"]), Node("Neg", ["h"], ["t1"]), Node("Abs", ["t1"], ["t2"]),
               Node("Add", ["t2", "h"], ["z"])])
    m = engine.Model(g)
    x = rand(2, 5)
    out = m.run({"x": x})
    np.testing.assert_allclose(out["h"], np.exp(x), rtol=1e-6)
    np.testing.assert_allclose(out["z"], 2 * np.exp(x), rtol=1e-6)


def test_non_contiguous_and_constant_operands():
    g = Graph([Value("x", (None, 3))], [Value("y", (None, 3))],
              [Node("Mul", ["x", "scale"], ["s"]), Node("Add", ["s", "x"], ["y"])],
              {"scale": np.array([1, 2, 3], np.float32)})
    m = engine.Model(g)
    base = rand(6, 6)
    x = base[::2, 1:4]  # strided view
    assert not x.flags.c_contiguous
    np.testing.assert_allclose(m.predict(x), x * [1, 2, 3] + x, rtol=1e-6)


def test_fuse_activation_pass():
    g = Graph([Value("x", (None, 4))], [Value("y", (None, 3))],
              [Node("Dense", ["x", "w", "b"], ["d"]), Node("LeakyRelu", ["d"], ["y"], {"alpha": 0.3})],
              {"w": rand(4, 3), "b": rand(3, seed=2)})
    fused = fuse_activations(g)
    assert [n.op for n in fused.nodes] == ["Dense"]
    assert fused.nodes[0].attrs["activation"] == "leaky_relu"
    assert fused.nodes[0].outputs == ["y"]
    x = rand(5, 4, seed=3)
    d = x @ g.initializers["w"] + g.initializers["b"]
    np.testing.assert_allclose(engine.Model(g).predict(x), np.where(d > 0, d, 0.3 * d), atol=1e-6)


def test_fusion_skipped_when_intermediate_is_shared():
    g = Graph([Value("x", (None, 4))], [Value("y", (None, 3)), Value("d", (None, 3))],
              [Node("Dense", ["x", "w"], ["d"]), Node("Relu", ["d"], ["y"])], {"w": rand(4, 3)})
    assert len(fuse_activations(g).nodes) == 2
    out = engine.Model(g).run({"x": rand(2, 4)})
    np.testing.assert_array_equal(out["y"], np.maximum(out["d"], 0))


def test_concurrent_predicts_are_consistent():
    g = chain_graph(3, 32)
    m = engine.Model(g)
    xs = [rand(4, 32, seed=s) for s in range(4)]
    want = [reference_chain(g, x) for x in xs]
    errors = []

    def worker(i):
        for _ in range(50):
            if np.abs(m.predict(xs[i]) - want[i]).max() > 1e-5:
                errors.append(i)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_arena_allocator_reuses_and_merges():
    a = ArenaAllocator()
    x, y = a.alloc(100), a.alloc(100)
    a.free(x, 100)
    assert a.alloc(50) == x            # best fit in the freed block
    a.free(y, 100)
    size = a.size
    assert a.alloc(16) < size          # freed space is reused, arena does not grow
    assert a.size == size


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_results_independent_of_thread_count(set_threads, n_threads):
    g = chain_graph(2, 300)
    x = rand(17, 300)
    want = engine.Model(g).predict(x)
    set_threads(n_threads)
    assert engine._C.num_threads() == n_threads
    np.testing.assert_allclose(engine.Model(g).predict(x), want, atol=1e-5)


def _conv_pool_graph(pool_attrs, extra_output=False):
    outs = [Value("y", (None, None, None, 6))] + ([Value("c", (None, None, None, 6))] if extra_output else [])
    return Graph([Value("x", (None, 12, 11, 3))], outs,
                 [Node("Conv2D", ["x", "w", "b"], ["c"], {"activation": "relu"}),
                  Node("MaxPool2D", ["c"], ["y"], pool_attrs)],
                 {"w": rand(3, 3, 3, 6, seed=1), "b": rand(6, seed=2)})


@pytest.mark.parametrize("pool_attrs,extra_output,fused", [
    ({"pool_size": 2}, False, True),
    ({"pool_size": [3, 2], "strides": [3, 2]}, False, True),
    ({"pool_size": 2, "strides": 1}, False, False),                    # overlapping windows
    ({"pool_size": 2, "padding": [1, 1, 1, 1]}, False, False),          # padded
    ({"pool_size": 2}, True, False),                                    # conv output also wanted
])
def test_fuse_conv_maxpool(pool_attrs, extra_output, fused):
    import torch
    import torch.nn.functional as F

    from engine.passes import fuse_conv_maxpool, optimize

    g = _conv_pool_graph(pool_attrs, extra_output)
    assert (len(fuse_conv_maxpool(g).nodes) == 1) == fused
    m = engine.Model(g)
    assert [n.op for n in m.graph.nodes] == ["Conv2D", "MaxPool2D"]  # the graph as built
    assert (len(optimize(g).nodes) == 1) == fused
    x = rand(2, 12, 11, 3)
    k = pool_attrs["pool_size"]
    k = (k, k) if isinstance(k, int) else tuple(k)
    s = pool_attrs.get("strides", k)
    pad = pool_attrs.get("padding", [0, 0, 0, 0])[0]
    conv = F.relu(F.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2),
                           torch.from_numpy(g.initializers["w"]).permute(3, 2, 0, 1),
                           torch.from_numpy(g.initializers["b"])))
    want = F.max_pool2d(conv, k, s, padding=pad).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(m.run({"x": x})["y"], want, atol=1e-5)


# -- plan cache: bounded, configurable, cheap to extend ---------------------------------------

def test_plan_cache_is_lru_bounded_and_configurable():
    m = engine.Model(chain_graph(2, 8), plan_cache_size=3)
    g = m.graph
    for b in (1, 2, 3, 1, 4):
        np.testing.assert_allclose(m.predict(rand(b, 8, seed=b)), reference_chain(g, rand(b, 8, seed=b)),
                                   atol=1e-5)
    assert m.cached_signatures == [((3, 8),), ((1, 8),), ((4, 8),)]  # 2 was least recently used
    m.plan_cache_size = 1
    m.predict(rand(5, 8))
    assert m.cached_signatures == [((5, 8),)]
    with pytest.raises(engine.EngineError, match="positive int"):
        m.plan_cache_size = 0
    with pytest.raises(engine.EngineError, match="positive int"):
        engine.Model(chain_graph(1, 8), plan_cache_size="many")


def test_plans_for_new_batch_sizes_reuse_packed_weights(tmp_path):
    from engine import nn

    net = nn.Sequential([nn.Input((8, 8, 1)), nn.Conv2D(4, 3, activation="relu"), nn.MaxPooling2D(2),
                         nn.Flatten(), nn.Dense(5, activation="softmax")])
    net.save(tmp_path / "m.engine")
    m = engine.load(tmp_path / "m.engine")
    m.predict(rand(1, 8, 8, 1))
    packed = dict(m._compiled.packed)
    assert len(packed) == 2  # the conv filter and the dense kernel
    for b in (2, 7, 33):
        x = rand(b, 8, 8, 1, seed=b)
        np.testing.assert_allclose(m.predict(x), net.predict(x), atol=1e-6)
    assert m._compiled.packed.keys() == packed.keys()
    assert all(m._compiled.packed[k] is v for k, v in packed.items())  # the same objects


def test_plans_hold_no_activation_memory_and_contexts_are_reused():
    m = engine.Model(chain_graph(3, 256))
    for b in (64, 1, 16, 64):
        m.predict(rand(b, 256, seed=b))
    assert m._contexts.idle == 1                  # one caller at a time: one context
    assert m._contexts.idle_bytes >= 2 * 64 * 256 * 4  # sized for the largest plan seen


def test_concurrent_calls_on_one_plan_run_in_parallel_contexts():
    import concurrent.futures

    g = chain_graph(4, 128)
    m = engine.Model(g)
    xs = [rand(16, 128, seed=s) for s in range(8)]
    want = [m.predict(x) for x in xs]  # sequential results
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        for _ in range(5):
            got = list(ex.map(m.predict, xs))
            for gt, w in zip(got, want):
                np.testing.assert_array_equal(gt, w)
    assert 1 <= m._contexts.idle <= 4


# -- onnxruntime and Keras calling habits -----------------------------------------------------

def test_run_accepts_onnxruntime_argument_order():
    g = Graph([Value("x", (None, 4))], [Value("y", (None, 4)), Value("z", (None, 4))],
              [Node("Relu", ["x"], ["y"]), Node("Neg", ["y"], ["z"])])
    m = engine.Model(g)
    x = rand(2, 4)
    y, z = np.maximum(x, 0), -np.maximum(x, 0)
    outs = m.run(None, {"x": x})                          # onnxruntime: a list, all outputs
    assert isinstance(outs, list) and len(outs) == 2
    np.testing.assert_array_equal(outs[0], y)
    np.testing.assert_array_equal(m.run(["z"], {"x": x})[0], z)
    np.testing.assert_array_equal(m.run(["z"], input_feed={"x": x})[0], z)
    assert list(m.run({"x": x}, "z")) == ["z"]          # a plain string names one output
    np.testing.assert_array_equal(m.run({"x": x}, "z")["z"], z)
    np.testing.assert_array_equal(m.run({"x": x}, output_names=["y"])["y"], y)
    with pytest.raises(engine.ShapeError, match="unknown output 'w'"):
        m.run(["w"], {"x": x})


def test_predict_takes_lists_and_dicts_for_several_inputs():
    g = Graph([Value("a", (None, 3)), Value("b", (None, 3))], [Value("s", (None, 3))],
              [Node("Add", ["a", "b"], ["s"])])
    m = engine.Model(g)
    a, b = rand(4, 3, seed=1), rand(4, 3, seed=2)
    np.testing.assert_array_equal(m.predict([a, b]), a + b)
    np.testing.assert_array_equal(m.predict({"b": b, "a": a}), a + b)
    np.testing.assert_array_equal(m.predict([a, b], batch_size=3), a + b)
    with pytest.raises(engine.ShapeError, match="2 inputs"):
        m.predict(a)


def test_loaded_model_summary(capsys):
    m = engine.Model(chain_graph(2, 8))
    m.summary()
    out = capsys.readouterr().out
    assert "Dense" in out and "(None, 8)" in out and "Total params: 128" in out


def test_profile_attributes_every_step_to_its_node():
    m = engine.Model(chain_graph(3, 64))
    prof = m.profile({"x": rand(4, 64)}, repeats=3)
    assert [(n, op, k) for n, op, k, _ in prof] == [("Dense:h0", "Dense", "gemm_packed"),
                                                     ("Dense:h1", "Dense", "gemm_packed"),
                                                     ("Dense:h2", "Dense", "gemm_packed")]
    assert all(t > 0 for *_, t in prof)
    with pytest.raises(engine.ShapeError, match="every input"):
        m.profile({})
