"""MaraGRPOTrainer / MaraRLOOTrainer across the TRL options users run (tiny untrained Llama, CPU).

The options matrix trains each case for two steps and then evaluates; for every batch TRL scored
(training and evaluation) it checks that the advantages are those of the core ``mara_rewards`` on
rewards recomputed from the completions and reference log-probs recomputed by a plain forward pass
of a separately loaded reference model. The design is pairwise: every option meets both trainers
and both KL directions (``test_the_design_covers_every_option``), not the full product.
"""

import math
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from _trl_helpers import (  # noqa: E402
    NUM_GENERATIONS,
    always_one,
    always_zero,
    is_truncated,
    length_reward,
    parity_reward,
    plain_sequence_logprobs,
    reward_values,
    save_tiny_model,
    sometimes_none_reward,
)
from datasets import Dataset  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

from mara_rl.augment import mara_rewards  # noqa: E402
from mara_rl.llm.tasks import random_choice_dataset_rows  # noqa: E402
from mara_rl.integrations.trl.trainers import (  # noqa: E402
    MAX_LOG_RATIO,
    MaraGRPOConfig,
    MaraGRPOTrainer,
    MaraRLOOConfig,
    MaraRLOOTrainer,
    forward_kl_surrogate,
)

BETA = 0.1
TAU = 1.0
TAU_QUANTILE = 0.5
CLIP = (0.0, 1.0)
REWARDS = {  # name: (functions, weights)
    "one": ([parity_reward], None),
    "weighted": ([sometimes_none_reward, length_reward], [1.0, 0.25]),  # some rows partly None
    "none": ([sometimes_none_reward], None),  # some rows unscorable
    "constant": ([always_one, always_zero], [0.7, 0.3]),  # every group has zero reward std
}
REWARD_METRICS = ("reward", "reward_std", "frac_reward_zero_std")
AGGREGATIONS = {"sum": "sum_then_normalize", "normalize": "normalize_then_sum"}


class Recording:
    """Keeps, for each scored batch, the completion ids TRL passed to the rewards and TRL's output."""

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._ids = completion_ids_list
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        kept = {k: v.detach().clone() for k, v in out.items() if isinstance(v, torch.Tensor)}
        n = len(self._ids)
        metrics = {k: v[-1] for k, v in self._metrics[mode].items() if k in REWARD_METRICS or k.startswith("rewards/")}
        table = {name: list(self._logs["rewards"][name])[-n:] for name in self.reward_func_names}
        table["advantage"] = list(self._logs["advantages"])[-n:]
        table["completion"] = list(self._logs["completion"])[-n:]
        self.records.append({"mode": mode, "ids": self._ids, "out": kept, "metrics": metrics, "table": table})
        return out


class RecordingGRPO(Recording, MaraGRPOTrainer):
    pass


class RecordingRLOO(Recording, MaraRLOOTrainer):
    pass


TRAINERS = {"grpo": (RecordingGRPO, MaraGRPOConfig), "rloo": (RecordingRLOO, MaraRLOOConfig)}

# trainer, kl, num_iterations, gradient_accumulation_steps, steps_per_generation, rewards, loss_type,
# conversational, mask_truncated_completions, reward_clip_range, tau, forward_kl_estimator,
# multi_objective_aggregation (GRPO: "sum" or "normalize")
CASES = [
    ("grpo", "reverse", 2, 2, 4, "weighted", "grpo", True, True, False, "quantile", "token", "sum"),
    ("grpo", "reverse", 1, 1, 1, "none", "dr_grpo", False, False, False, "value", "token", "sum"),
    ("grpo", "reverse", 1, 2, 4, "weighted", "dapo", False, True, False, "value", "token", "sum"),
    ("grpo", "reverse", 2, 1, 1, "none", "bnpo", True, True, False, "quantile", "token", "sum"),
    ("grpo", "reverse", 1, 1, 1, "weighted", "grpo", False, False, False, "quantile", "token", "normalize"),
    ("grpo", "reverse", 1, 2, 4, "constant", "dapo", True, False, False, "quantile", "token", "sum"),
    ("grpo", "forward", 1, 2, 4, "none", "dr_grpo", False, True, False, "value", "token", "sum"),
    ("grpo", "forward", 2, 1, 1, "weighted", "bnpo", True, False, False, "quantile", "token", "sum"),
    ("grpo", "forward", 2, 2, 4, "one", "dapo", True, True, False, "quantile", "token", "sum"),
    ("grpo", "forward", 1, 1, 1, "weighted", "grpo", False, True, False, "value", "sequence", "sum"),
    ("grpo", "forward", 1, 1, 1, "weighted", "dr_grpo", True, True, False, "quantile", "token", "normalize"),
    ("grpo", "forward", 1, 1, 1, "constant", "grpo", False, False, False, "quantile", "sequence", "sum"),
    ("rloo", "reverse", 2, 2, 4, "weighted", None, True, True, True, "quantile", "token", None),
    ("rloo", "reverse", 1, 1, 1, "none", None, False, False, True, "value", "token", None),
    ("rloo", "reverse", 1, 1, 1, "constant", None, False, False, True, "quantile", "token", None),
    ("rloo", "forward", 1, 2, 4, "none", None, False, True, True, "value", "sequence", None),
    ("rloo", "forward", 2, 1, 1, "weighted", None, True, False, False, "quantile", "token", None),
    ("rloo", "forward", 2, 2, 4, "one", None, True, True, True, "quantile", "token", None),
    ("rloo", "forward", 1, 1, 1, "constant", None, False, True, False, "quantile", "token", None),
]
FIELDS = ("trainer", "kl", "num_iterations", "gradient_accumulation_steps", "steps_per_generation", "rewards",
          "loss_type", "conversational", "mask_truncated_completions", "reward_clip_range", "tau", "estimator",
          "aggregation")
CASE_DICTS = [dict(zip(FIELDS, case)) for case in CASES]


def case_id(case):
    c = dict(zip(FIELDS, case))
    parts = [c["trainer"], c["kl"], f"it{c['num_iterations']}", f"ga{c['gradient_accumulation_steps']}",
             f"spg{c['steps_per_generation']}", c["rewards"], c["loss_type"] or "", "chat" if c["conversational"]
             else "", "trunc" if c["mask_truncated_completions"] else "", "clip" if c["reward_clip_range"] else "",
             c["tau"], c["estimator"] if c["kl"] == "forward" else "", c["aggregation"] or ""]
    return "-".join(p for p in parts if p)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-stops"))


@pytest.fixture(scope="module")
def reference(model_dir):
    model = LlamaForCausalLM.from_pretrained(model_dir)
    model.eval()
    return model


def dataset_rows(n, conversational):
    rows = random_choice_dataset_rows(num_prompts=n)
    for i, row in enumerate(rows):  # distinct prompts (2 to 8 options)
        row["prompt"] = row["prompt"].replace("2 options", f"{2 + i % 7} options")
        if conversational:
            row["prompt"] = [{"role": "user", "content": row["prompt"]}]
    return rows


def make_trainer(c, model_dir, tmp_path, **overrides):
    trainer_cls, config_cls = TRAINERS[c["trainer"]]
    funcs, weights = REWARDS[c["rewards"]]
    settings = dict(
        output_dir=str(tmp_path / "out"), num_generations=NUM_GENERATIONS, max_completion_length=3, beta=BETA,
        learning_rate=1e-3, max_steps=2, logging_steps=1, report_to="none", use_cpu=True, seed=0,
        save_strategy="no", disable_tqdm=True, bf16=False, mara=True, kl_direction=c["kl"],
        forward_kl_estimator=c["estimator"],
        num_iterations=c["num_iterations"], gradient_accumulation_steps=c["gradient_accumulation_steps"],
        steps_per_generation=c["steps_per_generation"], reward_weights=weights,
        per_device_train_batch_size=16 // c["steps_per_generation"] if c["steps_per_generation"] > 1 else 8,
        per_device_eval_batch_size=4, mask_truncated_completions=c["mask_truncated_completions"],
        mara_tau=TAU if c["tau"] == "value" else None,
        mara_tau_quantile=TAU_QUANTILE if c["tau"] == "quantile" else None,
    )
    if c["loss_type"]:
        settings["loss_type"] = c["loss_type"]
    if c["aggregation"]:
        settings["multi_objective_aggregation"] = AGGREGATIONS[c["aggregation"]]
    if c["reward_clip_range"]:
        settings["reward_clip_range"] = CLIP
    settings.update(overrides)
    trainer = trainer_cls(model=model_dir, reward_funcs=funcs, args=config_cls(**settings),
                          train_dataset=Dataset.from_list(dataset_rows(32, c["conversational"])),
                          eval_dataset=Dataset.from_list(dataset_rows(2, c["conversational"])))
    trainer.records = []
    return trainer


def nan_std(x, dim=None):
    """Bessel-corrected std over the non-NaN entries (NaN with fewer than two)."""
    keep = ~torch.isnan(x)
    n = keep.sum(dim=dim, keepdim=True) if dim is not None else keep.sum()
    mean = torch.where(keep, x, 0.0).sum(dim=dim, keepdim=dim is not None) / n
    var = torch.where(keep, (x - mean) ** 2, 0.0).sum(dim=dim, keepdim=dim is not None) / (n - 1)
    return torch.where(n > 1, var.sqrt(), torch.nan)


def normalised_then_summed(per_func, weights, group):
    """GRPO's normalize_then_sum rewards: per-function z-scores within groups, weighted sum, batch z-score."""
    grouped = per_func.view(-1, group, per_func.size(1))
    keep = ~torch.isnan(grouped)
    mean = torch.where(keep, grouped, 0.0).sum(1, keepdim=True) / keep.sum(1, keepdim=True)
    z = ((grouped - mean) / (nan_std(grouped, dim=1) + 1e-4)).view_as(per_func)
    summed = torch.where(torch.isnan(z), 0.0, z * weights[None, :]).sum(dim=1)
    summed[torch.isnan(per_func).all(dim=1)] = torch.nan
    scored = summed[~torch.isnan(summed)]
    return (summed - scored.mean()) / (nan_std(summed) + 1e-4)


def expected_advantages(trainer, c, record, reference):
    """Advantages from the core ``mara_rewards`` on independently recomputed rewards and log pi_ref.

    Also returns what TRL's ``frac_reward_zero_std`` is then expected to read.
    """
    ids, out = record["ids"], record["out"]
    group = trainer.num_generations if record["mode"] == "train" else trainer.num_generations_eval
    funcs, weights = REWARDS[c["rewards"]]
    per_func = reward_values(funcs, ids)
    scorable = ~torch.isnan(per_func).all(dim=1)
    weights = torch.tensor(weights or [1.0] * len(funcs))
    rewards = (per_func * weights[None, :]).nansum(dim=1)
    if c["reward_clip_range"]:
        rewards = rewards.clamp(*CLIP)  # the task reward is clipped before MARA
    if c["aggregation"] == "normalize":  # MARA acts on the normalised rewards the update uses
        rewards = normalised_then_summed(per_func, weights, group)
    in_loss = torch.tensor([not (c["mask_truncated_completions"] and is_truncated(i)) for i in ids])
    prompts = [p[m.bool()].tolist() for p, m in zip(out["prompt_ids"], out["prompt_mask"])]
    ref = torch.where(in_loss, plain_sequence_logprobs(reference, prompts, ids, trainer.temperature), 0.0)
    eligible = scorable & in_loss
    core = mara_rewards(rewards[eligible], ref[eligible], beta=BETA, group_ids=(torch.arange(len(ids)) // group)[
        eligible], kl=c["kl"], tau=TAU if c["tau"] == "value" else None,
        tau_quantile=TAU_QUANTILE if c["tau"] == "quantile" else None)
    augmented, kl_ref = rewards.clone(), ref.clone()
    augmented[eligible], kl_ref[eligible] = core.rewards.float(), core.ref_logprobs.float()
    if c["trainer"] == "rloo":
        old = out["old_logps"]  # TRL's policy log-probs at generation time
        if c["kl"] == "reverse":
            augmented = augmented - BETA * (old - ref)
        elif c["estimator"] == "sequence":
            augmented = augmented + BETA * (kl_ref - old).clamp(max=MAX_LOG_RATIO).exp()
        # the token estimator is a loss term: no KL on the reward side
    grouped = torch.where(scorable, augmented, torch.nan).view(-1, group)
    if c["trainer"] == "rloo":
        count = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)
        advantages = grouped - (torch.nansum(grouped, dim=1, keepdim=True) - grouped) / (count - 1)
    elif c["aggregation"] == "normalize":
        advantages = grouped - grouped[~torch.isnan(grouped)].mean()
    else:
        advantages = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    if c["aggregation"] == "normalize":  # TRL's batch std of its own normalised sum
        zero_std = float(torch.isclose(nan_std(rewards), torch.tensor(0.0)))
    else:  # per group, on the rewards the update used
        zero_std = torch.isclose(nan_std(grouped, dim=1), torch.tensor(0.0)).float().mean().item()
    # Alg. 2 may keep every reward (equal good rewards) and change only the reference log-probs
    changed = (core.rewards != rewards[eligible]).any() or (core.ref_logprobs != ref[eligible]).any()
    return torch.nan_to_num(advantages.flatten(), nan=0.0), kl_ref, bool(changed), zero_std


def check_reward_logs(trainer, c, record, zero_std):
    """TRL's reward metrics and completions table: the task rewards, as a stock run logs them."""
    funcs, weights = REWARDS[c["rewards"]]
    per_func = reward_values(funcs, record["ids"]).double()
    metrics, table = record["metrics"], record["table"]
    for name, column in zip(trainer.reward_func_names, per_func.T):
        scored = column[~torch.isnan(column)]
        assert metrics[f"rewards/{name}/mean"] == pytest.approx(scored.mean().item(), abs=1e-6), name
        assert metrics[f"rewards/{name}/std"] == pytest.approx(nan_std(column).item(), abs=1e-6, nan_ok=True), name
        assert torch.equal(torch.tensor(table[name]).double().nan_to_num(-7.0), column.nan_to_num(-7.0)), name
    total = (per_func * torch.tensor(weights or [1.0] * len(funcs)).double()[None, :]).nansum(dim=1)
    total[torch.isnan(per_func).all(dim=1)] = torch.nan
    assert metrics["reward"] == pytest.approx(total[~torch.isnan(total)].mean().item(), abs=1e-6)
    assert metrics["reward_std"] == pytest.approx(nan_std(total).item(), abs=1e-6, nan_ok=True)
    assert metrics["frac_reward_zero_std"] == pytest.approx(zero_std)
    assert torch.allclose(torch.tensor(table["advantage"]), record["out"]["advantages"], atol=1e-6)
    assert len(table["completion"]) == len(record["ids"])


def check_token_estimator_inputs(trainer, record, reference):
    """The rows the token estimator reads: reference hidden states, reference log-probs, prompt groups."""
    out = record["out"]
    group = trainer.num_generations if record["mode"] == "train" else trainer.num_generations_eval
    n = out["completion_ids"].size(0)
    assert torch.equal(out["mara_group"], torch.arange(n) // group)
    assert out["mara_ref_hidden"].shape[:2] == out["completion_ids"].shape
    prompts = [p[m.bool()].tolist() for p, m in zip(out["prompt_ids"], out["prompt_mask"])]
    ref = plain_sequence_logprobs(reference, prompts, record["ids"], trainer.temperature)
    mask = out["completion_mask"]
    in_loss = mask.any(dim=1)
    assert torch.allclose((out["mara_ref_token_logps"] * mask).sum(1)[in_loss], ref[in_loss], atol=1e-4)
    head = reference.get_output_embeddings().weight
    logits = out["mara_ref_hidden"] @ head.t() / trainer.temperature
    from_hidden = torch.log_softmax(logits, -1).gather(2, out["completion_ids"][..., None])[..., 0] * mask
    assert torch.allclose(from_hidden, out["mara_ref_token_logps"] * mask, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_options_matrix_advantages_are_core_mara_on_recomputed_reference_logprobs(case, model_dir, reference,
                                                                                   tmp_path):
    c = dict(zip(FIELDS, case))
    trainer = make_trainer(c, model_dir, tmp_path)
    torch.set_num_threads(1)
    trainer.train()
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"])
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)
    modes = [r["mode"] for r in trainer.records]
    assert "train" in modes and "eval" in modes
    changed = truncated = complete = 0
    for record in trainer.records:
        expected, kl_ref, any_changed, zero_std = expected_advantages(trainer, c, record, reference)
        assert torch.allclose(record["out"]["advantages"], expected, atol=1e-4), record["mode"]
        check_reward_logs(trainer, c, record, zero_std)
        if c["kl"] == "forward" and (c["trainer"] == "grpo" or c["estimator"] == "token"):
            assert torch.allclose(record["out"]["mara_ref_logps"], kl_ref, atol=1e-4)
        if c["kl"] == "forward" and c["estimator"] == "token":
            check_token_estimator_inputs(trainer, record, reference)
        changed += any_changed
        flags = [is_truncated(ids) for ids in record["ids"]]
        truncated, complete = truncated + any(flags), complete + (not all(flags))
    assert changed, "MARA augmented no sample in this case: the check would be vacuous"
    if c["mask_truncated_completions"]:
        assert truncated and complete, "the case needs truncated and complete completions"


def test_the_design_covers_every_option():
    def covered(trainer, kl, field, value):
        return any(c["trainer"] == trainer and c["kl"] == kl and c[field] == value for c in CASE_DICTS)

    options = [("num_iterations", 2), ("gradient_accumulation_steps", 2), ("steps_per_generation", 4),
               ("conversational", True), ("mask_truncated_completions", True)]
    options += [("rewards", r) for r in ("weighted", "none", "constant")]
    options += [("tau", t) for t in ("value", "quantile")]
    for trainer in TRAINERS:
        for estimator in ("token", "sequence"):
            assert covered(trainer, "forward", "estimator", estimator), (trainer, estimator)
        for kl in ("reverse", "forward"):
            own = [("loss_type", t) for t in ("grpo", "dr_grpo", "dapo", "bnpo")] + [
                ("aggregation", a) for a in AGGREGATIONS] if trainer == "grpo" else [("reward_clip_range", True)]
            missing = [o for o in options + own if not covered(trainer, kl, *o)]
            assert not missing, (trainer, kl, missing)


def test_truncated_completions_are_never_anchors_nor_augmented(model_dir, reference, tmp_path):
    c = dict(CASE_DICTS[6])  # GRPO, forward KL, mask_truncated_completions
    trainer = make_trainer(c, model_dir, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    out = trainer._generate_and_score_completions(batch)
    record = trainer.records[-1]
    truncated = torch.tensor([is_truncated(ids) for ids in record["ids"]])
    assert 0 < truncated.sum() < len(truncated)
    assert torch.equal(out["mara_ref_logps"][truncated], torch.zeros(int(truncated.sum())))  # TRL's masked sum
    expected, kl_ref, _, _ = expected_advantages(trainer, c, record, reference)
    assert torch.allclose(out["advantages"], expected, atol=1e-4)
    assert torch.allclose(out["mara_ref_logps"], kl_ref, atol=1e-4)
    # a truncated anchor would hand its masked 0.0 to the good samples of its group
    assert (out["mara_ref_logps"][~truncated] < -1.0).all()


@pytest.mark.parametrize("eval_batch", [4, 8])
def test_grpo_forward_evaluate_uses_the_eval_batch_own_logprobs(eval_batch, model_dir, tmp_path):
    c = dict(CASE_DICTS[9])  # GRPO, forward KL, sequence estimator
    trainer = make_trainer(c, model_dir, tmp_path, per_device_eval_batch_size=eval_batch, max_steps=1)
    before = trainer.evaluate()  # before any training step
    assert math.isfinite(before["eval_kl"])
    trainer.train()
    after = trainer.evaluate()  # the eval batch size differs from the training micro-batch
    assert math.isfinite(after["eval_loss"]) and after["eval_kl"] >= 0.0
    batch = next(iter(trainer.get_eval_dataloader()))
    trainer.model.eval()
    out = trainer._generate_and_score_completions(batch)
    with torch.no_grad():
        trainer._compute_loss(trainer.model, out)
    prompts = [p[m.bool()].tolist() for p, m in zip(out["prompt_ids"], out["prompt_mask"])]
    ids = [row[m.bool()].tolist() for row, m in zip(out["completion_ids"], out["completion_mask"])]
    policy = plain_sequence_logprobs(trainer.model, prompts, ids)
    own = forward_kl_surrogate(policy, out["mara_ref_logps"])[1].mean().item()
    assert trainer._metrics["eval"]["kl"][-1] == pytest.approx(own, rel=1e-3, abs=1e-5)


def test_mara_defaults_grpo_to_unscaled_rewards_and_warns_once_on_scaling(tmp_path):
    base = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none", beta=0.1)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*scale_rewards")  # no scaling warning on the defaults
        assert MaraGRPOConfig(**base, mara=True).scale_rewards == "none"
        assert MaraGRPOConfig(**base).scale_rewards == "group"  # TRL's default without MARA
        assert MaraGRPOConfig(**base, mara=True, scale_rewards=False).scale_rewards == "none"
    for scale, where in (("group", "each prompt group's"), ("batch", "the batch's")):
        with pytest.warns(UserWarning) as caught:
            assert MaraGRPOConfig(**base, mara=True, scale_rewards=scale).scale_rewards == scale
        mine = [w for w in caught if "scale_rewards" in str(w.message)]
        assert len(mine) == 1
        assert where in str(mine[0].message) and "pi_ref(y|x)^(1 - 1/s)" in str(mine[0].message)


def test_mara_needs_a_weighted_reward_function(model_dir, tmp_path):
    c = dict(CASE_DICTS[1])
    trainer = make_trainer(c, model_dir, tmp_path, reward_weights=[0.0])
    with pytest.raises(ValueError, match="non-zero weight"):
        trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))


@pytest.mark.parametrize("kl", ["reverse", "forward"])
def test_lora_reference_logprobs_are_the_base_model(kl, model_dir, reference, tmp_path):
    peft = pytest.importorskip("peft")
    c = dict(CASE_DICTS[1], kl=kl)  # GRPO, one group per batch of 8, tau = 1
    lora = peft.LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    trainer_cls, config_cls = TRAINERS["grpo"]
    args = config_cls(output_dir=str(tmp_path / "out"), num_generations=NUM_GENERATIONS, max_completion_length=3,
                      beta=BETA, mara=True, mara_tau=TAU, kl_direction=kl, per_device_train_batch_size=8,
                      report_to="none", use_cpu=True, seed=0, save_strategy="no", disable_tqdm=True, bf16=False)
    trainer = trainer_cls(model=model_dir, reward_funcs=REWARDS["none"][0], args=args, peft_config=lora,
                          train_dataset=Dataset.from_list(dataset_rows(16, False)))
    trainer.records = []
    assert trainer.ref_model is None  # TRL disables the adapter for its reference pass
    out = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    record = trainer.records[-1]
    prompts = [p[m.bool()].tolist() for p, m in zip(out["prompt_ids"], out["prompt_mask"])]
    adapted = plain_sequence_logprobs(trainer.model, prompts, record["ids"])
    base = plain_sequence_logprobs(reference, prompts, record["ids"])
    assert (adapted - base).abs().max() > 1e-2  # the adapter changes the policy: the test can tell them apart
    expected, kl_ref, _, _ = expected_advantages(trainer, c, record, reference)
    assert torch.allclose(out["advantages"], expected, atol=1e-4)
    if kl == "forward":
        assert torch.allclose(out["mara_ref_logps"], kl_ref, atol=1e-4)
