"""Method labels of the sweeps and the comparison table (best setting, Welch p-value), on synthetic runs."""

import math

import pytest

from mara_rl.llm.methods import best_settings, config_kwargs, expand_methods, method_names, parse_label


def test_labels_expand_to_the_recommended_value_and_one_each_side():
    assert expand_methods(["vanilla", "unlikeliness", "pkpo=4"]) == (
        "vanilla", "unlikeliness=0.1", "unlikeliness=0.25", "unlikeliness=0.5", "pkpo=4")
    assert expand_methods(["grpo_passk", "mara"]) == ("grpo_passk", "mara")
    assert {"vanilla", "mara", "entropy", "adaptive_entropy", "outcome_ucb"} <= set(method_names())
    assert parse_label("entropy=0.01") == ("entropy", 0.01)
    assert config_kwargs("adaptive_entropy=0.4", 1.0) == {"use_adaptive_entropy": True, "entropy_target": 0.4}
    assert config_kwargs("outcome_ucb", 1.0) == {"reward_transform": "outcome_ucb", "reward_transform_value": None}


@pytest.mark.parametrize("labels,match", [(["ppo"], "unknown method 'ppo'"), (["pkpo=x"], "not a number"),
                                          (["mara=1"], "no knob"), (["pkpo", "pkpo=4"], "repeat"),
                                          (["entropy=-1"], ">= 0")])
def test_bad_labels_are_value_errors(labels, match):
    with pytest.raises(ValueError, match=match):
        expand_methods(labels)


def run(method, seed, entropy, reward=1.0, beta=0.03, kl="reverse", all_invalid=False):
    return {"name": f"beta{beta:g}-{kl}-{method}-seed{seed}", "method": method, "beta": beta, "kl": kl, "seed": seed,
            "reward": reward, "entropy": entropy, "all_invalid": all_invalid, "min_valid_rate": 0.5}


def test_best_setting_and_welch_p_value_by_hand():
    results = [run("mara", s, e) for s, e in enumerate([0.9, 1.0, 0.95])]
    results += [run("entropy=0.01", s, e) for s, e in enumerate([0.4, 0.5, 0.45])]
    results += [run("entropy=0.1", s, e, reward=0.5, all_invalid=s == 0) for s, e in enumerate([1.0, 1.0, 1.0])]
    rows = {r["family"]: r for r in best_settings(results)}
    # entropy=0.1 has the higher entropy but misses the reward bar: entropy=0.01 is the best setting
    assert rows["entropy"]["label"] == "entropy=0.01"
    assert rows["entropy"]["entropy"] == pytest.approx(0.45)
    assert rows["entropy"]["entropy_sd"] == pytest.approx(0.05)
    # Welch: t = 0.5 / sqrt(0.05^2/3 * 2) = 12.247, df = 4 (equal variances and sizes);
    # two-sided p = 2 * (1 - F_t4(12.247)), F_t4 from its closed form
    t = 0.5 / math.sqrt(2 * 0.05 ** 2 / 3)
    cdf = 0.5 + t * (t * t + 6) / (2 * (t * t + 4) ** 1.5)  # Student t with 4 degrees of freedom
    assert rows["entropy"]["p_vs_mara"] == pytest.approx(2 * (1 - cdf), rel=1e-6)
    assert math.isnan(rows["mara"]["p_vs_mara"])
    assert rows["entropy"]["breakdowns"] == 0


def test_each_beta_is_compared_on_its_own(tmp_path):
    from mara_rl.llm.methods import best_settings_by_cell, plot_by_beta, write_comparison

    results = [run("mara", s, e, beta=0.01) for s, e in enumerate([0.9, 1.0, 0.95])]
    results += [run("mara", s, e, beta=0.03) for s, e in enumerate([0.5, 0.6, 0.55])]
    results += [run("entropy=0.01", s, e, beta=0.01) for s, e in enumerate([0.4, 0.5, 0.45])]
    results += [run("entropy=0.01", s, e, beta=0.03) for s, e in enumerate([0.5, 0.6, 0.55])]
    results += [run("entropy=0.1", s, e, beta=0.03, reward=0.9) for s, e in enumerate([0.99, 1.0, 1.0])]
    by_cell = best_settings_by_cell(results)
    assert list(by_cell) == [(0.01, "reverse"), (0.03, "reverse")]
    at = {cell: {r["family"]: r for r in rows} for cell, rows in by_cell.items()}
    # across betas the best cells differ (MARA's at 0.01, entropy's at 0.03); within a beta they are compared
    assert at[(0.01, "reverse")]["entropy"]["entropy"] == pytest.approx(0.45)
    assert at[(0.03, "reverse")]["entropy"]["label"] == "entropy=0.01"  # 0.1 misses the reward bar
    assert at[(0.03, "reverse")]["entropy"]["p_vs_mara"] == pytest.approx(1.0)  # equal samples
    assert at[(0.01, "reverse")]["entropy"]["p_vs_mara"] < 0.01
    write_comparison(results, tmp_path / "methods.md")
    text = (tmp_path / "methods.md").read_text()
    assert "| method | beta 0.01 reverse | beta 0.03 reverse |" in text
    assert "| entropy | 0.450 (1.000) 0.01 p 0.00" in text and "| 0.550 (1.000) 0.01 p 1 |" in text
    plot_by_beta(by_cell, {"entropy": 0.46}, tmp_path / "by_beta.png")
    assert (tmp_path / "by_beta.png").stat().st_size > 10_000
