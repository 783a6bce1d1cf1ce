"""``mara targets``: the closed-form targets of a small outcome set, as a table and a figure."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXAMPLE = """example (the paper's Fig. 4: two correct answers at a 15:1 reference ratio):
  mara targets --rewards 0 1 1 --ref-probs 0.68 0.30 0.02 --beta 0.001 0.1 1 --tau 0.5 --plot targets.png
  mara targets --file problem.yaml      # keys: rewards, ref_probs | ref_logprobs, betas, tau, labels"""


def register(subparsers) -> None:
    from mara_rl.cli_args import finite_float, positive_float

    parser = subparsers.add_parser(
        "targets",
        help="print (and plot) the reverse, forward and MARA targets of a small outcome set",
        description="Closed-form optimal targets of KL-regularised RL for given rewards and reference probabilities.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--file", help="JSON or YAML spec; flags given on the command line override it")
    parser.add_argument("--rewards", type=finite_float, nargs="+", help="reward of each outcome")
    reference = parser.add_mutually_exclusive_group()
    reference.add_argument("--ref-probs", type=finite_float, nargs="+", help="reference probability of each outcome (normalised for you)")
    reference.add_argument("--ref-logprobs", type=float, nargs="+", help="reference log-probability of each outcome (-inf: probability 0)")
    parser.add_argument("--beta", type=positive_float, nargs="+", help="one or more KL coefficients (default: 0.001 0.01 0.1 1)")
    parser.add_argument("--tau", type=finite_float,
                        help="quality threshold for MARA and the mass/mode summaries, at most the best reward (default: best reward)")
    parser.add_argument("--labels", nargs="+", help="names of the outcomes")
    parser.add_argument("--plot", metavar="PNG", help="write a figure of the targets side by side")
    parser.add_argument("--json", metavar="PATH", help="write the targets and summaries as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mara_rl.cli_args import check_figure_file, check_input_file, check_output_file
    from mara_rl.target_report import build_report, format_report, load_spec, number, number_list, plot_report, ref_logprobs_from

    if args.json is not None:
        check_output_file(args.json, "--json")
    if args.plot is not None:
        check_figure_file(args.plot, "--plot")
    spec = load_spec(check_input_file(args.file, "--file")) if args.file else {}

    def given(flag_value, flag: str, key: str):
        """The flag if given, else the spec's entry; with the name to use in an error."""
        if flag_value is not None:
            return flag_value, flag
        return spec.get(key), f"'{key}' in {args.file}"

    rewards, name = given(args.rewards, "--rewards", "rewards")
    if rewards is None:
        raise ValueError("give --rewards or a --file with a 'rewards' list")
    rewards = number_list(rewards, name)
    if args.ref_probs is not None or args.ref_logprobs is not None:
        ref_probs, ref_logprobs = args.ref_probs, args.ref_logprobs
    else:
        ref_probs, ref_logprobs = spec.get("ref_probs"), spec.get("ref_logprobs")
        if ref_probs is None and ref_logprobs is None:
            raise ValueError("give --ref-probs or --ref-logprobs (or ref_probs / ref_logprobs in --file)")
        if ref_probs is not None and ref_logprobs is not None:
            raise ValueError(f"{args.file} gives both ref_probs and ref_logprobs; keep one")
        if ref_probs is not None:
            ref_probs = number_list(ref_probs, f"'ref_probs' in {args.file}")
        else:
            ref_logprobs = number_list(ref_logprobs, f"'ref_logprobs' in {args.file}", finite=False)
    if args.beta is not None:
        betas = args.beta
    elif "betas" in spec:
        betas = number_list(spec["betas"], f"'betas' in {args.file}")
    elif "beta" in spec:
        betas = [number(spec["beta"], f"'beta' in {args.file}")]
    else:
        betas = [0.001, 0.01, 0.1, 1.0]
    if min(betas) <= 0:
        raise ValueError(f"every beta must be > 0 (the KL coefficient), got {min(betas):g}")
    tau, name = given(args.tau, "--tau", "tau")
    tau = None if tau is None else number(tau, name)
    labels, name = given(args.labels, "--labels", "labels")
    if labels is not None and not isinstance(labels, list):
        raise ValueError(f"{name} must be a list of names, got {labels!r}")

    report = build_report(rewards, ref_logprobs_from(ref_probs, ref_logprobs, len(rewards)), betas, tau, labels)
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2))
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {plot_report(report, args.plot)}")
    return 0
