"""engine.lm.sampling against independent references: numpy argmax for greedy, a float64 numpy
filter chain and transformers' logits warpers for the kept set and its probabilities, a
chi-square test of drawn frequencies against the numpy distribution, transformers'
RepetitionPenaltyLogitsProcessor for the penalty; seeds reproduce runs whatever the batch; bad
settings and bad logits are clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from engine.lm.sampling import SamplingError, SamplingParams, SequenceSampler, sample, support

P = SamplingParams


# ---------------------------------------------------------------------------------------------
# The numpy reference (float64): penalty -> temperature -> top-k -> top-p -> min-p.


def ref_penalise(x, penalty, history):
    x = np.array(x, np.float32)
    if penalty != 1.0 and len(history):
        ids = np.unique(np.asarray(history))
        v = x[ids]
        x[ids] = np.where(v < 0, v * np.float32(penalty), v / np.float32(penalty))
    return x


def ref_probs(x, params: SamplingParams, history=()):
    """The distribution the params draw from: float64 (V,), zeros outside the kept set."""
    x = ref_penalise(x, params.repetition_penalty, history)
    V = x.size
    if params.temperature == 0:
        out = np.zeros(V)
        out[np.argmax(x)] = 1.0
        return out
    s = (x.astype(np.float64) - x.max()) / params.temperature
    keep = np.isfinite(s)
    order = np.lexsort((np.arange(V), -s))  # logit descending, id ascending
    if 0 < params.top_k < V:
        keep &= s >= s[order[params.top_k - 1]]
    if params.top_p < 1:
        w = np.where(keep, np.exp(s), 0.0)
        cum_before = np.cumsum(w[order]) / w.sum() - w[order] / w.sum()
        in_head = np.zeros(V, bool)
        in_head[order] = cum_before < params.top_p
        keep &= in_head
    if params.min_p > 0:
        keep &= np.exp(s) >= params.min_p
    w = np.where(keep, np.exp(s), 0.0)
    return w / w.sum()


def top_p_between(x, params, rng, head=8):
    """A top_p halfway between two consecutive cumulative masses of the head (no boundary case)."""
    pr = ref_probs(x, SamplingParams(temperature=params.temperature, top_k=params.top_k))
    order = np.lexsort((np.arange(x.size), -pr))
    cum = np.cumsum(pr[order])
    live = int((pr > 0).sum())
    if live < 2:
        return 1.0
    j = int(rng.integers(1, min(head, live)))
    return float((cum[j - 1] + cum[j]) / 2)


def min_p_between(x, temperature, rng, head=8):
    """A min_p geometrically between two distinct probability ratios of the head."""
    r = np.sort(np.exp((x.astype(np.float64) - x.max()) / temperature))[::-1]
    r = np.unique(r)[::-1]
    if r.size < 2:
        return 0.0
    j = int(rng.integers(1, min(head, r.size)))
    return float(np.sqrt(r[j - 1] * r[j]))


# ---------------------------------------------------------------------------------------------
# Greedy.


@pytest.mark.parametrize("V", [1, 2, 7, 33, 1000, 49152])
def test_greedy_is_numpy_argmax_lowest_id_on_ties(V, isa):
    rng = np.random.default_rng(V)
    B = 5
    x = rng.normal(size=(B, V)).astype(np.float32)
    if V > 3:  # ties for the max: numpy's argmax (first) is the reference
        x[1, [V - 1, V // 2, 2]] = x[1].max() + 1
        x[2] = np.round(x[2])
        x[3, : V // 2] = -np.inf
    samplers = [SequenceSampler(P(temperature=0, top_k=3, top_p=0.5, seed=b)) for b in range(B)]
    got = sample(x.copy(), samplers)
    assert got.dtype == np.int32 and got.shape == (B,)
    np.testing.assert_array_equal(got, np.argmax(x, axis=1))


def test_greedy_with_penalty_matches_transformers():
    torch = pytest.importorskip("torch")
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    rng = np.random.default_rng(1)
    for _ in range(20):
        V = int(rng.integers(5, 300))
        x = (rng.normal(size=V) * 3).astype(np.float32)
        hist = rng.integers(0, V, size=int(rng.integers(1, 20)))
        pen = float(rng.uniform(1.05, 3.0))
        ref = RepetitionPenaltyLogitsProcessor(pen)(torch.tensor(hist[None]), torch.tensor(x[None]))[0].numpy()
        s = SequenceSampler(P(temperature=0, repetition_penalty=pen), prompt_ids=hist.tolist())
        assert sample(x[None].copy(), [s])[0] == np.argmax(ref)


# ---------------------------------------------------------------------------------------------
# The kept set and its probabilities.


def check_support(x, params, history=()):
    ids, probs = support(x, params, history)
    ref = ref_probs(x, params, history)
    want = np.flatnonzero(ref)
    np.testing.assert_array_equal(ids, want, err_msg=f"kept set differs for {params}")
    np.testing.assert_allclose(probs, ref[want], rtol=1e-5, atol=1e-9)


def random_params(rng, x):
    t = float(rng.choice([0.3, 0.7, 1.0, 1.5]))
    base = P(temperature=t, top_k=int(rng.choice([0, 1, 3, 17, 10**6])))
    top_p = top_p_between(x, base, rng) if rng.random() < 0.6 else 1.0
    min_p = min_p_between(x, t, rng) if rng.random() < 0.4 else 0.0
    return P(temperature=t, top_k=base.top_k, top_p=top_p, min_p=min_p)


@pytest.mark.parametrize("V,scale", [(5, 1.0), (40, 2.0), (517, 0.5), (3000, 4.0), (49152, 3.0), (49152, 0.05)])
def test_kept_set_equals_numpy_filter(V, scale, isa):
    # scale 0.05 is a flat distribution: the candidate threshold has to fall back to every token.
    rng = np.random.default_rng(V + int(scale * 100))
    for _ in range(12 if V < 10000 else 4):
        x = (rng.normal(size=V) * scale).astype(np.float32)
        check_support(x, random_params(rng, x))


@pytest.mark.parametrize("V", [700, 49152])
def test_top_p_when_most_weight_is_far_below_the_top(V, isa):
    # A few tokens on top and a long tail 9-12 logits down that holds most of the mass: the first
    # candidate threshold falls short and the histogram pass has to find the head.
    rng = np.random.default_rng(V)
    for _ in range(6):
        x = (rng.normal(size=V) * 0.7).astype(np.float32)
        x[rng.choice(V, 5, replace=False)] += np.float32(rng.uniform(9, 12))
        t = float(rng.choice([0.9, 1.0, 1.2]))
        base = P(temperature=t)
        for _ in range(3):
            check_support(x, P(temperature=t, top_p=top_p_between(x, base, rng, head=V)))
        check_support(x, P(temperature=t, top_p=0.97, min_p=min_p_between(x, t, rng, head=V)))


@pytest.mark.parametrize("k", [1, 40, 1000, 3000, 20000])
def test_top_k_at_a_large_vocabulary(k, isa):
    # Small k against V finds the k-th logit from a sample of the row; large k from a heap.
    rng = np.random.default_rng(k)
    V = 49152
    x = (rng.normal(size=V) * 2).astype(np.float32)
    x[rng.choice(V, 20, replace=False)] += 9
    check_support(x, P(temperature=0.8, top_k=k))
    ties = np.round(x).astype(np.float32)  # thousands of equal logits around the k-th
    check_support(ties, P(top_k=k))
    sorted_row = np.sort(x)  # ascending: the strided sample sees only small values first
    check_support(sorted_row, P(top_k=k, top_p=0.999))


def test_top_k_keeps_ties_at_the_edge(isa):
    rng = np.random.default_rng(2)
    for _ in range(30):
        V = int(rng.integers(2, 60))
        x = rng.integers(-3, 3, size=V).astype(np.float32)  # many ties
        for k in (1, 2, 5, V - 1):
            check_support(x, P(top_k=max(k, 1)))


def test_each_filter_alone_and_min_p_one():
    x = np.array([1.0, 3.0, 3.0, 2.0, -np.inf, 0.5], np.float32)
    assert support(x, P(top_k=1))[0].tolist() == [1, 2]  # tie at the edge kept
    assert support(x, P(min_p=1.0))[0].tolist() == [1, 2]
    assert support(x, P(temperature=0))[0].tolist() == [1]
    assert support(x, P())[0].tolist() == [0, 1, 2, 3, 5]  # -inf never kept
    # top_p tiny: only the first token in (logit desc, id asc) order
    assert support(x, P(top_p=1e-6))[0].tolist() == [1]


def test_kept_set_matches_transformers_warpers():
    torch = pytest.importorskip("torch")
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    rng = np.random.default_rng(3)
    for _ in range(40):
        V = int(rng.integers(3, 400))
        x = (rng.normal(size=V) * 2).astype(np.float32)
        params = random_params(rng, x)
        scores = torch.tensor(x[None], dtype=torch.float64)
        ids = torch.zeros((1, 1), dtype=torch.long)
        scores = TemperatureLogitsWarper(params.temperature)(ids, scores)
        if params.top_k:
            scores = TopKLogitsWarper(params.top_k)(ids, scores)
        if params.top_p < 1:
            scores = TopPLogitsWarper(params.top_p)(ids, scores)
        if params.min_p > 0:
            scores = MinPLogitsWarper(params.min_p)(ids, scores)
        want = torch.softmax(scores, -1)[0].numpy()
        got_ids, got_p = support(x, params)
        np.testing.assert_array_equal(got_ids, np.flatnonzero(want), err_msg=str(params))
        np.testing.assert_allclose(got_p, want[got_ids], rtol=1e-5)


def test_repetition_penalty_matches_transformers():
    torch = pytest.importorskip("torch")
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    rng = np.random.default_rng(4)
    for _ in range(20):
        V = int(rng.integers(3, 200))
        x = (rng.normal(size=V) * 3).astype(np.float32)
        x[rng.integers(0, V)] = 0.0
        hist = rng.integers(0, V, size=int(rng.integers(1, 30)))  # repeats: each id penalised once
        pen = float(rng.choice([0.5, 1.3, 2.0]))
        ref = RepetitionPenaltyLogitsProcessor(pen)(torch.tensor(hist[None]), torch.tensor(x[None]))[0].numpy()
        ids, probs = support(x, P(repetition_penalty=pen), hist.tolist())
        want = np.exp(ref.astype(np.float64) - ref.max())
        want /= want.sum()
        np.testing.assert_array_equal(ids, np.arange(V))
        np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# The draw.


def chi_square_ok(counts, probs, n):
    from scipy.stats import chisquare

    expected = probs * n
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return chisquare(obs, exp).pvalue


def draw_many(x, params, n):
    """n tokens, one per row of a batch of identical logits, each row its own seed."""
    samplers = [SequenceSampler(P(**{**params.__dict__, "seed": 1000 + i})) for i in range(n)]
    return sample(np.broadcast_to(x, (n, x.size)).copy(), samplers)


@pytest.mark.parametrize(
    "params",
    [P(), P(temperature=0.6), P(temperature=1.7, top_k=5), P(top_p=0.8), P(min_p=0.1, temperature=1.3),
     P(top_k=8, top_p=0.9, min_p=0.05, temperature=0.8), P(repetition_penalty=1.8)],
    ids=["plain", "t0.6", "topk", "topp", "minp", "all", "penalty"],
)
def test_draw_frequencies_match_numpy(params):
    rng = np.random.default_rng(5)
    x = (rng.normal(size=24) * 1.5).astype(np.float32)
    hist = [0, 3, 3, 7]
    ref = ref_probs(x, params, hist if params.repetition_penalty != 1 else ())
    n = 6000
    samplers = [
        SequenceSampler(P(**{**params.__dict__, "seed": 7 * i + 1}), prompt_ids=hist) for i in range(n)
    ]
    got = sample(np.broadcast_to(x, (n, x.size)).copy(), samplers)
    counts = np.bincount(got, minlength=x.size)
    assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(ref)), "a token outside the kept set was drawn"
    assert chi_square_ok(counts, ref, n) > 1e-4


def test_sequential_draws_of_one_sequence_match_numpy():
    rng = np.random.default_rng(6)
    x = (rng.normal(size=12)).astype(np.float32)
    s = SequenceSampler(P(temperature=0.9, top_p=0.95, seed=123))
    n = 3000
    got = np.array([sample(x[None].copy(), [s])[0] for _ in range(n)])
    ref = ref_probs(x, P(temperature=0.9, top_p=0.95))
    assert set(got) <= set(np.flatnonzero(ref))
    assert chi_square_ok(np.bincount(got, minlength=12), ref, n) > 1e-4


def test_unfiltered_draw_over_many_blocks_never_picks_minus_inf(isa):
    # A big vocabulary, mostly -inf: the unfiltered walk skips whole empty blocks.
    rng = np.random.default_rng(7)
    V, n = 5000, 3000
    x = np.full(V, -np.inf, np.float32)
    live = rng.choice(V, size=12, replace=False)
    x[live] = rng.normal(size=12).astype(np.float32)
    got = draw_many(x, P(), n)
    assert set(got.tolist()) <= set(live.tolist())
    ref = ref_probs(x, P())
    assert chi_square_ok(np.bincount(got, minlength=V)[live], ref[live], n) > 1e-4


# ---------------------------------------------------------------------------------------------
# Reproducibility.


def run(samplers, x_rows):
    return [sample(x.copy(), samplers).tolist() for x in x_rows]


def test_seed_reproduces_and_is_independent_of_the_batch(isa):
    rng = np.random.default_rng(8)
    V, steps = 3001, 6
    params = [P(seed=42), P(temperature=0.8, top_k=50, seed=43), P(top_p=0.9, seed=44), P(min_p=0.05, seed=45),
              P(temperature=0, seed=46), P(repetition_penalty=1.3, seed=47), P(seed=48), P(top_p=0.5, top_k=9, seed=49)]
    logits = [(rng.normal(size=(len(params), V)) * 2).astype(np.float32) for _ in range(steps)]

    def batch_run(order):
        samplers = [SequenceSampler(params[i], prompt_ids=[1, 2, 3]) for i in order]
        toks = []
        for x in logits:
            t = sample(x[order].copy(), samplers)
            for s, tok in zip(samplers, t):
                s.accept(int(tok))
            toks.append(dict(zip(order, t.tolist())))
        return toks

    whole = batch_run(list(range(8)))
    assert whole == batch_run(list(range(8)))  # same seeds, same tokens
    assert whole == batch_run([5, 2, 7, 0, 1, 6, 3, 4])  # order within the batch does not matter
    for i in range(8):  # nor does the batch: each sequence alone
        alone = batch_run([i])
        assert [w[i] for w in whole] == [a[i] for a in alone]
    other = [SequenceSampler(P(seed=1042))]
    assert [sample(x[:1].copy(), other)[0] for x in logits] != [w[0] for w in whole]


def test_history_grows_and_feeds_the_penalty():
    s = SequenceSampler(P(temperature=0, repetition_penalty=100.0), prompt_ids=[2])
    x = np.array([[1.0, 3.0, 4.0, 2.0]], np.float32)
    picks = []
    for _ in range(3):  # each pick is penalised away next time: 2 (prompt) -> 1, 3, 0
        picks.append(int(sample(x, [s])[0]))
        s.accept(picks[-1])
    assert picks == [1, 3, 0]
    for t in range(200):
        s.accept(t % 4)
    assert s.history.tolist() == [2, 1, 3, 0] + [t % 4 for t in range(200)]
    with pytest.raises(SamplingError, match="token id"):
        s.accept(-1)
    with pytest.raises(SamplingError, match="prompt_ids"):
        SequenceSampler(P(), prompt_ids=[-3])


def test_empty_batch():
    assert sample(np.zeros((0, 10), np.float32), []).shape == (0,)


def test_rng_advances_once_per_call_and_logits_untouched():
    x = np.random.default_rng(9).normal(size=(2, 100)).astype(np.float32)
    before = x.copy()
    a, b = SequenceSampler(P(seed=5)), SequenceSampler(P(temperature=0, seed=5))
    sample(x, [a, b])
    np.testing.assert_array_equal(x, before)
    assert a.rng_state == b.rng_state != 5  # greedy rows advance too


# ---------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize(
    "field,value",
    [("temperature", -0.1), ("temperature", float("nan")), ("temperature", float("inf")), ("top_k", -1),
     ("top_k", 2.5), ("top_p", 0.0), ("top_p", 1.5), ("min_p", -0.01), ("min_p", 1.01),
     ("repetition_penalty", 0.0), ("repetition_penalty", -1.0), ("seed", -1), ("seed", 2**64), ("seed", 1.5),
     ("temperature", "hot")],
)
def test_bad_params_name_the_field(field, value):
    with pytest.raises(SamplingError, match=field):
        P(**{field: value}).check()
    with pytest.raises(SamplingError, match=field):
        SequenceSampler(P(**{field: value}))


def test_bad_logits_name_the_row_and_change_nothing():
    from engine.errors import DTypeError, EngineError, ShapeError

    x = np.zeros((3, 10), np.float32)
    samplers = [SequenceSampler(P(seed=i)) for i in range(3)]
    states = [s.rng_state for s in samplers]
    x[1, 4] = np.nan
    with pytest.raises(SamplingError, match="row 1.*NaN at token 4"):
        sample(x, samplers)
    x[1, 4] = np.inf
    with pytest.raises(SamplingError, match=r"row 1.*\+inf at token 4"):
        sample(x, samplers)
    x[1] = 0
    x[2] = -np.inf
    with pytest.raises(SamplingError, match="row 2.*-inf"):
        sample(x, samplers)
    assert [s.rng_state for s in samplers] == states
    x[2] = 0
    with pytest.raises(ShapeError):
        sample(x, samplers[:2])
    with pytest.raises(ShapeError):
        sample(x[0], samplers[:1])
    with pytest.raises(DTypeError):
        sample(x.astype(np.float64), samplers)
    s = SequenceSampler(P(repetition_penalty=1.2), prompt_ids=[3, 10])
    with pytest.raises(SamplingError, match="history id 10"):
        sample(np.zeros((1, 10), np.float32), [s])
    assert issubclass(SamplingError, EngineError)
