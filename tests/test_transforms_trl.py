"""Named transforms inside MaraGRPOTrainer / MaraRLOOTrainer: the batch's advantages are the core's."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from _trl_helpers import NUM_GENERATIONS, parity_reward, tiny_trainer  # noqa: E402

from mara_rl.integrations.trl.trainers import (  # noqa: E402
    MaraGRPOConfig,
    MaraGRPOTrainer,
    MaraRLOOConfig,
    MaraRLOOTrainer,
)
from mara_rl.transforms import OutcomeCounts, get_transform  # noqa: E402


def make_trainer(trainer_cls, config_cls, model_dir, tmp_path, **overrides):
    scaling = {} if config_cls is MaraRLOOConfig else {"scale_rewards": "none"}  # RLOO has no such setting
    return tiny_trainer(trainer_cls, config_cls, model_dir, tmp_path / "out", **{"bf16": False, **scaling, **overrides})


def policy_sequence_logprobs(trainer, out):
    """log pi(y|x) over TRL's completion mask, by a plain forward pass of the policy."""
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits / trainer.temperature, dim=-1).gather(2, ids[:, 1:, None])[..., 0]
    t = out["completion_ids"].size(1)
    return (logp[:, -t:] * out["completion_mask"]).sum(dim=1)


@pytest.mark.parametrize("name,value", [("unlikeliness", 0.5), ("pkpo", 2), ("outcome_batch", 0.5), ("outcome_ucb", 1.0),
                                        ("passk_advantage", 2), ("grpo_passk", None)])
@pytest.mark.parametrize("beta", [0.1, 0.0])
def test_grpo_advantages_are_those_of_the_core_transform(name, value, beta, model_dir, tmp_path):
    transform = get_transform(name)
    if beta == 0.0 and "policy_logprobs" in transform.needs:
        pytest.skip("needs a reference pass")
    trainer = make_trainer(MaraGRPOTrainer, MaraGRPOConfig, model_dir, tmp_path, reward_transform=name,
                           reward_transform_value=value, beta=beta)
    batch = next(iter(trainer.get_train_dataloader()))
    out = trainer._generate_and_score_completions(batch)
    kept = [ids[m.bool()].tolist() for ids, m in zip(out["completion_ids"], out["completion_mask"])]
    rewards = torch.tensor(parity_reward(kept), dtype=torch.float64)
    groups = torch.arange(len(rewards)) // NUM_GENERATIONS
    inputs = {}
    if "policy_logprobs" in transform.needs:
        inputs["policy_logprobs"] = policy_sequence_logprobs(trainer, out).double()
    if "outcomes" in transform.needs:
        inputs["outcomes"] = [trainer.processing_class.decode(ids, skip_special_tokens=True).strip() for ids in kept]
    if "outcome_counts" in transform.needs:  # a fresh run: the counts are this batch's
        answers = [trainer.processing_class.decode(ids, skip_special_tokens=True).strip() for ids in kept]
        inputs["outcome_counts"] = OutcomeCounts().update([x["prompt"] for x in batch], answers)
    result = transform(rewards, group_ids=groups, value=value, **inputs).float()
    metrics = trainer._metrics["train" if trainer.model.training else "eval"]
    assert metrics["mara/reward_raw"][-1] == pytest.approx(float(rewards.mean()), abs=1e-6)
    if transform.kind == "reward":
        assert metrics["mara/reward_transformed"][-1] == pytest.approx(float(result.mean()), abs=1e-5)
        result = result - result.view(-1, NUM_GENERATIONS).mean(dim=1).repeat_interleave(NUM_GENERATIONS)
    else:
        assert "mara/reward_transformed" not in metrics
    assert torch.allclose(out["advantages"], result, atol=1e-4)


def test_transform_config_errors(model_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown transform 'nope'"):
        MaraGRPOConfig(output_dir=str(tmp_path), reward_transform="nope", use_cpu=True)
    with pytest.raises(ValueError, match="alternatives"):
        MaraGRPOConfig(output_dir=str(tmp_path), reward_transform="pkpo", mara=True, beta=0.1, use_cpu=True)
    with pytest.raises(ValueError, match="beta > 0"):
        MaraGRPOConfig(output_dir=str(tmp_path), reward_transform="unlikeliness", beta=0.0, use_cpu=True)
    with pytest.raises(ValueError, match="GRPO only"):
        make_trainer(MaraRLOOTrainer, MaraRLOOConfig, model_dir, tmp_path, reward_transform="grpo_passk")


@pytest.mark.parametrize(("value", "message"), [
    (float("nan"), "must be a finite number, got nan"), (True, "must be a finite number, got True"),
    ("four", "must be a finite number, got 'four'"), (-1.0, r"reward_transform_value=-1 \(pkpo's k\) cannot run on groups of"),
    (16.0, "on groups of 4"),  # k above the group size
])
def test_transform_value_is_checked_when_the_config_is_built(tmp_path, value, message):
    for config_cls in (MaraGRPOConfig, MaraRLOOConfig):
        with pytest.raises(ValueError, match=message) as err:
            config_cls(output_dir=str(tmp_path), reward_transform="pkpo", reward_transform_value=value, beta=0.1,
                       num_generations=4, use_cpu=True)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="name a transform"):
        MaraGRPOConfig(output_dir=str(tmp_path), reward_transform_value=0.5, beta=0.1, use_cpu=True)
    assert MaraGRPOConfig(output_dir=str(tmp_path), reward_transform="pkpo", reward_transform_value=2, beta=0.1,
                          num_generations=4, use_cpu=True).reward_transform_value == 2.0


def test_a_penalty_that_pays_correct_answers_less_than_wrong_ones_is_warned_about(tmp_path):
    import warnings

    from mara_rl.integrations.settings import check_transform
    from mara_rl.transforms import TRANSFORMS

    names = {"name": "reward_transform", "value": "reward_transform_value"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no registered setting inverts the order, at any group size
        for transform in TRANSFORMS.values():
            for value in (None, *transform.settings):
                smallest = int(value or transform.default) if transform.knob == "k" else 2
                check_transform(transform.name, value, group_sizes=tuple(range(smallest, 65)), names=names)
        check_transform("unlikeliness", 1.3, group_sizes=(4,), names=names)  # below 4 / 3: the most likely keeps 0.025
    # Above G / (G - 1) the most likely correct answer earns less than a wrong one (1 - 1.2 * 15 / 16 < 0).
    with pytest.warns(UserWarning, match=r"pays a correct answer less than a wrong one on groups of 16, 32 \(at 16 samples the "
                      r"most likely correct answer gets -0.125, a wrong one 0\)") as caught:
        check_transform("unlikeliness", 1.2, group_sizes=(4, 16, 32), names=names)
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # at G / (G - 1) exactly the two are paid the same: no inversion
        check_transform("unlikeliness", 27 / 26, group_sizes=(27,), names=names)
    with pytest.warns(UserWarning, match=r"reward_transform_value=2 \(unlikeliness's penalty\) pays"):
        MaraGRPOConfig(output_dir=str(tmp_path), reward_transform="unlikeliness", reward_transform_value=2.0, beta=0.1,
                       num_generations=4, use_cpu=True)


def test_outcome_transforms_compare_the_answer_key_first_group(model_dir, tmp_path):
    import re

    trainer = make_trainer(MaraGRPOTrainer, MaraGRPOConfig, model_dir, tmp_path, reward_transform="outcome_batch",
                           reward_transform_value=1.0, beta=0.1, collapse_answer_key=r"(\S)")
    batch = next(iter(trainer.get_train_dataloader()))
    out = trainer._generate_and_score_completions(batch)
    kept = [ids[m.bool()].tolist() for ids, m in zip(out["completion_ids"], out["completion_mask"])]
    texts = [trainer.processing_class.decode(ids, skip_special_tokens=True) for ids in kept]
    answers = [m.group(1) if (m := re.search(r"(\S)", t)) else t.strip() for t in texts]  # first character, or the text
    assert len(set(answers)) < len(set(texts)), "the key merges answers the texts keep apart"
    rewards = torch.tensor(parity_reward(kept), dtype=torch.float64)
    groups = torch.arange(len(rewards)) // NUM_GENERATIONS
    result = get_transform("outcome_batch")(rewards, group_ids=groups, value=1.0, outcomes=answers).float()
    result = result - result.view(-1, NUM_GENERATIONS).mean(dim=1).repeat_interleave(NUM_GENERATIONS)
    assert torch.allclose(out["advantages"], result, atol=1e-4)


def test_outcome_transform_answer_key_is_checked_with_the_config(tmp_path):
    with pytest.raises(ValueError, match="^collapse_answer_key: answer_key must contain a capturing group"):
        MaraGRPOConfig(output_dir=str(tmp_path), reward_transform="outcome_ucb", collapse_answer_key="no group",
                       beta=0.1, use_cpu=True)
