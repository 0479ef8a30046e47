"""SGEMM throughput: engine vs numpy (OpenBLAS), same thread count, GFLOP/s.

Run it as

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.gemm

(with ENGINE_BUILD_DIR=<cmake build dir> to test an uninstalled build). OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE, when set in the environment, make OpenBLAS pick slower kernels or blocking;
unset both so numpy's figures are OpenBLAS' real ones.

`run(sizes)` returns one row per square size {size, engine_gflops, numpy_gflops, ratio};
`run_packed()` times sgemm_packed for inference-shaped Dense layers (M = batch).
Each figure is the median of several timed repeats after a warm-up, and each result is
checked against numpy once before anything is timed.

OpenBLAS' worker threads busy-wait for a long while (~0.1 s) after each numpy call; timed
right after numpy, the engine would share its cores with them. So each shape is timed for
the engine first, after a short idle pause (`_settle`), then for numpy.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from engine import _C


def _threads() -> int:
    return _C.num_threads()


def numpy_blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info

        infos = [f"{i.get('internal_api')} {i.get('version')} threads={i.get('num_threads')} "
                 f"arch={i.get('architecture')}" for i in threadpool_info() if i.get("user_api") == "blas"]
        return "; ".join(infos) or "unknown"
    except Exception:  # threadpoolctl missing or failing
        return "unknown (threadpoolctl not available)"


def _limit_numpy(threads: int):
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=threads, user_api="blas")
    except Exception:
        import contextlib

        return contextlib.nullcontext()


def _settle(seconds: float = 0.25) -> None:
    """Lets spinning BLAS worker threads from a previous numpy call go idle."""
    time.sleep(seconds)


def _time(fn, flops: float, repeats: int = 7, target_s: float = 0.03) -> float:
    """Median GFLOP/s over `repeats` batches, each batch lasting about `target_s`."""
    fn()
    t = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t, 1e-7)
    reps = max(1, int(target_s / one))
    for _ in range(reps):  # warm-up: caches, thread pool, CPU clocks
        fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        samples.append((time.perf_counter() - t) / reps)
    return flops / statistics.median(samples) / 1e9


def run(sizes=(128, 256, 512, 1024, 2048), repeats: int = 7) -> list[dict]:
    threads = _threads()
    rng = np.random.default_rng(0)
    rows = []
    with _limit_numpy(threads):
        for n in sizes:
            a = rng.standard_normal((n, n), dtype=np.float32)
            b = rng.standard_normal((n, n), dtype=np.float32)
            c = np.empty((n, n), np.float32)
            cn = np.empty((n, n), np.float32)
            _C.sgemm(c, a, b)
            np.matmul(a, b, out=cn)
            err = float(np.abs(c - cn).max())
            assert err <= 1e-3 * np.sqrt(n) * max(1.0, float(np.abs(cn).max())), f"sgemm {n}: max err {err}"
            flops = 2.0 * n * n * n
            _settle()
            eng = _time(lambda: _C.sgemm(c, a, b), flops, repeats)
            ref = _time(lambda: np.matmul(a, b, out=cn), flops, repeats)
            rows.append({"size": n, "engine_gflops": round(eng, 1), "numpy_gflops": round(ref, 1),
                         "ratio": round(eng / ref, 3), "threads": threads})
    return rows


PACKED_SHAPES = ((5408, 128), (1000, 128), (128, 10), (1000, 500))


def run_packed(batches=(1, 64), shapes=PACKED_SHAPES, repeats: int = 7) -> list[dict]:
    """sgemm_packed (weights packed once) vs numpy a @ w, for Dense-layer shapes (K, N)."""
    threads = _threads()
    rng = np.random.default_rng(1)
    rows = []
    with _limit_numpy(threads):
        for K, N in shapes:
            w = rng.standard_normal((K, N), dtype=np.float32)
            pw = _C.PackedMatrixB(w, False)
            for M in batches:
                a = rng.standard_normal((M, K), dtype=np.float32)
                c = np.empty((M, N), np.float32)
                cn = np.empty((M, N), np.float32)
                _C.sgemm_packed(c, a, pw)
                np.matmul(a, w, out=cn)
                assert np.abs(c - cn).max() <= 1e-3 * np.sqrt(K) * max(1.0, float(np.abs(cn).max()))
                flops = 2.0 * M * N * K
                _settle()
                eng = _time(lambda: _C.sgemm_packed(c, a, pw), flops, repeats, 0.02)
                ref = _time(lambda: np.matmul(a, w, out=cn), flops, repeats, 0.02)
                rows.append({"M": M, "K": K, "N": N, "engine_gflops": round(eng, 1),
                             "numpy_gflops": round(ref, 1), "ratio": round(eng / ref, 3),
                             "engine_us": round(flops / eng / 1e3, 2), "numpy_us": round(flops / ref / 1e3, 2)})
    return rows


def main() -> None:
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(var):
            print(f"warning: {var}={os.environ[var]} is set; numpy/OpenBLAS figures will be low "
                  f"(run with env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)")
    print(f"engine isa={_C.cpu_isa()} threads={_threads()}; numpy BLAS: {numpy_blas_info()}")
    print(f"{'size':>6} {'engine GF/s':>12} {'numpy GF/s':>11} {'ratio':>7}")
    for r in run():
        print(f"{r['size']:>6} {r['engine_gflops']:>12.1f} {r['numpy_gflops']:>11.1f} {r['ratio']:>7.2f}")
    print()
    print(f"{'M':>4} {'K':>6} {'N':>5} {'engine us':>10} {'numpy us':>9} {'engine GF/s':>12} {'numpy GF/s':>11} {'ratio':>6}")
    for r in run_packed():
        print(f"{r['M']:>4} {r['K']:>6} {r['N']:>5} {r['engine_us']:>10.2f} {r['numpy_us']:>9.2f} "
              f"{r['engine_gflops']:>12.1f} {r['numpy_gflops']:>11.1f} {r['ratio']:>6.2f}")


if __name__ == "__main__":
    main()
