"""Didactic bandits: sampled training lands on the closed-form targets of mara_rl.targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mara_rl.targets import forward_kl_target, mara_target, reverse_kl_target  # noqa: E402
from mara_rl.toy.policies import CategoricalPolicy, DiscretisedGaussianPolicy  # noqa: E402
from mara_rl.toy.problems import (  # noqa: E402
    Bandit,
    binary_interval_problem,
    binary_intervals,
    exponential_reference,
    gaussian_bumps,
    mixture_logprobs,
    three_action_examples,
    uniform_reference,
)
from mara_rl.toy.train import RunSpec, TrainConfig, shaped_rewards, total_variation, train  # noqa: E402

CONFIG = TrainConfig(steps=2000, seed=0)


@pytest.fixture(scope="module")
def interval_runs():
    """Every (KL, beta in {0.01, 1}, MARA on/off) setting of the binary-interval experiment, trained once."""
    bandit = binary_interval_problem()
    runs = [RunSpec(bandit, beta, kl, mara) for kl in ("reverse", "forward") for beta in (0.01, 1.0) for mara in (False, True)]
    result = train(CategoricalPolicy(np.zeros((len(runs), bandit.num_outcomes))), runs, CONFIG)
    return bandit, runs, result


def test_every_binary_interval_setting_reaches_its_closed_form_target(interval_runs):
    _, runs, result = interval_runs
    for r, run in enumerate(runs):
        tv = float(total_variation(result.probs[r], run.target()))
        assert tv < 0.05, f"{run.label()}: TV {tv:.4f} to the closed-form target"


@pytest.mark.parametrize("kl", ["reverse", "forward"])
def test_mara_covers_both_intervals_where_vanilla_drops_the_rare_one(interval_runs, kl):
    bandit, runs, result = interval_runs
    masses = {run.mara: bandit.region_mass(result.probs[r]) for r, run in enumerate(runs) if run.kl == kl and run.beta == 0.01}
    common, rare = bandit.regions
    assert masses[False][rare] < 0.10
    assert masses[True][common] >= 0.40 and masses[True][rare] >= 0.40


def test_targets_used_by_runs_are_the_core_targets():
    bandit = binary_interval_problem()
    np.testing.assert_allclose(RunSpec(bandit, 0.3, "reverse").target(), reverse_kl_target(bandit.rewards, bandit.ref_logprobs, 0.3))
    np.testing.assert_allclose(RunSpec(bandit, 0.3, "forward").target(), forward_kl_target(bandit.rewards, bandit.ref_logprobs, 0.3))
    np.testing.assert_allclose(
        RunSpec(bandit, 0.3, "forward", mara=True).target(), mara_target(bandit.rewards, bandit.ref_logprobs, 0.3, 1.0, kl="forward")
    )


def test_restrictive_gaussian_picks_one_mode_under_reverse_kl_and_spreads_under_forward():
    k = 100
    log_p = mixture_logprobs(k, (25.0, 70.0), (0.55, 0.45), 6.0)
    regions = {"left": (13, 38), "right": (58, 83)}
    runs = [
        RunSpec(Bandit(log_p, uniform_reference(k), 0.0, "reverse fit", regions), 1.0, "reverse"),
        RunSpec(Bandit(np.zeros(k), log_p, 0.0, "forward fit", regions), 1.0, "forward"),
    ]
    policy = DiscretisedGaussianPolicy(k, np.full(2, 50.0), np.full(2, 10.0))
    result = train(policy, runs, TrainConfig(steps=1000))
    reverse = runs[0].bandit.region_mass(result.probs[0])
    forward = runs[1].bandit.region_mass(result.probs[1])
    assert max(reverse.values()) > 0.9 and min(reverse.values()) < 0.01
    assert min(forward.values()) > 0.15
    # The categorical policy has no such limit: p itself is both objectives' target.
    np.testing.assert_allclose(runs[0].target(), np.exp(log_p), atol=1e-9)
    np.testing.assert_allclose(runs[1].target(), np.exp(log_p), atol=1e-9)


@pytest.mark.parametrize("forward", [False, True])
def test_shaped_reward_gradient_is_the_exact_objective_gradient(forward):
    """``sum_y pi(y) s(y) grad log pi(y)`` equals ``grad [E_pi R - beta D]`` for both KL directions."""
    rng = np.random.default_rng(1)
    rewards = torch.tensor(rng.normal(size=5))
    ref = torch.log_softmax(torch.tensor(rng.normal(size=5)), 0)
    logits = torch.tensor(rng.normal(size=5), requires_grad=True)
    beta = 0.7
    log_pi = torch.log_softmax(logits, 0)
    pi = log_pi.exp()
    if forward:
        objective = (pi * rewards).sum() - beta * (ref.exp() * (ref - log_pi)).sum()
    else:
        objective = (pi * rewards).sum() - beta * (pi * (log_pi - ref)).sum()
    (exact,) = torch.autograd.grad(objective, logits, retain_graph=True)
    shaped = shaped_rewards(rewards, log_pi.detach(), ref, torch.tensor(beta), torch.tensor(forward))
    (estimated,) = torch.autograd.grad((pi.detach() * shaped * log_pi).sum(), logits)
    torch.testing.assert_close(estimated, exact)


def test_three_action_examples_match_closed_forms_and_keep_the_reference_ratio():
    best, equal = three_action_examples()
    runs = [RunSpec(best, 0.01, "reverse"), RunSpec(equal, 0.1, "reverse"), RunSpec(equal, 0.1, "forward"), RunSpec(equal, 0.1, "reverse", mara=True)]
    result = train(CategoricalPolicy(np.zeros((len(runs), 3))), runs, TrainConfig(steps=1000))
    for r, run in enumerate(runs):
        assert total_variation(result.probs[r], run.target()) < 0.02, run.label()
    assert result.probs[0][2] > 0.99
    assert result.probs[1][1] / result.probs[1][2] == pytest.approx(15.0, rel=0.1)
    assert result.probs[3][1] / result.probs[3][2] == pytest.approx(1.0, rel=0.1)


def test_training_is_deterministic_given_the_seed():
    bandit = three_action_examples()[0]
    runs = [RunSpec(bandit, 0.1, "forward")]
    first, second, other = (
        train(CategoricalPolicy(np.zeros((1, 3))), runs, TrainConfig(steps=50, seed=seed)).probs for seed in (3, 3, 4)
    )
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_problem_builders():
    ref = exponential_reference(100, 20.0)
    assert np.exp(ref).sum() == pytest.approx(1.0)
    assert np.all(np.diff(ref) < 0)
    rewards = binary_intervals(10, [(2, 4), (7, 8)])
    np.testing.assert_array_equal(np.flatnonzero(rewards), [2, 3, 7])
    bumps = gaussian_bumps(100, (20, 70), (0.75, 1.0), 4.0)
    assert bumps[20] == pytest.approx(0.75) and bumps[70] == pytest.approx(1.0) and bumps.argmax() == 70
    assert np.exp(mixture_logprobs(100, (25, 70), (1, 1), 6.0)).sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: exponential_reference(1), "num_outcomes"),
        (lambda: exponential_reference(10, decay=0.0), "decay"),
        (lambda: binary_intervals(10, [(5, 12)]), "interval"),
        (lambda: gaussian_bumps(10, (1, 2), (1.0,), 1.0), "centers"),
        (lambda: RunSpec(binary_interval_problem(), 0.0), "beta"),
        (lambda: RunSpec(binary_interval_problem(), 1.0, kl="sideways"), "kl"),
        (lambda: TrainConfig(batch_size=1), "batch_size"),
        (lambda: Bandit(np.array([0.0, np.nan]), np.zeros(2), 0.5, "bad"), "rewards"),
        (lambda: CategoricalPolicy(np.array([0.0, -np.inf])), "init_logprobs"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_beta_sweep_crossover_is_the_peak_tie_under_both_kls():
    from mara_rl.targets import crossover_beta
    from mara_rl.toy.experiments import bump_peaks, peak_tie_beta
    from mara_rl.toy.problems import two_bumps_problem

    bandit = two_bumps_problem()
    low, high = bump_peaks(bandit)
    assert bandit.rewards[high] > bandit.rewards[low] and bandit.ref_logprobs[low] > bandit.ref_logprobs[high]
    targets = {"reverse": reverse_kl_target, "forward": forward_kl_target}
    ties = {kl: peak_tie_beta(lambda b, f=f: f(bandit.rewards, bandit.ref_logprobs, b, return_log=True), high, low, 0.005, 2.0)
            for kl, f in targets.items()}
    closed_form = crossover_beta(bandit.rewards[high], bandit.rewards[low], bandit.ref_logprobs[high], bandit.ref_logprobs[low])
    assert ties["reverse"] == pytest.approx(closed_form, rel=1e-9)
    assert ties["forward"] == pytest.approx(0.688, abs=5e-4)
    for kl, f in targets.items():
        below, at, above = (f(bandit.rewards, bandit.ref_logprobs, ties[kl] * m) for m in (0.99, 1.0, 1.01))
        assert below[high] > below[low] and above[high] < above[low]
        assert at[high] == pytest.approx(at[low], rel=1e-8)


def test_train_rejects_a_policy_of_the_wrong_shape():
    runs = [RunSpec(three_action_examples()[0], 0.1)]
    with pytest.raises(ValueError, match="shape"):
        train(CategoricalPolicy(np.zeros((2, 3))), runs, TrainConfig(steps=1))


def test_cli_runs_an_experiment_and_writes_a_self_describing_folder(tmp_path, capsys):
    from mara_rl.cli import main

    out = tmp_path / "three"
    assert main(["toy", "three-action", "--out", str(out), "--no-progress", "--steps", "1000"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["converged"] and all(run["tv_to_target"] < 0.05 for run in metrics["runs"])
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 0
    assert (out / "fig3_4_three_actions.png").stat().st_size > 10_000
    assert "Three-action" in (out / "summary.md").read_text()
    assert str(out / "fig3_4_three_actions.png") in capsys.readouterr().out


def test_a_run_that_does_not_converge_writes_its_folder_warns_on_stderr_and_exits_1(tmp_path, capsys):
    from mara_rl.cli import main

    out = tmp_path / "three"
    assert main(["toy", "three-action", "--out", str(out), "--no-progress", "--steps", "1"]) == 1
    captured = capsys.readouterr()
    assert "three-action: " in captured.out and "NOT converged" in captured.out
    assert captured.err.startswith("WARNING: three-action: not every run ended within TV 0.05")
    assert not json.loads((out / "metrics.json").read_text())["converged"]
    assert (out / "summary.md").is_file()


def test_a_too_large_learning_rate_is_reported_as_divergence():
    runs = [RunSpec(three_action_examples()[0], 0.1)]
    with pytest.raises(ValueError, match=r"diverged at step 1 of 5: .* lower the learning rate \(lr = 1e\+308\)"):
        train(CategoricalPolicy(np.zeros((1, 3))), runs, TrainConfig(steps=5, lr=1e308))


def test_cli_registers_every_experiment_and_reproduce_didactic():
    from mara_rl.cli import build_parser
    from mara_rl.toy.commands import EXPERIMENT_NAMES, QUICK_NAMES
    from mara_rl.toy.experiments import EXPERIMENTS

    assert set(EXPERIMENT_NAMES) == set(EXPERIMENTS) and set(QUICK_NAMES) <= set(EXPERIMENTS)
    args = build_parser().parse_args(["reproduce", "didactic", "--quick"])
    assert args.quick and str(args.out) == "runs/didactic"
