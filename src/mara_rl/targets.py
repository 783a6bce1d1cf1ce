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
from scipy.optimize import brentq
from scipy.special import logsumexp

from mara_rl._checks import as_vector, check_beta, check_finite, check_nonnegative, check_ref_logprobs, check_same_shape
from mara_rl.augment import mara_rewards

KLDirection = Literal["reverse", "forward"]


def _prepare(rewards, ref_logprobs) -> tuple[np.ndarray, np.ndarray]:
    rewards = as_vector(rewards, "rewards")
    ref_logprobs = as_vector(ref_logprobs, "ref_logprobs")
    check_same_shape(rewards, ref_logprobs, "rewards", "ref_logprobs")
    check_finite(rewards, "rewards", "reward")
    check_ref_logprobs(ref_logprobs)
    if np.isneginf(ref_logprobs).all():
        raise ValueError("ref_logprobs must give some outcome positive probability (all are -inf)")
    return rewards, ref_logprobs - logsumexp(ref_logprobs)


def _softmax(logits: np.ndarray) -> np.ndarray:
    probs = np.exp(logits - logsumexp(logits))
    return probs / probs.sum()


def reverse_kl_target(rewards, ref_logprobs, beta: float, entropy_coef: float = 0.0) -> np.ndarray:
    """Optimum of ``E_pi[R] - beta KL(pi||pi_ref) + entropy_coef H(pi)`` (paper Eq. 4 / Sec. 3.1).

    ``G(y) ∝ pi_ref(y)^(beta/(beta+eta)) exp(R(y)/(beta+eta))`` with ``eta = entropy_coef``.

    Args:
        rewards: ``[K]`` finite rewards.
        ref_logprobs: ``[K]`` reference log-probs (``-inf`` allowed).
        beta: KL coefficient > 0.
        entropy_coef: entropy bonus ``eta >= 0``.

    Returns:
        ``[K]`` probabilities summing to 1.
    """
    rewards, ref_logprobs = _prepare(rewards, ref_logprobs)
    beta = check_beta(beta)
    eta = check_nonnegative(entropy_coef, "entropy_coef")
    temperature = beta + eta
    logits = np.where(
        np.isneginf(ref_logprobs), -np.inf, (beta / temperature) * ref_logprobs + rewards / temperature
    )
    return _softmax(logits)


@dataclass(frozen=True)
class ForwardSolution:
    """Forward-KL optimum: ``probs`` and the Lagrange multiplier ``Lambda`` of the simplex constraint."""

    probs: np.ndarray
    multiplier: float


def _forward_solve(rewards: np.ndarray, log_weights: np.ndarray, beta: float) -> ForwardSolution:
    """Maximise ``sum_y pi(y) R(y) + beta sum_y w(y) log pi(y)`` over the simplex.

    ``w = exp(log_weights)`` is the (not necessarily normalised) reference weight in the regulariser.
    Stationarity: ``R(y) + beta w(y)/pi(y) = Lambda`` on the support of ``w``. Outcomes with
    ``w = 0`` receive mass only when their reward equals ``Lambda`` (the best reward lies off the
    reference support and the supported terms sum to less than 1); ties there share it equally.
    """
    on_support = ~np.isneginf(log_weights)
    support_max = rewards[on_support].max()
    gaps = support_max - rewards  # exact zeros at the supported maximum keep the root precise
    log_beta_w = math.log(beta) + log_weights

    def log_mass(t: float) -> float:
        """log of ``sum_y beta w(y) / (t + gap_y)`` over the support, with ``t = Lambda - max R``."""
        with np.errstate(divide="ignore"):
            return float(logsumexp(log_beta_w[on_support] - np.log(t + gaps[on_support])))

    off_support = ~on_support
    if off_support.any():
        off_max = rewards[off_support].max()
        if off_max > support_max:
            t_off = off_max - support_max
            if log_mass(t_off) < 0.0:
                mass = np.zeros_like(rewards)
                mass[on_support] = np.exp(log_beta_w[on_support] - np.log(t_off + gaps[on_support]))
                winners = off_support & (rewards == off_max)
                mass[winners] = (1.0 - mass.sum()) / winners.sum()
                return ForwardSolution(mass / mass.sum(), float(off_max))

    # log_mass is decreasing in t; bracket [beta * w(best), beta * sum w] (both bounds follow
    # from the best-reward term alone and from all gaps being >= 0).
    top = on_support & (gaps == 0.0)
    log_lo = float(logsumexp(log_beta_w[top]))
    log_hi = float(logsumexp(log_beta_w[on_support]))
    if log_hi - log_lo < 1e-15:
        log_t = log_lo
    else:
        log_t = brentq(lambda u: log_mass(math.exp(u)), log_lo, log_hi, xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=500)
    t = math.exp(log_t)
    log_probs = np.full_like(rewards, -np.inf)
    log_probs[on_support] = log_beta_w[on_support] - np.log(t + gaps[on_support])
    probs = np.exp(log_probs)
    total = probs.sum()
    if not np.isfinite(total) or abs(total - 1.0) > 1e-6:
        raise ValueError(f"forward-KL root finding did not converge (mass {total})")
    return ForwardSolution(probs / total, float(support_max + t))


def forward_kl_target(rewards, ref_logprobs, beta: float, *, return_multiplier: bool = False):
    """Optimum of ``E_pi[R] - beta KL(pi_ref || pi)`` (paper Sec. 3.2).

    ``G_fwd(y) = beta pi_ref(y) / (Lambda - R(y))`` where ``Lambda`` is the unique root of
    ``sum_y beta pi_ref(y) / (Lambda - R(y)) = 1`` on ``(max_{pi_ref>0} R, inf)``, found by a
    bracketed root search in log-space. If the best reward lies where ``pi_ref = 0`` and the
    supported terms sum to less than 1 at that reward, ``Lambda`` equals it and the remaining mass
    sits on those off-support outcomes.

    Args:
        rewards: ``[K]`` finite rewards.
        ref_logprobs: ``[K]`` reference log-probs (``-inf`` allowed).
        beta: KL coefficient > 0.
        return_multiplier: also return ``Lambda``.

    Returns:
        ``[K]`` probabilities, or ``(probs, Lambda)`` when ``return_multiplier``.
    """
    rewards, ref_logprobs = _prepare(rewards, ref_logprobs)
    solution = _forward_solve(rewards, ref_logprobs, check_beta(beta))
    if return_multiplier:
        return solution.probs, solution.multiplier
    return solution.probs


def kl_target(rewards, ref_logprobs, beta: float, kl: KLDirection = "reverse") -> np.ndarray:
    """The vanilla target for either KL direction (see the two functions above)."""
    if kl == "reverse":
        return reverse_kl_target(rewards, ref_logprobs, beta)
    if kl == "forward":
        return forward_kl_target(rewards, ref_logprobs, beta)
    raise ValueError(f"kl must be 'reverse' or 'forward', got {kl!r}")


def mara_target(rewards, ref_logprobs, beta: float, tau: float, kl: KLDirection = "reverse") -> np.ndarray:
    """The target MARA's augmented objective optimises (paper Sec. 5, Algorithms 1 and 2).

    The whole outcome set is one group; the anchor is the most reference-likely outcome with
    ``R >= tau``. Reverse KL: the Gibbs target of the augmented rewards, uniform over ``R >= tau``
    and ``∝ pi_ref exp(R/beta)`` below. Forward KL: the forward target with both reward and
    regulariser reference weight of good outcomes replaced by the anchor's.
    If no outcome reaches ``tau`` this is the vanilla target.

    Returns:
        ``[K]`` probabilities summing to 1.
    """
    rewards, ref_logprobs = _prepare(rewards, ref_logprobs)
    beta = check_beta(beta)
    augmented = mara_rewards(rewards, ref_logprobs, beta=beta, tau=tau, kl=kl)
    if kl == "reverse":
        return reverse_kl_target(augmented.rewards, ref_logprobs, beta)
    return _forward_solve(augmented.rewards, augmented.ref_logprobs, beta).probs


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
