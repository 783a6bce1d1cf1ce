"""TRL's GRPO and RLOO trainers with MARA and a forward-KL option (subclasses, not forks).

``MaraGRPOTrainer`` / ``MaraRLOOTrainer`` take ``MaraGRPOConfig`` / ``MaraRLOOConfig``, which add

- ``mara`` (bool): apply Mode Anchored Reward Augmentation (Alg. 1; Alg. 2 for forward KL);
- ``mara_tau`` / ``mara_tau_quantile``: the quality threshold, a reward value or a per-prompt-group
  quantile (default: the 0.9 quantile, the paper's choice for rewards of unknown scale);
- ``kl_direction``: ``"reverse"`` (TRL's own KL term, unchanged) or ``"forward"``.

Where MARA hooks in. TRL scores a generation batch in ``_generate_and_score_completions``: it
computes the reference per-token log-probs (the last no-grad ``_get_per_token_logps_and_entropies``
call of the batch), then ``_calculate_rewards`` returns the rewards gathered from every process,
and only then turns them into advantages. The subclasses remember the per-token log-probs of those
no-grad calls (a reference to tensors the trainer computed anyway: no extra forward pass) and
override ``_calculate_rewards``: they sum the reference log-probs over each completion's tokens
(``log pi_ref(y|x)``), gather them like the rewards, and call :func:`mara_rl.augment.mara_rewards`
with one group per prompt (``group_ids = global index // num_generations``; a group may span
processes). Every process sees the same gathered batch, so all compute the same anchors.

The reference log-probs come from TRL's reference pass, which divides the logits by the sampling
``temperature`` (as TRL's KL term does): MARA's anchor and the regulariser thus use the same
tempered reference ``pi_ref^T``; use ``temperature=1`` to anchor on the reference model itself.

Forward KL ``KL(pi_ref(.|x) || pi(.|x))`` over whole completions (TRL has none). With the
sequence log-ratio ``log rho = log pi_ref(y|x) - log pi(y|x)`` of a sample ``y ~ pi``:

- value: ``rho log rho - rho + 1`` (unbiased for the forward KL, non-negative);
- gradient: ``-rho * grad log pi(y|x)``, unbiased for ``grad KL(pi_ref || pi) = -E_{pi_ref}[grad log pi]``.

GRPO adds ``beta`` times the surrogate ``value + rho * (stop_grad(log pi) - log pi)`` to the loss
(averaged over sequences). RLOO keeps KL on the reward side: its forward penalty is the reward
``+ beta * rho`` (the same score-function gradient), in place of TRL's ``- beta * (log pi_old -
log pi_ref)``. MARA's forward variant (Alg. 2) gives each good sample the anchor's reward and the
anchor's ``log pi_ref(z|x)`` inside ``rho``. ``log rho`` is clipped at ``MAX_LOG_RATIO`` so a
completion the policy finds much less likely than the reference cannot overflow the weight.

With ``mara=False`` and ``kl_direction="reverse"`` both trainers compute exactly what the stock
trainers compute. MARA's metrics are logged with TRL's to ``report_to``: ``mara/frac_groups_augmented``,
``mara/mean_augmentation`` (mean ``r - R`` over augmented samples), ``mara/anchor_ref_logprob``
(mean ``log pi_ref(z|x)`` over anchored groups), ``mara/reward_raw`` (the task reward before MARA;
TRL's ``reward`` then shows the augmented reward).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import gather
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from mara_rl.augment import mara_rewards

MAX_LOG_RATIO = 20.0
KL_DIRECTIONS = ("reverse", "forward")
DEFAULT_TAU_QUANTILE = 0.9


def validate_mara_config(config: Any) -> None:
    """Check the MARA fields of a config; fills the default tau quantile when neither tau is given.

    Raises:
        ValueError: unknown ``kl_direction``; ``mara`` with ``beta == 0`` (MARA is inert without a
            KL term); both ``mara_tau`` and ``mara_tau_quantile``; a quantile outside ``[0, 1]``.
    """
    if config.kl_direction not in KL_DIRECTIONS:
        raise ValueError(f"kl_direction must be one of {KL_DIRECTIONS}, got {config.kl_direction!r}")
    if config.mara_tau is not None and config.mara_tau_quantile is not None:
        raise ValueError("give at most one of mara_tau (a reward threshold) and mara_tau_quantile (a group quantile)")
    if config.mara_tau_quantile is not None and not 0.0 <= config.mara_tau_quantile <= 1.0:
        raise ValueError(f"mara_tau_quantile must lie in [0, 1], got {config.mara_tau_quantile!r}")
    if not config.mara:
        return
    if config.beta == 0:
        raise ValueError(
            "mara=True needs beta > 0: MARA reshapes the KL-regularised target and is inert without a KL term"
        )
    if getattr(config, "multi_objective_aggregation", "sum_then_normalize") != "sum_then_normalize":
        raise ValueError("mara=True needs multi_objective_aggregation='sum_then_normalize' (one reward per sample)")
    if config.mara_tau is None and config.mara_tau_quantile is None:
        config.mara_tau_quantile = DEFAULT_TAU_QUANTILE


_MARA_HELP = {
    "mara": "Apply MARA (Mode Anchored Reward Augmentation) per prompt group before advantages are computed.",
    "mara_tau": "MARA's quality threshold: samples with reward >= mara_tau are 'good'.",
    "mara_tau_quantile": "Instead of mara_tau, the per-group reward quantile (default 0.9 when neither is set).",
    "kl_direction": "'reverse' (TRL's KL term, unchanged) or 'forward' (KL(pi_ref || pi) over whole completions).",
}


@dataclass
class _MaraFields:
    """The four fields both configs add; listed after the base config's own fields."""

    mara: bool = field(default=False, metadata={"help": _MARA_HELP["mara"]})
    mara_tau: float | None = field(default=None, metadata={"help": _MARA_HELP["mara_tau"]})
    mara_tau_quantile: float | None = field(default=None, metadata={"help": _MARA_HELP["mara_tau_quantile"]})
    kl_direction: str = field(default="reverse", metadata={"help": _MARA_HELP["kl_direction"]})


@dataclass
class MaraGRPOConfig(_MaraFields, GRPOConfig):
    """``GRPOConfig`` plus ``mara``, ``mara_tau``, ``mara_tau_quantile`` and ``kl_direction``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        validate_mara_config(self)


@dataclass
class MaraRLOOConfig(_MaraFields, RLOOConfig):
    """``RLOOConfig`` plus ``mara``, ``mara_tau``, ``mara_tau_quantile`` and ``kl_direction``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        validate_mara_config(self)


def sequence_logprobs(per_token_logps: torch.Tensor, completion_ids_list: list) -> torch.Tensor:
    """``[B]`` sums of ``per_token_logps [B, T]`` over each completion's own tokens (lengths from the ids)."""
    lengths = torch.tensor([len(ids) for ids in completion_ids_list], device=per_token_logps.device)
    positions = torch.arange(per_token_logps.size(1), device=per_token_logps.device)
    mask = positions[None, :] < lengths[:, None]
    return (per_token_logps * mask).sum(dim=1)


def forward_kl_surrogate(logps: torch.Tensor, ref_logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence forward-KL surrogate and its value, for samples ``y ~ pi``.

    With ``log rho = min(log pi_ref(y) - log pi(y), MAX_LOG_RATIO)`` (``rho`` held constant):
    value ``k = rho log rho - rho + 1`` estimates ``KL(pi_ref || pi)`` without bias; the surrogate
    ``k + rho * (stop_grad(log pi) - log pi)`` has that value and gradient ``-rho * grad log pi``,
    whose expectation is ``grad KL(pi_ref || pi)``.

    Args:
        logps: ``[B]`` policy sequence log-probs ``log pi(y|x)`` (with grad).
        ref_logps: ``[B]`` reference sequence log-probs (MARA's forward variant: the anchor's on good samples).

    Returns:
        ``(surrogate [B], value [B])``.
    """
    log_rho = (ref_logps - logps.detach()).clamp(max=MAX_LOG_RATIO)
    rho = log_rho.exp()
    value = rho * log_rho - rho + 1.0
    return value + rho * (logps.detach() - logps), value


class _MaraMixin:
    """MARA on the gathered rewards of TRL's GRPO / RLOO trainers (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._mara_scoring_logps: list[torch.Tensor] = []  # per-token log-probs of this batch's no-grad passes
        self._mara_kl_ref_logps: torch.Tensor | None = None  # gathered log pi_ref for the forward-KL term
        super().__init__(*args, **kwargs)

    def _mara_setting(self, name: str, default: Any) -> Any:
        return getattr(self.args, name, default)

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
        )
        # No-grad calls while scoring a batch are (old policy, then) reference passes; grad calls are the loss.
        if torch.is_grad_enabled():
            self._mara_policy_logps = out[0]
        else:
            self._mara_scoring_logps.append(out[0])
        return out

    def _generate_and_score_completions(self, inputs):
        self._mara_scoring_logps = []
        self._mara_kl_ref_logps = None
        output = super()._generate_and_score_completions(inputs)
        if self._mara_kl_ref_logps is not None:
            local = output["advantages"].size(0)
            start = self.accelerator.process_index * local
            output["mara_ref_logps"] = self._mara_kl_ref_logps[start : start + local]
        self._mara_scoring_logps = []
        return output

    def _kl_reward_shift(self, kl_ref_logps: torch.Tensor, completion_ids_list: list) -> torch.Tensor | None:
        """Additive reward term for the KL on the reward side (RLOO forward); None when KL lives in the loss."""
        return None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        mara = self._mara_setting("mara", False)
        forward = self._mara_setting("kl_direction", "reverse") == "forward" and self.beta != 0.0
        if not (mara or forward):
            return rewards_per_func
        if getattr(self, "tools", None):
            raise ValueError("mara / kl_direction='forward' do not support tool-calling rollouts")
        if not self._mara_scoring_logps:
            raise RuntimeError("the reference pass of this batch was not seen; MARA needs beta > 0")
        ref_logps = gather(sequence_logprobs(self._mara_scoring_logps[-1], completion_ids_list))

        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights[None, :]).nansum(dim=1)
        scorable = ~torch.isnan(rewards_per_func).all(dim=1)
        new_rewards, kl_ref_logps = rewards.clone(), ref_logps.clone()
        mode = "train" if self.model.training else "eval"
        if mara:
            num_generations = self.num_generations if mode == "train" else self.num_generations_eval
            group_ids = torch.arange(rewards.size(0), device=rewards.device) // num_generations
            result = mara_rewards(
                rewards[scorable],
                ref_logps[scorable],
                beta=self.beta,
                tau=self.args.mara_tau,
                tau_quantile=self.args.mara_tau_quantile,
                group_ids=group_ids[scorable],
                kl=self.args.kl_direction,
            )
            new_rewards[scorable] = result.rewards
            kl_ref_logps[scorable] = result.ref_logprobs
            self._log_mara_metrics(mode, rewards[scorable], result)
        if forward:
            self._mara_kl_ref_logps = kl_ref_logps
            shift = self._kl_reward_shift(kl_ref_logps, completion_ids_list)
            if shift is not None:
                new_rewards = new_rewards + shift
        # Put the change into the first weighted reward column, so TRL's weighted sum gives new_rewards.
        column = int(torch.nonzero(weights).flatten()[0])
        delta = new_rewards - rewards
        changed = scorable & (delta != 0)
        adjusted = rewards_per_func.clone()
        adjusted[:, column] = torch.where(
            changed, torch.nan_to_num(adjusted[:, column], nan=0.0) + delta / weights[column], adjusted[:, column]
        )
        return adjusted

    def _log_mara_metrics(self, mode: str, raw_rewards: torch.Tensor, result: Any) -> None:
        metrics = self._metrics[mode]
        metrics["mara/frac_groups_augmented"].append(result.fraction_groups_augmented)
        metrics["mara/reward_raw"].append(float(raw_rewards.mean()))
        shift = (result.rewards - raw_rewards)[result.augmented]
        metrics["mara/mean_augmentation"].append(float(shift.mean()) if shift.numel() else 0.0)
        anchors = result.anchor_index[result.anchor_index >= 0]
        if anchors.numel():  # both directions keep log pi_ref(z|x) at the anchor's own index
            metrics["mara/anchor_ref_logprob"].append(float(result.ref_logprobs[anchors].mean()))


class MaraGRPOTrainer(_MaraMixin, GRPOTrainer):
    """``GRPOTrainer`` with MARA (per prompt group, on gathered rewards) and a forward-KL option.

    ``kl_direction="reverse"`` keeps TRL's per-token KL term; ``"forward"`` replaces it by
    ``beta`` times :func:`forward_kl_surrogate`, averaged over the sequences of the micro-batch.
    """

    def _compute_loss(self, model, inputs):
        if self._mara_setting("kl_direction", "reverse") != "forward" or self.beta == 0.0:
            return super()._compute_loss(model, inputs)
        beta, self.beta = self.beta, 0.0  # the stock loss without its reverse-KL term
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self.beta = beta
        mask = inputs["completion_mask"]
        logps = (self._mara_policy_logps * mask).sum(dim=1)
        surrogate, value = forward_kl_surrogate(logps, inputs["mara_ref_logps"])
        mode = "train" if self.model.training else "eval"
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        self._metrics[mode]["kl"].append(self.accelerator.gather(value.mean()).mean().item())
        return loss + beta * surrogate.mean() / normalizer


class MaraRLOOTrainer(_MaraMixin, RLOOTrainer):
    """``RLOOTrainer`` with MARA (per prompt group, on gathered rewards) and a forward-KL option.

    ``kl_direction="reverse"`` keeps TRL's reward penalty ``-beta * (log pi_old - log pi_ref)``;
    ``"forward"`` replaces it by the reward ``+beta * rho`` (see :func:`forward_kl_surrogate`).
    """

    def _kl_reward_shift(self, kl_ref_logps: torch.Tensor, completion_ids_list: list) -> torch.Tensor:
        # Scoring passes are [old policy, reference]; TRL will subtract beta * (old - ref) after this.
        old_logps = gather(sequence_logprobs(self._mara_scoring_logps[0], completion_ids_list))
        ref_logps = gather(sequence_logprobs(self._mara_scoring_logps[-1], completion_ids_list))
        rho = (kl_ref_logps - old_logps).clamp(max=MAX_LOG_RATIO).exp()
        mode = "train" if self.model.training else "eval"
        log_rho = (kl_ref_logps - old_logps).clamp(max=MAX_LOG_RATIO)
        self._metrics[mode]["mara/kl_forward"].append(float((rho * log_rho - rho + 1.0).mean()))
        return self.beta * (old_logps - ref_logps) + self.beta * rho
