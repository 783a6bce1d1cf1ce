"""Speed of ``mara targets --plot`` on many outcomes: the figure as drawn now against one bar per outcome.

    python benchmarks/bench_targets_plot.py [--outcomes 100000] [--baseline-outcomes 2000]

The baseline is the figure's former reward panel, one bar patch per outcome (its probability panel
drew unbinned step lines); matplotlib's cost grows with the number of patches, so at 1e5 outcomes it
ran for minutes. Both figures are drawn at ``--baseline-outcomes`` and the ratio is printed; then
the whole command (targets, table, figure) is timed at ``--outcomes``, with and without ``--plot``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mara_rl.cli import main
from mara_rl.target_report import COLUMNS, build_report, plot_report

BETAS = [0.001, 0.01, 0.1, 1.0]


def problem(k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random(k).round(3), np.log(rng.dirichlet(np.ones(k)))


def plot_bars_per_outcome(report, path: Path) -> None:
    """The baseline figure: a bar per outcome on top, one unbinned step line per target below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, n = report.rewards.size, len(report.per_beta)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n + 0.6, 5.2), squeeze=False, sharex=True, gridspec_kw={"height_ratios": [1, 3]})
    x = np.arange(k)
    good = report.rewards >= report.tau
    for col, item in enumerate(report.per_beta):
        axes[0, col].bar(x, report.rewards, color=np.where(good, "tab:green", "0.75"), width=0.8)
        for p in [report.ref_probs] + [item.probs[name] for name, _ in COLUMNS]:
            axes[1, col].step(x, p, where="mid")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cli_seconds(argv: list[str]) -> float:
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        code = main(argv)
        elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"mara {' '.join(argv[:1])} exited with {code}")
    return elapsed


def run(outcomes: int, baseline_outcomes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report = build_report(*problem(baseline_outcomes), BETAS, tau=0.9)
        plot_report(report, Path(tmp) / "warmup.png")  # matplotlib import and font cache
        old = seconds(lambda: plot_bars_per_outcome(report, Path(tmp) / "old.png"))
        new = seconds(lambda: plot_report(report, Path(tmp) / "new.png"))
        print(f"figure at {baseline_outcomes} outcomes, {len(BETAS)} betas: bar per outcome {old:.2f} s, "
              f"now {new:.2f} s, {old / new:.1f}x faster")

        # 1e5 outcomes do not fit on a command line (ARG_MAX): they come in a spec file.
        rewards, ref_logprobs = problem(outcomes)
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"rewards": rewards.tolist(), "ref_logprobs": ref_logprobs.tolist(), "tau": 0.9, "betas": BETAS}))
        without = cli_seconds(["targets", "--file", str(spec)])
        total = cli_seconds(["targets", "--file", str(spec), "--plot", str(Path(tmp) / "cli.png")])
        scaled = old * outcomes / baseline_outcomes
        print(f"mara targets --file at {outcomes} outcomes: {without:.2f} s without the figure, {total:.2f} s with --plot; "
              f"the bar-per-outcome figure, scaled linearly from {baseline_outcomes} outcomes, would add ~{scaled:.0f} s "
              f"({(without + scaled) / total:.0f}x the time with the figure as drawn now)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", type=int, default=100_000)
    parser.add_argument("--baseline-outcomes", type=int, default=2000)
    args = parser.parse_args()
    run(args.outcomes, args.baseline_outcomes)
