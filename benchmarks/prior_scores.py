"""Distribution of an objective on samples of the shipped prior: the numbers to choose screens
and MARA's tau from (a screen or tau at a high percentile of the prior's scores means good
molecules are rare at the start, as in the paper).

    python benchmarks/prior_scores.py --objective dock_qed_hbd_sa:DRD2 --samples 160 \
        --dock-exhaustiveness 1 --workers 2 --out results/dock/prior_scores_drd2_ex1.json

Prints percentiles of the score (and of the raw docking score for docking objectives), the
fraction of molecules at or above each screen, and the time spent scoring. Molecules are scored
in sample order, a few per worker at a time; ``--max-minutes`` stops after the chunk that passes
the limit and reports on the molecules scored so far (the first ones of the seeded sample, so a
prefix of the same list on every rerun; docking results come from the cache when rerun).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mara_rl.chem.evaluate import sample_smiles
from mara_rl.chem.executors import make_executor
from mara_rl.chem.model import load_prior
from mara_rl.chem.oracles import Details, check_scores, get_oracle
from mara_rl.metrics.molecules import canonical_smiles

PERCENTILES = (10, 25, 50, 75, 90, 95, 99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objective", default="qed_hbd_sa")
    parser.add_argument("--samples", type=int, default=2000, help="SMILES sampled (the distinct valid ones are scored)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dock-exhaustiveness", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--screens", type=float, nargs="+", default=[0.3, 0.35, 0.4, 0.5, 0.8])
    parser.add_argument("--max-minutes", type=float, default=None, help="stop scoring after this long")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    oracle = get_oracle(args.objective, dock_exhaustiveness=args.dock_exhaustiveness)
    smiles = list(dict.fromkeys(m for m in map(canonical_smiles, sample_smiles(load_prior(), args.samples, seed=args.seed)) if m))
    start = time.perf_counter()
    details: list = []
    with make_executor(args.workers) as executor:
        for first in range(0, len(smiles), 4 * args.workers):
            details += executor.map(Details(oracle), smiles[first : first + 4 * args.workers])
            if args.max_minutes is not None and time.perf_counter() - start > 60 * args.max_minutes:
                break
    seconds = time.perf_counter() - start
    smiles = smiles[: len(details)]
    scores = check_scores(np.array([d.score for d in details]), len(smiles), oracle.name)
    raw = np.array([d.raw for d in details if d.raw is not None])
    report = {
        "objective": oracle.name,
        "dock_exhaustiveness": args.dock_exhaustiveness,
        "samples": args.samples,
        "seed": args.seed,
        "scored": len(smiles),
        "scoring_seconds": round(seconds, 1),
        "workers": args.workers,
        "mean": float(scores.mean()),
        "max": float(scores.max()),
        "percentiles": {p: float(np.percentile(scores, p)) for p in PERCENTILES},
        "fraction_at_or_above": {s: float((scores >= s).mean()) for s in args.screens},
        "not_scored": dict(sorted({d.reason: sum(e.reason == d.reason for e in details) for d in details if d.reason}.items())),
    }
    if raw.size:
        report["raw_percentiles"] = {p: float(np.percentile(raw, p)) for p in PERCENTILES}
        report["raw_mean"] = float(raw.mean())
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
