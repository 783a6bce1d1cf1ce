"""The ``mara_sync`` trainer mode: verl's synchronous v1 trainer with MARA before its advantages.

verl's ``_step_once`` computes per-sample rewards during rollout (``rm_scores``), then old and
reference log-probs, then ``_compute_advantage``, which reads ``rm_scores`` and ``ref_log_prob`` from
TransferQueue and runs the stock KL-in-reward, rollout-correction and advantage code. This mode
rewrites ``rm_scores`` there (:func:`~mara_rl.integrations.verl.rewards.mara_rewrite`, one MARA
group per ``uid``) and then calls the stock method, so everything downstream is verl's own.
With ``algorithm.mara.kl=forward`` it also writes the reference log-probs and Alg. 2's per-sample weights and installs
:func:`~mara_rl.integrations.verl.loss.forward_kl_ppo_loss` on the actor workers. With
``algorithm.mara.reward_transform`` a rival reward transform takes MARA's place. With
``algorithm.mara.record_dir`` it writes each step's rollouts there
(:mod:`~mara_rl.integrations.verl.recording`), MARA on or off.

Tested against verl 0.9.1 (``TESTED_VERL``); ``tests/test_verl_contract.py`` asserts each verl
behaviour relied on here.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any

import transfer_queue as tq
import verl
from omegaconf import DictConfig, OmegaConf, open_dict
from packaging.version import Version
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.core_algos import AdvantageEstimator
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.utils.padding import response_to_nested

from mara_rl.integrations.verl.loss import MARA_KL_COEF_FIELD, MARA_KL_REF_FIELD, MARA_KL_SCALE_FIELD, forward_kl_ppo_loss
from mara_rl.integrations.verl.recording import VerlRecorder, decode_rows, record_metadata
from mara_rl.integrations.verl.rewards import mara_rewrite
from mara_rl.integrations.verl.settings import KL_IN_REWARD, MaraSettings
from mara_rl.transforms import OutcomeCounts, get_transform

MODE = "mara_sync"
TESTED_VERL = ((0, 9),)  # (major, minor) releases tests/test_verl_contract.py was run against


def verl_is_tested(version: str = verl.__version__) -> bool:
    """Whether ``version`` is a verl release this mode was tested against (``TESTED_VERL``)."""
    return Version(version).release[:2] in TESTED_VERL


def forward_kl_actor_config(config: DictConfig) -> Any:
    """verl's ``ActorConfig`` of ``config`` with ``use_kl_loss`` off: the forward term replaces that KL."""
    actor = OmegaConf.create(OmegaConf.to_container(config.actor_rollout_ref.actor, resolve=True))
    with open_dict(actor):
        actor.use_kl_loss = False
    return omega_conf_to_dataclass(actor)


@register_trainer(MODE)
class MaraSyncTrainer(PPOTrainerSync):
    """``PPOTrainerSync`` whose ``_compute_advantage`` first applies MARA (see the module docstring)."""

    def __init__(self, config: DictConfig):
        if not verl_is_tested():
            warnings.warn(
                f"mara_rl's verl trainer mode is tested with verl {TESTED_VERL}, found {verl.__version__}; "
                "run tests/test_verl_contract.py before trusting it with this version",
                UserWarning,
                stacklevel=2,
            )
        self.mara = MaraSettings.from_config(config)
        super().__init__(config)
        self.mara_recorder = None
        # outcome_ucb's (prompt, answer) counts over the run; a resumed run starts counting anew, as in TRL
        self.mara_transform = get_transform(self.mara.reward_transform) if self.mara.reward_transform else None
        needs_counts = self.mara_transform is not None and "outcome_counts" in self.mara_transform.needs
        self.mara_outcome_counts = OutcomeCounts() if needs_counts else None
        if self.mara.record_dir:
            self.mara_recorder = VerlRecorder(self.mara.record_dir, record_metadata(config, self.mara, self.mara_beta()))

    # verl branches on ``trainer_mode == "sync"`` (replay buffer, refill, checkpoints): this mode is
    # the sync schedule, so verl must see "sync" while the config keeps the user's "mara_sync".
    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        if value != MODE:
            raise ValueError(f"MaraSyncTrainer runs trainer.v1.trainer_mode={MODE!r}, got {value!r}")

    def mara_beta(self) -> float:
        """The KL coefficient verl applies this step (the in-reward controller's value, else kl_loss_coef; 0: none)."""
        if self.mara.kl_source == KL_IN_REWARD:
            if not self.config.algorithm.use_kl_in_reward:
                return 0.0
            return float(self.kl_ctrl_in_reward.value)
        return float(self.config.actor_rollout_ref.actor.kl_loss_coef)

    def _setup(self) -> None:
        super()._setup()
        if self.mara.kl == "forward":
            loss_fn = partial(
                forward_kl_ppo_loss,
                config=forward_kl_actor_config(self.config),
                beta=self.mara_beta(),
                max_log_ratio=self.mara.max_log_ratio,
            )
            self.actor_rollout_wg.set_loss_fn(loss_fn)

    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        """Rewrite ``rm_scores`` (and, for forward KL, write the reference log-probs and Alg. 2's weights), then verl's own.

        With ``enable=false``, reverse KL and no reward transform there is nothing to rewrite: this is
        verl's stock method.
        """
        recorded = None
        if self.mara_recorder is not None:  # read before MARA rewrites rm_scores
            recorded = self.mara_recorder.read(tq, batch, self.tokenizer)
        if not self.mara.enable and self.mara.kl == "reverse" and self.mara_transform is None:
            if recorded is not None:
                self.mara_recorder.write(self.global_steps, recorded)
            return super()._compute_advantage(batch, metrics)
        texts = self.mara_transform is not None and self.mara_transform.reads_answers
        data = tq.kv_batch_get(
            keys=batch.keys,
            partition_id=batch.partition_id,
            select_fields=["uid", "response_mask", "rm_scores", "ref_log_prob", "old_log_probs"]
            + (["prompts", "responses"] if texts else []),
        )
        response_mask = data["response_mask"]
        padded = data.to_padded_tensor()
        uids = [str(uid) for uid in padded.pop("uid").tolist()]
        decoded = {name: decode_rows(data, padded, name, self.tokenizer) for name in ("prompts", "responses")} if texts else {}
        if texts:
            from mara_rl.diagnose.classes import answers_of

            decoded["responses"] = answers_of(decoded["responses"], self.mara.answer_key)
        rewrite = mara_rewrite(
            padded["rm_scores"],
            padded["ref_log_prob"],
            padded["response_mask"],
            response_mask.offsets().diff(),
            uids,
            list(batch.keys),
            [bool(tag.get("is_padding", False)) for tag in batch.tags],
            old_log_prob=padded["old_log_probs"],
            beta=self.mara_beta(),
            settings=self.mara,
            final_output_only=self.config.algorithm.adv_estimator == AdvantageEstimator.GRPO,
            answers=decoded.get("responses"),
            prompts=decoded.get("prompts"),
            outcome_counts=self.mara_outcome_counts,
        )
        fields = {"rm_scores": response_to_nested(rewrite.rm_scores, response_mask)}
        if rewrite.kl_scale is not None:
            fields[MARA_KL_REF_FIELD] = response_to_nested(padded["ref_log_prob"], response_mask)
            for name, weight in ((MARA_KL_SCALE_FIELD, rewrite.kl_scale), (MARA_KL_COEF_FIELD, rewrite.kl_coef)):
                per_token = weight.to(padded["ref_log_prob"].dtype)[:, None] * padded["response_mask"]
                fields[name] = response_to_nested(per_token, response_mask)
        tq.kv_batch_put(
            keys=batch.keys, partition_id=batch.partition_id, fields=TensorDict(fields, batch_size=len(batch))
        )
        metrics.update(rewrite.metrics)
        if recorded is not None:
            self.mara_recorder.write(self.global_steps, recorded, rewrite if self.mara.enable else None)
        return super()._compute_advantage(batch, metrics)
