"""Cost of the collapse metrics and the rollout record against the whole GRPO step, in one run; prints the ratios.

As in ``bench_llm_step.py``, the work is timed at its hooks inside the very steps it is compared
with (whole-step differences between two runs are too noisy on a shared CPU). One ``MaraGRPOTrainer``
trains on the "1 or 2" prompts with completions forced to ``--length`` tokens, per step timing:

- collapse metrics: gathering the batch's texts, rewards and log pi_ref, and
  :func:`mara_rl.integrations.monitor.collapse_metrics` (``mara diagnose``'s computation);
- record writing: building the shard's columns and writing the Parquet file (atomically);
- the record's own log-prob passes: GRPO with aligned steps and no vLLM runs no old-policy pass, so
  the record runs one for ``policy_logprob``; with ``beta = 0`` and ``record_reference_pass=True``
  it also runs the reference pass TRL skips;
- the step: TRL's ``step_time`` (generation, scoring passes, loss and backward).

Two runs: ``beta = --beta`` with MARA (the reference pass is TRL's, reused), and ``beta = 0`` with
``record_reference_pass=True``. The first step (warm-up) is dropped; figures are medians.

    python benchmarks/bench_record.py                        # tiny pre-trained reference, CPU
    python benchmarks/bench_record.py --model Qwen/Qwen2.5-0.5B-Instruct --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict


def timed_run(model: str, steps: int, length: int, generations: int, prompts: int, use_cpu: bool,
              **settings) -> dict[str, list[float]]:
    import torch
    from datasets import Dataset

    from mara_rl.integrations import record as record_module
    from mara_rl.integrations.trl import recording
    from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer
    from mara_rl.llm.tasks import random_choice_dataset_rows, random_choice_reward

    spent: dict[str, float] = defaultdict(float)
    per_step: dict[str, list[float]] = defaultdict(list)

    def sync() -> None:
        if torch.cuda.is_available() and not use_cpu:
            torch.cuda.synchronize()

    def timed(name, function):
        def wrapper(*args, **kwargs):
            sync()
            start = time.perf_counter()
            out = function(*args, **kwargs)
            sync()
            spent[name] += time.perf_counter() - start
            return out

        return wrapper

    originals = (recording.BatchRecorder._log_collapse, record_module.RolloutRecorder.write, recording._logprob_pass)
    recording.BatchRecorder._log_collapse = timed("monitor", originals[0])
    record_module.RolloutRecorder.write = timed("write", originals[1])
    recording._logprob_pass = timed("passes", originals[2])

    class Timed(MaraGRPOTrainer):
        def training_step(self, *args, **kwargs):
            spent.clear()
            out = super().training_step(*args, **kwargs)
            for name in ("monitor", "write", "passes"):
                per_step[name].append(spent[name])
            return out

    try:
        with tempfile.TemporaryDirectory() as out:
            args = MaraGRPOConfig(
                output_dir=out, per_device_train_batch_size=generations * prompts, num_generations=generations,
                max_completion_length=length, generation_kwargs={"min_new_tokens": length}, max_steps=steps,
                logging_steps=1, report_to="none", use_cpu=use_cpu, bf16=not use_cpu, seed=0, save_strategy="no",
                disable_tqdm=True, learning_rate=1e-3, record_rollouts_dir=f"{out}/record", collapse_metrics=True,
                **settings,
            )
            rows = random_choice_dataset_rows(num_prompts=steps * prompts)
            trainer = Timed(model=model, reward_funcs=random_choice_reward, args=args,
                            train_dataset=Dataset.from_list(rows))
            trainer.train()
    finally:
        (recording.BatchRecorder._log_collapse, record_module.RolloutRecorder.write,
         recording._logprob_pass) = originals
    per_step["step"] = [h["step_time"] for h in trainer.state.log_history if "step_time" in h]
    return {key: values[1:] for key, values in per_step.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model id or path (default: the tiny local reference)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=6, help="GRPO steps per run (the first is dropped)")
    parser.add_argument("--length", type=int, default=256, help="completion length in tokens")
    parser.add_argument("--generations", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--beta", type=float, default=0.01)
    args = parser.parse_args()
    if args.model is None:
        from mara_rl.llm.tiny import tiny_reference_path

        args.model = str(tiny_reference_path())
    print(f"model {args.model} on {args.device}: {args.generations * args.prompts} completions of {args.length} "
          f"tokens per step, {args.steps - 1} timed steps per run, medians")
    runs = {
        f"beta={args.beta:g}, MARA (TRL's reference pass)": dict(beta=args.beta, mara=True, mara_tau=1.0),
        "beta=0, record_reference_pass": dict(beta=0.0, record_reference_pass=True),
    }
    for title, settings in runs.items():
        t = timed_run(args.model, args.steps, args.length, args.generations, args.prompts, args.device == "cpu",
                      **settings)
        step = statistics.median(t["step"])
        print(f"\n{title}")
        print(f"  GRPO step (TRL's step_time):        median {step * 1e3:9.1f} ms")
        for name, label in (("monitor", "collapse metrics"), ("write", "record: write shard"),
                            ("passes", "record: own log-prob passes")):
            value = statistics.median(t[name])
            print(f"  {label + ':':34s} median {value * 1e3:9.2f} ms = {100 * value / step:.2f}% of the step")


if __name__ == "__main__":
    main()
