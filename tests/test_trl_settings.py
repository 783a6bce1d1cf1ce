"""MaraGRPOConfig / MaraRLOOConfig reject at construction what the core would reject later (no model involved).

The cases are the table both hosts share (``_settings_cases.py``), under TRL's field names; a
config is built directly (Python) and through ``TrlParser`` from a YAML recipe, as TRL's scripts do.
"""

from __future__ import annotations

import math
import warnings

import pytest

pytest.importorskip("trl")

from _settings_cases import accepted, assert_one_line_naming, core_accepts, rejected  # noqa: E402
from trl import TrlParser  # noqa: E402

from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraRLOOConfig  # noqa: E402

FIELD = {"enable": "mara", "tau": "mara_tau", "tau_quantile": "mara_tau_quantile", "kl": "kl_direction"}
CONFIGS = pytest.mark.parametrize("config_cls", [MaraGRPOConfig, MaraRLOOConfig], ids=["grpo", "rloo"])


@pytest.fixture
def base(tmp_path):
    return dict(output_dir=str(tmp_path), use_cpu=True, report_to="none", beta=0.1)


@CONFIGS
@accepted()
def test_accepted_values_are_stored_as_their_meaning(config_cls, base, setting, value, stored):
    config = config_cls(**base, **{FIELD[setting]: value})
    got = getattr(config, FIELD[setting])
    assert got == stored and type(got) is type(stored)


@CONFIGS
@rejected()
def test_rejected_values_fail_at_config_construction(config_cls, base, setting, value, message):
    with pytest.raises(ValueError) as error:
        config_cls(**base, **{"mara": True, FIELD[setting]: value})
    assert_one_line_naming(error.value, FIELD[setting], message)
    if setting != "enable":
        assert not core_accepts(setting, value), "the config rejects only what the core rejects"


@CONFIGS
@rejected(settings=("tau", "tau_quantile", "kl"))
def test_rejected_values_fail_with_mara_off_too(config_cls, base, setting, value, message):
    """A setting is checked whatever ``mara`` is: turning MARA on later must not reveal an old mistake."""
    with pytest.raises(ValueError, match=f"^{FIELD[setting]} "):
        config_cls(**base, **{FIELD[setting]: value})


@CONFIGS
@pytest.mark.parametrize("value", ["tokens", "Token", "", None, 0, ["token"]])
def test_forward_kl_estimator_is_one_of_its_names(config_cls, base, value):
    with pytest.raises(ValueError) as error:
        config_cls(**base, kl_direction="forward", forward_kl_estimator=value)
    assert_one_line_naming(error.value, "forward_kl_estimator", "must be one of")
    assert config_cls(**base, forward_kl_estimator="sequence").forward_kl_estimator == "sequence"


@CONFIGS
def test_both_thresholds_name_both_fields(config_cls, base):
    with pytest.raises(ValueError, match=r"^give at most one of mara_tau \(.*\) and mara_tau_quantile"):
        config_cls(**base, mara=True, mara_tau=1.0, mara_tau_quantile=0.9)


@CONFIGS
@pytest.mark.parametrize("beta", [math.nan, math.inf, -0.5, True, "0.1"])
def test_mara_with_a_beta_the_core_rejects_fails_at_construction(config_cls, base, beta):
    with pytest.raises(ValueError, match="^beta must be a"):
        config_cls(**{**base, "beta": beta}, mara=True)


def test_mara_no_is_off_and_keeps_trl_s_reward_scaling(base):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no MARA warning about scaling either
        config = MaraGRPOConfig(**base, mara="no", mara_tau=1.0)
    assert config.mara is False and config.scale_rewards == "group"
    assert MaraGRPOConfig(**base, mara="yes").scale_rewards == "none"


# ----------------------------------------------------------------------------- TrlParser and YAML

YAML_CASES = [  # (line in the recipe, the fields it gives, or the start of the error)
    ('mara: "no"', {"mara": False, "scale_rewards": "group"}),  # TrlParser's string_to_bool
    ("mara: no", {"mara": False}),  # a YAML 1.1 boolean
    ("mara: off", {"mara": False}),
    ("mara: yes", {"mara": True, "scale_rewards": "none"}),
    ("mara: 1", {"mara": True}),
    ("mara: 2", "mara must be true or false"),
    ("mara: null", "mara must be true or false"),
    ("mara_tau: 1", {"mara_tau": 1.0}),
    ('mara_tau: "0.5"', {"mara_tau": 0.5}),  # argparse converts a string default with the field's type
    ("mara_tau: inf", "mara_tau must be a finite number"),
    ("mara_tau: .inf", "mara_tau must be a finite number"),
    ("mara_tau: -.inf", "mara_tau must be a finite number"),
    ("mara_tau: .nan", "mara_tau must be a finite number"),
    ("mara_tau: 1e400", "mara_tau must be a finite number"),
    ("mara_tau: true", "mara_tau must be a number"),
    ("mara_tau: [1, 2]", "mara_tau must be a number"),
    ("mara_tau_quantile: 1.5", "mara_tau_quantile must be a number in [0, 1]"),
    ("mara_tau_quantile: .nan", "mara_tau_quantile must be a number in [0, 1]"),
    ("mara_tau_quantile: false", "mara_tau_quantile must be a number in [0, 1]"),
    ("kl_direction: null", "kl_direction must be one of"),
    ("kl_direction: Forward", "kl_direction must be one of"),
    ("forward_kl_estimator: null", "forward_kl_estimator must be one of"),
]


def parse_recipe(config_cls, tmp_path, line: str, *args: str):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"output_dir: {tmp_path / 'out'}\nuse_cpu: true\nreport_to: none\nbeta: 0.1\nmara: true\n{line}\n")
    (config,) = TrlParser((config_cls,)).parse_args_and_config(args=["--config", str(recipe), *args])
    return config


@CONFIGS
@pytest.mark.parametrize(("line", "expected"), YAML_CASES, ids=[c[0] for c in YAML_CASES])
def test_yaml_recipes_through_trl_parser(config_cls, tmp_path, line, expected):
    if isinstance(expected, str):
        with pytest.raises(ValueError) as error:
            parse_recipe(config_cls, tmp_path, line)
        assert str(error.value).startswith(expected) and "\n" not in str(error.value)
        return
    config = parse_recipe(config_cls, tmp_path, line)
    for name, value in expected.items():
        if name == "scale_rewards" and config_cls is MaraRLOOConfig:
            continue
        assert getattr(config, name) == value and type(getattr(config, name)) is type(value)


@pytest.mark.parametrize(("line", "flag"), [("mara: maybe", "--mara"), ("mara_tau: high", "--mara_tau"), ("mara_tau: ''", "--mara_tau")])
def test_strings_the_parser_cannot_read_stop_it_naming_the_flag(tmp_path, capsys, line, flag):
    with pytest.raises(SystemExit) as stop:
        parse_recipe(MaraGRPOConfig, tmp_path, line)
    assert stop.value.code == 2
    assert f"error: argument {flag}" in capsys.readouterr().err


def test_command_line_overrides_the_recipe(tmp_path):
    assert parse_recipe(MaraGRPOConfig, tmp_path, "mara_tau: 1.0", "--mara", "no").mara is False
    with pytest.raises(ValueError, match="^mara_tau must be a finite number"):
        parse_recipe(MaraGRPOConfig, tmp_path, "mara_tau: 1.0", "--mara_tau", "inf")
