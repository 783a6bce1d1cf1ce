"""Properties of mara_rewards (Algorithms 1 and 2)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mara_rl.augment import mara_rewards

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_augment import per_group_loop  # noqa: E402


@st.composite
def batches(draw, max_size=40):
    """Grouped batches with ties: rewards on a coarse grid, ref log-probs with repeats."""
    n = draw(st.integers(1, max_size))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rewards = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], n)
    ref_logprobs = rng.choice(rng.normal(-10, 4, max(1, n // 2)), n)
    group_ids = rng.integers(0, draw(st.integers(1, 6)), n) * 3 + 1  # non-contiguous labels
    beta = float(10 ** rng.uniform(-4, 1))
    return rewards, ref_logprobs, group_ids, beta


@settings(max_examples=200, deadline=None)
@given(batches())
def test_reverse_makes_gibbs_weight_constant_over_good_samples(batch):
    rewards, ref_logprobs, groups, beta = batch
    out = mara_rewards(rewards, ref_logprobs, beta=beta, tau=0.5, group_ids=groups)
    log_gibbs = ref_logprobs + out.rewards / beta
    for g in np.unique(groups):
        good = (groups == g) & (rewards >= 0.5)
        if good.any():
            anchor = out.anchor_index[np.flatnonzero(out.group_labels == g)[0]]
            assert rewards[anchor] >= 0.5 and ref_logprobs[anchor] == ref_logprobs[good].max()
            np.testing.assert_allclose(log_gibbs[good], log_gibbs[anchor], rtol=1e-12, atol=1e-9)
            assert out.rewards[anchor] == rewards[anchor]
    below = rewards < 0.5
    np.testing.assert_array_equal(out.rewards[below], rewards[below])
    np.testing.assert_array_equal(out.augmented, rewards >= 0.5)


@settings(max_examples=200, deadline=None)
@given(batches())
def test_matches_the_per_group_loop(batch):
    rewards, ref_logprobs, groups, beta = batch
    out = mara_rewards(rewards, ref_logprobs, beta=beta, tau=0.5, group_ids=groups)
    np.testing.assert_allclose(out.rewards, per_group_loop(rewards, ref_logprobs, groups, beta, 0.5), rtol=0, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(batches(), st.randoms(use_true_random=False), st.sampled_from(["reverse", "forward"]))
def test_permutation_equivariant(batch, rnd, kl):
    rewards, ref_logprobs, groups, beta = batch
    perm = np.array(rnd.sample(range(rewards.size), rewards.size))
    out = mara_rewards(rewards, ref_logprobs, beta=beta, tau=0.5, group_ids=groups, kl=kl)
    out_perm = mara_rewards(rewards[perm], ref_logprobs[perm], beta=beta, tau=0.5, group_ids=groups[perm], kl=kl)
    np.testing.assert_allclose(out_perm.rewards, out.rewards[perm], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(out_perm.ref_logprobs, out.ref_logprobs[perm])


@settings(max_examples=150, deadline=None)
@given(batches(), batches())
def test_groups_are_independent(batch, other):
    rewards, ref_logprobs, groups, beta = batch
    alone = mara_rewards(rewards, ref_logprobs, beta=beta, tau=0.5, group_ids=groups)
    joined = mara_rewards(
        np.concatenate([rewards, other[0]]),
        np.concatenate([ref_logprobs, other[1]]),
        beta=beta,
        tau=0.5,
        group_ids=np.concatenate([groups, other[2] + 1000]),
    )
    np.testing.assert_array_equal(joined.rewards[: rewards.size], alone.rewards)


@settings(max_examples=100, deadline=None)
@given(batches())
def test_forward_replaces_reward_and_reference_by_the_anchor(batch):
    rewards, ref_logprobs, groups, beta = batch
    out = mara_rewards(rewards, ref_logprobs, beta=beta, tau=0.5, group_ids=groups, kl="forward")
    for label, anchor in zip(out.group_labels, out.anchor_index):
        good = (groups == label) & (rewards >= 0.5)
        if anchor >= 0:
            assert (out.rewards[good] == rewards[anchor]).all()
            assert (out.ref_logprobs[good] == ref_logprobs[anchor]).all()
    bad = rewards < 0.5
    np.testing.assert_array_equal(out.ref_logprobs[bad], ref_logprobs[bad])


@settings(max_examples=60, deadline=None)
@given(batches())
def test_numpy_and_torch_agree(batch):
    rewards, ref_logprobs, groups, beta = batch
    out = mara_rewards(rewards, ref_logprobs, beta=beta, tau=0.5, group_ids=groups, kl="forward")
    tensors = [torch.tensor(a) for a in (rewards, ref_logprobs, groups)]
    out_t = mara_rewards(tensors[0].float(), tensors[1].float(), beta=beta, tau=0.5, group_ids=tensors[2], kl="forward")
    assert isinstance(out_t.rewards, torch.Tensor) and out_t.rewards.dtype == torch.float32
    assert out_t.augmented.dtype == torch.bool
    np.testing.assert_allclose(out_t.rewards.numpy(), out.rewards, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out_t.augmented.numpy(), out.augmented)


def test_groups_without_a_good_sample_are_unchanged_and_reported():
    rewards = np.array([0.1, 0.2, 0.9, 1.0])
    ref_logprobs = np.array([-1.0, -2.0, -3.0, -5.0])
    out = mara_rewards(rewards, ref_logprobs, beta=0.1, tau=0.8, group_ids=np.array(["a", "a", "b", "b"]))
    np.testing.assert_array_equal(out.rewards[:2], rewards[:2])
    assert list(out.group_labels) == ["a", "b"]
    assert list(out.anchor_index) == [-1, 2]
    assert out.fraction_groups_augmented == 0.5
    np.testing.assert_allclose(out.rewards[2:], [0.9, 0.9 + 0.1 * 2.0])


def test_tau_quantile_is_per_group():
    rewards = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 20.0, 30.0, 40.0])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    out = mara_rewards(rewards, np.zeros(8), beta=1.0, tau_quantile=0.9, group_ids=groups)
    np.testing.assert_allclose(out.tau, [np.quantile(rewards[:4], 0.9), np.quantile(rewards[4:], 0.9)])
    np.testing.assert_array_equal(out.augmented, [False, False, False, True, False, False, False, True])


@pytest.mark.parametrize("q", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tau_quantile_extremes_are_the_group_minimum_and_maximum(q, dtype):
    """q = 0 and 1 take a path without a sort: the same thresholds as numpy's quantile, per group,
    with unsorted and interleaved groups."""
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=60).astype(dtype)
    groups = rng.integers(0, 7, size=60)
    out = mara_rewards(rewards, np.zeros(60), beta=1.0, tau_quantile=q, group_ids=groups)
    expected = [np.quantile(rewards[groups == g].astype(np.float64), q) for g in np.unique(groups)]
    np.testing.assert_array_equal(out.tau, expected)


def test_minus_inf_reference_is_allowed_below_tau_only():
    out = mara_rewards(np.array([0.0, 1.0]), np.array([-np.inf, -1.0]), beta=0.5, tau=0.5)
    assert out.rewards[0] == 0.0
    with pytest.raises(ValueError, match="-inf at index 1"):
        mara_rewards(np.array([0.0, 1.0]), np.array([-1.0, -np.inf]), beta=0.5, tau=0.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(beta=0.0, tau=0.5), "beta"),
        (dict(beta=-1.0, tau=0.5), "beta"),
        (dict(beta=float("nan"), tau=0.5), "beta"),
        (dict(beta=1.0), "exactly one of tau"),
        (dict(beta=1.0, tau=0.5, tau_quantile=0.9), "exactly one of tau"),
        (dict(beta=1.0, tau_quantile=1.5), "tau_quantile"),
        (dict(beta=1.0, tau=float("nan")), "tau"),
        (dict(beta=1.0, tau=0.5, kl="sideways"), "kl"),
        (dict(beta=1.0, tau=0.5, group_ids=[0, 1]), "group_ids"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mara_rewards(np.array([0.0, 1.0, 0.5]), np.array([-1.0, -2.0, -3.0]), **kwargs)


def test_bad_arrays():
    with pytest.raises(ValueError, match="NaN"):
        mara_rewards(np.array([0.0, np.nan]), np.array([-1.0, -2.0]), beta=1.0, tau=0.5)
    with pytest.raises(ValueError, match="same shape"):
        mara_rewards(np.array([0.0, 1.0]), np.array([-1.0]), beta=1.0, tau=0.5)
    with pytest.raises(ValueError, match="ref_logprobs"):
        mara_rewards(np.array([0.0, 1.0]), np.array([np.nan, -1.0]), beta=1.0, tau=0.5)
