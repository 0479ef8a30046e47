"""Attention kernel latency: engine's flash and decode kernels vs its materialised block kernel vs
torch SDPA.

    ENGINE_NUM_THREADS=2 python -m benchmarks.attention_flash

Prefill: batch 1, 12 heads, head size 64, sequence 512 and 2048, causal and not (the flash
kernel). Decode: one query row against 256 and 2048 keys, 9 query heads sharing 3 kv heads, head
size 64 (the decode kernel; torch with enable_gqa). Float32, the same thread count for engine and
torch (ENGINE_NUM_THREADS, default 2). One ONNX Attention node per shape; each result is checked
against torch before anything is timed. Prints median ms per call.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from onnx import TensorProto, helper

import engine
from engine import _C

from .timing import round_robin


def attention_model(S: int, H: int, D: int, causal: bool, L: int | None = None, Hkv: int | None = None) -> bytes:
    """One Attention node: Q (1, H, S, D) against K, V (1, Hkv, L, D); L, Hkv default to S, H."""
    L, Hkv = L or S, Hkv or H
    shapes = {"Q": [1, H, S, D], "K": [1, Hkv, L, D], "V": [1, Hkv, L, D]}
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in shapes.items()]
    out = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, H, S, D])]
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], is_causal=int(causal))
    g = helper.make_graph([node], "attention", ins, out)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)]).SerializeToString()


CASES = [  # (name, S query rows, L keys, query heads, kv heads, causal, engine's kernel)
    *[("prefill", S, S, 12, 12, causal, "flash") for S in (512, 2048) for causal in (False, True)],
    *[("decode", 1, L, 9, 3, False, "auto") for L in (256, 2048)],
]


def run(threads: int, log=print, sizes=(512, 2048)) -> list[dict]:
    """One row per case: median microseconds of the block kernel, the fast kernel (flash for
    prefill, decode for one query row) and torch SDPA. `sizes` picks the prefill lengths."""
    _C.set_num_threads(threads)
    torch.set_num_threads(threads)
    D = 64
    rows = []
    for case, S, L, H, Hkv, causal, fast in CASES:
        if case == "prefill" and S not in sizes:
            continue
        rng = np.random.default_rng(S + L)
        q = rng.standard_normal((1, H, S, D)).astype(np.float32)
        k, v = (rng.standard_normal((1, Hkv, L, D)).astype(np.float32) for _ in range(2))
        sess = engine.load(attention_model(S, H, D, causal, L, Hkv))
        feeds = {"Q": q, "K": k, "V": v}
        tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))

        def run_torch(_):
            with torch.no_grad():
                return torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal,
                                                                        enable_gqa=H != Hkv)

        def run_kernel(name):
            def run(_):
                _C.set_attention_kernel(name)
                return sess.run(None, feeds)
            return run

        want = run_torch(None).numpy()
        for name in ("block", fast):
            got = run_kernel(name)(None)[0]
            err = float(np.abs(got - want).max() / np.abs(want).max())
            assert err < 1e-5, f"{name} {case} S={S} L={L} causal={causal}: relative error {err}"
        fns = {"block": run_kernel("block"), "fast": run_kernel(fast), "torch": run_torch}
        us = round_robin(fns, None, rounds=3, min_time=0.5, min_calls=5)
        _C.set_attention_kernel("auto")
        rows.append({"case": case, "seq": S, "keys": L, "heads": H, "kv_heads": Hkv, "head_dim": D,
                     "causal": causal, "latency_us": us, "torch_over_fast": us["torch"] / us["fast"]})
        log(f"  attention {case} S={S} L={L} causal={int(causal)}: "
            + ", ".join(f"{k} {v / 1e3:.3f} ms" for k, v in us.items()))
    return rows


def table(rows, format_table) -> str:
    body = [[r["case"], r["seq"], r["keys"], f"{r['heads']}/{r['kv_heads']}", int(r["causal"]),
             f"{r['latency_us']['block'] / 1e3:.3f}", f"{r['latency_us']['fast'] / 1e3:.3f}",
             f"{r['latency_us']['torch'] / 1e3:.3f}", f"{r['latency_us']['block'] / r['latency_us']['fast']:.2f}",
             f"{r['torch_over_fast']:.2f}"] for r in rows]
    return format_table(["case", "rows", "keys", "heads q/kv", "causal", "block ms", "fast ms", "torch SDPA ms",
                         "fast/block", "torch/fast"], body,
                        "Attention kernel alone (batch 1, head dim 64, float32; fast = flash for prefill, decode for "
                        "one row): median ms (target torch/fast >= 1.5)")


def main() -> None:
    from .run import format_table
    threads = int(os.environ.get("ENGINE_NUM_THREADS", "2"))
    print(f"threads={threads} isa={_C.cpu_isa()} torch={torch.__version__}")
    print(table(run(threads, log=lambda m: None), format_table))


if __name__ == "__main__":
    main()
