"""``mara explore``: write (and open) the interactive target explorer, one self-contained HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path

from mara_rl.cli_args import finite_float, positive_float

EXAMPLE = """examples:
  mara explore --open                                    # the paper's didactic problems
  mara explore --preset two-bumps --beta 0.03 --kl forward --out bumps.html
  mara explore --rewards 0 1 1 --ref-probs 0.68 0.30 0.02 --labels wrong common rare --tau 1 --open

The page needs no server and no network: open the file in any browser, move beta and tau, switch
the KL direction and MARA, edit rewards and reference probabilities."""

def register(subparsers) -> None:
    from mara_rl.web.explorer import PRESET_NAMES

    parser = subparsers.add_parser(
        "explore",
        help="interactive page: move beta and tau, watch the reverse, forward and MARA targets",
        description="Write one self-contained HTML page that recomputes the closed-form targets as you move the sliders.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="mara-explorer.html", help="HTML file to write (default: mara-explorer.html)")
    parser.add_argument("--open", action="store_true", help="open the page in the default web browser")
    parser.add_argument("--preset", choices=PRESET_NAMES, default="three-actions-rare",
                        help="problem shown first (default: three-actions-rare, the paper's Fig. 4)")
    parser.add_argument("--rewards", type=finite_float, nargs="+", help="your own problem: the reward of each outcome")
    reference = parser.add_mutually_exclusive_group()
    reference.add_argument("--ref-probs", type=finite_float, nargs="+", help="reference probability of each outcome")
    reference.add_argument("--ref-logprobs", type=float, nargs="+", help="reference log-probability of each outcome (-inf: 0)")
    parser.add_argument("--labels", nargs="+", help="names of your outcomes")
    parser.add_argument("--beta", type=positive_float, help="initial KL coefficient (> 0; default: the problem's)")
    parser.add_argument("--tau", type=finite_float, help="initial quality threshold (default: the problem's)")
    parser.add_argument("--kl", choices=("reverse", "forward"), default="reverse", help="initial KL direction (default: reverse)")
    parser.add_argument("--mara", action=argparse.BooleanOptionalAction, default=True,
                        help="show MARA's target at first (default: yes)")
    parser.set_defaults(func=run)


def _custom_problem(args: argparse.Namespace) -> dict | None:
    """The problem given by --rewards and --ref-probs / --ref-logprobs, checked; None without --rewards."""
    problem_flags = (("--ref-probs", args.ref_probs), ("--ref-logprobs", args.ref_logprobs), ("--labels", args.labels))
    given = [flag for flag, value in problem_flags if value is not None]
    if args.rewards is None:
        if given:
            raise ValueError(f"{given[0]} describes your own problem: give --rewards too")
        return None
    if args.ref_probs is None and args.ref_logprobs is None:
        raise ValueError("--rewards needs --ref-probs or --ref-logprobs (one per reward)")
    if args.labels is not None and len(args.labels) != len(args.rewards):
        raise ValueError(f"--labels needs one name per reward ({len(args.rewards)}), got {len(args.labels)}")
    import numpy as np

    from mara_rl.target_report import ref_logprobs_from
    from mara_rl.web.explorer import problem

    flag = "--ref-probs" if args.ref_probs is not None else "--ref-logprobs"
    try:
        ref_logprobs = ref_logprobs_from(args.ref_probs, args.ref_logprobs, len(args.rewards))
    except ValueError as err:
        raise ValueError(f"{flag}: {err}") from None
    tau = float(np.max(args.rewards)) if args.tau is None else args.tau
    return problem(args.rewards, ref_logprobs, name="Your problem (from the command line)",
                   description="Edit the rewards and the reference below, or pick one of the paper's problems.",
                   tau=tau, beta=args.beta if args.beta is not None else 0.01, labels=args.labels)


def run(args: argparse.Namespace) -> int:
    from mara_rl.cli_args import check_html_file

    out = check_html_file(args.out, "--out")
    from mara_rl.web import write_page
    from mara_rl.web.explorer import explorer_page, presets

    problems = presets()
    custom = _custom_problem(args)
    if custom is not None:
        problems = {"custom": custom, **problems}
    initial = {"preset": "custom" if custom is not None else args.preset, "beta": args.beta, "tau": args.tau,
               "kl": args.kl, "mara": args.mara}
    path = write_page(explorer_page(problems, initial), out)
    print(f"wrote {path}")
    if args.open:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            print(f"no web browser found; open {path.resolve().as_uri()} yourself")
    return 0
