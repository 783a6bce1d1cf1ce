"""Bandit problems over a small discrete outcome space: a reference distribution and a reward.

Everything here is a pure numpy function of its arguments. The outcome space is ``{0, ..., K-1}``
(default ``K = 100``); a :class:`Bandit` holds the reward of every outcome, the normalised
reference log-probabilities and, for MARA, the quality threshold ``tau``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.special import logsumexp

DEFAULT_NUM_OUTCOMES = 100
DEFAULT_DECAY = 20.0


@dataclass(frozen=True, eq=False)
class Bandit:
    """One KL-regularised bandit: ``J(pi) = E_pi[R] - beta D(pi, pi_ref)`` over ``K`` outcomes.

    Attributes:
        rewards: ``[K]`` reward of every outcome.
        ref_logprobs: ``[K]`` normalised ``log pi_ref``.
        tau: MARA's quality threshold (outcomes with ``R >= tau`` are good).
        name: short label used in figures and metrics.
        regions: named outcome intervals ``[lo, hi)`` whose mass the experiments report.
    """

    rewards: np.ndarray
    ref_logprobs: np.ndarray
    tau: float
    name: str
    regions: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rewards = np.asarray(self.rewards, dtype=np.float64)
        ref = np.asarray(self.ref_logprobs, dtype=np.float64)
        if rewards.ndim != 1 or rewards.shape != ref.shape:
            raise ValueError(f"rewards and ref_logprobs must be 1-D of one shape, got {rewards.shape} and {ref.shape}")
        if not np.isfinite(rewards).all():
            raise ValueError("rewards must be finite")
        if np.isnan(ref).any() or np.isposinf(ref).any():
            raise ValueError("ref_logprobs must not contain NaN or +inf")
        object.__setattr__(self, "rewards", rewards)
        object.__setattr__(self, "ref_logprobs", ref - logsumexp(ref))

    @property
    def num_outcomes(self) -> int:
        return int(self.rewards.shape[0])

    def region_mass(self, probs: np.ndarray) -> dict[str, float]:
        """Probability mass of ``probs`` ([K]) on each named region."""
        return {name: float(np.asarray(probs)[lo:hi].sum()) for name, (lo, hi) in self.regions.items()}


def _check_num_outcomes(num_outcomes: int) -> int:
    if int(num_outcomes) != num_outcomes or num_outcomes < 2:
        raise ValueError(f"num_outcomes must be an integer >= 2, got {num_outcomes!r}")
    return int(num_outcomes)


def exponential_reference(num_outcomes: int = DEFAULT_NUM_OUTCOMES, decay: float = DEFAULT_DECAY) -> np.ndarray:
    """``log pi_ref(y) = -y/decay - log Z`` for ``y = 0..K-1``: reference mass falls by ``e`` every ``decay`` outcomes."""
    num_outcomes = _check_num_outcomes(num_outcomes)
    if not np.isfinite(decay) or decay <= 0:
        raise ValueError(f"decay must be a finite number > 0, got {decay!r}")
    logits = -np.arange(num_outcomes, dtype=np.float64) / decay
    return logits - logsumexp(logits)


def uniform_reference(num_outcomes: int = DEFAULT_NUM_OUTCOMES) -> np.ndarray:
    """``log pi_ref(y) = -log K``."""
    num_outcomes = _check_num_outcomes(num_outcomes)
    return np.full(num_outcomes, -np.log(num_outcomes))


def gaussian_bumps(
    num_outcomes: int, centers: Sequence[float], heights: Sequence[float], width: float
) -> np.ndarray:
    """``R(y) = max_j h_j exp(-(y - c_j)^2 / (2 width^2))``: one bump of height ``h_j`` per centre."""
    num_outcomes = _check_num_outcomes(num_outcomes)
    if len(centers) != len(heights) or not centers:
        raise ValueError(f"centers and heights must be non-empty and of one length, got {len(centers)} and {len(heights)}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    y = np.arange(num_outcomes, dtype=np.float64)[:, None]
    bumps = np.asarray(heights, dtype=np.float64) * np.exp(-((y - np.asarray(centers, dtype=np.float64)) ** 2) / (2 * width**2))
    return bumps.max(axis=1)


def binary_intervals(num_outcomes: int, intervals: Sequence[tuple[int, int]]) -> np.ndarray:
    """``R(y) = 1`` if ``y`` lies in one of the half-open ``intervals`` ``[lo, hi)``, else 0."""
    num_outcomes = _check_num_outcomes(num_outcomes)
    rewards = np.zeros(num_outcomes)
    for lo, hi in intervals:
        if not 0 <= lo < hi <= num_outcomes:
            raise ValueError(f"interval [{lo}, {hi}) must satisfy 0 <= lo < hi <= num_outcomes={num_outcomes}")
        rewards[lo:hi] = 1.0
    return rewards


def mixture_logprobs(
    num_outcomes: int, centers: Sequence[float], weights: Sequence[float], width: float
) -> np.ndarray:
    """``log p(y)`` of a mixture of discretised Gaussians (each normalised over the outcomes)."""
    num_outcomes = _check_num_outcomes(num_outcomes)
    weights = np.asarray(weights, dtype=np.float64)
    if len(centers) != len(weights) or (weights <= 0).any():
        raise ValueError("centers and weights must have one length and weights must be > 0")
    y = np.arange(num_outcomes, dtype=np.float64)[:, None]
    log_components = -((y - np.asarray(centers, dtype=np.float64)) ** 2) / (2 * width**2)
    log_components = log_components - logsumexp(log_components, axis=0)
    return logsumexp(log_components + np.log(weights / weights.sum()), axis=1)


def binary_interval_problem(
    num_outcomes: int = DEFAULT_NUM_OUTCOMES,
    decay: float = DEFAULT_DECAY,
    intervals: Sequence[tuple[int, int]] = ((10, 20), (60, 70)),
) -> Bandit:
    """Paper Fig. 5: reward 1 on two intervals, exponential reference; the later interval is rarer.

    With the defaults the reference puts about 12.5 times more mass on ``[10, 20)`` than on ``[60, 70)``.
    """
    regions = {f"[{lo},{hi})": (lo, hi) for lo, hi in intervals}
    return Bandit(
        binary_intervals(num_outcomes, intervals), exponential_reference(num_outcomes, decay), 1.0, "binary intervals", regions
    )


def two_bumps_problem(
    num_outcomes: int = DEFAULT_NUM_OUTCOMES,
    decay: float = DEFAULT_DECAY,
    centers: tuple[float, float] = (20.0, 70.0),
    heights: tuple[float, float] = (0.75, 1.0),
    width: float = 4.0,
) -> Bandit:
    """Paper Fig. 2: a lower bump where the reference has support, a higher one where it has little."""
    regions = {f"bump R={h:g} at {c:g}": (max(0, int(c - 2 * width)), min(num_outcomes, int(c + 2 * width) + 1)) for c, h in zip(centers, heights)}
    return Bandit(
        gaussian_bumps(num_outcomes, centers, heights, width),
        exponential_reference(num_outcomes, decay),
        0.7 * max(heights),
        "two reward bumps",
        regions,
    )


def explicit_problem(rewards: Sequence[float], ref_probs: Sequence[float], name: str, tau: float | None = None) -> Bandit:
    """A small explicit bandit, e.g. the three-action examples of paper Figs. 3-4."""
    ref_probs = np.asarray(ref_probs, dtype=np.float64)
    if (ref_probs < 0).any() or ref_probs.sum() <= 0:
        raise ValueError("ref_probs must be non-negative with a positive sum")
    with np.errstate(divide="ignore"):
        ref_logprobs = np.log(ref_probs)
    rewards = np.asarray(rewards, dtype=np.float64)
    regions = {f"y{i}": (i, i + 1) for i in range(rewards.size)}
    return Bandit(rewards, ref_logprobs, float(rewards.max()) if tau is None else tau, name, regions)


def three_action_examples() -> tuple[Bandit, Bandit]:
    """Paper Figs. 3-4: ``R = [0, 0.9, 1]`` with a uniform reference; ``R = [0, 1, 1]`` with ``pi_ref = [0.68, 0.30, 0.02]``."""
    return (
        explicit_problem([0.0, 0.9, 1.0], [1 / 3, 1 / 3, 1 / 3], "R=[0, 0.9, 1], uniform reference"),
        explicit_problem([0.0, 1.0, 1.0], [0.68, 0.30, 0.02], "R=[0, 1, 1], reference [0.68, 0.30, 0.02]"),
    )
