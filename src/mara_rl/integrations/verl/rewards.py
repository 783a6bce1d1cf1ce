"""MARA on a verl batch: the per-token ``rm_scores`` rewritten so each sample's sequence reward is MARA's.

Pure torch + numpy on padded ``[B, T]`` response tensors; the trainer mode reads them from and writes
them back to TransferQueue. Which rows are MARA's samples mirrors what verl's advantage code reads:

- padding rows (``is_padding`` tag, added to divide the batch evenly) and rows with an empty
  response mask are left alone: they are in no loss and carry no reward;
- GRPO (``compute_advantage_for_multi_trajectories``) reads only the final output of each
  ``{uid}_{session}`` (keys ``{uid}_{session}_{index}``, highest index) and broadcasts its advantage
  to the session's other outputs, so only those final rows are samples; other estimators read every row;
- groups are verl's ``uid`` field (one prompt), as in verl's group-relative estimators.

A sample's reward is ``R = sum_t rm_scores`` over its whole response (verl's estimators sum every
token) and ``log pi_ref(y|x) = sum_t ref_log_prob`` over its response mask (the tokens the policy
generated, which verl's KL terms cover); :func:`mara_rl.augment.mara_rewards` gives ``r``, and
``r - R`` is added to ``rm_scores`` at the last response position (where verl's reward managers put
the score). Forward KL (Alg. 2) also yields each sample's forward-KL scale ``s_i`` and coefficient
``c_i`` (:func:`mara_rl.integrations.forward_kl.mara_forward_weights` over the whole ``uid`` group,
with ``log pi_old(y|x) = sum_t old_log_probs``), for the actor loss.

With ``algorithm.mara.reward_transform`` a rival reward transform of :mod:`mara_rl.transforms` takes
MARA's place on the same samples and groups, its inputs summed the same way: the sampling policy's
``log pi(y|x) = sum_t old_log_probs``, each response's answer (``answer_key``'s first group, else its
text; stripped), the prompt's text as its identity across steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mara_rl._groups import group_codes
from mara_rl.augment import mara_rewards
from mara_rl.integrations.forward_kl import mara_forward_weights
from mara_rl.integrations.verl.settings import MaraSettings
from mara_rl.transforms import OutcomeCounts, Transform, get_transform


@dataclass(frozen=True)
class MaraRewrite:
    """Result of :func:`mara_rewrite`.

    Attributes:
        rm_scores: ``[B, T]`` per-token scores whose masked row sums are MARA's rewards (input dtype).
        kl_scale, kl_coef: ``[B]`` fp32 Alg. 2 weights ``s_i`` and ``c_i`` of the forward-KL loss (``1`` and
            ``0`` outside MARA's samples and without MARA), or None for reverse KL.
        metrics: ``mara/...`` scalars for verl's metrics dict.
        anchor_rows: ``[A]`` batch row of each group's anchor (empty when MARA changed nothing).
    """

    rm_scores: torch.Tensor
    kl_scale: torch.Tensor | None
    kl_coef: torch.Tensor | None
    metrics: dict[str, float]
    anchor_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def session_final_rows(keys: Sequence[str]) -> np.ndarray:
    """``[B]`` bool: the row with the highest output index in each ``{uid}_{session}`` (verl's GRPO rows)."""
    best: dict[str, tuple[int, int]] = {}
    for row, key in enumerate(keys):
        parts = key.rsplit("_", 2)
        if len(parts) != 3 or not parts[2].isdigit():
            raise ValueError(f"verl batch key {key!r} is not of the form '{{uid}}_{{session}}_{{index}}'")
        session, index = f"{parts[0]}_{parts[1]}", int(parts[2])
        if session not in best or best[session][0] < index:
            best[session] = (index, row)
    final = np.zeros(len(keys), dtype=bool)
    final[[row for _, row in best.values()]] = True
    return final


def last_token_onehot(response_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` one-hot of each row's last response token (all zeros for an empty mask)."""
    mask = response_mask.bool()
    width = mask.shape[1]
    last = width - 1 - mask.flip(1).int().argmax(dim=1)
    onehot = torch.zeros_like(mask)
    onehot[torch.arange(mask.shape[0], device=mask.device), last] = True
    return onehot & mask.any(dim=1, keepdim=True)


def mara_rewrite(
    rm_scores: torch.Tensor,
    ref_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    response_lengths: torch.Tensor,
    uids: Sequence[str],
    keys: Sequence[str],
    is_padding: Sequence[bool],
    *,
    old_log_prob: torch.Tensor | None = None,
    beta: float,
    settings: MaraSettings,
    final_output_only: bool,
    answers: Sequence[str] | None = None,
    prompts: Sequence[str] | None = None,
    outcome_counts: OutcomeCounts | None = None,
) -> MaraRewrite:
    """Apply MARA (or ``settings.reward_transform``) per ``uid`` group to a padded verl batch (see the module docstring).

    Args:
        rm_scores, ref_log_prob, response_mask: ``[B, T]`` response tensors, right-padded with zeros.
        response_lengths: ``[B]`` response length of each row (its nested length in TransferQueue).
        uids: ``[B]`` prompt uid of each row (verl's ``uid`` field).
        keys: ``[B]`` TransferQueue keys ``{uid}_{session}_{index}``.
        is_padding: ``[B]`` verl's padding tags.
        old_log_prob: ``[B, T]`` log-probs of the sampling policy (verl's ``old_log_probs``); needed
            for forward KL with MARA.
        beta: the KL coefficient verl applies this step.
        settings: the ``algorithm.mara`` settings.
        final_output_only: True for GRPO (only each session's final output is a sample).
        answers, prompts: ``[B]`` each response's answer and its prompt's text, for the outcome transforms.
        outcome_counts: the run's (prompt, answer) counts for ``outcome_ucb``; this batch's samples are added.

    Returns:
        :class:`MaraRewrite`.
    """
    batch = rm_scores.shape[0]
    if not (len(uids) == len(keys) == len(is_padding) == batch):
        raise ValueError(
            f"uids, keys and is_padding need one entry per row ({batch}), got {len(uids)}, {len(keys)}, {len(is_padding)}"
        )
    mask = response_mask.bool()
    width = mask.shape[1]
    lengths = response_lengths.to(mask.device)
    if lengths.shape != (batch,) or bool(((lengths < 0) | (lengths > width)).any()):
        raise ValueError(f"response_lengths must be [{batch}] values in [0, {width}], got {response_lengths.tolist()}")
    positions = torch.arange(width, device=mask.device)
    last_position = last_token_onehot(positions[None, :] < lengths[:, None])
    selected = ~np.asarray(is_padding, dtype=bool) & mask.any(dim=1).cpu().numpy()
    if final_output_only:
        selected &= session_final_rows(keys)
    rows = torch.from_numpy(np.flatnonzero(selected)).to(rm_scores.device)
    raw = rm_scores.double().sum(dim=1)
    ref_seq = (ref_log_prob.double() * mask.double()).sum(dim=1)
    forward = settings.kl == "forward"
    transform = None if settings.reward_transform is None else get_transform(settings.reward_transform)
    if (forward and settings.enable or transform is not None and "policy_logprobs" in transform.needs) and old_log_prob is None:
        raise ValueError("forward KL with MARA and the unlikeliness reward need old_log_prob (the sampling policy's log-probs)")
    new_rm = rm_scores
    kl_scale = torch.ones(batch, dtype=torch.float32, device=rm_scores.device) if forward else None
    kl_coef = torch.zeros(batch, dtype=torch.float32, device=rm_scores.device) if forward else None
    metrics: dict[str, float] = {"mara/beta": float(beta)}
    if not (settings.enable or transform is not None) or rows.numel() == 0:
        return MaraRewrite(new_rm, kl_scale, kl_coef, metrics)

    row_uids = np.asarray([uids[i] for i in rows.tolist()], dtype=object).astype(str)
    if transform is not None:
        inputs = _transform_inputs(transform, rows.tolist(), mask, old_log_prob, answers, prompts, outcome_counts)
        try:
            new_rewards = transform(raw[rows], group_ids=row_uids, value=settings.reward_transform_value, **inputs)
        except ValueError as err:  # e.g. a group left smaller than pkpo's k by empty responses
            raise ValueError(f"algorithm.mara.reward_transform={transform.name} on this batch: {err}") from None
        new_rm = _with_rewards(rm_scores, rows, new_rewards - raw[rows], last_position)
        metrics.update({"mara/reward_raw": float(raw[rows].mean()), "mara/reward_transformed": float(new_rewards.mean())})
        return MaraRewrite(new_rm, kl_scale, kl_coef, metrics)
    result = mara_rewards(
        raw[rows],
        ref_seq[rows],
        beta=beta,
        tau=settings.tau,
        tau_quantile=settings.tau_quantile,
        group_ids=row_uids,
        kl=settings.kl,
    )
    shift = result.rewards - raw[rows]
    new_rm = _with_rewards(rm_scores, rows, shift, last_position)
    if forward:
        old_seq = (old_log_prob.double() * mask.double()).sum(dim=1)
        codes = torch.from_numpy(group_codes(row_uids, len(row_uids))[0]).to(rows.device)
        coef, scale = mara_forward_weights(ref_seq[rows], result.ref_logprobs, old_seq[rows], codes)
        kl_scale[rows], kl_coef[rows] = scale.to(kl_scale.device), coef.to(kl_coef.device)
        metrics["mara/forward_kl_coef_max"] = float(coef.max())

    augmented = result.augmented
    anchors = result.anchor_index[result.anchor_index >= 0]
    metrics.update(
        {
            "mara/frac_groups_augmented": result.fraction_groups_augmented,
            "mara/frac_samples_augmented": float(augmented.double().mean()),
            "mara/mean_augmentation": float(shift[augmented].mean()) if augmented.any() else 0.0,
            "mara/reward_raw": float(raw[rows].mean()),
            "mara/reward_augmented": float(result.rewards.mean()),
        }
    )
    if anchors.numel():  # both directions keep log pi_ref(z|x) at the anchor's own index
        metrics["mara/anchor_ref_logprob"] = float(result.ref_logprobs[anchors].mean())
    return MaraRewrite(new_rm, kl_scale, kl_coef, metrics, rows[anchors].cpu().numpy())


def _with_rewards(rm_scores: torch.Tensor, rows: torch.Tensor, shift: torch.Tensor, last_position: torch.Tensor) -> torch.Tensor:
    """``rm_scores`` with ``shift`` added at the last response position of ``rows``: in float64 and rounded
    once, so a one-token reward becomes the new reward in the input dtype."""
    reward_shift = torch.zeros(rm_scores.shape[0], dtype=torch.float64, device=rm_scores.device)
    reward_shift[rows] = shift.to(torch.float64)
    return (rm_scores.double() + reward_shift[:, None] * last_position).to(rm_scores.dtype)


def _transform_inputs(transform: Transform, rows: list[int], mask: torch.Tensor, old_log_prob: torch.Tensor | None,
                      answers: Sequence[str] | None, prompts: Sequence[str] | None,
                      outcome_counts: OutcomeCounts | None) -> dict:
    """What a transform reads besides the rewards, for the sample ``rows``."""
    needs = transform.needs
    inputs: dict = {}
    if "policy_logprobs" in needs:
        inputs["policy_logprobs"] = (old_log_prob.double() * mask.double()).sum(dim=1)[rows]
    if transform.reads_answers:
        if answers is None:
            raise ValueError("the outcome transforms need each response's answer (answers)")
        outcomes = [answers[i] for i in rows]
        inputs["outcomes"] = outcomes
        if "outcome_counts" in needs:
            if prompts is None or outcome_counts is None:
                raise ValueError("outcome_ucb needs the decoded prompts and the run's OutcomeCounts")
            inputs["outcome_counts"] = outcome_counts.update([prompts[i] for i in rows], outcomes)
    return {key: inputs[key] for key in needs}
