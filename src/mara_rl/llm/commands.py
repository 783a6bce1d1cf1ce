"""``mara llm one-or-two``: the paper's "1 or 2" sweep (vanilla GRPO vs MARA, reverse and forward KL)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    llm = subparsers.add_parser("llm", help="LLM post-training with MARA on TRL (extra [llm])")
    llm_sub = llm.add_subparsers(dest="llm_command", metavar="JOB", required=True)
    p = llm_sub.add_parser(
        "one-or-two",
        help='sweep beta x KL direction x {vanilla, MARA} x seeds on "output 1 or 2 uniformly at random"',
        description="Train GRPO policies on the '1 or 2' task and write a reward-vs-answer-entropy Pareto plot, "
        "a per-run table, curves and a summary. Resumes: finished runs in OUT/runs are reused.",
    )
    p.add_argument("--quick", action="store_true", help="one beta (0.03), one seed, 100 steps: four runs")
    p.add_argument("--model", default=None, help="model id or local path (default: the tiny local reference)")
    p.add_argument("--out", default="runs/one-or-two", help="output folder (default: runs/one-or-two)")
    p.add_argument("--betas", type=float, nargs="+", default=None, help="KL coefficients (default 0.001 0.01 0.02 0.03)")
    p.add_argument("--kl", nargs="+", choices=("reverse", "forward"), default=None, help="KL directions (default both)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0)")
    p.add_argument("--steps", type=int, default=None, help="GRPO steps per run (default 150)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest for the tiny model on a busy CPU)")
    p.add_argument("--cache-dir", default=None, help="cache of the tiny reference (default $MARA_RL_CACHE or ~/.cache/mara-rl)")
    p.set_defaults(func=_one_or_two)


def _one_or_two(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mara_rl.llm.one_or_two import QUICK, SweepConfig, run_sweep

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    settings = dict(QUICK) if args.quick else {}
    for key, value in (("betas", args.betas), ("kl_directions", args.kl), ("seeds", args.seeds)):
        if value is not None:
            settings[key] = tuple(value)
    if args.steps is not None:
        settings["steps"] = args.steps
    cfg = SweepConfig(model=args.model, cache_dir=args.cache_dir, **settings)
    out = Path(args.out)
    metrics = run_sweep(cfg, out)
    print((out / "summary.md").read_text())
    print(f"wrote {out}/ (pareto.png, curves.png, runs.csv, metrics.json, summary.md); "
          f"{len(metrics['runs'])} runs")
    return 0
