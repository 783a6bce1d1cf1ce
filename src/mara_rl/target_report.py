"""Side-by-side report of the vanilla and MARA targets for a small outcome set (``mara targets``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from mara_rl import targets as T

BAR_LIMIT = 12
"""Up to this many outcomes the figure draws bars with a tick per outcome; above it, step lines."""
DRAW_LIMIT = 2000
"""Above this many outcomes the figure bins consecutive outcomes into at most this many bins."""

COLUMNS = (
    ("reverse", "reverse KL"),
    ("forward", "forward KL"),
    ("mara_reverse", "MARA (reverse)"),
    ("mara_forward", "MARA (forward)"),
)


@dataclass
class BetaReport:
    beta: float
    probs: dict[str, np.ndarray]
    summaries: dict[str, T.TargetSummary]
    forward_multiplier: float


@dataclass
class TargetReport:
    rewards: np.ndarray
    ref_probs: np.ndarray
    tau: float
    labels: list[str]
    per_beta: list[BetaReport] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "labels": self.labels,
            "rewards": self.rewards.tolist(),
            "ref_probs": self.ref_probs.tolist(),
            "tau": self.tau,
            "betas": [
                {
                    "beta": item.beta,
                    "forward_multiplier": item.forward_multiplier,
                    "targets": {name: item.probs[name].tolist() for name, _ in COLUMNS},
                    "summaries": {
                        name: {
                            "entropy": s.entropy,
                            "mass_above_tau": s.mass_above_tau,
                            "effective_good": s.effective_good,
                            "multimodal": s.multimodal,
                            "sentence": s.sentence,
                        }
                        for name, s in item.summaries.items()
                    },
                }
                for item in self.per_beta
            ],
        }


SPEC_KEYS = ("rewards", "ref_probs", "ref_logprobs", "betas", "beta", "tau", "labels")


def load_spec(path: str | Path) -> dict:
    """Read a JSON or YAML file with ``rewards`` and ``ref_probs`` or ``ref_logprobs``, and optionally
    ``betas`` (or ``beta``), ``tau`` and ``labels``. Values are checked by :func:`number_list` and
    :func:`number` where they are used; here only the file and its keys are."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"spec file {path} does not exist")
    if path.is_dir():
        raise ValueError(f"spec file {path} is a directory")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"spec file {path} is not UTF-8 text") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"spec file {path} is not valid YAML: {getattr(err, 'problem', None) or err}{where}") from None
    else:
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"spec file {path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"spec file {path} must be a mapping with a 'rewards' list, got {type(spec).__name__}")
    unknown = sorted(str(key) for key in spec if key not in SPEC_KEYS)
    if unknown:
        raise ValueError(f"spec file {path}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(SPEC_KEYS)}")
    if "betas" in spec and "beta" in spec:
        raise ValueError(f"spec file {path}: give 'betas' (a list) or 'beta' (a number), not both")
    return spec


def number(value, name: str, *, finite: bool = True) -> float:
    """``value`` as a float; accepts numbers and numeric strings (YAML reads ``1e-3`` as a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, np.number)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        out = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if finite and not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def number_list(values, name: str, *, finite: bool = True) -> list[float]:
    """A non-empty list of numbers (see :func:`number`), e.g. ``rewards`` from a spec file or a flag."""
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{name} must be a list of numbers, got {values!r}")
    if not values:
        raise ValueError(f"{name} must not be empty")
    return [number(x, f"{name}[{i}]", finite=finite) for i, x in enumerate(values)]


def ref_logprobs_from(ref_probs: Sequence[float] | None, ref_logprobs: Sequence[float] | None, size: int) -> np.ndarray:
    """Reference log-probabilities from exactly one of probabilities or log-probabilities."""
    if (ref_probs is None) == (ref_logprobs is None):
        raise ValueError("give exactly one of ref_probs and ref_logprobs")
    if ref_logprobs is not None:
        values = np.asarray(ref_logprobs, dtype=np.float64)
        if np.isnan(values).any() or np.isposinf(values).any():
            raise ValueError("ref_logprobs must be numbers or -inf (probability 0), not NaN or +inf")
    else:
        probs = np.asarray(ref_probs, dtype=np.float64)
        if (probs < 0).any() or not np.isfinite(probs).all():
            raise ValueError("ref_probs must be finite and non-negative")
        with np.errstate(divide="ignore"):
            values = np.log(probs)
    if values.shape != (size,):
        raise ValueError(f"the reference needs {size} entries (one per reward), got {values.size}")
    if np.isneginf(values).all():
        raise ValueError("the reference gives probability 0 to every outcome")
    return values


def build_report(rewards, ref_logprobs, betas: Sequence[float], tau: float | None = None, labels=None) -> TargetReport:
    """Vanilla and MARA targets (both KL directions) at each beta, with their summaries.

    ``tau`` defaults to the best reward (only the best outcomes count as good).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    ref_logprobs = np.asarray(ref_logprobs, dtype=np.float64)
    if len(betas) == 0:
        raise ValueError("give at least one beta")
    tau = float(rewards.max()) if tau is None else float(tau)
    if math.isnan(tau) or tau > rewards.max():
        # No outcome would be good: MARA would leave every target unchanged.
        raise ValueError(f"tau = {tau:g} is above every reward, so MARA would change nothing; "
                         f"give tau <= the best reward {rewards.max():g}")
    labels = [f"y{i}" for i in range(rewards.size)] if labels is None else [str(x) for x in labels]
    if len(labels) != rewards.size:
        raise ValueError(f"labels needs {rewards.size} entries, got {len(labels)}")
    ref_probs = np.exp(ref_logprobs - np.logaddexp.reduce(ref_logprobs))
    report = TargetReport(rewards, ref_probs, tau, labels)
    for beta in betas:
        forward, multiplier = T.forward_kl_target(rewards, ref_logprobs, beta, return_multiplier=True)
        probs = {
            "reverse": T.reverse_kl_target(rewards, ref_logprobs, beta),
            "forward": forward,
            "mara_reverse": T.mara_target(rewards, ref_logprobs, beta, tau, kl="reverse"),
            "mara_forward": T.mara_target(rewards, ref_logprobs, beta, tau, kl="forward"),
        }
        summaries = {name: T.describe_target(p, rewards, tau) for name, p in probs.items()}
        report.per_beta.append(BetaReport(float(beta), probs, summaries, multiplier))
    return report


def format_report(report: TargetReport, max_rows: int = 40) -> str:
    """Plain-text tables, one per beta."""
    width = max(8, max(len(label) for label in report.labels) + 1)
    lines = []
    for item in report.per_beta:
        lines.append(f"beta = {item.beta:g}   (tau = {report.tau:g}; forward-KL multiplier Lambda = {item.forward_multiplier:.6g})")
        header = f"{'outcome':<{width}}{'reward':>9}{'pi_ref':>10}" + "".join(f"{title:>16}" for _, title in COLUMNS)
        lines.append(header)
        lines.append("-" * len(header))
        rows = range(report.rewards.size)
        if report.rewards.size > max_rows:
            rows = np.argsort(-item.probs["reverse"] - item.probs["mara_reverse"])[:max_rows]
            lines.append(f"(showing the {max_rows} most likely of {report.rewards.size} outcomes)")
        for i in rows:
            cells = "".join(f"{item.probs[name][i]:>16.4g}" for name, _ in COLUMNS)
            lines.append(f"{report.labels[i]:<{width}}{report.rewards[i]:>9.4g}{report.ref_probs[i]:>10.4g}{cells}")
        lines.append("-" * len(header))
        for key, title in (("entropy", "entropy (nats)"), ("mass_above_tau", "mass R >= tau"), ("effective_good", "eff. # good")):
            cells = "".join(f"{getattr(item.summaries[name], key):>16.4g}" for name, _ in COLUMNS)
            lines.append(f"{title:<{width + 19}}{cells}")
        for name, title in COLUMNS:
            lines.append(f"  {title}: {item.summaries[name].sentence}")
        lines.append("")
    return "\n".join(lines)


def _binned(values: np.ndarray, size: int, reduce) -> np.ndarray:
    """``reduce`` over consecutive bins of ``size`` outcomes (the last bin may be shorter)."""
    padded = np.full(-(-values.size // size) * size, np.nan)
    padded[: values.size] = values
    return reduce(padded.reshape(-1, size), axis=1)


def plot_report(report: TargetReport, path: str | Path) -> Path:
    """One panel per beta: pi_ref and the four targets over the outcomes, rewards on top.

    Up to ``BAR_LIMIT`` outcomes are bars; more are step lines, and above ``DRAW_LIMIT`` outcomes
    consecutive outcomes are binned (probability mass per bin, best reward per bin), so the drawing
    cost stays flat: a figure finer than its pixels shows nothing more.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k = report.rewards.size
    n = len(report.per_beta)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n + 0.6, 5.2), squeeze=False, sharex=True,
                             gridspec_kw={"height_ratios": [1, 3]})
    colors = {"ref": "0.6", "reverse": "tab:blue", "forward": "tab:orange", "mara_reverse": "tab:green", "mara_forward": "tab:red"}
    bin_size = 1 if k <= BAR_LIMIT else -(-k // DRAW_LIMIT)
    x = _binned(np.arange(k, dtype=np.float64), bin_size, np.nanmean)
    rewards = _binned(report.rewards, bin_size, np.nanmax)
    good = rewards >= report.tau
    per = "" if bin_size == 1 else f" per bin of {bin_size}"
    for col, item in enumerate(report.per_beta):
        top, ax = axes[0, col], axes[1, col]
        if k <= BAR_LIMIT:
            top.bar(x, rewards, color=np.where(good, "tab:green", "0.75"), width=0.8)
        else:  # two step-shaped polygons instead of one bar patch per outcome
            top.fill_between(x, np.where(good, rewards, 0.0), step="mid", color="tab:green", lw=0)
            top.fill_between(x, np.where(good, 0.0, rewards), step="mid", color="0.75", lw=0)
        top.axhline(report.tau, color="k", lw=0.8, ls="--")
        top.set_title(f"beta = {item.beta:g}")
        top.set_ylabel(("reward" + (" (best" + per + ")" if per else "")) if col == 0 else "")
        series = [("ref", "pi_ref", report.ref_probs)] + [(name, title, item.probs[name]) for name, title in COLUMNS]
        series = [(key, title, _binned(p, bin_size, np.nansum)) for key, title, p in series]
        if k <= BAR_LIMIT:
            w = 0.8 / len(series)
            for j, (key, title, p) in enumerate(series):
                ax.bar(x + (j - (len(series) - 1) / 2) * w, p, width=w, color=colors[key], label=title)
        else:
            for key, title, p in series:
                ax.step(x, p, where="mid", color=colors[key], label=title, lw=2.0 if key == "ref" else 1.4,
                        ls=":" if key == "ref" else "-")
        ax.set_ylim(0, 1.05 * max(max(p.max() for _, _, p in series), 1e-12))
        ax.set_xlabel("outcome")
        ax.set_ylabel("probability" + per if col == 0 else "")
        if k <= BAR_LIMIT:
            ax.set_xticks(x, report.labels, rotation=0 if k <= 6 else 45)
    handles, names = axes[1, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=9, frameon=False)
    fig.suptitle(f"Optimal targets of KL-regularised RL: vanilla vs MARA (tau = {report.tau:g}, dashed; green: R >= tau)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
