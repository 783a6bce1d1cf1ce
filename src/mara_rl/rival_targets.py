"""What the rival reward transforms do to the target of the KL-regularised objective.

A reward transform that looks at the other samples of the group (``unlikeliness``, ``pkpo``,
``outcome_batch``) gives an outcome ``y`` a reward that depends on the policy ``pi`` the group is drawn
from. The trainers' update treats that reward as a constant, so its expected step vanishes exactly
where ``pi`` is the Gibbs target of the *expected* transformed reward:

    pi(y) ∝ pi_ref(y) exp(r_pi(y) / beta),   r_pi(y) = E[r_i | y_i = y, the other G-1 samples ~ pi].

That self-consistent target is computed here by damped fixed-point iteration through the core
(:func:`mara_rl.targets.reverse_kl_target`). ``r_pi`` in closed form, for a finite outcome space and a
group of ``G`` samples:

- unlikeliness: ``R(y) (1 - penalty (G-1)/G (P_pi[pi(y') < pi(y)] + P_pi[pi(y') = pi(y)] / 2))``;
- pkpo: ``k E[max(R(y), M)]``, ``M`` the largest reward of ``k - 1`` draws from ``pi``;
- outcome_batch: ``R(y) - coef (G-1)/G pi(y)`` (every outcome its own answer).

``outcome_ucb``'s bonus ``coef / sqrt(N)`` depends on how often the run has seen an answer: as the
counts grow (``N ~ t G pi(y)`` after ``t`` batches) it fades and the target returns to vanilla's.

GRPO's group-mean baseline scales every reward by ``(G-1)/G`` in expectation, for vanilla and MARA
alike; that common factor is left out. Advantage transforms (``passk_advantage``, ``grpo_passk``)
normalise within the group and are not a reward: they have no target of this form.

``python -m mara_rl.rival_targets [OUT_DIR]`` draws the figures (default ``docs/figures``) and prints each
method's target on "1 or 2".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mara_rl.targets import mara_target, reverse_kl_target
from mara_rl.transforms import get_transform

GROUP_SIZE = 16


def expected_rewards(name: str, rewards: np.ndarray, probs: np.ndarray, *, value: float | None = None,
                     group_size: int = GROUP_SIZE) -> np.ndarray:
    """``r_pi(y)`` of transform ``name`` for every outcome (module docstring), ``[K]`` float64."""
    rewards, probs = np.asarray(rewards, np.float64), np.asarray(probs, np.float64)
    transform = get_transform(name)
    knob = transform.default if value is None else value
    others = (group_size - 1) / group_size
    if name == "unlikeliness":
        ordered = np.sort(probs)
        below = np.r_[0.0, np.cumsum(ordered)]
        less = below[np.searchsorted(ordered, probs, "left")]
        tied = below[np.searchsorted(ordered, probs, "right")] - less
        return rewards * (1.0 - knob * others * (less + tied / 2.0))
    if name == "outcome_batch":
        return rewards - knob * others * probs
    if name == "pkpo":
        k = int(knob)
        levels, level_of = np.unique(rewards, return_inverse=True)
        cdf = np.cumsum(np.bincount(level_of.reshape(-1), weights=probs, minlength=levels.size))
        mass_of_max = np.diff(np.r_[0.0, cdf ** (k - 1)])  # P(M = level) for the max of k - 1 draws
        return k * (np.maximum(rewards[:, None], levels[None, :]) * mass_of_max[None, :]).sum(axis=1)
    if transform.kind == "advantage":
        raise ValueError(f"transform {name!r} is an advantage transform: it has no reward target")
    raise ValueError(f"transform {name!r} depends on the run's history, not on the policy alone: no fixed target")


def self_consistent_target(name: str, rewards: np.ndarray, ref_logprobs: np.ndarray, beta: float, *,
                           value: float | None = None, group_size: int = GROUP_SIZE, steps: int = 2000) -> np.ndarray:
    """``pi = reverse_kl_target(r_pi, log pi_ref, beta)`` by damped iteration from ``pi_ref`` with step sizes
    ``min(0.5, 5/(t + 10))`` (in log space), averaged over its second half.

    Where ``r_pi`` jumps, there may be no fixed point: unlikeliness re-ranks two outcomes when they swap
    order, and when the jump exceeds ``beta`` times their log reference ratio the update keeps pushing
    whichever is ahead back; the policy then slides along the switching point (the two equally likely),
    which the shrinking steps and the average approach.
    """
    ref_logprobs = np.asarray(ref_logprobs, np.float64)
    log_pi = ref_logprobs - np.logaddexp.reduce(ref_logprobs)
    average = np.zeros_like(log_pi)
    for step in range(steps):
        target = reverse_kl_target(expected_rewards(name, rewards, np.exp(log_pi), value=value, group_size=group_size),
                                   ref_logprobs, beta)
        with np.errstate(divide="ignore"):
            damping = min(0.5, 5.0 / (step + 10))
            mixed = (1 - damping) * log_pi + damping * np.log(target)
        log_pi = mixed - np.logaddexp.reduce(mixed[np.isfinite(mixed)])
        if step >= steps // 2:
            average += np.exp(log_pi)
    return average / average.sum()


METHODS = (
    ("vanilla", "tab:blue", "-"),
    ("MARA", "tab:red", "-"),
    ("entropy bonus eta=0.01", "tab:gray", "--"),
    ("unlikeliness 0.25", "tab:green", "-"),
    ("outcome_batch 0.5", "tab:purple", "-"),
    ("pkpo k=4", "tab:orange", ":"),
)


def method_targets(rewards: np.ndarray, ref_logprobs: np.ndarray, beta: float, tau: float) -> dict[str, np.ndarray]:
    """The target of each method of :data:`METHODS` at ``beta`` (reverse KL, groups of :data:`GROUP_SIZE`)."""
    return {
        "vanilla": reverse_kl_target(rewards, ref_logprobs, beta),
        "MARA": mara_target(rewards, ref_logprobs, beta, tau),
        "entropy bonus eta=0.01": reverse_kl_target(rewards, ref_logprobs, beta, entropy_coef=0.01),
        "unlikeliness 0.25": self_consistent_target("unlikeliness", rewards, ref_logprobs, beta),
        "outcome_batch 0.5": self_consistent_target("outcome_batch", rewards, ref_logprobs, beta),
        "pkpo k=4": self_consistent_target("pkpo", rewards, ref_logprobs, beta),
    }


def plot_three_action(path: Path, betas: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """R = [0, 1, 1], pi_ref = [0.68, 0.30, 0.02] (paper Fig. 4): the rare correct answer's share vs beta."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mara_rl.toy.problems import three_action_examples

    bandit = three_action_examples()[1]
    betas = np.logspace(-3, 1, 25) if betas is None else betas
    share = {m: [] for m, _, _ in METHODS}
    correct = {m: [] for m, _, _ in METHODS}
    for beta in betas:
        for method, probs in method_targets(bandit.rewards, bandit.ref_logprobs, beta, 1.0).items():
            share[method].append(probs[2] / (probs[1] + probs[2]))
            correct[method].append(probs[1] + probs[2])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, color, style in METHODS:
        axes[0].plot(betas, share[method], color=color, ls=style, label=method)
        axes[1].plot(betas, correct[method], color=color, ls=style, label=method)
    axes[0].axhline(0.5, color="k", lw=0.6, ls=":")
    axes[0].set_ylabel("target P(y3) / P(correct)\n(0.5 = both correct answers equal)")
    axes[1].set_ylabel("target mass on correct answers")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("beta")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("R = [0, 1, 1], pi_ref = [0.68, 0.30, 0.02]: the rare correct y3 in each method's target "
                 "(groups of 16)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return {"betas": betas, **{f"share/{m}": np.array(v) for m, v in share.items()}}


def plot_two_bumps(path: Path, betas: tuple[float, ...] = (0.01, 0.1)) -> dict[str, np.ndarray]:
    """The paper's two-bump problem (``docs/examples/two_bumps.yaml``): each method's target at each beta."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mara_rl.toy.problems import two_bumps_problem

    bandit = two_bumps_problem()
    fig, axes = plt.subplots(1, len(betas), figsize=(5 * len(betas), 3.8), squeeze=False)
    out = {}
    for ax, beta in zip(axes[0], betas):
        for method, probs in method_targets(bandit.rewards, bandit.ref_logprobs, beta, bandit.tau).items():
            color, style = next((c, s) for m, c, s in METHODS if m == method)
            ax.plot(probs, color=color, ls=style, label=method)
            out[f"{beta:g}/{method}"] = probs
        twin = ax.twinx()
        twin.fill_between(np.arange(bandit.rewards.size), bandit.rewards, color="k", alpha=0.08)
        twin.set_ylabel("reward (shaded)", fontsize=7)
        ax.set_title(f"beta = {beta:g}")
        ax.set_xlabel("outcome")
        ax.set_ylabel("target probability")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Two reward bumps (0.75 where pi_ref has mass, 1.0 where it has little): each method's target",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return out


ONE_OR_TWO_REFERENCE = {"invalid": 30, "1": 435, "2": 47}
"""The tiny reference's answers to "1 or 2" in 512 samples (``results/llm/one-or-two-eps1e-7/summary.md``)."""


def one_or_two_table(betas: tuple[float, ...] = (0.001, 0.01, 0.02, 0.03)) -> str:
    """Markdown: each method's target on "1 or 2" read as a bandit over {invalid, 1, 2} with the reference's
    frequencies; normalised entropy of the valid answers (1 = 50/50) and the target's valid mass."""
    counts = np.array(list(ONE_OR_TWO_REFERENCE.values()), np.float64)
    ref, rewards = np.log(counts / counts.sum()), np.array([0.0, 1.0, 1.0])
    lines = ["| method | " + " | ".join(f"beta {b:g}" for b in betas) + " |", "|---" * (len(betas) + 1) + "|"]
    rows: dict[str, list[str]] = {}
    for beta in betas:
        for method, probs in method_targets(rewards, ref, beta, 1.0).items():
            valid = probs[1:] / probs[1:].sum()
            entropy = -(valid * np.log2(np.clip(valid, 1e-300, None))).sum()
            rows.setdefault(method, []).append(f"{entropy:.3f} ({probs[1:].sum():.3f})")
    lines += [f"| {m} | " + " | ".join(v) + " |" for m, v in rows.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mara_rl.rival_targets",
                                     description="Draw the rival methods' targets and print their table on '1 or 2'.")
    parser.add_argument("out", nargs="?", type=Path, default=Path("docs/figures"),
                        help="folder of the two figures (default: docs/figures)")
    out = parser.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)
    plot_three_action(out / "rival_targets_three_action.png")
    plot_two_bumps(out / "rival_targets_two_bumps.png")
    print("target on '1 or 2': normalised entropy of the valid answers (valid mass)")
    print(one_or_two_table())
    print(f"wrote {out}/rival_targets_three_action.png and {out}/rival_targets_two_bumps.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
