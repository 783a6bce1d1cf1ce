"""Answer classes per prompt: the outcome set over which a target is exact.

Restricted to the answers a model actually produced, each prompt is a finite contextual bandit
whose outcomes are *answer classes*: completions with the same answer key (the exact text by
default, or the first group of a regular expression, e.g. the final answer of a solution). A class's
reference probability is the sum over its *distinct* members,
``log pi_ref(class) = logsumexp_{distinct y in class} log pi_ref(y|x)``: sampling the same
completion twice does not make it twice as likely under the reference.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mara_rl._groups import group_codes
from mara_rl.diagnose.reading import check_rollouts
from mara_rl.targets import grouped_logsumexp

# Copies of one completion should carry one log-prob; beyond this (relative or absolute) they warn.
DUPLICATE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class AnswerClasses:
    """Rollouts reduced to answer classes.

    Attributes:
        rows: kept rollout rows plus ``prompt_id`` (dense, in order of first appearance) and
            ``class_id`` (index into ``classes``).
        classes: one row per (prompt, class), sorted by ``prompt_id`` and then by decreasing
            reference mass: ``prompt_id``, ``prompt``, ``answer``, ``reward`` (mean over the class's
            rows), ``reward_min``, ``reward_max``, ``ref_logmass``, ``num_samples``, ``num_distinct``,
            ``sample_share`` (the class's share of the prompt's rows) and, when the rollouts carry
            it, ``policy_logmass``.
        prompts: the kept prompts, indexed by ``prompt_id``, with their row and class counts.
        answer_key: the regex that defined the classes (``None``: exact text).
        warnings: what was skipped or approximated, one line each.
    """

    rows: pd.DataFrame
    classes: pd.DataFrame
    prompts: pd.DataFrame
    answer_key: str | None = None
    warnings: list[str] = field(default_factory=list)


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _drop_unusable(rows: pd.DataFrame, warnings: list[str]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Skip rows with a non-finite number and prompts left with a single row; say so per prompt.

    Returns the kept rows, their prompt codes (dense, in order of first appearance) and the prompts.
    """
    # Prompt texts are hashed once; the kept codes are compacted with the core's factorisation.
    prompt_code, prompt_labels = pd.factorize(rows["prompt"], sort=False)
    numeric = [c for c in ("reward", "ref_logprob", "policy_logprob") if c in rows.columns]
    bad = np.zeros(len(rows), dtype=bool)
    for name in numeric:
        column_bad = ~np.isfinite(rows[name].to_numpy())
        if column_bad.any():
            for prompt, count in rows.loc[column_bad, "prompt"].value_counts(sort=False).items():
                warnings.append(f"prompt {_short(prompt)!r}: skipped {count} row(s) with non-finite {name}")
        bad |= column_bad
    sizes = np.bincount(prompt_code[~bad], minlength=len(prompt_labels))
    lonely = ~bad & (sizes[prompt_code] < 2)
    for prompt in rows.loc[lonely, "prompt"]:
        warnings.append(f"prompt {_short(prompt)!r}: skipped, only one usable completion (nothing to compare)")
    keep = ~(bad | lonely)
    if not keep.any():
        raise ValueError("no prompt has two or more usable completions; see the warnings: " + "; ".join(warnings[:5]))
    prompt_id, used = group_codes(prompt_code[keep].astype(np.int64), int(keep.sum()))
    return rows.loc[keep].reset_index(drop=True), prompt_id, np.asarray(prompt_labels, dtype=object)[used]


def compile_answer_key(answer_key: str | Callable[[str], object] | None) -> re.Pattern | Callable | None:
    """The compiled ``answer_key``; ``ValueError`` unless it is a valid regex with a capturing group.

    A callable (completion text -> answer) is returned as it is.
    """
    if answer_key is None or callable(answer_key):
        return answer_key
    try:
        pattern = re.compile(answer_key)
    except re.error as err:
        raise ValueError(f"answer_key {answer_key!r} is not a valid regular expression: {err}") from None
    if pattern.groups < 1:
        raise ValueError(f"answer_key must contain a capturing group, e.g. 'answer: (\\d+)'; got {answer_key!r}")
    return pattern


def answer_keys(completions: pd.Series, answer_key: str | Callable[[str], object] | None) -> pd.Series:
    """Class key of each completion: the text itself, the first group of ``answer_key``, or its value.

    Completions the pattern does not match keep their exact text as key; a callable's answers are
    compared as strings.
    """
    pattern = compile_answer_key(answer_key)
    if pattern is None:
        return completions
    if callable(pattern):
        return completions.map(pattern).astype(str)
    extracted = completions.str.extract(pattern, expand=True).iloc[:, 0]  # a named group names its column
    return extracted.where(extracted.notna(), completions).astype(str)


def answers_of(texts: list[str], answer_key: str | Callable[[str], object] | None) -> list[str]:
    """Each completion's answer as the outcome transforms compare them: :func:`answer_keys`, stripped."""
    return [a.strip() for a in answer_keys(pd.Series(list(texts), dtype=object), answer_key).tolist()]


def _pair_codes(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Dense codes of the pairs ``(first[i], second[i])`` of non-negative integer codes."""
    return group_codes(first * (int(second.max()) + 1) + second, first.size)[0]


def _first_index(codes: np.ndarray, size: int) -> np.ndarray:
    first = np.full(size, codes.size, dtype=np.int64)
    np.minimum.at(first, codes, np.arange(codes.size))
    return first


def _grouped_range(codes: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-code minimum and maximum of ``values``."""
    lo = np.full(size, np.inf)
    hi = np.full(size, -np.inf)
    np.minimum.at(lo, codes, values)
    np.maximum.at(hi, codes, values)
    return lo, hi


def _duplicate_disagreements(
    rows: pd.DataFrame, column: str, distinct_id: np.ndarray, first_row: np.ndarray, warnings: list[str]
) -> None:
    """Warn when copies of one completion carry log-probs that differ by more than ``DUPLICATE_TOLERANCE``."""
    lo, hi = _grouped_range(distinct_id, rows[column].to_numpy(), first_row.size)
    gap = hi - lo
    bad = gap > DUPLICATE_TOLERANCE * np.maximum(1.0, np.maximum(np.abs(lo), np.abs(hi)))
    if not bad.any():
        return
    worst = int(np.argmax(np.where(bad, gap, -1.0)))
    row = rows.iloc[int(first_row[worst])]
    warnings.append(
        f"{int(bad.sum())} repeated completion(s) have {column} values that differ by more than "
        f"{DUPLICATE_TOLERANCE:g} (relative or absolute); the largest difference is {gap[worst]:.3g} nats "
        f"(prompt {_short(row['prompt'])!r}, completion {_short(row['completion'], 20)!r}); using their mean"
    )


def answer_classes(rollouts: pd.DataFrame, answer_key: str | Callable[[str], object] | None = None) -> AnswerClasses:
    """Group each prompt's completions into answer classes (see the module docstring).

    Identical completions of a prompt count once in the class's reference mass, with the mean of
    their log-probs; copies whose log-probs differ by more than ``DUPLICATE_TOLERANCE`` (relative or
    absolute) get a warning with their number and the largest difference. A class whose rows carry
    different rewards gets the mean reward, and a warning.
    """
    compile_answer_key(answer_key)
    warnings: list[str] = []
    rows, prompt_id, prompt_labels = _drop_unusable(check_rollouts(rollouts), warnings)
    # Texts are hashed once into integer codes; pairs of codes are grouped with the core's factorisation.
    keys = answer_keys(rows["completion"], answer_key)
    completion_code = pd.factorize(rows["completion"], sort=False)[0].astype(np.int64)
    distinct_id = _pair_codes(prompt_id, completion_code)
    if answer_key is None:
        raw_class = distinct_id
    else:
        raw_class = _pair_codes(prompt_id, pd.factorize(keys, sort=False)[0].astype(np.int64))
    num_distinct = int(distinct_id.max()) + 1
    num_classes = int(raw_class.max()) + 1

    distinct_rows = np.bincount(distinct_id, minlength=num_distinct)
    distinct_first = _first_index(distinct_id, num_distinct)
    distinct_class = raw_class[distinct_first]
    log_columns = [c for c in ("ref_logprob", "policy_logprob") if c in rows.columns]
    for column in log_columns:
        _duplicate_disagreements(rows, column, distinct_id, distinct_first, warnings)

    def distinct_logmass(column: str) -> np.ndarray:
        mean_lp = np.bincount(distinct_id, weights=rows[column].to_numpy(), minlength=num_distinct) / distinct_rows
        return grouped_logsumexp(mean_lp, distinct_class)

    reward = rows["reward"].to_numpy()
    class_rows = np.bincount(raw_class, minlength=num_classes)
    class_first = _first_index(raw_class, num_classes)
    reward_min, reward_max = _grouped_range(raw_class, reward, num_classes)
    class_prompt = prompt_id[class_first]
    prompt_rows = np.bincount(prompt_id, minlength=len(prompt_labels))
    table = {
        "prompt_id": class_prompt,
        "prompt": prompt_labels[class_prompt],
        "answer": keys.take(class_first).to_numpy(dtype=object),
        "reward": np.bincount(raw_class, weights=reward, minlength=num_classes) / class_rows,
        "reward_min": reward_min,
        "reward_max": reward_max,
        "ref_logmass": distinct_logmass("ref_logprob"),
        "num_samples": class_rows,
        "num_distinct": np.bincount(distinct_class, minlength=num_classes),
        "sample_share": class_rows / prompt_rows[class_prompt],
    }
    if "policy_logprob" in rows.columns:
        table["policy_logmass"] = distinct_logmass("policy_logprob")
    classes = pd.DataFrame(table)
    order = np.lexsort((-classes["ref_logmass"].to_numpy(), class_prompt))
    classes = classes.iloc[order].reset_index(drop=True)
    rank = np.empty(num_classes, dtype=np.int64)
    rank[order] = np.arange(num_classes)

    mixed = classes["reward_max"].to_numpy() > classes["reward_min"].to_numpy()
    for prompt, answer, lo, hi in classes.loc[mixed, ["prompt", "answer", "reward_min", "reward_max"]].itertuples(index=False):
        warnings.append(
            f"prompt {_short(prompt)!r}: class {_short(answer, 20)!r} has rewards from {lo:g} to {hi:g}; using their mean"
        )
    rows = rows.assign(prompt_id=prompt_id, class_id=rank[raw_class])
    prompts = pd.DataFrame(
        {
            "prompt": prompt_labels,
            "num_rows": prompt_rows,
            "num_classes": np.bincount(class_prompt, minlength=len(prompt_labels)),
        }
    )
    return AnswerClasses(rows=rows, classes=classes, prompts=prompts, answer_key=answer_key, warnings=warnings)
