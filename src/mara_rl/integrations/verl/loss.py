"""Forward KL ``KL(pi_ref(.|x) || pi(.|x))`` in verl's actor loss (the ``set_loss_fn`` hook).

verl's KL types (k1, abs, k2, k3 and their ``+`` variants) all estimate the reverse direction from
sampled-token log-probs, and the reference worker returns only those (``ref_log_prob``, ``[B, T]``).
The estimator therefore has to work from sequence log-probs: it is
:func:`mara_rl.integrations.forward_kl.sequence_forward_kl`, with ``y ~ pi_old`` (verl's ``old_log_probs``),
``rho = pi_ref(y|x) / pi_old(y|x)`` and gradient ``-rho grad log pi(y|x)``; ``log rho`` is clipped at
``max_log_ratio``. (The token-level full-vocabulary estimator in the same module needs the reference's
logits, or hidden states and LM head, at every completion position: verl's reference pass,
``compute_ref_log_prob`` -> ``infer_batch`` -> the engine's ``prepare_model_outputs``, returns only
the sampled tokens' log-probs, optionally entropy, and the loss sees only the actor's outputs.
See ``docs/verl.md``.)

:func:`forward_kl_ppo_loss` is verl's own ``ppo_loss`` run with ``use_kl_loss`` off, plus
``beta`` times the surrogate averaged over the mini-batch's sequences (verl's
``seq-mean-token-sum`` aggregation with the global batch info ``ppo_loss`` records, so data and
micro-batch splits do not change it). The trainer mode writes the reference log-probs as
:data:`MARA_KL_REF_FIELD` and MARA's Algorithm 2 as the per-sample weights of
:func:`mara_rl.integrations.forward_kl.mara_forward_weights`, computed over whole ``uid`` groups:
a scale ``s_i`` (:data:`MARA_KL_SCALE_FIELD`) of the sample's forward-KL term and a coefficient
``c_i`` (:data:`MARA_KL_COEF_FIELD`) on ``-grad log pi(y_i|x)``, the same Alg. 2 as the TRL trainers'
(``docs/forward_kl.md``); without MARA ``s = 1``, ``c = 0``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import agg_loss
from verl.utils.metric import AggregationType, Metric
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

from mara_rl.integrations.verl.rewards import last_token_onehot
from mara_rl.integrations.forward_kl import MAX_LOG_RATIO, sequence_forward_kl

MARA_KL_REF_FIELD = "mara_kl_ref_log_prob"
MARA_KL_SCALE_FIELD = "mara_kl_scale"
MARA_KL_COEF_FIELD = "mara_kl_coef"


def forward_kl_ppo_loss(
    config: Any,
    model_output: dict,
    data: TensorDict,
    dp_group: Any = None,
    *,
    beta: float,
    max_log_ratio: float = MAX_LOG_RATIO,
) -> tuple[torch.Tensor, dict]:
    """verl's ``ppo_loss`` plus ``beta`` times the sequence-level forward-KL surrogate with Alg. 2's weights.

    Per sequence: ``s_i * surrogate_i + c_i (sg(log pi(y_i|x)) - log pi(y_i|x))``, ``surrogate`` from
    :func:`~mara_rl.integrations.forward_kl.sequence_forward_kl` on the reference's own log-probs.

    Args:
        config: verl's ``ActorConfig`` with ``use_kl_loss=False`` (this term replaces verl's KL loss).
        model_output: the actor engine's output; ``log_probs`` of the sampled tokens (with grad).
        data: the micro-batch: ``response_mask``, ``old_log_probs``, :data:`MARA_KL_REF_FIELD`,
            :data:`MARA_KL_SCALE_FIELD` and :data:`MARA_KL_COEF_FIELD` (per-sample values on every
            response token) and what ``ppo_loss`` reads.
        dp_group: passed through to ``ppo_loss``.
        beta: the forward-KL coefficient (``actor_rollout_ref.actor.kl_loss_coef``).
        max_log_ratio: clip on ``log rho`` (``rho <= e^max_log_ratio``), biased wherever it binds.

    Returns:
        ``(loss, metrics)`` as ``ppo_loss``; ``kl_loss`` is the forward-KL estimate
        ``rho log(pi_ref/pi) - rho + pi/pi_old`` averaged over sequences, ``kl_coef`` is ``beta``;
        ``actor/forward_kl_clip_frac`` is the fraction of sequences whose ``log rho`` was clipped and
        ``actor/forward_kl_ess`` the effective sample size of the weights over the micro-batch's
        sequences, ``(sum rho)^2 / (n sum rho^2)`` in ``[1/n, 1]`` (near ``1/n``: one sequence carries
        the whole term, as at long completions where ``log rho`` is a sum over tokens).
    """
    if config.use_kl_loss:
        raise ValueError("forward_kl_ppo_loss needs an actor config with use_kl_loss=False: it replaces that term")
    loss, metrics = ppo_loss(config, model_output, data, dp_group)
    log_prob = no_padding_2_padding(model_output["log_probs"], data)
    fields = data.select("response_mask", "old_log_probs", MARA_KL_REF_FIELD, MARA_KL_SCALE_FIELD,
                         MARA_KL_COEF_FIELD).to_padded_tensor()
    mask = fields["response_mask"].to(bool)
    last = last_token_onehot(mask).float()

    def sequence(per_token: torch.Tensor) -> torch.Tensor:
        return (per_token.float() * mask).sum(dim=-1)

    ref_seq, old_seq, seq_logps = sequence(fields[MARA_KL_REF_FIELD]), sequence(fields["old_log_probs"]), sequence(log_prob)
    surrogate, value = sequence_forward_kl(seq_logps, ref_seq, old_seq, max_log_ratio=max_log_ratio)
    scale, coef = ((fields[name].float() * last).sum(dim=-1) for name in (MARA_KL_SCALE_FIELD, MARA_KL_COEF_FIELD))
    surrogate = scale * surrogate + coef * (seq_logps.detach() - seq_logps)

    def per_sequence_mean(values: torch.Tensor) -> torch.Tensor:
        return agg_loss(
            loss_mat=values[:, None] * last,
            loss_mask=mask,
            loss_agg_mode="seq-mean-token-sum",
            dp_size=config.global_batch_info["dp_size"],
            global_batch_size=config.global_batch_info["global_batch_size"],
        )

    kl_loss = per_sequence_mean(surrogate)
    aggregation = metrics["actor/pg_loss"].aggregation
    metrics["kl_loss"] = Metric(value=per_sequence_mean(value.detach()), aggregation=aggregation)
    metrics["kl_coef"] = beta
    log_rho = (ref_seq - old_seq).double()
    rows = mask.any(dim=-1)
    if rows.any():
        log_rho = log_rho[rows]
        clipped = log_rho.clamp(max=max_log_ratio)
        # ESS in log space: 2 logsumexp(l) - log n - logsumexp(2 l); all weights 0 (log rho = -inf) gives 0.
        ess = (2 * clipped.logsumexp(0) - math.log(clipped.numel()) - (2 * clipped).logsumexp(0)).exp().nan_to_num(0.0)
        metrics["actor/forward_kl_clip_frac"] = Metric(AggregationType.MEAN, (log_rho > max_log_ratio).double().mean())
        metrics["actor/forward_kl_ess"] = Metric(AggregationType.MEAN, ess)
    return loss + beta * kl_loss, metrics
