"""``algorithm.mara`` rejects at ``MaraSettings.from_config`` what the core would reject later (verl env only).

The cases are the table both hosts share (``_settings_cases.py``), under verl's key names, in an
OmegaConf config (only the values OmegaConf can hold); then the users' own Hydra command lines,
composed with verl's ``ppo_trainer`` config, build the trainer class verl selects: the error comes at
its construction, before any worker, model or Ray cluster.
"""

from __future__ import annotations

import math
import warnings

import pytest

pytest.importorskip("verl")

from _settings_cases import ACCEPTED, REJECTED, assert_one_line_naming, case_id, core_accepts  # noqa: E402
from _verl_helpers import verl_config  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from verl.trainer.ppo.v1 import get_trainer_cls  # noqa: E402

from mara_rl.integrations.verl import MODE, MaraSyncTrainer  # noqa: E402
from mara_rl.integrations.verl.settings import MaraSettings  # noqa: E402

PLAIN = (bool, int, float, str, type(None), list, tuple, dict)  # what a YAML file or a Hydra override holds


def plain(cases):
    return [c for c in cases if type(c[1]) in PLAIN]


def config(mara: dict | None = None, **overrides):
    """A config with an in-reward KL term (a forward-KL section gets verl's KL loss instead)."""
    forward = (mara or {}).get("kl") == "forward"
    cfg = OmegaConf.create({
        "algorithm": {"use_kl_in_reward": not forward, "kl_ctrl": {"kl_coef": 0.01}, "adv_estimator": "rloo"},
        "actor_rollout_ref": {"actor": {"use_kl_loss": forward, "kl_loss_coef": 0.02}},
    })
    if mara is not None:
        OmegaConf.update(cfg, "algorithm.mara", mara, force_add=True)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


ACCEPTED_HERE = plain(ACCEPTED)
REJECTED_HERE = plain(REJECTED)


@pytest.mark.parametrize(("setting", "value", "stored"), ACCEPTED_HERE, ids=[case_id(c) for c in ACCEPTED_HERE])
def test_accepted_values_are_stored_as_their_meaning(setting, value, stored):
    settings = MaraSettings.from_config(config({setting: value}))
    got = getattr(settings, setting)
    if setting == "tau_quantile" and value is None:
        stored = 0.9  # verl's section fills the default quantile
    assert got == stored and type(got) is type(stored)


@pytest.mark.parametrize(("setting", "value", "message"), REJECTED_HERE, ids=[case_id(c) for c in REJECTED_HERE])
@pytest.mark.parametrize("enable", [True, False], ids=["on", "off"])
def test_rejected_values_fail_at_from_config(setting, value, message, enable):
    with pytest.raises(ValueError) as error:
        MaraSettings.from_config(config({"enable": enable, setting: value}))
    assert_one_line_naming(error.value, f"algorithm.mara.{setting}", message)
    if setting != "enable":
        assert not core_accepts(setting, value), "the section rejects only what the core rejects"


def test_both_thresholds_name_both_keys():
    with pytest.raises(ValueError, match=r"^give at most one of algorithm\.mara\.tau \(.*\) and algorithm\.mara\.tau_quantile"):
        MaraSettings.from_config(config({"tau": 1.0, "tau_quantile": 0.9}))


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, "big", "5", "", True, None, [5.0]])
def test_max_log_ratio_is_a_finite_number_at_least_zero(value):
    with pytest.raises(ValueError) as error:
        MaraSettings.from_config(config({"kl": "forward", "max_log_ratio": value}))
    assert_one_line_naming(error.value, "algorithm.mara.max_log_ratio", "must be a finite number >= 0")
    assert MaraSettings.from_config(config({"kl": "forward", "max_log_ratio": 0})).max_log_ratio == 0.0


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.01, 0.0, True, "0.01", None])
@pytest.mark.parametrize("kl", ["reverse", "forward"])
def test_mara_s_beta_is_a_finite_number_above_zero(value, kl):
    key = "actor_rollout_ref.actor.kl_loss_coef" if kl == "forward" else "algorithm.kl_ctrl.kl_coef"
    with pytest.raises(ValueError) as error:
        MaraSettings.from_config(config({"kl": kl}, **{key: value}))
    assert_one_line_naming(error.value, key, "must be a")


@pytest.mark.parametrize("section", [5, "on", True, [1, 2]])
def test_the_section_itself_must_be_a_section(section):
    with pytest.raises(ValueError, match=r"^algorithm\.mara must be a section of settings"):
        MaraSettings.from_config(config(**{"algorithm.mara": section}))


def test_yaml_switch_words_and_infinities(tmp_path):
    """A YAML recipe: ``no`` is a YAML boolean, ``"no"`` a string; ``.inf`` a float. All mean what they say."""
    path = tmp_path / "mara.yaml"
    for text, expected in [("enable: no", False), ('enable: "no"', False), ("enable: 'Off'", False), ("enable: yes", True)]:
        path.write_text(f"{text}\ntau: 0.5\n")
        assert MaraSettings.from_config(config(OmegaConf.load(path))).enable is expected
    path.write_text("tau: .inf\n")
    with pytest.raises(ValueError, match=r"^algorithm\.mara\.tau must be a finite number, got inf$"):
        MaraSettings.from_config(config(OmegaConf.load(path)))


# ----------------------------------------------------------------------------- the users' command lines

COMMAND_LINES = [  # (override as typed after `python -m verl.trainer.main_ppo`, start of the error)
    ("+algorithm.mara.enable=maybe", "algorithm.mara.enable must be true or false"),
    ("+algorithm.mara.enable=2", "algorithm.mara.enable must be true or false"),
    ("+algorithm.mara.tau=inf", "algorithm.mara.tau must be a finite number, got inf"),
    ("+algorithm.mara.tau=nan", "algorithm.mara.tau must be a finite number, got NaN"),
    ("+algorithm.mara.tau=1e400", "algorithm.mara.tau must be a finite number, got inf"),
    ("+algorithm.mara.tau=True", "algorithm.mara.tau must be a number, got True"),
    ("+algorithm.mara.tau=high", "algorithm.mara.tau must be a number, got 'high'"),
    ("+algorithm.mara.tau='0.5'", "algorithm.mara.tau must be a number, got '0.5'"),
    ("+algorithm.mara.tau=[1,2]", "algorithm.mara.tau must be a number, got [1, 2]"),
    ("+algorithm.mara.tau=''", "algorithm.mara.tau must be a number, got ''"),
    ("+algorithm.mara.tau_quantile=1.5", "algorithm.mara.tau_quantile must be a number in [0, 1]"),
    ("+algorithm.mara.kl=null", "algorithm.mara.kl must be one of"),
    ("algorithm.kl_ctrl.kl_coef=inf", "algorithm.kl_ctrl.kl_coef must be a finite number > 0"),
]


def build_trainer(*overrides: str):
    cfg = verl_config(f"trainer.v1.trainer_mode={MODE}", "algorithm.use_kl_in_reward=True", *overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_trainer_cls(cfg.trainer.v1.trainer_mode)(cfg)


@pytest.mark.parametrize(("override", "message"), COMMAND_LINES, ids=[c[0] for c in COMMAND_LINES])
def test_command_line_mistakes_fail_when_the_trainer_is_built(override, message):
    with pytest.raises(ValueError) as error:
        build_trainer(override)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_command_line_switch_words_reach_the_trainer():
    for word, enabled in [("no", False), ("off", False), ("yes", True), ("1", True)]:
        trainer = build_trainer(f"+algorithm.mara.enable={word}", "+algorithm.mara.tau=0.5")
        assert isinstance(trainer, MaraSyncTrainer) and trainer.mara.enable is enabled
