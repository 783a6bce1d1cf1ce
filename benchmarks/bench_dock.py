"""Docking throughput: dockings per second per core, and the speed-up of a local process pool
over serial docking in this process (the baseline), on molecules sampled from the shipped prior.

    python benchmarks/bench_dock.py [--target DRD2] [--molecules 16] [--workers 1 2] [--exhaustiveness 1]
    python benchmarks/bench_dock.py --workers 1 2 16 --molecules 64        # a 16-core machine

Each worker count docks the same molecules into a fresh cache; the wall time includes starting
the workers and computing each worker's receptor maps, as a scoring loop pays them once.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def prior_molecules(n: int, seed: int = 0) -> list[str]:
    """The first ``n`` distinct valid canonical SMILES sampled from the shipped prior."""
    import torch

    from mara_rl.chem.evaluate import sample_smiles
    from mara_rl.chem.model import load_prior
    from mara_rl.metrics.molecules import canonical_smiles

    torch.set_num_threads(1)
    out: list[str] = []
    for c in map(canonical_smiles, sample_smiles(load_prior(), 3 * n + 20, batch_size=100, seed=seed)):
        if c and c not in out:
            out.append(c)
    if len(out) < n:
        raise RuntimeError(f"the prior gave only {len(out)} distinct valid molecules")
    return out[:n]


def run(target: str, smiles: list[str], workers: int, settings) -> tuple[float, list]:
    from mara_rl.chem.docking import DockingOracle
    from mara_rl.chem.executors import make_executor

    with tempfile.TemporaryDirectory() as tmp:
        oracle = DockingOracle(target, settings, os.path.join(tmp, "docking.sqlite"))
        start = time.perf_counter()
        with make_executor(workers) as executor:
            results = executor.map(oracle.dock, smiles)
        return time.perf_counter() - start, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="DRD2")
    parser.add_argument("--molecules", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts; 1 (serial) is the baseline")
    parser.add_argument("--exhaustiveness", type=int, default=1)
    parser.add_argument("--n-poses", type=int, default=1)
    args = parser.parse_args()

    from mara_rl.chem.docking import DockingSettings

    settings = DockingSettings(exhaustiveness=args.exhaustiveness, n_poses=args.n_poses)
    smiles = prior_molecules(args.molecules)
    workers = sorted(set(args.workers) | {1})
    print(f"{args.molecules} prior molecules on {args.target}, exhaustiveness {args.exhaustiveness}, "
          f"{args.n_poses} pose(s), {os.cpu_count()} CPUs on this machine")
    rows, baseline, reference = [], None, None
    for w in workers:
        wall, results = run(args.target, smiles, w, settings)
        scores = [r.score for r in results]
        core_seconds = sum(r.seconds for r in results)
        baseline = baseline or wall
        reference = reference or scores
        rows.append((w, wall, len(smiles) / wall, len(smiles) / core_seconds, baseline / wall, scores == reference))
        failed = sum(s is None for s in scores)
        print(f"workers {w:>3}: wall {wall:7.1f} s  {len(smiles) / wall:6.3f} dockings/s  "
              f"{len(smiles) / core_seconds:6.3f} dockings/s per busy core  speed-up x{baseline / wall:5.2f} "
              f"(efficiency {baseline / wall / w:4.2f})  scores identical to serial: {scores == reference}  failed: {failed}")
    docked = [s for s in reference if s is not None]
    print(f"raw Vina scores (serial): mean {sum(docked) / len(docked):.2f} kcal/mol, best {min(docked):.2f}, worst {max(docked):.2f}")
    if not all(r[-1] for r in rows):
        raise SystemExit("scores differ between worker counts")


if __name__ == "__main__":
    main()
