"""The table of MARA settings both hosts are tested with (tests/test_trl_settings.py, tests/test_verl_settings.py).

Settings by their generic names (``enable``, ``tau``, ``tau_quantile``, ``kl``); each host test maps them
to its own (``mara_tau``, ``algorithm.mara.tau``, ...). Stored values are written out by hand: they are
what a user means, not what the code returns.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from mara_rl.augment import mara_rewards

SWITCH = "must be true or false"
NUMBER = "must be a number"
FINITE = "must be a finite number"
QUANTILE = r"must be a number in \[0, 1\]"
CHOICE = "must be one of"

# (setting, value as given, value stored)
ACCEPTED = [
    ("enable", True, True),
    ("enable", False, False),
    ("enable", "true", True),
    ("enable", "False", False),
    ("enable", "yes", True),
    ("enable", "no", False),
    ("enable", "No", False),
    ("enable", "ON", True),
    ("enable", "off", False),
    ("enable", "1", True),
    ("enable", "0", False),
    ("enable", 1, True),  # Hydra reads enable=1 as the integer 1
    ("enable", 0, False),
    ("enable", np.bool_(True), True),
    ("tau", None, None),
    ("tau", 1, 1.0),
    ("tau", -2.5, -2.5),
    ("tau", 0.0, 0.0),
    ("tau", 1e300, 1e300),
    ("tau", np.float32(0.5), 0.5),
    ("tau", np.int64(3), 3.0),
    ("tau_quantile", None, None),
    ("tau_quantile", 0, 0.0),
    ("tau_quantile", 1, 1.0),
    ("tau_quantile", 0.25, 0.25),
    ("tau_quantile", np.float64(0.9), 0.9),
    ("kl", "reverse", "reverse"),
    ("kl", "forward", "forward"),
]

# (setting, value as given, what the one-line error says after the setting's name)
REJECTED = [
    ("enable", "maybe", SWITCH),
    ("enable", "", SWITCH),
    ("enable", "y", SWITCH),
    ("enable", " no", SWITCH),
    ("enable", None, SWITCH),
    ("enable", 2, SWITCH),
    ("enable", -1, SWITCH),
    ("enable", 1.0, SWITCH),
    ("enable", 0.5, SWITCH),
    ("enable", [True], SWITCH),
    ("enable", {}, SWITCH),
    ("tau", math.inf, FINITE),
    ("tau", -math.inf, FINITE),
    ("tau", math.nan, FINITE),
    ("tau", 10**400, FINITE),  # an int beyond float64: +inf as a float
    ("tau", True, NUMBER),
    ("tau", False, NUMBER),
    ("tau", "1.0", NUMBER),
    ("tau", "inf", NUMBER),
    ("tau", "high", NUMBER),
    ("tau", "", NUMBER),
    ("tau", [1.0], NUMBER),
    ("tau", [1.0, 2.0], NUMBER),
    ("tau", (0.5,), NUMBER),
    ("tau", {}, NUMBER),
    ("tau", {"value": 1.0}, NUMBER),
    ("tau", 1j, NUMBER),
    ("tau", np.array([0.5]), NUMBER),
    ("tau", np.ones((20, 20)), NUMBER),  # a multi-line repr: the message stays one line
    ("tau_quantile", -0.1, QUANTILE),
    ("tau_quantile", 1.5, QUANTILE),
    ("tau_quantile", math.nan, QUANTILE),
    ("tau_quantile", math.inf, QUANTILE),
    ("tau_quantile", True, QUANTILE),
    ("tau_quantile", False, QUANTILE),
    ("tau_quantile", "0.9", QUANTILE),
    ("tau_quantile", "", QUANTILE),
    ("tau_quantile", [0.9], QUANTILE),
    ("kl", "sideways", CHOICE),
    ("kl", "Reverse", CHOICE),
    ("kl", "", CHOICE),
    ("kl", None, CHOICE),
    ("kl", 0, CHOICE),
    ("kl", ["reverse"], CHOICE),
]

SETTINGS = ("enable", "tau", "tau_quantile", "kl")


def case_id(case) -> str:
    setting, value, _ = case
    return f"{setting}={type(value).__name__}:{' '.join(repr(value).split())[:20]}"


def accepted():
    return pytest.mark.parametrize(("setting", "value", "stored"), ACCEPTED, ids=[case_id(c) for c in ACCEPTED])


def rejected(settings: tuple[str, ...] = SETTINGS):
    cases = [c for c in REJECTED if c[0] in settings]
    return pytest.mark.parametrize(("setting", "value", "message"), cases, ids=[case_id(c) for c in cases])


def core_accepts(setting: str, value) -> bool:
    """Whether :func:`mara_rl.augment.mara_rewards` takes ``value`` for ``setting`` (``tau``, ``tau_quantile``, ``kl``)."""
    kwargs = {"tau": 0.5, "kl": "reverse"}
    if setting == "tau_quantile":
        kwargs.pop("tau")
    kwargs[setting] = value
    try:
        mara_rewards(np.array([0.0, 1.0, 1.0]), np.log([0.5, 0.3, 0.2]), beta=0.1, **kwargs)
    except ValueError:
        return False
    return True


def assert_one_line_naming(error: BaseException, name: str, message: str) -> None:
    """``error`` is one line that opens with the setting's ``name`` and then says ``message``."""
    text = str(error)
    assert "\n" not in text, text
    assert text.startswith(f"{name} "), text
    assert re.search(message, text), text
