"""Docking oracles (AutoDock Vina on dockstring's receptors), the docking cache and the scoring
executors. Docking runs at exhaustiveness 1, one pose, in a 12 A box, on small ligands."""

from __future__ import annotations

import csv
import multiprocessing
import sqlite3

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("vina")
pytest.importorskip("meeko")
if __import__("importlib.util").util.find_spec("dockstring") is None:
    pytest.skip("the dockstring receptors are not installed", allow_module_level=True)

from rdkit import Chem  # noqa: E402

from mara_rl.chem import docking  # noqa: E402
from mara_rl.chem.docking import (  # noqa: E402
    DockingCache, DockingOracle, DockingSettings, DockResult, load_target, make_docking_oracle, normalise,
)
from mara_rl.chem.executors import ProcessExecutor, SerialExecutor, make_executor  # noqa: E402
from mara_rl.chem.oracles import MolOracle, get_oracle  # noqa: E402
from mara_rl.chem.scores import hbd_below, qed, sa_desirability  # noqa: E402

FAST = DockingSettings(exhaustiveness=1, n_poses=1, box_size=(12.0, 12.0, 12.0))
PHENOL, ANILINE = "Oc1ccccc1", "Nc1ccccc1"


@pytest.fixture(scope="module")
def phenol_result(tmp_path_factory):
    """Phenol docked once on DRD2 into a module-wide cache: (cache path, result)."""
    path = tmp_path_factory.mktemp("dock") / "docking.sqlite"
    oracle = DockingOracle("DRD2", FAST, path)
    (result,) = oracle.dock([PHENOL])
    return path, result


def test_targets_are_dockstrings_receptors_and_boxes():
    assert {"DRD2", "ESR1", "PARP1", "PGR", "JAK2"} <= set(docking.list_targets())
    drd2 = load_target("DRD2")
    assert drd2.center == (9.25, 6.167, -7.0) and drd2.size == (30.0, 30.0, 32.0)
    assert docking.box_size(drd2, DockingSettings(box_padding=2.0)) == (32.0, 32.0, 34.0)
    with pytest.raises(ValueError, match="unknown docking target 'NOPE'.*DRD2"):
        load_target("NOPE")


@pytest.mark.parametrize("kwargs, message", [
    ({"exhaustiveness": 0}, "exhaustiveness"),
    ({"seed": 0}, "seed"),
    ({"n_poses": 1.5}, "n_poses"),
    ({"box_size": (10, 10)}, "box_size"),
    ({"box_padding": -1.0}, "box_padding"),
])
def test_settings_reject_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DockingSettings(**kwargs)


def test_settings_key_changes_with_every_setting():
    drd2 = load_target("DRD2")
    keys = {docking.settings_key(drd2, s) for s in (
        FAST, DockingSettings(exhaustiveness=2, n_poses=1, box_size=(12.0, 12.0, 12.0)),
        DockingSettings(exhaustiveness=1, n_poses=1, box_size=(12.0, 12.0, 12.0), seed=7),
        DockingSettings(exhaustiveness=1, n_poses=2, box_size=(12.0, 12.0, 12.0)),
        DockingSettings(exhaustiveness=1, n_poses=1, box_size=(12.0, 12.0, 12.0), box_padding=1.0),
    )}
    assert len(keys) == 5
    assert docking.settings_key(load_target("ESR1"), FAST) not in keys


@given(st.floats(-30, 10), st.floats(-30, 10))
def test_normalisation_is_monotone_and_clipped(a, b):
    lo, hi = min(a, b), max(a, b)
    assert 0.0 <= normalise(hi) <= normalise(lo) <= 1.0
    assert normalise(-6.0) == 0.0 and normalise(-12.0) == 1.0 and normalise(-9.0) == pytest.approx(0.5)
    assert normalise(None) == 0.0


def test_same_molecule_and_settings_give_the_same_score(phenol_result, tmp_path):
    _, first = phenol_result
    assert first.reason == "" and -9.0 < first.score < -3.0 and not first.cached
    docking._vina.cache_clear()  # a fresh engine, after another molecule, into another cache
    oracle = DockingOracle("DRD2", FAST, tmp_path / "other.sqlite")
    again = oracle.dock([ANILINE, PHENOL])
    assert again[1].score == first.score and not again[1].cached
    assert again[0].score is not None and again[0].score != first.score


def test_cache_is_shared_and_read_before_docking(phenol_result):
    path, first = phenol_result
    oracle = make_docking_oracle("dock:DRD2", FAST, path)
    hit, same = oracle.dock([PHENOL, "c1ccc(O)cc1"])  # the cache key is the canonical SMILES
    assert hit.cached and hit.score == first.score and hit.seconds == first.seconds and same == hit
    np.testing.assert_allclose(oracle([PHENOL]), [normalise(first.score)])
    assert DockingCache(path).count("DRD2") == 1
    other = DockingOracle("DRD2", DockingSettings(exhaustiveness=2, n_poses=1, box_size=(12.0, 12.0, 12.0)), path)
    assert other.key != oracle.key and other.cache.get("DRD2", other.key, [PHENOL]) == {}


def test_unpreparable_molecules_score_zero_with_a_reason(tmp_path):
    oracle = DockingOracle("DRD2", FAST, tmp_path / "c.sqlite")
    bad = ["[CH3]", "CCO.O", "C[Se]C", "OB(O)c1ccccc1"]  # radical, salt, meeko cannot type Se, Vina cannot type B
    results = oracle.dock(bad)
    assert [r.score for r in results] == [None] * 4
    assert results[0].reason == "radical" and "2 fragments" in results[1].reason
    assert results[2].reason.startswith("meeko could not") and "Atom type B" in results[3].reason
    np.testing.assert_array_equal(oracle(bad), np.zeros(4))
    assert all(r.cached for r in oracle.dock(bad)), "failures are stored too, so never retried"


def test_composite_is_docking_times_the_papers_property_terms(phenol_result, tmp_path, monkeypatch):
    path, first = phenol_result
    monkeypatch.setenv("MARA_RL_CACHE", str(tmp_path))
    oracle = get_oracle("dock_qed_hbd_sa:DRD2")  # the registered name: default settings and cache
    assert oracle.name == "dock_qed_hbd_sa:DRD2" and oracle.settings == DockingSettings()
    assert oracle.cache.path == tmp_path / "docking.sqlite"
    composite = make_docking_oracle("dock_qed_hbd_sa:DRD2", FAST, path)
    mol = Chem.MolFromSmiles(PHENOL)
    expected = normalise(first.score) * qed(mol) * hbd_below(4)(mol) * sa_desirability(mol)
    sorbitol = "OCC(O)C(O)C(O)C(O)CO"  # 6 H-bond donors: 0 without docking
    np.testing.assert_allclose(composite([PHENOL, sorbitol]), [expected, 0.0])
    assert composite.dock([sorbitol])[0].reason.startswith("not docked")
    assert DockingCache(path).count("DRD2") == 1
    # the ledger's components: the normalised docking score, then each property term; their product is the score
    assert composite.components == ("docking", "qed", "hbd_below_4", "sa_desirability")
    phenol, sugar = composite.details([PHENOL, sorbitol])
    assert phenol.components == pytest.approx((normalise(first.score), qed(mol), 1.0, sa_desirability(mol)), abs=1e-12)
    assert phenol.score == pytest.approx(np.prod(phenol.components), abs=1e-12) and sugar.components[2] == 0.0


def test_bad_docking_names_and_smiles_are_value_errors(phenol_result):
    with pytest.raises(ValueError, match="invalid SMILES"):
        DockingOracle("DRD2", FAST, phenol_result[0])(["C(("])
    for name in ("dock:", "dock:NOPE", "dockx:DRD2"):
        with pytest.raises(ValueError):
            make_docking_oracle(name, FAST)
    with pytest.raises(ValueError, match="best must be"):
        DockingOracle("DRD2", FAST, best=-5.0, worst=-6.0)


def _write_rows(path: str, worker: int, n: int) -> None:
    cache = DockingCache(path, timeout=5.0)
    for i in range(n):  # one transaction per row: as many lock hand-overs as possible
        cache.put("T", "k", [DockResult(f"C{worker}_{i}", -float(i), "", 0.1)])
        cache.get("T", "k", [f"C{1 - worker}_{i}"])


def test_cache_survives_concurrent_writers(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ctx = multiprocessing.get_context("fork")  # the writers share no connection: each opens its own
    procs = [ctx.Process(target=_write_rows, args=(path, w, 150)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert DockingCache(path).count("T") == 300
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.fixture(scope="module")
def pool():
    with ProcessExecutor(2) as executor:
        yield executor


def test_process_pool_docks_like_serial(phenol_result, pool, tmp_path):
    _, first = phenol_result
    oracle = DockingOracle("DRD2", FAST, tmp_path / "pool.sqlite")
    results = pool.map(oracle.dock, [PHENOL, "[CH3]"])
    assert [r.score for r in results] == [first.score, None] and not results[0].cached
    assert SerialExecutor().map(oracle, [PHENOL, "[CH3]"]) == [normalise(first.score), 0.0]


def test_executors_keep_order_and_results(pool):
    smiles = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC", "O=C(O)CCC(=O)O"]
    oracle = MolOracle("qed", qed)
    for executor in (SerialExecutor(), pool):
        assert executor.map(oracle, smiles) == list(oracle(smiles))
        assert executor.map(oracle, []) == []
    pool.chunk_size = 2
    try:
        assert pool.map(oracle, smiles) == list(oracle(smiles))
    finally:
        pool.chunk_size = 1


def test_make_executor_picks_by_flags():
    assert isinstance(make_executor(1), SerialExecutor)
    pool = make_executor(3)
    assert isinstance(pool, ProcessExecutor) and pool.workers == 3
    with pytest.raises(ValueError, match="workers"):
        make_executor(0)


@pytest.mark.slow  # starting a local Ray takes 20-40 s on two busy cores
def test_ray_executor_matches_serial():
    pytest.importorskip("ray")
    smiles = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC"]
    oracle = MolOracle("qed", qed)
    with make_executor(2, ray_address="local") as executor:
        assert executor.workers == 2
        assert executor.map(oracle, smiles) == list(oracle(smiles))


def test_run_ledger_keeps_the_raw_score_and_the_reason(phenol_result, tmp_path):
    from mara_rl.chem.rl import Ledger, RunConfig, RunState, summarise

    path, first = phenol_result
    oracle = make_docking_oracle("dock:DRD2", FAST, path)
    ledger = Ledger(tmp_path / "m.csv", oracle, budget=10)
    scores = ledger.score([PHENOL, "CCO.O", None], step=0)
    assert ledger.calls == 2  # the salt that cannot be docked costs its call like any other molecule
    np.testing.assert_allclose(scores, [normalise(first.score), 0.0, 0.0])
    rows = list(csv.DictReader((tmp_path / "m.csv").open(newline="")))
    assert float(rows[0]["raw"]) == first.score and rows[0]["reason"] == ""
    assert float(rows[0]["docking"]) == normalise(first.score) == float(rows[0]["score"])  # dock:<TARGET>'s one component
    assert rows[1]["raw"] == "" and "2 fragments" in rows[1]["reason"] and float(rows[1]["score"]) == 0.0
    reopened = Ledger(tmp_path / "m.csv", oracle, budget=10)
    assert reopened.raw == [first.score, None] and reopened.reasons == ledger.reasons
    metrics = summarise(reopened, RunState(), RunConfig(objective="dock:DRD2"), 0.0)
    assert metrics["raw_min"] == metrics["raw_median"] == first.score and metrics["not_docked"] == 1
