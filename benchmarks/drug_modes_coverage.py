"""Which of ``drug_modes``' drugs each hit of a run is nearest to (Morgan r=2 Tanimoto).

    python benchmarks/drug_modes_coverage.py 0.45 results/chem/drug-modes-2k-tau0.4/*/seed0

Prints, per run folder (its ledger: plain, compressed or its hits alone), the number of molecules scoring at least the screen and how many of them lie
nearest to each drug: how evenly a method covers the objective's good regions.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("screen", type=float, help="count molecules scoring at least this")
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of `mara chem run` or `compare`")
    args = parser.parse_args()
    for folder in args.runs:
        try:
            hits = [r["smiles"] for r in ledger_rows(folder, at_least=args.screen)]
        except (OSError, ValueError) as err:  # no ledger there, or a hits-only run asked below its screen
            parser.exit(2, f"{parser.prog}: error: {err}\n")
        print(folder, len(hits), dict(nearest_drugs(hits).most_common()))


if __name__ == "__main__":
    main()
