"""Rival anti-collapse methods as reward and advantage transforms, chosen by name.

MARA (:func:`mara_rl.augment.mara_rewards`) is one reward transform; the methods users already have
are the others. Each is a small pure function in the conventions of the core: grouped (one group
per prompt, any labels, groups need not be contiguous), numpy arrays or torch tensors of any numeric
kind in, the same kind out (float64/float32 kept, half precision and integers promoted as
:class:`mara_rl._checks.NumericKind` says), bad input a one-line ``ValueError``.

Every transform is registered under a name (like verl's ``@register_adv_est``), with its one knob,
the value its paper or engine recommends and the settings the sweeps try
(:data:`TRANSFORMS`, :func:`get_transform`). A *reward* transform returns new rewards, applied
where MARA is applied: the last step before the host turns rewards into advantages. An *advantage*
transform returns the advantages themselves (the group baseline and any scaling included); a host
uses them in place of its own.

- ``unlikeliness`` (reward): He, Fried and Welleck, "Rewarding the Unlikely", arXiv 2506.02355.
- ``pkpo`` (reward): Walder and Karkhanis, "Pass@K Policy Optimization", arXiv 2505.15201.
- ``outcome_batch`` and ``outcome_ucb`` (reward): Song, Kempe and Munos, "Outcome-based Exploration
  for LLM Reasoning", arXiv 2509.06941 (batch and historical exploration).
- ``passk_advantage`` (advantage): Chen et al., "Pass@k Training", arXiv 2508.10751 (analytic).
- ``grpo_passk`` (advantage): verl's ``adv_estimator=grpo_passk`` (after arXiv 2503.19595).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mara_rl._checks import NumericKind, as_float64, check_ref_logprobs
from mara_rl._groups import group_codes

TransformKind = Literal["reward", "advantage"]


@dataclass(frozen=True)
class Transform:
    """A registered transform: ``fn(rewards, **inputs, group_ids=..., <knob>=value)``.

    Attributes:
        name: registry name (what sweeps and host configs write).
        kind: ``"reward"`` (new rewards; the host's baseline still applies) or ``"advantage"``.
        fn: the pure function.
        knob: keyword of ``fn`` the setting goes to.
        default: the value the method's paper or engine recommends.
        settings: values a fair sweep tries: the recommended one and one on each side.
        needs: extra inputs besides the rewards: ``"policy_logprobs"`` (sequence ``log pi(y|x)`` under
            the policy that sampled) and/or ``"outcomes"`` (a hashable final answer per sample).
        reference: the paper or engine.
    """

    name: str
    kind: TransformKind
    fn: Callable[..., Any]
    knob: str
    default: float
    settings: tuple[float, ...]
    needs: tuple[str, ...]
    reference: str

    @property
    def reads_answers(self) -> bool:
        """Whether it compares the samples' final answers (``outcomes`` or their ``outcome_counts``)."""
        return bool({"outcomes", "outcome_counts"} & set(self.needs))

    def __call__(self, rewards: Any, *, group_ids: Any = None, value: float | None = None, **inputs: Any) -> Any:
        """Apply with the knob at ``value`` (``None``: the recommended default)."""
        missing = [name for name in self.needs if inputs.get(name) is None]
        if missing:
            raise ValueError(f"transform {self.name!r} needs {', '.join(missing)}")
        given = {name: inputs[name] for name in self.needs}
        return self.fn(rewards, **given, group_ids=group_ids, **{self.knob: self.default if value is None else value})


TRANSFORMS: dict[str, Transform] = {}


def register(name: str, *, kind: TransformKind, knob: str, default: float, settings: tuple[float, ...],
             needs: tuple[str, ...] = (), reference: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` under ``name`` in :data:`TRANSFORMS` (a decorator; returns ``fn`` unchanged)."""

    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in TRANSFORMS:
            raise ValueError(f"a transform named {name!r} is already registered")
        TRANSFORMS[name] = Transform(name, kind, fn, knob, default, tuple(settings), tuple(needs), reference)
        return fn

    return add


def get_transform(name: str) -> Transform:
    """The transform registered as ``name``; ``ValueError`` naming the registered ones otherwise."""
    try:
        return TRANSFORMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown transform {name!r}; registered: {', '.join(sorted(TRANSFORMS))}") from None


def _rewards_and_groups(rewards: Any, group_ids: Any) -> tuple[np.ndarray, NumericKind, np.ndarray, np.ndarray]:
    """float64 rewards ``[n]``, their kind, dense group codes ``[n]`` and group sizes ``[G]``."""
    values, kind = as_float64(rewards, "rewards")
    if values.ndim != 1:
        raise ValueError(f"rewards must be 1-D, got shape {values.shape}")
    if not np.isfinite(values).all():
        first = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(f"rewards must be finite, got {values[first]} at index {first}")
    codes, labels = group_codes(group_ids, values.shape[0])
    return values, kind, codes, np.bincount(codes, minlength=labels.shape[0] if codes.size else 0)


def _midranks(values: np.ndarray, codes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """0-based rank of each value within its group, ties sharing the mean of their ranks.

    ``rank_i = #{j in group: v_j < v_i} + (#{j in group: v_j = v_i} - 1) / 2``.
    """
    n = values.shape[0]
    order = np.lexsort((values, codes))
    v, c = values[order], codes[order]
    new_run = np.r_[True, (v[1:] != v[:-1]) | (c[1:] != c[:-1])] if n else np.zeros(0, bool)
    run = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.r_[run_start[1:], n] - 1
    group_start = np.cumsum(sizes) - sizes
    ranks = np.empty(n)
    ranks[order] = (run_start[run] + run_end[run]) / 2.0 - group_start[c]
    return ranks


@register("unlikeliness", kind="reward", knob="penalty", default=0.25, settings=(0.1, 0.25, 0.5),
          needs=("policy_logprobs",), reference="He, Fried, Welleck, arXiv 2506.02355")
def unlikeliness_rewards(rewards: Any, policy_logprobs: Any, *, penalty: float = 0.25, group_ids: Any = None) -> Any:
    """Unlikeliness reward (He et al., arXiv 2506.02355, Sec. 4): likely correct samples earn less.

    Within each group of ``G`` samples, ranked by the sampling policy's likelihood,

        r_i = R_i * (1 - penalty * rank_i / G),

    ``rank_i`` the 0-based rank of ``log pi(y_i|x)`` in its group from the least likely (0) to the most
    likely (``G - 1``), ties sharing their mean rank (identical samples get identical rewards; their
    summed policy gradient is the same as with any tie order). The most likely correct sample keeps
    ``1 - penalty (G - 1) / G`` of its reward, the least likely all of it; a zero reward stays zero.
    The paper recommends ``penalty = 0.25``. Its released code ranks by the mean per-token log-prob;
    the paper's text, followed here, by the sequence likelihood.

    Args:
        rewards: ``[n]`` task rewards ``R_i`` (0/1 for a verifier).
        policy_logprobs: ``[n]`` sequence log-probs ``log pi(y_i|x)`` under the sampling policy
            (``-inf`` allowed, NaN and ``+inf`` not).
        penalty: ``beta_rank >= 0``.
        group_ids: ``[n]`` group label per sample (one prompt per group); ``None``: one group.

    Returns:
        ``[n]`` rewards ``r`` in the kind of ``rewards``.
    """
    penalty = _nonnegative(penalty, "penalty")
    values, kind, codes, sizes = _rewards_and_groups(rewards, group_ids)
    logps, _ = as_float64(policy_logprobs, "policy_logprobs")
    if logps.shape != values.shape:
        raise ValueError(f"policy_logprobs must have the shape of rewards {values.shape}, got {logps.shape}")
    check_ref_logprobs(logps, "policy_logprobs")
    ranks = _midranks(logps, codes, sizes)
    return kind.give_back(values * (1.0 - penalty * ranks / sizes[codes]))


def _log_binom(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``log C(n, k)`` elementwise, ``-inf`` where ``k < 0`` or ``k > n``."""
    n, k = np.broadcast_arrays(np.asarray(n, np.float64), np.asarray(k, np.float64))
    valid = (k >= 0) & (k <= n)
    lgamma = np.vectorize(math.lgamma, otypes=[np.float64])
    out = np.full(n.shape, -np.inf)
    if valid.any():
        nv, kv = n[valid], k[valid]
        out[valid] = lgamma(nv + 1) - lgamma(kv + 1) - lgamma(nv - kv + 1)
    return out


def _check_k(k: Any, sizes: np.ndarray) -> int:
    if isinstance(k, (bool, np.bool_)) or not float(k).is_integer() or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    k = int(k)
    if sizes.size and sizes.min() < k:
        raise ValueError(f"k = {k} needs groups of at least k samples; the smallest group has {int(sizes.min())}")
    return k


@register("pkpo", kind="reward", knob="k", default=4, settings=(2, 4, 8),
          reference="Walder, Karkhanis, arXiv 2505.15201")
def pkpo_rewards(rewards: Any, *, k: int = 4, group_ids: Any = None) -> Any:
    """PKPO's transformed rewards (Walder and Karkhanis, arXiv 2505.15201): the gradient of ``maxg@k``.

    ``maxg@k = E[max(g(y_1), ..., g(y_k))]`` over ``k`` i.i.d. samples (``pass@k`` for 0/1 rewards).
    From ``n >= k`` samples of a group, sorted ``g_(1) <= ... <= g_(n)``, the unbiased estimator
    averages over all ``C(n, k)`` subsets; its gradient is ``sum_i s_i grad log pi(y_i)`` with

        s_(i) = [C(i-1, k-1) g_(i) + sum_{j > i} C(j-2, k-2) g_(j)] / C(n, k)

    (subsets holding sample ``i`` whose maximum is ``g_(i)``, then those whose maximum is a larger
    ``g_(j)``). Trainers average over samples, so this returns ``r_i = n s_i``: then
    ``mean_i r_i grad log pi(y_i)`` is the unbiased gradient of ``maxg@k`` and the trainer's KL
    coefficient weighs ``maxg@k`` itself. For 0/1 rewards with ``c`` correct: ``r = k`` for a correct
    sample, ``r = k (1 - C(n-1-c, k-1) / C(n-1, k-1))`` for an incorrect one; ``k = 1`` is the
    identity. Equal rewards get equal ``r`` (Pascal's rule). The host's group mean is the baseline (PKPO's own leave-one-out
    baseline is a variance reduction of the same gradient).

    Args:
        rewards: ``[n]`` rewards ``g(y_i)``.
        k: the ``k`` of pass@k, ``1 <= k <= `` every group's size.
        group_ids: ``[n]`` group label per sample; ``None``: one group.
    """
    values, kind, codes, sizes = _rewards_and_groups(rewards, group_ids)
    k = _check_k(k, sizes)
    n = values.shape[0]
    order = np.lexsort((values, codes))
    g, c = values[order], codes[order]
    group_start = np.cumsum(sizes) - sizes
    position = np.arange(n) - group_start[c] + 1  # 1-based i within the sorted group
    size = sizes[c].astype(np.float64)
    log_total = _log_binom(size, k)
    own = np.exp(_log_binom(position - 1, k - 1) - log_total) * g
    # sum_{j > i} C(j-2, k-2) g_(j) / C(n, k): the group's total minus its running sum up to i.
    term = np.exp(_log_binom(position - 2, k - 2) - log_total) * g
    running = np.cumsum(term)
    running -= np.r_[0.0, running][group_start][c]
    group_total = np.add.reduceat(term, group_start) if n else np.zeros(0)
    s = np.empty(n)
    s[order] = (own + group_total[c] - running) * size
    return kind.give_back(s)


@register("outcome_batch", kind="reward", knob="coef", default=0.5, settings=(0.25, 0.5, 1.0),
          needs=("outcomes",), reference="Song, Kempe, Munos, arXiv 2509.06941")
def outcome_batch_rewards(rewards: Any, outcomes: Any, *, coef: float = 0.5, group_ids: Any = None) -> Any:
    """Batch outcome exploration (Song et al., arXiv 2509.06941): repeating an answer within a group costs.

        r_i = R_i - coef * (1/n) * #{j != i in the group: a(y_j) = a(y_i)}

    ``a(y)`` the sample's final answer (outcome), ``n`` the group size. A group of ``n`` distinct
    answers is unchanged; ``n`` copies of one answer each lose ``coef (n-1)/n``.

    Args:
        rewards: ``[n]`` task rewards.
        outcomes: ``[n]`` hashable final answers (strings, ints); equal values are the same answer.
        coef: penalty coefficient ``>= 0``.
        group_ids: ``[n]`` group label per sample; ``None``: one group.
    """
    coef = _nonnegative(coef, "coef")
    values, kind, codes, sizes = _rewards_and_groups(rewards, group_ids)
    answers = list(outcomes.tolist() if hasattr(outcomes, "tolist") else outcomes)
    if len(answers) != values.shape[0]:
        raise ValueError(f"outcomes must have one answer per reward ({values.shape[0]}), got {len(answers)}")
    seen: dict[Any, int] = {}
    try:
        answer_codes = np.fromiter((seen.setdefault(a, len(seen)) for a in answers), np.int64, len(answers))
    except TypeError:
        raise ValueError("outcomes must be hashable answers (strings or numbers)") from None
    _, pair_code, same = np.unique(codes * max(len(seen), 1) + answer_codes, return_inverse=True,
                                   return_counts=True)
    repeats = same[pair_code.reshape(-1)] - 1
    return kind.give_back(values - coef * repeats / sizes[codes])


@register("outcome_ucb", kind="reward", knob="coef", default=0.5, settings=(0.25, 0.5, 1.0),
          needs=("outcome_counts",), reference="Song, Kempe, Munos, arXiv 2509.06941")
def outcome_ucb_rewards(rewards: Any, outcome_counts: Any, *, coef: float = 0.5, group_ids: Any = None) -> Any:
    """Historical outcome exploration (Song et al., arXiv 2509.06941): a UCB-style bonus for rarely seen answers.

        r_i = R_i + coef / sqrt(N(x_i, a(y_i)))

    ``N(x, a)`` the number of times answer ``a`` has been sampled for prompt ``x`` so far, this batch
    included (so ``N >= 1``); :class:`OutcomeCounts` keeps it across batches. The bonus fades as an
    answer is seen more often.

    Args:
        rewards: ``[n]`` task rewards.
        outcome_counts: ``[n]`` counts ``N >= 1`` of each sample's (prompt, answer) pair.
        coef: bonus coefficient ``>= 0``.
        group_ids: unused (the counts carry the prompt); accepted like every transform's.
    """
    coef = _nonnegative(coef, "coef")
    values, kind, _, _ = _rewards_and_groups(rewards, group_ids)
    counts, _ = as_float64(outcome_counts, "outcome_counts")
    if counts.shape != values.shape:
        raise ValueError(f"outcome_counts must have the shape of rewards {values.shape}, got {counts.shape}")
    if not (counts >= 1).all() or not np.isfinite(counts).all():
        raise ValueError("outcome_counts must be counts >= 1 (this batch included)")
    return kind.give_back(values + coef / np.sqrt(counts))


class OutcomeCounts:
    """Running counts of (prompt, answer) pairs across batches, for :func:`outcome_ucb_rewards`.

    A pair is kept as a 16-byte digest of its text, not the text: answers read from whole completions
    are mostly distinct, so a run's counts grow with its samples, at a few dozen bytes each.
    """

    def __init__(self) -> None:
        self.counts: dict[bytes, int] = {}

    @staticmethod
    def key(prompt: Any, outcome: Any) -> bytes:
        """The digest a (prompt, answer) pair is counted under."""
        return hashlib.blake2b(f"{prompt!r}\x00{outcome!r}".encode(), digest_size=16).digest()

    def update(self, prompts: list[Any], outcomes: list[Any], *, record: bool = True) -> np.ndarray:
        """``[n]`` each sample's count ``N(x_i, a_i)``, this batch included; ``record=False`` (evaluation)
        leaves the running counts as they were."""
        if len(prompts) != len(outcomes):
            raise ValueError(f"prompts and outcomes must pair up, got {len(prompts)} and {len(outcomes)}")
        keys = [self.key(p, a) for p, a in zip(prompts, outcomes)]
        batch: dict[bytes, int] = {}
        for key in keys:
            batch[key] = batch.get(key, 0) + 1
        totals = {key: self.counts.get(key, 0) + n for key, n in batch.items()}
        if record:
            self.counts.update(totals)
        return np.array([totals[key] for key in keys], dtype=np.int64)


def _binary(values: np.ndarray, name: str) -> np.ndarray:
    correct = values == 1.0
    if not (correct | (values == 0.0)).all():
        first = int(np.flatnonzero(~(correct | (values == 0.0)))[0])
        raise ValueError(f"{name} is for 0/1 rewards (pass/fail), got {values[first]} at index {first}")
    return correct


@register("passk_advantage", kind="advantage", knob="k", default=4, settings=(2, 4, 8),
          reference="Chen et al., arXiv 2508.10751")
def passk_advantages(rewards: Any, *, k: int = 4, group_ids: Any = None) -> Any:
    """Pass@k Training's analytic advantages (Chen et al., arXiv 2508.10751, Sec. 3.3), 0/1 rewards.

    A group of ``N`` samples with ``N_neg`` failures is read as all its ``C(N, k)`` subsets of ``k``,
    each rewarded ``max`` (pass@k) and normalised by the subsets' mean and std; a sample's advantage is
    the mean over the subsets holding it:

        Rbar = 1 - C(N_neg, k) / C(N, k),   sigma = sqrt(Rbar (1 - Rbar)),
        A_pos = (1 - Rbar) / sigma,
        A_neg = (1 - Rbar - C(N_neg - 1, k - 1) / C(N - 1, k - 1)) / sigma,

    and ``0`` for a group whose every subset has the same reward (``sigma = 0``). The advantages of
    a group sum to zero.

    Args:
        rewards: ``[n]`` 0/1 rewards.
        k: subset size, ``1 <= k <= `` every group's size.
        group_ids: ``[n]`` group label per sample; ``None``: one group.

    Returns:
        ``[n]`` advantages in the kind of ``rewards``.
    """
    values, kind, codes, sizes = _rewards_and_groups(rewards, group_ids)
    correct = _binary(values, "passk_advantage")
    k = _check_k(k, sizes)
    size = sizes.astype(np.float64)
    failures = size - np.bincount(codes, weights=correct.astype(np.float64), minlength=sizes.shape[0])
    mean = 1.0 - np.exp(_log_binom(failures, k) - _log_binom(size, k))
    sigma = np.sqrt(np.clip(mean * (1.0 - mean), 0.0, None))
    all_fail_with = np.exp(_log_binom(failures - 1, k - 1) - _log_binom(size - 1, k - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        positive = np.where(sigma > 0, (1.0 - mean) / sigma, 0.0)
        negative = np.where(sigma > 0, (1.0 - mean - all_fail_with) / sigma, 0.0)
    return kind.give_back(np.where(correct, positive[codes], negative[codes]))


@register("grpo_passk", kind="advantage", knob="norm_by_std", default=1, settings=(1,),
          reference="verl adv_estimator=grpo_passk (arXiv 2503.19595)")
def grpo_passk_advantages(rewards: Any, *, norm_by_std: float = 1, group_ids: Any = None,
                          epsilon: float = 1e-6) -> Any:
    """verl's ``grpo_passk`` advantage estimator: only each group's best sample moves.

        A_best = (r_max - r_second) / (std + epsilon)   (without the division when ``norm_by_std`` is 0),

    ``std`` the group's unbiased reward std (``torch.std``), every other sample ``0``. The best is the
    first sample with the group's largest reward, so a tie for the best gives all zeros. Groups need
    at least 2 samples (verl's check).

    Args:
        rewards: ``[n]`` rewards.
        norm_by_std: verl's ``norm_adv_by_std_in_grpo`` (1 or 0).
        group_ids: ``[n]`` group label per sample; ``None``: one group.
        epsilon: verl's stabiliser of the std.
    """
    values, kind, codes, sizes = _rewards_and_groups(rewards, group_ids)
    if norm_by_std not in (0, 1):
        raise ValueError(f"norm_by_std must be 1 or 0, got {norm_by_std!r}")
    if sizes.size and sizes.min() < 2:
        raise ValueError("grpo_passk needs at least 2 samples in every group")
    n = values.shape[0]
    order = np.lexsort((np.arange(n), -values, codes))  # per group: largest first, then lowest index
    group_start = np.cumsum(sizes) - sizes
    best, second = order[group_start], order[group_start + 1]
    gap = values[best] - values[second]
    if norm_by_std:
        mean = np.bincount(codes, weights=values) / sizes
        squares = np.bincount(codes, weights=(values - mean[codes]) ** 2)
        gap = gap / (np.sqrt(squares / (sizes - 1)) + epsilon)
    advantages = np.zeros(n)
    advantages[best] = gap
    return kind.give_back(advantages)


def _nonnegative(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}") from None
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return out
