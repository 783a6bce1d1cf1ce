"""Properties of the closed-form targets (mara_rl.targets)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mara_rl import targets as T
from mara_rl.augment import mara_rewards

SIZES = st.integers(2, 12)
BETAS = st.floats(1e-6, 1e3)


@st.composite
def problems(draw, reward_scale=1e3, min_size=2):
    """Random (rewards, ref_logprobs, beta): rewards up to |R| = 1e3, beta from 1e-6 to 1e3."""
    k = draw(st.integers(min_size, 12))
    rewards = draw(arrays(np.float64, k, elements=st.floats(-reward_scale, reward_scale)))
    ref_logprobs = draw(arrays(np.float64, k, elements=st.floats(-50, 0)))
    beta = draw(BETAS)
    return rewards, ref_logprobs, beta


def random_simplex_points(k: int, count: int, rng) -> np.ndarray:
    return rng.dirichlet(np.full(k, 0.5), size=count)


def objective_reverse(pi, rewards, ref_logprobs, beta, eta=0.0):
    """J = E_pi[R] - beta KL(pi || pi_ref) + eta H(pi)."""
    ref = np.exp(ref_logprobs - np.logaddexp.reduce(ref_logprobs))
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(pi > 0, pi * np.log(pi), 0.0)
        kl = np.where(pi > 0, plogp - pi * np.log(ref), 0.0).sum(-1)
    return (pi * rewards).sum(-1) - beta * kl - eta * plogp.sum(-1)


def objective_forward(pi, rewards, ref_logprobs, beta):
    """J = E_pi[R] - beta KL(pi_ref || pi), up to the constant sum pi_ref log pi_ref."""
    ref = np.exp(ref_logprobs - np.logaddexp.reduce(ref_logprobs))
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = np.where(ref > 0, ref * np.log(pi), 0.0).sum(-1)
    return (pi * rewards).sum(-1) + beta * cross


@settings(max_examples=150, deadline=None)
@given(problems())
def test_every_target_is_a_finite_distribution(problem):
    rewards, ref_logprobs, beta = problem
    tau = float(np.median(rewards))
    for probs in (
        T.reverse_kl_target(rewards, ref_logprobs, beta),
        T.reverse_kl_target(rewards, ref_logprobs, beta, entropy_coef=0.3),
        T.forward_kl_target(rewards, ref_logprobs, beta),
        T.mara_target(rewards, ref_logprobs, beta, tau, kl="reverse"),
        T.mara_target(rewards, ref_logprobs, beta, tau, kl="forward"),
    ):
        assert np.isfinite(probs).all()
        assert (probs >= 0).all()
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(problems(reward_scale=5.0), st.floats(0.0, 2.0))
def test_reverse_target_matches_log_ratio_identity(problem, eta):
    rewards, ref_logprobs, beta = problem
    beta = max(beta, 0.05)  # keep both probabilities representable
    probs = T.reverse_kl_target(rewards, ref_logprobs, beta, entropy_coef=eta)
    i, j = 0, 1
    if probs[i] > 1e-250 and probs[j] > 1e-250:
        expected = T.log_ratio(rewards[i], rewards[j], ref_logprobs[i], ref_logprobs[j], beta, entropy_coef=eta)
        assert math.log(probs[i] / probs[j]) == pytest.approx(expected, rel=1e-6, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(problems(reward_scale=3.0), st.floats(0.0, 1.0))
def test_reverse_target_beats_random_policies(problem, eta):
    rewards, ref_logprobs, beta = problem
    beta = max(beta, 1e-2)
    best = T.reverse_kl_target(rewards, ref_logprobs, beta, entropy_coef=eta)
    others = random_simplex_points(rewards.size, 200, np.random.default_rng(0))
    j_best = objective_reverse(best, rewards, ref_logprobs, beta, eta)
    assert (objective_reverse(others, rewards, ref_logprobs, beta, eta) <= j_best + 1e-9).all()


@settings(max_examples=100, deadline=None)
@given(problems())
def test_forward_target_satisfies_stationarity(problem):
    rewards, ref_logprobs, beta = problem
    probs, multiplier = T.forward_kl_target(rewards, ref_logprobs, beta, return_multiplier=True)
    ref = np.exp(ref_logprobs - np.logaddexp.reduce(ref_logprobs))
    assert multiplier >= rewards.max()  # Lambda - max R can be below one ulp of max R
    # R(y) + beta pi_ref(y) / pi(y) = Lambda, written without dividing by tiny probabilities; the
    # bound allows for the rounding of Lambda - R(y) when Lambda sits within ulps of max R.
    error = np.abs(probs * (multiplier - rewards) - beta * ref)
    rounding = probs * 4 * np.finfo(float).eps * (abs(multiplier) + np.abs(rewards))
    assert (error <= 1e-8 * beta * ref + rounding).all()


@settings(max_examples=60, deadline=None)
@given(problems(reward_scale=3.0))
def test_forward_target_beats_random_policies(problem):
    rewards, ref_logprobs, beta = problem
    beta = max(beta, 1e-2)
    best = T.forward_kl_target(rewards, ref_logprobs, beta)
    others = random_simplex_points(rewards.size, 200, np.random.default_rng(1))
    j_best = objective_forward(best, rewards, ref_logprobs, beta)
    assert (objective_forward(others, rewards, ref_logprobs, beta) <= j_best + 1e-9).all()


def test_forward_target_puts_mass_off_support_when_the_best_reward_is_there():
    rewards = np.array([0.0, 1.0, 2.0])
    ref_logprobs = np.array([math.log(0.5), math.log(0.5), -math.inf])
    probs, multiplier = T.forward_kl_target(rewards, ref_logprobs, 0.1, return_multiplier=True)
    assert multiplier == pytest.approx(2.0)
    np.testing.assert_allclose(probs, [0.025, 0.05, 0.925])
    others = random_simplex_points(3, 500, np.random.default_rng(2))
    assert (objective_forward(others, rewards, ref_logprobs, 0.1) <= objective_forward(probs, rewards, ref_logprobs, 0.1) + 1e-12).all()
    # With a large beta the supported outcomes alone already exceed mass 1 at Lambda = 2.
    probs_large_beta, multiplier_large_beta = T.forward_kl_target(rewards, ref_logprobs, 10.0, return_multiplier=True)
    assert probs_large_beta[2] == 0.0 and multiplier_large_beta > 2.0


def test_paper_three_action_examples():
    uniform = np.log(np.full(3, 1 / 3))
    spike = T.reverse_kl_target([0.0, 0.9, 1.0], uniform, 1e-3)
    assert spike[1] / spike[2] == pytest.approx(math.exp(-100))  # dR / beta = 0.1 / 1e-3
    rewards = np.array([0.0, 1.0, 1.0])
    ref_logprobs = np.log([0.68, 0.30, 0.02])
    for beta in (1e-4, 1e-2, 1.0):
        probs = T.reverse_kl_target(rewards, ref_logprobs, beta)
        assert probs[1] / probs[2] == pytest.approx(15.0)
    mara = T.mara_target(rewards, ref_logprobs, 1e-3, tau=0.5)
    assert mara[1] == pytest.approx(mara[2])


@settings(max_examples=100, deadline=None)
@given(problems(reward_scale=5.0), st.sampled_from(["reverse", "forward"]))
def test_mara_target_is_uniform_over_good_outcomes(problem, kl):
    rewards, ref_logprobs, beta = problem
    tau = float(np.quantile(rewards, 0.5))
    probs = T.mara_target(rewards, ref_logprobs, beta, tau, kl=kl)
    good = rewards >= tau
    np.testing.assert_allclose(probs[good], probs[good][0], rtol=1e-9, atol=1e-300)
    if kl == "reverse":
        vanilla = T.reverse_kl_target(rewards, ref_logprobs, beta)
        bad = ~good
        if bad.sum() >= 2 and (vanilla[bad] > 1e-250).all() and (probs[bad] > 1e-250).all():
            np.testing.assert_allclose(probs[bad] / probs[bad].sum(), vanilla[bad] / vanilla[bad].sum(), rtol=1e-7)


@settings(max_examples=50, deadline=None)
@given(st.lists(problems(reward_scale=10.0), min_size=1, max_size=4), st.sampled_from(["reverse", "forward"]))
def test_grouped_targets_equal_separate_solves(group_problems, kl):
    beta = group_problems[0][2]
    rewards = np.concatenate([p[0] for p in group_problems])
    ref_logprobs = np.concatenate([p[1] for p in group_problems])
    group_ids = np.concatenate([np.full(p[0].size, g * 7) for g, p in enumerate(group_problems)])
    shuffle = np.random.default_rng(0).permutation(rewards.size)
    tau = 0.0
    grouped = T.kl_target(rewards[shuffle], ref_logprobs[shuffle], beta, kl, group_ids=group_ids[shuffle])
    grouped_mara = T.mara_target(rewards[shuffle], ref_logprobs[shuffle], beta, tau, kl, group_ids=group_ids[shuffle])
    for g, (r, lp, _) in enumerate(group_problems):
        in_group = group_ids[shuffle] == g * 7
        original_order = np.argsort(shuffle[in_group])
        np.testing.assert_allclose(grouped[in_group][original_order], T.kl_target(r, lp, beta, kl), rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(grouped_mara[in_group][original_order], T.mara_target(r, lp, beta, tau, kl), rtol=1e-9, atol=1e-15)


def test_extreme_scales_stay_finite():
    rng = np.random.default_rng(3)
    rewards = rng.uniform(-1e3, 1e3, 500)
    ref_logprobs = rng.normal(-300, 100, 500)
    for beta in (1e-6, 1e3):
        for probs in (T.reverse_kl_target(rewards, ref_logprobs, beta), T.forward_kl_target(rewards, ref_logprobs, beta)):
            assert np.isfinite(probs).all() and probs.sum() == pytest.approx(1.0)


def test_crossover_beta_equalises_the_two_outcomes():
    beta = T.crossover_beta(1.0, 0.75, math.log(0.01), math.log(0.2))
    assert T.log_ratio(1.0, 0.75, math.log(0.01), math.log(0.2), beta) == pytest.approx(0.0, abs=1e-12)
    half = T.crossover_beta(1.0, 0.75, math.log(0.01), math.log(0.2), target_log_ratio=math.log(2))
    assert T.log_ratio(1.0, 0.75, math.log(0.01), math.log(0.2), half) == pytest.approx(math.log(2))
    assert T.crossover_beta(1.0, 0.5, math.log(0.5), math.log(0.1)) == math.inf  # dominates in both
    assert T.crossover_beta(1.0, 1.0, math.log(0.5), math.log(0.1)) == math.inf  # equal rewards


def test_diagnostics():
    probs = np.array([0.5, 0.25, 0.25, 0.0])
    rewards = np.array([1.0, 1.0, 0.2, 1.0])
    assert T.entropy(probs) == pytest.approx(1.5 * math.log(2))
    assert T.entropy([1.0, 0.0]) == 0.0
    assert T.mass_above(probs, rewards, 0.5) == pytest.approx(0.75)
    assert T.effective_num_modes([0.25] * 4) == pytest.approx(4.0)
    assert T.effective_num_modes(probs, rewards, 2.0) == 0.0
    rewards3 = np.array([0.0, 1.0, 1.0])
    ref3 = np.log([0.68, 0.30, 0.02])
    vanilla = T.describe_target(T.reverse_kl_target(rewards3, ref3, 1e-3), rewards3, 0.5)
    mara = T.describe_target(T.mara_target(rewards3, ref3, 1e-3, 0.5), rewards3, 0.5)
    assert not vanilla.multimodal and "Unimodal" in vanilla.sentence
    assert mara.multimodal and mara.effective_good == pytest.approx(2.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: T.reverse_kl_target([0, 1], [0, 0], 0.0), "beta"),
        (lambda: T.reverse_kl_target([0, 1], [0, 0], -1.0), "beta"),
        (lambda: T.reverse_kl_target([0, float("nan")], [0, 0], 1.0), "rewards"),
        (lambda: T.reverse_kl_target([0, 1, 2], [0, 0], 1.0), "same shape"),
        (lambda: T.forward_kl_target([0, 1], [-np.inf, -np.inf], 1.0), "positive probability"),
        (lambda: T.forward_kl_target([0, 1], [0, np.nan], 1.0), "ref_logprobs"),
        (lambda: T.reverse_kl_target([0, 1], [0, 0], 1.0, entropy_coef=-1), "entropy_coef"),
        (lambda: T.mara_target([0, 1], [0, -np.inf], 1.0, 0.5), "-inf"),
        (lambda: T.kl_target([0, 1], [0, 0], 1.0, "sideways"), "kl"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_grouped_logsumexp_matches_per_group_reduction():
    values = np.array([0.0, -np.inf, 1.0, -2.0, -np.inf])
    groups = np.array([2, 0, 2, 5, 0])
    out = T.grouped_logsumexp(values, groups)
    np.testing.assert_allclose(out, [-np.inf, np.logaddexp(0.0, 1.0), -2.0])
    with pytest.raises(ValueError, match="values"):
        T.grouped_logsumexp([0.0, np.nan], [0, 0])


def test_grouped_softmax_normalises_each_group_with_one_exp_per_value():
    values = np.array([0.0, -np.inf, 1.0, -2.0, -np.inf, -1e4, -1e4 - 3.0, 0.0])
    groups = np.array([2, 0, 2, 5, 0, 7, 7, 0])
    out = T.grouped_softmax(values, groups)
    np.testing.assert_allclose(out[[0, 2]], [1 / (1 + math.e), math.e / (1 + math.e)], rtol=1e-15)
    assert out[3] == 1.0 and out[7] == 1.0 and out[1] == out[4] == 0.0
    np.testing.assert_allclose(out[[5, 6]], [1 / (1 + math.exp(-3.0)), math.exp(-3.0) / (1 + math.exp(-3.0))], rtol=1e-15)
    with pytest.raises(ValueError, match=r"all are -inf \(group 0\)"):  # a group with no finite value has no distribution
        T.grouped_softmax([-np.inf, -np.inf, 0.0], [0, 0, 1])
    rng = np.random.default_rng(0)
    values, groups = rng.normal(scale=30.0, size=500), rng.integers(0, 40, size=500)
    out = T.grouped_softmax(values, groups)
    np.testing.assert_allclose(out, np.exp(values - T.grouped_logsumexp(values, groups)[groups]), rtol=1e-12)
    np.testing.assert_allclose(np.bincount(groups, weights=out, minlength=40)[np.unique(groups)], 1.0, rtol=1e-15)
    with pytest.raises(ValueError, match="values"):
        T.grouped_softmax([0.0, np.nan], [0, 0])
    with pytest.raises(ValueError, match=r"group_ids must have shape \(2,\), one label per value, got \(3,\)"):
        T.grouped_softmax([0.0, 1.0], [0, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a gap past the float range is a weight of 0, not an overflow warning
        np.testing.assert_array_equal(T.grouped_softmax([1e308, -1e308], None), [1.0, 0.0])
        np.testing.assert_array_equal(T.grouped_logsumexp([1e308, -1e308], None), [1e308])


@pytest.mark.parametrize("shift", [-1e4, -700.0, 3.0])
def test_gibbs_targets_ignore_a_per_group_shift_of_the_reference(shift):
    # The reverse and MARA targets never normalise the reference: only differences within a group matter.
    rewards = np.array([1.0, 0.9, 1.0, 0.2, 0.0, 1.0])
    ref = np.array([-0.5, -2.0, -30.0, -1.0, -3.0, -0.1])
    groups = np.array([0, 0, 0, 1, 1, 1])
    shifted = ref + np.where(groups == 0, shift, 0.5 * shift)
    for log in (False, True):
        for target in (lambda r: T.reverse_kl_target(rewards, r, 0.05, 0.3, group_ids=groups, return_log=log),
                       lambda r: T.mara_target(rewards, r, 0.05, 0.9, group_ids=groups, return_log=log)):
            np.testing.assert_allclose(target(shifted), target(ref), rtol=1e-12, atol=1e-12)


def test_summaries_keep_their_precision_when_the_good_mass_is_tiny():
    # Three good outcomes share 1e-300 evenly (log q = log p - log mass, one log per outcome).
    probs = np.array([1.0 - 3e-300, 1e-300, 1e-300, 1e-300])
    rewards = np.array([0.0, 1.0, 1.0, 1.0])
    summary = T.summarize_targets(probs, rewards, 0.5)
    assert summary.effective_good[0] == pytest.approx(3.0, rel=4e-16)
    assert summary.mass_above_tau[0] == pytest.approx(3e-300, rel=1e-15)
    assert summary.entropy[0] == pytest.approx(-3 * 1e-300 * math.log(1e-300), rel=1e-14)
    two = T.summarize_targets([5e-301, 5e-301, 1 - 1e-300], [1.0, 1.0, 0.0], 0.5)
    assert two.effective_good[0] == 2.0 and two.spread[0] == 1.0  # spread never leaves [0, 1]
    split = T.summarize_targets([0.7e-200, 0.3e-200, 1 - 1e-200], [1.0, 1.0, 0.0], 0.5)
    assert split.effective_good[0] == pytest.approx(math.exp(-0.7 * math.log(0.7) - 0.3 * math.log(0.3)), rel=4e-16)


def test_gibbs_targets_keep_their_digits_under_a_large_common_reference_offset():
    # Sequence log-probs near -1e4 nats: the offset is removed exactly before the rewards' gaps are added.
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 60
    rewards, ref = np.array([0.0, 0.3, 0.1]), np.array([-1e4, -1e4 - 0.1, -1e4 - 0.25])
    lr = [mp.mpf(float(x)) + mp.mpf(float(r)) for x, r in zip(ref, rewards)]
    zeta = mp.log(sum(mp.exp(x) for x in lr))
    log_rev = T.reverse_kl_target(rewards, ref, 1.0, return_log=True)
    assert max(abs(float(mp.mpf(float(g)) - (x - zeta))) for g, x in zip(log_rev, lr)) < 1e-15
    # A MARA group whose reference log-probs differ by 1e290 at 1e300: the anchor pair is exact.
    np.testing.assert_allclose(T.mara_target([1.0, 1.0, 0.0], [1e300, 1e300 - 1e290, 1e300], 1.0, 0.5),
                               [1 / (2 + math.exp(-1)), 1 / (2 + math.exp(-1)), math.exp(-1) / (2 + math.exp(-1))], rtol=1e-15)


def _mp_forward_log_target(rewards, ref_logprobs, beta, mp):
    """log G_fwd by mpmath at 80 digits: Lambda by bisection in log(Lambda - max R)."""
    r = [mp.mpf(float(x)) for x in rewards]
    w = [mp.exp(mp.mpf(float(x))) for x in ref_logprobs]
    w = [x / sum(w) for x in w]
    b, top = mp.mpf(beta), max(r)

    def excess(t):
        return sum(b * wi / (t + (top - ri)) for wi, ri in zip(w, r)) - 1

    lo = mp.log(b * sum(wi for wi, ri in zip(w, r) if ri == top)) - 1
    hi = mp.log(b) + 1
    for _ in range(600):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excess(mp.exp(mid)) > 0 else (lo, mid)
    t = mp.exp((lo + hi) / 2)
    return [mp.log(b * wi / (t + (top - ri))) for wi, ri in zip(w, r)]


@pytest.mark.parametrize("beta", [1e-3, 1e-150, 1e-300])
def test_log_targets_keep_full_relative_precision_at_tiny_probabilities(beta):
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 80
    rewards = np.array([1.0, 0.9, 0.5, 0.0, 1.0])
    ref_logprobs = np.array([-0.5, -2.0, -1.0, -745.0, -600.0])  # outcomes at 1e-150 .. 1e-326 and below
    log_fwd = T.forward_kl_target(rewards, ref_logprobs, beta, return_log=True)
    want = _mp_forward_log_target(rewards, ref_logprobs, beta, mp)
    # |log G - log G_mp| is the relative error of G.
    assert max(abs(float(mp.mpf(float(g)) - w)) for g, w in zip(log_fwd, want)) < 1e-12
    assert np.exp(log_fwd).sum() == pytest.approx(1.0, rel=1e-14)
    normal = np.exp(log_fwd) > 1e-300
    np.testing.assert_allclose(np.exp(log_fwd[normal]), T.forward_kl_target(rewards, ref_logprobs, beta)[normal], rtol=1e-14)

    # Reverse KL: log G = log pi_ref + R / beta - log zeta, against mpmath.
    log_rev = T.reverse_kl_target(rewards, ref_logprobs, 0.05, return_log=True)
    lr = [mp.mpf(float(x)) + mp.mpf(float(r)) / mp.mpf(0.05) for x, r in zip(ref_logprobs, rewards)]
    zeta = mp.log(sum(mp.exp(x) for x in lr))
    assert max(abs(float(mp.mpf(float(g)) - (x - zeta))) for g, x in zip(log_rev, lr)) < 1e-12

    # MARA's forward target is the forward target of the anchored weights: the same solve.
    log_mara = T.mara_target(rewards, ref_logprobs, beta, 0.95, kl="forward", return_log=True)
    anchored = np.where(rewards >= 0.95, ref_logprobs[rewards >= 0.95].max(), ref_logprobs)
    want_mara = _mp_forward_log_target(rewards, anchored, beta * math.exp(np.logaddexp.reduce(anchored)
                                                                             - np.logaddexp.reduce(ref_logprobs)), mp)
    assert max(abs(float(mp.mpf(float(g)) - w)) for g, w in zip(log_mara, want_mara)) < 1e-12


def test_log_targets_below_the_smallest_float():
    # A probability of e^-800 ~ 1e-348 is 0 as a float64 and exact as a log.
    log_fwd = T.forward_kl_target([1.0, 0.0], [0.0, -800.0], 0.1, return_log=True)
    assert np.isfinite(log_fwd).all() and log_fwd[1] < -790
    assert T.forward_kl_target([1.0, 0.0], [0.0, -800.0], 0.1)[1] == 0.0
    assert T.reverse_kl_target([0.0, 0.0], [0.0, -800.0], 1.0, return_log=True)[1] == pytest.approx(-800.0, rel=1e-15)


def test_entropy_rejects_unnormalised_probabilities():
    with pytest.raises(ValueError, match="sum to 1"):
        T.entropy([0.5, 0.6])
    with pytest.raises(ValueError, match="sum to 1"):
        T.entropy([3, 1])
    assert T.entropy([0.5, 0.5]) == pytest.approx(math.log(2))


def test_meta_tensors_are_a_one_line_value_error():
    torch = pytest.importorskip("torch")

    meta = torch.zeros(3, device="meta")
    for call in (lambda: mara_rewards(meta, meta, beta=1.0, tau=0.5), lambda: T.reverse_kl_target(meta, meta, 1.0),
                 lambda: T.forward_kl_target(meta, meta, 1.0), lambda: T.mara_target(meta, meta, 1.0, 0.5)):
        with pytest.raises(ValueError, match="meta") as info:
            call()
        assert "\n" not in str(info.value)


def test_targets_take_a_grouping_made_once_and_give_the_same_values():
    from mara_rl._groups import Segments

    rng = np.random.default_rng(3)
    group = np.sort(rng.integers(0, 40, 500))
    rewards, ref = rng.integers(0, 3, 500).astype(float), rng.normal(-5, 3, 500)
    segments = Segments(group, group.size)
    for kl in ("reverse", "forward"):
        vanilla = T.kl_target(rewards, ref, 0.2, kl, group_ids=group)
        np.testing.assert_array_equal(T.kl_target(rewards, ref, 0.2, kl, group_ids=segments), vanilla)
        np.testing.assert_array_equal(T.mara_target(rewards, ref, 0.2, 1.0, kl, group_ids=segments),
                                      T.mara_target(rewards, ref, 0.2, 1.0, kl, group_ids=group))
        once, labels = T.summarize_targets(vanilla, rewards, 1.0, group_ids=segments), T.summarize_targets(vanilla, rewards, 1.0, group_ids=group)
        np.testing.assert_array_equal(once.effective_good, labels.effective_good)
    np.testing.assert_array_equal(T.grouped_logsumexp(ref, segments), T.grouped_logsumexp(ref, group))
    shuffled = rng.permutation(group)  # a grouping of unsorted labels: its codes come back in the callers' order
    for quantile in (None, 0.5):
        tau = None if quantile else 1.0
        once = mara_rewards(rewards, ref, beta=0.2, tau=tau, tau_quantile=quantile, group_ids=Segments(shuffled, 500))
        labels = mara_rewards(rewards, ref, beta=0.2, tau=tau, tau_quantile=quantile, group_ids=shuffled)
        np.testing.assert_array_equal(once.rewards, labels.rewards)
        np.testing.assert_array_equal(once.ref_logprobs, labels.ref_logprobs)
    with pytest.raises(ValueError, match="Segments of 500 values, not of 499"):
        T.kl_target(rewards[1:], ref[1:], 0.2, group_ids=segments)
    with pytest.raises(ValueError, match="Segments of 500 values, not of 499"):
        mara_rewards(rewards[1:], ref[1:], beta=0.2, tau=1.0, group_ids=segments)
