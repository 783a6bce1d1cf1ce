"""Figures of the didactic experiments: every panel overlays trained policies on closed-form targets.

Conventions: trained policies are filled bars or solid lines, closed-form targets are black (or
dark) lines/markers, the reference is a dotted grey line, good outcomes (``R >= tau``) are shaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

KL_COLOURS = {"reverse": "tab:blue", "forward": "tab:orange"}
MARA_COLOUR = "tab:green"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shade_good(ax, rewards: np.ndarray, tau: float) -> None:
    good = np.flatnonzero(rewards >= tau)
    if good.size:
        starts = good[np.r_[True, np.diff(good) > 1]]
        ends = good[np.r_[np.diff(good) > 1, True]]
        for lo, hi in zip(starts, ends):
            ax.axvspan(lo - 0.5, hi + 0.5, color="gold", alpha=0.15, lw=0)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_matching(path: Path, outcomes: np.ndarray, bimodal: np.ndarray, fits: dict, rl: dict) -> Path:
    """Paper Fig. 1 analog.

    Args:
        bimodal: ``[K]`` the distribution being fitted.
        fits: ``{policy name: {"reverse": [K], "forward": [K]}}`` trained fits.
        rl: ``{"rewards": [K], "tau": float, "beta": float, "reverse": (trained, target), "forward": (trained, target)}``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(fits) + 1, figsize=(5.2 * (len(fits) + 1), 3.8), sharey=False)
    for ax, (policy_name, fit) in zip(axes, fits.items()):
        ax.fill_between(outcomes, bimodal, step="mid", color="0.85", label="bimodal target p")
        for kl, probs in fit.items():
            ax.plot(outcomes, probs, drawstyle="steps-mid", color=KL_COLOURS[kl], lw=2, label=f"fit minimising {kl} KL")
        ax.set_title(f"Distribution matching, {policy_name} policy")
        ax.set_xlabel("outcome y")
        ax.set_ylabel("probability")
        ax.legend(fontsize=8)
    ax = axes[-1]
    _shade_good(ax, rl["rewards"], rl["tau"])
    for kl in ("reverse", "forward"):
        trained, target = rl[kl]
        ax.plot(outcomes, trained, drawstyle="steps-mid", color=KL_COLOURS[kl], lw=2, label=f"trained, {kl} KL")
        ax.plot(outcomes, target, "k--" if kl == "reverse" else "k:", lw=1.2, label=f"closed-form target, {kl} KL")
    twin = ax.twinx()
    twin.plot(outcomes, rl["rewards"], color="0.5", lw=1, alpha=0.7)
    twin.set_ylabel("reward R(y) (grey)", color="0.4")
    ax.set_title(f"KL-regularised RL on the same two bumps, beta={rl['beta']:g}")
    ax.set_xlabel("outcome y (gold: R >= tau)")
    ax.set_ylabel("probability")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def plot_policy_grid(
    path: Path,
    outcomes: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[str],
    panels: dict,
    rewards: np.ndarray,
    ref_probs: np.ndarray,
    tau: float,
    suptitle: str,
    notes: dict | None = None,
) -> Path:
    """A grid of panels; ``panels[(row, col)]`` is a list of ``(label, trained [K], target [K], colour)``.

    ``notes[(row, col)]``, if given, is printed in the panel's upper right corner.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(3.6 * len(columns), 2.9 * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        for j, col in enumerate(columns):
            ax = axes[i, j]
            _shade_good(ax, rewards, tau)
            ax.plot(outcomes, ref_probs, ":", color="0.45", lw=1, label="reference")
            for label, trained, target, colour in panels[(row, col)]:
                ax.fill_between(outcomes, trained, step="mid", color=colour, alpha=0.45, label=f"trained, {label}")
                ax.plot(outcomes, target, drawstyle="steps-mid", color="k", lw=1, label="closed-form target")
            ax.set_title(f"{row}, {col}", fontsize=9)
            if notes and (row, col) in notes:
                ax.text(0.98, 0.95, notes[(row, col)], transform=ax.transAxes, ha="right", va="top", fontsize=8)
            if i == len(rows) - 1:
                ax.set_xlabel("outcome y")
            if j == 0:
                ax.set_ylabel("probability")
    from matplotlib.patches import Patch

    seen = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    seen[f"good outcomes (R >= {tau:g})"] = Patch(color="gold", alpha=0.3)
    fig.legend(seen.values(), seen.keys(), loc="lower center", ncol=len(seen), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(suptitle)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, path)


def plot_mode_flip(
    path: Path,
    beta_grid: np.ndarray,
    target_share: dict,
    betas: np.ndarray,
    trained_share: dict,
    crossovers: dict,
    high_label: str,
    low_label: str,
) -> Path:
    """Share of the two peaks' probability on the high peak vs beta: closed form (lines), trained (dots).

    ``crossovers[kl] = (beta, how)``: where the two peaks tie, so where the closed-form line crosses 1/2.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for kl, share in target_share.items():
        colour = KL_COLOURS[kl]
        ax.plot(beta_grid, share, color=colour, lw=2, label=f"closed-form target, {kl} KL")
        ax.plot(betas, trained_share[kl], "o", color=colour, mec="k", ms=7, label=f"trained policy, {kl} KL")
        beta_x, how = crossovers[kl]
        if np.isfinite(beta_x):
            ax.axvline(beta_x, color=colour, ls="--", lw=1)
            ax.annotate(f"{kl} crossover\nbeta={beta_x:.3g} ({how})", (beta_x, 0.5), xytext=(6, 10 if kl == "reverse" else -38),
                        textcoords="offset points", fontsize=8, color=colour)
    ax.axhline(0.5, color="0.6", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("KL coefficient beta")
    ax.set_ylabel(f"p({high_label}) / (p({high_label}) + p({low_label}))")
    ax.set_title("The preferred mode flips with beta (crossover: the peaks tie)")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def plot_three_action(path: Path, problems: Sequence, betas: Sequence[float], entries: dict) -> Path:
    """Paper Figs. 3-4: bars are trained policies, black markers the closed-form targets.

    ``entries[(problem index, beta)]`` is a list of ``(label, trained [3], target [3], colour)``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(len(problems), len(betas), figsize=(3.6 * len(betas), 3.0 * len(problems)), squeeze=False)
    for i, problem in enumerate(problems):
        for j, beta in enumerate(betas):
            ax = axes[i, j]
            runs = entries[(i, beta)]
            width = 0.8 / len(runs)
            actions = np.arange(problem.num_outcomes)
            for k, (label, trained, target, colour) in enumerate(runs):
                x = actions - 0.4 + width * (k + 0.5)
                ax.bar(x, trained, width, color=colour, alpha=0.8, label=f"trained, {label}")
                ax.plot(x, target, "k_", ms=14, mew=2.5, label="closed-form target" if k == 0 else None)
            ax.plot(actions, np.exp(problem.ref_logprobs), "o", mfc="none", mec="0.4", ms=8, label="reference")
            ax.set_xticks(actions, [f"y{a}\nR={r:g}" for a, r in zip(actions, problem.rewards)])
            ax.set_ylim(0, 1.05)
            ax.set_title(f"{problem.name}\nbeta={beta:g}", fontsize=9)
            if j == 0:
                ax.set_ylabel("probability")
    handles, labels = axes[-1, -1].get_legend_handles_labels()
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.03))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path)


def plot_convergence(path: Path, steps: np.ndarray, tv: dict, threshold: float) -> Path:
    """TV distance to the closed-form target vs training step, one line per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, values in tv.items():
        ax.plot(steps, values, lw=1.5, label=label)
    ax.axhline(threshold, color="k", ls="--", lw=0.8, label=f"TV = {threshold:g}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("TV(trained policy, closed-form target)")
    ax.set_title("Convergence to the closed-form targets")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, path)
