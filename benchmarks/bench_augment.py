"""Speed of ``mara_rewards`` against a straightforward per-group Python loop, in the same run.

    python benchmarks/bench_augment.py [--samples 1000000] [--groups 100000] [--repeats 5] [--against REV]

Prints the best-of-repeats wall time of the vectorised numpy and torch paths and of the loop, and
the speed-up ratio. The loop is Algorithm 1 written the obvious way; the test suite checks both
give identical results. ``--against REV`` also times ``mara_rewards`` as it was at git revision REV
(e.g. an earlier release) on the same batch, and checks both give the same rewards.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

from mara_rl.augment import mara_rewards
from timing import best_time


def per_group_loop(rewards: np.ndarray, ref_logprobs: np.ndarray, group_ids: np.ndarray, beta: float, tau: float) -> np.ndarray:
    """Algorithm 1 with one Python iteration per group (the baseline)."""
    out = rewards.astype(np.float64).copy()
    members: dict[int, list[int]] = {}
    for index, group in enumerate(group_ids.tolist()):
        members.setdefault(group, []).append(index)
    for indices in members.values():
        good = [i for i in indices if rewards[i] >= tau]
        if not good:
            continue
        # Same tie-break as the library: highest ref log-prob, then highest reward, then lowest index.
        anchor = max(good, key=lambda i: (ref_logprobs[i], rewards[i], -i))
        for i in good:
            out[i] = rewards[anchor] + beta * (ref_logprobs[anchor] - ref_logprobs[i])
    return out


def mara_rewards_at(revision: str):
    """``mara_rewards`` from ``src/mara_rl/augment.py`` at a git revision (its imports resolve to today's package)."""
    repo = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{revision}:src/mara_rl/augment.py"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType(f"augment_at_{revision}")
    sys.modules[module.__name__] = module  # dataclasses look their module up while being defined
    exec(compile(source, module.__name__, "exec"), module.__dict__)
    return module.mara_rewards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--against", metavar="REV", help="also time mara_rewards at this git revision")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    rewards = rng.random(args.samples)
    ref_logprobs = rng.normal(-20.0, 5.0, args.samples)
    group_ids = rng.integers(0, args.groups, args.samples)
    beta, tau = 0.01, 0.5

    def run_numpy():
        return mara_rewards(rewards, ref_logprobs, beta=beta, tau=tau, group_ids=group_ids)

    numpy_time = best_time(run_numpy, args.repeats)
    loop_start = time.perf_counter()
    loop_rewards = per_group_loop(rewards, ref_logprobs, group_ids, beta, tau)
    loop_time = time.perf_counter() - loop_start
    np.testing.assert_allclose(run_numpy().rewards, loop_rewards, rtol=0, atol=1e-12)

    print(f"mara_rewards: {args.samples:,} samples in {args.groups:,} groups (beta={beta}, tau={tau})")
    print(f"{'implementation':<28}{'seconds':>10}{'speed-up vs loop':>20}")
    print(f"{'per-group Python loop':<28}{loop_time:>10.4f}{1.0:>19.1f}x")
    print(f"{'mara_rewards (numpy)':<28}{numpy_time:>10.4f}{loop_time / numpy_time:>19.1f}x")
    if args.against:
        earlier = mara_rewards_at(args.against)
        earlier_time = best_time(lambda: earlier(rewards, ref_logprobs, beta=beta, tau=tau, group_ids=group_ids), args.repeats)
        same = earlier(rewards, ref_logprobs, beta=beta, tau=tau, group_ids=group_ids).rewards
        np.testing.assert_array_equal(same, run_numpy().rewards)
        label = f"mara_rewards @ {args.against[:10]}"
        print(f"{label:<28}{earlier_time:>10.4f}{loop_time / earlier_time:>19.1f}x")
        print(f"today's numpy path is {earlier_time / numpy_time:.2f}x faster than {args.against[:10]}")
    try:
        import torch
    except ImportError:
        print("torch not installed: torch path skipped")
        return
    rewards_t, ref_t, groups_t = (torch.from_numpy(a) for a in (rewards.astype(np.float32), ref_logprobs.astype(np.float32), group_ids))
    torch_time = best_time(lambda: mara_rewards(rewards_t, ref_t, beta=beta, tau=tau, group_ids=groups_t), args.repeats)
    print(f"{'mara_rewards (torch, cpu)':<28}{torch_time:>10.4f}{loop_time / torch_time:>19.1f}x")


if __name__ == "__main__":
    main()
