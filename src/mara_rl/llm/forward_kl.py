"""Older import path of :mod:`mara_rl.integrations.forward_kl` (the same module object)."""

import sys

from mara_rl.integrations import forward_kl as _forward_kl

sys.modules[__name__] = _forward_kl
