"""The comparison table: mean ± sd over seeds, one-sided Welch p-values, OB100 not reached."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")

from mara_rl.chem.compare import comparison_table, welch_one_sided  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import chem_overlap  # noqa: E402
import chem_power  # noqa: E402


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["REINVENT", "comparison.json", "prior_loglik@0.5.png", "summary.md", "table.md",
                                                           "yield_curves.png"]


def _seeded(values, metric="yield@0.8"):
    return [{"seed": s, metric: v} for s, v in values.items()]


def test_paired_tests_match_the_textbook_formulas():
    import math

    from scipy import stats

    from mara_rl.chem.compare import paired_tests

    reinvent = {0: 100, 1: 120, 2: 90, 3: 130, 4: 110}
    mara = {0: 108, 1: 121, 2: 99, 3: 128, 4: 118, 7: 500}  # seed 7 has no REINVENT partner: left out
    t = paired_tests({"REINVENT": _seeded(reinvent), "MARA tau=0.8": _seeded(mara)}, "yield@0.8")["MARA tau=0.8"]
    d = [8, 1, 9, -2, 8]
    assert t["seeds"] == [0, 1, 2, 3, 4] and t["differences"] == d
    n, mean = len(d), sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    assert t["mean_difference"] == pytest.approx(mean) and t["sd_difference"] == pytest.approx(sd)
    assert t["relative_difference"] == pytest.approx(mean / 110)
    assert t["paired_t_p"] == pytest.approx(stats.t.sf(mean / (sd / math.sqrt(n)), n - 1))
    assert (t["wins"], t["ties"], t["losses"]) == (4, 0, 1)
    assert t["sign_test_p"] == pytest.approx((math.comb(5, 4) + math.comb(5, 5)) / 2**5)  # P(X >= 4), X ~ Bin(5, 1/2)
    assert t["welch_p"] == pytest.approx(welch_one_sided([108, 121, 99, 128, 118], [100, 120, 90, 130, 110], "greater"))


def test_paired_tests_without_spread_or_with_only_ties_are_nan():
    import math

    from mara_rl.chem.compare import paired_tests

    tied = paired_tests({"REINVENT": _seeded({0: 5, 1: 6}), "M": _seeded({0: 5, 1: 6})}, "yield@0.8")["M"]
    assert math.isnan(tied["paired_t_p"]) and math.isnan(tied["sign_test_p"]) and tied["ties"] == 2
    shifted = paired_tests({"REINVENT": _seeded({0: 5, 1: 6}), "M": _seeded({0: 6, 1: 7})}, "yield@0.8")["M"]
    assert math.isnan(shifted["paired_t_p"]) and shifted["sign_test_p"] == pytest.approx(0.25)


def test_paired_table_compares_against_both_baselines():
    from mara_rl.chem.compare import paired_table

    results = {name: [{"seed": s, "yield@0.8": y + s, "scaffolds@0.8": y // 2} for s in range(3)]
               for name, y in (("REINVENT", 100), ("REINVENT + filter", 110), ("MARA tau=0.8", 120))}
    text, tests = paired_table(results, (0.8,))
    assert set(tests["yield@0.8"]) == {"REINVENT", "REINVENT + filter"}
    assert tests["yield@0.8"]["REINVENT + filter"]["MARA tau=0.8"]["differences"] == [10, 10, 10]
    assert "| yield@0.8 | MARA tau=0.8 | REINVENT + filter | 3 | +10 (+9.0 %) |" in text


def _ledger(folder, rows):
    folder.mkdir(parents=True)
    lines = ["call,step,smiles,score,raw,reason"] + [f"{i},0,{s},{v},," for i, (s, v) in enumerate(rows, start=1)]
    (folder / "molecules.csv").write_text("\r\n".join(lines) + "\r\n")
    return folder


def test_mechanism_by_hand(tmp_path):
    torch = pytest.importorskip("torch")
    from mara_rl.chem.checks import open_prior
    from mara_rl.chem.mechanism import mechanism, mechanism_markdown, plot_prior_loglik

    prior = open_prior(None)
    runs = {
        "REINVENT": {0: _ledger(tmp_path / "r0", [("CCO", 0.9), ("c1ccccc1", 0.2), ("CCN", 0.85)]),
                     1: _ledger(tmp_path / "r1", [("CCC", 0.95)])},
        "MARA tau=0.8": {0: _ledger(tmp_path / "m0", [("CCO", 0.9), ("CCCl", 0.81), ("c1ccccc1", 0.2), ("CCC", 0.9)]),
                         1: _ledger(tmp_path / "m1", [("CCN", 0.1), ("CCOC", 0.99)])},
    }
    metrics = {"REINVENT": {0: {"sampled": 10, "validity": 1.0, "repeats": 4, "repeated_hits@0.8": 2},
                            1: {"sampled": 20, "validity": 0.5, "repeats": 0, "repeated_hits@0.8": 0}},
               "MARA tau=0.8": {0: {"sampled": 10, "validity": 1.0, "repeats": 1, "repeated_hits@0.8": 1}}}
    result = mechanism(runs, metrics, 0.8, prior)
    mara, reinvent = result["methods"]["MARA tau=0.8"], result["methods"]["REINVENT"]
    # hits pooled over seeds, in seed then call order, with log p_prior recomputed here
    with torch.no_grad():
        expected = prior.log_likelihood(prior.encode(["CCO", "CCCl", "CCC", "CCOC"])).double().numpy()
    np.testing.assert_allclose(mara["loglik"], expected, rtol=1e-6)
    assert mara["hits"] == 4 and reinvent["hits"] == 3
    assert mara["loglik_median"] == pytest.approx(float(np.median(expected)))
    # seed 0: of MARA's hits CCO, CCCl, CCC, REINVENT's seed-0 run proposed only CCO; seed 1: CCOC is new
    assert mara["new_vs_same_seed"] == {0: pytest.approx(2 / 3), 1: 1.0}
    # REINVENT's seed-0 hits CCO, CCN: MARA's seed-0 run never proposed CCN; seed 1: CCC not proposed by MARA's seed 1
    assert mara["baseline_new_vs_same_seed"] == {0: 0.5, 1: 1.0}
    assert mara["new_vs_all_seeds"] == pytest.approx(2 / 4)  # CCCl and CCOC: no REINVENT run proposed them
    assert mara["baseline_new_vs_all_seeds"] == 0.0  # every REINVENT hit was proposed by some MARA run (CCN by seed 1)
    assert reinvent["reproposals"] == [{"seed": 0, "repeat_rate": 0.4, "repeated_hit_rate": 0.2},
                                       {"seed": 1, "repeat_rate": 0.0, "repeated_hit_rate": 0.0}]
    text = mechanism_markdown(result)
    assert "| MARA tau=0.8 | 4 |" in text and "| 0.833 | 0.500 | 0.750 |" in text
    plot_prior_loglik(result, tmp_path / "ll.png")
    assert (tmp_path / "ll.png").stat().st_size > 1000
    # Finished runs kept with their ledgers compressed (as under results/) give the same measurement.
    import gzip
    import shutil

    for folders in runs.values():
        for folder in folders.values():
            with open(folder / "molecules.csv", "rb") as plain, gzip.open(folder / "molecules.csv.gz", "wb") as packed:
                shutil.copyfileobj(plain, packed)
            (folder / "molecules.csv").unlink()
    assert mechanism_markdown(mechanism(runs, metrics, 0.8, prior)) == text


def test_runs_kept_as_their_hits_give_the_same_mechanism(tmp_path):
    """Where the oracle scores a molecule alike in every run, a run's hits stand for its proposals:
    the mechanism of runs archived as hits alone (any mix with whole ledgers) is the whole ledgers' one."""
    pytest.importorskip("torch")
    import json
    from dataclasses import asdict

    from mara_rl.chem.checks import open_prior
    from mara_rl.chem.mechanism import mechanism, mechanism_markdown
    from mara_rl.chem.rl import RunConfig, archive_run

    score = {"CCO": 0.9, "CCN": 0.85, "CCC": 0.95, "CCCl": 0.81, "CCOC": 0.99, "c1ccccc1": 0.2, "CCCC": 0.5, "OCCO": 0.82}
    proposals = {("REINVENT", 0): ["CCO", "c1ccccc1", "CCN", "CCCC"], ("REINVENT", 1): ["CCC", "OCCO", "CCCl"],
                 ("MARA tau=0.8", 0): ["CCO", "CCCl", "c1ccccc1", "CCC"], ("MARA tau=0.8", 1): ["CCN", "CCOC", "CCCC"]}
    runs: dict = {}
    for (method, seed), smiles in proposals.items():
        folder = _ledger(tmp_path / f"{method}-{seed}", [(s, score[s]) for s in smiles])
        (folder / "config.json").write_text(json.dumps({k: v for k, v in asdict(RunConfig(out=str(folder))).items() if k != "out"}))
        (folder / "metrics.json").write_text("{}")
        runs.setdefault(method, {})[seed] = folder
    metrics = {m: {s: {"sampled": 4, "validity": 1.0, "repeats": 1, "repeated_hits@0.8": 0} for s in by_seed} for m, by_seed in runs.items()}
    prior = open_prior(None)
    whole = {screen: mechanism_markdown(mechanism(runs, metrics, screen, prior)) for screen in (0.8, 0.85)}
    assert "| MARA tau=0.8 | 5 |" in whole[0.8]
    archive_run(runs["MARA tau=0.8"][0], hits_only=True)  # a mix of whole ledgers and hits
    archive_run(runs["REINVENT"][1], hits_only=True)
    assert {screen: mechanism_markdown(mechanism(runs, metrics, screen, prior)) for screen in (0.8, 0.85)} == whole
    for by_seed in runs.values():
        for folder in by_seed.values():
            archive_run(folder, hits_only=True)
    assert {screen: mechanism_markdown(mechanism(runs, metrics, screen, prior)) for screen in (0.8, 0.85)} == whole


def test_a_killed_compare_takes_its_runs_with_it(tmp_path):
    """``compare --jobs 2`` SIGKILLed while its runs go: their processes end within seconds, so a
    rerun never has two processes writing one run folder."""
    import os
    import signal
    import subprocess
    import time

    from _processes import still_alive

    import mara_rl

    tests, source = Path(__file__).parent, Path(mara_rl.__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(source)]), "CHEM_ORACLE_LOG": str(tmp_path / "log"),
           "CHEM_ORACLE_DELAY": "0.05"}
    env.pop("CHEM_KILL", None)
    proc = subprocess.Popen([sys.executable, "-m", "mara_rl.cli", "chem", "compare", "--objective", "chem_counting_oracle:make",
                             "--budget", "400", "--batch-size", "16", "--taus", "0.7", "--seeds", "0", "1", "--jobs", "2",
                             "--out", str(tmp_path / "out")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list((tmp_path / "out").glob("*/seed0/molecules.csv"))) < 2:
        time.sleep(0.2)
    workers = [int(c) for c in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert len(list((tmp_path / "out").glob("*/seed0/molecules.csv"))) == 2 and workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not still_alive(workers), "runs outlived their killed compare"


def test_sequential_thresholds_keep_the_chance_of_any_false_finding_below_alpha():
    """Under no difference, a study looked at after 5, 6, 8, 19, 20, 40, 80 and 140 of 140 pairs, each
    look tested at its threshold, finds a difference at most alpha of the time (Brownian motion of the
    z-statistic; 200,000 studies)."""
    from scipy import stats

    sequential_threshold, spent = chem_power.sequential_threshold, chem_power.spent

    alpha, planned, looks = 0.05, 140, (5, 6, 8, 19, 20, 40, 80, 140)
    assert spent(1.0, alpha) == pytest.approx(alpha) and spent(0.0, alpha) == 0.0
    assert sequential_threshold(planned, (), planned, alpha) == pytest.approx(alpha)  # one look: the plain test
    thresholds = np.array([sequential_threshold(n, looks[:i], planned, alpha) for i, n in enumerate(looks)])
    assert (thresholds > 0).all() and thresholds[0] < 1e-20 and thresholds[-1] > 0.75 * alpha
    rng = np.random.default_rng(0)
    fractions = np.array(looks) / planned
    paths = np.cumsum(rng.normal(size=(200_000, len(looks))) * np.sqrt(np.diff(np.r_[0, fractions])), axis=1)
    p_values = stats.norm.sf(paths / np.sqrt(fractions))
    false_findings = (p_values <= thresholds).any(axis=1).mean()
    assert 0.8 * alpha < false_findings <= alpha + 0.002  # 0.002: three Monte Carlo standard errors
    # The same looks, each tested at alpha, would find a difference far more often.
    assert (p_values <= alpha).any(axis=1).mean() > 1.5 * alpha
    # Repeating a look spends nothing new; a look between earlier ones, or a study of one pair, is refused.
    assert sequential_threshold(20, (5, 20), planned, alpha) == sequential_threshold(20, (5,), planned, alpha)
    with pytest.raises(ValueError, match="would spend twice"):
        sequential_threshold(60, (5, 70), planned, alpha)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        sequential_threshold(10, (), 0, alpha)


def test_chem_power_pools_folders_by_seed_and_draws_the_pairs(tmp_path, capsys):
    """Two folders' runs pool by seed (a seed both hold counts once), the paired test is over the
    pooled seeds, and ``--plot`` writes the figure."""
    import json

    from scipy import stats

    main = chem_power.main

    reinvent = {s: 1000 + 37 * s for s in range(8)}
    mara = {s: reinvent[s] + (-20, 35, 60, 5, -10, 80, 25, 40)[s] for s in range(8)}
    for name, seeds in (("a", range(0, 5)), ("b", range(3, 8))):  # seeds 3 and 4 in both
        (tmp_path / name).mkdir()
        runs = {m: [{"seed": s, "yield@0.8": y[s]} for s in seeds] for m, y in (("REINVENT", reinvent), ("MARA tau=0.8", mara))}
        (tmp_path / name / "comparison.json").write_text(json.dumps({"runs": runs}))
    main([str(tmp_path / "a"), str(tmp_path / "b"), "--planned-pairs", "0", "--plot", str(tmp_path / "pairs.png")])
    report = json.loads(capsys.readouterr().out)
    a, b = np.array([mara[s] for s in range(8)]), np.array([reinvent[s] for s in range(8)])
    assert report["seeds"] == list(range(8))
    assert report["paired_t_p"] == pytest.approx(stats.ttest_rel(a, b, alternative="greater").pvalue, rel=1e-12)
    assert report["relative_difference"] == pytest.approx((a - b).mean() / b.mean(), rel=1e-12)
    assert (tmp_path / "pairs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "b" / "comparison.json").write_text(json.dumps({"runs": {"REINVENT": [{"seed": 3, "yield@0.8": 1}]}}))
    for argv, message in (([str(tmp_path / "a"), str(tmp_path / "b")], "REINVENT seed 3 differs between folders"),
                          ([str(tmp_path / "missing")], "missing/comparison.json"),
                          ([str(tmp_path / "a"), "--plot", str(tmp_path / "no" / "pairs.png")], "--plot: no folder"),
                          ([str(tmp_path / "a"), "--metric", "yield@0.9"], "have --metric 'yield@0.9' (metrics there: ")):
        with pytest.raises(SystemExit) as done:
            main([*argv, "--planned-pairs", "0"])
        err = capsys.readouterr().err.splitlines()
        assert done.value.code == 2 and message in err[-1] and err[-1].startswith("chem_power"), err


def test_chem_overlap_sets_same_seed_novelty_beside_other_seeds(tmp_path, capsys):
    """Shares of hits another run never proposed, against a by-hand count: same seed across arms,
    the next finished seed (cyclically) within and across arms; molecules below the screen are no
    hits; a seed one arm lacks is left out; too few seeds is one line and exit 2."""
    import json

    # one objective: a molecule scores alike in every run
    ledgers = {("REINVENT", 1): {"A": 0.9, "B": 0.85, "H": 0.3}, ("MARA", 1): {"A": 0.9, "D": 0.95, "C": 0.81},
               ("REINVENT", 2): {"D": 0.95, "E": 0.9}, ("MARA", 2): {"E": 0.9, "F": 0.88, "G": 0.99, "I": 0.5},
               ("REINVENT", 3): {"B": 0.85}}  # MARA seed 3 unfinished
    for (arm, seed), scores in ledgers.items():
        run = tmp_path / arm / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "molecules.csv").write_text("smiles,score\n" + "".join(f"{s},{v}\n" for s, v in scores.items()))
        (run / "metrics.json").write_text("{}")
    chem_overlap.main([str(tmp_path), "--method", "MARA", "--screen", "0.8"])
    report = json.loads(capsys.readouterr().out)
    # hits: REINVENT 1 {A, B}, 2 {D, E}; MARA 1 {A, D, C}, 2 {E, F, G}; seed 2's next is seed 1
    assert report["seeds"] == [1, 2]
    assert report["MARA vs REINVENT, same seed"] == pytest.approx(np.mean([2 / 3, 2 / 3]))
    assert report["REINVENT vs MARA, same seed"] == pytest.approx(np.mean([1 / 2, 1 / 2]))
    assert report["REINVENT vs REINVENT, other seed"] == pytest.approx(np.mean([1, 1]))
    assert report["MARA vs MARA, other seed"] == pytest.approx(np.mean([1, 1]))
    assert report["MARA vs REINVENT, other seed"] == pytest.approx(np.mean([2 / 3, 1]))
    chem_overlap.main([str(tmp_path), "--method", "MARA", "--screen", "0.96"])  # only MARA seed 2 has a hit (G)
    report = json.loads(capsys.readouterr().out)
    assert report["MARA vs REINVENT, same seed"] == 1 and report["REINVENT vs MARA, same seed"] is None
    with pytest.raises(SystemExit) as done:
        chem_overlap.main([str(tmp_path), "--method", "MARA", "--seeds", "2", "3"])
    err = capsys.readouterr().err.splitlines()
    assert done.value.code == 2 and err[-1].startswith("chem_overlap: error:") and "1 seed(s)" in err[-1], err
