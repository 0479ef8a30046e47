"""Attention in training: engine's forward (flash kernel keeping the log-sum-exp) + backward
(attention_grad) vs torch SDPA forward + backward, the same thread count for both.

    ENGINE_NUM_THREADS=2 python -m benchmarks.attention_backward [--seq 512 2048]

Batch 1, 12 heads, head size 64, float32, causal and not. The engine side is one planned
training program of an Attention node (the training form, the backward rule, Y, dQ, dK and dV
as outputs); torch's is scaled_dot_product_attention and .backward() with torch.set_num_threads.
Each result is checked against torch before anything is timed. Prints median ms per
forward+backward and torch / engine (above 1: engine is faster).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from engine import _C
from engine.autograd import differentiate, training_graph
from engine.graph import Graph, Node, Value
from engine.ops.registry import TensorType
from engine.runtime.plan import Plan, Schedule

from .timing import round_robin


def engine_program(q, k, v, dy, causal: bool):
    """run(_) -> [Y, dQ, dK, dV] of one Attention node, planned once."""
    arrays = {"q": q, "k": k, "v": v, "dy": dy}
    graph = Graph([Value(n, a.shape, "float32") for n, a in arrays.items() if n != "dy"], [Value("y", None)],
                  [Node("Attention", ["q", "k", "v"], ["y"], {"is_causal": int(causal)}, "attention")], {})
    types = {n: TensorType(a.shape, "float32") for n, a in arrays.items()}
    gb, _, grads = differentiate(graph, types, ["q", "k", "v"], output_grads={"y": "dy"})
    outs = [gb.node("Identity", [n], base=f"out/{n}") for n in ("y", grads["q"], grads["k"], grads["v"])]
    g = training_graph(gb, [Value(n, a.shape, "float32") for n, a in arrays.items()], outs, {})
    plan = Plan(Schedule(g), {n: a.shape for n, a in arrays.items()}, {},
                input_dtypes={n: "float32" for n in arrays})
    feeds = [arrays[v.name] for v in g.inputs]
    pool = _C.ContextPool()
    return lambda _: plan.run(feeds, pool)


def torch_program(q, k, v, dy, causal: bool):
    tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    tdy = torch.from_numpy(dy)

    def run(_):
        tq.grad = tk.grad = tv.grad = None
        y = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
        y.backward(tdy)
        return [y.detach().numpy(), tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()]
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", type=int, nargs="+", default=[512])
    args = ap.parse_args()
    threads = int(os.environ.get("ENGINE_NUM_THREADS", "2"))
    _C.set_num_threads(threads)
    torch.set_num_threads(threads)
    H, D = 12, 64
    print(f"threads={threads} isa={_C.cpu_isa()} torch={torch.__version__}  batch 1, {H} heads, head size {D}")
    print(f"{'S':>5} {'causal':>6} {'engine ms':>10} {'torch ms':>9} {'torch/engine':>12}")
    for S in args.seq:
        for causal in (False, True):
            rng = np.random.default_rng(S)
            q, k, v, dy = (rng.standard_normal((1, H, S, D)).astype(np.float32) for _ in range(4))
            fns = {"engine": engine_program(q, k, v, dy, causal), "torch": torch_program(q, k, v, dy, causal)}
            for name, got, want in zip("Y dQ dK dV".split(), fns["engine"](None), fns["torch"](None)):
                err = float(np.abs(got - want).max() / np.abs(want).max())
                assert err < 1e-4, f"{name} S={S} causal={causal}: relative error {err}"
            us = round_robin(fns, None, rounds=3, min_time=1.0, min_calls=5)
            e, t = us["engine"] / 1e3, us["torch"] / 1e3
            print(f"{S:>5} {int(causal):>6} {e:>10.3f} {t:>9.3f} {t / e:>12.2f}")


if __name__ == "__main__":
    main()
