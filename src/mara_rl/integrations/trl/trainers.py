"""TRL's GRPO and RLOO trainers with MARA and a forward-KL option (subclasses, not forks).

``MaraGRPOTrainer`` / ``MaraRLOOTrainer`` take ``MaraGRPOConfig`` / ``MaraRLOOConfig``, which add

- ``mara`` (bool): apply Mode Anchored Reward Augmentation (Alg. 1; Alg. 2 for forward KL);
- ``mara_tau`` / ``mara_tau_quantile``: the quality threshold, a reward value or a per-prompt-group
  quantile (default: the 0.9 quantile, the paper's choice for rewards of unknown scale);
- ``kl_direction``: ``"reverse"`` (TRL's own KL term, unchanged) or ``"forward"``;
- ``forward_kl_estimator``: ``"token"`` (default) or ``"sequence"``, the forward-KL estimator.

Tested against TRL 1.16 (``TESTED_TRL``); ``tests/test_trl_contract.py`` asserts every TRL
behaviour listed here, and the trainers warn when another TRL version is installed.

Where MARA hooks in. TRL scores a generation batch in ``_generate_and_score_completions``: its
no-grad log-prob passes (``_get_per_token_logps_and_entropies``: the policy when it needs old
log-probs, then the reference, last) all run before ``_calculate_rewards`` returns the rewards
gathered from every process, and only then are rewards turned into advantages. The subclasses
record the passes made while that method runs (references to tensors TRL computed anyway: no extra
forward pass), each with the completion mask TRL passed to it, and override ``_calculate_rewards``:
they sum the reference log-probs over that mask (``log pi_ref(y|x)``), gather them like the rewards
and call :func:`mara_rl.augment.mara_rewards` with one group per prompt (``group_ids = global index
// num_generations``; a group may span processes). Every process sees the same gathered batch, so
all compute the same anchors. The change is folded back into the reward columns, so TRL's weighted
sum is the augmented reward: MARA is the last reward transform before TRL's advantages. TRL's reward
metrics (``reward``, ``reward_std``, ``rewards/<func>/mean|std``) and the completions table's reward
columns are then restated on the task rewards (``_mara_log_task_rewards``): they read as in a stock
run with the same rewards, while ``advantage`` and ``frac_reward_zero_std`` describe the rewards the
update used (an all-good group with equal rewards has zero std, but MARA gives it a signal).

- Masked completions (``mask_truncated_completions=True``: TRL zeroes the mask of completions cut
  at ``max_completion_length``) are outside the loss; MARA leaves them as they are: never anchors,
  never augmented, not counted in a tau quantile.
- Unscorable completions (every reward function returned ``None``) are likewise left to TRL.
- Tool-calling and environment rollouts (GRPO's ``tools``, ``environment_factory``, a ``rollout_func``
  returning ``env_mask``): ``log pi_ref(y|x)`` and the forward-KL terms cover the model's own tokens
  only, TRL's ``tool_mask`` (tool and environment output is context, not a choice of the model).
- RLOO's ``reward_clip_range`` clips the task reward before MARA (TRL's own clip, which would run
  after, is switched off for that batch).
- GRPO's reward scaling divides reward gaps by a reward std while its KL term keeps ``beta``; the
  MARA config therefore defaults to ``scale_rewards="none"`` and warns on ``"group"`` / ``"batch"``.
- GRPO's ``multi_objective_aggregation="normalize_then_sum"`` z-scores each function's rewards per
  group and their weighted sum over the batch (:func:`normalize_then_sum`): those are the rewards
  its update uses, so MARA acts on them (threshold: ``mara_tau_quantile``). TRL would normalise any
  reward it is given again, so the advantages (MARA's rewards minus their batch mean) replace TRL's
  after it ran, once TRL's are checked against :func:`normalize_then_sum` of the task rewards.

The reference log-probs come from TRL's reference pass, which divides the logits by the sampling
``temperature`` (as TRL's KL term does): MARA's anchor and the regulariser thus use the same
tempered reference ``pi_ref^T``; use ``temperature=1`` to anchor on the reference model itself.
With a PEFT model and no ``ref_model``, TRL's reference pass runs the model with its adapter
disabled: the anchor is the base model's.

Forward KL ``KL(pi_ref(.|x) || pi(.|x))`` (TRL has none) has two estimators, ``forward_kl_estimator``:

- ``"token"`` (default): :func:`mara_rl.integrations.forward_kl.token_forward_kl_loss`, the exact forward KL
  over the vocabulary at each sampled prefix, added as ``beta`` times a loss term by both trainers
  (its gradient is analytic, not a reward). The reference's last hidden states at the completion
  positions are captured from TRL's own reference pass (a forward hook on the model's ``base_model``,
  the backbone TRL's fused LM head projects) and travel with each row; the loss pass's hidden states
  are captured the same way, and both are projected through the LM heads chunk by chunk. MARA's
  Alg. 2 enters as bounded per-sample coefficients built from ``mara_rewards(..., kl="forward")``'s
  ``ref_logprobs``, per prompt group within the micro-batch; off-policy batches (TRL's old per-token
  log-probs, or vLLM's sampling log-probs with ``vllm_importance_sampling_correction``) get prefix
  importance weights, truncated at ``vllm_importance_sampling_clip_max``, when ``use_bias_correction_kl``
  (RLOO: always). The LM heads are rebuilt as TRL's fused head applies them (:func:`lm_head_of`: bias,
  logit scale, soft-cap); a model whose logits that rebuild misses is refused at construction
  (:func:`check_token_estimator_model`).
- ``"sequence"``: :func:`forward_kl_estimate` over whole completions. With ``log rho = log pi_ref(y|x)
  - log pi(y|x)`` for ``y ~ pi``: value ``rho log rho - rho + 1`` (unbiased, non-negative), gradient
  ``-rho * grad log pi(y|x)``. GRPO adds ``beta`` times the surrogate ``value + rho * (stop_grad(log pi)
  - log pi)`` to the loss; RLOO's reward gets ``+ beta * rho`` in place of TRL's ``- beta * (log pi_old -
  log pi_ref)``. Alg. 2 puts the anchor's ``log pi_ref(z|x)`` inside ``rho``; ``log rho`` is clipped at
  ``MAX_LOG_RATIO``. ``rho`` is exponential in the length (``docs/forward_kl.md``).

With either, MARA's forward variant also gives each good sample the anchor's reward, and RLOO drops
TRL's reverse penalty from its reward.

The rollout record (``record_rollouts_dir``, ``record_reference_pass``) and the live collapse
metrics (``collapse_metrics``, ``collapse_answer_key``) hook in at the same places, through
:class:`mara_rl.integrations.trl.recording.BatchRecorder`: TRL's raw rewards as ``_calculate_rewards``
returns them, MARA's rewards and anchors, then TRL's output and scoring passes once
``_generate_and_score_completions`` has run (``docs/llm.md``, "Recording rollouts and watching collapse").

Rival methods by name: ``reward_transform`` names a transform of :mod:`mara_rl.transforms` (its knob
``reward_transform_value``; ``None`` is the method's recommended value), applied at MARA's place, on
the same gathered, per-prompt-grouped, scored samples, instead of MARA. A reward transform's output is
folded into the reward columns like MARA's; an advantage transform (``passk_advantage``,
``grpo_passk``) replaces TRL's advantages for the batch (GRPO only: RLOO's KL lives in its rewards).
Transforms that rank by the policy's likelihood get ``log pi(y|x)`` from TRL's own policy pass when it
made one, else from one extra no-grad pass on the inputs of TRL's reference pass (so they need
``beta > 0``). Outcome transforms read each completion's stripped text as its answer; ``outcome_ucb``
counts (prompt, answer) pairs over the training run (in memory: a resumed run starts counting anew).

With ``mara=False`` and ``kl_direction="reverse"`` both trainers compute exactly what the stock
trainers compute. MARA's metrics are logged with TRL's to ``report_to``: ``mara/frac_groups_augmented``,
``mara/mean_augmentation`` (mean ``r - R`` over augmented samples), ``mara/anchor_ref_logprob``
(mean ``log pi_ref(z|x)`` over anchored groups), ``mara/reward_raw`` and ``mara/reward`` (mean task
reward ``R`` and augmented reward ``r`` over the samples MARA sees), ``mara/frac_masked`` (scored
samples TRL masks from the loss, which MARA leaves alone).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import trl
from accelerate.utils import gather, gather_object
from packaging.version import Version
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer
from trl.trainer.utils import nanstd

from mara_rl._checks import check_beta, check_choice
from mara_rl.augment import mara_rewards
from mara_rl.integrations.forward_kl import (
    DEFAULT_MAX_IMPORTANCE_WEIGHT,
    ForwardKLOutput,
    LMHead,
    token_forward_kl_loss,
)
from mara_rl.integrations.settings import DEFAULT_TAU_QUANTILE, check_mara_options, check_transform
from mara_rl.integrations.trl.recording import BatchRecorder, mara_settings_message

logger = logging.getLogger("mara_rl")

MAX_LOG_RATIO = 20.0
FORWARD_KL_ESTIMATORS = ("token", "sequence")
MARA_FIELDS = {"enable": "mara", "tau": "mara_tau", "tau_quantile": "mara_tau_quantile", "kl": "kl_direction"}
TESTED_TRL = ((1, 16),)  # (major, minor) releases tests/test_trl_contract.py was run against


BETA_ZERO_MESSAGE = (
    "mara=True needs beta > 0 (TRL's GRPOConfig defaults to beta=0.0; set e.g. beta=0.04): at beta = 0 MARA's "
    "r_i = R(z) + beta * (log pi_ref(z|x) - log pi_ref(y_i|x)) is r_i = R(z) for every sample with reward >= tau, "
    "z the most reference-likely of them. With 0/1 rewards that changes nothing; with graded rewards it only flattens "
    "the rewards above tau to R(z). Without a KL term there is no target for MARA to make uniform over the good "
    "answers: the objective is maximised by any policy on them, collapsed or not. TRL also loads no reference model "
    "at beta = 0, and MARA would need one to choose z."
)


def trl_is_tested(version: str = trl.__version__) -> bool:
    """Whether ``version`` is a TRL release the subclasses were tested against (``TESTED_TRL``)."""
    return Version(version).release[:2] in TESTED_TRL


def check_mara_fields(config: Any) -> None:
    """Check the five MARA fields one by one and store them normalised (``mara="no"`` becomes ``False``).

    The configs run it first in ``__post_init__``, before anything reads the fields; the checks are
    :func:`mara_rl.integrations.settings.check_mara_options`, the ones verl's section gets.

    Raises:
        ValueError: one line naming the field: ``mara`` not a switch, ``mara_tau`` not a finite
            number, ``mara_tau_quantile`` not in ``[0, 1]``, both given, an unknown ``kl_direction``
            or ``forward_kl_estimator``.
    """
    options = check_mara_options(
        enable=config.mara,
        tau=config.mara_tau,
        tau_quantile=config.mara_tau_quantile,
        kl=config.kl_direction,
        names=MARA_FIELDS,
    )
    config.mara, config.mara_tau, config.mara_tau_quantile, config.kl_direction = options
    config.forward_kl_estimator = check_choice(
        config.forward_kl_estimator, FORWARD_KL_ESTIMATORS, "forward_kl_estimator"
    )


def validate_mara_config(config: Any) -> None:
    """Check MARA against the rest of a config (after :func:`check_mara_fields`); fills the default tau
    quantile when neither tau is given.

    Raises:
        ValueError: ``mara`` with ``beta == 0`` (``BETA_ZERO_MESSAGE``), a ``beta`` the core rejects
            (NaN, infinite, negative), ``mara_tau`` with ``multi_objective_aggregation="normalize_then_sum"``;
            a ``reward_transform`` with ``mara=True``, with ``normalize_then_sum``, or needing a reference pass at
            ``beta == 0``.
    """
    generations = [getattr(config, "num_generations", None), getattr(config, "num_generations_eval", None)]
    transform, config.reward_transform_value = check_transform(
        config.reward_transform, config.reward_transform_value,
        group_sizes=tuple(int(n) for n in generations if n is not None) or (2,),
        names={"name": "reward_transform", "value": "reward_transform_value"},
    )
    if transform is not None:
        if config.mara:
            raise ValueError(f"give one of mara=True and reward_transform={config.reward_transform!r}: "
                             "they are alternatives applied at the same place")
        if getattr(config, "multi_objective_aggregation", None) == "normalize_then_sum":
            raise ValueError(f"reward_transform={transform.name!r} acts on the summed task reward: it needs "
                             "multi_objective_aggregation='sum_then_normalize'")
        if transform.reads_answers:
            from mara_rl.diagnose.classes import compile_answer_key

            try:
                compile_answer_key(getattr(config, "collapse_answer_key", None))
            except ValueError as err:
                raise ValueError(f"collapse_answer_key: {err}") from None
        if "policy_logprobs" in transform.needs and config.beta == 0:
            raise ValueError(f"reward_transform={transform.name!r} ranks by the policy's likelihood, which it "
                             "computes on the inputs of TRL's reference pass: it needs beta > 0")
    if not config.mara:
        return
    if config.beta == 0:
        raise ValueError(BETA_ZERO_MESSAGE)
    if getattr(config, "multi_objective_aggregation", None) == "normalize_then_sum" and config.mara_tau is not None:
        raise ValueError(
            "mara=True with multi_objective_aggregation='normalize_then_sum' acts on GRPO's normalised rewards "
            "(each function z-scored per prompt group, summed, standardised over the batch), so a reward value "
            "mara_tau has no fixed meaning there: give mara_tau_quantile instead"
        )
    check_beta(config.beta, "beta")
    if config.mara_tau is None and config.mara_tau_quantile is None:
        config.mara_tau_quantile = DEFAULT_TAU_QUANTILE


def reward_scaling_message(scale_rewards: str) -> str:
    """What MARA's target becomes when GRPO divides rewards by a std (``"group"`` or ``"batch"``)."""
    where = "each prompt group's" if scale_rewards == "group" else "the batch's"
    return (
        f"mara=True with scale_rewards={scale_rewards!r}: GRPO divides reward gaps by {where} reward std s "
        "while its KL term keeps beta, so the target is that of beta * s, not beta. MARA's target is then no "
        "longer uniform over good samples: with reverse KL it is proportional to pi_ref(y|x)^(1 - 1/s) "
        "(favouring reference-unlikely answers when s < 1). Use scale_rewards='none' (the default with mara=True)."
    )


_MARA_HELP = {
    "mara": "Apply MARA (Mode Anchored Reward Augmentation) per prompt group before advantages are computed. "
    "Needs beta > 0 (at beta = 0 MARA only sets every good reward to the anchor's: nothing to make uniform).",
    "mara_tau": "MARA's quality threshold: samples with reward >= mara_tau are 'good'.",
    "mara_tau_quantile": "Instead of mara_tau, the per-group reward quantile (default 0.9 when neither is set).",
    "kl_direction": "'reverse' (TRL's KL term, unchanged) or 'forward' (KL(pi_ref || pi)).",
    "forward_kl_estimator": "With kl_direction='forward': 'token' (exact full-vocabulary forward KL at each sampled "
    "prefix, in the loss; bounded weights at any length) or 'sequence' (score-function estimator over whole "
    "completions, weight pi_ref(y|x)/pi(y|x)).",
    "reward_transform": "Name of a reward or advantage transform of mara_rl.transforms (a rival of MARA: "
    "'unlikeliness', 'pkpo', 'outcome_batch', 'outcome_ucb', 'passk_advantage', 'grpo_passk'), applied where MARA "
    "is applied.",
    "reward_transform_value": "The transform's knob (default: its paper's or engine's recommended value).",
    "scale_rewards": "GRPO's reward scaling: 'group', 'batch' or 'none'. Default: 'none' with mara=True (MARA's "
    "target is uniform only unscaled; 'group' or 'batch' then warn), else TRL's 'group'.",
}


@dataclass
class _MaraFields:
    """The fields both configs add; listed after the base config's own fields."""

    mara: bool = field(default=False, metadata={"help": _MARA_HELP["mara"]})
    mara_tau: float | None = field(default=None, metadata={"help": _MARA_HELP["mara_tau"]})
    mara_tau_quantile: float | None = field(default=None, metadata={"help": _MARA_HELP["mara_tau_quantile"]})
    kl_direction: str = field(default="reverse", metadata={"help": _MARA_HELP["kl_direction"]})
    forward_kl_estimator: str = field(default="token", metadata={"help": _MARA_HELP["forward_kl_estimator"]})
    reward_transform: str | None = field(default=None, metadata={"help": _MARA_HELP["reward_transform"]})
    reward_transform_value: float | None = field(default=None, metadata={"help": _MARA_HELP["reward_transform_value"]})


_RECORD_HELP = {
    "record_rollouts_dir": "Folder of the rollout record: one Parquet row per training completion (prompt, completion, "
    "rewards, sequence log pi_ref and sampler log-prob, MARA's reward and anchor), in shards per step and process; "
    "a resumed run continues it (mara_rl.integrations.record).",
    "record_reference_pass": "With beta = 0 (TRL runs no reference pass): run one for the record and the collapse "
    "metrics (one extra forward pass per batch).",
    "collapse_metrics": "Log per-step collapse metrics (collapse/*): distinct good answer classes per prompt and the "
    "effective number of good classes of the vanilla and MARA targets (mara_rl.integrations.monitor).",
    "collapse_answer_key": "Answer classes of the collapse metrics and the answers of the outcome transforms: a regex "
    "whose first group is the answer (or, from Python, a callable text -> answer); default: the exact completion text.",
}


@dataclass
class _RecordFields:
    """The rollout record and collapse-metric fields both configs add."""

    record_rollouts_dir: str | None = field(default=None, metadata={"help": _RECORD_HELP["record_rollouts_dir"]})
    record_reference_pass: bool = field(default=False, metadata={"help": _RECORD_HELP["record_reference_pass"]})
    collapse_metrics: bool = field(default=True, metadata={"help": _RECORD_HELP["collapse_metrics"]})
    collapse_answer_key: str | None = field(default=None, metadata={"help": _RECORD_HELP["collapse_answer_key"]})


@dataclass
class MaraGRPOConfig(_MaraFields, _RecordFields, GRPOConfig):
    """``GRPOConfig`` plus ``mara``, ``mara_tau``, ``mara_tau_quantile``, ``kl_direction``, ``forward_kl_estimator``.

    ``scale_rewards`` defaults to ``"none"`` with ``mara=True`` (TRL's ``"group"`` otherwise); an
    explicit ``"group"`` or ``"batch"`` with MARA warns (:func:`reward_scaling_message`).
    ``mara=True`` needs ``beta > 0``, which TRL's GRPO default (``beta=0.0``) is not: at ``beta = 0``
    MARA's formula gives every good sample the anchor's reward ``R(z)`` and nothing else, since the
    objective has no KL term whose target MARA could make uniform (``BETA_ZERO_MESSAGE``).
    """

    scale_rewards: str | None = field(default=None, metadata={"help": _MARA_HELP["scale_rewards"]})

    def __post_init__(self) -> None:
        check_mara_fields(self)  # first: mara="no" must not pick MARA's scale_rewards default
        if self.scale_rewards is None:
            self.scale_rewards = "none" if self.mara else "group"
        super().__post_init__()
        validate_mara_config(self)
        if self.mara and self.scale_rewards != "none":
            warnings.warn(reward_scaling_message(self.scale_rewards), UserWarning, stacklevel=3)


@dataclass
class MaraRLOOConfig(_MaraFields, _RecordFields, RLOOConfig):
    """``RLOOConfig`` plus ``mara``, ``mara_tau``, ``mara_tau_quantile``, ``kl_direction``, ``forward_kl_estimator``.

    RLOO's ``normalize_advantages`` divides every advantage of a batch by one std; with the KL on
    the reward side that only rescales the step, so MARA's target is unchanged. ``mara=True``
    needs ``beta > 0`` (``BETA_ZERO_MESSAGE``).
    """

    def __post_init__(self) -> None:
        check_mara_fields(self)
        super().__post_init__()
        validate_mara_config(self)


def sequence_logprobs(per_token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` sums of ``per_token_logps [B, T]`` over the tokens ``mask [B, T]`` keeps (TRL's completion mask)."""
    return (per_token_logps * mask).sum(dim=1)


class ForwardKL(NamedTuple):
    """Per-sequence forward-KL terms of :func:`forward_kl_estimate`, each ``[B]``."""

    surrogate: torch.Tensor  # value + rho * (stop_grad(log pi) - log pi): gradient -rho * grad log pi
    value: torch.Tensor  # rho log rho - rho + 1, unbiased for KL(pi_ref || pi)
    weight: torch.Tensor  # rho (no grad): RLOO's reward-side penalty is +beta * rho


def forward_kl_estimate(per_token_logps: torch.Tensor, mask: torch.Tensor, ref_logprobs: torch.Tensor) -> ForwardKL:
    """Forward-KL estimate ``KL(pi_ref(.|x) || pi(.|x))`` per sampled completion ``y ~ pi``.

    With ``log rho = min(log pi_ref(y|x) - log pi(y|x), MAX_LOG_RATIO)`` (``rho`` held constant):
    value ``rho log rho - rho + 1`` estimates the forward KL without bias; the surrogate
    ``value + rho * (stop_grad(log pi) - log pi)`` has that value and gradient ``-rho * grad log pi``,
    whose expectation is ``grad KL(pi_ref || pi)``.

    Args:
        per_token_logps: ``[B, T]`` policy log-probs of the completion tokens (with grad for a loss).
        mask: ``[B, T]`` TRL's completion mask; ``log pi(y|x)`` is the masked sum.
        ref_logprobs: ``[B]`` sequence ``log pi_ref(y|x)`` over the same mask (MARA's forward
            variant: the anchor's on good samples).
    """
    logps = sequence_logprobs(per_token_logps, mask)
    log_rho = (ref_logprobs - logps.detach()).clamp(max=MAX_LOG_RATIO)
    rho = log_rho.exp()
    value = rho * log_rho - rho + 1.0
    return ForwardKL(value + rho * (logps.detach() - logps), value, rho)


def forward_kl_surrogate(logps: torch.Tensor, ref_logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(surrogate [B], value [B])`` of :func:`forward_kl_estimate` from sequence log-probs ``logps [B]``."""
    estimate = forward_kl_estimate(logps[:, None], torch.ones_like(logps[:, None]), ref_logps)
    return estimate.surrogate, estimate.value


def fold_into_columns(
    rewards_per_func: torch.Tensor, weights: torch.Tensor, old: torch.Tensor, new: torch.Tensor
) -> torch.Tensor:
    """``rewards_per_func`` changed so that its weighted ``nansum`` over functions goes from ``old`` to ``new``.

    Each row's change goes into its first column with a non-zero weight and a reward (else the
    first column with a non-zero weight), so rows whose functions returned ``None`` keep their NaNs.
    """
    delta = torch.nan_to_num(new - old, nan=0.0)
    rows = torch.nonzero(delta != 0).flatten()
    if rows.numel() == 0:
        return rewards_per_func
    weighted = weights != 0
    usable = weighted[None, :] & ~torch.isnan(rewards_per_func)
    first_weighted = int(torch.nonzero(weighted).flatten()[0])
    columns = torch.where(usable.any(dim=1), usable.int().argmax(dim=1), first_weighted)[rows]
    adjusted = rewards_per_func.clone()
    adjusted[rows, columns] = torch.nan_to_num(adjusted[rows, columns], nan=0.0) + delta[rows] / weights[columns]
    return adjusted


def normalize_then_sum(rewards_per_func: torch.Tensor, weights: torch.Tensor, group_size: int) -> torch.Tensor:
    """TRL GRPO's ``multi_objective_aggregation="normalize_then_sum"`` advantages, ``[B]`` (NaN: unscorable).

    Each function's rewards ``rewards_per_func [B, F]`` are z-scored within their prompt group
    (``(R_k - mean_k) / (std_k + 1e-4)``, NaN-aware), summed with ``weights [F]``, and the sum
    ``s`` is standardised over the batch: ``(s - mean(s)) / (std(s) + 1e-4)``. These are the rewards
    GRPO's update uses in that mode, in the units its ``beta`` is compared with.
    """
    grouped = rewards_per_func.view(-1, group_size, rewards_per_func.size(1))
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    std = nanstd(grouped, dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    summed = (((grouped - mean) / (std + 1e-4)).view_as(rewards_per_func) * weights[None, :]).nansum(dim=1)
    summed[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    spread = nanstd(summed) if summed.numel() > 1 else torch.zeros_like(summed)
    return (summed - torch.nanmean(summed)) / (spread + 1e-4)


def replace_tail(log: Any, values: list[Any]) -> None:
    """Replace the last ``len(values)`` entries of ``log`` (a list or bounded deque) by ``values``."""
    kept = min(len(log), len(values))
    for _ in range(kept):
        log.pop()
    log.extend(values[len(values) - kept :])


class RewardShift(NamedTuple):
    """What RLOO's forward KL adds to the reward, each ``[B]`` gathered."""

    forward: torch.Tensor  # the forward-KL reward term (``+beta * rho``; 0 for the token estimator)
    trl_penalty: torch.Tensor  # ``beta * (log pi_old - log pi_ref)``, which TRL subtracts after _calculate_rewards


class _LogprobPass(NamedTuple):
    """One ``_get_per_token_logps_and_entropies`` call made while TRL scored a batch."""

    model: Any
    per_token_logps: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T]: the completion part of the attention mask TRL passed
    hidden: torch.Tensor | None  # [B, T, H] last hidden states predicting the completion tokens (token estimator)


def _contract_error(assumption: str) -> RuntimeError:
    return RuntimeError(
        f"TRL {trl.__version__} broke an assumption of mara_rl's trainers (tested with TRL "
        f"{', '.join('.'.join(map(str, v)) for v in TESTED_TRL)}): {assumption}"
    )


def causal_lm(model: Any) -> Any:
    """The transformers model inside an accelerate / DDP / PEFT wrapper: the one TRL gives its fused LM head."""
    while hasattr(model, "module"):  # DDP and similar wrappers
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextmanager
def capture_completion_hidden(model: Any, logits_to_keep: int, sink: list[torch.Tensor]) -> Iterator[None]:
    """Append to ``sink`` the backbone's last hidden states at the positions that predict the completion tokens.

    TRL's fused LM head projects ``backbone(...).last_hidden_state[:, :-1]`` (the backbone is the model's
    ``base_model``): the last ``logits_to_keep`` of those rows score the completion. One entry per forward
    call (TRL may split a pass into chunks of rows).
    """

    def keep(_module, _args, output):
        sink.append(output.last_hidden_state[:, -logits_to_keep - 1 : -1])

    handle = causal_lm(model).base_model.register_forward_hook(keep)
    try:
        yield
    finally:
        handle.remove()


def lm_head_of(model: Any) -> LMHead:
    """The model's output layer as TRL's fused LM head applies it (``trl.trainer.utils.add_fused_lm_head``).

    The weight and bias of ``get_output_embeddings()``; the logit multiplier from the text config's
    ``logit_scale``, else ``output_multiplier``, else ``lm_head_multiplier``, else ``1 / logits_scaling``
    (``logits_scaling`` itself for HyperCLOVA X), else 1; the soft-cap ``final_logit_softcapping``.
    """
    lm = causal_lm(model)
    config = lm.config.get_text_config()
    scale = getattr(config, "logit_scale", None)
    for name in ("output_multiplier", "lm_head_multiplier"):
        scale = getattr(config, name, None) if scale is None else scale
    if scale is None and getattr(config, "logits_scaling", None) is not None:
        scale = config.logits_scaling if config.model_type == "hyperclovax" else 1.0 / config.logits_scaling
    head = lm.get_output_embeddings()
    return LMHead(head.weight, getattr(head, "bias", None), 1.0 if scale is None else float(scale),
                  getattr(config, "final_logit_softcapping", None))


@torch.no_grad()
def check_token_estimator_model(model: Any, probe_length: int = 8) -> None:
    """Raise ``ValueError`` unless :func:`lm_head_of` rebuilds the model's own logits from its hidden states.

    One forward pass of ``probe_length`` tokens: the model's logits against :meth:`LMHead.logits` of
    the backbone's last hidden states (the rows the token estimator projects), to the precision of
    the head's dtype. A model that transforms its logits otherwise (a scale TRL does not read, a
    hidden-state multiplier before the head) is refused, naming it.
    """
    lm = causal_lm(model)
    head = lm_head_of(model)
    ids = torch.arange(probe_length, device=head.weight.device)[None, :] % head.weight.shape[0]
    hidden: list[torch.Tensor] = []
    training = lm.training
    lm.eval()  # no dropout between the two
    try:
        with capture_completion_hidden(lm, probe_length - 1, hidden):
            own = lm(input_ids=ids).logits[:, -probe_length:-1].float()
    finally:
        lm.train(training)
    rebuilt = head.logits(hidden[0].reshape(-1, hidden[0].shape[-1])).view_as(own)
    precision = max(torch.finfo(head.weight.dtype).eps, torch.finfo(hidden[0].dtype).eps)
    tolerance = 8 * precision * max(1.0, float(own.abs().max()))
    gap = float((rebuilt - own).abs().max())
    if not gap <= tolerance:
        config = lm.config.get_text_config()
        raise ValueError(
            f"forward_kl_estimator='token' cannot rebuild the logits of this {config.model_type!r} model from its "
            f"hidden states (max gap {gap:.3g} > {tolerance:.3g}; read: logit scale {head.logit_scale}, soft-cap "
            f"{head.softcap}, bias {head.bias is not None}): its LM head transforms the logits in another way; "
            "use forward_kl_estimator='sequence'"
        )


class _MaraMixin:
    """MARA on the gathered rewards of TRL's GRPO / RLOO trainers (see the module docstring)."""

    _forward_kl_metric = "kl"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._mara_window: str | None = None  # "scoring" inside _generate_and_score_completions, "loss" in the loss
        self._mara_want_hidden = False  # capture the completion hidden states in that window (token estimator)
        self._mara_passes: list[_LogprobPass] = []
        self._mara_loss_pass: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._mara_kl_ref_logps: torch.Tensor | None = None  # gathered log pi_ref for the forward-KL term
        self._mara_token_inputs: dict[str, torch.Tensor] = {}  # row-aligned keys the token estimator reads
        self._mara_clip_range: tuple[float, float] | None = None
        self._mara_task_rewards: torch.Tensor | None = None  # [B, F] gathered, before MARA: for TRL's metrics
        self._mara_advantages: tuple[torch.Tensor, torch.Tensor] | None = None  # normalize_then_sum: TRL's, ours
        self._mara_update_rewards: torch.Tensor | None = None  # [B] RLOO forward: the rewards its advantages use
        self._mara_tool_mask: list[list[int]] | None = None  # GRPO: _generate's tool / environment-output mask
        self._mara_scoring_call: tuple[Any, ...] | None = None  # inputs of the last scoring pass
        self._mara_transform_advantages: torch.Tensor | None = None  # gathered advantages of an advantage transform
        self._mara_outcome_counts: Any = None  # (prompt, answer) counts of the run, for outcome_ucb
        if not trl_is_tested():
            warnings.warn(
                f"mara_rl's TRL trainers are tested with TRL {TESTED_TRL}, found {trl.__version__}; "
                "run tests/test_trl_contract.py before trusting MARA with this version",
                UserWarning,
                stacklevel=2,
            )
        super().__init__(*args, **kwargs)
        if self._mara_token_forward():
            check_token_estimator_model(self.model)
        transform = self._transform()
        if transform is not None and transform.kind == "advantage" and not isinstance(self, GRPOTrainer):
            raise ValueError(f"reward_transform={transform.name!r} replaces the advantages: GRPO only (RLOO's KL "
                             "penalty is part of its rewards and would be lost)")
        self._mara_recorder = BatchRecorder(self)
        if self.accelerator.is_main_process:
            logger.warning(mara_settings_message(self))  # once per trainer, visible without logging set up

    def _mara_setting(self, name: str, default: Any) -> Any:
        return getattr(self.args, name, default)

    def _mara_forward(self) -> bool:
        return self._mara_setting("kl_direction", "reverse") == "forward" and self.beta != 0.0

    def _mara_token_forward(self) -> bool:
        return self._mara_forward() and self._mara_setting("forward_kl_estimator", "token") == "token"

    def _mara_forward_in_loss(self) -> bool:
        """Whether the forward-KL term is added to the loss (GRPO: always; RLOO: the token estimator)."""
        return self._mara_token_forward()

    def _mara_rewrites_rewards(self) -> bool:
        return bool(self._mara_setting("mara", False)) or self._mara_forward() or self._transform() is not None

    def _transform(self) -> Any:
        name = self._mara_setting("reward_transform", None)
        if name is None:
            return None
        from mara_rl.transforms import get_transform

        return get_transform(name)

    @contextmanager
    def _mara_capture(self, window: str) -> Iterator[None]:
        # Decided here: GRPO's loss runs with beta set to 0, which _mara_token_forward reads.
        previous = self._mara_window, self._mara_want_hidden
        self._mara_window, self._mara_want_hidden = window, self._mara_token_forward()
        try:
            yield
        finally:
            self._mara_window, self._mara_want_hidden = previous

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        hidden: list[torch.Tensor] = []
        capture = self._mara_window is not None and self._mara_want_hidden
        with capture_completion_hidden(model, logits_to_keep, hidden) if capture else nullcontext():
            out = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        states = torch.cat(hidden) if hidden else None
        if self._mara_window == "scoring":
            self._mara_scoring_call = (input_ids, attention_mask, logits_to_keep, args, kwargs)
            self._mara_passes.append(_LogprobPass(model, out[0], attention_mask[:, -logits_to_keep:], states))
        elif self._mara_window == "loss":
            self._mara_loss_pass = (out[0], states)
        return out

    def _generate_and_score_completions(self, inputs):
        self._mara_passes, self._mara_kl_ref_logps, self._mara_token_inputs = [], None, {}
        self._mara_task_rewards = self._mara_advantages = self._mara_update_rewards = None
        clip = getattr(self, "reward_clip_range", None) if self._mara_rewrites_rewards() else None
        if clip:  # clipped in _calculate_rewards, before MARA and the forward-KL reward
            self._mara_clip_range, self.reward_clip_range = clip, None
        try:
            with self._mara_capture("scoring"):
                output = super()._generate_and_score_completions(inputs)
            self._mara_recorder.finish(self, output, self._mara_passes)
        finally:
            if clip:
                self.reward_clip_range, self._mara_clip_range = clip, None
            self._mara_passes = []
        if self._mara_task_rewards is not None:
            self._mara_log_task_rewards(self._mara_task_rewards)
        if self._mara_advantages is not None:
            self._mara_set_advantages(output, *self._mara_advantages)
        self._mara_task_rewards = self._mara_advantages = self._mara_update_rewards = None
        if self._mara_transform_advantages is not None:
            output["advantages"] = self._mara_local(self._mara_transform_advantages, output["advantages"].size(0))
            self._mara_transform_advantages = None
        if self._mara_kl_ref_logps is not None:
            output["mara_ref_logps"] = self._mara_local(self._mara_kl_ref_logps, output["advantages"].size(0))
        output.update(self._mara_token_inputs)
        self._mara_kl_ref_logps, self._mara_token_inputs = None, {}
        return output

    def _mara_local(self, gathered: torch.Tensor, local: int) -> torch.Tensor:
        """This process's rows of a tensor gathered over processes."""
        start = self.accelerator.process_index * local
        return gathered[start : start + local]

    def _mara_reference_pass(self, passes: list[_LogprobPass] | None = None) -> _LogprobPass:
        """The batch's reference pass: the last log-prob pass before ``_calculate_rewards``."""
        passes = self._mara_passes if passes is None else passes
        if not passes:
            raise _contract_error("a reference log-prob pass runs before _calculate_rewards when beta > 0")
        last = passes[-1]
        reference = self.ref_model if self.ref_model is not None else self.model
        if last.model is not reference:
            raise _contract_error("the last log-prob pass before _calculate_rewards is the reference model's")
        return last

    def _kl_reward_shift(self, kl_ref_logps: torch.Tensor) -> RewardShift | None:
        """Additive reward terms for the KL on the reward side (RLOO); None when KL lives in the loss."""
        return None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._mara_recorder.scored(self, prompts, completions, completion_ids_list, rewards_per_func)
        if not self._mara_rewrites_rewards():
            return rewards_per_func
        weights = self.reward_weights.to(rewards_per_func.device)
        if not (weights != 0).any():
            raise ValueError("mara / kl_direction='forward' need a reward function with a non-zero weight")
        raw = (rewards_per_func * weights[None, :]).nansum(dim=1)
        scorable = ~torch.isnan(rewards_per_func).all(dim=1)
        if self.beta == 0.0:  # no KL term, so no reference pass: only a transform can be on
            rewards = raw if self._mara_clip_range is None else raw.clamp(*self._mara_clip_range)
            new_rewards = self._apply_transform(rewards, scorable, scorable, prompts, completions)
            self._mara_task_rewards = rewards_per_func
            return fold_into_columns(rewards_per_func, weights, torch.where(scorable, raw, 0.0),
                                     torch.where(scorable, new_rewards, 0.0))
        ref_pass = self._mara_reference_pass()
        mask = self._mara_model_tokens(ref_pass.mask)
        local = torch.stack(
            [sequence_logprobs(ref_pass.per_token_logps.float(), mask), mask.any(dim=1).float()], dim=1
        )
        ref_logps, in_loss = gather(local).unbind(dim=1)

        if self._mara_normalizes_then_sums():  # MARA acts on the normalised rewards the update uses
            rewards = normalize_then_sum(rewards_per_func, weights, self._mara_group_size())
        else:
            rewards = raw if self._mara_clip_range is None else raw.clamp(*self._mara_clip_range)
        new_rewards, kl_ref_logps = rewards.clone(), ref_logps.clone()
        if self._mara_setting("mara", False):
            anchors = self._mara_augment(rewards, ref_logps, scorable, in_loss.bool(), new_rewards, kl_ref_logps)
            self._mara_recorder.augmented(torch.where(scorable, new_rewards, torch.nan), anchors)
        elif self._transform() is not None:
            new_rewards = self._apply_transform(rewards, scorable, scorable & in_loss.bool(), prompts, completions)
        if self._mara_forward():
            self._mara_kl_ref_logps = kl_ref_logps
            if self._mara_token_forward():
                if ref_pass.hidden is None:
                    raise _contract_error("the reference pass runs the model's base_model (TRL's fused LM head)")
                ids = self._mara_group_ids(rewards)
                self._mara_token_inputs = {
                    "mara_ref_hidden": ref_pass.hidden,
                    "mara_ref_token_logps": ref_pass.per_token_logps,
                    "mara_group": self._mara_local(ids, ref_pass.mask.size(0)),
                }
            shift = self._kl_reward_shift(kl_ref_logps)
            if shift is not None:
                new_rewards = new_rewards + shift.forward
                self._mara_update_rewards = torch.where(scorable, new_rewards, torch.nan)
                new_rewards = new_rewards + shift.trl_penalty
        if self._mara_normalizes_then_sums():  # GRPO: no KL on the reward side
            if self._mara_setting("mara", False):  # TRL would normalise any reward again: set after it ran
                self._mara_advantages = (rewards, new_rewards - torch.nanmean(new_rewards))
            return rewards_per_func
        self._mara_task_rewards = rewards_per_func
        return fold_into_columns(rewards_per_func, weights, torch.where(scorable, raw, 0.0),
                                 torch.where(scorable, new_rewards, 0.0))

    def _mara_model_tokens(self, mask: torch.Tensor) -> torch.Tensor:
        """``mask [B, T]`` restricted to the tokens the model generated (TRL's ``tool_mask``; GRPO only)."""
        return mask

    def _mara_loss_mask(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The loss's token mask: TRL's completion mask, times its ``tool_mask`` when the batch has one."""
        mask = inputs["completion_mask"]
        return mask if "tool_mask" not in inputs else mask * inputs["tool_mask"]

    def _mara_normalizes_then_sums(self) -> bool:
        return getattr(self, "multi_objective_aggregation", "sum_then_normalize") == "normalize_then_sum"

    def _mara_set_advantages(
        self, output: dict[str, Any], trl_advantages: torch.Tensor, advantages: torch.Tensor
    ) -> None:
        """Replace TRL's advantages (``[B]`` gathered; :func:`normalize_then_sum`'s) by ``advantages [B]``."""
        local = output["advantages"].size(0)
        expected = self._mara_local(torch.nan_to_num(trl_advantages, nan=0.0), local)
        if not torch.allclose(output["advantages"], expected.to(output["advantages"].dtype), rtol=1e-5, atol=1e-5):
            raise _contract_error("GRPO's normalize_then_sum advantages are trainers.normalize_then_sum(rewards)")
        advantages = torch.nan_to_num(advantages, nan=0.0)
        output["advantages"] = self._mara_local(advantages, local).to(output["advantages"].dtype)
        replace_tail(self._logs["advantages"], advantages.tolist())

    def _mara_log_task_rewards(self, rewards_per_func: torch.Tensor) -> None:
        """Restate TRL's reward metrics and completions-table rewards of this batch on the task rewards.

        TRL computed ``reward``, ``reward_std``, ``rewards/<func>/mean|std`` and the table's reward
        columns from what ``_calculate_rewards`` returned (the rewards the advantages use); they are
        replaced by the same statistics of ``rewards_per_func [B, F]``, the gathered task rewards, so
        they read as a stock run with the same rewards would. The advantages stay the update's.
        """
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        for i, name in enumerate(self.reward_func_names):
            column = rewards_per_func[:, i]
            metrics[f"rewards/{name}/mean"][-1] = torch.nanmean(column).item()
            metrics[f"rewards/{name}/std"][-1] = nanstd(column).item()
            replace_tail(self._logs["rewards"][name], column.tolist())
        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights[None, :]).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        metrics["reward"][-1] = torch.nanmean(rewards).item()
        metrics["reward_std"][-1] = nanstd(rewards).item()
        if self._mara_update_rewards is not None:  # TRL's std saw the cancelled penalty's rounding residue
            group = self._mara_group_size()
            std = nanstd(self._mara_update_rewards.view(-1, group), dim=1) if group > 1 else torch.zeros(1)
            metrics["frac_reward_zero_std"][-1] = torch.isclose(std, torch.zeros_like(std)).float().mean().item()

    def _apply_transform(self, rewards: torch.Tensor, scorable: torch.Tensor, eligible: torch.Tensor,
                         prompts: list[Any], completions: list[Any]) -> torch.Tensor:
        """The named transform on the eligible gathered samples, one group per prompt (see the module docstring).

        Returns the new rewards; an advantage transform keeps them and leaves its advantages (zero outside
        ``eligible``) in ``self._mara_transform_advantages``.
        """
        transform = self._transform()
        group_ids = self._mara_group_ids(rewards)
        inputs: dict[str, Any] = {}
        if "policy_logprobs" in transform.needs:
            inputs["policy_logprobs"] = self._mara_policy_logps()[eligible]
        if transform.reads_answers:
            from mara_rl.diagnose.classes import answers_of

            texts = [c[-1]["content"] if isinstance(c, list) else c for c in gather_object(completions)]
            answers = answers_of(texts, self._mara_setting("collapse_answer_key", None))
            answers = [a for a, keep in zip(answers, eligible.tolist()) if keep]
            inputs["outcomes"] = answers
            if "outcome_counts" in transform.needs:
                from mara_rl.transforms import OutcomeCounts

                if self._mara_outcome_counts is None:
                    self._mara_outcome_counts = OutcomeCounts()
                asked = [p for p, keep in zip(gather_object(prompts), eligible.tolist()) if keep]
                inputs["outcome_counts"] = self._mara_outcome_counts.update(asked, answers,
                                                                            record=self.model.training)
        new_rewards = rewards.clone()
        if not eligible.any():
            return new_rewards
        out = transform(rewards[eligible], group_ids=group_ids[eligible],
                        value=self._mara_setting("reward_transform_value", None), **inputs)
        if transform.kind == "advantage":
            self._mara_transform_advantages = torch.zeros_like(rewards)
            self._mara_transform_advantages[eligible] = out.to(rewards.dtype)
        else:
            new_rewards[eligible] = out.to(rewards.dtype)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["mara/reward_raw"].append(float(rewards[scorable].mean()))
        if transform.kind == "reward":
            self._metrics[mode]["mara/reward_transformed"].append(float(new_rewards[scorable].mean()))
        return new_rewards

    def _mara_policy_logps(self) -> torch.Tensor:
        """Gathered sequence ``log pi(y|x)`` of the batch under the current policy (no grad)."""
        passes = self._mara_passes
        if len(passes) >= 2 and passes[0].model is self.model:
            per_token, mask = passes[0].per_token_logps, passes[0].mask
        else:
            input_ids, attention_mask, logits_to_keep, args, kwargs = self._mara_scoring_call
            with torch.no_grad():
                per_token = super()._get_per_token_logps_and_entropies(
                    self.model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)[0]
            mask = attention_mask[:, -logits_to_keep:]
        return gather(sequence_logprobs(per_token.float(), mask))

    def _mara_group_size(self) -> int:
        return self.num_generations if self.model.training else self.num_generations_eval

    def _mara_group_ids(self, gathered: torch.Tensor) -> torch.Tensor:
        """Prompt group of each row of a gathered ``[B]`` tensor (TRL puts a prompt's completions together)."""
        return torch.arange(gathered.size(0), device=gathered.device) // self._mara_group_size()

    def _mara_augment(self, rewards, ref_logps, scorable, in_loss, new_rewards, kl_ref_logps) -> torch.Tensor:
        """Core MARA on the samples TRL trains on (scored and in the loss); writes into the last two.

        Returns the row index of each group's anchor.
        """
        mode = "train" if self.model.training else "eval"
        group_ids = self._mara_group_ids(rewards)
        eligible = scorable & in_loss
        if self.mask_truncated_completions:
            masked = (scorable & ~in_loss).sum() / scorable.sum().clamp(min=1)
            self._metrics[mode]["mara/frac_masked"].append(float(masked))
        if not eligible.any():
            return torch.zeros(0, dtype=torch.long, device=rewards.device)
        result = mara_rewards(
            rewards[eligible],
            ref_logps[eligible],
            beta=self.beta,
            tau=self.args.mara_tau,
            tau_quantile=self.args.mara_tau_quantile,
            group_ids=group_ids[eligible],
            kl=self.args.kl_direction,
        )
        new_rewards[eligible] = result.rewards.to(new_rewards.dtype)
        kl_ref_logps[eligible] = result.ref_logprobs.to(kl_ref_logps.dtype)
        self._log_mara_metrics(mode, rewards[eligible], result)
        return torch.nonzero(eligible).flatten()[result.anchor_index[result.anchor_index >= 0]]

    def _log_mara_metrics(self, mode: str, raw_rewards: torch.Tensor, result: Any) -> None:
        metrics = self._metrics[mode]
        metrics["mara/frac_groups_augmented"].append(result.fraction_groups_augmented)
        metrics["mara/reward_raw"].append(float(raw_rewards.mean()))
        metrics["mara/reward"].append(float(result.rewards.mean()))
        shift = (result.rewards - raw_rewards)[result.augmented]
        metrics["mara/mean_augmentation"].append(float(shift.mean()) if shift.numel() else 0.0)
        anchors = result.anchor_index[result.anchor_index >= 0]
        if anchors.numel():  # both directions keep log pi_ref(z|x) at the anchor's own index
            metrics["mara/anchor_ref_logprob"].append(float(result.ref_logprobs[anchors].mean()))

    @contextmanager
    def _mara_without_trl_kl(self) -> Iterator[None]:
        """While the stock loss runs: drop any KL term of TRL's own from it."""
        yield

    def _mara_loss_normalizer(self, mode: str) -> float:
        """What the stock loss divides by (gradient accumulation), so the added term is scaled alike."""
        return 1.0

    def _compute_loss(self, model, inputs):
        if not self._mara_forward_in_loss():
            return super()._compute_loss(model, inputs)
        self._mara_loss_pass = None
        with self._mara_capture("loss"), self._mara_without_trl_kl():
            loss = super()._compute_loss(model, inputs)
        captured, self._mara_loss_pass = self._mara_loss_pass, None
        if captured is None:
            raise _contract_error("_compute_loss computes the policy log-probs with _get_per_token_logps_and_entropies")
        per_token_logps, hidden = captured
        if self._mara_token_forward():
            out = self._token_forward_kl(model, inputs, per_token_logps, hidden)
            value, term = out.kl, out.loss
        else:
            estimate = forward_kl_estimate(per_token_logps, self._mara_loss_mask(inputs), inputs["mara_ref_logps"])
            value, term = estimate.value, estimate.surrogate.mean()
        mode = "train" if self.model.training else "eval"
        self._metrics[mode][self._forward_kl_metric].append(self.accelerator.gather(value.mean()).mean().item())
        return loss + self.beta * term / self._mara_loss_normalizer(mode)

    def _mara_sampler_logps(self, inputs: dict[str, Any]) -> torch.Tensor | None:
        """Per-token log-probs of the policy that sampled the batch; None when it is the current policy."""
        old = inputs.get("mara_old_token_logps", inputs.get("old_per_token_logps"))
        sampling = inputs.get("sampling_per_token_logps")
        if old is not None and sampling is not None and getattr(self, "vllm_importance_sampling_correction", False):
            return torch.where(torch.isnan(sampling), old, sampling)  # TRL: a NaN vLLM log-prob gets no correction
        return old

    def _token_forward_kl(self, model: Any, inputs: dict[str, Any], per_token_logps: torch.Tensor,
                          hidden: torch.Tensor | None) -> ForwardKLOutput:
        """The token-level forward-KL term of one micro-batch (:func:`token_forward_kl_loss`)."""
        if hidden is None:
            raise _contract_error("the loss pass runs the model's base_model (TRL's fused LM head)")
        mask = self._mara_loss_mask(inputs)
        mara = bool(self._mara_setting("mara", False))
        groups = None
        if mara:
            rows = torch.arange(mask.size(0), device=mask.device)
            # A masked completion is outside the loss: as a group of its own it gets c = 0.
            groups = torch.where(mask.any(dim=1), inputs["mara_group"], -1 - rows)
        reference = self.ref_model if self.ref_model is not None else self.model
        cap = self._mara_setting("vllm_importance_sampling_clip_max", DEFAULT_MAX_IMPORTANCE_WEIGHT)
        return token_forward_kl_loss(
            hidden,
            inputs["mara_ref_hidden"],
            mask,
            per_token_logps,
            ref_logps=inputs["mara_ref_token_logps"] if mara else None,
            mara_ref_logps=inputs["mara_ref_logps"] if mara else None,
            group_ids=groups,
            old_logps=self._mara_sampler_logps(inputs),
            max_importance_weight=cap,
            prefix_correction=bool(self._mara_setting("use_bias_correction_kl", True)),
            policy_head=lm_head_of(model),
            ref_head=lm_head_of(reference),
            temperature=self.temperature,
        )


class MaraGRPOTrainer(_MaraMixin, GRPOTrainer):
    """``GRPOTrainer`` with MARA (per prompt group, on gathered rewards) and a forward-KL option.

    ``kl_direction="reverse"`` keeps TRL's per-token KL term; ``"forward"`` replaces it by ``beta`` times
    the token-level estimator (:func:`mara_rl.integrations.forward_kl.token_forward_kl_loss`, the default) or the
    :func:`forward_kl_estimate` surrogate (``forward_kl_estimator="sequence"``), averaged over the
    micro-batch's sequences, on the policy of this very loss call (training and ``evaluate()`` alike).
    """

    def _mara_forward_in_loss(self) -> bool:
        return self._mara_forward()

    def _generate(self, prompts: list) -> tuple:
        out = super()._generate(prompts)
        self._mara_tool_mask = out[2]  # per row: 1 on the model's tokens, 0 on tool / environment output
        return out

    def _mara_model_tokens(self, mask: torch.Tensor) -> torch.Tensor:
        rows, self._mara_tool_mask = self._mara_tool_mask, None
        if rows is None:
            return mask
        if len(rows) != mask.size(0) or any(len(row) > mask.size(1) for row in rows):
            raise _contract_error("_generate's tool_mask has one row per completion, no longer than the completions")
        tool_mask = torch.ones_like(mask)  # TRL pads it with 1 (padding is outside the completion mask anyway)
        for i, row in enumerate(rows):
            tool_mask[i, : len(row)] = torch.tensor(row, dtype=mask.dtype, device=mask.device)
        return mask * tool_mask

    @contextmanager
    def _mara_without_trl_kl(self) -> Iterator[None]:
        beta, self.beta = self.beta, 0.0  # the stock loss without its reverse-KL term
        try:
            yield
        finally:
            self.beta = beta

    def _mara_loss_normalizer(self, mode: str) -> float:
        return self.current_gradient_accumulation_steps if mode == "train" else 1.0


class MaraRLOOTrainer(_MaraMixin, RLOOTrainer):
    """``RLOOTrainer`` with MARA (per prompt group, on gathered rewards) and a forward-KL option.

    ``kl_direction="reverse"`` keeps TRL's reward penalty ``-beta * (log pi_old - log pi_ref)``.
    ``"forward"`` drops it; the token-level estimator (default) adds ``beta`` times its term to the loss,
    as GRPO does (its gradient is analytic, not a reward); ``forward_kl_estimator="sequence"`` puts the
    reward ``+beta * rho`` in its place (see :func:`forward_kl_estimate`).
    """

    _forward_kl_metric = "mara/kl_forward"

    def _kl_reward_shift(self, kl_ref_logps: torch.Tensor) -> RewardShift:
        # Scoring passes are [old policy, reference]; TRL will subtract beta * (old - ref) after this.
        passes = self._mara_passes
        if len(passes) != 2 or passes[0].model is not self.model:
            raise _contract_error("RLOO scores a batch with two log-prob passes: the policy's, then the reference's")
        old, ref = passes
        trl_kl = sequence_logprobs(old.per_token_logps, old.mask) - sequence_logprobs(ref.per_token_logps, ref.mask)
        if self._mara_token_forward():
            self._mara_token_inputs["mara_old_token_logps"] = old.per_token_logps
            penalty = self.beta * gather(trl_kl)
            return RewardShift(torch.zeros_like(penalty), penalty)
        estimate = forward_kl_estimate(old.per_token_logps, old.mask, self._mara_local(kl_ref_logps, trl_kl.size(0)))
        value, weight, trl_kl = gather(torch.stack([estimate.value, estimate.weight, trl_kl], dim=1)).unbind(1)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode][self._forward_kl_metric].append(float(value.mean()))
        return RewardShift(self.beta * weight, self.beta * trl_kl)
