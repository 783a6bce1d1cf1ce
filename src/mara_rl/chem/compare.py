"""``mara chem compare``: REINVENT vs MARA at one or more taus over several seeds.

Writes ``table.md`` (Table-2 style: mean ± sd per metric, one-sided Welch t-test of each MARA
variant against REINVENT), ``summary.md`` (that table, the tests paired by seed: paired t-test,
sign test, Welch for reference; and the mechanism of :mod:`mara_rl.chem.mechanism`),
``comparison.json``, ``yield_curves.png`` (mean yield vs oracle calls) and
``prior_loglik@<screen>.png`` (prior log-likelihood of each method's distinct hits). Runs already finished are reused and interrupted ones resumed, so the command itself
can be interrupted and rerun; runs go seed by seed (all methods of seed 0 first).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mara_rl.chem.checks import check_device, check_float, check_int, check_oracle_executor, check_seed, open_prior, writable_folder
from mara_rl.chem.mechanism import mechanism, mechanism_markdown, plot_prior_loglik
from mara_rl.chem.rl import RunConfig, check_tensorboard, config_conflict, make_oracle, method_label, read_config, run

# metric -> direction in which MARA would be "better" (the one-sided alternative)
TABLE_METRICS = ("yield", "ob100", "scaffolds")
BASELINES = ("REINVENT", "REINVENT + filter")  # what the paired tests compare every other method against
GLOBAL_METRICS = {"intdiv1": "greater", "circles": "greater", "validity": "greater"}


def method_configs(base: RunConfig, taus: list[float], filter_arms: bool = False) -> list[RunConfig]:
    """REINVENT, then MARA at each tau, all sharing ``base``'s other settings; with
    ``filter_arms``, each of them without and then with REINVENT4's diversity filter."""
    methods = [replace(base, mara=False, tau=None, tau_quantile=None)] + [replace(base, mara=True, tau=t, tau_quantile=None) for t in taus]
    if not filter_arms:
        return methods
    return [replace(m, diversity_filter=on) for m in methods for on in (False, True)]


def run_folder(out: Path, config: RunConfig) -> Path:
    """``out/<method label>/seed<seed>``, e.g. ``MARA_tau0.8+filter/seed3``."""
    return out / method_label(config).replace(" + ", "+").replace(" ", "_").replace("=", "") / f"seed{config.seed}"


def _finished(config: RunConfig) -> bool:
    """Whether ``config``'s folder holds its finished run (a run with other settings is an error)."""
    folder = Path(config.out)
    if not (folder / "metrics.json").is_file():
        return False
    conflict = config_conflict(read_config(folder), config)
    if conflict:
        raise ValueError(conflict)
    return True


def _run_or_reuse(config: RunConfig) -> None:
    """Run ``config``, resume it, or reuse its finished results, after checking that a run
    already in its folder was started with the same settings."""
    if not _finished(config):
        run(config, resume=(Path(config.out) / "config.json").is_file())


def compare(base: RunConfig, taus: list[float], seeds: list[int], out: str | Path, jobs: int = 1,
            table_only: bool = False, filter_arms: bool = False) -> dict[str, Any]:
    """Run (or reuse) every (method, seed), ``jobs`` at a time, and write the table and curves
    into ``out``. With ``table_only``, run nothing: tabulate the runs finished so far. With
    ``filter_arms``, every method runs without and with the diversity filter."""
    seeds = [check_seed(seed, "--seeds") for seed in seeds]
    if len(set(seeds)) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be at least 2 distinct seeds (for the t-test), got {seeds}")
    jobs = check_int(jobs, "--jobs", 1)
    taus = [check_float(tau, "--taus", 0.0, 1.0) for tau in taus]
    if not taus or len(set(taus)) != len(taus):
        raise ValueError(f"--taus must be one or more distinct MARA thresholds, got {taus}")
    # every flag is checked here, before any run loads a model or calls the oracle
    check_device(base.device)
    check_tensorboard(base.tensorboard)
    if filter_arms and base.diversity_filter:
        raise ValueError("--filter-arms runs every method without and with the diversity filter; drop --diversity-filter")
    if base.ray_address == "local" and jobs > 1:
        raise ValueError("--ray-address local with --jobs > 1 would start one Ray per run; start one (ray start --head) "
                         "and give --ray-address auto")
    out = writable_folder(out)
    check_oracle_executor(make_oracle(base), base.oracle_workers, base.ray_address)
    open_prior(base.prior)
    # seed by seed, so that an interrupted comparison holds whole REINVENT/MARA pairs (which also share their first batch)
    configs = [replace(replace(m, seed=seed), out=str(run_folder(out, replace(m, seed=seed)))) for seed in seeds for m in method_configs(base, taus, filter_arms)]
    if table_only:
        configs = [config for config in configs if _finished(config)]
        if not configs:
            raise ValueError(f"no run of this comparison has finished in {out} yet")
    elif jobs > 1:
        import multiprocessing
        import os
        from concurrent.futures import ProcessPoolExecutor

        from mara_rl._workers import exit_with_parent

        # each run's process ends with the comparison (a killed compare must not leave runs going on
        # in its folders, where its rerun would start them a second time)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
            list(pool.map(_run_or_reuse, configs))
    else:
        for config in configs:
            _run_or_reuse(config)
    results: dict[str, list[dict[str, Any]]] = {}
    folders: dict[str, dict[int, Path]] = {}
    for config in configs:
        folder = Path(config.out)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["history"] = json.loads((folder / "history.json").read_text())
        results.setdefault(method_label(config), []).append(metrics)
        folders.setdefault(method_label(config), {})[config.seed] = folder
    table = comparison_table(results, base.screens)
    paired, tests = paired_table(results, base.screens)
    by_seed = {m: {r["seed"]: r for r in runs} for m, runs in results.items()}
    prior = open_prior(base.prior)
    mechanisms = {}
    for screen in base.screens:
        mechanisms[screen] = mechanism(folders, by_seed, screen, prior, baseline=next((b for b in BASELINES if b in folders), "REINVENT"))
        plot_prior_loglik(mechanisms[screen], out / f"prior_loglik@{screen}.png")
    summary = {"objective": base.objective, "budget": base.budget, "seeds": seeds, "taus": taus, "paired": tests,
               "mechanism": {str(s): {m: {k: v for k, v in e.items() if k != "loglik"} for m, e in r["methods"].items()}
                             for s, r in mechanisms.items()},
               "runs": {k: [{m: v for m, v in r.items() if m != "history"} for r in runs] for k, runs in results.items()}}
    (out / "comparison.json").write_text(json.dumps(summary, indent=2))
    (out / "table.md").write_text(table)
    plot_yield_curves(results, base.screens, base.budget, out / "yield_curves.png")
    text = [f"# {' vs '.join(results)} on `{base.objective}`, {base.budget} oracle calls, sigma {base.sigma:g}", "",
            "Mean ± sd over seeds; one-sided Welch p-value of each MARA row against REINVENT in brackets:", "", table,
            "## Paired by seed", "",
            "Runs with the same seed share their first batches, so the per-seed difference removes part of the seed-to-seed "
            "spread. One-sided p-values for \"MARA greater\"; Welch's independent test on the same runs for reference.", "",
            paired]
    for screen, result in mechanisms.items():
        text += [f"## Mechanism at screen {screen} (`prior_loglik@{screen}.png`)", "", mechanism_markdown(result, result["baseline"])]
    (out / "summary.md").write_text("\n".join(text))
    return {"table": table, "paired_table": paired, **summary}


def welch_one_sided(a: list[float], b: list[float], alternative: str) -> float:
    """p-value of the one-sided Welch t-test that mean(a) is ``alternative`` ("greater"/"less")
    than mean(b); NaN when either sample has no spread and equal means."""
    from scipy import stats

    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return float("nan")  # no spread in either sample: the t statistic is undefined
    return float(stats.ttest_ind(a, b, equal_var=False, alternative=alternative).pvalue)


def paired_tests(results: dict[str, list[dict[str, Any]]], metric: str, alternative: str = "greater",
                 baseline: str = "REINVENT") -> dict[str, dict[str, Any]]:
    """Each method against ``baseline`` on ``metric``, paired by seed (runs with the same seed
    share their first batches). Per method, over the seeds both finished: the differences
    ``d_s = method_s - baseline_s``, their mean (absolute and relative to the baseline's mean),
    wins / ties / losses, and one-sided p-values for "method is ``alternative`` than baseline":
    the paired t-test on ``d_s``, the sign test (binomial on wins among non-ties) and, for
    reference, Welch's independent-sample test on the same runs. NaN where a test is undefined
    (differences without spread, or every pair tied)."""
    from scipy import stats

    base = {r["seed"]: r.get(metric) for r in results.get(baseline, [])}
    out: dict[str, dict[str, Any]] = {}
    for method, runs in results.items():
        if method == baseline:
            continue
        pairs = sorted((r["seed"], r.get(metric), base[r["seed"]]) for r in runs
                       if r["seed"] in base and r.get(metric) is not None and base[r["seed"]] is not None)
        if not pairs:
            continue
        seeds = [s for s, _, _ in pairs]
        a = np.array([m for _, m, _ in pairs], dtype=float)
        b = np.array([r for _, _, r in pairs], dtype=float)
        d = a - b
        better = d > 0 if alternative == "greater" else d < 0
        wins, ties = int(better.sum()), int((d == 0).sum())
        losses = len(d) - wins - ties
        paired_p = float(stats.ttest_rel(a, b, alternative=alternative).pvalue) if len(d) > 1 and np.ptp(d) > 0 else float("nan")
        sign_p = float(stats.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue) if wins + losses else float("nan")
        out[method] = {
            "metric": metric, "alternative": alternative, "seeds": seeds, "differences": d.tolist(),
            "mean_difference": float(d.mean()), "relative_difference": float(d.mean() / b.mean()) if b.mean() else float("nan"),
            "sd_difference": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
            "wins": wins, "ties": ties, "losses": losses, "paired_t_p": paired_p, "sign_test_p": sign_p,
            "welch_p": welch_one_sided(a.tolist(), b.tolist(), alternative) if len(d) > 1 else float("nan"),
        }
    return out


def paired_table(results: dict[str, list[dict[str, Any]]], screens: tuple[float, ...]) -> tuple[str, dict[str, Any]]:
    """Markdown of :func:`paired_tests` for yield and scaffolds at each screen (MARA greater),
    against REINVENT and, where it ran, REINVENT + filter (the baseline REINVENT4 users run);
    and the tests themselves keyed by metric, then baseline, then method."""
    fmt = lambda p: f"{p:.3g}" if np.isfinite(p) else "n/a"  # noqa: E731
    tests: dict[str, Any] = {}
    lines = ["| metric | method | against | pairs | mean difference (relative) | sd of differences | wins / ties / losses "
             "| paired t p | sign test p | Welch p (reference) | differences by seed |", "|" + "---|" * 11]
    for screen in screens:
        for metric in (f"yield@{screen}", f"scaffolds@{screen}"):
            tests[metric] = {}
            for baseline in (b for b in BASELINES if b in results):
                tests[metric][baseline] = paired_tests(results, metric, "greater", baseline)
                for method, t in tests[metric][baseline].items():
                    by_seed = ", ".join(f"{s}: {d:+g}" for s, d in zip(t["seeds"], t["differences"]))
                    lines.append(f"| {metric} | {method} | {baseline} | {len(t['seeds'])} "
                                 f"| {t['mean_difference']:+.4g} ({100 * t['relative_difference']:+.1f} %) | {t['sd_difference']:.4g} "
                                 f"| {t['wins']} / {t['ties']} / {t['losses']} | {fmt(t['paired_t_p'])} | {fmt(t['sign_test_p'])} "
                                 f"| {fmt(t['welch_p'])} | {by_seed} |")
    return "\n".join(lines) + "\n", tests


def _cell(values: list[float | None]) -> str:
    reached = [v for v in values if v is not None]
    if not reached:
        return "not reached"
    text = f"{np.mean(reached):.4g} ± {np.std(reached, ddof=1) if len(reached) > 1 else 0.0:.3g}"
    return text if len(reached) == len(values) else f"{text} ({len(values) - len(reached)} of {len(values)} not reached)"


def comparison_table(results: dict[str, list[dict[str, Any]]], screens: tuple[float, ...]) -> str:
    """Markdown table: one row per method, mean ± sd (sample sd) over seeds, and for MARA rows
    the one-sided Welch p-value against REINVENT in brackets (yield, scaffolds, diversity:
    MARA greater; OB100 and a docking objective's median Vina score: MARA lower). OB100 p-values
    need every run to reach 100 hits.
    The oracle calls actually spent come first: fewer than the budget means the step limit
    ended a collapsed run."""
    columns: list[tuple[str, str | None]] = [("oracle_calls", None)]  # < budget: the step limit ended the run
    for screen in screens:
        columns += [(f"yield@{screen}", "greater"), (f"ob100@{screen}", "less"), (f"scaffolds@{screen}", "greater")]
    columns += list(GLOBAL_METRICS.items())
    if any("raw_median" in r for runs in results.values() for r in runs):  # docking: median Vina score, lower binds better
        columns += [("raw_median", "less"), ("not_docked", None)]
    header = "| method | n | " + " | ".join(c for c, _ in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    baseline = results.get("REINVENT", [])
    for method, runs in results.items():
        cells = []
        for column, alternative in columns:
            values = [r.get(column) for r in runs]
            cell = _cell(values)
            base_values = [r.get(column) for r in baseline]
            if alternative and method != "REINVENT" and baseline and None not in values and None not in base_values:
                p = welch_one_sided(values, base_values, alternative)
                cell += f" (p={p:.3g})" if np.isfinite(p) else " (p=n/a)"
            cells.append(cell)
        lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_yield_curves(results: dict[str, list[dict[str, Any]]], screens: tuple[float, ...], budget: int, path: Path) -> None:
    """Mean (line) and min-max band (shade) over seeds of yield vs oracle calls, one panel per screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, budget, 101)
    fig, axes = plt.subplots(1, len(screens), figsize=(5 * len(screens), 3.6), squeeze=False)
    for ax, screen in zip(axes[0], screens):
        for method, runs in results.items():
            curves = np.array([np.interp(grid, [0] + [h["oracle_calls"] for h in r["history"]], [0] + [h[f"yield@{screen}"] for h in r["history"]]) for r in runs])
            line = ax.plot(grid, curves.mean(0), label=f"{method} (n={len(runs)})")[0]
            ax.fill_between(grid, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.15)
        ax.set_xlabel("oracle calls")
        ax.set_ylabel(f"yield (distinct molecules, score >= {screen})")
        ax.set_title(f"screen {screen}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
