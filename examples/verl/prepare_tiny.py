"""Prepare a small, offline verl run of the paper's "1 or 2" task: a tiny Llama and parquet prompts.

Writes into OUT (first argument): ``model/`` (mara-rl's pre-trained tiny reference, built locally,
with a chat template verl's dataset can apply) and ``train.parquet`` / ``val.parquet`` in verl's
RL dataset format. Nothing is downloaded. The reward function is ``reward.py`` beside this file.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
from transformers import AutoTokenizer

from mara_rl.llm.tasks import ONE_OR_TWO, random_choice_prompt
from mara_rl.llm.tiny import tiny_reference_path

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['content'] }}{% endfor %}"
)


def main(out: Path) -> None:
    model_dir = out / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(tiny_reference_path(out / "cache"), model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(model_dir)
    row = {
        "data_source": "random_choice",
        "prompt": [{"role": "user", "content": random_choice_prompt(ONE_OR_TWO)}],
        "ability": "random_choice",
        "reward_model": {"style": "rule", "ground_truth": ",".join(ONE_OR_TWO)},
        "extra_info": {},
    }
    for name, size in (("train", 256), ("val", 16)):
        pd.DataFrame([{**row, "extra_info": {"index": i}} for i in range(size)]).to_parquet(out / f"{name}.parquet")
    print(f"model and data in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/verl-one-or-two"))
