"""Where each method's hits lie under the prior, and what one method finds that the other never saw.

MARA's target is flat over the molecules scoring at least tau, while REINVENT's Gibbs target
``p_prior(x) exp(sigma R(x))`` still weights good molecules by how much the prior likes them.
If that difference matters, MARA's distinct hits should reach further into the prior's tail
(lower prior log-likelihood) and include molecules REINVENT never proposes. This module
measures that from the runs' ledgers (``molecules.csv``: every distinct molecule a run proposed
within its budget) and metrics (re-proposals, which cost no oracle call but an update):

- the prior log-likelihood (nats) of every distinct hit, computed afresh on its canonical SMILES
  so that ledgers of every version compare alike;
- per seed, the share of a method's hits the baseline's run with the same seed never proposed,
  and the share that no run of the baseline (any seed) proposed;
- the fraction of valid proposals that re-propose a known molecule, and a known hit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def read_ledger(folder: str | Path, screen: float) -> tuple[list[str], np.ndarray]:
    """Molecules (call order) and their scores from the run ``folder``'s ledger
    (:func:`~mara_rl.chem.rl.ledger_rows`): every molecule it proposed, or for a run kept as its hits
    alone (``hits.csv.gz``), its molecules scoring >= ``screen``. Those stand for its proposals
    without changing any measurement below when the oracle scores a molecule alike in every run:
    a hit of one run that another proposed is a hit of the other too."""
    from mara_rl.chem.rl import keeps_hits_only, ledger_rows

    rows = ledger_rows(folder, at_least=screen if keeps_hits_only(folder) else None)
    return [r["smiles"] for r in rows], np.array([float(r["score"]) for r in rows])


def prior_loglik(smiles: list[str], prior: Any, batch_size: int = 256) -> np.ndarray:
    """``log p_prior(x)`` (nats, ``[n]``) of each SMILES string as written; NaN for one the
    prior's vocabulary cannot spell."""
    import torch

    out = np.full(len(smiles), np.nan)
    # by length, so that a batch pads little (a quarter faster on a look's hits)
    spellable = sorted((i for i, s in enumerate(smiles) if prior.vocab.can_encode(s)), key=lambda i: len(smiles[i]))
    with torch.no_grad():
        for start in range(0, len(spellable), batch_size):
            index = spellable[start : start + batch_size]
            out[index] = prior.log_likelihood(prior.encode([smiles[i] for i in index])).double().cpu().numpy()
    return out


def mechanism(runs: dict[str, dict[int, str | Path]], metrics: dict[str, dict[int, dict[str, Any]]], screen: float, prior: Any,
              baseline: str = "REINVENT") -> dict[str, Any]:
    """The measurements listed in the module docstring for ``runs`` (method -> seed -> run
    folder) at ``screen``; ``metrics`` (method -> seed -> the run's metrics) supplies the
    re-proposal counters. Returns per method: ``loglik`` (every distinct hit's prior
    log-likelihood, pooled over seeds), its median and quartiles, and for each method other than
    ``baseline``, ``new_vs_same_seed`` (per seed: share of its hits the baseline's same-seed run
    never proposed), ``new_vs_all_seeds`` and the baseline's shares against this method
    (``baseline_new_vs_same_seed``). Re-proposal rates: ``repeat_rate`` (repeats / valid
    proposals) and ``repeated_hit_rate`` (re-proposed hits / valid proposals), per seed."""
    ledgers = {m: {seed: read_ledger(folder, screen) for seed, folder in by_seed.items()} for m, by_seed in runs.items()}
    proposed = {m: {seed: set(smiles) for seed, (smiles, _) in by_seed.items()} for m, by_seed in ledgers.items()}
    hits = {m: {seed: [s for s, v in zip(smiles, scores) if v >= screen] for seed, (smiles, scores) in by_seed.items()}
            for m, by_seed in ledgers.items()}
    out: dict[str, Any] = {"screen": screen, "baseline": baseline, "methods": {}}
    for method in runs:
        pooled = [s for seed in sorted(hits[method]) for s in hits[method][seed]]
        loglik = prior_loglik(pooled, prior)
        finite = loglik[np.isfinite(loglik)]
        entry: dict[str, Any] = {
            "hits": len(pooled), "loglik": loglik.tolist(),
            "loglik_median": float(np.median(finite)) if finite.size else None,
            "loglik_quartiles": [float(q) for q in np.percentile(finite, [25, 75])] if finite.size else None,
        }
        rates = []
        for seed, m in sorted(metrics.get(method, {}).items()):
            valid = m["sampled"] * m["validity"]
            if "repeats" in m and valid:
                rates.append({"seed": seed, "repeat_rate": m["repeats"] / valid,
                              "repeated_hit_rate": m.get(f"repeated_hits@{screen}", 0) / valid})
        entry["reproposals"] = rates
        out["methods"][method] = entry
    others = [m for m in runs if m != baseline and baseline in runs]
    every_baseline = set().union(*proposed[baseline].values()) if others else set()
    for method in others:
        entry = out["methods"][method]
        shared = sorted(set(hits[method]) & set(hits[baseline]))
        entry["new_vs_same_seed"] = {s: share_new(hits[method][s], proposed[baseline][s]) for s in shared}
        entry["baseline_new_vs_same_seed"] = {s: share_new(hits[baseline][s], proposed[method][s]) for s in shared}
        every_method = set().union(*proposed[method].values())
        entry["new_vs_all_seeds"] = share_new([s for v in hits[method].values() for s in v], every_baseline)
        entry["baseline_new_vs_all_seeds"] = share_new([s for v in hits[baseline].values() for s in v], every_method)
    return out


def share_new(hits: list[str], other: set[str]) -> float | None:
    """Share of ``hits`` not in ``other`` (None without hits)."""
    return sum(h not in other for h in hits) / len(hits) if hits else None


def mechanism_markdown(result: dict[str, Any], baseline: str = "REINVENT") -> str:
    """The numbers of :func:`mechanism` as a markdown table."""
    mean = lambda values: f"{np.mean(values):.3f}" if values else "n/a"  # noqa: E731
    screen = result["screen"]
    lines = [f"| method | distinct hits (score >= {screen}, all seeds) | prior log-likelihood of the hits: median [quartiles] "
             f"| hits the {baseline} run of the same seed never proposed (mean over seeds) | ... that no {baseline} run proposed "
             f"| {baseline}'s hits this method's run never proposed | re-proposals / valid proposals | re-proposed hits / valid proposals |",
             "|" + "---|" * 8]
    for method, e in result["methods"].items():
        q = e["loglik_quartiles"]
        ll = f"{e['loglik_median']:.2f} [{q[0]:.2f}, {q[1]:.2f}]" if q else "n/a"
        same = [v for v in e.get("new_vs_same_seed", {}).values() if v is not None]
        back = [v for v in e.get("baseline_new_vs_same_seed", {}).values() if v is not None]
        union = e.get("new_vs_all_seeds")
        lines.append(f"| {method} | {e['hits']} | {ll} | {mean(same) if method != baseline else '-'} "
                     f"| {f'{union:.3f}' if union is not None else '-'} | {mean(back) if method != baseline else '-'} "
                     f"| {mean([r['repeat_rate'] for r in e['reproposals']])} | {mean([r['repeated_hit_rate'] for r in e['reproposals']])} |")
    return "\n".join(lines) + "\n"


def plot_prior_loglik(result: dict[str, Any], path: str | Path) -> None:
    """Histogram (density, shared bins) of the prior log-likelihood of each method's distinct hits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = {m: np.array(e["loglik"], dtype=float) for m, e in result["methods"].items()}
    values = {m: v[np.isfinite(v)] for m, v in values.items()}
    pooled = np.concatenate([v for v in values.values() if v.size] or [np.zeros(1)])
    bins = np.linspace(pooled.min(), pooled.max(), 41)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for method, v in values.items():
        if v.size:
            line = ax.hist(v, bins=bins, density=True, histtype="step", linewidth=1.5, label=f"{method} ({v.size} hits)")[2][0]
            ax.axvline(np.median(v), color=line.get_edgecolor(), linestyle="--", linewidth=1)
    ax.set_xlabel("log p_prior(x) of a distinct hit (nats; dashed: median)")
    ax.set_ylabel("density")
    ax.set_title(f"Where the hits (score >= {result['screen']}) lie under the prior")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
