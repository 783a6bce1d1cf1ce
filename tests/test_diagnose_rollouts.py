"""Rollouts from a Hugging Face model (``mara_rl.llm.rollouts``), on the tiny architecture at random init."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from mara_rl.diagnose.diagnosis import diagnose  # noqa: E402
from mara_rl.diagnose.reading import read_rollouts  # noqa: E402
from mara_rl.llm.rollouts import sample_rollouts, sequence_logprobs, write_rollouts  # noqa: E402
from mara_rl.llm.tasks import random_choice_prompt, random_choice_reward  # noqa: E402
from mara_rl.llm.tiny import tiny_untrained_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return tiny_untrained_model(seed=0)


def prompt_ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_single_token_completions_sum_to_one(tiny):
    model, tokenizer = tiny
    prompt = prompt_ids(tokenizer, random_choice_prompt(("1", "2")))
    vocab = list(range(len(tokenizer)))
    logprobs = sequence_logprobs(model, [prompt] * len(vocab), [[t] for t in vocab], pad_token_id=tokenizer.pad_token_id)
    assert float(np.logaddexp.reduce(logprobs)) == pytest.approx(0.0, abs=1e-5)


def test_sequence_logprob_is_the_sum_of_token_logprobs_and_ignores_padding(tiny):
    model, tokenizer = tiny
    short = prompt_ids(tokenizer, random_choice_prompt(("1", "2")))
    long = prompt_ids(tokenizer, random_choice_prompt(("3", "4", "5", "6")))
    completion = prompt_ids(tokenizer, "2 maybe") + [tokenizer.eos_token_id]
    with torch.no_grad():
        ids = torch.tensor([short + completion])
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    manual = sum(float(logp[len(short) - 1 + i, tok]) for i, tok in enumerate(completion))
    batched = sequence_logprobs(model, [short, long], [completion, completion], pad_token_id=tokenizer.pad_token_id)
    alone = sequence_logprobs(model, [short], [completion], pad_token_id=tokenizer.pad_token_id)
    assert alone[0] == pytest.approx(manual, abs=1e-5)
    assert batched[0] == pytest.approx(manual, abs=1e-5)


def test_sample_rollouts_rows_rewards_and_determinism(tiny, tmp_path):
    model, tokenizer = tiny
    options = [["1", "2"], ["3", "4", "5"]]
    prompts = [random_choice_prompt(o) for o in options]
    seen = {}

    def reward_fn(prompts, completions, options, **kwargs):
        seen["columns"] = (len(prompts), len(completions), len(options))
        return random_choice_reward(completions, options)

    kwargs = dict(num_samples=6, max_new_tokens=3, reward_columns={"options": options}, seed=3)
    rows = sample_rollouts(model, tokenizer, prompts, reward_fn, **kwargs)
    assert len(rows) == 12 and seen["columns"] == (12, 12, 12)
    assert [r["prompt"] for r in rows] == [prompts[0]] * 6 + [prompts[1]] * 6
    for row, opts in zip(rows, [options[0]] * 6 + [options[1]] * 6):
        assert row["reward"] == float(row["completion"].strip() in opts)
        assert math.isfinite(row["ref_logprob"]) and row["ref_logprob"] <= 0.0
    by_text = {}
    for row in rows:
        by_text.setdefault((row["prompt"], row["completion"]), set()).add(round(row["ref_logprob"], 6))
    assert all(len(v) == 1 for v in by_text.values())  # identical completions, identical log-probs
    assert rows == sample_rollouts(model, tokenizer, prompts, reward_fn, **kwargs)

    path = write_rollouts(rows, tmp_path / "rollouts.jsonl")
    result = diagnose(read_rollouts(path), 0.1, tau=0.0)
    assert result.summary["num_rows"] == 12


def test_policy_logprobs_come_from_the_sampling_model(tiny):
    model, tokenizer = tiny
    other, _ = tiny_untrained_model(seed=1)
    prompts = [random_choice_prompt(("1", "2"))]
    rows = sample_rollouts(
        model, tokenizer, prompts, lambda prompts, completions, **kwargs: [0.0] * len(completions), num_samples=3, max_new_tokens=2, ref_model=other
    )
    completions = [prompt_ids(tokenizer, r["completion"]) for r in rows]
    for row, completion in zip(rows, completions):
        assert math.isfinite(row["policy_logprob"]) and row["policy_logprob"] != row["ref_logprob"]
        if len(completion) == 2:  # cut off at max_new_tokens: no end-of-sequence token
            ids = prompt_ids(tokenizer, prompts[0])
            own = sequence_logprobs(model, [ids], [completion], pad_token_id=tokenizer.pad_token_id)[0]
            assert row["policy_logprob"] == pytest.approx(own, abs=1e-5)


def test_bad_arguments(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="non-empty list"):
        sample_rollouts(model, tokenizer, "a prompt", random_choice_reward)
    with pytest.raises(ValueError, match="num_samples"):
        sample_rollouts(model, tokenizer, ["p"], random_choice_reward, num_samples=0)
    with pytest.raises(ValueError, match="reward_columns"):
        sample_rollouts(model, tokenizer, ["p"], random_choice_reward, reward_columns={"options": []})
