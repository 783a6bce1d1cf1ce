"""Text table, JSON and figure for :class:`~mara_rl.diagnose.diagnosis.Diagnosis` results."""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np

from mara_rl.diagnose.diagnosis import PROMPT_COLUMNS, Diagnosis

_TABLE = (
    ("prompt", "prompt", 28),
    ("rows", "num_rows", 5),
    ("classes", "num_classes", 7),
    ("good", "num_good", 4),
    ("tau", "tau", 6),
    ("ref 2/1", "ref_second_to_top", 8),
    ("van top", "vanilla_top_good", 8),
    ("van 2/1", "vanilla_second_to_top", 8),
    ("van eff", "vanilla_effective_good", 7),
    ("MARA top", "mara_top_good", 8),
    ("MARA 2/1", "mara_second_to_top", 8),
    ("MARA eff", "mara_effective_good", 8),
    ("beta_1/2", "beta_half", 9),
)
# Shown when the rollouts carry policy_logprob: how far the policy is from each target.
_POLICY_TABLE = (
    ("pol-van TV", "policy_tv_vanilla", 10),
    ("pol-MARA TV", "policy_tv_mara", 11),
)


def _one_line(text: str) -> str:
    """``text`` with its whitespace runs as single spaces and other control characters escaped
    (``\\x00``, ``\\x1b``): a NUL or an ANSI escape in a prompt must not reach the terminal raw."""
    return "".join(
        f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in " ".join(text.split())
    )


def _middle(text: str, width: int) -> str:
    """``text`` on one line, shortened in the middle: prompts often differ only at the end."""
    text = _one_line(text)
    if len(text) <= width:
        return text
    head = (width - 3) // 2
    return text[:head] + "..." + text[len(text) - (width - 3 - head) :]


def _cell(value, width: int) -> str:
    if isinstance(value, str):
        return _middle(value, width).ljust(width)
    if isinstance(value, (bool, np.bool_)):
        return ("yes" if value else "no").rjust(width)
    if isinstance(value, (int, np.integer)):
        return str(int(value)).rjust(width)
    value = float(value)
    if math.isnan(value):
        return "-".rjust(width)
    if math.isinf(value):
        return "none".rjust(width)
    return f"{value:.3g}".rjust(width)


def format_table(diagnosis: Diagnosis, max_rows: int = 20, rest: str = "") -> str:
    """Per-prompt table: ``2/1`` is the second-best over the best good class, ``-`` where a prompt
    has fewer than two good classes, ``none`` where no beta gives a ratio of one half. ``rest`` follows
    the count of prompts left out (where to find them)."""
    table = _TABLE + (_POLICY_TABLE if "policy_tv_vanilla" in diagnosis.prompts.columns else ())
    header = " ".join(title.rjust(width) if i else title.ljust(width) for i, (title, _, width) in enumerate(table))
    lines = [header, "-" * len(header)]
    shown = diagnosis.prompts.head(max_rows)
    for record in shown.to_dict("records"):
        lines.append(" ".join(_cell(record[column], width) for _, column, width in table))
    hidden = len(diagnosis.prompts) - len(shown)
    if hidden > 0:
        lines.append(f"... {hidden} more prompt(s){rest}")
    return "\n".join(lines)


def _jsonable(value):
    """NaN (not applicable) -> null and inf (no such beta) -> "inf": JSON has neither."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def to_dict(diagnosis: Diagnosis, *, with_classes: bool = True) -> dict:
    """JSON-ready record: config, summary, warnings, per-prompt rows (with their classes)."""
    prompts = diagnosis.prompts.to_dict("records")
    if with_classes:
        columns = [c for c in diagnosis.classes.columns if c not in ("prompt", "prompt_id")]
        # One conversion of the whole table, then dealt out: classes are sorted by prompt.
        records = diagnosis.classes[columns].to_dict("records")
        for prompt_id, record in zip(diagnosis.classes["prompt_id"].tolist(), records):
            prompts[prompt_id].setdefault("classes", []).append(record)
    return _jsonable(
        {
            "config": diagnosis.config,
            "summary": diagnosis.summary,
            "warnings": diagnosis.warnings,
            "columns": PROMPT_COLUMNS,
            "prompts": prompts,
        }
    )


def write_json(
    results: Sequence[Diagnosis], path: str | Path, *, rollouts: str | None = None, extra: dict | None = None
) -> Path:
    """Write ``{"rollouts": source, "results": [one record per beta], **extra}`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"rollouts": rollouts, "results": [to_dict(d) for d in results], **_jsonable(extra or {})}
    path.write_text(json.dumps(record, indent=1, allow_nan=False))
    return path


def plot_classes(results: Sequence[Diagnosis], path: str | Path, *, num_prompts: int = 4, max_classes: int = 8) -> Path:
    """Bar chart per prompt (rows) and beta (columns): reference mass over the observed classes,
    the vanilla target and the MARA target; good classes are marked with ``*``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = results[0]
    prompt_ids = list(range(min(num_prompts, len(first.prompts))))
    fig, axes = plt.subplots(
        len(prompt_ids), len(results), figsize=(3.6 * len(results) + 0.6, 2.6 * len(prompt_ids) + 0.4), squeeze=False
    )
    width = 0.27
    for col, diagnosis in enumerate(results):
        classes = diagnosis.classes
        for row, prompt_id in enumerate(prompt_ids):
            ax = axes[row][col]
            frame = classes[classes["prompt_id"] == prompt_id].head(max_classes)
            x = np.arange(len(frame))
            ax.bar(x - width, frame["ref_prob"], width, label="reference", color="0.65")
            ax.bar(x, frame["vanilla"], width, label=f"vanilla ({diagnosis.config['kl']} KL)", color="tab:red")
            ax.bar(x + width, frame["mara"], width, label="MARA", color="tab:blue")
            labels = [
                (_one_line(str(a))[:10] or "''") + ("*" if good else "")
                for a, good in zip(frame["answer"], frame["good"])
            ]
            ax.set_xticks(x, labels, fontsize=8, rotation=30 if len(frame) > 4 else 0)
            ax.set_ylim(0, 1.05)
            title = _middle(str(diagnosis.prompts["prompt"].iloc[prompt_id]), 40)
            ax.set_title(f"{title}\nbeta={diagnosis.config['beta']:g}", fontsize=8)
            if col == 0:
                ax.set_ylabel("probability over classes", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="upper right")
    fig.suptitle("Target over the observed answer classes (* = good, reward >= tau)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


_STEP_TABLE = (
    ("step", "step", 9),
    ("rows", "rows", 7),
    ("groups", "groups", 6),
    ("reward", "mean_reward", 7),
    ("sampled good", "sampled_good_classes", 12),
    ("sampled eff", "sampled_effective_good", 11),
    ("van eff", "vanilla_effective_good", 7),
    ("MARA eff", "mara_effective_good", 8),
    ("van uni", "vanilla_unimodal_share", 7),
    ("MARA uni", "mara_unimodal_share", 8),
)


def evenly_spaced(count: int, limit: int) -> np.ndarray:
    """At most ``limit`` indices out of ``range(count)``, evenly spaced, the first and the last included."""
    if count <= limit:
        return np.arange(count)
    if limit <= 1:
        return np.arange(count)[-limit:] if limit else np.zeros(0, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, count - 1, limit)).astype(np.int64))


def format_steps(means, max_rows: int = 20) -> str:
    """Per-step table of :func:`mara_rl.diagnose.training.step_means`, at most ``max_rows`` steps evenly spaced."""
    policy = bool(np.isfinite(means["policy_tv_vanilla"].to_numpy()).any())
    table = _STEP_TABLE + (_POLICY_TABLE if policy else ())
    header = " ".join(title.rjust(width) for title, _, width in table)
    lines = [header, "-" * len(header)]
    shown = means.iloc[evenly_spaced(len(means), max_rows)]
    for record in shown.to_dict("records"):
        lines.append(" ".join(_cell(record[column], width) for _, column, width in table))
    if len(shown) < len(means):
        lines.append(f"({len(shown)} of {len(means)} steps shown, evenly spaced; --max-rows N shows more, --json PATH writes all)")
    return "\n".join(lines)


def plot_training(curves: Sequence[tuple[dict, object]], path: str | Path, *, title: str = "") -> Path:
    """The record over training, one point per step: the policy's sampled good classes beside the
    effective number of good classes of the vanilla and the MARA target (top), the share of groups
    whose target is unimodal by construction (middle), the mean reward and, with policy log-probs,
    the policy's total variation from each target (bottom).

    ``curves``: one ``(settings dict, step_means frame)`` per beta; the sampled curves do not depend
    on beta and are drawn once.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = curves[0][1]
    policy = bool(np.isfinite(first["policy_tv_vanilla"].to_numpy()).any())
    panels = 4 if policy else 3
    fig, axes = plt.subplots(panels, 1, figsize=(8, 2.3 * panels + 0.6), sharex=True, squeeze=False)
    axes = axes[:, 0]
    steps = first["step"].to_numpy()
    marker = "o" if len(steps) <= 40 else None
    styles = ["-", "--", ":", "-."]
    axes[0].plot(steps, first["sampled_good_classes"], color="0.45", ls=":", lw=1.5, zorder=3, label="policy: distinct good classes sampled")
    axes[0].plot(steps, first["sampled_effective_good"], color="black", lw=1.5, marker=marker, ms=3, label="policy: exp(entropy) of its good samples")
    for k, (settings, means) in enumerate(curves):
        style = styles[k % len(styles)]
        tag = f" (beta={settings['beta']:g})" if len(curves) > 1 else ""
        axes[0].plot(steps, means["vanilla_effective_good"], color="tab:red", ls=style, lw=1.5, label=f"vanilla target{tag}")
        axes[0].plot(steps, means["mara_effective_good"], color="tab:blue", ls=style, lw=1.5, label=f"MARA target{tag}")
        axes[1].plot(steps, means["vanilla_unimodal_share"], color="tab:red", ls=style, label=f"vanilla{tag}")
        axes[1].plot(steps, means["mara_unimodal_share"], color="tab:blue", ls=style, label=f"MARA{tag}")
        if policy:
            axes[3].plot(steps, means["policy_tv_vanilla"], color="tab:red", ls=style, label=f"policy vs vanilla target{tag}")
            axes[3].plot(steps, means["policy_tv_mara"], color="tab:blue", ls=style, label=f"policy vs MARA target{tag}")
    axes[0].set_ylabel("effective number of\ngood answer classes", fontsize=8)
    axes[1].set_ylabel("share of groups unimodal\nby construction", fontsize=8)
    axes[1].set_ylim(-0.05, 1.05)
    axes[2].plot(steps, first["mean_reward"], color="tab:green", marker=marker, ms=3)
    axes[2].set_ylabel("mean reward", fontsize=8)
    if policy:
        axes[3].set_ylabel("total variation", fontsize=8)
        axes[3].set_ylim(-0.05, 1.05)
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    axes[-1].set_xlabel("training step")
    settings = curves[0][0]
    tau = f"tau={settings['tau']:g}" if settings.get("tau") is not None else f"tau = reward quantile {settings['tau_quantile']:g}"
    fig.suptitle(f"{title}\n{settings['kl']} KL, {tau}; mean over prompt groups with a good answer".strip(), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
