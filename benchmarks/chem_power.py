"""Paired REINVENT-vs-MARA tests over several ``mara chem compare`` folders, and the number of
seeds a given yield difference needs, from the measured spread.

    python benchmarks/chem_power.py results/chem/compare-10k-sigma128 results/chem/paired-10k-sigma128 \
        --method "MARA tau=0.8" --metric yield@0.8 --effect 0.03

Reads each folder's ``comparison.json`` (per-run metrics) and pools the runs by method and seed;
a seed that two folders both hold must have the same metric there (the runs are deterministic),
else it is an error. Prints the paired tests of :func:`mara_rl.chem.compare.paired_tests`, the
correlation of the two methods' runs with the same seed, and the power calculation: the smallest
number of seed pairs for which the one-sided paired t-test at ``--alpha`` detects a true mean
difference of ``--effect`` x REINVENT's mean yield with probability ``--power`` (noncentral t,
with the measured sd of the per-seed differences), and the same for two independent samples of
equal size (Welch's test, the measured sd of each method). ``--plot`` draws the pairs and their
differences (the study's figure, ``paired_differences.png`` in its folder).

The study has been looked at before it reached its planned size (``--planned-pairs``, the seeds of
its command in docs/chem.md), so a nominal p-value below ``--alpha`` is not yet a finding. The
``sequential`` entry says what this look must reach: the one-sided Lan-DeMets O'Brien-Fleming
spending function ``alpha(t) = 2 (1 - Phi(z_{1-alpha/2} / sqrt(t)))`` at information fraction
``t = pairs / planned``, less what the earlier looks (``--earlier-looks``, the pair counts whose
p-values were reported) had spent. Testing each look at its own increment is a union bound, so the
chance of any false finding over all looks stays below ``alpha`` however the looks correlate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from mara_rl.chem.compare import paired_tests


def pooled_runs(folders: list[str]) -> dict[str, list[dict]]:
    """Method -> runs (one per seed) from the folders' ``comparison.json``."""
    pooled: dict[str, dict[int, dict]] = {}
    for folder in folders:
        data = json.loads((Path(folder) / "comparison.json").read_text())
        for method, runs in data["runs"].items():
            for run in runs:
                known = pooled.setdefault(method, {}).get(run["seed"])
                if known is not None and {k: known.get(k) for k in run if k.startswith("yield@")} != \
                        {k: run[k] for k in run if k.startswith("yield@")}:
                    raise ValueError(f"{method} seed {run['seed']} differs between folders: {known} vs {run}")
                pooled[method][run["seed"]] = run
    return {m: [runs[s] for s in sorted(runs)] for m, runs in pooled.items()}


def pairs_needed(delta: float, sd: float, alpha: float, power: float, limit: int = 100_000) -> int | None:
    """Smallest n (pairs) with one-sided paired-t power >= ``power`` for mean difference ``delta``."""
    for n in range(2, limit):
        critical = stats.t.ppf(1 - alpha, n - 1)
        if stats.nct.sf(critical, n - 1, delta / sd * np.sqrt(n)) >= power:
            return n
    return None


def per_arm_needed(delta: float, sd_a: float, sd_b: float, alpha: float, power: float, limit: int = 100_000) -> int | None:
    """Smallest n per method with one-sided Welch power >= ``power`` (equal n, Welch-Satterthwaite df)."""
    for n in range(2, limit):
        se = np.sqrt((sd_a**2 + sd_b**2) / n)
        df = (sd_a**2 / n + sd_b**2 / n) ** 2 / ((sd_a**2 / n) ** 2 / (n - 1) + (sd_b**2 / n) ** 2 / (n - 1))
        if stats.nct.sf(stats.t.ppf(1 - alpha, df), df, delta / se) >= power:
            return n
    return None


PLANNED_PAIRS = 140  # seeds 0-139: the paired study's plan in docs/chem.md (it stopped at 105 pairs, where its threshold was crossed)
EARLIER_LOOKS = (5, 6, 8, 19, 20, 23, 24, 31, 33, 46, 71, 105)  # pair counts whose p-values the docs and notes reported; 105 crossed


def spent(fraction: float, alpha: float) -> float:
    """One-sided Lan-DeMets O'Brien-Fleming spending: the type I error spent by information ``fraction``."""
    if fraction <= 0:
        return 0.0
    return float(2 * stats.norm.sf(stats.norm.isf(alpha / 2) / np.sqrt(min(fraction, 1.0))))


def sequential_threshold(pairs: int, earlier: tuple[int, ...], planned: int, alpha: float) -> float:
    """The p-value a look at ``pairs`` must reach: the spending added since the last earlier look.

    A look must come after every earlier one (or repeat one): a look between earlier looks would
    spend twice. Past the planned size nothing is left to spend once a look at that size was made.
    """
    if planned < 2 or pairs < 2:
        raise ValueError(f"a paired study needs at least 2 pairs, planned and looked at; got {planned} planned, {pairs} now")
    if pairs not in earlier and pairs < max(earlier, default=0):
        raise ValueError(f"a look at {pairs} pairs after one at {max(earlier)} would spend twice; looks come in order")
    previous = max((n for n in earlier if n < pairs), default=0)
    return spent(pairs / planned, alpha) - spent(previous / planned, alpha)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chem_power", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--method", default="MARA tau=0.8")
    parser.add_argument("--baseline", default="REINVENT")
    parser.add_argument("--metric", default="yield@0.8")
    parser.add_argument("--effect", type=float, default=0.03, help="relative yield difference to detect")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--power", type=float, default=0.8)
    parser.add_argument("--planned-pairs", type=int, default=PLANNED_PAIRS,
                        help="the planned size (seed pairs) of the primary comparison, MARA tau=0.8 vs REINVENT on yield@0.8; "
                        "0 for a secondary comparison (no sequential plan)")
    parser.add_argument("--earlier-looks", type=int, nargs="*", default=list(EARLIER_LOOKS),
                        help="pair counts at which the p-value was looked at before")
    parser.add_argument("--plot", type=Path, help="also draw the pairs and their differences into this PNG")
    args = parser.parse_args(argv)
    if args.plot is not None and not args.plot.parent.is_dir():
        parser.error(f"--plot: no folder {args.plot.parent} to write {args.plot.name} into")
    try:
        runs = pooled_runs(args.folders)
    except (OSError, ValueError) as err:  # a folder without comparison.json, or folders that disagree
        parser.error(str(err))
    for name in (args.baseline, args.method):
        if name not in runs:
            parser.error(f"no finished run of {name!r} in {', '.join(args.folders)} (methods there: {', '.join(sorted(runs))})")
    tests = paired_tests({k: runs[k] for k in (args.baseline, args.method)}, args.metric, "greater", args.baseline)
    if args.method not in tests:  # paired_tests leaves out a method without a seed both runs measured
        measured = sorted({k for r in runs[args.baseline] for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed"})
        parser.error(f"no seed where both {args.baseline!r} and {args.method!r} have --metric {args.metric!r} "
                     f"(metrics there: {', '.join(measured)})")
    test = tests[args.method]
    base = {r["seed"]: r[args.metric] for r in runs[args.baseline]}
    other = {r["seed"]: r[args.metric] for r in runs[args.method]}
    a = np.array([other[s] for s in test["seeds"]], dtype=float)
    b = np.array([base[s] for s in test["seeds"]], dtype=float)
    delta = args.effect * b.mean()
    report = {
        "metric": args.metric, "method": args.method, "baseline": args.baseline, **test,
        "baseline_mean": float(b.mean()), "method_mean": float(a.mean()),
        "baseline_sd": float(b.std(ddof=1)), "method_sd": float(a.std(ddof=1)),
        "same_seed_correlation": float(np.corrcoef(a, b)[0, 1]),
        "effect": args.effect, "effect_in_hits": float(delta),
        "pairs_needed": pairs_needed(delta, test["sd_difference"], args.alpha, args.power),
        "per_arm_needed_independent": per_arm_needed(delta, float(a.std(ddof=1)), float(b.std(ddof=1)), args.alpha, args.power),
        "smallest_detectable_relative_difference_with_these_pairs": float(
            (stats.t.ppf(1 - args.alpha, len(a) - 1) + stats.t.ppf(args.power, len(a) - 1)) * test["sd_difference"]
            / np.sqrt(len(a)) / b.mean()),
    }
    if args.planned_pairs:
        try:
            report["sequential"] = sequential_report(test["paired_t_p"], len(a), args)
        except ValueError as err:  # a look out of order, or fewer than 2 pairs
            parser.error(str(err))
    if args.plot:
        plot_pairs(a, b, report, args.plot)
    print(json.dumps(report, indent=2))


def plot_pairs(method: np.ndarray, baseline: np.ndarray, report: dict, path: Path) -> None:
    """Left: each seed's two runs (on the diagonal: no difference). Right: the per-seed differences
    in increasing order, their mean with its 95 % confidence interval, and the effect the study is
    powered for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = method - baseline
    half_width = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    fig, (pairs, diffs) = plt.subplots(1, 2, figsize=(11, 4.2))
    pairs.scatter(baseline, method, s=18, color="tab:red")
    span = [min(baseline.min(), method.min()), max(baseline.max(), method.max())]
    pairs.plot(span, span, color="grey", lw=1)
    pairs.set_aspect("equal")
    pairs.set_xlabel(f"{report['baseline']}: {report['metric']}")
    pairs.set_ylabel(f"{report['method']}: {report['metric']}")
    pairs.set_title(f"{len(d)} seeds, each a pair (same-seed correlation {report['same_seed_correlation']:.2f})", fontsize=10)
    order = np.sort(d)
    diffs.bar(np.arange(len(d)), order, color=np.where(order > 0, "tab:red", "tab:blue"), width=0.8)
    diffs.axhline(0, color="black", lw=0.8)
    diffs.axhspan(d.mean() - half_width, d.mean() + half_width, color="grey", alpha=0.25, label="mean, 95 % CI")
    diffs.axhline(d.mean(), color="black", lw=1.5)
    for sign in (1, -1):
        diffs.axhline(sign * report["effect_in_hits"], color="tab:green", ls="--", lw=1,
                      label=f"±{report['effect']:.0%} of {report['baseline']}'s mean" if sign > 0 else None)
    diffs.set_xticks([])
    diffs.set_xlabel("seed pairs, by difference")
    diffs.set_ylabel(f"{report['method']} - {report['baseline']}")
    look = report.get("sequential")
    threshold = (f"\nthis look's threshold {look['p_threshold']:.1e} ({len(d)} of {look['planned_pairs']} planned pairs)"
                 if look else "")
    diffs.set_title(f"mean {report['relative_difference']:+.1%}, one-sided paired t p = {report['paired_t_p']:.2g}{threshold}",
                    fontsize=10)
    diffs.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sequential_report(p_value: float, pairs: int, args: argparse.Namespace) -> dict:
    threshold = sequential_threshold(pairs, tuple(args.earlier_looks), args.planned_pairs, args.alpha)
    return {
        "planned_pairs": args.planned_pairs, "information_fraction": min(pairs / args.planned_pairs, 1.0),
        "earlier_looks": sorted(n for n in args.earlier_looks if n < pairs), "p_threshold": threshold,
        "crossed": bool(threshold > 0 and p_value <= threshold),
    }


if __name__ == "__main__":
    main()
