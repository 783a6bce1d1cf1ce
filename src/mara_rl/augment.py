"""MARA: Mode Anchored Reward Augmentation (GX-Chen et al., 2025, Algorithms 1 and 2).

``mara_rewards`` is the single implementation every trainer in mara-rl calls. It is a pure
transform of a batch of rewards, applied before advantages are computed:

1. per group, the anchor ``z = argmax_{i: R_i >= tau} log pi_ref(y_i)``;
2. reverse KL (Alg. 1): each good sample gets ``r_i = R(z) + beta * (log pi_ref(z) - log pi_ref(y_i))``;
   forward KL (Alg. 2): each good sample gets ``r_i = R(z)`` and regulariser reference
   log-prob ``log pi_ref(z)``;
3. samples below ``tau`` keep ``R_i``; groups without a sample ``>= tau`` are left unchanged.

For the reverse-KL objective this makes ``pi_ref(y) exp(r(y)/beta)`` constant over each group's
good samples, so the optimal policy is uniform over them.

Non-finite rewards are rejected with a ``ValueError``: a NaN can neither be compared with ``tau`` nor
anchor a group, an infinite reward cannot anchor one, and silently passing either through would
poison the advantages of its whole group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mara_rl._checks import as_float64, check_beta, check_choice, check_quantile, check_ref_logprobs, check_threshold
from mara_rl._groups import group_codes

KLDirection = Literal["reverse", "forward"]
KL_DIRECTIONS: tuple[KLDirection, ...] = ("reverse", "forward")


@dataclass(frozen=True)
class MaraResult:
    """Output of :func:`mara_rewards`; arrays have the kind (numpy or torch, device) of the input.

    ``rewards`` and ``ref_logprobs`` are floating: float64 and float32 inputs keep their dtype,
    float16 and bfloat16 come back as float32, integers and bools as float64 (numpy) or torch's
    default float dtype.

    Attributes:
        rewards: augmented rewards ``r``, shape ``[n]``.
        ref_logprobs: reference log-probs to use in the KL regulariser, shape ``[n]``. Equal to the
            input for reverse KL; for forward KL (Alg. 2) good samples carry the anchor's.
        anchor_index: ``[num_groups]`` sample index of each group's anchor, ``-1`` where the group
            has no sample with ``R >= tau`` (or, for integer ids, no sample at all).
        augmented: ``[n]`` bool mask of samples whose reward was replaced (``R_i >= tau`` in a group).
        group_labels: ``[num_groups]`` group label of each ``anchor_index`` entry (numpy).
        tau: ``[num_groups]`` threshold used in each group (numpy float64).
        group_size: ``[num_groups]`` number of samples in each group (numpy int64).
    """

    rewards: Any
    ref_logprobs: Any
    anchor_index: Any
    augmented: Any
    group_labels: np.ndarray
    tau: np.ndarray
    group_size: np.ndarray

    @property
    def fraction_groups_augmented(self) -> float:
        """Share of non-empty groups that had an anchor."""
        anchors = np.asarray(self.anchor_index.cpu() if hasattr(self.anchor_index, "cpu") else self.anchor_index)
        nonempty = self.group_size > 0
        return float((anchors[nonempty] >= 0).mean()) if nonempty.any() else 0.0


def _grouped_quantile(values: np.ndarray, codes: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """Per-group quantile with linear interpolation (numpy's default method); ``counts`` are group sizes."""
    num_groups = counts.shape[0]
    if q in (0.0, 1.0):  # the minimum or the maximum: one pass, no sort
        out = np.full(num_groups, np.inf if q == 0.0 else -np.inf)
        (np.minimum if q == 0.0 else np.maximum).at(out, codes, values)
        out[counts == 0] = np.inf
        return out
    order = np.lexsort((values, codes))
    sorted_values = values[order]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    position = q * np.maximum(counts - 1, 0)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, np.maximum(counts - 1, 0))
    frac = position - lower
    out = np.full(num_groups, np.inf)
    nonempty = counts > 0
    lo_v = sorted_values[(starts + lower)[nonempty]]
    hi_v = sorted_values[(starts + upper)[nonempty]]
    out[nonempty] = lo_v + frac[nonempty] * (hi_v - lo_v)
    return out


def mara_rewards(
    rewards: Any,
    ref_logprobs: Any,
    *,
    beta: float,
    tau: float | None = None,
    tau_quantile: float | None = None,
    group_ids: Any = None,
    kl: KLDirection = "reverse",
) -> MaraResult:
    """Mode Anchored Reward Augmentation (Algorithm 1; Algorithm 2 for ``kl="forward"``).

    Args:
        rewards: ``[n]`` rewards ``R_i`` (numpy array or torch tensor on any device).
        ref_logprobs: ``[n]`` sequence log-probs ``log pi_ref(y_i)`` (for LLMs ``log pi_ref(y|x)``).
            ``-inf`` is allowed only for samples below ``tau``.
        beta: the KL coefficient the trainer uses (> 0; MARA is inert at beta = 0).
        tau: quality threshold, a finite number; samples with ``R_i >= tau`` are "good".
        tau_quantile: instead of ``tau``, the per-group quantile of the rewards in ``[0, 1]``
            (e.g. 0.9 for the 90th percentile), linear interpolation.
        group_ids: ``[n]`` group label per sample (one anchor per group, e.g. the prompt index).
            Any ints or strings; groups need not be contiguous or of equal size. ``None``: one group.
            A :class:`~mara_rl._groups.Segments` made once is taken as it is: its groups, in label order,
            are the labels present (integer labels left unused are not empty groups, as they are here).
        kl: ``"reverse"`` (Alg. 1) or ``"forward"`` (Alg. 2).

    Returns:
        :class:`MaraResult` with augmented rewards and regulariser reference log-probs in the input's
        kind (numpy or torch) and device. They are computed in float64 and returned as floats:
        float64/float32 keep their dtype, float16/bfloat16 become float32 (a half-precision reward
        cannot hold a beta-sized gap), ints and bools become float64 (torch: the default float dtype).
        ``tau`` is compared with the rewards in their own dtype, so a float32 reward equal to tau
        is good.

    Raises:
        ValueError: on beta <= 0, both or neither of tau / tau_quantile, a non-finite tau or a quantile
            outside [0, 1], shape mismatch, non-finite reward,
            NaN or +inf ref log-prob, or -inf ref log-prob on a good sample.
    """
    beta = check_beta(beta)
    check_choice(kl, KL_DIRECTIONS, "kl")
    if (tau is None) == (tau_quantile is None):
        raise ValueError("give exactly one of tau (a reward threshold) and tau_quantile (a per-group quantile)")
    if tau is not None:
        tau = check_threshold(tau)
    if tau_quantile is not None:
        tau_quantile = check_quantile(tau_quantile)

    reward_np, kind = as_float64(rewards, "rewards")
    ref_np, ref_kind = as_float64(ref_logprobs, "ref_logprobs")
    if reward_np.ndim != 1:
        raise ValueError(f"rewards must be 1-D, got shape {reward_np.shape}")
    if ref_np.shape != reward_np.shape:
        raise ValueError(
            f"ref_logprobs must have the same shape as rewards, got {ref_np.shape} and {reward_np.shape}"
        )
    if not np.isfinite(reward_np).all():
        first = int(np.flatnonzero(~np.isfinite(reward_np))[0])
        what = "NaN" if np.isnan(reward_np[first]) else "an infinite reward"
        raise ValueError(
            f"rewards must be finite, got {what} at index {first}; drop or score those samples "
            "(a NaN cannot be compared with tau, an infinite reward cannot anchor a group)"
        )
    check_ref_logprobs(ref_np)
    n = reward_np.shape[0]
    codes, labels = group_codes(group_ids, n, compact=False)
    num_groups = labels.shape[0]
    group_size = np.bincount(codes, minlength=num_groups)

    if tau is not None:
        # Compare in the rewards' own dtype: float32(0.9) must count as reaching tau = 0.9.
        threshold = kind.round(tau)
        group_tau = np.full(num_groups, threshold)
        good = reward_np >= threshold
    else:
        group_tau = _grouped_quantile(reward_np, codes, group_size, tau_quantile)
        good = reward_np >= group_tau[codes]
    good_index = np.flatnonzero(good)
    good_ref = ref_np[good_index]
    if good_ref.size and good_ref.min() == -np.inf:
        first = int(good_index[np.isneginf(good_ref)][0])
        raise ValueError(
            f"ref_logprobs is -inf at index {first}, a sample with reward >= tau: MARA needs a finite "
            "reference log-prob for every good sample"
        )

    # Anchor: highest ref log-prob among good samples; ties go to the higher reward, then the
    # lower index, so that equal (R, log pi_ref) pairs always give the same augmented values.
    # Only good samples are gathered: per-group arrays are small, random gathers over n are not.
    good_code = codes[good_index]
    best_ref = np.full(num_groups, -np.inf)
    np.maximum.at(best_ref, good_code, good_ref)
    tied = np.flatnonzero(good_ref == best_ref[good_code])
    tied_index, tied_code = good_index[tied], good_code[tied]
    best_reward = np.full(num_groups, -np.inf)
    np.maximum.at(best_reward, tied_code, reward_np[tied_index])
    first_best = reward_np[tied_index] == best_reward[tied_code]
    anchor = np.full(num_groups, n, dtype=np.int64)
    np.minimum.at(anchor, tied_code[first_best], tied_index[first_best])
    has_anchor = anchor < n
    anchor[~has_anchor] = -1

    safe_anchor = np.where(has_anchor, anchor, 0)
    # One gather of (R(z), log pi_ref(z)) rows per good sample (random gathers dominate the cost);
    # ``take`` along axis 0, as fancy indexing of a 2-D array is several times slower.
    anchor_pair = np.stack([reward_np[safe_anchor], ref_np[safe_anchor]], axis=1).take(good_code, axis=0) if n else np.zeros((0, 2))
    anchor_reward, anchor_ref = anchor_pair[:, 0], anchor_pair[:, 1]
    new_ref = ref_np
    if kl == "reverse":
        with np.errstate(over="ignore"):
            good_rewards = anchor_reward + beta * (anchor_ref - good_ref)
        limit = np.finfo(kind.result_dtype).max
        if not (np.abs(good_rewards) <= limit).all():  # also False for inf and NaN
            raise ValueError("augmented rewards overflowed; check the scale of rewards, ref_logprobs and beta")
    else:
        good_rewards = anchor_reward
        new_ref = ref_np.copy()
        new_ref[good_index] = anchor_ref
    new_rewards = reward_np.copy()
    new_rewards[good_index] = good_rewards

    return MaraResult(
        rewards=kind.give_back(new_rewards),
        ref_logprobs=ref_kind.give_back(new_ref),
        anchor_index=kind.give_back_exact(anchor),
        augmented=kind.give_back_exact(good),
        group_labels=labels,
        tau=group_tau,
        group_size=group_size,
    )
