"""The built-in objectives as composites of named terms: scores equal an independent
recomputation, the components multiply to the score, and each objective pickles for worker
processes; ``drug_modes`` has structurally different modes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("rdkit")

from rdkit import Chem, DataStructs  # noqa: E402
from rdkit.Chem import QED, Descriptors, Lipinski, rdFingerprintGenerator  # noqa: E402

from mara_rl.chem.oracles import OBJECTIVES, Details, get_oracle  # noqa: E402
from mara_rl.chem.scores import CELECOXIB, DRUG_MODES, sa_score  # noqa: E402

MOLECULES = ["CCO", "c1ccccc1O", CELECOXIB, "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc21", "CC(C)NCC(O)COc1cccc2ccccc12",
             "NC(=O)c1cc(O)c(N)c(O)c1N", "Cc1ccc(-c2nc3ccc(C)cn3c2CC(=O)NC)cc1"]
MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


def _fp(smiles):
    return MORGAN.GetFingerprint(Chem.MolFromSmiles(smiles))


def _expected(name: str, smiles: str) -> float:
    mol = Chem.MolFromSmiles(smiles)
    props = QED.qed(mol) * float(Lipinski.NumHDonors(mol) < 4) * (10 - sa_score(mol)) / 9
    if name == "qed_hbd_sa":
        return props
    if name == "drug_modes":
        nearest = max(DataStructs.TanimotoSimilarity(_fp(smiles), _fp(d)) for d in DRUG_MODES.values())
        return min(nearest / 0.4, 1.0) * props
    if name == "celecoxib_mpo":
        sim = min(DataStructs.TanimotoSimilarity(_fp(smiles), _fp(CELECOXIB)) / 0.5, 1.0)
        tpsa = np.exp(-0.5 * ((Descriptors.TPSA(mol) - 70) / 20) ** 2)
        logp = np.exp(-0.5 * ((Descriptors.MolLogP(mol) - 3) / 1) ** 2)
        return (sim * tpsa * logp) ** (1 / 3)
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["qed_hbd_sa", "drug_modes", "celecoxib_mpo"])
def test_composite_objectives_recomputed(name):
    oracle = get_oracle(name)
    details = Details(oracle)(MOLECULES)
    for smiles, d, score in zip(MOLECULES, details, oracle(MOLECULES)):
        assert d.score == score == pytest.approx(_expected(name, smiles), abs=1e-12)
        assert len(d.components) == len(oracle.components)
        combined = float(np.prod(d.components))
        assert d.score == pytest.approx(combined ** (1 / 3) if name == "celecoxib_mpo" else combined, abs=1e-12)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_builtin_objective_pickles_and_scores_alike(name):
    oracle = get_oracle(name)
    copy = pickle.loads(pickle.dumps(oracle))
    np.testing.assert_array_equal(copy(MOLECULES), oracle(MOLECULES))
    assert copy.components == oracle.components


def test_drug_modes_are_far_apart_and_each_drug_is_a_top_molecule():
    fps = [_fp(s) for s in DRUG_MODES.values()]
    pairwise = [DataStructs.TanimotoSimilarity(a, b) for i, a in enumerate(fps) for b in fps[i + 1 :]]
    assert max(pairwise) < 0.2
    oracle = get_oracle("drug_modes")
    drugs = list(DRUG_MODES.values())
    for d, scored in zip(drugs, Details(oracle)(drugs)):
        assert scored.components[0] == 1.0  # a drug is its own nearest mode
        assert scored.score > 0.6  # and scores above the prior's 99th percentile (0.48)
