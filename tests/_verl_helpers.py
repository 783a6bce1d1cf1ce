"""Shared pieces of the verl tests: verl's own Hydra config composed with overrides."""

from __future__ import annotations

import os

import verl
from hydra import compose, initialize_config_dir

BASE_OVERRIDES = (
    "actor_rollout_ref.model.path=/nonexistent",
    "actor_rollout_ref.rollout.n=3",
    "data.train_batch_size=3",
    "algorithm.norm_adv_by_std_in_grpo=False",
)


def verl_config(*overrides: str):
    """verl's ``ppo_trainer`` config, as ``python -m verl.trainer.main_ppo`` composes it, with ``overrides``."""
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose("ppo_trainer", overrides=[*BASE_OVERRIDES, *overrides])
