"""Attention kernel latency: engine's flash kernel vs its materialised block kernel vs torch SDPA.

    ENGINE_NUM_THREADS=2 python -m benchmarks.attention_flash

Batch 1, 12 heads, head size 64, sequence 512 and 2048, causal and not, float32, the same thread
count for engine and torch (ENGINE_NUM_THREADS, default 2). One ONNX Attention node per shape;
each result is checked against torch before anything is timed. Prints median ms per call.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from onnx import TensorProto, helper

import engine
from engine import _C

from .timing import round_robin


def attention_model(S: int, H: int, D: int, causal: bool) -> bytes:
    shape = [1, H, S, D]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in "QKV"]
    out = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)]
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], is_causal=int(causal))
    g = helper.make_graph([node], "attention", ins, out)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)]).SerializeToString()


def run(threads: int, log=print, sizes=(512, 2048)) -> list[dict]:
    """One row per (S, causal): median microseconds of the block and flash kernels and torch SDPA."""
    _C.set_num_threads(threads)
    torch.set_num_threads(threads)
    H, D = 12, 64
    rows = []
    for S in sizes:
        for causal in (False, True):
            rng = np.random.default_rng(S)
            q, k, v = (rng.standard_normal((1, H, S, D)).astype(np.float32) for _ in range(3))
            sess = engine.load(attention_model(S, H, D, causal))
            feeds = {"Q": q, "K": k, "V": v}
            tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))

            def run_torch(_):
                with torch.no_grad():
                    return torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)

            def run_kernel(name):
                def run(_):
                    _C.set_attention_kernel(name)
                    return sess.run(None, feeds)
                return run

            want = run_torch(None).numpy()
            for name in ("block", "flash"):
                got = run_kernel(name)(None)[0]
                err = float(np.abs(got - want).max() / np.abs(want).max())
                assert err < 1e-5, f"{name} S={S} causal={causal}: relative error {err}"
            fns = {"block": run_kernel("block"), "flash": run_kernel("flash"), "torch": run_torch}
            us = round_robin(fns, None, rounds=3, min_time=0.5, min_calls=5)
            _C.set_attention_kernel("auto")
            rows.append({"seq": S, "heads": H, "head_dim": D, "causal": causal, "latency_us": us,
                         "torch_over_flash": us["torch"] / us["flash"]})
            log(f"  attention S={S} causal={int(causal)}: " + ", ".join(f"{k} {v / 1e3:.3f} ms" for k, v in us.items()))
    return rows


def table(rows, format_table) -> str:
    body = [[r["seq"], int(r["causal"]), f"{r['latency_us']['block'] / 1e3:.3f}", f"{r['latency_us']['flash'] / 1e3:.3f}",
             f"{r['latency_us']['torch'] / 1e3:.3f}", f"{r['latency_us']['block'] / r['latency_us']['flash']:.2f}",
             f"{r['torch_over_flash']:.2f}"] for r in rows]
    return format_table(["seq", "causal", "block ms", "flash ms", "torch SDPA ms", "flash/block", "torch/flash"], body,
                        "Attention kernel alone (batch 1, 12 heads, head dim 64, float32): median ms (target torch/flash >= 1.5)")


def main() -> None:
    from .run import format_table
    threads = int(os.environ.get("ENGINE_NUM_THREADS", "2"))
    print(f"threads={threads} isa={_C.cpu_isa()} torch={torch.__version__}")
    print(table(run(threads, log=lambda m: None), format_table))


if __name__ == "__main__":
    main()
