"""Adapters to other RL engines, each loaded only through its own extra.

- ``mara_rl.integrations.trl``: TRL's GRPO and RLOO trainers with MARA (``[llm]``);
- ``mara_rl.integrations.verl``: the verl plugin (``[verl]``);
- ``mara_rl.integrations.forward_kl``: the forward-KL estimators both adapters use (pure torch).
"""
