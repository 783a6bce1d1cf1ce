"""The rollout record and the live collapse metrics of ``MaraGRPOTrainer`` / ``MaraRLOOTrainer``.

The trainers call three hooks while TRL scores a training batch (``_generate_and_score_completions``):
:meth:`BatchRecorder.scored` with TRL's raw per-function rewards (gathered from every process),
:meth:`BatchRecorder.augmented` with MARA's rewards and anchors (MARA on), and :meth:`BatchRecorder.finish`
with TRL's output and the log-prob passes it ran. ``finish`` writes this process's rows
(:class:`mara_rl.integrations.record.RolloutRecorder`) and logs the collapse metrics
(:func:`mara_rl.integrations.monitor.collapse_metrics`) to the trainer's metrics, so ``report_to``
gets them with TRL's own.

Log-probs reuse TRL's passes: ``log pi_ref(y|x)`` is the reference pass TRL runs when ``beta > 0``
(the reference with the sampling temperature, as TRL's KL term and MARA use it; with a PEFT model
and no ``ref_model``, the base model) and the sampler's log-prob is vLLM's sampling log-probs or TRL's
old-policy pass when it has one. Otherwise the recorder runs the pass itself, on the same tokens
and with TRL's own ``_get_per_token_logps_and_entropies``: the policy (GRPO with aligned steps and no
vLLM has no old-policy pass) and, with ``record_reference_pass=True`` and ``beta = 0``, the reference
(TRL then loads no reference model: one is loaded as TRL would, or the PEFT adapter is disabled).
Sequence log-probs are sums over TRL's completion mask (times its tool mask); a completion whose
mask TRL zeroed (``mask_truncated_completions``) records null log-probs.

Evaluation batches are not recorded.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather, gather_object, is_peft_model

from mara_rl.integrations.monitor import collapse_metrics
from mara_rl.integrations.record import RecordMetadata, RolloutRecorder, canonical_text, completion_text


# TRL's output keys of multimodal batches: the recorder's own passes do not forward them.
_MULTIMODAL_KEYS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "spatial_shapes", "image_sizes",
                    "token_type_ids", "mm_token_type_ids", "image_position_ids")


def mara_settings_message(trainer: Any) -> str:
    """One line: MARA on or off, with its tau and beta, and the KL direction."""
    args = trainer.args
    kl = getattr(args, "kl_direction", "reverse")
    if not getattr(args, "mara", False):
        return f"{type(trainer).__name__}: MARA off (beta={trainer.beta:g}, {kl} KL)"
    tau = (f"tau={args.mara_tau:g}" if args.mara_tau is not None
           else f"tau = per-group {args.mara_tau_quantile:g} reward quantile")
    return f"{type(trainer).__name__}: MARA on ({tau}, beta={trainer.beta:g}, {kl} KL)"


def record_metadata(trainer: Any) -> RecordMetadata:
    """``record.json`` of a TRL trainer (see :mod:`mara_rl.integrations.record`)."""
    args = trainer.args
    model = trainer.accelerator.unwrap_model(trainer.model)
    config = getattr(model, "config", None)
    return RecordMetadata(
        host="trl",
        trainer=type(trainer).__name__,
        beta=trainer.beta,
        kl_direction=getattr(args, "kl_direction", "reverse"),
        mara=bool(getattr(args, "mara", False)),
        mara_tau=getattr(args, "mara_tau", None),
        mara_tau_quantile=getattr(args, "mara_tau_quantile", None),
        num_generations=trainer.num_generations,
        reward_funcs=list(trainer.reward_func_names),
        reward_weights=[float(w) for w in trainer.reward_weights],
        model=str(getattr(config, "_name_or_path", "") or type(model).__name__),
        reward_transform=getattr(args, "reward_transform", None),
        reward_transform_value=getattr(args, "reward_transform_value", None),
    )


def load_record_reference(trainer: Any) -> Any:
    """The reference TRL would load with ``beta > 0``, for ``record_reference_pass`` with ``beta = 0``.

    ``None`` for a PEFT model (its adapter is disabled instead, as TRL does).
    """
    from trl.models import prepare_deepspeed, prepare_fsdp
    from trl.trainer.utils import (
        add_fused_lm_head,
        create_model_from_path,
        disable_dropout_in_model,
        get_config_model_id,
    )

    if is_peft_model(trainer.accelerator.unwrap_model(trainer.model)):
        return None
    args = trainer.args
    kwargs = dict(args.model_init_kwargs or {})
    if args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED"]:
        kwargs["device_map"] = None
    kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    kwargs.setdefault("dtype", trainer.model.dtype)
    kwargs.setdefault("attn_implementation", trainer.model.config._attn_implementation)
    reference = create_model_from_path(get_config_model_id(trainer.model.config), **kwargs)
    if args.disable_dropout:
        disable_dropout_in_model(reference)
    # TRL's log-prob passes call the model with its fused LM head (tempered log-probs, no full logits).
    add_fused_lm_head(reference, temperature=trainer.temperature,
                      cast_lm_head_to_fp32=getattr(args, "cast_lm_head_to_fp32", False))
    if trainer.is_deepspeed_enabled:
        return prepare_deepspeed(reference, trainer.accelerator)
    if trainer.is_fsdp_enabled:
        return prepare_fsdp(reference, trainer.accelerator)
    return trainer.accelerator.prepare_model(reference, evaluation_mode=True)


@dataclass
class _Scored:
    prompts: list[Any]
    completions: list[Any]
    completion_ids: list[list[int]]
    rewards_per_func: torch.Tensor  # [N, F] gathered, raw
    mara_rewards: torch.Tensor | None = None  # [N] gathered
    mara_anchors: torch.Tensor | None = None  # [N] bool gathered


class BatchRecorder:
    """Per-batch state of the record and the collapse metrics of one TRL trainer."""

    def __init__(self, trainer: Any):
        args = trainer.args
        self.record_dir = getattr(args, "record_rollouts_dir", None)
        self.monitor = bool(getattr(args, "collapse_metrics", False))
        self.answer_key = getattr(args, "collapse_answer_key", None)
        if self.monitor:
            from mara_rl.diagnose.classes import compile_answer_key

            try:
                compile_answer_key(self.answer_key)
            except ValueError as err:
                raise ValueError(f"collapse_answer_key: {err}") from None
        self.reference_pass = bool(getattr(args, "record_reference_pass", False)) and trainer.beta == 0.0
        self.writer: RolloutRecorder | None = None
        if self.record_dir:
            self.writer = RolloutRecorder(self.record_dir, record_metadata(trainer),
                                          rank=trainer.accelerator.process_index,
                                          world_size=trainer.accelerator.num_processes)
        self.reference = load_record_reference(trainer) if self.reference_pass and self.active else None
        self._batch: _Scored | None = None

    @property
    def active(self) -> bool:
        return self.writer is not None or self.monitor

    def scored(self, trainer: Any, prompts, completions, completion_ids, rewards_per_func: torch.Tensor) -> None:
        """TRL's raw rewards of a training batch (``[N, F]`` gathered) and this process's texts and ids."""
        if not self.active or not trainer.model.training:
            return
        self._batch = _Scored(list(prompts), list(completions), [list(map(int, c)) for c in completion_ids],
                              rewards_per_func.detach().clone())

    def augmented(self, rewards: torch.Tensor, anchor_rows: torch.Tensor) -> None:
        """MARA's gathered rewards ``[N]`` and the gathered row index of every anchor."""
        if self._batch is None:
            return
        anchors = torch.zeros(rewards.size(0), dtype=torch.bool, device=rewards.device)
        anchors[anchor_rows] = True
        self._batch.mara_rewards, self._batch.mara_anchors = rewards.detach().clone(), anchors

    def finish(self, trainer: Any, output: dict[str, Any], passes: list[Any]) -> None:
        """Write this process's rows and log the collapse metrics of the batch just scored."""
        batch, self._batch = self._batch, None
        if batch is None:
            return
        local = len(batch.prompts)
        start = trainer.accelerator.process_index * local
        mask = output["completion_mask"]
        if output.get("tool_mask") is not None:
            mask = mask * output["tool_mask"]
        kept = mask.sum(dim=1)
        ref = self._reference_logps(trainer, output, passes)
        ref_seq = None if ref is None else torch.where(kept > 0, (ref.double() * mask).sum(dim=1), torch.nan)
        per_func = batch.rewards_per_func[start : start + local].double()
        weights = trainer.reward_weights.to(per_func.device, torch.float64)
        reward = torch.where(torch.isnan(per_func).all(dim=1), torch.nan, (per_func * weights).nansum(dim=1))
        if self.writer is not None:
            policy = self._policy_logps(trainer, output, passes)
            policy_seq = torch.where(kept > 0, (policy.double() * mask).sum(dim=1), torch.nan)
            eos_and_pad = {*trainer.eos_token_ids, trainer._tokenizer.pad_token_id}
            mara = batch.mara_rewards is not None
            self.writer.write(
                trainer.state.global_step,
                group_ids=(start + np.arange(local)) // trainer.num_generations,
                prompts=batch.prompts,
                completions=batch.completions,
                completion_lengths=[len(c) for c in batch.completion_ids],
                truncated=[bool(c) and c[-1] not in eos_and_pad for c in batch.completion_ids],
                rewards_per_func=per_func,
                reward=reward,
                ref_logprobs=ref_seq,
                policy_logprobs=policy_seq,
                mara_rewards=batch.mara_rewards[start : start + local] if mara else None,
                mara_anchors=batch.mara_anchors[start : start + local] if mara else None,
            )
        if self.monitor:
            self._log_collapse(trainer, batch, reward, ref_seq)

    def _log_collapse(self, trainer: Any, batch: _Scored, reward: torch.Tensor, ref_seq: torch.Tensor | None) -> None:
        local = torch.stack([reward, torch.full_like(reward, torch.nan) if ref_seq is None else ref_seq], dim=1)
        rewards, refs = gather(local.float()).double().cpu().numpy().T
        prompts = gather_object([canonical_text(p) for p in batch.prompts])
        completions = gather_object([completion_text(c) for c in batch.completions])
        if not trainer.accelerator.is_main_process:
            return
        args = trainer.args
        metrics = collapse_metrics(
            prompts, completions, rewards, None if ref_seq is None else refs, beta=trainer.beta,
            kl=getattr(args, "kl_direction", "reverse"), tau=getattr(args, "mara_tau", None),
            tau_quantile=getattr(args, "mara_tau_quantile", None), answer_key=self.answer_key,
        )
        for name, value in metrics.items():
            trainer._metrics["train"][name].append(value)

    def _reference_logps(self, trainer: Any, output: dict[str, Any], passes: list[Any]) -> torch.Tensor | None:
        """``[B, T]`` reference per-token log-probs: TRL's reference pass (the last), or the record's own."""
        if trainer.beta != 0.0:
            return trainer._mara_reference_pass(passes).per_token_logps
        if not self.reference_pass:
            return None
        model = self.reference if self.reference is not None else trainer.model
        if self.reference is None:  # PEFT: the base model (or an initial adapter named "ref"), as TRL does
            from trl.trainer.utils import use_adapter

            peft = trainer.accelerator.unwrap_model(trainer.model)
            adapter = use_adapter(peft, adapter_name="ref" if "ref" in peft.peft_config else None)
        else:
            adapter = nullcontext()
        with adapter:
            return _logprob_pass(trainer, model, output)

    def _policy_logps(self, trainer: Any, output: dict[str, Any], passes: list[Any]) -> torch.Tensor:
        """``[B, T]`` per-token log-probs of the policy that sampled the batch."""
        policy_passes = len(passes) - (1 if trainer.beta != 0.0 else 0)
        old = passes[0].per_token_logps if policy_passes == 1 and passes[0].model is trainer.model else None
        sampling = output.get("sampling_per_token_logps")
        if sampling is not None:
            return sampling if old is None else torch.where(torch.isnan(sampling), old, sampling)
        if old is not None:
            return old
        return _logprob_pass(trainer, trainer.model, output)


def _logprob_pass(trainer: Any, model: Any, output: dict[str, Any]) -> torch.Tensor:
    """``[B, T]`` per-token log-probs of the batch's completions under ``model``, as TRL's scoring passes run."""
    if any(key in output for key in _MULTIMODAL_KEYS):
        raise ValueError("the rollout record runs its own log-prob pass here (no policy or reference pass of TRL's "
                         "to reuse), which does not support multimodal batches")
    ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
    attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
    with torch.no_grad():
        return trainer._get_per_token_logps_and_entropies(
            model, ids, attention, output["completion_ids"].size(1),
            batch_size=trainer.args.per_device_train_batch_size,
        )[0]
