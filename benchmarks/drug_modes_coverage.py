"""Which of ``drug_modes``' drugs each hit of a run is nearest to (Morgan r=2 Tanimoto).

    python benchmarks/drug_modes_coverage.py 0.45 results/chem/drug-modes-2k-tau0.4/*/seed0

Prints, per run folder (its ledger: plain, compressed or its hits alone), the number of molecules scoring at least the screen and how many of them lie
nearest to each drug: how evenly a method covers the objective's good regions.
"""

from __future__ import annotations

import sys
from collections import Counter

from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from mara_rl.chem.rl import ledger_rows
from mara_rl.chem.scores import DRUG_MODES

MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


def nearest_drugs(smiles: list[str]) -> Counter:
    drugs = {name: MORGAN.GetFingerprint(Chem.MolFromSmiles(s)) for name, s in DRUG_MODES.items()}
    count: Counter = Counter()
    for s in smiles:
        fp = MORGAN.GetFingerprint(Chem.MolFromSmiles(s))
        count[max(drugs, key=lambda name: DataStructs.TanimotoSimilarity(drugs[name], fp))] += 1
    return count


def main() -> None:
    screen, folders = float(sys.argv[1]), sys.argv[2:]
    for folder in folders:
        hits = [r["smiles"] for r in ledger_rows(folder, at_least=screen)]
        print(folder, len(hits), dict(nearest_drugs(hits).most_common()))


if __name__ == "__main__":
    main()
