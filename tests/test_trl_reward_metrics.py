"""TRL's reward metrics stay the task reward with MARA and forward KL (tiny untrained Llama, CPU).

A stock TRL trainer and ours, with the same seed, model and rewards, generate the same first batch;
TRL's ``reward``, ``reward_std``, ``rewards/<func>/mean|std`` and the completions table must then be
equal, although our advantages come from augmented rewards. What we add is logged under ``mara/``.
"""

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from _trl_helpers import NUM_GENERATIONS, always_one, always_zero, parity_reward, save_tiny_model  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer  # noqa: E402

from mara_rl.integrations.trl.trainers import (  # noqa: E402
    MaraGRPOConfig,
    MaraGRPOTrainer,
    MaraRLOOConfig,
    MaraRLOOTrainer,
)
from mara_rl.llm.tasks import random_choice_dataset_rows  # noqa: E402

BETA = 0.1
WEIGHTS = [0.7, 0.3]
HOSTS = {
    "grpo": ((GRPOTrainer, GRPOConfig), (MaraGRPOTrainer, MaraGRPOConfig)),
    "rloo": ((RLOOTrainer, RLOOConfig), (MaraRLOOTrainer, MaraRLOOConfig)),
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-stops"))


def run_one_step(trainer_cls, config_cls, model_dir, out, funcs, weights, **extra):
    args = config_cls(output_dir=str(out), per_device_train_batch_size=8, num_generations=NUM_GENERATIONS,
                      max_completion_length=4, beta=BETA, learning_rate=1e-3, max_steps=1, logging_steps=1,
                      report_to="none", use_cpu=True, seed=0, save_strategy="no", disable_tqdm=True, bf16=False,
                      reward_weights=weights, log_completions=True, **extra)
    trainer = trainer_cls(model=model_dir, reward_funcs=funcs, args=args,
                          train_dataset=Dataset.from_list(random_choice_dataset_rows(num_prompts=16)))
    torch.set_num_threads(1)
    trainer.train()
    (log,) = [h for h in trainer.state.log_history if "loss" in h]
    table = {name: list(trainer._logs["rewards"][name]) for name in trainer.reward_func_names}
    return trainer, log, table, list(trainer._logs["completion"]), list(trainer._logs["advantages"])


def reward_keys(names):
    return ["reward", "reward_std"] + [f"rewards/{n}/{s}" for n in names for s in ("mean", "std")]


@pytest.mark.parametrize("host", ["grpo", "rloo"])
@pytest.mark.parametrize("kl,estimator,mara", [("reverse", "token", True), ("forward", "token", True),
                                               ("forward", "sequence", True), ("forward", "token", False),
                                               ("forward", "sequence", False)])
def test_weighted_reward_metrics_are_those_of_the_stock_trainer(host, kl, estimator, mara, model_dir, tmp_path):
    (stock_cls, stock_cfg), (ours_cls, ours_cfg) = HOSTS[host]
    funcs = [always_one, always_zero, parity_reward]
    weights = [*WEIGHTS, 0.5]
    _, stock_log, stock_table, stock_completions, _ = run_one_step(
        stock_cls, stock_cfg, model_dir, tmp_path / "stock", funcs, weights)
    trainer, log, table, completions, _ = run_one_step(
        ours_cls, ours_cfg, model_dir, tmp_path / "ours", funcs, weights, mara=mara, kl_direction=kl,
        forward_kl_estimator=estimator)
    assert completions == stock_completions  # the same batch: the comparison below is like for like
    for key in reward_keys(trainer.reward_func_names):
        assert log[key] == stock_log[key], key
    assert table == stock_table
    parity = torch.tensor(stock_table["parity_reward"])
    assert log["reward"] == pytest.approx(0.7 + 0.5 * parity.mean().item(), abs=1e-6)
    assert log["rewards/always_one/mean"] == 1.0 and log["rewards/always_zero/mean"] == 0.0
    if mara:
        assert log["mara/frac_groups_augmented"] > 0
        assert log["mara/reward_raw"] == pytest.approx(log["reward"], abs=1e-6)  # every sample scored and kept
        assert math.isfinite(log["mara/reward"])
        if kl == "reverse":  # Alg. 2 gives equal good rewards the anchor's reward: only log pi_ref changes
            assert log["mara/reward"] != log["mara/reward_raw"]
    else:
        assert not any(k.startswith("mara/") and k != "mara/kl_forward" for k in log)


@pytest.mark.parametrize("host", ["grpo", "rloo"])
@pytest.mark.parametrize("kl", ["reverse", "forward"])
def test_constant_weighted_rewards_log_their_weighted_sum(host, kl, model_dir, tmp_path):
    _, (ours_cls, ours_cfg) = HOSTS[host]
    trainer, log, table, _, adv = run_one_step(ours_cls, ours_cfg, model_dir, tmp_path, [always_one, always_zero],
                                               WEIGHTS, mara=True, kl_direction=kl)
    assert log["reward"] == pytest.approx(0.7, abs=1e-6) and log["reward_std"] == pytest.approx(0.0, abs=1e-6)
    assert table == {"always_one": [1.0] * len(adv), "always_zero": [0.0] * len(adv)}
    # every sample is good (tau = the 0.9 quantile of equal rewards): MARA augments every group; with
    # reverse KL the augmented rewards differ within a group, with forward KL only log pi_ref does (Alg. 2)
    assert log["mara/frac_groups_augmented"] == 1.0
    assert any(a != 0.0 for a in adv) == (kl == "reverse")
