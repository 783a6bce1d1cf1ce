"""The TRL behaviours ``mara_rl.integrations.trl.trainers`` relies on, asserted on TRL's own (stock) trainers.

Each check fails with a message naming the assumption and the installed TRL version, so a TRL
upgrade that breaks MARA is caught here first. The pyproject pin of TRL is the range tested here.
"""

import inspect
import tomllib
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from _trl_helpers import (  # noqa: E402
    NUM_GENERATIONS,
    STOP_IDS,
    is_truncated,
    length_reward,
    parity_reward,
    save_tiny_model,
)
from datasets import Dataset  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402
from packaging.version import Version  # noqa: E402
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer  # noqa: E402

from mara_rl.llm.tasks import random_choice_dataset_rows  # noqa: E402
from mara_rl.integrations.trl.trainers import (  # noqa: E402
    TESTED_TRL,
    capture_completion_hidden,
    causal_lm,
    normalize_then_sum,
    trl_is_tested,
)

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def expect(condition, assumption: str) -> None:
    assert condition, f"TRL {trl.__version__}: {assumption}"


class Recorder:
    """Records, on a stock trainer, the log-prob passes, the reward call and the loss inputs, in order."""

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                         *args, **kwargs)
        self.events.append({"event": "pass", "model": model, "grad": torch.is_grad_enabled(),
                            "mask": attention_mask[:, -logits_to_keep:].clone(), "logps": out[0].detach().clone()})
        return out

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        rewards = rewards + self.reward_offset(rewards)
        self.events.append({"event": "rewards", "prompts": prompts, "ids": completion_ids_list,
                            "returned": rewards.clone()})
        return rewards

    def reward_offset(self, rewards):
        return torch.zeros_like(rewards)

    def _generate_and_score_completions(self, inputs):
        self.events = []
        output = super()._generate_and_score_completions(inputs)
        output["probe"] = torch.arange(output["advantages"].size(0), dtype=torch.float32)
        output["probe_3d"] = torch.randn(output["advantages"].size(0), 3, 2)
        self.generations.append({"events": self.events, "output": output})
        return output

    def _compute_loss(self, model, inputs):
        self.events = []
        loss = super()._compute_loss(model, inputs)
        self.loss_calls.append({"events": self.events, "inputs": inputs})
        return loss


class RecordingGRPO(Recorder, GRPOTrainer):
    pass


class RecordingRLOO(Recorder, RLOOTrainer):
    pass


TRAINERS = {"grpo": (RecordingGRPO, GRPOConfig), "rloo": (RecordingRLOO, RLOOConfig)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-stops"))


def make(kind, model_dir, tmp_path, **overrides):
    trainer_cls, config_cls = TRAINERS[kind]
    settings = dict(
        output_dir=str(tmp_path / kind), per_device_train_batch_size=8, num_generations=NUM_GENERATIONS,
        max_completion_length=3, beta=0.1, learning_rate=1e-3, max_steps=1, report_to="none", use_cpu=True,
        seed=0, save_strategy="no", disable_tqdm=True, bf16=False,
    )
    settings.update(overrides)
    rows = random_choice_dataset_rows(num_prompts=32)
    for i, row in enumerate(rows):  # distinct prompts, so each group can be told apart
        row["prompt"] = row["prompt"].replace("2 options", f"{2 + i % 7} options")
    funcs = settings.pop("reward_funcs", parity_reward)
    trainer = trainer_cls(model=model_dir, reward_funcs=funcs, args=config_cls(**settings),
                          train_dataset=Dataset.from_list(rows), eval_dataset=Dataset.from_list(rows[:4]))
    trainer.generations, trainer.loss_calls, trainer.events = [], [], []
    return trainer


def score_one_batch(trainer):
    return trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))


def test_installed_trl_is_the_tested_release_and_pyproject_pins_it():
    llm = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["llm"]
    (spec,) = [Requirement(r) for r in llm if Requirement(r).name == "trl"]
    expect(trl_is_tested(), f"is one of the tested releases {TESTED_TRL}")
    expect(Version(trl.__version__) in spec.specifier, f"satisfies the pyproject pin {spec}")
    for major, minor in TESTED_TRL:
        expect(Version(f"{major}.{minor}.0") in spec.specifier, f"tested release {major}.{minor} is inside {spec}")
    (low_major, low_minor), (high_major, high_minor) = min(TESTED_TRL), max(TESTED_TRL)
    below = f"{low_major}.{low_minor - 1}.99" if low_minor else f"{low_major - 1}.99"
    expect(Version(below) not in spec.specifier, f"the pin {spec} excludes releases older than the tested ones")
    expect(Version(f"{high_major}.{high_minor + 1}.0") not in spec.specifier,
           f"the pin {spec} excludes the untested next minor release")


@pytest.mark.parametrize("trainer_cls", [GRPOTrainer, RLOOTrainer], ids=["grpo", "rloo"])
def test_overridden_methods_have_the_signatures_the_subclasses_call(trainer_cls):
    name = trainer_cls.__name__
    expected = {
        "_get_per_token_logps_and_entropies": ["self", "model", "input_ids", "attention_mask", "logits_to_keep"],
        "_generate_and_score_completions": ["self", "inputs"],
        "_calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
        "_compute_loss": ["self", "model", "inputs"],
    }
    for method, head in expected.items():
        expect(hasattr(trainer_cls, method), f"{name}.{method} exists")
        params = list(inspect.signature(getattr(trainer_cls, method)).parameters)
        expect(params[: len(head)] == head, f"{name}.{method} starts with parameters {head}, got {params}")


@pytest.mark.parametrize("kind,misaligned", [("grpo", False), ("grpo", True), ("rloo", False)],
                         ids=["grpo", "grpo-old-logps", "rloo"])
def test_scoring_passes_run_before_the_rewards_and_the_last_is_the_reference(kind, misaligned, model_dir, tmp_path):
    extra = dict(gradient_accumulation_steps=2, steps_per_generation=4) if misaligned else {}
    trainer = make(kind, model_dir, tmp_path, **extra)
    out = score_one_batch(trainer)
    events = trainer.generations[-1]["events"]
    kinds = [e["event"] for e in events]
    expect(kinds[-1] == "rewards" and kinds.count("rewards") == 1,
           f"_generate_and_score_completions calls _calculate_rewards once, after every log-prob pass: {kinds}")
    passes = events[:-1]
    old_pass = kind == "rloo" or misaligned  # GRPO: only when generation and optimiser steps are misaligned
    expect(len(passes) == 1 + old_pass, f"{kind} makes {1 + old_pass} log-prob passes while scoring, got {kinds}")
    expect(all(not p["grad"] for p in passes), "the scoring passes run without grad")
    expect(passes[-1]["model"] is trainer.ref_model, "the last pass before _calculate_rewards is on ref_model")
    if old_pass:
        expect(passes[0]["model"] is trainer.model, "the first scoring pass (old log-probs) is on the policy")
    for p in passes:
        expect(torch.equal(p["mask"], out["completion_mask"]),
               "each pass gets attention_mask = [prompt_mask, completion_mask] with TRL's completion mask")
    if kind == "grpo":
        expect(torch.equal(out["ref_per_token_logps"], passes[-1]["logps"]), "GRPO's KL term uses that last pass")
        expect(("old_per_token_logps" in out) == old_pass
               and (not old_pass or torch.equal(out["old_per_token_logps"], passes[0]["logps"])),
               "GRPO's output has old_per_token_logps (the policy's scoring pass) exactly when it made that pass")
    else:
        expect(torch.allclose(out["old_logps"], (passes[0]["logps"] * out["completion_mask"]).sum(1)),
               "RLOO's old_logps are the first pass summed over the completion mask")
    rewards = events[-1]
    expect(rewards["returned"].shape == (len(rewards["prompts"]) * trainer.accelerator.num_processes, 1),
           "_calculate_rewards returns [samples of all processes, reward functions]")
    groups = [rewards["prompts"][i : i + NUM_GENERATIONS] for i in range(0, len(rewards["prompts"]), NUM_GENERATIONS)]
    expect(all(len(set(g)) == 1 for g in groups), "each run of num_generations consecutive samples shares a prompt")


def test_truncated_completions_get_an_all_zero_mask_in_every_pass(model_dir, tmp_path):
    trainer = make("grpo", model_dir, tmp_path, mask_truncated_completions=True,
                   gradient_accumulation_steps=2, steps_per_generation=4)
    out = score_one_batch(trainer)
    events = trainer.generations[-1]["events"]
    truncated = torch.tensor([is_truncated(ids) for ids in events[-1]["ids"]])
    expect(0 < truncated.sum() < len(truncated), "the test batch holds truncated and complete completions")
    expect(set(trainer.eos_token_ids) == set(STOP_IDS), "TRL's stop ids are generation_config.eos_token_id")
    expect(torch.equal(out["completion_mask"].sum(1) == 0, truncated),
           "mask_truncated_completions zeroes exactly the truncated rows of completion_mask")
    for p in events[:-1]:
        expect(torch.equal(p["mask"].sum(1) == 0, truncated), "the scoring passes see the zeroed mask")
        expect(bool((p["logps"][truncated] == 0).all()), "masked tokens get log-prob 0 (a masked sum reads 0)")


class OffsetGRPO(RecordingGRPO):
    def reward_offset(self, rewards):
        return torch.linspace(0.0, 3.0, rewards.size(0))[:, None].expand_as(rewards)


class OffsetRLOO(RecordingRLOO):
    def reward_offset(self, rewards):
        return torch.linspace(0.0, 3.0, rewards.size(0))[:, None].expand_as(rewards)


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_advantages_are_built_from_what_calculate_rewards_returns(kind, model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(TRAINERS, kind, ({"grpo": OffsetGRPO, "rloo": OffsetRLOO}[kind], TRAINERS[kind][1]))
    extra = dict(scale_rewards="none") if kind == "grpo" else dict(reward_clip_range=(-1.0, 1.5))
    trainer = make(kind, model_dir, tmp_path, **extra)
    out = score_one_batch(trainer)
    events = trainer.generations[-1]["events"]
    rewards = (events[-1]["returned"] * trainer.reward_weights[None, :]).nansum(1)
    if kind == "rloo":
        expect(trainer.reward_clip_range == (-1.0, 1.5), "RLOO keeps the clip range as self.reward_clip_range")
        rewards = rewards.clamp(-1.0, 1.5)  # RLOO clips what _calculate_rewards returned ...
        ref = events[-2]["logps"]
        rewards = rewards - trainer.beta * ((events[0]["logps"] - ref) * out["completion_mask"]).sum(1)  # ... then KL
        grouped = rewards.view(-1, NUM_GENERATIONS)
        expected = grouped - (grouped.sum(1, keepdim=True) - grouped) / (NUM_GENERATIONS - 1)
    else:
        grouped = rewards.view(-1, NUM_GENERATIONS)
        expected = grouped - grouped.mean(1, keepdim=True)
    expect(torch.allclose(out["advantages"], expected.flatten(), atol=1e-5),
           f"{kind} advantages are the weighted sum of _calculate_rewards' output, group-centred"
           + (" after clipping to reward_clip_range and the KL penalty" if kind == "rloo" else ""))


def test_grpo_normalize_then_sum_advantages_are_the_normalised_weighted_sum(model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(TRAINERS, "grpo", (OffsetGRPO, GRPOConfig))
    trainer = make("grpo", model_dir, tmp_path, multi_objective_aggregation="normalize_then_sum",
                   reward_funcs=[parity_reward, length_reward], reward_weights=[1.0, 0.5])
    out = score_one_batch(trainer)
    returned = trainer.generations[-1]["events"][-1]["returned"]
    expected = normalize_then_sum(returned, trainer.reward_weights, NUM_GENERATIONS)
    expect(torch.allclose(out["advantages"], torch.nan_to_num(expected, nan=0.0), rtol=1e-5, atol=1e-5),
           "normalize_then_sum z-scores each reward function per group, sums with the weights and z-scores the "
           "sum over the batch; the advantages are that (MaraGRPOTrainer replaces them after TRL ran)")
    expect(list(trainer._logs["advantages"])[-returned.size(0):] == out["advantages"].tolist(),
           "the completions table's advantages are the batch's advantages, appended last")


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_reward_metrics_and_table_come_from_calculate_rewards_once_per_batch(kind, model_dir, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setitem(TRAINERS, kind, ({"grpo": OffsetGRPO, "rloo": OffsetRLOO}[kind], TRAINERS[kind][1]))
    trainer = make(kind, model_dir, tmp_path, reward_funcs=[parity_reward, length_reward], reward_weights=[1.0, 0.5])
    for calls in (1, 2):
        score_one_batch(trainer)
        returned = trainer.generations[-1]["events"][-1]["returned"]
        metrics = trainer._metrics["train" if trainer.model.training else "eval"]
        total = (returned * trainer.reward_weights[None, :]).nansum(1)
        for key in ("reward", "reward_std", *(f"rewards/{n}/{s}" for n in trainer.reward_func_names
                                              for s in ("mean", "std"))):
            expect(len(metrics[key]) == calls, f"{kind} appends one {key!r} per scored batch")
        expect(metrics["reward"][-1] == pytest.approx(total.mean().item(), abs=1e-6),
               f"{kind}'s 'reward' is the weighted sum of what _calculate_rewards returned")
        for i, name in enumerate(trainer.reward_func_names):
            expect(metrics[f"rewards/{name}/mean"][-1] == pytest.approx(returned[:, i].mean().item(), abs=1e-6),
                   f"{kind}'s rewards/<func>/mean is of what _calculate_rewards returned")
            expect(list(trainer._logs["rewards"][name])[-returned.size(0):] == returned[:, i].tolist(),
                   f"{kind}'s completions table holds what _calculate_rewards returned, appended last")


def test_rloo_reward_clipping_reads_the_attribute_at_scoring_time(model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(TRAINERS, "rloo", (OffsetRLOO, RLOOConfig))
    trainer = make("rloo", model_dir, tmp_path, reward_clip_range=(-1.0, 0.5), beta=0.0)
    trainer.reward_clip_range = None  # what MaraRLOOTrainer does while it clips before MARA itself
    out = score_one_batch(trainer)
    grouped = trainer.generations[-1]["events"][-1]["returned"][:, 0].view(-1, NUM_GENERATIONS)
    expected = grouped - (grouped.sum(1, keepdim=True) - grouped) / (NUM_GENERATIONS - 1)
    expect(torch.allclose(out["advantages"], expected.flatten(), atol=1e-5),
           "RLOO clips with self.reward_clip_range read during _generate_and_score_completions")


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_batch_keys_survive_shuffling_and_splitting_row_aligned(kind, model_dir, tmp_path):
    trainer = make(kind, model_dir, tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                   steps_per_generation=4, num_iterations=2, max_steps=2)
    trainer.train()
    expect(len(trainer.generations) == 1 and len(trainer.loss_calls) == 4,
           "steps_per_generation=4, num_iterations=2: one generation feeds four micro-batches")
    generated = trainer.generations[0]["output"]
    seen = []
    for call in trainer.loss_calls:
        inputs = call["inputs"]
        expect("probe" in inputs, "a [B] tensor added to the generation output reaches _compute_loss")
        rows = inputs["probe"].long()
        expect(torch.equal(inputs["completion_ids"], generated["completion_ids"][rows])
               and torch.equal(inputs["advantages"], generated["advantages"][rows]),
               "an added [B] key is shuffled and split together with the batch's rows")
        expect(torch.equal(inputs["probe_3d"], generated["probe_3d"][rows]),
               "an added [B, T, H] key (the reference hidden states) is shuffled and split with the rows")
        seen.append(rows)
    expect(torch.equal(torch.cat(seen).sort().values, torch.arange(16)),
           "the micro-batches of one pass over the buffer cover the generation batch once")


def test_grpo_loss_with_beta_zero_reads_no_reference_and_makes_one_pass(model_dir, tmp_path):
    trainer = make("grpo", model_dir, tmp_path)
    out = score_one_batch(trainer)
    del out["ref_per_token_logps"]
    trainer.beta = 0.0  # what MaraGRPOTrainer does to drop TRL's reverse-KL term
    trainer._compute_loss(trainer.model, out)
    passes = [e for e in trainer.loss_calls[-1]["events"] if e["event"] == "pass"]
    expect(len(passes) == 1 and passes[0]["model"] is trainer.model,
           "_compute_loss makes exactly one log-prob pass, on the policy, and with beta == 0 needs no reference")


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_evaluate_scores_each_eval_batch_and_runs_the_loss_without_grad(kind, model_dir, tmp_path):
    trainer = make(kind, model_dir, tmp_path, per_device_eval_batch_size=4, num_generations_eval=2)
    metrics = trainer.evaluate()
    expect("eval_loss" in metrics, "evaluate() returns eval_loss")
    expect(len(trainer.generations) == 2, "evaluate() runs _generate_and_score_completions once per eval batch "
           "(4 prompts x num_generations_eval=2 in batches of 4)")
    expect(all(g["output"]["advantages"].size(0) == 4 for g in trainer.generations),
           "eval batches have per_device_eval_batch_size samples")
    passes = [e for call in trainer.loss_calls for e in call["events"] if e["event"] == "pass"]
    expect(passes and not any(p["grad"] for p in passes),
           "in evaluate() the loss pass runs without grad (grad mode cannot tell it from a scoring pass)")


def test_peft_reference_pass_is_the_model_with_its_adapter_disabled(model_dir, tmp_path):
    peft = pytest.importorskip("peft")
    trainer_cls, config_cls = TRAINERS["grpo"]
    args = config_cls(output_dir=str(tmp_path / "peft"), per_device_train_batch_size=8,
                      num_generations=NUM_GENERATIONS, max_completion_length=3, beta=0.1, report_to="none",
                      use_cpu=True, seed=0, save_strategy="no", disable_tqdm=True, bf16=False, max_steps=1)
    trainer = trainer_cls(model=model_dir, reward_funcs=parity_reward, args=args,
                          train_dataset=Dataset.from_list(random_choice_dataset_rows(num_prompts=16)),
                          peft_config=peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    trainer.generations, trainer.loss_calls, trainer.events = [], [], []
    expect(trainer.ref_model is None, "with peft_config and no ref_model TRL keeps ref_model=None")
    score_one_batch(trainer)
    passes = trainer.generations[-1]["events"][:-1]
    expect(passes[-1]["model"] is trainer.model, "the PEFT reference pass runs on self.model (adapter disabled)")


class HiddenRecorder(Recorder):
    """Also records each pass's backbone hidden states at the completion positions, and the LM head."""

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        sink = []
        with capture_completion_hidden(model, logits_to_keep, sink):
            out = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                             *args, **kwargs)
        self.events[-1]["hidden"] = torch.cat(sink) if sink else None
        self.events[-1]["head"] = causal_lm(model).get_output_embeddings()
        return out


class HiddenGRPO(HiddenRecorder, GRPOTrainer):
    pass


class HiddenRLOO(HiddenRecorder, RLOOTrainer):
    pass


def logps_from_hidden(event, completion_ids, temperature):
    logits = event["hidden"].float() @ event["head"].weight.float().t() / temperature
    logps = torch.log_softmax(logits, dim=-1).gather(2, completion_ids[..., None])[..., 0]
    return logps * event["mask"]


@pytest.mark.parametrize("kind,peft_lora", [("grpo", False), ("rloo", False), ("grpo", True)],
                         ids=["grpo", "rloo", "grpo-peft"])
def test_base_model_hidden_states_and_output_embeddings_give_the_passes_logprobs(kind, peft_lora, model_dir, tmp_path,
                                                                                   monkeypatch):
    hidden_cls = {"grpo": HiddenGRPO, "rloo": HiddenRLOO}[kind]
    monkeypatch.setitem(TRAINERS, kind, (hidden_cls, TRAINERS[kind][1]))
    temperature = 0.7
    if peft_lora:
        peft = pytest.importorskip("peft")
        trainer_cls, config_cls = TRAINERS[kind]
        args = config_cls(output_dir=str(tmp_path / "peft"), per_device_train_batch_size=8,
                          num_generations=NUM_GENERATIONS, max_completion_length=3, beta=0.1, report_to="none",
                          use_cpu=True, seed=0, save_strategy="no", disable_tqdm=True, bf16=False, max_steps=1,
                          temperature=temperature)
        lora = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        trainer = trainer_cls(model=model_dir, reward_funcs=parity_reward, args=args, peft_config=lora,
                              train_dataset=Dataset.from_list(random_choice_dataset_rows(num_prompts=16)))
        trainer.generations, trainer.loss_calls, trainer.events = [], [], []
    else:
        trainer = make(kind, model_dir, tmp_path, temperature=temperature)
    out = score_one_batch(trainer)
    passes = trainer.generations[-1]["events"][:-1]
    trainer.model.eval()  # no gradient-accumulation bookkeeping needed for one loss call
    trainer._compute_loss(trainer.model, out)
    passes += [e for e in trainer.loss_calls[-1]["events"] if e["event"] == "pass"]
    expect(len(passes) >= 2 and all(p["hidden"] is not None for p in passes),
           "every log-prob pass (scoring and loss) runs the model's base_model once per chunk of rows, "
           "whose output has last_hidden_state")
    for p in passes:
        expect(torch.allclose(logps_from_hidden(p, out["completion_ids"], temperature), p["logps"], atol=1e-5),
               "a pass's log-probs are log_softmax(base_model last_hidden_state[:, -T-1:-1] @ "
               "get_output_embeddings().weight.T / temperature) at the completion tokens")
    if peft_lora:  # the reference pass (adapter disabled) gives other hidden states than the loss pass
        ref, loss = passes[-2], passes[-1]
        expect((ref["hidden"] - loss["hidden"]).abs().max() > 1e-3,
               "with PEFT, the reference pass's base_model runs with the adapter disabled")
