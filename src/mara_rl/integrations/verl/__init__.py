"""MARA and forward KL for verl (extra ``[verl]``), as the trainer mode ``trainer.v1.trainer_mode=mara_sync``.

verl imports this package on ``import verl`` through the ``verl.plugins`` entry point declared in
mara-rl's ``pyproject.toml``; importing it registers the mode. See ``docs/verl.md``.

- :mod:`.settings`: the ``algorithm.mara`` section and MARA's beta (verl's active KL coefficient);
- :mod:`.rewards`: MARA on a padded verl batch (``rm_scores`` rewritten per ``uid`` group);
- :mod:`.loss`: the forward-KL actor loss (``set_loss_fn``) with MARA's Algorithm 2;
- :mod:`.trainer`: ``MaraSyncTrainer``, registered with verl's ``register_trainer``.
"""

from mara_rl.integrations.verl.trainer import MODE, TESTED_VERL, MaraSyncTrainer, verl_is_tested

__all__ = ["MODE", "TESTED_VERL", "MaraSyncTrainer", "verl_is_tested"]
