"""How many of one run's hits another run never proposed: the same seed across two methods, and
two different seeds (independent runs) within and across methods, over a ``mara chem compare`` folder.

    python benchmarks/chem_overlap.py results/chem/paired-10k-sigma128 --screen 0.8

Runs with the same seed share their first batches and then drift apart, so the share of new hits
between two methods' same-seed runs says little about the methods until it is set beside the same
share between two runs that never shared anything (each seed against the next finished seed).
Prints the means over seeds as JSON. Each run's ledger may be plain, compressed or its hits alone:
a hit of one run that another proposed is a hit of the other too (same objective), so hits stand
for proposals here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mara_rl.chem.mechanism import share_new, read_ledger


def run_hits(folder: Path, screen: float) -> list[str]:
    smiles, scores = read_ledger(folder, screen)
    return [s for s, v in zip(smiles, scores) if v >= screen]


def overlap(out: Path, method: str, baseline: str, screen: float, seeds: list[int] | None = None) -> dict:
    """Mean shares of new hits (see the module docstring) over the seeds both arms finished, each
    over the seeds where the run whose hits are counted has any."""
    finished = lambda arm: {int(p.name[4:]) for p in (out / arm).glob("seed*") if (p / "metrics.json").exists()}  # noqa: E731
    shared = sorted(finished(method) & finished(baseline) & (set(seeds) if seeds else finished(method)))
    if len(shared) < 2:
        raise ValueError(f"{out} holds {len(shared)} seed(s) that both {method} and {baseline} finished (of those asked); need 2")
    hits = {arm: {s: run_hits(out / arm / f"seed{s}", screen) for s in shared} for arm in (method, baseline)}
    proposed = {arm: {s: set(h) for s, h in by_seed.items()} for arm, by_seed in hits.items()}
    following = dict(zip(shared, shared[1:] + shared[:1]))

    def mean(a: str, b: str, other_seed: bool) -> float | None:
        """Over the seeds where ``a``'s run has hits; None where it has none."""
        shares = [share_new(hits[a][s], proposed[b][following[s] if other_seed else s]) for s in shared]
        found = [share for share in shares if share is not None]
        return float(np.mean(found)) if found else None

    return {"screen": screen, "seeds": shared,
            f"{method} vs {baseline}, same seed": mean(method, baseline, False),
            f"{baseline} vs {method}, same seed": mean(baseline, method, False),
            f"{baseline} vs {baseline}, other seed": mean(baseline, baseline, True),
            f"{method} vs {method}, other seed": mean(method, method, True),
            f"{method} vs {baseline}, other seed": mean(method, baseline, True)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chem_overlap", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="a compare folder (OUT/<arm>/seed<N>)")
    parser.add_argument("--method", default="MARA_tau0.8", help="the arm's folder name")
    parser.add_argument("--baseline", default="REINVENT")
    parser.add_argument("--screen", type=float, default=0.8)
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: all both arms finished)")
    args = parser.parse_args(argv)
    try:
        result = overlap(args.out, args.method, args.baseline, args.screen, args.seeds)
    except ValueError as error:
        parser.exit(2, f"chem_overlap: error: {error}\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
