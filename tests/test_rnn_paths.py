"""The recurrent kernel's code paths against onnxruntime, on every ISA and on 1 and 2 threads:
batch 1 (x·Wᵀ projected first; unit blocks split over threads when the hidden size is large),
more rows (projection first up to batch 4, fused beyond; rows split over threads), hidden sizes
that leave a partial block of 16 units, sequence_lens with zeros, reverse and bidirectional
layers, runtime and packed weights, and the general gate path (clip, other activations,
peepholes, input_forget)."""

from __future__ import annotations

import numpy as np
import pytest

from test_ops_seq import assert_close, feeds_of, model, rnn_inputs, rnn_outputs, run_engine, run_ort


def inputs(op, rng, T, B, In, H, direction="forward", **kw):
    """rnn_inputs with W and R scaled by 1/√H: uniform(-1, 1) recurrences of many units are
    chaotic (float rounding grows step by step), trained ones are not."""
    ins = rnn_inputs(op, rng, T, B, In, H, direction, **kw)
    return [(n, a / np.float32(np.sqrt(H)) if n in ("W", "R") else a) for n, a in ins]

# (op, attrs, T, B, In, H, lens, direction)
CASES = [
    ("LSTM", {}, 6, 1, 5, 67, None, "forward"),
    ("LSTM", {}, 4, 1, 5, 130, None, "reverse"),
    ("LSTM", {}, 40, 13, 7, 17, [40, 1, 0, 3, 35, 2, 4, 39, 40, 1, 2, 3, 4], "reverse"),
    ("LSTM", {}, 4, 3, 3, 33, [4, 0, 2], "bidirectional"),
    ("GRU", {"linear_before_reset": 0}, 6, 1, 5, 160, None, "reverse"),
    ("GRU", {"linear_before_reset": 0}, 40, 13, 7, 17, None, "bidirectional"),
    ("GRU", {"linear_before_reset": 1}, 6, 2, 5, 67, [6, 3], "forward"),
    ("GRU", {"linear_before_reset": 1}, 3, 1, 5, 130, None, "forward"),
    ("GRU", {"linear_before_reset": 1}, 20, 14, 4, 40, None, "reverse"),
    ("RNN", {}, 5, 1, 4, 400, None, "bidirectional"),
    ("RNN", {}, 30, 13, 6, 64, [30, 0, 1, 2, 3, 4, 30, 29, 3, 2, 1, 0, 30], "forward"),
    ("LSTM", {}, 40, 3, 6, 64, [40, 17, 39], "reverse"),
    ("LSTM", {"clip": 0.7, "activations": ["HardSigmoid", "Softsign", "Elu"], "activation_alpha": [0.3, 0.7],
              "activation_beta": [0.45]}, 20, 13, 5, 33, None, "forward"),
    ("LSTM", {"input_forget": 1}, 5, 1, 3, 130, None, "forward"),
    ("GRU", {"clip": 0.5, "activations": ["Sigmoid", "Relu"]}, 4, 2, 5, 67, None, "forward"),
    ("GRU", {"clip": 0.5, "activations": ["Sigmoid", "Relu"], "linear_before_reset": 1}, 4, 1, 5, 130, None,
     "forward"),
]


@pytest.mark.parametrize("case", range(len(CASES)),
                         ids=[f"{c[0]}-B{c[3]}-H{c[5]}-{c[7]}" + ("-" + "-".join(c[1]) if c[1] else "") for c in CASES])
def test_rnn_paths_vs_onnxruntime(case, isa, threads):
    op, attrs, T, B, In, H, lens, direction = CASES[case]
    rng = np.random.default_rng(case)
    ins = inputs(op, rng, T, B, In, H, direction, lens=lens, init=True, peep=op == "LSTM")
    attrs = {"hidden_size": H, "direction": direction, **attrs}
    want = run_ort(model(op, ins, rnn_outputs(op), attrs, opset=22), feeds_of(ins))
    for weights in ((), ("W", "R", "B", "P")):  # runtime weights; packed weights
        blob = model(op, ins, rnn_outputs(op), attrs, opset=22, weights=weights)
        assert_close(run_engine(blob, feeds_of(ins, weights)), want)


def test_rnn_long_sequence_batch_1(threads):
    """Many steps at batch 1: the per-step barrier of the units split over a long loop."""
    rng = np.random.default_rng(9)
    ins = inputs("LSTM", rng, 200, 1, 8, 144, init=True)
    blob = model("LSTM", ins, rnn_outputs("LSTM"), {"hidden_size": 144}, opset=22, weights=("W", "R", "B"))
    assert_close(run_engine(blob, feeds_of(ins, ("W", "R", "B"))), run_ort(blob, feeds_of(ins, ("W", "R", "B"))))
