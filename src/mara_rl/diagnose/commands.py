"""``mara diagnose``: per-prompt targets of vanilla KL-regularised RL and of MARA, from rollouts."""

from __future__ import annotations

import argparse
import sys

from mara_rl.cli_args import check_figure_file, check_html_file, check_output_file, finite_float, int_at_least, positive_float

EXAMPLE = """examples:
  mara diagnose rollouts.jsonl --beta 0.001 0.01 0.1 --plot classes.png --json diagnosis.json --html report.html
  mara diagnose math.parquet --beta 0.01 --answer-key '\\\\boxed\\{([^}]*)\\}' --tau 1
  mara diagnose chat.csv --beta 0.05 --kl forward --tau-quantile 0.9
  mara diagnose runs/grpo/record --plot-training training.png --steps 1000: --every 10
  mara diagnose s3://bucket/runs/grpo/record --beta 0.01 --plot-training training.png

ROLLOUTS has one row per sampled completion with columns prompt, completion, reward,
ref_logprob (the reference model's sequence log-probability) and optionally policy_logprob.
A rollout record folder (written by a trainer: record.json and shards/) is read the same way,
and shows the record over training: per step, the good answer classes the policy sampled beside
the effective number of good classes of the vanilla and the MARA target. Its beta, KL direction
and tau are the defaults; the per-prompt table covers the last selected steps (--table-rows).
Columns of the table: ref/van/MARA 2/1 = probability of the second-best good class over the
best one (reference, vanilla target, MARA target); top = probability of the best good class;
eff = effective number of good classes; beta_1/2 = the beta at which the second-best good class
reaches half of the best one (reverse-KL log-ratio); pol-van/pol-MARA TV (with policy_logprob) =
total variation between the policy and each target; '-' = fewer than two good classes."""


def unit_interval(text: str) -> float:
    """A number in [0, 1] (a quantile)."""
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text!r}")
    return value


def jobs_count(text: str) -> int:
    """``--jobs``: an integer from 1 to :data:`~mara_rl.diagnose.stream.MAX_JOBS`."""
    from mara_rl.diagnose.stream import MAX_JOBS

    value = int_at_least(1)(text)
    if value > MAX_JOBS:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_JOBS} (each thread holds a batch of about 1e6 rows in memory), got {text!r}")
    return value


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "diagnose",
        help="will my objective collapse? exact per-prompt targets over the sampled answers",
        description=(
            "Restricted to the answers a model actually produced, the target of KL-regularised RL is exact. "
            "For each prompt, print the vanilla and the MARA target over the observed answer classes."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "rollouts",
        metavar="ROLLOUTS",
        help="JSONL, Parquet or CSV file, one row per completion; or a rollout record folder (local path or s3://, gs://... URI)",
    )
    parser.add_argument(
        "--beta", type=positive_float, nargs="+", help="one or more KL coefficients (> 0); a record's default: its own"
    )
    parser.add_argument(
        "--kl", choices=("reverse", "forward"), help="KL direction (default: reverse; a record's: its own)"
    )
    threshold = parser.add_mutually_exclusive_group()
    threshold.add_argument("--tau", type=finite_float, help="reward threshold of a good answer")
    threshold.add_argument(
        "--tau-quantile",
        type=unit_interval,
        help="per-prompt quantile of the sampled rewards as threshold (default: 1, the best observed reward; "
        "a MARA record's: its own tau)",
    )
    parser.add_argument("--answer-key", metavar="REGEX", help="classes by the regex's first group (default: exact text)")
    parser.add_argument("--json", metavar="PATH", help="write every prompt's classes and diagnostics as JSON")
    parser.add_argument("--html", metavar="PATH", help="write a browsable report: sortable prompt table, class bars")
    parser.add_argument("--plot", metavar="PNG", help="bar charts of the class masses for the first prompts")
    parser.add_argument("--plot-prompts", type=int_at_least(0), default=4, help="prompts in the figure (default: 4)")
    parser.add_argument("--max-rows", type=int_at_least(0), default=20, help="prompts (and steps) printed per beta (default: 20)")
    parser.add_argument("--max-warnings", type=int_at_least(0), default=10, help="warnings printed (default: 10)")
    record = parser.add_argument_group("rollout records")
    record.add_argument("--steps", metavar="START:STOP", help="only the steps START <= step < STOP (either side may be left out)")
    record.add_argument("--every", type=int_at_least(1), default=1, metavar="K", help="every K-th recorded step of the window (default: 1)")
    record.add_argument("--plot-training", metavar="PNG", help="figure of the record over training")
    record.add_argument(
        "--table-rows",
        type=int_at_least(1),
        default=250_000,
        metavar="N",
        help="the per-prompt table pools the last selected steps holding at most N completions (default: 250000; at least one step)",
    )
    record.add_argument("--no-cache", action="store_true", help="neither read nor write the per-step summary cache beside the record")
    record.add_argument(
        "--jobs", type=jobs_count, metavar="N",
        help="threads reading and summarising batches of steps (default: the cores, 2 to 4; at most 32: each holds one "
        "batch of about 1e6 rows in memory)",
    )
    parser.set_defaults(func=run)


RECORD_FLAGS = (("steps", None), ("every", 1), ("plot_training", None), ("table_rows", 250_000), ("no_cache", False), ("jobs", None))


def check_outputs(args: argparse.Namespace) -> None:
    """Check every output flag (and the answer key) before anything is read."""
    from mara_rl.diagnose.classes import compile_answer_key

    compile_answer_key(args.answer_key)
    if args.json:
        check_output_file(args.json, "--json")
    if args.html:
        check_html_file(args.html, "--html")
    if args.plot:
        check_figure_file(args.plot, "--plot")
        if args.plot_prompts == 0:
            raise ValueError("--plot-prompts 0 leaves nothing to draw; give at least 1 or leave out --plot")
    if getattr(args, "plot_training", None):
        check_figure_file(args.plot_training, "--plot-training")


def run(args: argparse.Namespace) -> int:
    from mara_rl.diagnose.record import looks_like_record

    if looks_like_record(args.rollouts):
        from mara_rl.diagnose.over_training import run_record

        return run_record(args)
    for name, default in RECORD_FLAGS:
        if getattr(args, name) != default:
            raise ValueError(f"--{name.replace('_', '-')} applies to a rollout record folder; {args.rollouts!r} is not one")
    from mara_rl.diagnose.reading import check_rollouts_path

    check_rollouts_path(args.rollouts)
    if args.beta is None:
        raise ValueError("the following arguments are required: --beta (a rollout record folder defaults to its own)")
    return run_file(args)


def print_diagnoses(args: argparse.Namespace, groups, results, source: str) -> None:
    """The per-prompt tables, verdicts and warnings of ``results`` (one per beta)."""
    from mara_rl.diagnose.report import format_table

    summary = results[0].summary

    def rest(flag: str) -> str:
        """Where the rows or warnings left out can be seen."""
        return f"in {args.json}" if args.json else f"({flag} N shows more; --json PATH writes them all)"

    print(
        f"{summary['num_rows']} completions, {summary['num_prompts']} prompts, "
        f"{summary['num_classes']} answer classes ({source})"
    )
    for diagnosis in results:
        print(f"\nbeta={diagnosis.config['beta']:g}, {diagnosis.config['kl']} KL")
        print(format_table(diagnosis, args.max_rows, rest=f" {rest('--max-rows')}"))
    print()
    for diagnosis in results:
        print(diagnosis.summary["verdict"])
    if results[0].config["kl"] == "forward":
        print("(beta_1/2 uses the reverse-KL log-ratio; the forward target has no closed-form crossover)")
    if groups.warnings:
        print(f"\n{len(groups.warnings)} warning(s):", file=sys.stderr)
        for line in groups.warnings[: args.max_warnings]:
            print(f"  {line}", file=sys.stderr)
        if len(groups.warnings) > args.max_warnings:
            print(f"  ... {len(groups.warnings) - args.max_warnings} more {rest('--max-warnings')}", file=sys.stderr)


def run_file(args: argparse.Namespace) -> int:
    from mara_rl.diagnose.classes import answer_classes
    from mara_rl.diagnose.diagnosis import diagnose
    from mara_rl.diagnose.reading import read_rollouts
    from mara_rl.diagnose.report import plot_classes, write_json

    # Every flag is checked before the (possibly large) file is read.
    check_outputs(args)
    kl = args.kl or "reverse"
    groups = answer_classes(read_rollouts(args.rollouts), args.answer_key)
    results = [diagnose(groups, beta, kl=kl, tau=args.tau, tau_quantile=args.tau_quantile) for beta in args.beta]
    print_diagnoses(args, groups, results, str(args.rollouts))
    if args.json:
        print(f"wrote {write_json(results, args.json, rollouts=str(args.rollouts))}")
    if args.html:
        from mara_rl.diagnose.html import write_html

        print(f"wrote {write_html(results, args.html, rollouts=str(args.rollouts))}")
    if args.plot:
        print(f"wrote {plot_classes(results, args.plot, num_prompts=args.plot_prompts)}")
    return 0
