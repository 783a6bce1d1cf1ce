"""Closed-form optimal targets of KL-regularised RL over a finite outcome set, and diagnostics.

A KL-regularised objective fixes a target distribution; the optimiser only matches it
(GX-Chen et al., 2025, Sec. 3). Over outcomes ``y`` (whole outputs: a contextual bandit):

- reverse KL, ``J = E_pi[R] - beta KL(pi || pi_ref) + eta H(pi)``:
  ``G(y) ∝ pi_ref(y)^(beta/(beta+eta)) exp(R(y)/(beta+eta))`` (Gibbs; eta = 0 is ``G_beta``);
- forward KL, ``J = E_pi[R] - beta KL(pi_ref || pi)``:
  ``G_fwd(y) = beta pi_ref(y) / (Lambda - R(y))`` with ``Lambda > max R`` the root of
  ``sum_y beta pi_ref(y) / (Lambda - R(y)) = 1``;
- MARA: the same targets after :func:`mara_rl.augment.mara_rewards` (uniform on ``R >= tau``).

All functions take 1-D arrays over the outcomes, work in log-space, and return numpy arrays.
``ref_logprobs`` need not be normalised: it is normalised over the outcomes given, so the target
is the one restricted to that outcome set. ``-inf`` marks outcomes outside the reference support.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mara_rl._checks import as_vector, check_beta, check_finite, check_nonnegative, check_ref_logprobs, check_same_shape
from mara_rl.augment import mara_rewards

KLDirection = Literal["reverse", "forward"]


class _Segments:
    """Outcomes sorted by group so that per-group reductions are single ``reduceat`` calls."""

    def __init__(self, group_ids, n: int):
        if group_ids is None:
            self.order = None
            self.labels = None
            self.starts = np.zeros(1, dtype=np.int64)
            self.index = np.zeros(n, dtype=np.int64)
            return
        ids = np.asarray(group_ids)
        if ids.shape != (n,):
            raise ValueError(f"group_ids must have shape ({n},) like rewards, got {ids.shape}")
        self.labels, codes = np.unique(ids, return_inverse=True)
        codes = codes.reshape(n)
        self.order = np.argsort(codes, kind="stable")
        self.index = codes[self.order]
        self.starts = np.flatnonzero(np.r_[True, self.index[1:] != self.index[:-1]])

    def sort(self, values: np.ndarray) -> np.ndarray:
        return values if self.order is None else values[self.order]

    def unsort(self, values: np.ndarray) -> np.ndarray:
        if self.order is None:
            return values
        out = np.empty_like(values)
        out[self.order] = values
        return out

    def max(self, values: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(values, self.starts)

    def sum(self, values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, self.starts)

    def logsumexp(self, values: np.ndarray) -> np.ndarray:
        """Per-group ``log sum exp``; ``-inf`` for a group whose values are all ``-inf``."""
        peak = self.max(values)
        shift = np.where(np.isfinite(peak), peak, 0.0)
        with np.errstate(divide="ignore"):
            return shift + np.log(self.sum(np.exp(values - shift[self.index])))

    def normalize(self, values: np.ndarray) -> np.ndarray:
        total = self.sum(values)
        return values / total[self.index]


def _prepare(rewards, ref_logprobs, group_ids) -> tuple[np.ndarray, np.ndarray, _Segments]:
    """Validate, sort by group, and normalise the reference within each group."""
    rewards = as_vector(rewards, "rewards")
    ref_logprobs = as_vector(ref_logprobs, "ref_logprobs")
    check_same_shape(rewards, ref_logprobs, "rewards", "ref_logprobs")
    check_finite(rewards, "rewards", "reward")
    check_ref_logprobs(ref_logprobs)
    segments = _Segments(group_ids, rewards.size)
    rewards, ref_logprobs = segments.sort(rewards), segments.sort(ref_logprobs)
    log_norm = segments.logsumexp(ref_logprobs)
    if np.isneginf(log_norm).any():
        where = "" if segments.labels is None else f" (group {segments.labels[np.isneginf(log_norm)][0]!r})"
        raise ValueError(f"ref_logprobs must give some outcome positive probability; all are -inf{where}")
    return rewards, ref_logprobs - log_norm[segments.index], segments


def grouped_logsumexp(values, group_ids) -> np.ndarray:
    """``log sum_{i in g} exp(values_i)`` for each group ``g``, in the order of the sorted unique labels
    of ``group_ids`` (dense codes ``0..G-1`` map to positions ``0..G-1``); ``-inf`` for a group whose
    values are all ``-inf``."""
    values = as_vector(values, "values")
    check_ref_logprobs(values, "values")
    segments = _Segments(group_ids, values.size)
    return segments.logsumexp(segments.sort(values))


def _softmax(logits: np.ndarray, segments: _Segments) -> np.ndarray:
    probs = np.exp(logits - segments.logsumexp(logits)[segments.index])
    return segments.normalize(probs)


def _gibbs(rewards: np.ndarray, ref_logprobs: np.ndarray, beta: float, eta: float, segments: _Segments) -> np.ndarray:
    temperature = beta + eta
    logits = np.where(
        np.isneginf(ref_logprobs), -np.inf, (beta / temperature) * ref_logprobs + rewards / temperature
    )
    return _softmax(logits, segments)


def reverse_kl_target(rewards, ref_logprobs, beta: float, entropy_coef: float = 0.0, *, group_ids=None) -> np.ndarray:
    """Optimum of ``E_pi[R] - beta KL(pi||pi_ref) + entropy_coef H(pi)`` (paper Eq. 4 / Sec. 3.1).

    ``G(y) ∝ pi_ref(y)^(beta/(beta+eta)) exp(R(y)/(beta+eta))`` with ``eta = entropy_coef``.

    Args:
        rewards: ``[K]`` finite rewards.
        ref_logprobs: ``[K]`` reference log-probs (``-inf`` allowed).
        beta: KL coefficient > 0.
        entropy_coef: entropy bonus ``eta >= 0``.
        group_ids: ``[K]`` labels of independent problems (e.g. prompts); each is solved and
            normalised on its own. ``None``: one problem.

    Returns:
        ``[K]`` probabilities summing to 1 (within each group).
    """
    rewards, ref_logprobs, segments = _prepare(rewards, ref_logprobs, group_ids)
    beta = check_beta(beta)
    eta = check_nonnegative(entropy_coef, "entropy_coef")
    return segments.unsort(_gibbs(rewards, ref_logprobs, beta, eta, segments))


_BISECTION_TOL = 1e-13  # on log(Lambda - max R): a relative error of 1e-13 in every probability


def _forward_solve(
    rewards: np.ndarray, log_weights: np.ndarray, beta: float, segments: _Segments
) -> tuple[np.ndarray, np.ndarray]:
    """Maximise ``sum_y pi(y) R(y) + beta sum_y w(y) log pi(y)`` over the simplex, per group.

    ``w = exp(log_weights)`` is the (not necessarily normalised) reference weight in the regulariser.
    Stationarity: ``R(y) + beta w(y)/pi(y) = Lambda`` on the support of ``w``, so with
    ``t = Lambda - max_{w>0} R`` the mass is ``beta w / (t + gap)``, ``gap = max R - R >= 0``, and ``t``
    solves ``sum beta w / (t + gap) = 1``. The log of that sum falls monotonically in ``log t`` and is
    bracketed by ``[log(beta w_best), log(beta sum w)]`` (the best-reward term alone, and all gaps >= 0),
    so a vectorised bisection over all groups finds it. Outcomes with ``w = 0`` receive mass only when
    their reward equals ``Lambda`` (the best reward lies off the reference support and the supported
    terms sum to less than 1 there); ties share it equally.

    Returns:
        sorted-order probabilities and the per-group multiplier ``Lambda``.
    """
    on = ~np.isneginf(log_weights)
    support_max = segments.max(np.where(on, rewards, -np.inf))
    gaps = np.where(on, support_max[segments.index] - rewards, np.inf)
    log_beta_w = np.where(on, math.log(beta) + log_weights, -np.inf)

    def log_mass(t: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return segments.logsumexp(np.where(on, log_beta_w - np.log(t[segments.index] + gaps), -np.inf))

    top = on & (gaps == 0.0)
    lo = segments.logsumexp(np.where(top, log_beta_w, -np.inf))
    hi = segments.logsumexp(log_beta_w)
    for _ in range(200):
        if (hi - lo).max() <= _BISECTION_TOL:
            break
        mid = 0.5 * (lo + hi)
        above = log_mass(np.exp(mid)) > 0.0
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    t = np.exp(0.5 * (lo + hi))

    off_max = segments.max(np.where(on, -np.inf, rewards))
    off_wins = off_max > support_max
    if off_wins.any():
        t_off = np.where(off_wins, off_max - support_max, 1.0)
        off_wins &= log_mass(t_off) < 0.0
        t = np.where(off_wins, t_off, t)

    with np.errstate(divide="ignore"):
        probs = np.exp(log_beta_w - np.log(t[segments.index] + gaps))
    if off_wins.any():
        winners = ~on & off_wins[segments.index] & (rewards == off_max[segments.index])
        leftover = 1.0 - segments.sum(probs)
        share = leftover / segments.sum(winners.astype(np.float64)).clip(min=1.0)
        probs = np.where(winners, share[segments.index], probs)
    total = segments.sum(probs)
    if not np.all(np.abs(total - 1.0) < 1e-6):
        raise ValueError(f"forward-KL root finding did not converge (group masses {total[np.abs(total - 1) >= 1e-6][:3]})")
    return segments.normalize(probs), support_max + t


def forward_kl_target(rewards, ref_logprobs, beta: float, *, return_multiplier: bool = False, group_ids=None):
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

    Returns:
        ``[K]`` probabilities, or ``(probs, Lambda)`` when ``return_multiplier``; ``Lambda`` is a float,
        or with ``group_ids`` an array over the sorted unique group labels.
    """
    rewards, ref_logprobs, segments = _prepare(rewards, ref_logprobs, group_ids)
    probs, multiplier = _forward_solve(rewards, ref_logprobs, check_beta(beta), segments)
    probs = segments.unsort(probs)
    if return_multiplier:
        return probs, (float(multiplier[0]) if group_ids is None else multiplier)
    return probs


def kl_target(rewards, ref_logprobs, beta: float, kl: KLDirection = "reverse", *, group_ids=None) -> np.ndarray:
    """The vanilla target for either KL direction (see the two functions above)."""
    if kl == "reverse":
        return reverse_kl_target(rewards, ref_logprobs, beta, group_ids=group_ids)
    if kl == "forward":
        return forward_kl_target(rewards, ref_logprobs, beta, group_ids=group_ids)
    raise ValueError(f"kl must be 'reverse' or 'forward', got {kl!r}")


def mara_target(
    rewards, ref_logprobs, beta: float, tau: float, kl: KLDirection = "reverse", *, group_ids=None
) -> np.ndarray:
    """The target MARA's augmented objective optimises (paper Sec. 5, Algorithms 1 and 2).

    Each group (default: the whole outcome set) has one anchor, its most reference-likely outcome
    with ``R >= tau``. Reverse KL: the Gibbs target of the augmented rewards, uniform over
    ``R >= tau`` and ``∝ pi_ref exp(R/beta)`` below. Forward KL: the forward target with both the
    reward and the regulariser's reference weight of good outcomes replaced by the anchor's.
    A group with no outcome ``>= tau`` keeps its vanilla target.

    Returns:
        ``[K]`` probabilities summing to 1 (within each group).
    """
    if kl not in ("reverse", "forward"):
        raise ValueError(f"kl must be 'reverse' or 'forward', got {kl!r}")
    rewards, ref_logprobs, segments = _prepare(rewards, ref_logprobs, group_ids)
    beta = check_beta(beta)
    augmented = mara_rewards(rewards, ref_logprobs, beta=beta, tau=tau, kl=kl, group_ids=segments.index)
    if kl == "reverse":
        probs = _gibbs(augmented.rewards, ref_logprobs, beta, 0.0, segments)
    else:
        probs, _ = _forward_solve(augmented.rewards, augmented.ref_logprobs, beta, segments)
    return segments.unsort(probs)


def log_ratio(reward_1, reward_2, ref_logprob_1, ref_logprob_2, beta: float, entropy_coef: float = 0.0):
    """``log G(y1)/G(y2)`` of the reverse-KL target (Prop. 4.1); broadcasts over arrays.

    ``= (beta/(beta+eta)) (log pi_ref(y1) - log pi_ref(y2)) + (R(y1) - R(y2)) / (beta+eta)``.
    With equal rewards it is the reference log-ratio for every beta.
    """
    beta = check_beta(beta)
    temperature = beta + check_nonnegative(entropy_coef, "entropy_coef")
    d_ref = np.asarray(ref_logprob_1, dtype=np.float64) - np.asarray(ref_logprob_2, dtype=np.float64)
    d_reward = np.asarray(reward_1, dtype=np.float64) - np.asarray(reward_2, dtype=np.float64)
    out = (beta / temperature) * d_ref + d_reward / temperature
    return float(out) if np.ndim(out) == 0 else out


def crossover_beta(reward_1, reward_2, ref_logprob_1, ref_logprob_2, target_log_ratio: float = 0.0):
    """The beta at which ``log G_beta(y1)/G_beta(y2) = target_log_ratio`` (Remark 4.4).

    Solving ``log pi_ref(y1)/pi_ref(y2) + (R(y1) - R(y2))/beta = c`` gives
    ``beta = (R(y1) - R(y2)) / (c - log pi_ref(y1) + log pi_ref(y2))``. With ``c = 0`` this is the beta at
    which both outcomes are equally likely: below it the higher-reward one wins, above it the
    more reference-likely one. Returns ``inf`` where no finite beta > 0 gives that ratio (one outcome
    dominates in both reward and reference probability, or the rewards are equal). Broadcasts.
    """
    d_reward = np.asarray(reward_1, dtype=np.float64) - np.asarray(reward_2, dtype=np.float64)
    d_ref = np.asarray(ref_logprob_1, dtype=np.float64) - np.asarray(ref_logprob_2, dtype=np.float64)
    denominator = float(target_log_ratio) - d_ref
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = d_reward / denominator
    beta = np.where(np.isfinite(beta) & (beta > 0), beta, np.inf)
    return float(beta) if np.ndim(beta) == 0 else beta


def entropy(probs, *, normalized: bool = False) -> float:
    """Shannon entropy ``-sum p log p`` in nats (``0 log 0 = 0``); ``normalized`` divides by ``log K``."""
    p = as_vector(probs, "probs")
    check_finite(p, "probs", "probability")
    if (p < 0).any():
        raise ValueError("probs must be non-negative")
    p = p / p.sum()
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
    return float(p[r >= tau].sum())


def effective_num_modes(probs, rewards=None, tau: float | None = None) -> float:
    """``exp(H)`` of the target, restricted to ``R >= tau`` (and renormalised) when ``tau`` is given.

    Equals the number of good outcomes when the target is uniform over them and 1 when one
    outcome holds all the good mass. Returns 0 when no outcome reaches ``tau`` or they carry no mass.
    """
    p = as_vector(probs, "probs")
    if tau is not None:
        if rewards is None:
            raise ValueError("rewards is required when tau is given")
        r = as_vector(rewards, "rewards")
        check_same_shape(p, r, "probs", "rewards")
        p = p[r >= tau]
        if p.size == 0 or p.sum() <= 0:
            return 0.0
    return math.exp(entropy(p))


@dataclass(frozen=True)
class TargetSummary:
    """Diagnostics of one target over ``R >= tau``; ``sentence`` says it in words."""

    mass_above_tau: float
    num_good: int
    effective_good: float
    top_good_share: float
    spread: float
    entropy: float
    multimodal: bool
    sentence: str


def describe_target(probs, rewards, tau: float, *, evenness: float = 0.5) -> TargetSummary:
    """Is the target multimodal over ``R >= tau``?

    Multimodal (paper Sec. 4: every good outcome gets high probability) is decided by the spread of
    the good mass: with ``n >= 2`` good outcomes and effective number ``e`` (``exp`` of the entropy of
    the target restricted to ``R >= tau``), the spread ``(e - 1) / (n - 1)`` is 0 for a single spike
    and 1 for uniform; the target is multimodal when it is at least ``evenness``.
    """
    p = as_vector(probs, "probs")
    r = as_vector(rewards, "rewards")
    check_same_shape(p, r, "probs", "rewards")
    good = r >= tau
    num_good = int(good.sum())
    mass = float(p[good].sum())
    effective = effective_num_modes(p, r, tau)
    top_share = float(p[good].max() / mass) if num_good and mass > 0 else 0.0
    spread = (effective - 1.0) / (num_good - 1) if num_good >= 2 else 0.0
    multimodal = num_good >= 2 and spread >= evenness
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
    return TargetSummary(mass, num_good, effective, top_share, spread, entropy(p), multimodal, sentence)
