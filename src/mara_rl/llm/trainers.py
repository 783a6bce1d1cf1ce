"""Older import path of :mod:`mara_rl.integrations.trl.trainers` (the same module object)."""

import sys

from mara_rl.integrations.trl import trainers as _trainers

sys.modules[__name__] = _trainers
