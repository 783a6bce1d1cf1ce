"""Is the docking oracle meaningful? Two checks at dockstring's settings (exhaustiveness 8, its
seed, 9 poses, its boxes); sources and results in docs/docking.md.

1. DRD2: five marketed D2 antagonists / partial agonists score better (lower Vina score) than
   molecules sampled from the shipped SMILES prior: mean, median, AUROC.
2. Agreement with dockstring: the (target, SMILES, score) examples that the installed dockstring
   package ships from its published dataset (``random_dataset_tuples`` in ``dockstring/dataset.py``,
   read as text, not imported), docked again here; mean and largest absolute difference.

    python benchmarks/validate_dock.py [--workers 2] [--prior 20] [--exhaustiveness 8] [--out results/dock/validate.json]
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import statistics
import time
from pathlib import Path

# marketed DRD2 ligands (ChEMBL id); D2 antagonism or partial agonism is in each drug label
DRD2_ACTIVES = {
    "haloperidol (CHEMBL54)": "OC1(CCN(CCCC(=O)c2ccc(F)cc2)CC1)c1ccc(Cl)cc1",
    "risperidone (CHEMBL85)": "CC1=C(C(=O)N2CCCCC2=N1)CCN3CCC(CC3)C4=NOC5=C4C=CC(=C5)F",
    "aripiprazole (CHEMBL1112)": "O=C1CCc2ccc(OCCCCN3CCN(CC3)c3cccc(Cl)c3Cl)cc2N1",
    "olanzapine (CHEMBL715)": "CC1=CC2=C(S1)NC3=CC=CC=C3N=C2N4CCN(CC4)C",
    "clozapine (CHEMBL42)": "CN1CCN(CC1)C2=NC3=C(C=CC(=C3)Cl)NC4=CC=CC=C24",
}


def dockstring_examples() -> list[tuple[str, str, float]]:
    """``random_dataset_tuples`` from the installed dockstring's ``dataset.py``, parsed as a literal."""
    from mara_rl.chem.docking import targets_dir

    source = (targets_dir().parents[1] / "dataset.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "random_dataset_tuples":
            return [tuple(t) for t in ast.literal_eval(node.value)]  # type: ignore[misc]
    raise RuntimeError("dockstring's dataset.py has no random_dataset_tuples")


def auroc(better: list[float], worse: list[float]) -> float:
    """P(an active scores lower than a prior sample), ties counting half."""
    pairs = [(a < b) + 0.5 * (a == b) for a in better for b in worse]
    return sum(pairs) / len(pairs)


def dock_pairs(pairs: list[tuple[str, str]], settings, cache: str | None) -> list:
    """Dock (target, SMILES) pairs; a batch function for an executor."""
    from mara_rl.chem.docking import DockingOracle

    return [DockingOracle(target, settings, cache).dock([smiles])[0] for target, smiles in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--prior", type=int, default=20, help="prior samples docked on DRD2")
    parser.add_argument("--exhaustiveness", type=int, default=8)
    parser.add_argument("--skip-dockstring", action="store_true", help="only the DRD2 check")
    parser.add_argument("--max-atoms", type=int, default=None, help="leave out dockstring examples with more heavy atoms (their docking is slowest)")
    parser.add_argument("--cache", default=None, help="docking cache (default: the user cache)")
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args()

    from bench_dock import prior_molecules
    from rdkit import Chem

    from mara_rl.chem.docking import DockingSettings, normalise
    from mara_rl.chem.executors import make_executor
    from mara_rl.metrics.molecules import canonical_smiles

    settings = DockingSettings(exhaustiveness=args.exhaustiveness)
    actives = {name: canonical_smiles(s) for name, s in DRD2_ACTIVES.items()}
    prior = prior_molecules(args.prior)
    examples = [] if args.skip_dockstring else dockstring_examples()
    if args.max_atoms is not None:
        examples = [e for e in examples if Chem.MolFromSmiles(e[1]).GetNumHeavyAtoms() <= args.max_atoms]
    pairs = [("DRD2", s) for s in actives.values()] + [("DRD2", s) for s in prior]
    pairs += [(target, canonical_smiles(s)) for target, s, _ in examples]
    # largest molecules first: the slowest dockings start first, so the pool ends together
    order = sorted(range(len(pairs)), key=lambda i: -Chem.MolFromSmiles(pairs[i][1]).GetNumHeavyAtoms())
    start = time.perf_counter()
    with make_executor(args.workers) as executor:
        done = executor.map(functools.partial(dock_pairs, settings=settings, cache=args.cache), [pairs[i] for i in order])
    results = [None] * len(pairs)
    for i, r in zip(order, done):
        results[i] = r
    print(f"{len(pairs)} dockings, exhaustiveness {args.exhaustiveness}, {args.workers} workers: {time.perf_counter() - start:.0f} s")

    report: dict = {"exhaustiveness": args.exhaustiveness, "seed": settings.seed, "n_poses": settings.n_poses}
    active_scores = [r.score for r in results[: len(actives)]]
    print("\nDRD2 actives (kcal/mol, normalised):")
    for name, score in zip(actives, active_scores):
        print(f"  {name:28s} {score:7.2f}  {normalise(score):.3f}")
    prior_results = results[len(actives) : len(actives) + len(prior)]
    prior_scores = [r.score for r in prior_results if r.score is not None]
    failed = [(r.smiles, r.reason) for r in prior_results if r.score is None]
    a_ok = [s for s in active_scores if s is not None]
    report["drd2"] = {
        "actives": dict(zip(actives, active_scores)),
        "prior": {r.smiles: r.score for r in prior_results},
        "prior_failed": failed,
        "mean_active": statistics.mean(a_ok), "mean_prior": statistics.mean(prior_scores),
        "median_active": statistics.median(a_ok), "median_prior": statistics.median(prior_scores),
        "auroc": auroc(a_ok, prior_scores),
        "mean_normalised_active": statistics.mean(normalise(s) for s in a_ok),
        "mean_normalised_prior": statistics.mean(normalise(s) for s in prior_scores),
    }
    d = report["drd2"]
    print(f"prior samples ({len(prior_scores)} docked, {len(failed)} failed): mean {d['mean_prior']:.2f}, median {d['median_prior']:.2f}, "
          f"best {min(prior_scores):.2f}, worst {max(prior_scores):.2f}")
    print(f"actives: mean {d['mean_active']:.2f}, median {d['median_active']:.2f}; actives better by "
          f"{d['mean_prior'] - d['mean_active']:.2f} kcal/mol on average; AUROC(active < prior) {d['auroc']:.2f}; "
          f"normalised mean {d['mean_normalised_active']:.3f} vs {d['mean_normalised_prior']:.3f}")

    if examples:
        print("\nagreement with dockstring's shipped dataset examples (kcal/mol):")
        rows = []
        for (target, smiles, theirs), r in zip(examples, results[len(actives) + len(prior) :]):
            diff = None if r.score is None else round(r.score, 1) - theirs
            rows.append({"target": target, "smiles": smiles, "dockstring": theirs, "ours": r.score, "difference": diff, "reason": r.reason})
            ours = "failed: " + r.reason if r.score is None else f"{r.score:7.2f}  diff {diff:+.1f}"
            print(f"  {target:9s} dockstring {theirs:6.1f}  ours {ours}")
        diffs = [abs(row["difference"]) for row in rows if row["difference"] is not None]
        report["dockstring"] = {
            "rows": rows, "mean_abs_difference": statistics.mean(diffs), "max_abs_difference": max(diffs),
            "within_0.5": sum(x <= 0.5 + 1e-9 for x in diffs) / len(diffs), "within_1.0": sum(x <= 1.0 + 1e-9 for x in diffs) / len(diffs),
            "signed_mean_difference": statistics.mean(row["difference"] for row in rows if row["difference"] is not None),
        }
        g = report["dockstring"]
        print(f"{len(diffs)}/{len(rows)} docked: mean |ours - dockstring| {g['mean_abs_difference']:.2f}, largest {g['max_abs_difference']:.1f}, "
              f"mean signed {g['signed_mean_difference']:+.2f}; within 0.5: {g['within_0.5']:.0%}, within 1.0: {g['within_1.0']:.0%}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
