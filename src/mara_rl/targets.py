"""Closed-form optimal targets of KL-regularised RL over a finite outcome set, and diagnostics.

A KL-regularised objective fixes a target distribution; the optimiser only matches it
(GX-Chen et al., 2025, Sec. 3). Over outcomes ``y`` (whole outputs: a contextual bandit):

- reverse KL, ``J = E_pi[R] - beta KL(pi || pi_ref) + eta H(pi)``:
  ``G(y) ∝ pi_ref(y)^(beta/(beta+eta)) exp(R(y)/(beta+eta))`` (Gibbs; eta = 0 is ``G_beta``);
- forward KL, ``J = E_pi[R] - beta KL(pi_ref || pi)``:
  ``G_fwd(y) = beta pi_ref(y) / (Lambda - R(y))`` with ``Lambda > max R`` the root of
  ``sum_y beta pi_ref(y) / (Lambda - R(y)) = 1``;
- MARA: the same targets after :func:`mara_rl.augment.mara_rewards` (uniform on ``R >= tau``).

All functions take 1-D arrays over the outcomes, work in log-space, and return numpy arrays; the
target functions' ``return_log=True`` returns the log-probabilities themselves, exact to a few ulp
where the probability is far below float64's smallest (``1e-308`` normal, ``5e-324`` subnormal).
``ref_logprobs`` need not be normalised: it is normalised over the outcomes given, so the target
is the one restricted to that outcome set. ``-inf`` marks outcomes outside the reference support.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mara_rl._checks import (
    as_float64, as_vector, check_beta, check_choice, check_finite, check_nonnegative, check_ref_logprobs, check_same_shape,
    check_threshold, threshold_for,
)
from mara_rl._groups import Segments
from mara_rl.augment import KL_DIRECTIONS, KLDirection, mara_rewards


def _first_group(segments: Segments, mask: np.ndarray, text: str) -> str:
    """``text`` naming the first group where ``mask`` holds, as the caller labelled it ("" for one group)."""
    return "" if segments.labels is None else text.format(repr(np.asarray(segments.labels[mask][0]).tolist()))


def _supported_top(segments: Segments, values: np.ndarray, requirement: str) -> np.ndarray:
    """Each group's largest of the sorted ``values``; a ``ValueError`` (``requirement``, naming the
    first group) where a group's values are all ``-inf``."""
    top = segments.max(values)
    empty = np.isneginf(top)
    if empty.any():
        raise ValueError(f"{requirement}; all are -inf{_first_group(segments, empty, ' (group {})')}")
    return top


def _prepare(rewards, ref_logprobs, group_ids, normalize: bool = True) -> tuple[np.ndarray, np.ndarray, Segments]:
    """Validate, sort by group, and shift the reference within each group: normalised (``normalize``),
    or with its top at 0.

    The Gibbs targets are invariant to a per-group shift of the reference, so they take the exact
    one (a difference of nearby floats, with no ``exp``); the forward target weighs outcomes by the
    normalised reference itself. Either way a common offset (sequence log-probs near -1e4) is gone
    before the rewards' gaps are added.
    """
    rewards = as_vector(rewards, "rewards")
    ref_logprobs = as_vector(ref_logprobs, "ref_logprobs")
    check_same_shape(rewards, ref_logprobs, "rewards", "ref_logprobs")
    check_finite(rewards, "rewards", "reward")
    check_ref_logprobs(ref_logprobs)
    segments = Segments.of(group_ids, rewards.size)
    rewards, ref_logprobs = segments.sort(rewards), segments.sort(ref_logprobs)
    top = _supported_top(segments, ref_logprobs, "ref_logprobs must give some outcome positive probability")
    shift = segments.logsumexp(ref_logprobs) if normalize else top
    return rewards, ref_logprobs - shift[segments.index], segments


def grouped_logsumexp(values, group_ids) -> np.ndarray:
    """``log sum_{i in g} exp(values_i)`` for each group ``g``, in the order of the sorted unique labels
    of ``group_ids`` (dense codes ``0..G-1`` map to positions ``0..G-1``); ``-inf`` for a group whose
    values are all ``-inf``."""
    values = as_vector(values, "values")
    check_ref_logprobs(values, "values")
    segments = Segments.of(group_ids, values.size)
    return segments.logsumexp(segments.sort(values))


def grouped_softmax(values, group_ids) -> np.ndarray:
    """``exp(v_i) / sum_{j in g(i)} exp(v_j)`` within each group, in the input's order: unnormalised
    log-probabilities (log-masses, ``-inf`` allowed) to probabilities, with one ``exp`` per value.
    A group whose values are all ``-inf`` has no distribution: a ``ValueError`` naming it."""
    values = as_vector(values, "values")
    check_ref_logprobs(values, "values")
    segments = Segments.of(group_ids, values.size)
    values = segments.sort(values)
    top = _supported_top(segments, values, "values must give some entry of each group positive weight")
    return segments.unsort(segments.softmax(values, peak=top))


def _gibbs(rewards: np.ndarray, ref_logprobs: np.ndarray, beta: float, eta: float, segments: Segments,
           log: bool = False) -> np.ndarray:
    temperature = beta + eta
    supported = ~np.isneginf(ref_logprobs)
    # Subtract each group's top reward before dividing: R/beta at beta = 1e-300 would overflow, and
    # at beta = 1e-17 it would swamp the reference log-probs that decide among the top outcomes.
    top = segments.max(np.where(supported, rewards, -np.inf))
    with np.errstate(invalid="ignore", over="ignore"):  # a subnormal beta sends every gap to -inf
        scaled_gap = (rewards - top[segments.index]) / temperature
    logits = np.where(supported, (beta / temperature) * ref_logprobs + scaled_gap, -np.inf)
    return segments.softmax(logits, log)


def reverse_kl_target(rewards, ref_logprobs, beta: float, entropy_coef: float = 0.0, *, group_ids=None,
                      return_log: bool = False) -> np.ndarray:
    """Optimum of ``E_pi[R] - beta KL(pi||pi_ref) + entropy_coef H(pi)`` (paper Eq. 4 / Sec. 3.1).

    ``G(y) ∝ pi_ref(y)^(beta/(beta+eta)) exp(R(y)/(beta+eta))`` with ``eta = entropy_coef``.

    Args:
        rewards: ``[K]`` finite rewards.
        ref_logprobs: ``[K]`` reference log-probs (``-inf`` allowed).
        beta: KL coefficient > 0.
        entropy_coef: entropy bonus ``eta >= 0``.
        group_ids: ``[K]`` labels of independent problems (e.g. prompts); each is solved and
            normalised on its own. ``None``: one problem.
        return_log: return ``log G`` (``-inf`` off the support), without rounding tiny probabilities.

    Returns:
        ``[K]`` probabilities summing to 1 (within each group), or their logs.
    """
    rewards, ref_logprobs, segments = _prepare(rewards, ref_logprobs, group_ids, normalize=False)
    beta = check_beta(beta)
    eta = check_nonnegative(entropy_coef, "entropy_coef")
    return segments.unsort(_gibbs(rewards, ref_logprobs, beta, eta, segments, return_log))




def _forward_solve(
    rewards: np.ndarray, log_weights: np.ndarray, beta: float, segments: Segments
) -> tuple[np.ndarray, np.ndarray]:
    """Maximise ``sum_y pi(y) R(y) + beta sum_y w(y) log pi(y)`` over the simplex, per group.

    ``w = exp(log_weights)`` is the (not necessarily normalised) reference weight in the regulariser.
    Stationarity: ``R(y) + beta w(y)/pi(y) = Lambda`` on the support of ``w``, so with
    ``t = Lambda - max_{w>0} R`` the mass is ``beta w / (t + gap)``, ``gap = max R - R >= 0``, and ``t``
    solves ``sum beta w / (t + gap) = 1``. Everything is in log space (``log(t + gap)`` is a
    ``logaddexp``), so ``log(beta w)`` down to -1e4 is exact. The log of that sum falls monotonically
    in ``log t`` and is bracketed by ``[log(beta w_best), log(beta sum w)]`` (the best-reward term
    alone, and all gaps >= 0), so a vectorised bisection over all groups finds it. Outcomes with
    ``w = 0`` receive mass only when their reward equals ``Lambda`` (the best reward lies off the
    reference support and the supported terms sum to less than 1 there); ties share it equally.

    ``log t`` is bisected to within two ulp, so ``log G = log(beta w) - log(t + gap)`` carries a few ulp
    of absolute error: full relative precision in ``G`` at any size.

    Returns:
        sorted-order log-probabilities and the per-group multiplier ``Lambda``.
    """
    on = ~np.isneginf(log_weights)
    support_max = segments.max(np.where(on, rewards, -np.inf))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_gaps = np.where(on, np.log(support_max[segments.index] - rewards), np.inf)
    log_beta_w = np.where(on, math.log(beta) + log_weights, -np.inf)

    def log_terms(log_t: np.ndarray) -> np.ndarray:
        return np.where(on, log_beta_w - np.logaddexp(log_t[segments.index], log_gaps), -np.inf)

    top = on & np.isneginf(log_gaps)
    lo = segments.logsumexp(np.where(top, log_beta_w, -np.inf))
    hi = segments.logsumexp(log_beta_w)
    for _ in range(200):
        if (hi - lo <= 2.0 * np.spacing(np.maximum(np.abs(lo), np.abs(hi)))).all():
            break
        mid = 0.5 * (lo + hi)
        above = segments.logsumexp(log_terms(mid)) > 0.0
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    log_t = 0.5 * (lo + hi)

    off_max = segments.max(np.where(on, -np.inf, rewards))
    off_wins = off_max > support_max
    if off_wins.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            log_t_off = np.where(off_wins, np.log(off_max - support_max), 0.0)
        off_wins &= segments.logsumexp(log_terms(log_t_off)) < 0.0
        log_t = np.where(off_wins, log_t_off, log_t)

    log_probs = log_terms(log_t)
    if off_wins.any():
        winners = ~on & off_wins[segments.index] & (rewards == off_max[segments.index])
        # The winners share what the supported outcomes leave: a difference, exact only to ~1e-16 of 1.
        leftover = np.maximum(1.0 - segments.sum(np.exp(log_probs)), 0.0)
        with np.errstate(divide="ignore"):
            log_share = np.log(leftover / segments.sum(winners.astype(np.float64)).clip(min=1.0))
        log_probs = np.where(winners, log_share[segments.index], log_probs)
    log_total = segments.logsumexp(log_probs)
    if not np.all(np.abs(log_total) < 1e-6):
        raise ValueError(f"forward-KL root finding did not converge (group masses {np.exp(log_total[np.abs(log_total) >= 1e-6][:3])})")
    return log_probs - log_total[segments.index], support_max + np.exp(log_t)


def forward_kl_target(rewards, ref_logprobs, beta: float, *, return_multiplier: bool = False, group_ids=None,
                      return_log: bool = False):
    """Optimum of ``E_pi[R] - beta KL(pi_ref || pi)`` (paper Sec. 3.2).

    ``G_fwd(y) = beta pi_ref(y) / (Lambda - R(y))`` where ``Lambda`` is the unique root of
    ``sum_y beta pi_ref(y) / (Lambda - R(y)) = 1`` on ``(max_{pi_ref>0} R, inf)``, found by bracketed
    bisection in log-space. If the best reward lies where ``pi_ref = 0`` and the supported terms sum
    to less than 1 at that reward, ``Lambda`` equals it and the remaining mass sits on those outcomes.

    Args:
        rewards: ``[K]`` finite rewards.
        ref_logprobs: ``[K]`` reference log-probs (``-inf`` allowed).
        beta: KL coefficient > 0.
        return_multiplier: also return ``Lambda``.
        group_ids: ``[K]`` labels of independent problems, each solved on its own (see
            :func:`reverse_kl_target`).
        return_log: return ``log G_fwd = log beta + log pi_ref - log(Lambda - R)``, with ``Lambda - R``
            formed as ``(Lambda - max R) + (max R - R)`` so that neither is lost in the other.

    Returns:
        ``[K]`` probabilities (or their logs), or ``(probs, Lambda)`` when ``return_multiplier``; ``Lambda``
        is a float, or with ``group_ids`` an array over the sorted unique group labels.
    """
    rewards, ref_logprobs, segments = _prepare(rewards, ref_logprobs, group_ids)
    log_probs, multiplier = _forward_solve(rewards, ref_logprobs, check_beta(beta), segments)
    probs = segments.unsort(log_probs if return_log else np.exp(log_probs))
    if return_multiplier:
        return probs, (float(multiplier[0]) if group_ids is None else multiplier)
    return probs


def kl_target(rewards, ref_logprobs, beta: float, kl: KLDirection = "reverse", *, group_ids=None,
              return_log: bool = False) -> np.ndarray:
    """The vanilla target for either KL direction (see the two functions above)."""
    if kl == "reverse":
        return reverse_kl_target(rewards, ref_logprobs, beta, group_ids=group_ids, return_log=return_log)
    check_choice(kl, KL_DIRECTIONS, "kl")
    return forward_kl_target(rewards, ref_logprobs, beta, group_ids=group_ids, return_log=return_log)


def mara_target(
    rewards, ref_logprobs, beta: float, tau: float, kl: KLDirection = "reverse", *, group_ids=None,
    return_log: bool = False,
) -> np.ndarray:
    """The target MARA's augmented objective optimises (paper Sec. 5, Algorithms 1 and 2).

    Each group (default: the whole outcome set) has one anchor, its most reference-likely outcome
    with ``R >= tau``. Reverse KL: the Gibbs target of the augmented rewards, uniform over
    ``R >= tau`` and ``∝ pi_ref exp(R/beta)`` below. Forward KL: the forward target with both the
    reward and the regulariser's reference weight of good outcomes replaced by the anchor's.
    A group with no outcome ``>= tau`` keeps its vanilla target. ``return_log``: the log-probabilities.

    Returns:
        ``[K]`` probabilities summing to 1 (within each group), or their logs.
    """
    check_choice(kl, KL_DIRECTIONS, "kl")
    tau = threshold_for(rewards, tau)
    rewards, ref_logprobs, segments = _prepare(rewards, ref_logprobs, group_ids, normalize=kl == "forward")
    beta = check_beta(beta)
    augmented = mara_rewards(rewards, ref_logprobs, beta=beta, tau=tau, kl="forward", group_ids=segments.index)
    if kl == "reverse":
        # pi_ref(y) exp(r(y)/beta) = pi_ref(z) exp(R(z)/beta) on the good set (Alg. 1): the Gibbs target of
        # the anchor's (R, log pi_ref) pair, exact even where beta * (log-prob gap) is below one ulp of R.
        return segments.unsort(_gibbs(augmented.rewards, augmented.ref_logprobs, beta, 0.0, segments, return_log))
    log_probs, _ = _forward_solve(augmented.rewards, augmented.ref_logprobs, beta, segments)
    return segments.unsort(log_probs if return_log else np.exp(log_probs))


def log_ratio(reward_1, reward_2, ref_logprob_1, ref_logprob_2, beta: float, entropy_coef: float = 0.0):
    """``log G(y1)/G(y2)`` of the reverse-KL target (Prop. 4.1); broadcasts over arrays.

    ``= (beta/(beta+eta)) (log pi_ref(y1) - log pi_ref(y2)) + (R(y1) - R(y2)) / (beta+eta)``.
    With equal rewards it is the reference log-ratio for every beta.
    """
    beta = check_beta(beta)
    temperature = beta + check_nonnegative(entropy_coef, "entropy_coef")
    d_reward, d_ref = _pair_differences(reward_1, reward_2, ref_logprob_1, ref_logprob_2)
    out = (beta / temperature) * d_ref + d_reward / temperature
    return float(out) if np.ndim(out) == 0 else out


def _pair_differences(reward_1, reward_2, ref_logprob_1, ref_logprob_2) -> tuple[np.ndarray, np.ndarray]:
    """``R(y1) - R(y2)`` and ``log pi_ref(y1) - log pi_ref(y2)``, after checking every input."""
    names = ("reward_1", "reward_2", "ref_logprob_1", "ref_logprob_2")
    r1, r2, l1, l2 = (as_float64(v, name)[0] for v, name in zip((reward_1, reward_2, ref_logprob_1, ref_logprob_2), names))
    for array, name in zip((r1, r2), names[:2]):
        check_finite(np.atleast_1d(array), name, "reward")
    for array, name in zip((l1, l2), names[2:]):
        check_ref_logprobs(np.atleast_1d(array), name)
    with np.errstate(invalid="ignore"):
        d_ref = l1 - l2
    if np.isnan(d_ref).any():
        raise ValueError("ref_logprob_1 and ref_logprob_2 are both -inf: two impossible outcomes have no ratio")
    return r1 - r2, d_ref


def crossover_beta(reward_1, reward_2, ref_logprob_1, ref_logprob_2, target_log_ratio: float = 0.0):
    """The beta at which ``log G_beta(y1)/G_beta(y2) = target_log_ratio`` (Remark 4.4).

    Solving ``log pi_ref(y1)/pi_ref(y2) + (R(y1) - R(y2))/beta = c`` gives
    ``beta = (R(y1) - R(y2)) / (c - log pi_ref(y1) + log pi_ref(y2))``. With ``c = 0`` this is the beta at
    which both outcomes are equally likely: below it the higher-reward one wins, above it the
    more reference-likely one. Returns ``inf`` where no finite beta > 0 gives that ratio (one outcome
    dominates in both reward and reference probability, or the rewards are equal). Broadcasts.
    """
    d_reward, d_ref = _pair_differences(reward_1, reward_2, ref_logprob_1, ref_logprob_2)
    target = float(target_log_ratio)
    if not math.isfinite(target):
        raise ValueError(f"target_log_ratio must be a finite number, got {target_log_ratio!r}")
    denominator = target - d_ref
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = d_reward / denominator
    beta = np.where(np.isfinite(beta) & (beta > 0), beta, np.inf)
    return float(beta) if np.ndim(beta) == 0 else beta


def entropy(probs, *, normalized: bool = False) -> float:
    """Shannon entropy ``-sum p log p`` in nats (``0 log 0 = 0``); ``normalized`` divides by ``log K``.

    ``probs`` must sum to 1 (within 1e-6, as :func:`describe_target` asks).
    """
    p = as_vector(probs, "probs")
    check_finite(p, "probs", "probability")
    if (p < 0).any():
        raise ValueError("probs must be non-negative")
    total = p.sum()
    if abs(total - 1.0) > _PROB_SUM_TOL:
        raise ValueError(f"probs must sum to 1, got {total:.6g}; pass a normalised distribution")
    p = p / total
    nz = p[p > 0]
    h = float(-(nz * np.log(nz)).sum())
    if normalized:
        return h / math.log(p.size) if p.size > 1 else 0.0
    return max(h, 0.0)


def mass_above(probs, rewards, tau: float) -> float:
    """Probability mass on outcomes with ``R >= tau``."""
    p = as_vector(probs, "probs")
    r = as_vector(rewards, "rewards")
    check_same_shape(p, r, "probs", "rewards")
    return float(p[r >= threshold_for(rewards, tau)].sum())


def effective_num_modes(probs, rewards=None, tau: float | None = None) -> float:
    """``exp(H)`` of the target, restricted to ``R >= tau`` (and renormalised) when ``tau`` is given.

    Equals the number of good outcomes when the target is uniform over them and 1 when one
    outcome holds all the good mass. Returns 0 when no outcome reaches ``tau`` or they carry no mass.
    ``probs`` must sum to 1.
    """
    p = as_vector(probs, "probs")
    if tau is not None:
        if rewards is None:
            raise ValueError("rewards is required when tau is given")
        r = as_vector(rewards, "rewards")
        check_same_shape(p, r, "probs", "rewards")
        p = p[r >= threshold_for(rewards, tau)]
        if p.size == 0 or p.sum() <= 0:
            return 0.0
        p = p / p.sum()
    return math.exp(entropy(p))


MULTIMODAL_MIN_EFFECTIVE = 1.8
_PROB_SUM_TOL = 1e-6


@dataclass(frozen=True)
class TargetSummaries:
    """Diagnostics of many targets at once over ``R >= tau``; each field is ``[G]``, one per group."""

    mass_above_tau: np.ndarray
    num_good: np.ndarray
    effective_good: np.ndarray
    top_good_share: np.ndarray
    spread: np.ndarray
    entropy: np.ndarray
    multimodal: np.ndarray


def summarize_targets(probs, rewards, tau, *, group_ids=None) -> TargetSummaries:
    """Is each target multimodal over ``R >= tau``? The vectorised form of :func:`describe_target`.

    Per group (default: one): ``num_good`` outcomes reach ``tau``; they hold ``mass_above_tau``;
    ``effective_good = exp(H)`` of the target restricted to them and renormalised (1 for one spike,
    ``num_good`` for uniform; 0 without good mass); ``top_good_share`` is the largest good outcome's
    share of the good mass; ``spread = (effective_good - 1) / (num_good - 1)`` (evenness: 0 spike,
    1 uniform); ``entropy`` is the whole target's entropy in nats.

    Verdict: ``multimodal`` when ``effective_good >= 1.8`` (``MULTIMODAL_MIN_EFFECTIVE``): the good
    mass is at least as spread as a 70/30 split of two outcomes (effective 1.84). A 15:1 split of two
    good answers (1.26), 80/20 (1.65) and 85/10/5 over three (1.68) are unimodal: one answer takes
    most of the mass; 53/43 (1.98) and a broad two-bump target over many outcomes are multimodal.

    Args:
        probs: ``[K]`` probabilities, summing to 1 within each group (within 1e-6).
        rewards: ``[K]`` rewards.
        tau: scalar threshold, or ``[G]`` thresholds in the order of the sorted unique group labels.
        group_ids: ``[K]`` labels of independent targets. ``None``: one target.
    """
    p = as_vector(probs, "probs")
    r, reward_kind = as_float64(rewards, "rewards")
    if r.ndim != 1:
        raise ValueError(f"rewards must be 1-D, got shape {r.shape}")
    check_same_shape(p, r, "probs", "rewards")
    check_finite(p, "probs", "probability")
    check_finite(r, "rewards", "reward")
    if (p < 0).any():
        raise ValueError(f"probs must be non-negative (first negative at index {int(np.flatnonzero(p < 0)[0])})")
    segments = Segments.of(group_ids, p.size)
    p, r = segments.sort(p), segments.sort(r)
    total = segments.sum(p)
    off = np.abs(total - 1.0) > _PROB_SUM_TOL
    if off.any():
        where = _first_group(segments, off, " in group {}")
        raise ValueError(f"probs must sum to 1{where}, got {total[off][0]:.6g}; pass a normalised target")
    taus = np.full(segments.num_groups, check_threshold(tau)) if np.ndim(tau) == 0 else as_vector(tau, "tau")
    if taus.shape != (segments.num_groups,):
        raise ValueError(f"tau must be a scalar or one threshold per group ({segments.num_groups}), got shape {taus.shape}")
    check_finite(taus, "tau", "threshold")
    taus = reward_kind.round(taus)  # compared in the rewards' own dtype, like mara_rewards
    good = r >= taus[segments.index]
    num_good = segments.count(good)
    good_p = np.where(good, p, 0.0)
    mass = segments.sum(good_p)
    with np.errstate(divide="ignore", invalid="ignore"):
        # One log per outcome serves both entropies: of q = p / mass on the good outcomes (exact at any
        # mass), of p below; the good part of the whole entropy is mass * (H_good - log mass).
        q = good_p / mass[segments.index]
        log_x = np.log(np.where(good, q, p))
        good_entropy = -segments.sum(np.where(good & (q > 0), q * log_x, 0.0))
        bad_entropy = -segments.sum(np.where(~good & (p > 0), p * log_x, 0.0))
        entropy_all = bad_entropy + np.where(mass > 0, mass * (good_entropy - np.log(mass)), 0.0)
        top_share = np.where(mass > 0, segments.max(good_p) / mass, 0.0)
    has_mass = (num_good > 0) & (mass > 0)
    effective = np.where(has_mass, np.exp(np.maximum(good_entropy, 0.0)), 0.0)
    spread = np.where((num_good >= 2) & has_mass, (effective - 1.0) / np.maximum(num_good - 1, 1), 0.0)
    multimodal = (num_good >= 2) & (effective >= MULTIMODAL_MIN_EFFECTIVE)
    return TargetSummaries(mass, num_good, effective, top_share, spread, np.maximum(entropy_all, 0.0), multimodal)


@dataclass(frozen=True)
class TargetSummary:
    """Diagnostics of one target over ``R >= tau`` (see :func:`summarize_targets`); ``sentence`` says it in words."""

    mass_above_tau: float
    num_good: int
    effective_good: float
    top_good_share: float
    spread: float
    entropy: float
    multimodal: bool
    sentence: str


def describe_target(probs, rewards, tau: float) -> TargetSummary:
    """Is the target multimodal over ``R >= tau``? One target; the rule is :func:`summarize_targets`'s.

    ``probs`` must sum to 1 (within 1e-6). The verdict is multimodal when the effective number of
    good outcomes is at least ``MULTIMODAL_MIN_EFFECTIVE`` (1.8).
    """
    tau = check_threshold(tau)
    summary = summarize_targets(probs, rewards, tau)
    mass, num_good, effective = float(summary.mass_above_tau[0]), int(summary.num_good[0]), float(summary.effective_good[0])
    top_share, multimodal = float(summary.top_good_share[0]), bool(summary.multimodal[0])
    if num_good == 0:
        sentence = f"No outcome reaches tau={tau:g}: the target has no good mode to keep."
    elif num_good == 1:
        sentence = f"Only one outcome reaches tau={tau:g}; it holds {mass:.1%} of the target."
    else:
        verdict = "multimodal" if multimodal else "unimodal"
        sentence = (
            f"{verdict.capitalize()} over R >= {tau:g}: {mass:.1%} of the mass is on the {num_good} good "
            f"outcomes, the top one holds {top_share:.1%} of it (effective number {effective:.2f} of {num_good})."
        )
    return TargetSummary(
        mass, num_good, effective, top_share, float(summary.spread[0]), float(summary.entropy[0]), multimodal, sentence
    )
