"""The record over training: per step, the policy's sampled good answers beside the exact targets.

For every step of a rollout record, each prompt group (``step``, ``group_id``: the completions
that share an anchor in training) is one finite bandit over its answer classes, exactly as
:func:`mara_rl.diagnose.diagnosis.diagnose` treats a prompt: classes are exact completion texts
(or ``answer_key``'s first group), a class's reference mass is the log-sum-exp of its distinct
members' log-probs (copies count once, with their mean), its reward the mean of its rows, and
``tau`` is the constant or the group's reward quantile computed by
:func:`mara_rl.augment.mara_rewards`. Rows with a non-finite reward or ``ref_logprob`` are skipped,
and so are groups left with a single row. Per group, through the core:

- sampled: ``summarize_targets`` of the classes' sample shares (how often the policy produced each
  class): distinct good classes sampled and their effective number ``exp(H)``;
- vanilla: ``kl_target`` (``G ∝ pi_ref exp(R/beta)``, or the forward-KL form) and its effective
  number of good classes; MARA: ``mara_target`` and its effective number (uniform over the good
  classes: the number of good classes);
- with ``policy_logprob`` on every row of the group: the total variation between the policy's own
  distribution over the classes and each target.

A step's summary holds sums and counts (``*_sum`` over the groups with at least one good class,
unimodal counts over the groups with two or more), so that means over a step, or over any set
of steps, follow without the rows: :func:`step_means`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from mara_rl._checks import check_beta, threshold_for
from mara_rl._groups import Segments, group_codes
from mara_rl.augment import _grouped_quantile
from mara_rl.diagnose.classes import answer_keys, compile_answer_key
from mara_rl.targets import grouped_logsumexp, grouped_softmax, kl_target, mara_target, summarize_targets

# Columns a step summary is computed from: everything else in a shard is never read.
READ_COLUMNS = ("step", "group_id", "completion", "reward", "ref_logprob", "policy_logprob")

# One row per step; integer counts and float sums (see the module docstring).
SUMMARY_COLUMNS = {
    "step": "int64",
    "rows": "int64",
    "rows_used": "int64",
    "groups": "int64",
    "groups_good": "int64",
    "groups_two_good": "int64",
    "reward_sum": "float64",
    "sampled_good_sum": "float64",
    "sampled_effective_sum": "float64",
    "vanilla_effective_sum": "float64",
    "mara_effective_sum": "float64",
    "vanilla_unimodal": "int64",
    "mara_unimodal": "int64",
    "groups_policy": "int64",
    "policy_tv_vanilla_sum": "float64",
    "policy_tv_mara_sum": "float64",
}

MEAN_COLUMNS = {
    "mean_reward": "mean reward of the used rows",
    "sampled_good_classes": "distinct good classes the policy sampled, mean over groups with a good class",
    "sampled_effective_good": "exp(entropy) of the policy's samples over the good classes (same groups)",
    "vanilla_effective_good": "effective number of good classes of the vanilla target (same groups)",
    "mara_effective_good": "effective number of good classes of the MARA target (same groups)",
    "vanilla_unimodal_share": "share of the groups with two or more good classes whose vanilla target is unimodal",
    "mara_unimodal_share": "the same for the MARA target",
    "policy_tv_vanilla": "total variation between the policy and the vanilla target (groups with policy_logprob)",
    "policy_tv_mara": "total variation between the policy and the MARA target (same groups)",
}


@dataclass(frozen=True)
class Settings:
    """What a step summary depends on besides the rows: the objective and the definition of good."""

    beta: float
    kl: str = "reverse"
    tau: float | None = None
    tau_quantile: float | None = None
    answer_key: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", check_beta(self.beta))
        if self.kl not in ("reverse", "forward"):
            raise ValueError(f"kl must be 'reverse' or 'forward', got {self.kl!r}")
        if self.tau is not None and self.tau_quantile is not None:
            raise ValueError("give at most one of tau and tau_quantile")
        if self.tau is None and self.tau_quantile is None:
            object.__setattr__(self, "tau_quantile", 1.0)
        if self.tau is not None and not math.isfinite(float(self.tau)):
            raise ValueError(f"tau must be a finite number, got {self.tau!r}")
        if self.tau_quantile is not None and not 0.0 <= float(self.tau_quantile) <= 1.0:
            raise ValueError(f"tau_quantile must lie in [0, 1], got {self.tau_quantile!r}")
        for name in ("tau", "tau_quantile"):  # plain floats: the cache key of 1 and 1.0 is one
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        compile_answer_key(self.answer_key)

    def as_dict(self) -> dict:
        return asdict(self)


def _dense(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Dense codes of the pairs ``(first[i], second[i])`` of non-negative integer codes, through the
    core's factorisation (pairs of small codes take its linear path)."""
    if first.size == 0:
        return np.zeros(0, dtype=np.int64)
    return group_codes(first * (int(second.max()) + 1) + second, first.size)[0]


@dataclass(frozen=True)
class _Texts:
    """A string column as integer codes: ``codes`` per row index ``values``. Row group ``b`` holds the
    rows from ``row_starts[b]`` on, and its codes, unique within it, run from ``code_starts[b]``."""

    codes: np.ndarray
    row_starts: np.ndarray
    code_starts: np.ndarray
    dictionaries: list

    @property
    def values(self):
        import pyarrow as pa

        return pa.concat_arrays(self.dictionaries) if self.dictionaries else pa.array([], pa.string())

    def spans(self, first_rows: np.ndarray, last_rows: np.ndarray) -> bool:
        """Whether any of the row ranges ``[first, last]`` crosses from one row group into another."""
        where = lambda rows: np.searchsorted(self.row_starts, rows, side="right")  # noqa: E731
        return bool((where(first_rows) != where(last_rows)).any())

    def take(self, index: np.ndarray) -> "_Texts":
        """The rows ``index`` of the column, as one block of codes (row groups no longer apply)."""
        return _Texts(self.codes[index], np.zeros(1, np.int64), self.code_starts, self.dictionaries)


def _texts(column, *, unify: bool = False) -> _Texts:
    """Codes of a (dictionary-encoded) string column: each row group's dictionary as Parquet stores it,
    offset into one code space; or, with ``unify``, one dictionary for all, by hashing only the
    distinct texts of each row group (pyarrow's dictionary unification), never a string per row."""
    import pyarrow as pa

    if column.null_count:
        raise ValueError("column 'completion' is missing a value")
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    chunks = [c for c in column.chunks if len(c)]
    if not chunks:
        return _Texts(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), [])
    if unify and len(chunks) > 1:
        chunks = pa.table({"c": pa.chunked_array(chunks)}).unify_dictionaries().column("c").chunks
        codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False).astype(np.int64) for c in chunks])
        return _Texts(codes, np.zeros(1, np.int64), np.zeros(1, np.int64), [chunks[0].dictionary])
    code_starts = np.r_[0, np.cumsum([len(c.dictionary) for c in chunks])[:-1]].astype(np.int64)
    row_starts = np.r_[0, np.cumsum([len(c) for c in chunks])[:-1]].astype(np.int64)
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False).astype(np.int64) + start for c, start in zip(chunks, code_starts)])
    return _Texts(codes, row_starts, code_starts, [c.dictionary for c in chunks])


def _class_codes(group: np.ndarray, key: np.ndarray, block_starts: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes of the pairs ``(group, key)``, ordered by group, and each code's group.

    ``group`` is sorted; the keys of one group lie in one block of the key space (``block_starts``).
    A key used by one row only is its own class; the others are ranked within their block, so that
    ``group * R + rank`` (``R``: the most repeated keys of a block) is a small integer label and the
    core's factorisation (``group_codes``) takes its linear path instead of sorting the rows.
    """
    n = group.size
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    size = int(key.max()) + 1
    repeated = np.bincount(key, minlength=size) > 1
    total = np.r_[0, np.cumsum(repeated)]
    before = total[block_starts]
    per_block = np.diff(np.r_[before, total[-1]])
    width = max(1, int(per_block.max()))
    block_of_key = np.repeat(np.arange(block_starts.size), np.diff(np.r_[block_starts, size]))
    # Per key (fewer than rows): its rank among the repeated keys of its block, or -1 if used once.
    key_rank = np.where(repeated, total[:-1] - before[block_of_key], -1)
    rank = key_rank[key]
    label = np.where(rank >= 0, group * width + rank, num_groups * width + np.arange(n))
    codes, labels = group_codes(label, n)
    shared = labels < num_groups * width
    class_group = np.where(shared, labels // width, group[np.where(shared, 0, labels - num_groups * width)])
    if not (class_group[1:] >= class_group[:-1]).all():  # two sorted runs: a stable sort merges them in linear time
        order = np.argsort(class_group, kind="stable")
        position = np.empty_like(order)
        position[order] = np.arange(order.size)
        codes, class_group = position[codes], class_group[order]
    return codes, class_group


def _class_keys(texts: _Texts, answer_key: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's class key code and the key space's blocks: its text (as stored), or
    ``answer_key``'s first group of its text, matched once per distinct text."""
    if answer_key is None:
        return texts.codes, texts.code_starts
    import pandas as pd

    keys = answer_keys(pd.Series(texts.values.to_pylist(), dtype=object), answer_key)
    key_codes = pd.factorize(keys, sort=False)[0].astype(np.int64)
    return key_codes[texts.codes], np.zeros(1, dtype=np.int64)


def _numbers(table, name: str) -> np.ndarray:
    """A float64 column as numpy, nulls as NaN."""
    return np.asarray(table.column(name).to_numpy(), dtype=np.float64)


def _step_codes(step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct steps and each row's index among them; rows come in runs of one step (a shard
    holds one step), so only the runs' values are sorted."""
    if step.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, step[1:] != step[:-1]])
    steps, run_code = np.unique(step[starts], return_inverse=True)
    return steps, np.repeat(run_code, np.diff(np.r_[starts, step.size]))


def step_summaries(table, settings_list: list[Settings]) -> list[dict[str, np.ndarray]]:
    """Per-step summaries (:data:`SUMMARY_COLUMNS`) of the rows of ``table``, one dict per settings.

    ``table`` is a pyarrow Table with :data:`READ_COLUMNS` holding whole steps (all shards of each
    step it contains), ``completion`` dictionary-encoded as read from Parquet. Answer classes are
    built once per answer key and shared by the settings. Every pass over the rows is linear: texts
    are compared through their row group's dictionary (hashed across row groups only when a group's
    rows span several), groups and classes are small-integer labels.
    """
    step = table.column("step").to_numpy().astype(np.int64, copy=False)
    steps, step_code = _step_codes(step)
    group_id = table.column("group_id").to_numpy().astype(np.int64, copy=False)
    if group_id.size and group_id.min() < 0:
        raise ValueError("column 'group_id' must hold integers >= 0")
    if group_id.size and group_id.max() >= 2**31:  # large labels: made dense first, so pairs cannot overflow
        group_id = group_codes(group_id, group_id.size)[0]
    completion = table.column("completion")
    texts = _texts(completion)
    reward = _numbers(table, "reward")
    ref = _numbers(table, "ref_logprob")
    has_policy = table.column("policy_logprob").null_count < table.num_rows
    policy = _numbers(table, "policy_logprob") if has_policy else None
    num_steps = steps.size
    rows = np.bincount(step_code, minlength=num_steps)

    # Groups are (step, group_id); rows that cannot be used, then groups left with one row, are dropped.
    group = _dense(step_code, group_id)
    usable = np.isfinite(reward) & np.isfinite(ref)
    if not usable.all() or np.bincount(group).min(initial=2) < 2:
        usable &= np.bincount(group, weights=usable, minlength=int(group.max(initial=-1)) + 1)[group] >= 2
    index = None if usable.all() else np.flatnonzero(usable)
    if index is not None:
        group = group_codes(group[index], index.size)[0] if index.size else group[:0]
    if group.size and not (group[1:] >= group[:-1]).all():  # a group's rows interleave with others'
        order = np.argsort(group, kind="stable")
        index = order if index is None else index[order]
        group = group[order]
    if index is not None:
        reward, ref, step_code = reward[index], ref[index], step_code[index]
        policy = policy[index] if has_policy else None
    num_groups = int(group.max()) + 1 if group.size else 0
    group_rows = np.bincount(group, minlength=num_groups)
    group_start = np.r_[0, np.cumsum(group_rows)[:-1]] if num_groups else np.zeros(0, np.int64)
    group_step = step_code[group_start]
    group_last = group_start + group_rows - 1
    if num_groups and texts.spans(*((group_start, group_last) if index is None else (index[group_start], index[group_last]))):
        texts = _texts(completion, unify=True)  # a group spans row groups: compare texts across them
    if index is not None:
        texts = texts.take(index)

    def per_step(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        weights = values if mask is None else np.where(mask, values, 0.0)
        return np.bincount(group_step, weights=weights, minlength=num_steps)

    base = {
        "step": steps,
        "rows": rows.astype(np.int64),
        "rows_used": np.bincount(step_code, minlength=num_steps).astype(np.int64),
        "groups": np.bincount(group_step, minlength=num_steps).astype(np.int64),
        "reward_sum": np.bincount(step_code, weights=reward, minlength=num_steps),
    }
    results = []
    by_key: dict[str | None, tuple] = {}
    thresholds: dict[float, np.ndarray] = {}
    for settings in settings_list:
        if settings.answer_key not in by_key:
            by_key[settings.answer_key] = _classes(group, texts, settings.answer_key, reward, ref, policy, num_groups)
        if settings.tau is not None:
            group_tau = np.full(num_groups, threshold_for(reward, settings.tau))
        else:  # the quantile mara_rewards computes in training, on the same rows (as diagnose does)
            if settings.tau_quantile not in thresholds:
                thresholds[settings.tau_quantile] = _grouped_quantile(reward, group, group_rows, float(settings.tau_quantile))
            group_tau = thresholds[settings.tau_quantile]
        summary = _summaries(settings, by_key[settings.answer_key], group_tau, group_rows, group_step, num_steps, per_step)
        results.append({**base, **summary})
    return results


def _classes(group, texts: _Texts, answer_key, reward, ref, policy, num_groups):
    """Per-class group, reward (mean), reference and policy log-masses and sample counts, and which
    groups have a policy log-prob on every row. Classes are ordered by group."""
    key, key_blocks = _class_keys(texts, answer_key)
    cls, class_group = _class_codes(group, key, key_blocks, num_groups)
    num_classes = class_group.size
    class_rows = np.bincount(cls, minlength=num_classes)
    class_reward = np.bincount(cls, weights=reward, minlength=num_classes) / class_rows
    if answer_key is None:
        distinct, distinct_class = cls, None
    else:  # distinct texts inside a class count once each
        distinct, _ = _class_codes(group, texts.codes, texts.code_starts, num_groups)
        distinct_class = np.empty(int(distinct.max(initial=-1)) + 1, dtype=np.int64)
        distinct_class[distinct] = cls  # every row of a distinct text has the same class
    num_distinct = int(distinct.max(initial=-1)) + 1
    distinct_rows = np.bincount(distinct, minlength=num_distinct)

    def logmass(values: np.ndarray) -> np.ndarray:
        mean = np.bincount(distinct, weights=values, minlength=num_distinct) / distinct_rows
        return mean if distinct_class is None else grouped_logsumexp(mean, distinct_class)

    ref_logmass = logmass(ref)
    if policy is None:
        return class_group, class_reward, ref_logmass, None, class_rows, np.zeros(num_groups, dtype=bool)
    policy_ok = np.isfinite(policy)
    group_policy = np.bincount(group, weights=~policy_ok, minlength=num_groups) == 0
    policy_logmass = logmass(np.where(policy_ok, policy, 0.0))
    return class_group, class_reward, ref_logmass, policy_logmass, class_rows, group_policy


def _summaries(settings, cls_data, group_tau, group_rows, group_step, num_steps, per_step) -> dict:
    class_group, class_reward, ref_logmass, policy_logmass, class_rows, group_policy = cls_data
    num_groups = group_rows.size
    if num_groups == 0:
        zeros_i, zeros_f = np.zeros(num_steps, np.int64), np.zeros(num_steps)
        return {name: (zeros_i if kind == "int64" else zeros_f) for name, kind in SUMMARY_COLUMNS.items() if name not in
                ("step", "rows", "rows_used", "groups", "reward_sum")}
    tau_c = group_tau[class_group]
    groups = Segments(class_group, class_group.size)  # classes are ordered by group: one factorisation for every call
    vanilla = kl_target(class_reward, ref_logmass, settings.beta, settings.kl, group_ids=groups)
    mara = mara_target(class_reward - tau_c, ref_logmass, settings.beta, 0.0, settings.kl, group_ids=groups)
    sampled = summarize_targets(class_rows / group_rows[class_group], class_reward, group_tau, group_ids=groups)
    van = summarize_targets(vanilla, class_reward, group_tau, group_ids=groups)
    mar = summarize_targets(mara, class_reward, group_tau, group_ids=groups)
    good = sampled.num_good >= 1
    two = sampled.num_good >= 2
    if policy_logmass is None:
        tv_vanilla = tv_mara = np.zeros(num_groups)
    else:
        policy_prob = grouped_softmax(policy_logmass, groups)
        tv_vanilla = 0.5 * np.bincount(class_group, weights=np.abs(policy_prob - vanilla), minlength=num_groups)
        tv_mara = 0.5 * np.bincount(class_group, weights=np.abs(policy_prob - mara), minlength=num_groups)
    counts = lambda mask: np.bincount(group_step[mask], minlength=num_steps).astype(np.int64)  # noqa: E731
    return {
        "groups_good": counts(good),
        "groups_two_good": counts(two),
        "sampled_good_sum": per_step(sampled.num_good.astype(np.float64), good),
        "sampled_effective_sum": per_step(sampled.effective_good, good),
        "vanilla_effective_sum": per_step(van.effective_good, good),
        "mara_effective_sum": per_step(mar.effective_good, good),
        "vanilla_unimodal": counts(two & ~van.multimodal),
        "mara_unimodal": counts(two & ~mar.multimodal),
        "groups_policy": counts(group_policy),
        "policy_tv_vanilla_sum": per_step(tv_vanilla, group_policy),
        "policy_tv_mara_sum": per_step(tv_mara, group_policy),
    }


def step_means(summaries):
    """Per-step means (:data:`MEAN_COLUMNS`) from a summary frame; NaN where a step has no such group."""
    import pandas as pd

    s = summaries
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = lambda a, b: np.where(s[b].to_numpy() > 0, s[a].to_numpy() / s[b].to_numpy(), np.nan)  # noqa: E731
        return pd.DataFrame(
            {
                "step": s["step"].to_numpy(),
                "rows": s["rows"].to_numpy(),
                "groups": s["groups"].to_numpy(),
                "mean_reward": ratio("reward_sum", "rows_used"),
                "sampled_good_classes": ratio("sampled_good_sum", "groups_good"),
                "sampled_effective_good": ratio("sampled_effective_sum", "groups_good"),
                "vanilla_effective_good": ratio("vanilla_effective_sum", "groups_good"),
                "mara_effective_good": ratio("mara_effective_sum", "groups_good"),
                "vanilla_unimodal_share": ratio("vanilla_unimodal", "groups_two_good"),
                "mara_unimodal_share": ratio("mara_unimodal", "groups_two_good"),
                "policy_tv_vanilla": ratio("policy_tv_vanilla_sum", "groups_policy"),
                "policy_tv_mara": ratio("policy_tv_mara_sum", "groups_policy"),
            }
        )
