"""The comparison table: mean ± sd over seeds, one-sided Welch p-values, OB100 not reached."""

from __future__ import annotations

import pytest

pytest.importorskip("scipy")

from mara_rl.chem.compare import comparison_table, welch_one_sided  # noqa: E402


def _runs(yields, ob100s):
    return [{"oracle_calls": 5000, "yield@0.8": y, "ob100@0.8": o, "scaffolds@0.8": y // 2, "intdiv1": 0.8, "circles": 10, "validity": 0.9}
            for y, o in zip(yields, ob100s)]


def test_table_rows_means_and_not_reached():
    results = {"REINVENT": _runs([100, 110, 120], [900, 950, 1000]), "MARA tau=0.8": _runs([150, 160, 170], [800, None, 700])}
    table = comparison_table(results, (0.8,))
    lines = table.strip().splitlines()
    assert lines[0].startswith("| method | n | oracle_calls | yield@0.8 | ob100@0.8 |")
    assert lines[2].startswith("| REINVENT | 3 | 5000 ± 0 | 110 ± 10 |")
    assert lines[3].startswith("| MARA tau=0.8 | 3 | 5000 ± 0 | 160 ± 10 (p=")
    mara = lines[3]
    assert "160 ± 10 (p=" in mara
    assert "750 ± 70.7 (1 of 3 not reached)" in mara  # no p-value when a run never reached 100 hits
    p = welch_one_sided([150, 160, 170], [100, 110, 120], "greater")
    assert f"(p={p:.3g})" in mara and p < 0.01


def test_welch_without_spread_is_nan():
    import math

    assert math.isnan(welch_one_sided([0.8, 0.8], [0.8, 0.8], "greater"))


def test_welch_direction():
    assert welch_one_sided([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], "less") < 0.05
    assert welch_one_sided([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], "greater") > 0.95


def test_docking_runs_add_the_median_vina_score():
    runs = {"REINVENT": _runs([10, 12], [None, None]), "MARA tau=0.38": _runs([14, 16], [None, None])}
    for method, medians in (("REINVENT", [-8.0, -8.2]), ("MARA tau=0.38", [-8.6, -8.8])):
        for run, median in zip(runs[method], medians):
            run.update(raw_median=median, not_docked=1)
    header, _, reinvent, mara = comparison_table(runs, (0.8,)).strip().splitlines()
    assert header.endswith("| raw_median | not_docked |")
    p = welch_one_sided([-8.6, -8.8], [-8.0, -8.2], "less")
    assert mara.endswith(f"| -8.7 ± 0.141 (p={p:.3g}) | 1 ± 0 |") and p < 0.05
    assert "raw_median" not in comparison_table({"REINVENT": _runs([1, 2], [None, None])}, (0.8,))


def test_table_only_tabulates_the_finished_runs_and_runs_nothing(tmp_path):
    pytest.importorskip("torch")
    from dataclasses import replace

    from mara_rl.chem.compare import compare, method_configs, run_folder
    from mara_rl.chem.rl import RunConfig, run

    base = RunConfig(objective="qed", budget=16, batch_size=8, sigma=10.0, screens=(0.5,))
    with pytest.raises(ValueError, match="no run of this comparison has finished"):
        compare(base, taus=[0.5], seeds=[0, 1], out=tmp_path, table_only=True)
    reinvent = method_configs(base, [0.5])[0]
    run(replace(reinvent, out=str(run_folder(tmp_path, reinvent))))
    result = compare(base, taus=[0.5], seeds=[0, 1], out=tmp_path, table_only=True)
    assert result["table"].splitlines()[2].startswith("| REINVENT | 1 | 16 ± 0 |") and len(result["table"].splitlines()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["REINVENT", "comparison.json", "table.md", "yield_curves.png"]
