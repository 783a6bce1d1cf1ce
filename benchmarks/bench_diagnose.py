"""``mara diagnose`` end to end against ``pd.read_json(lines=True)`` reading the same file.

Writes synthetic rollouts to a JSON Lines file: ``--prompts`` prompts with ``--rows`` completions in
total; each prompt samples its completions from 8 answers with random reference probabilities and
0/1 rewards (with repeats, as sampling gives). Then, in one process and on the same file:

- ``pd.read_json(path, lines=True)``: only parsing the file with pandas;
- ``mara diagnose PATH --beta B``: the whole command (read, check, classes, targets, per-prompt
  summaries, table), in process; its ratio to the line above is the figure (<= 1: faster);
- the same three stages timed one by one;
- a per-prompt loop on ``--baseline-prompts`` prompts (pandas ``groupby`` per prompt, then the
  core's single-problem ``kl_target``, ``mara_target`` and ``describe_target``, as diagnose did its
  summaries before): rows per second, and the largest difference from diagnose's targets and
  summaries.

Each timing is the best of ``--repeats``.

    python benchmarks/bench_diagnose.py                       # 1e6 rows, 20,000 prompts
    python benchmarks/bench_diagnose.py --kl forward --gzip
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from mara_rl.cli import main as mara
from mara_rl.diagnose.classes import answer_classes
from mara_rl.diagnose.diagnosis import diagnose
from mara_rl.diagnose.reading import read_rollouts
from mara_rl.targets import describe_target, kl_target, mara_target
from timing import best_time


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


def baseline(rollouts: pd.DataFrame, beta: float, kl: str) -> dict[str, dict]:
    """Per prompt: distinct completions, then one core call per prompt, target and summary."""
    out = {}
    for prompt, frame in rollouts.groupby("prompt", sort=False):
        if len(frame) < 2:
            continue
        distinct = frame.groupby("completion", sort=False).agg(reward=("reward", "mean"), ref=("ref_logprob", "mean"))
        tau = frame["reward"].max()
        rewards = distinct["reward"].to_numpy()
        vanilla = kl_target(rewards, distinct["ref"], beta, kl)
        mara_probs = mara_target(rewards, distinct["ref"], beta, tau, kl)
        out[prompt] = {
            "answers": distinct.index.to_numpy(),
            "vanilla": vanilla,
            "mara": mara_probs,
            "vanilla_effective_good": describe_target(vanilla, rewards, tau).effective_good,
            "mara_effective_good": describe_target(mara_probs, rewards, tau).effective_good,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--prompts", type=int, default=20_000)
    parser.add_argument("--beta", type=float, default=0.01)
    parser.add_argument("--kl", choices=("reverse", "forward"), default="reverse")
    parser.add_argument("--gzip", action="store_true", help="write and read rollouts.jsonl.gz")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline-prompts", type=int, default=300, help="prompts timed for the per-prompt loop (it is slow)")
    args = parser.parse_args()

    rollouts = synthetic_rollouts(args.rows, args.prompts)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("rollouts.jsonl.gz" if args.gzip else "rollouts.jsonl")
        rollouts.to_json(path, orient="records", lines=True)
        path.read_bytes()  # both readers start from the page cache
        argv = ["diagnose", str(path), "--beta", str(args.beta), "--kl", args.kl]

        def run_cli() -> None:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                if mara(argv) != 0:
                    raise RuntimeError(f"mara {' '.join(argv)} failed")

        read_json = best_time(lambda: pd.read_json(path, lines=True), args.repeats)
        end_to_end = best_time(run_cli, args.repeats)
        reading = best_time(lambda: read_rollouts(path), args.repeats)
        frame = read_rollouts(path)
        building = best_time(lambda: answer_classes(frame), args.repeats)
        groups = answer_classes(frame)
        targets = best_time(lambda: diagnose(groups, args.beta, kl=args.kl), args.repeats)
        result = diagnose(groups, args.beta, kl=args.kl)
        size = path.stat().st_size

    print(
        f"{args.rows:,} rows, {result.summary['num_prompts']:,} prompts, {len(result.classes):,} classes, "
        f"{args.kl} KL, {path.name} of {size / 1e6:.1f} MB (best of {args.repeats})"
    )
    print(f"pd.read_json(lines=True) alone:  {read_json:6.2f} s")
    print(
        f"mara diagnose end to end:        {end_to_end:6.2f} s  (read + check {reading:.2f} s, answer classes "
        f"{building:.2f} s, targets + summaries {targets:.2f} s)"
    )
    print(f"ratio diagnose / read_json:      {end_to_end / read_json:6.2f}  (no slower: {'yes' if end_to_end <= read_json else 'no'})")

    # The loop reads the rows diagnose read (JSON keeps 10 significant digits of each log-prob).
    keep = frame["prompt"].isin(frame["prompt"].drop_duplicates().head(args.baseline_prompts))
    subset = frame.loc[keep]
    start = time.perf_counter()
    reference = baseline(subset, args.beta, args.kl)
    base_time = time.perf_counter() - start
    classes = result.classes.set_index(["prompt", "answer"])
    prompts = result.prompts.set_index("prompt")
    worst_target = worst_summary = 0.0
    for prompt, values in reference.items():
        for name in ("vanilla", "mara"):
            ours = classes.loc[[(prompt, a) for a in values["answers"]], name].to_numpy()
            worst_target = max(worst_target, float(np.abs(ours - values[name]).max()))
            gap = abs(prompts.loc[prompt, f"{name}_effective_good"] - values[f"{name}_effective_good"])
            worst_summary = max(worst_summary, float(gap))
    base_rate = len(subset) / base_time
    rate = args.rows / end_to_end
    print(
        f"per-prompt loop (targets + describe_target): {len(subset):,} rows in {base_time:.2f} s, {base_rate:,.0f} rows/s; "
        f"diagnose end to end {rate:,.0f} rows/s ({rate / base_rate:.1f}x); max |difference| of targets "
        f"{worst_target:.1e}, of effective numbers {worst_summary:.1e}"
    )


if __name__ == "__main__":
    main()
