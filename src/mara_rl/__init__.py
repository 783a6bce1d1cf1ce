"""mara-rl: the target distribution of KL-regularised RL, and MARA to keep every good mode.

The core is two pure modules: :mod:`mara_rl.targets` (closed-form optimal targets and their
diagnostics) and :mod:`mara_rl.augment` (``mara_rewards``, Algorithms 1 and 2 of GX-Chen et al.,
2025). Domain adapters live in ``mara_rl.toy``, ``mara_rl.llm`` (extra ``[llm]``) and
``mara_rl.chem`` (extra ``[chem]``).
"""

from mara_rl.augment import MaraResult, mara_rewards
from mara_rl.targets import (
    crossover_beta,
    describe_target,
    effective_num_modes,
    entropy,
    forward_kl_target,
    kl_target,
    log_ratio,
    mara_target,
    mass_above,
    reverse_kl_target,
    summarize_targets,
)

__version__ = "0.1.0"

__all__ = [
    "MaraResult",
    "crossover_beta",
    "describe_target",
    "effective_num_modes",
    "entropy",
    "forward_kl_target",
    "kl_target",
    "log_ratio",
    "mara_rewards",
    "mara_target",
    "mass_above",
    "reverse_kl_target",
    "summarize_targets",
]
