"""Molecule-set metrics (needs RDKit): validity, uniqueness, novelty, Yield, OB100, IntDiv1,
#Circles and Bemis-Murcko scaffolds, as reported for REINVENT-style runs (GX-Chen et al., 2025,
Table 2). Fingerprints: Morgan radius 2, 2048 bits; similarity: Tanimoto.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from rdkit import Chem, DataStructs, RDLogger
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.Scaffolds import MurckoScaffold

RDLogger.DisableLog("rdApp.*")  # invalid sampled SMILES are expected; they are counted, not logged

_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


def canonical_smiles(smiles: str) -> str | None:
    """RDKit canonical SMILES, or ``None`` for an empty or unparsable string."""
    if not smiles:
        return None
    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else Chem.MolToSmiles(mol)


def _canonical_valid(smiles: Iterable[str]) -> list[str]:
    return [c for c in map(canonical_smiles, smiles) if c is not None]


def validity(smiles: Sequence[str]) -> float:
    """Fraction of strings RDKit parses (0 for an empty list)."""
    return len(_canonical_valid(smiles)) / len(smiles) if len(smiles) else 0.0


def uniqueness(smiles: Sequence[str]) -> float:
    """Distinct canonical molecules / valid molecules (0 when none is valid)."""
    valid = _canonical_valid(smiles)
    return len(set(valid)) / len(valid) if valid else 0.0


def novelty(smiles: Sequence[str], reference: set[str]) -> float:
    """Fraction of the distinct valid molecules whose canonical SMILES is not in ``reference``
    (a set of canonical SMILES, e.g. the training set)."""
    distinct = set(_canonical_valid(smiles))
    return len(distinct - reference) / len(distinct) if distinct else 0.0


def molecule_yield(smiles: Sequence[str], scores: Sequence[float], threshold: float) -> int:
    """Yield: number of distinct valid molecules with ``score >= threshold``."""
    if len(smiles) != len(scores):
        raise ValueError(f"smiles and scores must have the same length, got {len(smiles)} and {len(scores)}")
    return len({c for s, v in zip(smiles, scores) if v >= threshold and (c := canonical_smiles(s)) is not None})


def oracle_calls_to_hits(scores: Sequence[float], threshold: float, hits: int = 100) -> int | None:
    """OB100 (with ``hits=100``): the 1-based oracle call at which the ``hits``-th molecule scoring
    ``>= threshold`` was found. ``scores`` are in call order, one per distinct molecule (a cached
    repeat is no call). ``None`` when the run never got there ("not reached")."""
    if hits < 1:
        raise ValueError(f"hits must be >= 1, got {hits}")
    found = np.flatnonzero(np.asarray(scores, dtype=float) >= threshold)
    return int(found[hits - 1]) + 1 if found.size >= hits else None


def fingerprints(smiles: Sequence[str]) -> list:
    """Morgan (radius 2, 2048-bit) fingerprints of the valid molecules, invalid ones dropped."""
    mols = [Chem.MolFromSmiles(s) for s in smiles if s]
    return [_MORGAN.GetFingerprint(m) for m in mols if m is not None]


def internal_diversity(smiles: Sequence[str]) -> float:
    """IntDiv1 = 1 - mean Tanimoto similarity over the distinct pairs ``i < j`` of the distinct
    valid molecules (0 with fewer than two molecules)."""
    fps = fingerprints(sorted(set(_canonical_valid(smiles))))
    n = len(fps)
    if n < 2:
        return 0.0
    total = sum(sum(DataStructs.BulkTanimotoSimilarity(fps[i], fps[i + 1 :])) for i in range(n - 1))
    return 1.0 - total / (n * (n - 1) / 2)


def num_circles(smiles: Sequence[str], distance: float = 0.75) -> int:
    """#Circles (Xie et al., 2023), greedy: walk the distinct valid molecules in the given order and
    keep one when its Tanimoto distance to every kept molecule exceeds ``distance``. The size of
    that set (a lower bound on the maximum such set)."""
    if not 0.0 <= distance <= 1.0:
        raise ValueError(f"distance must lie in [0, 1], got {distance}")
    seen: set[str] = set()
    ordered = [c for c in _canonical_valid(smiles) if not (c in seen or seen.add(c))]
    kept: list = []
    for fp in fingerprints(ordered):
        if not kept or max(DataStructs.BulkTanimotoSimilarity(fp, kept)) < 1.0 - distance:
            kept.append(fp)
    return len(kept)


def num_scaffolds(smiles: Sequence[str]) -> int:
    """Distinct Bemis-Murcko scaffolds among the valid molecules (acyclic molecules share the
    empty scaffold)."""
    scaffolds = set()
    for s in smiles:
        mol = Chem.MolFromSmiles(s) if s else None
        if mol is not None:
            scaffolds.add(MurckoScaffold.MurckoScaffoldSmiles(mol=mol))
    return len(scaffolds)
