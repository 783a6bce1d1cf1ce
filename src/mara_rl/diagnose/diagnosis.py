"""Per-prompt diagnosis: the exact target of a KL-regularised objective over the observed answers.

For each prompt, over its answer classes ``c`` (see :mod:`mara_rl.diagnose.classes`), with class
rewards ``R(c)`` and reference masses ``pi_ref(c|x)`` normalised over the observed classes:

- the vanilla target: ``G(c) ∝ pi_ref(c) exp(R(c)/beta)`` (reverse KL) or
  ``beta pi_ref(c) / (Lambda - R(c))`` (forward KL), :func:`mara_rl.targets.kl_target`;
- the MARA target, :func:`mara_rl.targets.mara_target` (uniform over the good classes, ``R >= tau``);
- for each: the probability of the top good class, the entropy, the effective number of good
  classes and the mass above tau (:func:`mara_rl.targets.summarize_targets`, all prompts in one call);
- the beta at which the second-best good class reaches half of the top one,
  :func:`mara_rl.targets.crossover_beta` with ``target_log_ratio = -log 2`` (Remark 4.4; from the
  reverse-KL log-ratio, Prop. 4.1).

Every formula is the core's; this module only groups, calls it once over all prompts
(``group_ids``) and collects the results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mara_rl._checks import check_beta, threshold_for
from mara_rl.augment import mara_rewards
from mara_rl.diagnose.classes import AnswerClasses, answer_classes
from mara_rl.targets import crossover_beta, grouped_softmax, kl_target, mara_target, summarize_targets


@dataclass(frozen=True)
class Diagnosis:
    """Result of :func:`diagnose` at one beta.

    Attributes:
        config: beta, kl, tau or tau_quantile, answer_key.
        classes: the answer classes (see :class:`~mara_rl.diagnose.classes.AnswerClasses`) plus
            ``tau``, ``good``, ``ref_prob`` (reference mass normalised over the prompt's classes),
            ``vanilla`` and ``mara`` (target probabilities) and, with policy log-probs, ``policy_prob``.
        prompts: one row per prompt (see :data:`PROMPT_COLUMNS`).
        summary: counts and the verdict (see :func:`summarize`).
        warnings: rows, prompts or classes that were skipped or approximated.
    """

    config: dict
    classes: pd.DataFrame
    prompts: pd.DataFrame
    summary: dict
    warnings: list[str] = field(default_factory=list)


PROMPT_COLUMNS = {
    "prompt": "the prompt text",
    "num_rows": "completions sampled for the prompt (after skipping unusable rows)",
    "num_classes": "observed answer classes",
    "num_good": "classes with reward >= tau",
    "tau": "the prompt's quality threshold",
    "ref_second_to_top": "pi_ref(second) / pi_ref(top) for the vanilla target's two best good classes",
    "vanilla_top_good": "vanilla target probability of its most likely good class",
    "vanilla_second_to_top": "G(second) / G(top) under the vanilla target",
    "vanilla_effective_good": "exp(entropy) of the vanilla target restricted to the good classes",
    "vanilla_entropy": "entropy of the vanilla target over all observed classes (nats)",
    "vanilla_mass_above_tau": "vanilla target mass on the good classes",
    "vanilla_multimodal": "vanilla target multimodal: effective number of good classes >= 1.8 (summarize_targets)",
    "mara_top_good": "MARA target probability of its most likely good class",
    "mara_second_to_top": "G(second) / G(top) under the MARA target (same two classes)",
    "mara_effective_good": "exp(entropy) of the MARA target restricted to the good classes",
    "mara_entropy": "entropy of the MARA target over all observed classes (nats)",
    "mara_mass_above_tau": "MARA target mass on the good classes",
    "mara_multimodal": "MARA target multimodal: effective number of good classes >= 1.8 (summarize_targets)",
    "beta_half": "beta at which the second-best good class reaches half of the top one (inf: none)",
    "policy_tv_vanilla": "with policy_logprob: total variation between the policy and the vanilla target",
    "policy_tv_mara": "with policy_logprob: total variation between the policy and the MARA target",
}


def class_thresholds(groups: AnswerClasses, tau: float | None, tau_quantile: float | None, beta: float) -> np.ndarray:
    """Per-prompt ``tau``: the constant, or the prompt's reward quantile over its sampled rows.

    The quantile is the one :func:`mara_rl.augment.mara_rewards` computes in training, on the
    same rows, so the diagnosis and the trainer agree on which answers are good.
    """
    if tau is not None:
        return np.full(len(groups.prompts), threshold_for(groups.rows["reward"].to_numpy(), tau))
    rows = groups.rows
    result = mara_rewards(
        rows["reward"].to_numpy(),
        rows["ref_logprob"].to_numpy(),
        beta=beta,
        tau_quantile=tau_quantile,
        group_ids=rows["prompt_id"].to_numpy(),
    )
    return result.tau


def _top_two_good(classes: pd.DataFrame, num_prompts: int) -> tuple[np.ndarray, np.ndarray]:
    """Class index of the most and second most likely good class under the vanilla target (-1: none)."""
    prompt_ids = classes["prompt_id"].to_numpy()
    index = np.flatnonzero(classes["good"].to_numpy())
    index = index[np.lexsort((-classes["vanilla"].to_numpy()[index], prompt_ids[index]))]
    prompt = prompt_ids[index]
    starts = np.flatnonzero(np.r_[True, prompt[1:] != prompt[:-1]]) if index.size else np.zeros(0, dtype=np.int64)
    counts = np.diff(np.r_[starts, index.size])
    top = np.full(num_prompts, -1, dtype=np.int64)
    second = np.full(num_prompts, -1, dtype=np.int64)
    top[prompt[starts]] = index[starts]
    has_two = counts >= 2
    second[prompt[starts[has_two]]] = index[starts[has_two] + 1]
    return top, second


def diagnose(
    rollouts: pd.DataFrame | AnswerClasses,
    beta: float,
    *,
    kl: str = "reverse",
    tau: float | None = None,
    tau_quantile: float | None = None,
    answer_key: str | None = None,
) -> Diagnosis:
    """Which target does a KL-regularised objective aim at, per prompt, and MARA's instead?

    Args:
        rollouts: one row per sampled completion (see :mod:`mara_rl.diagnose.reading`), or classes
            already built by :func:`~mara_rl.diagnose.classes.answer_classes` (reused across betas).
        beta: the KL coefficient (> 0).
        kl: ``"reverse"`` or ``"forward"``.
        tau: reward threshold for "good" answers; or
        tau_quantile: per-prompt quantile of the sampled rewards (as MARA computes it in training).
            Neither: ``tau_quantile=1``, the best reward observed for the prompt.
        answer_key: regex whose first group is the answer (classes); default the exact completion.
            With ``rollouts`` already grouped, leave it out (the classes carry their own).

    Returns:
        :class:`Diagnosis` with per-class target probabilities and per-prompt diagnostics.
    """
    beta = check_beta(beta)
    if kl not in ("reverse", "forward"):
        raise ValueError(f"kl must be 'reverse' or 'forward', got {kl!r}")
    if tau is not None and tau_quantile is not None:
        raise ValueError("give at most one of tau and tau_quantile")
    if tau is None and tau_quantile is None:
        tau_quantile = 1.0
    if tau_quantile is not None and not 0.0 <= float(tau_quantile) <= 1.0:
        raise ValueError(f"tau_quantile must lie in [0, 1], got {tau_quantile!r}")
    if isinstance(rollouts, AnswerClasses):
        if answer_key is not None and answer_key != rollouts.answer_key:
            raise ValueError(f"answer_key {answer_key!r} differs from the one the classes were built with ({rollouts.answer_key!r})")
        groups = rollouts
    else:
        groups = answer_classes(rollouts, answer_key)
    classes = groups.classes.copy()
    num_prompts = len(groups.prompts)
    prompt_id = classes["prompt_id"].to_numpy()
    reward = classes["reward"].to_numpy()
    ref_logmass = classes["ref_logmass"].to_numpy()

    prompt_tau = class_thresholds(groups, tau, tau_quantile, beta)
    tau_c = prompt_tau[prompt_id]
    classes["tau"] = tau_c
    classes["good"] = reward >= tau_c
    classes["ref_prob"] = grouped_softmax(ref_logmass, prompt_id)
    # Log targets, so a second-to-top ratio of 1e-320 keeps its digits; the columns hold probabilities.
    log_targets = {"vanilla": kl_target(reward, ref_logmass, beta, kl, group_ids=prompt_id, return_log=True),
                   # The MARA target is unchanged when a prompt's rewards and tau shift together, so
                   # subtracting each prompt's tau lets one call with tau = 0 serve per-prompt thresholds.
                   "mara": mara_target(reward - tau_c, ref_logmass, beta, 0.0, kl, group_ids=prompt_id, return_log=True)}
    for name, values in log_targets.items():
        classes[name] = np.exp(values)
    if "policy_logmass" in classes.columns:
        policy = classes["policy_logmass"].to_numpy()
        classes["policy_prob"] = grouped_softmax(policy, prompt_id)

    prompts = _per_prompt(classes, groups.prompts, prompt_tau, log_targets)
    if "policy_prob" in classes.columns:
        # How far a trained policy is from each target, over the same classes: 0.5 sum |pi - G|.
        for name in ("vanilla", "mara"):
            gap = np.abs(classes["policy_prob"].to_numpy() - classes[name].to_numpy())
            prompts[f"policy_tv_{name}"] = 0.5 * np.bincount(prompt_id, weights=gap, minlength=num_prompts)
    config = {"beta": beta, "kl": kl, "tau": tau, "tau_quantile": tau_quantile, "answer_key": groups.answer_key}
    return Diagnosis(config, classes, prompts, summarize(prompts, config), list(groups.warnings))


def _per_prompt(classes: pd.DataFrame, prompt_table: pd.DataFrame, prompt_tau: np.ndarray,
                log_targets: dict[str, np.ndarray]) -> pd.DataFrame:
    num_prompts = len(prompt_table)
    prompt_id = classes["prompt_id"].to_numpy()
    reward = classes["reward"].to_numpy()
    out: dict[str, np.ndarray] = {}
    for name in ("vanilla", "mara"):
        summaries = summarize_targets(classes[name].to_numpy(), reward, prompt_tau, group_ids=prompt_id)
        out[f"{name}_top_good"] = summaries.top_good_share * summaries.mass_above_tau
        out[f"{name}_effective_good"] = summaries.effective_good
        out[f"{name}_entropy"] = summaries.entropy
        out[f"{name}_mass_above_tau"] = summaries.mass_above_tau
        out[f"{name}_multimodal"] = summaries.multimodal
    num_good = summaries.num_good.astype(np.int64)

    top, second = _top_two_good(classes, num_prompts)
    pair = second >= 0
    t, s = top[pair], second[pair]
    ref_logmass = classes["ref_logmass"].to_numpy()

    def ratio(log_column: np.ndarray) -> np.ndarray:
        values = np.full(num_prompts, np.nan)
        with np.errstate(invalid="ignore", over="ignore"):  # a ratio beyond float64 is inf
            values[pair] = np.exp(log_column[s] - log_column[t])
        return values

    beta_half = np.full(num_prompts, np.nan)
    beta_half[pair] = crossover_beta(reward[s], reward[t], ref_logmass[s], ref_logmass[t], -math.log(2.0))
    table = pd.DataFrame(
        {
            "prompt": prompt_table["prompt"].to_numpy(),
            "num_rows": prompt_table["num_rows"].to_numpy(),
            "num_classes": prompt_table["num_classes"].to_numpy(),
            "num_good": num_good,
            "tau": prompt_tau,
            "ref_second_to_top": ratio(ref_logmass),
            "vanilla_top_good": out["vanilla_top_good"],
            "vanilla_second_to_top": ratio(log_targets["vanilla"]),
            "vanilla_effective_good": out["vanilla_effective_good"],
            "vanilla_entropy": out["vanilla_entropy"],
            "vanilla_mass_above_tau": out["vanilla_mass_above_tau"],
            "vanilla_multimodal": out["vanilla_multimodal"],
            "mara_top_good": out["mara_top_good"],
            "mara_second_to_top": ratio(log_targets["mara"]),
            "mara_effective_good": out["mara_effective_good"],
            "mara_entropy": out["mara_entropy"],
            "mara_mass_above_tau": out["mara_mass_above_tau"],
            "mara_multimodal": out["mara_multimodal"],
            "beta_half": beta_half,
        }
    )
    return table


def summarize(prompts: pd.DataFrame, config: dict) -> dict:
    """Counts, means and the verdict over the prompts with at least two good classes.

    "Unimodal by construction": the exact target over the observed classes is not multimodal in
    :func:`mara_rl.targets.summarize_targets`' sense (effective number of good classes below 1.8), so
    even a perfect optimiser would collapse.
    """
    multi = prompts["num_good"].to_numpy() >= 2
    n_multi = int(multi.sum())
    beta = config["beta"]
    summary = {
        "num_prompts": int(len(prompts)),
        "num_prompts_two_good": n_multi,
        "num_classes": int(prompts["num_classes"].sum()),
        "num_rows": int(prompts["num_rows"].sum()),
    }
    if n_multi == 0:
        summary["verdict"] = (
            f"beta={beta:g}: no prompt has two or more good answer classes (reward >= tau), so there is "
            "no mode to lose; lower tau or sample more completions"
        )
        return summary
    sub = prompts.loc[multi]
    vanilla_uni = float((~sub["vanilla_multimodal"]).mean())
    mara_uni = float((~sub["mara_multimodal"]).mean())
    beta_half = sub["beta_half"].to_numpy()
    finite = np.isfinite(beta_half)
    summary.update(
        {
            "vanilla_unimodal_share": vanilla_uni,
            "mara_unimodal_share": mara_uni,
            "vanilla_mean_top_good": float(sub["vanilla_top_good"].mean()),
            "mara_mean_top_good": float(sub["mara_top_good"].mean()),
            "vanilla_mean_effective_good": float(sub["vanilla_effective_good"].mean()),
            "mara_mean_effective_good": float(sub["mara_effective_good"].mean()),
            "mean_num_good": float(sub["num_good"].mean()),
            "num_beta_half_finite": int(finite.sum()),
            "median_beta_half": float(np.median(beta_half[finite])) if finite.any() else None,
        }
    )
    summary["verdict"] = (
        f"unimodal by construction on {vanilla_uni:.0%} of prompts at beta={beta:g} "
        f"({config['kl']} KL); MARA: {mara_uni:.0%} "
        f"(over the {n_multi} of {len(prompts)} prompts with two or more good answer classes)"
    )
    return summary
