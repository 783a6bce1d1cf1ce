"""The rollout record of the ``mara_sync`` mode (``+algorithm.mara.record_dir=PATH``), in the schema TRL's trainers write.

verl's trainer is a single controller: the driver reads the whole batch from TransferQueue and
writes one shard per step (rank 0). A row per response that is not padding: ``step`` is verl's
``global_steps`` (1 for the first step; a resumed run continues after its checkpoint's step),
``group_id`` numbers the batch's ``uid`` groups in order of first appearance, ``prompt`` and
``completion`` are verl's ``prompts`` / ``responses`` decoded as its ``rollout_data_dir`` dump does
(``skip_special_tokens=True``), ``completion_length`` the response's tokens, ``truncated`` whether it
does not end with the tokenizer's end-of-sequence token, one reward function ``score`` (the sum of
``rm_scores``, verl's reward before MARA and any KL penalty), ``ref_logprob`` the masked sum of
``ref_log_prob`` (present when a KL term is on), ``policy_logprob`` that of the sampler's
``rollout_log_probs`` (else verl's ``old_log_probs``), and, with MARA on, ``mara_reward`` (the sum
of the rewritten ``rm_scores``) and ``mara_anchor``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mara_rl.integrations.record import RecordMetadata, RolloutRecorder

REWARD_NAME = "score"
FIELDS = ["uid", "prompts", "responses", "response_mask", "rm_scores", "ref_log_prob", "rollout_log_probs",
          "old_log_probs"]


def record_metadata(config: Any, settings: Any, beta: float) -> RecordMetadata:
    """``record.json`` of a ``mara_sync`` run."""
    return RecordMetadata(
        host="verl",
        trainer="MaraSyncTrainer",
        beta=beta,
        kl_direction=settings.kl,
        mara=settings.enable,
        mara_tau=settings.tau if settings.enable else None,
        mara_tau_quantile=settings.tau_quantile if settings.enable else None,
        num_generations=int(config.actor_rollout_ref.rollout.n),
        reward_funcs=[REWARD_NAME],
        reward_weights=[1.0],
        model=str(config.actor_rollout_ref.model.path),
        reward_transform=settings.reward_transform,
        reward_transform_value=settings.reward_transform_value,
    )


def _masked_sums(data: Any, field: str, mask: torch.Tensor) -> torch.Tensor | None:
    if field not in data.keys():
        return None
    return (data[field].double() * mask).sum(dim=1)


def decode_rows(data: Any, padded: Any, field: str, tokenizer: Any) -> list[str]:
    """Each row's ``prompts`` or ``responses`` tokens (its own length, no padding) decoded as verl's
    ``rollout_data_dir`` dump does (``skip_special_tokens=True``)."""
    lengths = data[field].offsets().diff()
    return [tokenizer.decode(tokens[: int(n)], skip_special_tokens=True) for tokens, n in zip(padded[field], lengths)]


class VerlRecorder:
    """Reads one step's batch (before MARA's rewrite) and writes it with MARA's result (after)."""

    def __init__(self, folder: str, metadata: RecordMetadata):
        self.writer = RolloutRecorder(folder, metadata)

    def read(self, tq: Any, batch: Any, tokenizer: Any) -> dict[str, Any]:
        """The step's rows (padding and empty responses left out), as columns of the record."""
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=FIELDS)
        lengths = data["responses"].offsets().diff()
        padded = data.to_padded_tensor()
        mask = padded["response_mask"].double()
        padding = np.array([bool(tag.get("is_padding", False)) for tag in batch.tags])
        rows = np.flatnonzero(~padding & (mask.sum(dim=1) > 0).cpu().numpy())
        uids = [str(u) for u in padded.pop("uid").tolist()]  # as verl reads it
        group_of: dict[str, int] = {}
        responses = [r[: int(n)] for r, n in zip(padded["responses"], lengths)]
        prompts, completions = (decode_rows(data, padded, name, tokenizer) for name in ("prompts", "responses"))
        policy = _masked_sums(padded, "rollout_log_probs", mask)
        if policy is None:
            policy = _masked_sums(padded, "old_log_probs", mask)
        ref = _masked_sums(padded, "ref_log_prob", mask)
        score = padded["rm_scores"].double().sum(dim=1)
        eos = tokenizer.eos_token_id
        return {
            "rows": rows,
            "batch_size": len(uids),
            "group_ids": np.array([group_of.setdefault(uids[i], len(group_of)) for i in rows], dtype=np.int64),
            "prompts": [prompts[i] for i in rows],
            "completions": [completions[i] for i in rows],
            "completion_lengths": lengths.cpu().numpy()[rows],
            "truncated": np.array([len(responses[i]) == 0 or int(responses[i][-1]) != eos for i in rows]),
            "rewards_per_func": score[rows].cpu().numpy()[:, None],
            "reward": score[rows].cpu().numpy(),
            "ref_logprobs": None if ref is None else ref[rows].cpu().numpy(),
            "policy_logprobs": None if policy is None else policy[rows].cpu().numpy(),
        }

    def write(self, step: int, columns: dict[str, Any], rewrite: Any = None) -> None:
        """Write the step's shard; ``rewrite`` (:class:`~mara_rl.integrations.verl.rewards.MaraRewrite`): MARA's."""
        rows, batch_size = columns.pop("rows"), columns.pop("batch_size")
        if rewrite is not None:
            anchors = np.zeros(batch_size, dtype=bool)
            anchors[rewrite.anchor_rows] = True
            columns["mara_rewards"] = rewrite.rm_scores.double().sum(dim=1).cpu().numpy()[rows]
            columns["mara_anchors"] = anchors[rows]
        self.writer.write(step, **columns)
