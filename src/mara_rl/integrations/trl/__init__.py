"""TRL adapter (extra ``[llm]``): ``MaraGRPOTrainer`` / ``MaraRLOOTrainer`` and their configs.

``from mara_rl.integrations.trl import MaraGRPOConfig, MaraGRPOTrainer``. The trainers live in
``mara_rl.integrations.trl.trainers``; ``mara_rl.integrations.trl.trainers`` is the same module under its older name.
"""

from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer, MaraRLOOConfig, MaraRLOOTrainer

__all__ = ["MaraGRPOConfig", "MaraGRPOTrainer", "MaraRLOOConfig", "MaraRLOOTrainer"]
