"""The one check of MARA's settings both hosts run (``mara_rl.integrations.settings``), against the core's own."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _settings_cases import ACCEPTED, REJECTED, accepted, assert_one_line_naming, core_accepts, rejected

from mara_rl.integrations.settings import check_flag, check_mara_options

NAMES = {key: f"host.{key}" for key in ("enable", "tau", "tau_quantile", "kl")}
DEFAULTS = {"enable": True, "tau": None, "tau_quantile": None, "kl": "reverse"}


def options(setting, value):
    return check_mara_options(**{**DEFAULTS, setting: value}, names=NAMES)


@accepted()
def test_accepted_values_are_stored_as_their_meaning(setting, value, stored):
    got = getattr(options(setting, value), setting)
    assert got == stored and type(got) is type(stored)


@rejected()
def test_rejected_values_are_one_line_naming_the_setting(setting, value, message):
    with pytest.raises(ValueError) as error:
        options(setting, value)
    assert_one_line_naming(error.value, NAMES[setting], message)


@pytest.mark.parametrize(
    ("setting", "value", "host_accepts"),
    [(s, v, True) for s, v, _ in ACCEPTED if s != "enable" and v is not None]
    + [(s, v, False) for s, v, _ in REJECTED if s != "enable"],
    ids=lambda x: " ".join(repr(x).split())[:20],
)
def test_the_hosts_accept_exactly_what_the_core_accepts(setting, value, host_accepts):
    assert core_accepts(setting, value) == host_accepts


def test_both_thresholds_are_an_error_naming_both():
    with pytest.raises(ValueError, match=r"^give at most one of host\.tau \(.*\) and host\.tau_quantile"):
        check_mara_options(enable=True, tau=1.0, tau_quantile=0.9, kl="reverse", names=NAMES)


def test_flag_words_are_exactly_the_listed_ones():
    words = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
    for word, meaning in words.items():
        for spelled in (word, word.upper(), word.capitalize()):
            assert check_flag(spelled, "x") is meaning
    for other in ("t", "f", "y", "n", "enable", "disable", "none", "null", "2", "-1", "1.0", "true "):
        with pytest.raises(ValueError, match="^x must be true or false"):
            check_flag(other, "x")


def test_importing_the_settings_stays_light():
    code = "import sys, mara_rl.integrations.settings; print(sorted({'torch', 'trl', 'verl', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
