"""Every numeric kind and the float extremes give the right answer (core: targets, augment, groups)."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mara_rl import (
    crossover_beta,
    describe_target,
    forward_kl_target,
    log_ratio,
    mara_rewards,
    mara_target,
    reverse_kl_target,
    summarize_targets,
)
from mara_rl._groups import Segments, group_codes

mpmath.mp.dps = 60

FIG4_REWARDS = np.array([0.0, 1.0, 1.0])
FIG4_REF = np.log([0.68, 0.30, 0.02])


# --- mara_rewards: numeric kinds -------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reward_equal_to_tau_in_its_own_dtype_is_good(dtype):
    rewards = np.array([0.9, 0.9, 0.1], dtype=dtype)
    out = mara_rewards(rewards, np.array([-1.0, -3.0, -0.5]), beta=0.1, tau=0.9)
    assert out.augmented.tolist() == [True, True, False]
    assert out.rewards.dtype == dtype
    np.testing.assert_allclose(out.rewards, [0.9, 0.9 + 0.1 * 2.0, 0.1], rtol=1e-6)


@pytest.mark.parametrize(
    "dtype, out_dtype",
    [
        (torch.float64, torch.float64),
        (torch.float32, torch.float32),
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.int64, torch.get_default_dtype()),
        (torch.int32, torch.get_default_dtype()),
        (torch.bool, torch.get_default_dtype()),
    ],
)
def test_torch_dtypes_are_augmented_in_float64_and_returned_as_floats(dtype, out_dtype):
    rewards = torch.tensor([1, 1, 0], dtype=dtype)
    ref = torch.tensor([-2.0, -2.5, -1.0], dtype=dtype if dtype.is_floating_point else torch.float32)
    out = mara_rewards(rewards, ref, beta=1e-3, tau=1.0)
    assert out.rewards.dtype == out_dtype and out.rewards.device == rewards.device
    assert out.augmented.dtype == torch.bool and out.anchor_index.dtype == torch.int64
    # The 5e-4 gap survives: a float16 reward of 1.0 cannot represent 1.0005.
    expected = torch.tensor([1.0, 1.0 + 1e-3 * 0.5, 0.0], dtype=torch.float64)
    assert torch.allclose(out.rewards.double(), expected, rtol=0, atol=1e-6)
    assert out.rewards[1] > out.rewards[0]


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_, np.float16])
def test_numpy_ints_bools_and_half_come_back_as_floats(dtype):
    rewards = np.array([1, 1, 0], dtype=dtype)
    out = mara_rewards(rewards, np.array([-2.0, -2.5, -1.0]), beta=1e-3, tau=1)
    assert out.rewards.dtype == (np.float32 if dtype == np.float16 else np.float64)
    np.testing.assert_allclose(out.rewards, [1.0, 1.0005, 0.0], rtol=0, atol=1e-6)


def test_float16_reward_equal_to_tau_counts_and_lists_work():
    out = mara_rewards(np.array([0.9, 0.3], dtype=np.float16), [-1.0, -2.0], beta=0.5, tau=0.9)
    assert out.augmented.tolist() == [True, False]
    out = mara_rewards([1, 0, 1], [-1, -1, -3], beta=1.0, tau=0.5)
    assert out.rewards.dtype == np.float64 and out.rewards.tolist() == [1.0, 0.0, 3.0]


def test_forward_returns_ref_logprobs_in_kind():
    ref = torch.tensor([-1.0, -4.0, -2.0], dtype=torch.bfloat16)
    out = mara_rewards(torch.tensor([1.0, 1.0, 0.0]), ref, beta=0.1, tau=0.5, kl="forward")
    assert out.ref_logprobs.dtype == torch.float32
    assert out.ref_logprobs.tolist() == [-1.0, -1.0, -2.0]


@pytest.mark.parametrize(
    "rewards, message",
    [
        (np.array([1 + 1j, 0]), "real numbers"),
        (np.array(["a", "b"]), "real numbers"),
        ([None, 1.0], "NaN"),
    ],
)
def test_non_numeric_rewards_are_errors(rewards, message):
    with pytest.raises(ValueError, match=message):
        mara_rewards(rewards, [0.0, 0.0], beta=0.1, tau=0.5)


def test_extreme_beta_and_gaps_in_mara_rewards():
    rewards = np.array([1e3, 1e3, 0.0])
    ref = np.array([-1.0, -1e4, -5.0])
    out = mara_rewards(rewards, ref, beta=1e-300, tau=1.0)
    assert out.rewards.tolist() == [1e3, 1e3, 0.0]  # beta * 1e4 is below one ulp of 1e3
    with pytest.raises(ValueError, match="overflowed"):
        mara_rewards(rewards, np.array([-1.0, -1e308, -5.0]), beta=1e10, tau=1.0)


# --- targets: extremes against high-precision references -------------------------------------

def _mp_reverse(rewards, ref_logprobs, beta):
    logits = [mpmath.mpf(lp) + mpmath.mpf(r) / mpmath.mpf(beta) for r, lp in zip(rewards, ref_logprobs)]
    top = max(logits)
    weights = [mpmath.exp(x - top) for x in logits]
    total = sum(weights)
    return np.array([float(w / total) for w in weights])


def _mp_forward(rewards, ref_logprobs, beta):
    ref = [mpmath.exp(mpmath.mpf(lp)) for lp in ref_logprobs]
    z = sum(ref)
    ref = [p / z for p in ref]
    r = [mpmath.mpf(x) for x in rewards]
    top = max(r)

    def mass(log_t):
        t = mpmath.exp(log_t)
        return mpmath.log(sum(mpmath.mpf(beta) * p / (t + (top - x)) for p, x in zip(ref, r)))

    lo, hi = mpmath.mpf(-20000), mpmath.mpf(50)
    for _ in range(400):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mass(mid) > 0 else (lo, mid)
    t = mpmath.exp((lo + hi) / 2)
    return np.array([float(mpmath.mpf(beta) * p / (t + (top - x))) for p, x in zip(ref, r)])


@pytest.mark.parametrize("beta", [1e-300, 1e-100, 1e-17, 1e-8, 1e-3])
def test_fig4_reverse_target_is_exact_down_to_tiny_beta(beta):
    np.testing.assert_allclose(reverse_kl_target(FIG4_REWARDS, FIG4_REF, beta), [0.0, 0.9375, 0.0625], rtol=1e-12, atol=0)
    np.testing.assert_allclose(mara_target(FIG4_REWARDS, FIG4_REF, beta, tau=0.5), [0.0, 0.5, 0.5], rtol=1e-12, atol=0)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 6),
    st.integers(0, 2**32 - 1),
    st.floats(-300, 2),
)
def test_targets_match_high_precision_references_at_extremes(size, seed, log10_beta):
    rng = np.random.default_rng(seed)
    rewards = np.round(rng.uniform(-1e3, 1e3, size) * rng.choice([1e-3, 1.0], size), 3)
    ref = -rng.uniform(0, 1e4, size) * rng.choice([1e-3, 1.0], size)
    beta = 10.0**log10_beta
    np.testing.assert_allclose(reverse_kl_target(rewards, ref, beta), _mp_reverse(rewards, ref, beta), rtol=1e-9, atol=1e-300)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), st.integers(0, 2**32 - 1), st.floats(-6, 1))
def test_forward_target_matches_high_precision_with_huge_log_prob_gaps(size, seed, log10_beta):
    rng = np.random.default_rng(seed)
    rewards = rng.uniform(0, 1, size)
    ref = np.concatenate([[0.0], -rng.uniform(0, 1e4, size - 1)])  # the best reward may sit at -1e4
    beta = 10.0**log10_beta
    np.testing.assert_allclose(forward_kl_target(rewards, ref, beta), _mp_forward(rewards, ref, beta), rtol=1e-7, atol=1e-12)


def test_forward_solve_survives_log_beta_ref_below_minus_745():
    rewards = np.array([0.0, 1.0, 0.5])
    ref = np.array([0.0, -775.0, -9000.0])
    probs, multiplier = forward_kl_target(rewards, ref, 1e-3, return_multiplier=True)
    np.testing.assert_allclose(probs, _mp_forward(rewards, ref, 1e-3), rtol=1e-9)
    assert multiplier >= 1.0 and abs(probs.sum() - 1) < 1e-12
    np.testing.assert_allclose(mara_target(rewards, ref, 1e-3, tau=0.4, kl="forward").sum(), 1.0)


# --- diagnostics -------------------------------------------------------------------------------

def test_describe_target_verdict_follows_the_effective_number():
    rewards = np.array([1.0, 1.0, 0.0])
    assert not describe_target([15 / 16, 1 / 16, 0.0], rewards, 0.5).multimodal  # effective 1.26
    assert not describe_target([0.8, 0.2, 0.0], rewards, 0.5).multimodal  # 1.65: one answer dominates
    assert describe_target([0.7, 0.3, 0.0], rewards, 0.5).multimodal  # 1.84
    two_bumps = describe_target([0.53, 0.43, 0.04], rewards, 0.5)
    assert two_bumps.multimodal and two_bumps.sentence.startswith("Multimodal")
    broad = np.r_[np.full(49, 0.0102), np.full(51, 0.01 * 0.98 / 0.51 * 0.5)]
    broad /= broad.sum()
    assert describe_target(broad, np.ones(100), 0.5).effective_good > 49


@pytest.mark.parametrize("probs", [[0.5, 0.4, 0.0], [0.7, 0.7, 0.0], [1.0, np.nan, 0.0], [1.2, -0.2, 0.0]])
def test_describe_target_rejects_non_distributions(probs):
    with pytest.raises(ValueError, match="probs"):
        describe_target(probs, [1.0, 1.0, 0.0], 0.5)


def test_summarize_targets_equals_per_group_descriptions():
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 7, 60) * 5
    rewards = rng.choice([0.0, 0.5, 1.0], 60)
    probs = reverse_kl_target(rewards, rng.normal(-3, 2, 60), 0.3, group_ids=groups)
    taus = np.linspace(0.2, 1.0, 7)
    summary = summarize_targets(probs, rewards, taus, group_ids=groups)
    for k, g in enumerate(np.unique(groups)):
        one = describe_target(probs[groups == g], rewards[groups == g], taus[k])
        assert summary.num_good[k] == one.num_good and summary.multimodal[k] == one.multimodal
        np.testing.assert_allclose(
            [summary.mass_above_tau[k], summary.effective_good[k], summary.top_good_share[k], summary.entropy[k]],
            [one.mass_above_tau, one.effective_good, one.top_good_share, one.entropy],
            rtol=1e-12,
        )


@pytest.mark.parametrize(
    "call",
    [
        lambda: crossover_beta(np.nan, 0.75, -4.6, -1.6),
        lambda: crossover_beta(1.0, 0.75, np.nan, -1.6),
        lambda: crossover_beta(1.0, 0.75, -np.inf, -np.inf),
        lambda: crossover_beta(1.0, 0.75, -4.6, -1.6, target_log_ratio=np.nan),
        lambda: log_ratio(1.0, np.nan, -1.0, -2.0, 0.1),
        lambda: log_ratio(1.0, 0.0, np.inf, -2.0, 0.1),
        lambda: log_ratio(np.array([1.0, np.inf]), 0.0, -1.0, -2.0, 0.1),
    ],
)
def test_nan_and_undefined_pairs_raise(call):
    with pytest.raises(ValueError):
        call()


# --- the one grouping primitive ------------------------------------------------------------------

def test_group_codes_factorise_every_label_kind():
    codes, labels = group_codes(np.array([7, 3, 7, 9]), 4)
    assert codes.tolist() == [1, 0, 1, 2] and labels.tolist() == [3, 7, 9]
    codes, labels = group_codes(np.array([4, 0, 4]), 3, compact=False)
    assert codes.tolist() == [4, 0, 4] and labels.tolist() == [0, 1, 2, 3, 4]
    codes, labels = group_codes(["b", "a", "b"], 3)
    assert codes.tolist() == [1, 0, 1] and labels.tolist() == ["a", "b"]
    codes, _ = group_codes(torch.tensor([2, 2, 1]), 3)
    assert codes.tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="NaN"):
        group_codes(np.array([0.0, np.nan]), 2)
    with pytest.raises(ValueError, match="shape"):
        group_codes([0, 1], 3)


def test_group_codes_of_strings_are_those_of_np_unique():
    rng = np.random.default_rng(0)
    words = np.array(["b", "a", "é", "Z", "", "ab", "a\x00", "日本", "zz", "😀"], dtype=object)
    for values in (words[rng.integers(0, len(words), 500)], words[rng.integers(0, 3, 50)].astype(str)):
        codes, labels = group_codes(values, len(values))
        expected_labels, expected_codes = np.unique(values, return_inverse=True)
        assert codes.dtype == np.int64 and codes.tolist() == expected_codes.tolist()
        assert labels.dtype == expected_labels.dtype and labels.tolist() == expected_labels.tolist()
    for mixed in (["a", None], [3, "a"]):  # not all strings: np.unique's path and its error
        with pytest.raises(ValueError, match="orderable"):
            group_codes(np.array(mixed, dtype=object), 2)


def test_segments_reduce_per_group_in_label_order():
    segments = Segments(np.array([5, 1, 5, 1, 3]), 5)
    values = segments.sort(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert segments.sum(values).tolist() == [6.0, 5.0, 4.0]
    assert segments.unsort(values).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


# --- one comparison dtype everywhere, and the edges a reviewer found ------------------------------

@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_float32_reward_equal_to_tau_is_good_in_every_target_and_summary(kind):
    rewards = np.float32([0.0, 0.9, 0.9])
    if kind == "torch":
        rewards = torch.tensor(rewards)
    target = mara_target(rewards, FIG4_REF, 1e-3, 0.9)
    np.testing.assert_allclose(target, [0.0, 0.5, 0.5], rtol=1e-12)
    assert summarize_targets(target, rewards, 0.9).num_good.tolist() == [2]
    assert describe_target(target, rewards, 0.9).num_good == 2
    from mara_rl import effective_num_modes, mass_above

    assert mass_above(target, rewards, 0.9) == 1.0
    assert effective_num_modes(target, rewards, 0.9) == pytest.approx(2.0)


def test_overflow_of_the_returned_dtype_is_an_error():
    with pytest.raises(ValueError, match="overflowed"):
        mara_rewards(np.float32([1, 1]), np.float32([-1, -1e4]), beta=1e36, tau=0.5)
    with pytest.raises(ValueError, match="overflowed"):
        mara_rewards(torch.tensor([1.0, 1.0]), torch.tensor([-1.0, -1e4]), beta=1e36, tau=0.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rewards=[-np.inf, 1.0, 1.0], tau_quantile=0.25), "finite"),
        (dict(rewards=[np.inf, 1.0, 1.0], tau=0.5), "finite"),
        (dict(beta=True), "beta must be a number"),
        (dict(tau="0.9"), "tau must be a number"),
        (dict(tau=[0.5]), "tau must be a number"),
        (dict(group_ids=[None, 1, 1]), "orderable"),
        (dict(rewards=np.array(["2020-01-01"] * 3, dtype="datetime64[D]")), "real numbers"),
    ],
)
def test_edge_inputs_are_clear_errors(kwargs, message):
    call = dict(rewards=[1.0, 1.0, 0.0], ref_logprobs=[-1.0, -2.0, -3.0], beta=0.1, tau=0.5)
    if "tau_quantile" in kwargs:
        call.pop("tau")
    call.update(kwargs)
    with pytest.raises(ValueError, match=message):
        mara_rewards(call.pop("rewards"), call.pop("ref_logprobs"), **call)


def test_empty_batch_and_massless_good_set():
    assert mara_rewards([], [], beta=0.1, tau=0.5).fraction_groups_augmented == 0.0
    summary = describe_target([1.0, 0.0, 0.0], [0.0, 1.0, 1.0], 0.5)
    assert summary.spread == 0.0 and summary.effective_good == 0.0 and not summary.multimodal


def test_subnormal_beta_gives_the_limit_without_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(reverse_kl_target([0.0, 1.0], [0.0, 0.0], 1e-320), [0.0, 1.0])
