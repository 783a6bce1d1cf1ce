"""The anti-collapse methods a sweep compares, by name, and the comparison it writes.

A method label is a name, or ``name=value`` for one setting of the method's knob:

- ``vanilla`` (GRPO as it is) and ``mara`` (MARA at the sweep's ``mara_tau``): no knob;
- ``entropy=c``: TRL's entropy bonus, ``entropy_coef = c``;
- ``adaptive_entropy=h``: TRL's adaptive entropy control (``use_adaptive_entropy``) with
  ``entropy_target = h`` nats (TRL's other adaptive defaults);
- every transform of :data:`mara_rl.transforms.TRANSFORMS` (``unlikeliness=0.25``, ``pkpo=4``, ...),
  applied by the trainers' ``reward_transform``.

A bare name with a knob expands to the settings the method is compared at: the value its paper or
engine recommends and one on each side (:func:`expand_methods`). A larger beta and forward KL alone
(the f-divergence route of DPH-RL, arXiv 2509.07430) are the sweep's own beta and KL-direction axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Knob:
    """A method's one knob: the trainer field it sets, the recommended value, the compared settings."""

    field: str
    default: float
    settings: tuple[float, ...]
    source: str


# The entropy bonus has no recommended coefficient in TRL or verl (both default to 0; verl's older
# recipes used 1e-3): one decade either side of 1e-2 spans "no effect" to "flattens the 90/10 prior".
TRAINER_METHODS: dict[str, Knob | None] = {
    "vanilla": None,
    "mara": None,
    "entropy": Knob("entropy_coef", 0.01, (0.001, 0.01, 0.1), "TRL entropy_coef"),
    "adaptive_entropy": Knob("entropy_target", 0.2, (0.1, 0.2, 0.4), "TRL use_adaptive_entropy (Skywork-OR1)"),
}


def method_names() -> tuple[str, ...]:
    """Every method a sweep can run: the trainer-level ones, then the registered transforms."""
    from mara_rl.transforms import TRANSFORMS

    return (*TRAINER_METHODS, *sorted(TRANSFORMS))


def knob(name: str) -> Knob | None:
    """The knob of method ``name`` (``None`` for vanilla and MARA); ``ValueError`` for an unknown name."""
    if name in TRAINER_METHODS:
        return TRAINER_METHODS[name]
    from mara_rl.transforms import TRANSFORMS

    if name not in TRANSFORMS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(method_names())}")
    t = TRANSFORMS[name]
    return Knob(t.knob, t.default, t.settings, t.reference) if len(t.settings) > 1 else None


def parse_label(label: str) -> tuple[str, float | None]:
    """``"pkpo=4"`` -> ``("pkpo", 4.0)``; ``"vanilla"`` -> ``("vanilla", None)``. Checks the name and value."""
    name, _, value = str(label).partition("=")
    spec = knob(name)
    if not value:
        return name, None
    if spec is None:
        raise ValueError(f"method {name!r} has no knob to set, got {label!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"method {label!r}: {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"method {label!r}: the knob must be a finite number >= 0")
    return name, number


def expand_methods(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Labels of the runs: a bare name with a knob becomes one label per compared setting."""
    labels: list[str] = []
    for label in names:
        name, value = parse_label(label)
        spec = knob(name)
        if value is not None or spec is None:
            labels.append(label if value is None else f"{name}={value:g}")
        else:
            labels.extend(f"{name}={v:g}" for v in spec.settings)
    if len(set(labels)) != len(labels):
        raise ValueError(f"methods repeat a setting: {labels}")
    return tuple(labels)


def config_kwargs(label: str, mara_tau: float) -> dict[str, Any]:
    """The ``MaraGRPOConfig`` fields that switch method ``label`` on."""
    name, value = parse_label(label)
    if name == "vanilla":
        return {}
    if name == "mara":
        return {"mara": True, "mara_tau": mara_tau}
    if name == "entropy":
        return {"entropy_coef": TRAINER_METHODS["entropy"].default if value is None else value}
    if name == "adaptive_entropy":
        return {"use_adaptive_entropy": True,
                "entropy_target": TRAINER_METHODS["adaptive_entropy"].default if value is None else value}
    return {"reward_transform": name, "reward_transform_value": value}


# ---- the comparison: fronts, best settings, Welch tests ------------------------------------------

REWARD_BAR = 0.95
"""A setting counts as keeping the task only if its mean reward (share of valid answers) is at least this."""


def _cells(results: list[dict[str, Any]]) -> dict[tuple[str, float, str], list[dict[str, Any]]]:
    cells: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for r in results:
        cells.setdefault((r["method"], r["beta"], r["kl"]), []).append(r)
    return cells


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def best_settings(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method family, the (setting, beta, KL) cell with the highest mean entropy among those whose
    mean reward is at least :data:`REWARD_BAR` (else the highest mean reward), with a Welch t-test of
    its per-seed entropies against MARA's best cell.

    Each row: family, label, beta, kl, seeds, reward, entropy (means), entropy_sd, entropy_min/max,
    breakdowns (runs through an all-invalid evaluation), p_vs_mara (``nan`` without two seeds each).
    """
    from scipy.stats import ttest_ind

    rows = []
    by_family: dict[str, list[tuple[tuple[str, float, str], list[dict[str, Any]]]]] = {}
    for key, runs in _cells(results).items():
        by_family.setdefault(parse_label(key[0])[0], []).append((key, runs))
    for family, cells in by_family.items():
        def score(cell):
            runs = cell[1]
            reward, entropy = _mean([r["reward"] for r in runs]), _mean([r["entropy"] for r in runs])
            return (reward >= REWARD_BAR, entropy if reward >= REWARD_BAR else reward)

        (label, beta, kl), runs = max(cells, key=score)
        entropies = [r["entropy"] for r in runs]
        rows.append({
            "family": family, "label": label, "beta": beta, "kl": kl, "seeds": len(runs),
            "reward": _mean([r["reward"] for r in runs]), "entropy": _mean(entropies),
            "entropy_sd": _sd(entropies), "entropy_min": min(entropies), "entropy_max": max(entropies),
            "breakdowns": sum(bool(r["all_invalid"]) for r in runs), "entropies": entropies,
        })
    mara = next((r for r in rows if r["family"] == "mara"), None)
    for row in rows:
        if mara is None or row is mara or len(row["entropies"]) < 2 or len(mara["entropies"]) < 2:
            row["p_vs_mara"] = float("nan")
        else:
            p = ttest_ind(row["entropies"], mara["entropies"], equal_var=False).pvalue
            row["p_vs_mara"] = float(p)  # nan when both samples are constant
    order = {name: i for i, name in enumerate(method_names())}
    return sorted(rows, key=lambda r: order.get(r["family"], len(order)))


def best_settings_by_cell(results: list[dict[str, Any]]) -> dict[tuple[float, str], list[dict[str, Any]]]:
    """:func:`best_settings` within each (beta, KL direction) of the sweep: every method at the same
    objective, its p-value against MARA at that beta and direction."""
    by_cell: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for r in results:
        by_cell.setdefault((r["beta"], r["kl"]), []).append(r)
    return {cell: best_settings(by_cell[cell]) for cell in sorted(by_cell, key=lambda c: (c[1] != "reverse", c))}


def _sd(values: list[float]) -> float:
    if len(values) < 2:
        return float("nan")
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def write_comparison(results: list[dict[str, Any]], path: Path, planned: int | None = None,
                     by_cell: dict[tuple[float, str], list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """``methods.md`` at ``path``: the best setting of every method and each run's breakdown count.

    ``planned``: the size of the sweep's grid, to say how much of it the table rests on.
    """
    rows = best_settings(results)
    done = f"{len(results)} of {planned} planned runs finished. " if planned is not None else ""
    lines = ["# Anti-collapse methods on '1 or 2': best setting of each", "",
             f"{done}Methods: {', '.join(sorted({r['method'] for r in results}))}.", "",
             f"Best setting: the (setting, beta, KL) cell of highest mean answer entropy among those with mean "
             f"reward >= {REWARD_BAR} (else of highest reward). Entropy is the normalised entropy of the valid "
             "answers (1 = 50/50). p: Welch t-test of the per-seed entropies against MARA's best cell "
             "(in-sample maxima on both sides: read small p as a difference, not its size).", "",
             "| method | best setting | beta | KL | seeds | reward | entropy mean | entropy sd | entropy min-max | "
             "runs through all-invalid | p vs MARA |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = "-" if math.isnan(r["p_vs_mara"]) else f"{r['p_vs_mara']:.2g}"
        sd = "-" if math.isnan(r["entropy_sd"]) else f"{r['entropy_sd']:.3f}"
        lines.append(f"| {r['family']} | {r['label']} | {r['beta']:g} | {r['kl']} | {r['seeds']} | {r['reward']:.3f} | "
                     f"{r['entropy']:.3f} | {sd} | {r['entropy_min']:.3f}-{r['entropy_max']:.3f} | "
                     f"{r['breakdowns']} | {p} |")
    by_cell = best_settings_by_cell(results) if by_cell is None else by_cell
    if len(by_cell) > 1:
        lines += _by_cell_lines(by_cell)
    lines += ["", "## Every run", "", "| run | reward | entropy | lowest valid rate seen | all-invalid |", "|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: r["name"]):
        lines.append(f"| {r['name']} | {r['reward']:.3f} | {r['entropy']:.3f} | {r['min_valid_rate']:.3f} | "
                     f"{'yes' if r['all_invalid'] else 'no'} |")
    path.write_text("\n".join(lines) + "\n")
    return rows


def _by_cell_lines(by_cell: dict[tuple[float, str], list[dict[str, Any]]]) -> list[str]:
    """The best setting of each method at each (beta, KL): a method by cell matrix."""
    cells = list(by_cell)
    families = [n for n in method_names() if any(r["family"] == n for rows in by_cell.values() for r in rows)]
    lines = ["", "## At each beta and KL direction", "",
             "The same choice within each (beta, KL) cell, so that every method is compared at the same objective. "
             "Each entry: entropy mean (reward), the best setting's knob, p: Welch's test against MARA in that cell; "
             "`*`: no setting reached the reward bar (the highest-reward setting is shown).", "",
             "| method | " + " | ".join(f"beta {b:g} {k}" for b, k in cells) + " |",
             "|---|" + "---|" * len(cells)]
    for family in families:
        entries = []
        for cell in cells:
            row = next((r for r in by_cell[cell] if r["family"] == family), None)
            if row is None:
                entries.append("")
                continue
            value = parse_label(row["label"])[1]
            setting = "" if value is None else f" {value:g}"
            p = "" if math.isnan(row["p_vs_mara"]) else f" p {row['p_vs_mara']:.2g}"
            bar = "" if row["reward"] >= REWARD_BAR else "*"
            entries.append(f"{row['entropy']:.3f} ({row['reward']:.3f}){bar}{setting}{p}")
        lines.append(f"| {family} | " + " | ".join(entries) + " |")
    return lines


def plot_by_beta(by_cell: dict[tuple[float, str], list[dict[str, Any]]], reference: dict[str, Any], path: Path) -> None:
    """Each method's best setting at each beta (``by_cell``, :func:`best_settings_by_cell`): answer entropy (seed
    mean, min-max bar) against beta, one panel per KL direction; hollow markers miss the reward bar;
    dashed: the reference model's entropy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directions = [k for k in ("reverse", "forward") if any(c[1] == k for c in by_cell)]
    families = [n for n in method_names() if any(r["family"] == n for rows in by_cell.values() for r in rows)]
    fig, axes = plt.subplots(1, len(directions), figsize=(5.6 * len(directions) + 1.8, 4.6), squeeze=False)
    for ax, kl in zip(axes[0], directions):
        betas = sorted(b for b, k in by_cell if k == kl)
        for i, family in enumerate(families):
            rows = [(b, next((r for r in by_cell[(b, kl)] if r["family"] == family), None)) for b in betas]
            rows = [(b, r) for b, r in rows if r is not None]
            if not rows:
                continue
            color = _family_color(family)
            x = [b * (1.0 + 0.015 * (i - len(families) / 2)) for b, _ in rows]  # nudged so that bars do not hide each other
            y = [r["entropy"] for _, r in rows]
            err = [[r["entropy"] - r["entropy_min"] for _, r in rows], [r["entropy_max"] - r["entropy"] for _, r in rows]]
            ax.errorbar(x, y, yerr=err, color=color, lw=1.4, marker="o", ms=5, capsize=2, label=family)
            missed = [(xi, yi) for xi, yi, (_, r) in zip(x, y, rows) if r["reward"] < REWARD_BAR]
            if missed:
                ax.scatter(*zip(*missed), s=70, facecolors="white", edgecolors=color, zorder=3)
        ax.axhline(reference["entropy"], color="k", ls="--", lw=0.9, label="reference model")
        ax.set_xscale("log")
        ax.set_xlabel("beta")
        ax.set_ylabel("normalised entropy of valid answers (1 = 50/50)")
        ax.set_title(f"{kl} KL: each method's best setting at each beta")
        ax.set_ylim(-0.03, 1.05)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def _family_color(family: str) -> str:
    palette = ["tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan",
               "tab:orange", "black", "gold"]
    rivals = [n for n in method_names() if n not in ("vanilla", "mara")]
    return {"mara": "tab:red", "vanilla": "tab:blue"}.get(family) or palette[rivals.index(family) % len(palette)]


def plot_fronts(results: list[dict[str, Any]], reference: dict[str, Any], path: Path) -> None:
    """Reward vs answer entropy: one point per (setting, beta, KL) cell (seed means), each family's Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mara_rl.llm.one_or_two import pareto_front

    families: dict[str, list[tuple[float, float]]] = {}
    for (label, _beta, _kl), runs in _cells(results).items():
        point = (_mean([r["reward"] for r in runs]), _mean([r["entropy"] for r in runs]))
        families.setdefault(parse_label(label)[0], []).append(point)
    order = [n for n in method_names() if n in families]
    fig, ax = plt.subplots(figsize=(7.0, 4.8))
    for family in order:
        color = _family_color(family)
        points = families[family]
        ax.scatter([p[1] for p in points], [p[0] for p in points], color=color, s=22, alpha=0.6, edgecolors="none")
        front = pareto_front(points)
        ax.plot([p[1] for p in front], [p[0] for p in front], color=color, lw=1.6, marker="o", ms=5, label=family)
    ax.scatter(reference["entropy"], reference["reward"], c="k", marker="*", s=120, label="reference model")
    ax.set_xlabel("normalised entropy of valid answers (1 = uniform over {1, 2})")
    ax.set_ylabel("mean reward (share of valid answers)")
    ax.set_title('"1 or 2": each method\'s reward-vs-entropy front\n(points: seed means per setting, beta, KL)')
    ax.set_xlim(-0.03, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
