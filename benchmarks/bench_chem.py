"""Speed of the chemistry stack: SMILES sampled per second (one torch thread vs torch's default
thread count, the baseline), oracle calls per second, and the wall time of a full run.

    python benchmarks/bench_chem.py [--budget 10000] [--objective qed_hbd_sa] [--sigma 120] [--out results/chem/bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def sampling_rate(threads: int, batch_size: int = 64, batches: int = 5) -> float:
    import torch

    from mara_rl.chem.model import load_prior

    torch.set_num_threads(threads)
    model = load_prior().eval()
    generator = torch.Generator().manual_seed(0)
    model.sample(batch_size, generator=generator)  # warm-up
    start = time.perf_counter()
    for _ in range(batches):
        model.sample(batch_size, generator=generator)
    return batch_size * batches / (time.perf_counter() - start)


def oracle_rate(objective: str, n: int = 500) -> float:
    import torch

    from mara_rl.chem.evaluate import sample_smiles
    from mara_rl.chem.model import load_prior
    from mara_rl.chem.oracles import get_oracle
    from mara_rl.metrics.molecules import canonical_smiles

    torch.set_num_threads(1)
    smiles = [c for c in map(canonical_smiles, sample_smiles(load_prior(), n, batch_size=100)) if c]
    oracle = get_oracle(objective)
    start = time.perf_counter()
    oracle(smiles)
    return len(smiles) / (time.perf_counter() - start)


def run_wall_time(objective: str, budget: int, sigma: float) -> dict:
    from mara_rl.chem.rl import RunConfig, run

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        metrics = run(RunConfig(out=f"{tmp}/run", objective=objective, budget=budget, sigma=sigma))
        return {"minutes": (time.perf_counter() - start) / 60, "oracle_calls": metrics["oracle_calls"], "steps": metrics["steps"],
                "stopped_by_step_limit": metrics["stopped_by_step_limit"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--objective", default="qed_hbd_sa")
    parser.add_argument("--sigma", type=float, default=120.0, help="REINVENT sigma of the timed run")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    import torch

    default_threads = torch.get_num_threads()
    one, many = sampling_rate(1), sampling_rate(default_threads)
    figures = {
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "smiles_per_s_1_thread": one,
        f"smiles_per_s_{default_threads}_threads": many,
        "speedup_1_thread_vs_default": one / many,
        "oracle_calls_per_s": {name: oracle_rate(name) for name in ("qed_hbd_sa", "celecoxib_mpo")},
    }
    for key, value in figures.items():
        print(f"{key}: {value}")
    figures["run"] = {"objective": args.objective, "budget": args.budget, "sigma": args.sigma, **run_wall_time(args.objective, args.budget, args.sigma)}
    print(f"run of {args.budget} oracle calls on {args.objective} (sigma {args.sigma}): {figures['run']['minutes']:.1f} min, "
          f"{figures['run']['oracle_calls']} calls, {figures['run']['steps']} steps")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
