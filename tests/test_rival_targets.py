"""The rivals' expected rewards against Monte Carlo of the transforms themselves, and their targets."""

import numpy as np
import pytest

from mara_rl.rival_targets import expected_rewards, self_consistent_target
from mara_rl.targets import reverse_kl_target
from mara_rl.transforms import get_transform

PROBS = np.array([0.1, 0.6, 0.3])
REWARDS = np.array([0.0, 1.0, 1.0])


@pytest.mark.parametrize("name,value,rewards", [("unlikeliness", 0.5, REWARDS), ("outcome_batch", 0.5, REWARDS),
                                                ("pkpo", 4, REWARDS), ("pkpo", 3, np.array([0.2, 1.0, 0.5]))])
def test_expected_rewards_match_monte_carlo_of_the_transform(name, value, rewards):
    rng = np.random.default_rng(0)
    groups, size = 20000, 16
    outcomes = rng.choice(3, p=PROBS, size=groups * size)
    inputs = {"policy_logprobs": np.log(PROBS)[outcomes], "outcomes": outcomes.tolist()}
    transform = get_transform(name)
    r = transform(rewards[outcomes], group_ids=np.repeat(np.arange(groups), size), value=value,
                  **{k: v for k, v in inputs.items() if k in transform.needs})
    monte_carlo = np.array([r[outcomes == y].mean() for y in range(3)])
    np.testing.assert_allclose(expected_rewards(name, rewards, PROBS, value=value), monte_carlo, atol=0.01)


def test_pkpo_keeps_the_reference_ratio_among_correct_answers():
    ref = np.log([0.68, 0.30, 0.02])
    for beta in (0.01, 0.3):
        probs = self_consistent_target("pkpo", REWARDS, ref, beta, value=4)
        assert probs[1] / probs[2] == pytest.approx(15.0, rel=1e-6)
        assert probs[0] > reverse_kl_target(REWARDS, ref, beta)[0]  # wrong answers keep more mass


def test_unlikeliness_equalises_correct_answers_below_its_critical_beta_and_shrinks_the_ratio_above():
    ref = np.log([0.68, 0.30, 0.02])
    low = self_consistent_target("unlikeliness", REWARDS, ref, 0.01)
    assert low[2] / (low[1] + low[2]) == pytest.approx(0.5, abs=0.08)
    beta = 0.2  # above 0.043: a fixed point, ratio 15 exp(-gap / beta) with gap = 0.25 * 15/16 * P(correct) / 2
    high = self_consistent_target("unlikeliness", REWARDS, ref, beta)
    gap = 0.25 * 15 / 16 * (high[1] + high[2]) / 2
    assert high[1] / high[2] == pytest.approx(15 * np.exp(-gap / beta), rel=1e-3)


def test_advantage_transforms_have_no_reward_target():
    with pytest.raises(ValueError, match="advantage transform"):
        expected_rewards("grpo_passk", REWARDS, PROBS)


def test_the_figure_command_takes_no_flag_for_its_folder(tmp_path, monkeypatch, capsys):
    from mara_rl.rival_targets import main

    monkeypatch.chdir(tmp_path)
    for argv, code in ((["--help"], 0), (["a", "b"], 2)):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == code
    assert "folder of the two figures" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())  # nothing drawn, no folder named after the flag
