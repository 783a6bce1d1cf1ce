"""Rows per second of ``mara diagnose`` on synthetic rollouts, against a per-prompt loop baseline.

The synthetic rollouts: ``--prompts`` prompts with ``--rows`` completions in total; each prompt
samples its completions from a random set of answers with random reference probabilities and
0/1 rewards (with repeats, as sampling gives). The target is 1e6 rows in under 10 s.

The baseline is the straightforward per-prompt implementation a user would write: pandas
``groupby`` per prompt, then the core's single-problem functions (``kl_target``, ``mara_target``)
on each prompt's classes. Both give the same targets (checked here).

    python benchmarks/bench_diagnose.py                  # 1e6 rows, 20,000 prompts
    python benchmarks/bench_diagnose.py --rows 200000 --prompts 20000 --baseline-prompts 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from mara_rl.diagnose.classes import answer_classes
from mara_rl.diagnose.diagnosis import diagnose
from mara_rl.targets import kl_target, mara_target


def synthetic_rollouts(num_rows: int, num_prompts: int, seed: int = 0) -> pd.DataFrame:
    """``num_rows`` completions over ``num_prompts`` prompts; answers ``a0..a7`` per prompt."""
    rng = np.random.default_rng(seed)
    num_answers = 8
    logits = rng.normal(0.0, 1.5, size=(num_prompts, num_answers))
    log_probs = logits - logsumexp(logits, axis=1, keepdims=True)
    rewards = (rng.random((num_prompts, num_answers)) < 0.5).astype(np.float64)
    prompt = rng.integers(0, num_prompts, size=num_rows)
    # Sample each row's answer from its prompt's reference distribution (Gumbel-max).
    answer = np.argmax(log_probs[prompt] + rng.gumbel(size=(num_rows, num_answers)), axis=1)
    prompt_text = np.array([f"prompt {i}: pick a number" for i in range(num_prompts)], dtype=object)
    answer_text = np.array([f"the answer is a{j}" for j in range(num_answers)], dtype=object)
    return pd.DataFrame(
        {
            "prompt": prompt_text[prompt],
            "completion": answer_text[answer],
            "reward": rewards[prompt, answer],
            "ref_logprob": log_probs[prompt, answer],
        }
    )


def baseline(rollouts: pd.DataFrame, beta: float, kl: str) -> dict[str, dict[str, np.ndarray]]:
    """Per prompt: distinct completions, classes, then one core call per prompt and target."""
    out = {}
    for prompt, frame in rollouts.groupby("prompt", sort=False):
        if len(frame) < 2:
            continue
        distinct = frame.groupby("completion", sort=False).agg(reward=("reward", "mean"), ref=("ref_logprob", "mean"))
        tau = frame["reward"].max()
        out[prompt] = {
            "answers": distinct.index.to_numpy(),
            "vanilla": kl_target(distinct["reward"], distinct["ref"], beta, kl),
            "mara": mara_target(distinct["reward"], distinct["ref"], beta, tau, kl),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--prompts", type=int, default=20_000)
    parser.add_argument("--beta", type=float, default=0.01)
    parser.add_argument("--kl", choices=("reverse", "forward"), default="reverse")
    parser.add_argument("--baseline-prompts", type=int, default=2_000, help="prompts timed for the baseline (it is slow)")
    args = parser.parse_args()

    rollouts = synthetic_rollouts(args.rows, args.prompts)
    start = time.perf_counter()
    groups = answer_classes(rollouts)
    grouped = time.perf_counter() - start
    result = diagnose(groups, args.beta, kl=args.kl)
    total = time.perf_counter() - start
    print(f"{args.rows:,} rows, {result.summary['num_prompts']:,} prompts, {len(result.classes):,} classes, {args.kl} KL")
    print(f"mara diagnose: {total:.2f} s ({grouped:.2f} s building answer classes), {args.rows / total:,.0f} rows/s")

    # Baseline on a subset of prompts (rows per second is what compares).
    keep = rollouts["prompt"].isin(rollouts["prompt"].drop_duplicates().head(args.baseline_prompts))
    subset = rollouts.loc[keep]
    start = time.perf_counter()
    reference = baseline(subset, args.beta, args.kl)
    base_time = time.perf_counter() - start
    classes = result.classes.set_index(["prompt", "answer"])
    worst = 0.0
    for prompt, values in reference.items():
        for name in ("vanilla", "mara"):
            ours = classes.loc[[(prompt, a) for a in values["answers"]], name].to_numpy()
            worst = max(worst, float(np.abs(ours - values[name]).max()))
    base_rate = len(subset) / base_time
    print(
        f"per-prompt baseline: {len(subset):,} rows in {base_time:.2f} s, {base_rate:,.0f} rows/s; "
        f"speed-up {args.rows / total / base_rate:.1f}x; max |difference| of targets {worst:.1e}"
    )
    print(f"1e6 rows in < 10 s: {'yes' if total * 1e6 / args.rows < 10 else 'no'} ({total * 1e6 / args.rows:.2f} s per 1e6 rows)")


if __name__ == "__main__":
    main()
