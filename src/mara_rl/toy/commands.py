"""``mara toy <experiment>`` and ``mara reproduce didactic``: the paper's didactic figures as run folders.

Only argparse at module level; torch and matplotlib load inside the command functions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXPERIMENT_NAMES = ("matching", "beta-sweep", "intervals", "three-action")
QUICK_NAMES = ("intervals", "three-action")
EXIT_STATUS = """exit status: 0 when every run converged; 1 when some run ended more than TV 0.05 from its
closed-form target (the figures and summaries are still written, and a warning on stderr names the
experiment); 2 for a mistake in the flags or a diverged training (lower --lr)."""
EXPERIMENT_HELP = {
    "matching": "Fig. 1: restrictive vs expressive policy fitting a bimodal target, reverse vs forward KL",
    "beta-sweep": "Fig. 2: two reward bumps; the preferred mode flips across beta (crossover marked)",
    "intervals": "Fig. 5: binary reward on two intervals, beta in {0.01, 1}, vanilla vs MARA, both KLs",
    "three-action": "Figs. 3-4: the two three-action examples, both KLs, MARA on the equal-reward one",
}


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    from mara_rl.cli_args import int_at_least, positive_float, seed

    group = parser.add_argument_group("training")
    group.add_argument("--steps", type=int_at_least(1), default=None, help="policy-gradient steps per run (default 2000)")
    group.add_argument("--batch-size", type=int_at_least(2), default=None,
                       help="samples per step and run, >= 2 for the leave-one-out baseline (default 32)")
    group.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate, decayed linearly to 0 (default 0.1)")
    group.add_argument("--seed", type=seed, default=0, help="random seed, 0 to 2**32 - 1 (default 0)")
    group.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _reproduce_subparsers(subparsers) -> argparse._SubParsersAction:
    """The sub-command table of ``mara reproduce``, created on first use so several domains can share it."""
    parser = subparsers.choices.get("reproduce")
    if parser is None:
        parser = subparsers.add_parser("reproduce", help="re-run a group of the paper's experiments")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="study", metavar="STUDY", required=True)


def register(subparsers) -> None:
    toy = subparsers.add_parser(
        "toy",
        help="didactic bandit experiments: trained policies vs closed-form targets (paper Figs. 1-5)",
        description="Run one didactic experiment. " + "; ".join(f"{k}: {v}" for k, v in EXPERIMENT_HELP.items()),
        epilog=EXIT_STATUS,
    )
    toy.add_argument("experiment", choices=EXPERIMENT_NAMES, help="which experiment")
    toy.add_argument("--out", type=Path, default=None, help="run folder (default runs/toy/<experiment>)")
    _add_training_options(toy)
    toy.set_defaults(func=run_toy)

    didactic = _reproduce_subparsers(subparsers).add_parser(
        "didactic",
        help="all didactic experiments (paper Figs. 1-5), under a minute on a laptop CPU",
        description="Run every didactic experiment and write its figures, metrics and summaries.",
        epilog=EXIT_STATUS,
    )
    didactic.add_argument("--out", type=Path, default=Path("runs/didactic"), help="output folder (default runs/didactic)")
    didactic.add_argument("--quick", action="store_true", help=f"only {' and '.join(QUICK_NAMES)} (Figs. 3-5)")
    _add_training_options(didactic)
    didactic.set_defaults(func=run_didactic)


def _config(args: argparse.Namespace):
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ValueError("the didactic experiments need PyTorch: pip install 'mara-rl[torch]'") from None
    from mara_rl.toy.experiments import with_overrides
    from mara_rl.toy.train import TrainConfig

    return with_overrides(
        TrainConfig(steps=2000, progress=not args.no_progress),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
    )


def _run(name: str, out_dir: Path, config):
    from mara_rl.toy.experiments import EXPERIMENTS

    started = time.perf_counter()
    result = EXPERIMENTS[name](out_dir, config)
    print(f"{name}: {time.perf_counter() - started:.1f} s, {'converged' if result.converged else 'NOT converged'}")
    if not result.converged:
        print(f"WARNING: {name}: not every run ended within TV {result.metrics['tv_threshold']} of its target "
              "(see its summary.md; more --steps usually helps); the exit status will be 1", file=sys.stderr)
    for figure in result.figures:
        print(f"  {figure}")
    return result


def run_toy(args: argparse.Namespace) -> int:
    from mara_rl.cli_args import check_output_dir

    out_dir = check_output_dir(args.out if args.out is not None else Path("runs/toy") / args.experiment, "--out")
    result = _run(args.experiment, out_dir, _config(args))
    print(f"summary: {result.out_dir / 'summary.md'}")
    return 0 if result.converged else 1


def run_didactic(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from mara_rl.cli_args import check_output_dir

    check_output_dir(args.out, "--out")
    config = _config(args)
    names = QUICK_NAMES if args.quick else EXPERIMENT_NAMES
    started = time.perf_counter()
    results = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name}: {EXPERIMENT_HELP[name]}")
        results.append(_run(name, args.out / name, config))
    seconds = time.perf_counter() - started
    lines = ["# Didactic experiments (GX-Chen et al., 2025, Figs. 1-5)", "",
             f"Total time {seconds:.1f} s. Every figure overlays trained policies on the closed-form targets.", ""]
    for result in results:
        lines.append(f"## {result.name}")
        lines += [f"- `{figure.relative_to(args.out)}`" for figure in result.figures]
        lines.append(f"- details: `{(result.out_dir / 'summary.md').relative_to(args.out)}`")
        lines.append("")
    (args.out / "summary.md").write_text("\n".join(lines))
    (args.out / "config.json").write_text(json.dumps({"experiments": list(names), "train": asdict(config)}, indent=2) + "\n")
    (args.out / "metrics.json").write_text(json.dumps(
        {"seconds": seconds, "experiments": {r.metrics["experiment"]: {"converged": r.converged} for r in results}}, indent=2) + "\n")
    print(f"\nDone in {seconds:.1f} s. Figures and summaries are in {args.out}/ (start with {args.out / 'summary.md'}).")
    return 0 if all(r.converged for r in results) else 1
