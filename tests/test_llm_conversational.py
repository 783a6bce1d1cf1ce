"""Conversational prompts end to end: the tiny reference's chat template, ``sample_rollouts`` and TRL training."""

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mara_rl.integrations.record import canonical_text  # noqa: E402
from mara_rl.llm.rollouts import sample_rollouts  # noqa: E402
from mara_rl.llm.tasks import random_choice_prompt, random_choice_reward  # noqa: E402
from mara_rl.llm.tiny import MODEL_DIRNAME, tiny_reference_path, tiny_untrained_model  # noqa: E402


def chat(text):
    return [{"role": "user", "content": text}]


def test_a_cached_reference_without_template_gets_one_and_keeps_its_answers(tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    cached = tiny_reference_path()
    old = tmp_path / MODEL_DIRNAME
    shutil.copytree(cached, old)
    config = json.loads((old / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)  # as the reference was cached before it had a template
    (old / "tokenizer_config.json").write_text(json.dumps(config))
    (old / "chat_template.jinja").unlink(missing_ok=True)
    assert AutoTokenizer.from_pretrained(old).chat_template is None
    weights = (old / "model.safetensors").read_bytes()

    assert tiny_reference_path(tmp_path) == old
    tokenizer = AutoTokenizer.from_pretrained(old)
    assert (old / "model.safetensors").read_bytes() == weights
    prompt = random_choice_prompt(("1", "2"))
    rendered = tokenizer.apply_chat_template(chat(prompt), tokenize=False, add_generation_prompt=True)
    assert tokenizer(rendered)["input_ids"] == tokenizer(prompt)["input_ids"]
    model = LlamaForCausalLM.from_pretrained(old)
    ids = torch.tensor([tokenizer(rendered)["input_ids"]])
    with torch.no_grad():
        reference = LlamaForCausalLM.from_pretrained(cached)(torch.tensor([tokenizer(prompt)["input_ids"]])).logits
        assert torch.equal(model(ids).logits, reference)


def test_sample_rollouts_passes_what_trl_passes_to_a_conversational_reward_function():
    model, tokenizer = tiny_untrained_model(seed=0)
    options = [["1", "2"], ["3", "4"]]
    prompts = [chat(random_choice_prompt(o)) for o in options]
    seen = {}

    def conversational_reward(prompts, completions, completion_ids, options, **kwargs):
        seen.update(prompt=prompts[0], completion=completions[0], ids=completion_ids[0])
        return [float(c[0]["content"].strip() in o) for c, o in zip(completions, options)]

    rows = sample_rollouts(model, tokenizer, prompts, conversational_reward, num_samples=3, max_new_tokens=2,
                           reward_columns={"options": options})
    assert seen["prompt"] == prompts[0]
    assert seen["completion"] == [{"role": "assistant", "content": rows[0]["completion"]}]
    assert tokenizer.decode(seen["ids"], skip_special_tokens=True) == rows[0]["completion"]
    assert [r["prompt"] for r in rows] == [canonical_text(prompts[0])] * 3 + [canonical_text(prompts[1])] * 3
    plain = sample_rollouts(model, tokenizer, [random_choice_prompt(o) for o in options], random_choice_reward,
                            num_samples=3, max_new_tokens=2, reward_columns={"options": options})
    # The template renders a one-message chat as the plain prompt: same samples, log-probs and rewards.
    assert [(r["completion"], r["ref_logprob"], r["reward"]) for r in rows] == [
        (r["completion"], r["ref_logprob"], r["reward"]) for r in plain]
    with pytest.raises(ValueError, match="mix"):
        sample_rollouts(model, tokenizer, [prompts[0], "text"], random_choice_reward)


def test_grpo_trains_on_a_conversational_dataset_with_the_tiny_reference(tmp_path):
    pytest.importorskip("trl")
    from datasets import Dataset

    from mara_rl.integrations.record import read_record
    from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer

    rows = [{"prompt": chat(random_choice_prompt(("1", "2"))), "options": ["1", "2"]} for _ in range(16)]
    args = MaraGRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=4, max_completion_length=4,
        beta=0.1, mara=True, mara_tau=1.0, max_steps=1, report_to="none", use_cpu=True, bf16=False,
        save_strategy="no", disable_tqdm=True, record_rollouts_dir=str(tmp_path / "record"),
    )
    trainer = MaraGRPOTrainer(model=str(tiny_reference_path()), reward_funcs=random_choice_reward, args=args,
                              train_dataset=Dataset.from_list(rows))
    trainer.train()
    record = read_record(tmp_path / "record").to_pandas()
    assert (record["prompt"] == canonical_text(rows[0]["prompt"])).all()
    assert record["reward"].mean() > 0.5  # the reference answers validly about 95% of the time
    assert record["reward"].tolist() == [float(c.strip() in ("1", "2")) for c in record["completion"]]


def test_the_example_config_parses_on_a_cpu(tmp_path):
    pytest.importorskip("trl")
    from pathlib import Path

    from trl import TrlParser

    from mara_rl.integrations.trl.trainers import MaraGRPOConfig

    example = Path(__file__).parents[1] / "examples/llm/one_or_two_grpo.yaml"
    argv = ["--config", str(example), "--output_dir", str(tmp_path)]
    config = TrlParser((MaraGRPOConfig,)).parse_args_and_config(argv, return_remaining_strings=True)[0]
    assert config.bf16 is False and config.mara  # TRL's bf16 check would raise here on a CPU-only machine
