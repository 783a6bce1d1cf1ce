"""Time spent in MARA and the token-level forward-KL term, against the whole GRPO step, in one run; prints the ratio.

Whole-step timings on a shared CPU are too noisy to resolve a few percent, so the overhead is timed
at the hook, inside the very steps it is compared with. One ``MaraGRPOTrainer`` (``mara=True``,
``kl_direction="forward"``, ``forward_kl_estimator="token"``) trains on the "1 or 2" prompts with
completions forced to ``--length`` tokens (stop tokens suppressed by ``min_new_tokens``). Per step:

- MARA: the trainers' ``_calculate_rewards`` minus TRL's own (the reward functions), i.e. the
  reference sequence log-probs, their gather and the core ``mara_rewards``;
- forward KL: the ``_token_forward_kl`` call of every micro-batch (chunked full-vocabulary KL,
  its gradient, Alg. 2's coefficients, prefix weights) plus the backward of that term;
- the step: TRL's ``step_time`` (generation, scoring passes, loss and backward).

The capture of the hidden states is a view of what the backbone returns, and is not timed. The
first step (warm-up) is dropped; figures are medians over the remaining steps.

    python benchmarks/bench_llm_step.py                        # tiny pre-trained reference, CPU
    python benchmarks/bench_llm_step.py --model Qwen/Qwen2.5-0.5B-Instruct --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict


def timed_run(model: str, steps: int, length: int, generations: int, prompts: int, use_cpu: bool) -> dict:
    """Per-step seconds of the whole step, MARA's work and the forward-KL term, from one training run."""
    import torch
    from datasets import Dataset
    from trl import GRPOTrainer

    from mara_rl.llm import forward_kl
    from mara_rl.llm.tasks import random_choice_dataset_rows, random_choice_reward
    from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer

    spent: dict[str, float] = defaultdict(float)
    per_step: dict[str, list[float]] = defaultdict(list)

    def sync() -> None:
        if torch.cuda.is_available() and not use_cpu:
            torch.cuda.synchronize()

    class TRLRewards(GRPOTrainer):
        def _calculate_rewards(self, *args, **kwargs):
            start = time.perf_counter()
            out = super()._calculate_rewards(*args, **kwargs)
            spent["trl_rewards"] += time.perf_counter() - start
            return out

    class Timed(MaraGRPOTrainer, TRLRewards):  # MRO: the MARA mixin, then TRL's timed reward call
        def _calculate_rewards(self, *args, **kwargs):
            sync()
            start = time.perf_counter()
            out = super()._calculate_rewards(*args, **kwargs)
            sync()
            spent["rewards"] += time.perf_counter() - start
            return out

        def _token_forward_kl(self, *args, **kwargs):
            sync()
            start = time.perf_counter()
            out = super()._token_forward_kl(*args, **kwargs)
            sync()
            spent["forward_kl"] += time.perf_counter() - start
            return out

        def training_step(self, *args, **kwargs):
            spent.clear()
            out = super().training_step(*args, **kwargs)
            per_step["mara"].append(spent["rewards"] - spent["trl_rewards"])
            per_step["forward_kl"].append(spent["forward_kl"] + spent["forward_kl_backward"])
            return out

    backward = forward_kl._TokenForwardKL.backward

    def timed_backward(ctx, *grads):
        sync()
        start = time.perf_counter()
        out = backward(ctx, *grads)
        sync()
        spent["forward_kl_backward"] += time.perf_counter() - start
        return out

    forward_kl._TokenForwardKL.backward = staticmethod(timed_backward)
    try:
        with tempfile.TemporaryDirectory() as out:
            args = MaraGRPOConfig(
                output_dir=out, per_device_train_batch_size=generations * prompts, num_generations=generations,
                max_completion_length=length, generation_kwargs={"min_new_tokens": length}, beta=0.01, mara=True,
                mara_tau=1.0, kl_direction="forward", forward_kl_estimator="token", max_steps=steps,
                logging_steps=1, report_to="none", use_cpu=use_cpu, seed=0, save_strategy="no", disable_tqdm=True,
                learning_rate=1e-3,
            )
            rows = random_choice_dataset_rows(num_prompts=steps * prompts)
            trainer = Timed(model=model, reward_funcs=random_choice_reward, args=args,
                            train_dataset=Dataset.from_list(rows))
            trainer.train()
    finally:
        forward_kl._TokenForwardKL.backward = staticmethod(backward)
    logs = trainer.state.log_history
    per_step["step"] = [h["step_time"] for h in logs if "step_time" in h]
    per_step["length"] = [h["completions/mean_length"] for h in logs if "completions/mean_length" in h]
    return {key: values[1:] for key, values in per_step.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model id or path (default: the tiny local reference)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=8, help="GRPO steps (the first is dropped)")
    parser.add_argument("--length", type=int, default=256, help="completion length in tokens")
    parser.add_argument("--generations", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=4)
    args = parser.parse_args()
    if args.model is None:
        from mara_rl.llm.tiny import tiny_reference_path

        args.model = str(tiny_reference_path())
    t = timed_run(args.model, args.steps, args.length, args.generations, args.prompts, args.device == "cpu")
    step, mara, fkl = (statistics.median(t[k]) for k in ("step", "mara", "forward_kl"))
    print(f"model {args.model} on {args.device}: {args.generations * args.prompts} completions of "
          f"{statistics.mean(t['length']):.0f} tokens per step, {len(t['step'])} timed steps")
    print(f"GRPO step (TRL's step_time):      median {step * 1e3:9.1f} ms")
    print(f"MARA (in _calculate_rewards):     median {mara * 1e3:9.2f} ms  = {100 * mara / step:.2f}% of the step")
    print(f"token forward KL (fwd + bwd):     median {fkl * 1e3:9.2f} ms  = {100 * fkl / step:.2f}% of the step")
    print(f"MARA + forward KL / GRPO step:    {(mara + fkl) / step:.4f} ({100 * (mara + fkl) / step:.2f}%)")


if __name__ == "__main__":
    main()
