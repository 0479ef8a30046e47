"""Backward kernels: each registry step (run in a hand-built Program, as a planned training step
runs it) against torch's backward for the same layer, shapes and thread count (autograd with
the graph kept, channels-last tensors where torch has NHWC kernels). Each pair is checked
against the other before it is timed. Mostly the seed CNN's layers at batch 64 and 256.

    python -m benchmarks.train_grad [--threads N] [--batch 64 256] [--only conv pool ...] [--cpu]

ratio = engine / torch (lower is better). The two sides alternate in rounds and each keeps its
best round; on a loaded machine, --threads 1 --cpu (CPU time of the calling thread) is the
steadier figure (torch's OpenMP threads stall badly there when cores are oversubscribed).
"""

from __future__ import annotations

import argparse

import numpy as np

F32, I64 = 1, 7


def _program(name, inputs, outputs, ints, floats=()):
    """A one-step Program with every array bound per call; an int k in `outputs` writes input k
    in place (its slot is then bound as an output). Returns run()."""
    from engine import _C

    codes = {np.dtype(np.float32): 1, np.dtype(np.int64): 7, np.dtype(np.uint8): 2}
    prog = _C.Program()
    ins = [prog.new_slot() if a is not None else -1 for a in inputs]
    inplace = {o for o in outputs if isinstance(o, int)}
    outs = [ins[o] if isinstance(o, int) else prog.new_slot() for o in outputs]
    arrays = [inputs[o] if isinstance(o, int) else o for o in outputs]
    prog.add_step(name, 1, ins, outs, [codes[a.dtype] if a is not None else 0 for a in inputs],
                  [codes[o.dtype] for o in arrays], list(ints), list(floats))
    feeds = [(s, a) for k, (s, a) in enumerate(zip(ins, inputs)) if a is not None and k not in inplace]
    results = [(s, a) for s, a in zip(outs, arrays)]
    prog.set_io([(s, codes[a.dtype], a.nbytes) for s, a in feeds], [(s, codes[a.dtype], a.nbytes) for s, a in results])
    pool = _C.ContextPool(1)
    fa, ra = [a for _, a in feeds], [a for _, a in results]
    return lambda: prog.run(fa, ra, pool)


def _cases(B, torch):
    """(name, engine callables, torch's backward, the engine's results, torch's results -> the
    same layout)."""
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    cl = torch.channels_last
    out = []

    def conv(name, N, H, W, C, OC, K, pad, groups, want_dx):
        x = rng.standard_normal((N, H, W, C), dtype=np.float32)
        w = rng.standard_normal((K, K, C // groups, OC), dtype=np.float32)
        OH, OW = H + 2 * pad - K + 1, W + 2 * pad - K + 1
        dy = rng.standard_normal((N, OH, OW, OC), dtype=np.float32)
        ints = [N, H, W, C, OC, K, K, 1, 1, 1, 1, pad, pad, pad, pad, groups, 0]
        dx, dw, db = (np.empty_like(x), np.empty_like(w), np.empty(OC, np.float32))
        runs = [_program("conv2d_grad_weight", [dy, x], [dw, db], ints)]
        if want_dx:
            runs.append(_program("conv2d_grad_input", [dy, w], [dx], ints))
        tx = torch.tensor(x).permute(0, 3, 1, 2).contiguous(memory_format=cl).requires_grad_(want_dx)
        tw = torch.tensor(w).permute(3, 2, 0, 1).contiguous(memory_format=cl).requires_grad_()
        tb = torch.zeros(OC, requires_grad=True)
        y = F.conv2d(tx, tw, tb, padding=pad, groups=groups)
        g = torch.tensor(dy).permute(0, 3, 1, 2).contiguous(memory_format=cl)
        wrt = [tw, tb] + ([tx] if want_dx else [])
        out.append((name, runs, lambda: torch.autograd.grad(y, wrt, g, retain_graph=True),
                    [dw, db] + ([dx] if want_dx else []),
                    lambda r: [r[0].permute(2, 3, 1, 0), r[1]] + ([r[2].permute(0, 2, 3, 1)] if want_dx else [])))

    conv(f"conv 3x3 1->32 28x28 (dw, db) B={B}", B, 28, 28, 1, 32, 3, 0, 1, False)
    conv(f"conv 3x3 32->64 13x13 pad 1 B={B}", B, 13, 13, 32, 64, 3, 1, 1, True)
    conv(f"depthwise 3x3 64 28x28 B={B // 2}", B // 2, 28, 28, 64, 64, 3, 1, 64, True)

    # relu on the first conv's output, from y
    x = rng.standard_normal((B, 26, 26, 32), dtype=np.float32)
    y = np.maximum(x, 0)
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    dx = np.empty_like(x)
    tx = torch.tensor(x, requires_grad=True)
    ty = F.relu(tx)
    out.append((f"relu {tuple(x.shape)}", [_program("act_grad", [dy, None, y], [dx], [x.size, 1], [0, 0])],
                lambda ty=ty, g=torch.tensor(dy): torch.autograd.grad(ty, tx, g, retain_graph=True),
                [dx], lambda r: [r[0]]))

    # 2x2 max pool of that output
    dyp = rng.standard_normal((B, 13, 13, 32), dtype=np.float32)
    dxp = np.empty_like(x)
    txp = torch.tensor(x).permute(0, 3, 1, 2).contiguous(memory_format=cl).requires_grad_()
    typ = F.max_pool2d(txp, 2)
    gp = torch.tensor(dyp).permute(0, 3, 1, 2).contiguous(memory_format=cl)
    out.append((f"maxpool 2x2 {tuple(x.shape)}",
                [_program("pool2d_grad", [dyp, x], [dxp], [1, B, 26, 26, 32, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0])],
                lambda: torch.autograd.grad(typ, txp, gp, retain_graph=True),
                [dxp], lambda r: [r[0].permute(0, 2, 3, 1)]))

    def dense(M, K, N):
        xd = rng.standard_normal((M, K), dtype=np.float32)
        wd = (rng.standard_normal((K, N), dtype=np.float32) / np.sqrt(K)).astype(np.float32)
        dyd = rng.standard_normal((M, N), dtype=np.float32)
        o = [np.empty_like(xd), np.empty_like(wd), np.empty(N, np.float32)]
        tx2, tw2, tb2 = (torch.tensor(a, requires_grad=True) for a in (xd, wd, np.zeros(N, np.float32)))
        ty2 = tx2 @ tw2 + tb2
        g2 = torch.tensor(dyd)
        out.append((f"dense {K}->{N} B={M}", [_program("dense_grad", [dyd, xd, wd], o, [M, K, N, 0, 7, 0])],
                    lambda: torch.autograd.grad(ty2, [tx2, tw2, tb2], g2, retain_graph=True), o, list))

    dense(B, 5408, 128)
    dense(B, 128, 10)

    z = rng.standard_normal((B, 10), dtype=np.float32)
    lab = rng.integers(0, 10, B).astype(np.int64)
    loss, gz = np.empty(1, np.float32), np.empty_like(z)
    tz = torch.tensor(z, requires_grad=True)
    tl = F.cross_entropy(tz, torch.tensor(lab))
    out.append((f"softmax xent (loss + grad) B={B}x10",
                [_program("softmax_xent", [z, lab, None, None], [loss, gz], [B, 10, 2, 1])],
                lambda: torch.autograd.grad(F.cross_entropy(tz, torch.tensor(lab)), tz), [gz], list))

    # batch norm, training: forward + backward over (B, 26, 26, 32)
    M, C = B * 26 * 26, 32
    xb = rng.standard_normal((M, C), dtype=np.float32)
    gam, bet = np.ones(C, np.float32), np.zeros(C, np.float32)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    yb, mb, ib = np.empty_like(xb), np.empty(C, np.float32), np.empty(C, np.float32)
    dyb = rng.standard_normal((M, C), dtype=np.float32)
    dxb, dgb, dbb = np.empty_like(xb), np.empty(C, np.float32), np.empty(C, np.float32)
    fwd = _program("batchnorm_train_fwd", [xb, gam, bet, rm, rv], [yb, mb, ib, 3, 4], [M, C, 0],
                   [1e-3, 0.99])
    bwd = _program("batchnorm_grad", [dyb, xb, gam, mb, ib], [dxb, dgb, dbb], [M, C, 1, 7], [1e-3])
    txb = torch.tensor(xb.reshape(B, 26, 26, C)).permute(0, 3, 1, 2).contiguous(memory_format=cl).requires_grad_()
    tg, tbb = torch.ones(C, requires_grad=True), torch.zeros(C, requires_grad=True)
    gb = torch.tensor(dyb.reshape(B, 26, 26, C)).permute(0, 3, 1, 2).contiguous(memory_format=cl)

    def torch_bn():
        yy = F.batch_norm(txb, torch.zeros(C), torch.ones(C), tg, tbb, training=True, momentum=0.01, eps=1e-3)
        return torch.autograd.grad(yy, [txb, tg, tbb], gb)

    out.append((f"batchnorm train fwd+bwd {(B, 26, 26, C)}", [fwd, bwd], torch_bn, [dxb, dgb, dbb],
                lambda r: [r[0].permute(0, 2, 3, 1), r[1], r[2]]))

    n, V, D = B * 100, 10_000, 64
    idx = rng.integers(0, V, n).astype(np.int64)
    dye = rng.standard_normal((n, D), dtype=np.float32)
    dwe = np.empty((V, D), np.float32)
    twe = torch.zeros(V, D, requires_grad=True)
    tye = F.embedding(torch.tensor(idx), twe)
    ge = torch.tensor(dye)
    out.append((f"embedding {n} idx into {V}x{D}", [_program("embedding_grad", [dye, idx], [dwe], [n, V, D, 0])],
                lambda: torch.autograd.grad(tye, twe, ge, retain_graph=True), [dwe], list))
    return out


def _best_of_rounds(fa, fb, clock, rounds=7, reps=7):
    """Alternates rounds of the two sides (so both see the same machine load) and keeps each
    side's best round median, in microseconds."""
    def median(f):
        ts = []
        for _ in range(reps):
            t = clock()
            f()
            ts.append(clock() - t)
        return float(np.median(ts)) / 1e3
    for _ in range(2):
        fa(), fb()
    a, b = [], []
    for _ in range(rounds):
        a.append(median(fa))
        b.append(median(fb))
    return min(a), min(b)


def run(threads: int | None = None, batches=(64, 256), only=None, cpu: bool = False) -> list[dict]:
    import time

    import torch

    import engine

    if threads:
        engine.set_num_threads(threads)
    torch.set_num_threads(engine.get_num_threads())
    if cpu and engine.get_num_threads() != 1:
        raise SystemExit("--cpu measures the calling thread's CPU time: use it with --threads 1")
    clock = time.thread_time_ns if cpu else time.perf_counter_ns
    rows = []
    for B in batches:
        for name, runs, tfn, ours, theirs in _cases(B, torch):
            if only and not any(o in name for o in only):
                continue
            for r in runs:
                r()
            for got, want in zip(ours, theirs(tfn())):
                want = want.detach().numpy().reshape(got.shape)
                np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-2 * max(1.0, np.abs(want).max()), err_msg=name)
            te, tt = _best_of_rounds(lambda: [r() for r in runs], tfn, clock)
            rows.append({"case": name, "engine_us": te, "torch_us": tt, "ratio": te / tt})
            print(f"{name:48s} engine {te:9.1f} us   torch {tt:9.1f} us   ratio {te / tt:5.2f}", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    p.add_argument("--only", nargs="+", default=None)
    p.add_argument("--cpu", action="store_true", help="time CPU time of the calling thread (1 thread): "
                   "steadier than wall time on a loaded machine")
    a = p.parse_args(argv)
    run(a.threads, a.batch, a.only, a.cpu)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
