"""Contract with verl: each verl behaviour ``mara_sync`` relies on, asserted against the installed release.

A failure names the assumption and the verl version; the mode is tested with verl 0.9.1 (the
``[verl]`` extra's pin). Runs only where verl is installed (the ``.venv-verl`` environment).
"""

from __future__ import annotations

import inspect
import re
from importlib.metadata import entry_points

import pytest

verl = pytest.importorskip("verl")

import torch  # noqa: E402
from _verl_helpers import verl_config  # noqa: E402
from verl.single_controller.base.decorator import MAGIC_ATTR, Dispatch  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.padding_utils import construct_minimal_padding_template  # noqa: E402
from verl.trainer.ppo.utils import need_reference_policy  # noqa: E402
from verl.trainer.ppo.v1 import get_trainer_cls, register_trainer  # noqa: E402
from verl.trainer.ppo.v1 import trainer_base, utils as v1_utils  # noqa: E402
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer  # noqa: E402
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync  # noqa: E402
from verl.workers.config import ActorConfig  # noqa: E402
from verl.workers.engine_workers import ActorRolloutRefWorker  # noqa: E402
from verl.workers.utils import losses  # noqa: E402

from mara_rl.integrations.verl import MODE, TESTED_VERL, MaraSyncTrainer, verl_is_tested  # noqa: E402
from mara_rl.integrations.verl.trainer import forward_kl_actor_config  # noqa: E402


def expect(condition: bool, assumption: str) -> None:
    tested = ", ".join(".".join(map(str, v)) for v in TESTED_VERL)
    assert condition, f"verl {verl.__version__} broke an assumption of mara_sync (tested with verl {tested}): {assumption}"


def source(obj) -> str:
    return inspect.getsource(obj)


def test_installed_verl_is_a_tested_release():
    expect(verl_is_tested(), "the installed verl is a release listed in TESTED_VERL")


def test_plugin_entry_point_registers_the_mode():
    points = [ep for ep in entry_points(group="verl.plugins") if ep.value == "mara_rl.integrations.verl"]
    assert points, "mara-rl's verl.plugins entry point is not installed (reinstall mara-rl with the [verl] extra)"
    expect(
        'entry_points(group="verl.plugins")' in source(verl) and "_ep.load()" in source(verl),
        "`import verl` loads every entry point of the verl.plugins group",
    )
    points[0].load()
    expect(get_trainer_cls(MODE) is MaraSyncTrainer, "register_trainer(name) makes get_trainer_cls(name) return the class")
    with pytest.raises(ValueError):
        register_trainer(MODE)(PPOTrainerSync)  # a name is never silently rebound


def test_mode_is_selected_by_config_and_runs_the_sync_schedule():
    config = verl_config(f"trainer.v1.trainer_mode={MODE}", "algorithm.use_kl_in_reward=True")
    from verl.trainer import main_ppo

    expect("get_trainer_cls(config.trainer.v1.trainer_mode)" in source(main_ppo),
           "main_ppo picks the trainer class with get_trainer_cls(config.trainer.v1.trainer_mode)")
    trainer = get_trainer_cls(config.trainer.v1.trainer_mode)(config)
    assert isinstance(trainer, MaraSyncTrainer) and isinstance(trainer, PPOTrainerSync)
    expect(type(trainer.replay_buffer) is ReplayBuffer, "trainer_mode == 'sync' selects the synchronous ReplayBuffer")
    branches = re.findall(r"self\.trainer_mode [!=]= \"(\w+)\"", source(trainer_base.PPOTrainer))
    expect(branches and set(branches) == {"sync"}, "PPOTrainer branches only on trainer_mode == 'sync'")
    assert config.trainer.v1.trainer_mode == MODE, "the user's config keeps its mode"


def test_step_once_order_and_compute_advantage_inputs():
    step = source(trainer_base.PPOTrainer._step_once)
    calls = ["_compute_old_log_prob", "_compute_ref_log_prob", "_compute_advantage", "_update_actor"]
    positions = [step.find(f"self.{name}(") for name in calls]
    expect(all(p >= 0 for p in positions) and positions == sorted(positions),
           "_step_once computes old log-probs, then reference log-probs, then _compute_advantage, then updates the actor")
    expect("self.replay_buffer.sample(" in step and step.find("self.replay_buffer.sample(") < positions[0],
           "rewards (rm_scores) come with the sampled rollout, before any log-prob pass")
    params = list(inspect.signature(trainer_base.PPOTrainer._compute_advantage).parameters)
    expect(params == ["self", "batch", "metrics"], "_compute_advantage(self, batch: KVBatchMeta, metrics: dict)")
    body = source(trainer_base.PPOTrainer._compute_advantage)
    for field in ("uid", "response_mask", "rm_scores", "ref_log_prob"):
        expect(f'"{field}"' in body, f"_compute_advantage reads {field!r} from TransferQueue")
    expect('data.batch["token_level_scores"] = data.batch["rm_scores"]' in body,
           "_compute_advantage takes the task reward from rm_scores")
    expect("compute_advantage_for_multi_trajectories(" in body, "advantages go through compute_advantage_for_multi_trajectories")


def test_reference_log_probs_exist_exactly_when_a_kl_term_is_on():
    for reward, loss in [(False, False), (True, False), (False, True)]:
        config = verl_config(f"algorithm.use_kl_in_reward={reward}", f"actor_rollout_ref.actor.use_kl_loss={loss}")
        expect(need_reference_policy(config) == (reward or loss),
               "the reference policy runs iff use_kl_in_reward or actor.use_kl_loss")


def test_kl_controller_exposes_its_current_coefficient():
    config = verl_config("algorithm.kl_ctrl.kl_coef=0.07")
    expect(core_algos.get_kl_controller(config.algorithm.kl_ctrl).value == 0.07, "the KL controller's .value is its beta")


def test_grpo_reads_each_sessions_final_output_and_sums_token_rewards():
    body = source(v1_utils.compute_advantage_for_multi_trajectories)
    expect('key.rsplit("_", 2)' in body and "final_sessions[session_key][0] < index" in body,
           "GRPO keys are {uid}_{session}_{index} and only the highest index of a session is used")
    expect(core_algos.AdvantageEstimator.GRPO == "grpo", "AdvantageEstimator.GRPO compares equal to 'grpo'")
    expect("scores = token_level_rewards.sum(dim=-1)" in source(core_algos.compute_grpo_outcome_advantage),
           "GRPO's sequence reward is the sum of token-level rewards over the whole response")


def test_reward_sits_on_the_last_response_token():
    from verl.trainer.ppo.v1 import agent_loop_tq
    from verl.experimental.agent_loop import agent_loop

    expect("rm_scores[-1] = reward_score" in source(agent_loop),
           "the agent loop puts the sequence score on the last response position of rm_scores")
    expect("output.reward_score = final_output.reward_score" in source(agent_loop_tq),
           "every output of a multi-output session carries the final output's score")


def test_padding_rows_are_tagged_and_empty():
    sample = {"response_mask": torch.ones(3, dtype=torch.int64), "uid": "u"}
    template, tag = construct_minimal_padding_template(sample, {}, eos_token_id=0)
    expect(tag.get("is_padding") is True, "padding rows carry the tag is_padding=True")
    expect(int(template["response_mask"].sum()) == 0 and float(template["rm_scores"].sum()) == 0.0,
           "padding rows have an empty response mask and zero rm_scores")


def test_actor_loss_hook():
    attrs = getattr(ActorRolloutRefWorker.set_loss_fn, MAGIC_ATTR, {})
    expect(attrs.get("dispatch_mode") == Dispatch.ONE_TO_ALL,
           "ActorRolloutRefWorker.set_loss_fn(loss_fn) is registered with Dispatch.ONE_TO_ALL (sent to every worker)")
    expect(list(inspect.signature(losses.ppo_loss).parameters) == ["config", "model_output", "data", "dp_group"],
           "ppo_loss(config, model_output, data, dp_group=None)")
    expect("partial(ppo_loss, config=actor_config)" in source(ActorRolloutRefWorker.init_model),
           "the actor's loss is partial(ppo_loss, config=ActorConfig) (what set_loss_fn replaces)")
    config = verl_config("actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1")
    actor = forward_kl_actor_config(config)
    expect(isinstance(actor, ActorConfig) and actor.use_kl_loss is False,
           "omega_conf_to_dataclass builds an ActorConfig from actor_rollout_ref.actor")
    ppo = source(losses.ppo_loss)
    for key in ("dp_size", "global_batch_size"):
        expect(f'config.global_batch_info["{key}"]' in ppo, f"ppo_loss records global_batch_info[{key!r}] for aggregation")
    expect('metrics["actor/pg_loss"] = Metric(value=pg_loss, aggregation=metric_aggregation)' in ppo,
           "ppo_loss reports actor/pg_loss as a Metric with the loss's aggregation")
