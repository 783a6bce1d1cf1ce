"""Live collapse metrics of one generation batch: how many good answers, and what the objective aims at.

Per prompt, over the answer classes of its sampled completions (:mod:`mara_rl.diagnose.classes`:
exact text by default, or an answer key: a regex whose first group is the answer, or a callable
from completion text to answer), with the prompt's quality threshold ``tau``:

- ``collapse/good_classes``: distinct good classes (``R >= tau``) among the samples, mean over prompts;
- ``collapse/prompts_two_good``: share of prompts with two or more good classes;

and, with reference log-probs and ``beta > 0``, over the prompts with two or more good classes
(the diagnosis ``mara diagnose`` makes, :func:`mara_rl.diagnose.diagnosis.diagnose`, through the
core's ``kl_target`` / ``mara_target`` / ``summarize_targets``):

- ``collapse/vanilla_effective_good`` / ``collapse/mara_effective_good``: effective number of good
  classes (``exp`` of the entropy of the target restricted to the good classes) of the vanilla and
  MARA targets, mean over those prompts;
- ``collapse/vanilla_unimodal_share`` / ``collapse/mara_unimodal_share``: share of those prompts
  whose target is unimodal by construction (effective number below 1.8).

A falling ``good_classes`` while ``vanilla_effective_good`` stays near 1 is collapse the objective
asks for; MARA's target keeps every good class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

AnswerKey = str | Callable[[str], Any] | None


def collapse_metrics(
    prompts: Sequence[str],
    completions: Sequence[str],
    rewards: Any,
    ref_logprobs: Any = None,
    *,
    beta: float = 0.0,
    kl: str = "reverse",
    tau: float | None = None,
    tau_quantile: float | None = None,
    answer_key: AnswerKey = None,
) -> dict[str, float]:
    """The metrics of the module docstring for one batch of ``n`` completions.

    Args:
        prompts / completions: ``n`` texts (prompts group the rows).
        rewards: ``[n]`` rewards (NaN: unscored, skipped).
        ref_logprobs: ``[n]`` sequence ``log pi_ref(y|x)`` (NaN: skipped), or None: only the class counts.
        beta: the KL coefficient; the target metrics need ``beta > 0``.
        kl: ``"reverse"`` or ``"forward"``.
        tau / tau_quantile: the threshold (as MARA's); neither: the best reward sampled for the prompt.
        answer_key: None (exact text), a regex with a capturing group, or a callable text -> answer.

    Returns:
        ``{name: value}``; empty when no prompt has two scored completions.
    """
    import pandas as pd

    from mara_rl.diagnose.diagnosis import diagnose

    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
    targets = ref_logprobs is not None and beta > 0
    ref = np.zeros_like(rewards) if ref_logprobs is None else np.asarray(ref_logprobs, dtype=np.float64).reshape(-1)
    frame = pd.DataFrame({"prompt": list(prompts), "completion": list(completions), "reward": rewards,
                          "ref_logprob": ref})
    usable = np.isfinite(rewards) & np.isfinite(ref)
    if not (frame.loc[usable, "prompt"].value_counts() >= 2).any():
        return {}
    # Without reference log-probs only the classes and thresholds are used: any beta > 0 gives them.
    diagnosis = diagnose(frame, beta if targets else 1.0, kl=kl, tau=tau, tau_quantile=tau_quantile,
                         answer_key=answer_key)
    per_prompt = diagnosis.prompts
    num_good = per_prompt["num_good"].to_numpy()
    metrics = {
        "collapse/good_classes": float(num_good.mean()),
        "collapse/prompts_two_good": float((num_good >= 2).mean()),
    }
    summary = diagnosis.summary
    if targets and summary["num_prompts_two_good"] > 0:
        for name in ("vanilla", "mara"):
            metrics[f"collapse/{name}_effective_good"] = summary[f"{name}_mean_effective_good"]
            metrics[f"collapse/{name}_unimodal_share"] = summary[f"{name}_unimodal_share"]
    return metrics
