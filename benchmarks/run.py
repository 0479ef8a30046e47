"""This engine vs its peers, side by side in one process, same thread count for all.

    python -m benchmarks [--threads N] [--quick] [--json PATH] [--only gemm,models,cpu] [--peers-only]

Sections (see benchmarks/README.md for what each column means):

1. SGEMM, square sizes: engine vs numpy (OpenBLAS) GFLOP/s (rows from ``benchmarks.gemm.run``).
2. Models: median single-call latency of the seed CNN and MLP at batch 1 and 64 for the engine,
   onnxruntime, OpenVINO (f32) and PyTorch, each peer's output checked against the engine's
   (and everything against a numpy reference) before anything is timed.
3. First call at a new batch size: what planning a new input signature costs (engine) against
   onnxruntime with a symbolic batch dimension (``benchmarks.first_call``).
4. ONNX models (ResNet-50, MobileNetV2, the seed LSTM, SqueezeNet) from the same .onnx
   file through the engine, onnxruntime and OpenVINO, PyTorch on the source module; load time
   (``benchmarks.onnx_models``).
4b. Transformers, the same way: BERT-base and all-MiniLM-L6-v2 at sequence 128 (batch 1, 8),
   ViT-base at 224 and a GPT-2 decoder at sequence 256 (batch 1); then the attention kernel alone
   at sequence 512 and 2048 and one-row decode against torch SDPA (``benchmarks.attention_flash``).
5. Keras file: the seed-004 Embedding->LSTM net saved as .h5 by Keras 3, loaded by engine.load,
   against Keras itself, PyTorch and onnxruntime/OpenVINO on the same weights
   (``benchmarks.keras_models``).
6. CPU cost: one request per millisecond for ~2 s, each framework in a fresh subprocess:
   process CPU / wall time while paced, and in the second after the last request.
7. Training: an Adam step over 10 M parameters, engine vs torch.optim.Adam fused / foreach
   (``benchmarks.train_optim``); one train step of the seed-000 CNN (batch 64, 256) and the
   seed-004 LSTM (batch 64), engine train_on_batch vs PyTorch, and one fit() epoch on
   scikit-learn digits (CNN, MLP), engine vs Keras 3 (``benchmarks.train_steps``).
8. Language model (``--only lm``, not in the default list): the SmolLM2 Q4_1 GGUF through the engine,
   llama.cpp (llama-cpp-python) and transformers (f32): prompt processing, decode at batch 1, time
   to first token; aggregate tokens/s of 1, 4 and 8 streams through ``engine serve`` (``benchmarks.lm``).

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when set, slow OpenBLAS down; this script re-executes
itself without them so numpy's figures are OpenBLAS' real ones.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time

if not __package__:  # run as a file (python benchmarks/run.py): make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"  # noqa: A001

import numpy as np  # noqa: E402

from . import models as M  # noqa: E402
from .timing import measure  # noqa: E402

BLAS_ENV_UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
GEMM_SIZES = (128, 256, 512, 1024, 2048)
GEMM_SIZES_QUICK = (128, 512, 1024)
BATCHES = (1, 64)
TOL = 1e-4


# ----------------------------------------------------------------------------- helpers

def _reexec_without_blas_env(argv: list[str]) -> None:
    bad = [k for k in BLAS_ENV_UNSET if k in os.environ]
    if not bad:
        return
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV_UNSET}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    print(f"[benchmarks] re-executing without {', '.join(bad)} (they slow OpenBLAS)", file=sys.stderr, flush=True)
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *argv], env)


def format_table(headers: list[str], rows: list[list], title: str = "", left: tuple[int, ...] = (0,)) -> str:
    """Plain-text table; columns in ``left`` (indices, negative from the end) are left-aligned."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    n = len(headers)
    widths = [max(len(r[i]) for r in cells) for i in range(n)]
    lefts = {i % n for i in left}
    out = [title] if title else []
    for j, r in enumerate(cells):
        line = "  ".join(c.ljust(w) if i in lefts else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        out.append(line.rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _fmt(v, spec: str = ".1f") -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return format(v, spec)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _cpu_flags() -> str:
    """The SIMD features that matter here, from /proc/cpuinfo."""
    want = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return " ".join(w for w in want if w in have)
    except OSError:
        pass
    return "?"


def _numpy_blas() -> str:
    try:
        from threadpoolctl import threadpool_info
        for info in threadpool_info():
            if info.get("user_api") == "blas" and "numpy" in info.get("filepath", ""):
                return (f"{info.get('internal_api')} {info.get('version')} ({info.get('architecture', '?')}, "
                        f"{info.get('threading_layer', '?')}, {info.get('num_threads')} threads)")
        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if blas:
            i = blas[0]
            return f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    return "unknown"


def metadata(threads: int, engine_ok: bool) -> dict:
    meta = {
        "cpu": _cpu_name(),
        "cpu_flags": _cpu_flags(),
        "cores": len(os.sched_getaffinity(0)),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": _numpy_blas(),
        "env_unset": list(BLAS_ENV_UNSET),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_1min": os.getloadavg()[0],
    }
    for fw in ("engine", "ort", "openvino", "torch"):
        meta[fw] = M.framework_version(fw) if (fw != "engine" or engine_ok) else "unavailable"
    if engine_ok:
        try:
            import engine
            meta["engine_isa"] = engine._C.cpu_isa()
            meta["engine_threads"] = engine._C.num_threads()
        except Exception:
            pass
    return meta


# ----------------------------------------------------------------------------- 1. GEMM

def run_gemm(threads: int, quick: bool, engine_ok: bool) -> tuple[list[dict], str]:
    sizes = list(GEMM_SIZES_QUICK if quick else GEMM_SIZES)
    try:
        from . import gemm
    except ImportError as e:
        return [], f"skipped: benchmarks/gemm.py not importable ({e})"
    if not engine_ok:
        return [], "skipped: engine not importable"
    try:
        import inspect

        import engine
        engine._C.set_num_threads(threads)
        kwargs = {}
        params = inspect.signature(gemm.run).parameters
        if "threads" in params:
            kwargs["threads"] = threads
        if "quick" in params:
            kwargs["quick"] = quick
        try:
            from threadpoolctl import threadpool_limits
            with threadpool_limits(threads, user_api="blas"):
                rows = gemm.run(sizes, **kwargs)
        except ImportError:
            rows = gemm.run(sizes, **kwargs)
    except Exception as e:
        return [], f"failed: {type(e).__name__}: {e}"
    return [dict(r) for r in rows], ""


def run_gemm_packed(threads: int) -> tuple[list[dict], str]:
    """Dense-layer shapes (weights packed once, M = batch), when gemm.py offers run_packed()."""
    try:
        from . import gemm
        if not hasattr(gemm, "run_packed"):
            return [], "gemm.run_packed not available"
        import engine
        engine._C.set_num_threads(threads)
        try:
            from threadpoolctl import threadpool_limits
            with threadpool_limits(threads, user_api="blas"):
                rows = gemm.run_packed()
        except ImportError:
            rows = gemm.run_packed()
    except Exception as e:
        return [], f"failed: {type(e).__name__}: {e}"
    return [dict(r) for r in rows], ""


def gemm_packed_table(rows: list[dict]) -> str:
    body = [[r.get("M"), r.get("K"), r.get("N"), _fmt(r.get("engine_us"), ".2f"), _fmt(r.get("numpy_us"), ".2f"),
             _fmt(r.get("engine_gflops")), _fmt(r.get("numpy_gflops")), _fmt(r.get("ratio"), ".2f")] for r in rows]
    return format_table(["M", "K", "N", "engine us", "numpy us", "engine GFLOP/s", "numpy GFLOP/s", "engine/numpy"],
                        body, "SGEMM with pre-packed weights, Dense-layer shapes C[M,N] = A[M,K] @ W[K,N] "
                              "(higher ratio is better)")


def gemm_table(rows: list[dict]) -> str:
    body = [[r.get("size"), _fmt(r.get("engine_gflops")), _fmt(r.get("numpy_gflops")), _fmt(r.get("ratio"), ".2f")]
            for r in rows]
    return format_table(["size", "engine GFLOP/s", "numpy GFLOP/s", "engine/numpy"], body,
                        "SGEMM C = A @ B, square, float32 (higher is better)")


# ----------------------------------------------------------------------------- 2. models

def _check(y, ref, what: str) -> tuple[bool, float, str]:
    y = np.asarray(y)
    if y.shape != ref.shape:
        return False, float("inf"), f"{what}: shape {y.shape}, expected {ref.shape}"
    d = float(np.abs(y.astype(np.float64) - ref).max())
    if not d <= TOL:
        return False, d, f"{what}: max abs diff {d:.3g} > {TOL:g}"
    return True, d, ""


def run_models(threads: int, quick: bool, frameworks: list[str], log) -> list[dict]:
    rounds = 1 if quick else 5
    min_time = 0.15 if quick else 0.2
    rows = []
    for model in M.MODELS:
        weights = M.make_weights(model)
        engine_predict = None
        if "engine" in frameworks:
            try:
                engine_predict = M.build_predict("engine", model, weights, threads)
            except Exception as e:
                log(f"  engine {model}: build failed: {type(e).__name__}: {e}")
        for batch in BATCHES:
            x = M.make_input(model, batch)
            ref = M.numpy_forward(model, weights, x).astype(np.float64)
            row = {"model": model, "batch": batch, "threads": threads, "mflop": M.flops(model) * batch / 1e6,
                   "latency_us": {}, "p90_us": {}, "max_abs_diff": {}, "errors": {}}
            fns = {}
            # Correctness first: the engine against numpy, each peer against the engine.
            engine_y = None
            if engine_predict is not None:
                try:
                    engine_y = np.asarray(engine_predict(x))
                    ok, d, msg = _check(engine_y, ref, "engine vs numpy")
                    row["max_abs_diff"]["engine"] = d
                    if ok:
                        fns["engine"] = engine_predict
                    else:
                        row["errors"]["engine"] = msg
                        engine_y = None
                except Exception as e:
                    row["errors"]["engine"] = f"{type(e).__name__}: {e}"
            elif "engine" in frameworks:
                row["errors"]["engine"] = "build failed"
            for fw in (f for f in frameworks if f != "engine"):
                try:
                    fn = M.build_predict(fw, model, weights, threads, batch)
                    y = fn(x)
                except Exception as e:
                    row["errors"][fw] = f"{type(e).__name__}: {e}"
                    continue
                against, what = (engine_y, f"{fw} vs engine") if engine_y is not None else (ref, f"{fw} vs numpy")
                ok, d, msg = _check(y, np.asarray(against, dtype=np.float64), what)
                row["max_abs_diff"][fw] = d
                if ok:
                    fns[fw] = fn
                else:
                    row["errors"][fw] = msg
            for fw, msg in row["errors"].items():
                log(f"  {model} b{batch} {fw}: NOT TIMED: {msg}")
            # Timing: round-robin over frameworks, order rotated each round; best round median.
            order = list(fns)
            best: dict[str, object] = {}
            for r in range(rounds):
                k = r % max(1, len(order))
                for fw in order[k:] + order[:k]:
                    fn = fns[fw]
                    t = measure(lambda: fn(x), min_time=min_time)
                    if fw not in best or t.median_us < best[fw].median_us:
                        best[fw] = t
            for fw, t in best.items():
                row["latency_us"][fw] = t.median_us
                row["p90_us"][fw] = t.p90_us
            peers = {fw: v for fw, v in row["latency_us"].items() if fw != "engine"}
            if peers:
                bp = min(peers, key=peers.get)
                row["best_peer"] = bp
                if "engine" in row["latency_us"]:
                    row["ratio"] = row["latency_us"]["engine"] / peers[bp]
            rows.append(row)
            del fns
            gc.collect()
            log(f"  {model} batch {batch}: " + ", ".join(f"{fw} {v:.1f} us" for fw, v in row["latency_us"].items()))
        del engine_predict
        gc.collect()
    return rows


def models_table(rows: list[dict], frameworks: list[str]) -> str:
    headers = ["model", "batch"] + [f"{M.FRAMEWORK_NAMES[f]} us" for f in frameworks] + ["engine/best peer"]
    body = []
    for r in rows:
        lat = r["latency_us"]
        cells = [r["model"], r["batch"]]
        for f in frameworks:
            cells.append(_fmt(lat.get(f)) if f in lat else ("FAIL" if f in r["errors"] else "-"))
        if "ratio" in r:
            cells.append(f"{r['ratio']:.2f} ({M.FRAMEWORK_NAMES[r['best_peer']]})")
        elif "best_peer" in r:
            cells.append(f"- (best peer {M.FRAMEWORK_NAMES[r['best_peer']]})")
        else:
            cells.append("-")
        body.append(cells)
    return format_table(headers, body, "Models: median latency per predict() call, microseconds (lower is better)")


# ----------------------------------------------------------------------------- 3. CPU cost

def run_cpu(threads: int, quick: bool, frameworks: list[str], log) -> list[dict]:
    from .cpu_usage import measure_in_subprocess
    duration, idle = (0.5, 0.5) if quick else (2.0, 1.0)
    fws = ["none"]
    for f in frameworks:
        fws.append(f)
        if f == "ort":
            fws.append("ort_nospin")
    rows = []
    for model in ("mlp", "cnn"):
        for fw in fws:
            if fw == "none" and model != "mlp":
                continue  # the caller's own loop costs the same for every model
            row = measure_in_subprocess(fw, model, threads, duration=duration, idle=idle)
            rows.append(row)
            if "error" in row:
                log(f"  cpu {model} {fw}: {row['error']}")
            else:
                log(f"  cpu {model} {fw}: busy {row['busy_cores']:.3f} idle {row['idle_cores']:.3f} cores")
    return rows


CPU_NAMES = {"none": "(caller loop only)", "ort_nospin": "onnxruntime, allow_spinning=0", **M.FRAMEWORK_NAMES}


def cpu_table(rows: list[dict]) -> str:
    body = []
    for r in rows:
        name = CPU_NAMES.get(r["framework"], r["framework"])
        model = r["model"] if r["framework"] != "none" else "-"
        if "error" in r:
            body.append([name, model, "FAIL", "", "", "", r["error"][:100]])
            continue
        body.append([name, model, f"{r['busy_cores']:.3f}", f"{r['idle_cores']:.3f}",
                     f"{r['latency_us']:.1f}", f"{r['rate_hz']:.0f}", ""])
    headers = ["framework", "model", "paced CPU (cores)", "idle CPU (cores)", "latency us", "req/s", "note"]
    left = (0, -1)
    if not any("error" in r for r in rows):
        headers, body, left = headers[:-1], [b[:-1] for b in body], (0,)
    return format_table(headers, body, "CPU cost: one batch-1 request per millisecond, fresh process per framework "
                              "(lower is better)", left=left)


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="threads for every framework (default: all cores, %(default)s)")
    ap.add_argument("--quick", action="store_true", help="fast smoke run: fewer sizes, repeats and seconds")
    ap.add_argument("--json", metavar="PATH", help="also save all rows and metadata as JSON")
    ap.add_argument("--only", default="gemm,models,first,onnx,transformers,keras,cpu,train",
                    help="comma-separated sections (default: %(default)s; also: serve, lm)")
    ap.add_argument("--peers-only", action="store_true", help="leave the engine out (peers only)")
    ap.add_argument("--frameworks", default=",".join(M.FRAMEWORKS),
                    help="comma-separated subset of %(default)s")
    ap.add_argument("--onnx-models", metavar="NAMES",
                    help="comma-separated models of the onnx section (default: all; e.g. seed_lstm)")
    a = ap.parse_args(argv)
    _reexec_without_blas_env(argv)
    threads = max(1, a.threads)
    os.environ["ENGINE_NUM_THREADS"] = str(threads)  # before engine is first imported
    sections = {s.strip() for s in a.only.split(",") if s.strip()}
    frameworks = [f for f in a.frameworks.split(",") if f in M.FRAMEWORKS]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    engine_ok, why = (False, "--peers-only") if a.peers_only else M.engine_available()
    if not engine_ok:
        frameworks = [f for f in frameworks if f != "engine"]
        if not a.peers_only:
            log(f"[benchmarks] engine not available ({why}); running the peers only")
    meta = metadata(threads, engine_ok)
    t_start = time.perf_counter()
    print(f"# engine benchmarks -- {meta['cpu']}, {meta['cores']} cores, {threads} threads for every framework")
    print(f"# CPU features: {meta['cpu_flags']}")
    print(f"# engine {meta['engine']} ({meta.get('engine_isa', '-')}), onnxruntime {meta['ort']}, "
          f"OpenVINO {meta['openvino']} (f32), PyTorch {meta['torch']}, numpy {meta['numpy']}")
    print(f"# numpy BLAS: {meta['numpy_blas']}")
    if meta["loadavg_1min"] > 0.5 * meta["cores"]:
        print(f"# WARNING: load average {meta['loadavg_1min']:.1f} on {meta['cores']} cores at start: "
              "other processes compete for the CPU, figures (multi-threaded ones most) are noisy")
    print(flush=True)

    result: dict = {"meta": meta}
    if "gemm" in sections:
        log("[benchmarks] SGEMM ...")
        rows, note = run_gemm(threads, a.quick, engine_ok)
        result["gemm"] = rows
        print(gemm_table(rows) if rows else f"SGEMM: {note}")
        print(flush=True)
        if rows and not a.quick:
            prows, note = run_gemm_packed(threads)
            result["gemm_packed"] = prows
            if prows:
                print(gemm_packed_table(prows))
                print(flush=True)
    if "models" in sections:
        log("[benchmarks] models ...")
        rows = run_models(threads, a.quick, frameworks, log)
        result["models"] = rows
        print(models_table(rows, frameworks))
        errs = [(r["model"], r["batch"], fw, m) for r in rows for fw, m in r["errors"].items()]
        for model, batch, fw, m in errs:
            print(f"  ! {model} batch {batch} {M.FRAMEWORK_NAMES[fw]} not timed: {m}")
        print(flush=True)
    if "first" in sections:
        from . import first_call
        log("[benchmarks] first call at a new batch size ...")
        rows = first_call.run(threads, frameworks, log)
        result["first_call"] = rows
        print(first_call.table(rows, format_table))
        print(flush=True)
    if "onnx" in sections:
        from . import onnx_models
        log("[benchmarks] ONNX models ...")
        models = [m.strip() for m in a.onnx_models.split(",") if m.strip()] if a.onnx_models else None
        rows, loads = onnx_models.run(threads, frameworks, log, quick=a.quick, models=models)
        result["onnx"], result["onnx_load"] = rows, loads
        print(onnx_models.table(rows, loads, format_table, frameworks))
        print(flush=True)
    if "transformers" in sections:
        from . import attention_flash, onnx_models
        log("[benchmarks] transformers ...")
        rows, loads = onnx_models.run(threads, frameworks, log, quick=a.quick, models=list(onnx_models.TRANSFORMER_MODELS))
        result["transformers"], result["transformers_load"] = rows, loads
        print(onnx_models.table(rows, loads, format_table, frameworks))
        print(flush=True)
        if engine_ok:
            result["attention"] = attention_flash.run(threads, log, sizes=(512,) if a.quick else (512, 2048))
            print(attention_flash.table(result["attention"], format_table))
            print(flush=True)
    if "lm" in sections:  # not in the default list: loads three frameworks and starts a server, ~3 min
        from . import lm
        log("[benchmarks] language model (SmolLM2 GGUF: engine, llama.cpp, transformers f32; server streams) ...")
        try:
            result["lm"] = lm.run(threads, a.quick, log, engine=engine_ok)
            print(lm.table(result["lm"], format_table))
        except Exception as e:  # e.g. the GGUF package missing: the other sections still stand
            print(f"Language model: failed: {type(e).__name__}: {e}")
        print(flush=True)
    if "keras" in sections:
        from . import keras_models
        log("[benchmarks] Keras file (seed-004 LSTM) ...")
        rows, missing = keras_models.run(threads, frameworks, log, quick=a.quick)
        result["keras"], result["keras_missing"] = rows, missing
        print(keras_models.table(rows, missing, format_table, frameworks))
        print(flush=True)
    if "cpu" in sections:
        log("[benchmarks] CPU cost (one subprocess per framework) ...")
        rows = run_cpu(threads, a.quick, frameworks, log)
        result["cpu"] = rows
        print(cpu_table(rows))
        print(flush=True)
    if "train" in sections and engine_ok:
        from . import train_optim
        log("[benchmarks] training: optimizer step ...")
        rows = train_optim.run(threads, log, quick=a.quick)
        result["train_optim"] = rows
        print(train_optim.table(rows, format_table))
        print(flush=True)
        log("[benchmarks] training: train steps and epochs ...")
        try:
            from . import train_steps
            rows = train_steps.run(threads, log, quick=a.quick)
            result["train_steps"] = rows
            print(train_steps.table(rows, format_table))
        except Exception as e:  # e.g. torch missing: the optimizer rows above still stand
            print(f"Training steps: failed: {type(e).__name__}: {e}")
        print(flush=True)
    if "serve" in sections:  # not in the default list: ~2 minutes of servers and load
        from . import serve_bench
        log("[benchmarks] serving (servers and load generator in subprocesses, ~2 min) ...")
        result["serve"] = serve_bench.run(threads, a.quick, log)
        print(serve_bench.report(result["serve"], format_table))
        print(flush=True)
    result["meta"]["elapsed_s"] = time.perf_counter() - t_start
    print(f"# done in {result['meta']['elapsed_s']:.0f} s")
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1, default=float)
        os.replace(tmp, a.json)
        print(f"# rows saved to {a.json}")
    bad = any(r.get("errors") for r in result.get("models", []) + result.get("train_optim", [])
              + result.get("train_steps", []))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
