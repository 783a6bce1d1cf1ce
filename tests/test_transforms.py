"""The rival transforms against cases computed by hand from their papers, brute-force enumeration,
and the core's numeric-kind contract."""

import itertools
import math

import numpy as np
import pytest

from mara_rl.transforms import (
    TRANSFORMS,
    get_transform,
    grpo_passk_advantages,
    OutcomeCounts,
    outcome_batch_rewards,
    outcome_ucb_rewards,
    passk_advantages,
    pkpo_rewards,
    register,
    unlikeliness_rewards,
)


# ---- unlikeliness reward (He et al. 2506.02355): r = R (1 - penalty * rank / G), rank 0 = least likely ----

def test_unlikeliness_by_hand():
    # G = 3, all correct; log-likelihoods -0.5 (most likely, rank 2), -2 (rank 0), -1 (rank 1).
    # r = 1 - 0.25 * [2, 0, 1] / 3 = [0.8333.., 1, 0.91666..]
    out = unlikeliness_rewards(np.array([1.0, 1.0, 1.0]), np.array([-0.5, -2.0, -1.0]), penalty=0.25)
    np.testing.assert_allclose(out, [1 - 0.5 / 3, 1.0, 1 - 0.25 / 3])


def test_unlikeliness_ties_share_their_mean_rank_and_wrong_answers_stay_zero():
    # ranks of [-1, -3, -2, -1]: -3 -> 0, -2 -> 1, the two -1 share (2 + 3) / 2 = 2.5.
    # r = 1 - 0.25 * 2.5 / 4 = 0.84375 for both ties; the wrong sample keeps 0.
    out = unlikeliness_rewards(np.array([1.0, 1.0, 0.0, 1.0]), np.array([-1.0, -3.0, -2.0, -1.0]), penalty=0.25)
    np.testing.assert_allclose(out, [0.84375, 1.0, 0.0, 0.84375])


def test_unlikeliness_ranks_within_each_group():
    rewards = np.array([1.0, 1.0, 1.0, 1.0])
    logps = np.array([-1.0, -5.0, -2.0, -0.1])
    # group a = samples 0, 2 (ranks 1, 0); group b = samples 1, 3 (ranks 0, 1); G = 2: r = 1 - 0.5 * rank / 2
    out = unlikeliness_rewards(rewards, logps, penalty=0.5, group_ids=["a", "b", "a", "b"])
    np.testing.assert_allclose(out, [0.75, 1.0, 1.0, 0.75])


# ---- PKPO (Walder & Karkhanis 2505.15201): r_i = n s_i, s_i the subset-average gradient weight ----

def brute_pkpo(g, k):
    n = len(g)
    s = np.zeros(n)
    for subset in itertools.combinations(range(n), k):
        best = max(g[i] for i in subset)
        for i in subset:
            s[i] += best
    return n * s / math.comb(n, k)


def test_pkpo_binary_by_hand():
    # n = 4, c = 2 correct, k = 2. Correct: every pair holding it passes: r = n * (3 / 6) = 2 = k.
    # Incorrect: of its 3 pairs, the 2 with a correct partner pass: r = 4 * 2 / 6 = 4/3
    #   = k (1 - C(n-1-c, k-1) / C(n-1, k-1)) = 2 (1 - 1/3).
    np.testing.assert_allclose(pkpo_rewards(np.array([1.0, 0.0, 1.0, 0.0]), k=2), [2.0, 4 / 3, 2.0, 4 / 3])


def test_pkpo_continuous_by_hand():
    # g = [0.2, 0.5, 0.9], k = 2: pair maxima {0,1}: 0.5, {0,2}: 0.9, {1,2}: 0.9.
    # r_0 = 3 * (0.5 + 0.9) / 3 = 1.4, r_1 = 1.4, r_2 = 1.8; k = 3: one triple, max 0.9, r = 3 * 0.9 = 2.7.
    g = np.array([0.5, 0.2, 0.9])
    np.testing.assert_allclose(pkpo_rewards(g, k=2), [1.4, 1.4, 1.8])
    np.testing.assert_allclose(pkpo_rewards(g, k=3), [2.7, 2.7, 2.7])
    np.testing.assert_allclose(pkpo_rewards(g, k=1), g)


def test_pkpo_matches_enumeration_over_subsets_per_group():
    rng = np.random.default_rng(0)
    for _ in range(20):
        sizes = rng.integers(3, 8, size=3)
        ids = np.repeat(np.arange(3), sizes)
        rng.shuffle(ids)
        g = rng.choice([0.0, 0.25, 0.5, 1.0], size=ids.size)  # ties on purpose
        k = int(rng.integers(1, sizes.min() + 1))
        out = pkpo_rewards(g, k=k, group_ids=ids)
        for label in range(3):
            np.testing.assert_allclose(out[ids == label], brute_pkpo(list(g[ids == label]), k), atol=1e-12)


# ---- Pass@k Training's analytic advantages (Chen et al. 2508.10751) ----

def brute_passk_advantages(r, k):
    subsets = list(itertools.combinations(range(len(r)), k))
    values = np.array([max(r[i] for i in s) for s in subsets])
    sigma = values.std()
    adv = np.zeros(len(r))
    for s, v in zip(subsets, values):
        for i in s:
            adv[i] += 0.0 if sigma == 0 else (v - values.mean()) / sigma
    return adv / math.comb(len(r) - 1, k - 1)


def test_passk_advantage_by_hand():
    # N = 4, one correct, k = 2: Rbar = 1 - C(3,2)/C(4,2) = 1/2, sigma = 1/2,
    # A_pos = (1/2) / (1/2) = 1, A_neg = (1 - 1/2 - C(2,1)/C(3,1)) / (1/2) = -1/3.
    np.testing.assert_allclose(passk_advantages(np.array([0.0, 1.0, 0.0, 0.0]), k=2), [-1 / 3, 1.0, -1 / 3, -1 / 3])
    # k = 1 is GRPO with the population std: Rbar = 1/4, sigma = sqrt(3)/4: A_pos = sqrt(3), A_neg = -1/sqrt(3).
    np.testing.assert_allclose(passk_advantages(np.array([0.0, 1.0, 0.0, 0.0]), k=1),
                               [-1 / math.sqrt(3), math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3)])
    np.testing.assert_array_equal(passk_advantages(np.ones(4), k=2), np.zeros(4))


def test_passk_advantage_matches_enumeration_and_sums_to_zero():
    rng = np.random.default_rng(1)
    for _ in range(20):
        r = rng.integers(0, 2, size=int(rng.integers(2, 8))).astype(float)
        k = int(rng.integers(1, r.size + 1))
        out = passk_advantages(r, k=k)
        np.testing.assert_allclose(out, brute_passk_advantages(list(r), k), atol=1e-10)
        assert abs(out.sum()) < 1e-9


# ---- verl grpo_passk ----

def test_grpo_passk_by_hand():
    # [1, 0, 0.5, 0]: gap 1 - 0.5 = 0.5; unbiased std: mean 0.375, squares sum 0.6875, / 3, sqrt = 0.478714
    out = grpo_passk_advantages(np.array([1.0, 0.0, 0.5, 0.0]))
    np.testing.assert_allclose(out, [0.5 / (math.sqrt(0.6875 / 3) + 1e-6), 0, 0, 0])
    np.testing.assert_allclose(grpo_passk_advantages(np.array([1.0, 0.0, 0.5, 0.0]), norm_by_std=0), [0.5, 0, 0, 0])
    # a tie for the best gives all zeros; per group, the first best sample moves
    np.testing.assert_array_equal(grpo_passk_advantages(np.array([1.0, 1.0, 0.0])), np.zeros(3))
    out = grpo_passk_advantages(np.array([0.0, 2.0, 1.0, 3.0]), group_ids=[0, 0, 1, 1], norm_by_std=0)
    np.testing.assert_allclose(out, [0.0, 2.0, 0.0, 2.0])


# ---- batch outcome exploration (Song et al. 2509.06941) ----

def test_outcome_batch_by_hand():
    # n = 4; "1" twice: each loses 0.5 * 1/4; "x" and "2" are unique.
    out = outcome_batch_rewards(np.array([1.0, 1.0, 0.0, 1.0]), ["1", "1", "x", "2"], coef=0.5)
    np.testing.assert_allclose(out, [0.875, 0.875, 0.0, 1.0])
    # groups count separately: "1" once in each group of 2
    out = outcome_batch_rewards(np.ones(4), ["1", "2", "1", "1"], coef=1.0, group_ids=[0, 0, 1, 1])
    np.testing.assert_allclose(out, [1.0, 1.0, 0.5, 0.5])


# ---- historical outcome exploration (Song et al. 2509.06941): r = R + coef / sqrt(N) ----

def test_outcome_ucb_by_hand():
    # counts 1, 4, 16: bonuses 0.5, 0.25, 0.125
    out = outcome_ucb_rewards(np.array([1.0, 1.0, 0.0]), np.array([1, 4, 16]), coef=0.5)
    np.testing.assert_allclose(out, [1.5, 1.25, 0.125])


def test_outcome_counts_run_across_batches_per_prompt():
    counts = OutcomeCounts()
    # batch 1: prompt p answers "1" twice and "2" once; prompt q answers "1" once
    np.testing.assert_array_equal(counts.update(["p", "p", "p", "q"], ["1", "1", "2", "1"]), [2, 2, 1, 1])
    # evaluation does not count; training does
    np.testing.assert_array_equal(counts.update(["p"], ["2"], record=False), [2])
    np.testing.assert_array_equal(counts.update(["p", "q"], ["2", "2"]), [2, 1])
    assert counts.counts[OutcomeCounts.key("p", "2")] == 2


# ---- numeric kinds, edges, errors, registry ----

CALLS = {
    "unlikeliness": lambda r, **kw: unlikeliness_rewards(r, np.linspace(-3, -1, len(r)), **kw),
    "pkpo": lambda r, **kw: pkpo_rewards(r, k=2, **kw),
    "outcome_batch": lambda r, **kw: outcome_batch_rewards(r, ["a", "b"] * (len(r) // 2), **kw),
    "outcome_ucb": lambda r, **kw: outcome_ucb_rewards(r, np.arange(1, len(r) + 1), **kw),
    "passk_advantage": lambda r, **kw: passk_advantages(r, k=2, **kw),
    "grpo_passk": lambda r, **kw: grpo_passk_advantages(r, **kw),
}


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int64", "bool"])
def test_every_numpy_kind(name, dtype):
    base = np.array([1, 0, 1, 1, 0, 1], dtype=np.float64)
    out = CALLS[name](base.astype(dtype), group_ids=[0, 0, 0, 1, 1, 1])
    expected = CALLS[name](base, group_ids=[0, 0, 0, 1, 1, 1])
    assert isinstance(out, np.ndarray)
    assert out.dtype == (np.float32 if dtype in ("float16", "float32") else np.float64)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64", "int64"])
def test_every_torch_kind(name, dtype):
    torch = pytest.importorskip("torch")
    base = np.array([1, 0, 1, 1, 0, 1], dtype=np.float64)
    out = CALLS[name](torch.tensor(base).to(getattr(torch, dtype)))
    assert isinstance(out, torch.Tensor)
    assert out.dtype == (torch.float64 if dtype == "float64" else torch.get_default_dtype()
                         if dtype == "int64" else torch.float32)
    np.testing.assert_allclose(out.double().numpy(), CALLS[name](base), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_empty_input_gives_empty_output(name):
    assert CALLS[name](np.zeros(0)).shape == (0,)


def test_huge_and_tiny_values_stay_exact():
    # pkpo with n = 60, k = 30: C(60, 30) ~ 1.2e17 is handled in log space
    r = np.r_[np.ones(3), np.zeros(57)]
    out = pkpo_rewards(r, k=30)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:3], 30.0)
    # unlikeliness with log-likelihood gaps of 1e4 nats and -inf: only the order counts
    out = unlikeliness_rewards(np.ones(3), np.array([-1e4, -np.inf, 0.0]), penalty=0.3)
    np.testing.assert_allclose(out, [1 - 0.3 / 3, 1.0, 1 - 0.3 * 2 / 3])


@pytest.mark.parametrize("call,match", [
    (lambda: pkpo_rewards(np.array([1.0, np.nan])), "finite"),
    (lambda: pkpo_rewards(np.ones((2, 2))), "1-D"),
    (lambda: pkpo_rewards(np.ones(3), k=4), "at least k"),
    (lambda: pkpo_rewards(np.ones(3), k=0), "integer >= 1"),
    (lambda: pkpo_rewards(np.ones(3), k=1.5), "integer >= 1"),
    (lambda: passk_advantages(np.array([0.5, 1.0]), k=1), "0/1 rewards"),
    (lambda: unlikeliness_rewards(np.ones(2), np.ones(3)), "shape"),
    (lambda: unlikeliness_rewards(np.ones(2), np.array([0.0, np.nan])), "NaN"),
    (lambda: unlikeliness_rewards(np.ones(2), np.zeros(2), penalty=-1), ">= 0"),
    (lambda: outcome_batch_rewards(np.ones(2), ["a"]), "one answer per reward"),
    (lambda: outcome_batch_rewards(np.ones(2), [["a"], ["b"]]), "hashable"),
    (lambda: grpo_passk_advantages(np.ones(3), group_ids=[0, 0, 1]), "at least 2"),
    (lambda: outcome_ucb_rewards(np.ones(2), np.array([1, 0])), "counts >= 1"),
    (lambda: outcome_ucb_rewards(np.ones(2), np.array([1])), "shape"),
    (lambda: get_transform("nope"), "unknown transform 'nope'"),
    (lambda: get_transform("unlikeliness")(np.ones(2)), "needs policy_logprobs"),
])
def test_errors_are_one_line_value_errors(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_registry_names_kinds_and_defaults():
    assert {n: t.kind for n, t in TRANSFORMS.items()} == {
        "unlikeliness": "reward", "pkpo": "reward", "outcome_batch": "reward", "outcome_ucb": "reward",
        "passk_advantage": "advantage", "grpo_passk": "advantage"}
    for t in TRANSFORMS.values():
        assert t.default in t.settings
    # the registered call uses the recommended knob when none is given
    np.testing.assert_allclose(get_transform("pkpo")(np.array([1.0, 0, 0, 0, 0])), pkpo_rewards(
        np.array([1.0, 0, 0, 0, 0]), k=4))
    with pytest.raises(ValueError, match="already registered"):
        register("pkpo", kind="reward", knob="k", default=1, settings=(1,), reference="")(lambda r: r)
