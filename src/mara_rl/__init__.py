"""mara-rl: the target distribution of KL-regularised RL, and MARA to keep every good mode.

The core is two pure modules: :mod:`mara_rl.targets` (closed-form optimal targets and their
diagnostics) and :mod:`mara_rl.augment` (``mara_rewards``, Algorithms 1 and 2 of GX-Chen et al.,
2025). Domain adapters live in ``mara_rl.toy``, ``mara_rl.llm`` (extra ``[llm]``) and
``mara_rl.chem`` (extra ``[chem]``).

The names below load their module (and numpy) on first use, so the ``mara`` command installs its
Ctrl-C handling before anything heavy is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOME = {
    "MaraResult": "mara_rl.augment",
    "mara_rewards": "mara_rl.augment",
    **{name: "mara_rl.targets" for name in (
        "crossover_beta", "describe_target", "effective_num_modes", "entropy", "forward_kl_target", "kl_target",
        "log_ratio", "mara_target", "mass_above", "reverse_kl_target", "summarize_targets",
    )},
}

__all__ = sorted(_HOME)

if TYPE_CHECKING:
    from mara_rl.augment import MaraResult, mara_rewards
    from mara_rl.targets import (
        crossover_beta, describe_target, effective_num_modes, entropy, forward_kl_target, kl_target, log_ratio,
        mara_target, mass_above, reverse_kl_target, summarize_targets,
    )


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'mara_rl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
