"""Didactic training loop: steps per second, and TV distance to the closed-form target vs steps.

Runs the 8 settings of the binary-interval experiment (paper Fig. 5: reverse/forward KL,
beta in {0.01, 1}, vanilla/MARA) on K = 100 outcomes with batch 32:

1. speed: all 8 runs batched in one policy (what the experiments do) vs the baseline of the
   same 8 runs trained one after another, same steps; prints steps/s and the ratio;
2. convergence: TV(trained, closed-form target) of every run at several step counts.

Usage: python benchmarks/bench_toy.py [--steps 2000] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

from mara_rl.toy.policies import CategoricalPolicy
from mara_rl.toy.problems import binary_interval_problem
from mara_rl.toy.train import RunSpec, TrainConfig, total_variation, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    bandit = binary_interval_problem()
    runs = [RunSpec(bandit, beta, kl, mara) for kl in ("reverse", "forward") for beta in (0.01, 1.0) for mara in (False, True)]
    config = TrainConfig(steps=args.steps, seed=args.seed, record_every=max(1, args.steps // 20))
    k = bandit.num_outcomes

    batched = train(CategoricalPolicy(np.zeros((len(runs), k))), runs, config)
    sequential_seconds = sum(train(CategoricalPolicy(np.zeros((1, k))), [run], config).seconds for run in runs)

    run_steps = len(runs) * args.steps
    print(f"## Speed ({len(runs)} runs x {args.steps} steps, batch {config.batch_size}, K={k}, CPU)\n")
    print("| loop | seconds | steps/s (per run) | run-steps/s | ratio |")
    print("|---|---|---|---|---|")
    print(f"| sequential, one run at a time (baseline) | {sequential_seconds:.2f} | {args.steps * len(runs) / sequential_seconds:.0f} "
          f"| {run_steps / sequential_seconds:.0f} | 1.00 |")
    print(f"| batched, {len(runs)} runs in one policy | {batched.seconds:.2f} | {batched.steps_per_second:.0f} "
          f"| {run_steps / batched.seconds:.0f} | {sequential_seconds / batched.seconds:.2f} |")

    targets = np.stack([run.target() for run in runs])
    tv = total_variation(batched.history, targets[None])  # [T, R]
    shown = [i for i, s in enumerate(batched.history_steps) if s in {1, *np.linspace(0, args.steps, 11).astype(int)[1:]}]
    print("\n## TV(trained policy, closed-form target) vs steps\n")
    print("| run | " + " | ".join(str(int(batched.history_steps[i])) for i in shown) + " |")
    print("|---|" + "---|" * len(shown))
    for r, run in enumerate(runs):
        print(f"| {run.label()} | " + " | ".join(f"{tv[i, r]:.4f}" for i in shown) + " |")
    first_below = [int(batched.history_steps[np.flatnonzero(tv[:, r] < 0.05)[0]]) if (tv[:, r] < 0.05).any() else None for r in range(len(runs))]
    print(f"\nfirst recorded step with TV < 0.05, per run: {first_below}")
    print(f"max final TV: {tv[-1].max():.4f}")


if __name__ == "__main__":
    main()
