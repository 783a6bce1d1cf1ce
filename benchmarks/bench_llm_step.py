"""GRPO step time with MARA vs without, in the same run; prints the ratio.

Both trainers are MaraGRPOTrainer on the same model and task with beta > 0 (so both make the
reference pass); they differ only in ``mara``. Rounds alternate vanilla / MARA so that load on a
shared machine hits both alike; the figure is the median of TRL's per-step ``step_time`` over all
rounds (the first step of each round, which warms up, is dropped). Because a shared CPU makes
whole-step times noisy, it also times ``_calculate_rewards`` itself, where MARA does all its work
(sequence log-probs, gather, ``mara_rewards``): the difference between the two trainers there is
MARA's own cost per step, reported against the vanilla step time.

    python benchmarks/bench_llm_step.py                 # tiny pre-trained reference, CPU
    python benchmarks/bench_llm_step.py --model Qwen/Qwen2.5-0.5B-Instruct --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import tempfile


def step_times(
    mara: bool, model: str, steps: int, seed: int, use_cpu: bool, generations: int, prompts: int
) -> tuple[list[float], list[float]]:
    """Per-step times and per-step ``_calculate_rewards`` times of one training run."""
    import time

    from datasets import Dataset

    from mara_rl.llm.tasks import random_choice_dataset_rows, random_choice_reward
    from mara_rl.llm.trainers import MaraGRPOConfig, MaraGRPOTrainer

    with tempfile.TemporaryDirectory() as out:
        args = MaraGRPOConfig(
            output_dir=out, per_device_train_batch_size=generations * prompts, num_generations=generations,
            max_completion_length=4, beta=0.01, mara=mara, mara_tau=1.0 if mara else None, scale_rewards="none",
            max_steps=steps, logging_steps=1, report_to="none", use_cpu=use_cpu, seed=seed, save_strategy="no",
            disable_tqdm=True, learning_rate=1e-3,
        )
        rows = random_choice_dataset_rows(num_prompts=steps * prompts)
        hook_times: list[float] = []

        class Timed(MaraGRPOTrainer):
            def _calculate_rewards(self, *a, **kw):
                start = time.perf_counter()
                out = super()._calculate_rewards(*a, **kw)
                hook_times.append(time.perf_counter() - start)
                return out

        trainer = Timed(model=model, reward_funcs=random_choice_reward, args=args,
                                  train_dataset=Dataset.from_list(rows))
        trainer.train()
    times = [h["step_time"] for h in trainer.state.log_history if "step_time" in h]
    return times[1:], hook_times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model id or path (default: the tiny local reference)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="GRPO steps per trainer per round")
    parser.add_argument("--generations", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=4)
    args = parser.parse_args()
    if args.model is None:
        from mara_rl.llm.tiny import tiny_reference_path

        args.model = str(tiny_reference_path())
    times: dict[bool, list[float]] = {False: [], True: []}
    hooks: dict[bool, list[float]] = {False: [], True: []}
    for r in range(args.rounds):
        for mara in (False, True) if r % 2 == 0 else (True, False):
            step, hook = step_times(mara, args.model, args.steps, r, args.device == "cpu", args.generations,
                                    args.prompts)
            times[mara] += step
            hooks[mara] += hook
    vanilla, mara = statistics.median(times[False]), statistics.median(times[True])
    hook_cost = statistics.median(hooks[True]) - statistics.median(hooks[False])
    batch = args.generations * args.prompts
    print(f"model {args.model} on {args.device}, batch {batch} completions, {len(times[False])} steps each")
    print(f"GRPO step, vanilla: median {vanilla * 1e3:.1f} ms")
    print(f"GRPO step, MARA:    median {mara * 1e3:.1f} ms")
    print(f"ratio MARA / vanilla: {mara / vanilla:.3f} (overhead {100 * (mara / vanilla - 1):+.1f}%)")
    print(f"MARA's own work per step (_calculate_rewards, MARA minus vanilla): {hook_cost * 1e3:.2f} ms "
          f"= {100 * hook_cost / vanilla:.2f}% of the vanilla step")


if __name__ == "__main__":
    main()
