"""Molecule metrics on small hand-made sets with known answers."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit")

from rdkit import DataStructs  # noqa: E402

from mara_rl.metrics.molecules import (  # noqa: E402
    canonical_smiles,
    fingerprints,
    internal_diversity,
    molecule_yield,
    novelty,
    num_circles,
    num_scaffolds,
    oracle_calls_to_hits,
    uniqueness,
    validity,
)


def test_canonical_smiles():
    assert canonical_smiles("OCC") == canonical_smiles("CCO") == "CCO"
    assert canonical_smiles("C1CC") is None
    assert canonical_smiles("") is None


def test_validity_uniqueness_novelty():
    assert validity(["CCO", "C1CC", "not a molecule", "CCN"]) == 0.5
    assert validity([]) == 0.0
    assert uniqueness(["CCO", "OCC", "CCN", "C1CC"]) == pytest.approx(2 / 3)
    assert uniqueness(["C1CC"]) == 0.0
    assert novelty(["CCO", "OCC", "CCN", "CCC"], {"CCO"}) == pytest.approx(2 / 3)


def test_yield_counts_distinct_molecules_above_screen():
    smiles = ["CCO", "OCC", "CCN", "CCC", "C1CC"]
    assert molecule_yield(smiles, [0.9, 0.9, 0.85, 0.1, 1.0], 0.85) == 2  # CCO once, CCN at the edge
    with pytest.raises(ValueError, match="same length"):
        molecule_yield(smiles, [0.9], 0.85)


def test_oracle_calls_to_hits():
    scores = [0.1, 0.9, 0.2, 0.95, 0.85]
    assert oracle_calls_to_hits(scores, 0.85, hits=1) == 2
    assert oracle_calls_to_hits(scores, 0.85, hits=3) == 5
    assert oracle_calls_to_hits(scores, 0.85, hits=4) is None  # not reached
    with pytest.raises(ValueError):
        oracle_calls_to_hits(scores, 0.85, hits=0)


def test_internal_diversity():
    assert internal_diversity(["CCO", "OCC"]) == 0.0  # one distinct molecule
    assert internal_diversity(["C", "O"]) == 1.0  # methane and water share no Morgan bit
    trio = ["c1ccccc1O", "c1ccccc1N", "CCCCCC"]
    fps = fingerprints(sorted(canonical_smiles(s) for s in trio))
    pairs = [DataStructs.TanimotoSimilarity(fps[i], fps[j]) for i, j in [(0, 1), (0, 2), (1, 2)]]
    assert internal_diversity(trio) == pytest.approx(1 - sum(pairs) / 3)


def test_num_circles():
    assert num_circles(["CCO", "OCC"]) == 1
    assert num_circles(["C", "O", "N"]) == 3  # pairwise similarity 0
    close = ["CCCCCCCCCO", "CCCCCCCCCN"]  # Tanimoto 4/9: distance 0.56 < 0.75
    assert num_circles(close) == 1
    assert num_circles(close, distance=0.5) == 2
    with pytest.raises(ValueError):
        num_circles(["C"], distance=2.0)


def test_num_scaffolds():
    # toluene and ethylbenzene share benzene; cyclohexane; acyclic ethanol has the empty scaffold
    assert num_scaffolds(["Cc1ccccc1", "CCc1ccccc1", "C1CCCCC1", "CCO", "C1CC"]) == 3
