"""fuse_matmul_transpose: MatMul(A, Transpose(B)) swapping B's last two axes runs as one GEMM
reading B transposed (an Einsum), with numpy broadcasting of the batch dims; other
permutations stay as they are. Reference: onnxruntime on the same graph."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import engine


def _graph(shape_a, shape_b, perm):
    nodes = [h.make_node("Transpose", ["b"], ["bt"], perm=perm), h.make_node("MatMul", ["a", "bt"], ["y"])]
    m = h.make_model(h.make_graph(nodes, "g", [h.make_tensor_value_info("a", T.FLOAT, shape_a),
                                               h.make_tensor_value_info("b", T.FLOAT, shape_b)],
                                  [h.make_tensor_value_info("y", T.FLOAT, None)]), opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


@pytest.mark.parametrize("shape_a,shape_b,perm,fused", [
    ((2, 3, 5, 8), (2, 3, 7, 8), [0, 1, 3, 2], True),  # Q·Kᵀ
    ((5, 8), (2, 3, 7, 8), [0, 1, 3, 2], True),        # a broadcast left operand
    ((2, 1, 5, 8), (3, 7, 8), [0, 2, 1], True),        # broadcast batch dims
    ((6, 8), (4, 8), [1, 0], True),
    ((2, 5, 8), (8, 2, 7), [1, 0, 2], False),          # not a swap of the last two axes
])
def test_matmul_by_a_transposed_operand(shape_a, shape_b, perm, fused):
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal(shape_a).astype(np.float32), "b": rng.standard_normal(shape_b).astype(np.float32)}
    data = _graph(shape_a, shape_b, perm)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    m = engine.load(data)
    np.testing.assert_allclose(m.run(feeds)["y"], want, atol=1e-5, rtol=1e-5)
    ops = [n.op for n in m.optimized_graph.nodes]
    assert (ops == ["Einsum"]) == fused, ops
