"""GRPO or RLOO with MARA on the "random_choice" prompts, for any causal LM: a TRL-style script.

Single device:
    python examples/llm/train_mara.py --config examples/llm/one_or_two_grpo.yaml
Several GPUs (one process per GPU; MARA runs on the rewards gathered from all of them):
    accelerate launch --config_file examples/llm/accelerate_multi_gpu.yaml \
        examples/llm/train_mara.py --config examples/llm/one_or_two_grpo.yaml
Every config field can be overridden on the command line, e.g. ``--mara false --kl_direction forward``.
"""

from dataclasses import dataclass, field

from datasets import Dataset
from trl import TrlParser

from mara_rl.llm.tasks import random_choice_dataset_rows, random_choice_reward
from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer, MaraRLOOConfig, MaraRLOOTrainer


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(default="", metadata={"help": "model id or path; empty: the tiny local reference"})
    trainer: str = field(default="grpo", metadata={"help": "'grpo' or 'rloo'"})
    options: list[str] = field(default_factory=lambda: ["1", "2"], metadata={"help": "the answer options"})
    num_prompts: int = field(default=4096, metadata={"help": "dataset rows (all the same prompt)"})


def main() -> None:
    script, _ = TrlParser((ScriptArguments, MaraGRPOConfig)).parse_args_and_config(return_remaining_strings=True)[:2]
    config_cls, trainer_cls = {"grpo": (MaraGRPOConfig, MaraGRPOTrainer), "rloo": (MaraRLOOConfig, MaraRLOOTrainer)}[
        script.trainer
    ]
    _, args = TrlParser((ScriptArguments, config_cls)).parse_args_and_config(return_remaining_strings=True)[:2]
    model = script.model_name_or_path
    if not model:
        from mara_rl.llm.tiny import tiny_reference_path

        model = str(tiny_reference_path())
    dataset = Dataset.from_list(random_choice_dataset_rows(script.options, script.num_prompts))
    trainer = trainer_cls(model=model, reward_funcs=random_choice_reward, args=args, train_dataset=dataset)
    trainer.train()
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    main()
