"""What the generation scheduler and the OpenAI front cost on their own: a zero-cost fake decoder
(tests/lm_fakes.py, SmolLM2's real tokenizer) behind the scheduler, then behind the HTTP server.

    python -m benchmarks.lm_serve [--tokens 200] [--streams 1 8]

Reports, per batch size: scheduler steps/s and the per-step and per-token overhead (decoder call
excluded as far as the fake allows: it still builds a (B, vocab) logits array); over HTTP with
SSE streaming through the `openai` client, per concurrency: generated tokens/s in all, time to
first token and inter-token time at the client (median). Greedy sampling throughout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def scheduler_overhead(batch: int, tokens: int) -> dict:
    from lm_fakes import FakeDecoder, smollm2_tokenizer_and_template

    from engine.lm.sampling import SamplingParams
    from engine.lm.scheduler import Scheduler
    tok = smollm2_tokenizer_and_template()[0]
    dec = FakeDecoder(tok.vocab_size, max_sequences=batch, max_context=tokens + 16)
    sched = Scheduler(dec, tok, max_tokens_per_step=512)
    finished, done = [], threading.Event()

    def sink(e):  # on the scheduler thread: never block here
        if e.finish_reason:
            finished.append(e)
            if len(finished) == batch:
                done.set()
    t0 = time.perf_counter()
    for i in range(batch):
        sched.submit([300 + i, 400], SamplingParams(temperature=0), tokens, (), sink)
    done.wait()
    dt = time.perf_counter() - t0
    sched.close()
    steps = sched.steps
    return {"batch": batch, "steps_per_s": steps / dt, "us_per_step": dt / steps * 1e6,
            "us_per_token": dt / (batch * tokens) * 1e6}


def http_streams(concurrency: int, tokens: int) -> dict:
    import openai
    from lm_fakes import FakeLoader, write_lm_version

    from engine.serve.server import Server
    with tempfile.TemporaryDirectory() as repo:
        write_lm_version(repo, "smol", 1, {"max_sequences": max(concurrency, 1), "max_context": tokens + 64})
        with Server(repo, http_port=0, socket_port=None, control="explicit", lm_loader=FakeLoader(0.0)) as s:
            client = openai.OpenAI(base_url=f"http://{s.http_address}/v1", api_key="x", max_retries=0, timeout=60)

            def one(i):
                t0 = time.perf_counter()
                stamps = []
                for chunk in client.completions.create(model="smol", prompt=[500 + i, 600], max_tokens=tokens,
                                                       temperature=0, stream=True):
                    if chunk.choices and chunk.choices[0].text:
                        stamps.append(time.perf_counter())
                return t0, stamps
            one(0)  # warm the connection pool and the code paths
            t0 = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                results = list(pool.map(one, range(concurrency)))
            wall = time.perf_counter() - t0
            client.close()
    ttft = [st[0] - t for t, st in results if st]
    itl = [b - a for _, st in results for a, b in zip(st, st[1:])]
    return {"concurrency": concurrency, "tokens_per_s": concurrency * tokens / wall,
            "ttft_ms_p50": statistics.median(ttft) * 1e3, "itl_ms_p50": statistics.median(itl) * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    for b in args.streams:
        r = scheduler_overhead(b, args.tokens)
        print(f"scheduler  batch {b:3d}: {r['steps_per_s']:8.0f} steps/s  {r['us_per_step']:7.1f} us/step  "
              f"{r['us_per_token']:6.1f} us/token")
    for c in args.streams:
        r = http_streams(c, args.tokens)
        print(f"http+sse   streams {c:3d}: {r['tokens_per_s']:8.0f} tokens/s  TTFT p50 {r['ttft_ms_p50']:6.2f} ms  "
              f"inter-token p50 {r['itl_ms_p50']:6.3f} ms")


if __name__ == "__main__":
    main()
