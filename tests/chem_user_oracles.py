"""Users' own oracles for ``--objective chem_user_oracles:<factory>`` in the chem tests: one that
raises on its second batch, one whose cost is 0, and one with named components."""

from __future__ import annotations

import numpy as np
from rdkit import Chem
from rdkit.Chem import QED

from mara_rl.chem.scores import Scored


class RaisesOnSecondBatch:
    name, cost = "raises_on_second_batch", 1

    def __init__(self):
        self.batches = 0

    def __call__(self, smiles):
        self.batches += 1
        if self.batches == 2:
            raise RuntimeError("the assay service is down")
        return np.array([QED.qed(Chem.MolFromSmiles(s)) for s in smiles])


class Free(RaisesOnSecondBatch):
    name, cost = "free", 0

    def __call__(self, smiles):
        return np.full(len(smiles), 0.5)


class TwoParts:
    """Score = QED x (heavy atoms / 40, capped at 1), with both parts as components."""

    name, cost, components = "two_parts", 1, ("qed", "size")

    def details(self, smiles):
        out = []
        for s in smiles:
            mol = Chem.MolFromSmiles(s)
            q, size = QED.qed(mol), min(mol.GetNumHeavyAtoms() / 40, 1.0)
            out.append(Scored(q * size, components=(q, size)))
        return out

    def __call__(self, smiles):
        return np.array([d.score for d in self.details(smiles)])


def raises_on_second_batch():
    return RaisesOnSecondBatch()


def free():
    return Free()


def two_parts():
    return TwoParts()


class InterruptedOnSecondBatch(RaisesOnSecondBatch):
    """As if the user pressed Ctrl-C while the second batch was being scored."""

    name = "interrupted_on_second_batch"

    def __call__(self, smiles):
        self.batches += 1
        if self.batches == 2:
            raise KeyboardInterrupt
        return np.array([QED.qed(Chem.MolFromSmiles(s)) for s in smiles])


def interrupted_on_second_batch():
    return InterruptedOnSecondBatch()
