"""Token sampling: engine.lm.sampling.sample() vs transformers' logits warpers + torch.multinomial.

    ENGINE_NUM_THREADS=2 python -m benchmarks.lm_sampling [--vocab 49152 151936] [--batch 1 8]

Logits shaped like a language model's (a normal body, a few tokens well above it). Per setting,
prints the median microseconds of one sample() call (the whole batch: Python arguments + the one
native call), the native call alone, per row, and torch's time for the same filters on the same
rows (transformers' TopK/TopP/MinP warpers, softmax, multinomial; greedy: argmax), torch with
the engine's thread count.
"""

from __future__ import annotations

import argparse

import numpy as np

from engine import _C
from engine.lm.sampling import SamplingParams, SequenceSampler, sample

from .timing import measure

SETTINGS = {
    "greedy": SamplingParams(temperature=0),
    "temperature": SamplingParams(temperature=0.8),
    "top_k=40": SamplingParams(temperature=0.8, top_k=40),
    "top_p=0.9": SamplingParams(temperature=0.8, top_p=0.9),
    "min_p=0.05": SamplingParams(temperature=0.8, min_p=0.05),
    "k40+p0.95+pen1.1": SamplingParams(temperature=0.7, top_k=40, top_p=0.95, repetition_penalty=1.1),
}


def lm_like_logits(B: int, V: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, V)).astype(np.float32) * 2.0
    for b in range(B):  # a head of plausible tokens
        head = rng.choice(V, size=20, replace=False)
        x[b, head] += rng.uniform(6, 12, size=20).astype(np.float32)
    return x


def torch_sampler(params: SamplingParams, history):
    import torch
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    chain = []
    if params.repetition_penalty != 1:
        chain.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.temperature > 0:
        chain.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k:
        chain.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1:
        chain.append(TopPLogitsWarper(params.top_p))
    if params.min_p > 0:
        chain.append(MinPLogitsWarper(params.min_p))
    gen = torch.Generator().manual_seed(0)

    def run(scores, ids):
        for f in chain:
            scores = f(ids, scores)
        if params.temperature == 0:
            return scores.argmax(-1)
        return torch.multinomial(torch.softmax(scores, -1), 1, generator=gen)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, nargs="+", default=[49152])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--no-torch", action="store_true")
    a = ap.parse_args()
    head = f"{'V':>7} {'B':>3} {'setting':<18} {'sample() us':>12} {'native us':>10} {'us/row':>8}"
    print(head + ("" if a.no_torch else f" {'torch us':>9} {'torch/engine':>12}"))
    for V in a.vocab:
        for B in a.batch:
            x = lm_like_logits(B, V)
            history = np.random.default_rng(1).integers(0, V, size=(B, 256)).astype(np.int32)
            for name, params in SETTINGS.items():
                samplers = [SequenceSampler(params, prompt_ids=history[b].tolist()) for b in range(B)]
                t_all = measure(lambda: sample(x, samplers), min_time=0.3)
                p = np.array([s._row for s in samplers], np.float64)
                st = np.arange(B, dtype=np.uint64)
                hist = [s._penalty_ids() for s in samplers]
                t_nat = measure(lambda: _C.lm_sample(x, p, hist, st), min_time=0.3)
                row = f"{V:>7} {B:>3} {name:<18} {t_all.median_us:>12.1f} {t_nat.median_us:>10.1f}"
                row += f" {t_nat.median_us / B:>8.1f}"
                if not a.no_torch:
                    import torch

                    torch.set_num_threads(_C.num_threads())
                    run = torch_sampler(params, history)
                    xt, ids = torch.from_numpy(x.copy()), torch.from_numpy(history.astype(np.int64))
                    t_t = measure(lambda: run(xt, ids), min_time=0.3)
                    row += f" {t_t.median_us:>9.1f} {t_t.median_us / t_all.median_us:>12.2f}"
                print(row, flush=True)


if __name__ == "__main__":
    main()
