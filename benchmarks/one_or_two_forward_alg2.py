"""The "1 or 2" forward-KL cells with Alg. 2's leave-one-out weights against the self-normalised ones.

    python benchmarks/one_or_two_forward_alg2.py [--results results/llm]

Reads finished runs (``runs/*.json``) of the sweep folders below and prints, per cell, the final
normalised answer entropy and reward over seeds, and Welch's t-test of each pair of cells
(scipy). Folders: ``one-or-two-eps1e-7`` (the committed sweep, self-normalised weights, 16 samples
per prompt), ``one-or-two-forward-loo`` (leave-one-out weights, 16), ``one-or-two-forward-loo-n4``
(leave-one-out, 4 samples per prompt, vanilla and MARA) and ``one-or-two-forward-snis-n4`` (the
self-normalised weights of commit 98578f9 at 4 samples per prompt); for a beta other than 0.01 the
last four end in ``-beta<beta>``; further seeds of a folder sit in ``<folder>-seeds<a>-<b>``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from scipy.stats import ttest_ind

CELLS = [
    # (label, folder, method)
    ("vanilla, n = 16", "one-or-two-eps1e-7", "vanilla"),
    ("MARA self-normalised, n = 16", "one-or-two-eps1e-7", "mara"),
    ("MARA leave-one-out, n = 16", "one-or-two-forward-loo", "mara"),
    ("vanilla, n = 4", "one-or-two-forward-loo-n4", "vanilla"),
    ("MARA self-normalised, n = 4", "one-or-two-forward-snis-n4", "mara"),
    ("MARA leave-one-out, n = 4", "one-or-two-forward-loo-n4", "mara"),
]
PAIRS = [(1, 2), (4, 5), (3, 5), (0, 2)]


def runs(root: Path, folder: str, method: str, beta: float) -> list[dict]:
    if folder != "one-or-two-eps1e-7" and beta != 0.01:
        folder = f"{folder}-beta{beta:g}"
    # A folder's further seeds live in siblings named <folder>-seeds<a>-<b>.
    folders = [root / folder, *sorted(root.glob(f"{folder}-seeds*"))]
    files = sorted(f for d in folders for f in (d / "runs").glob(f"beta{beta:g}-forward-{method}-seed*.json"))
    return [json.loads(f.read_text()) for f in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/llm"))
    parser.add_argument("--beta", type=float, default=0.01)
    args = parser.parse_args()
    found = [runs(args.results, folder, method, args.beta) for _, folder, method in CELLS]
    print(f"forward KL, beta = {args.beta:g}: final normalised entropy of the valid answers and reward (512 answers)")
    print("| cell | seeds | entropy per seed | entropy mean | reward mean |")
    print("|---|---|---|---|---|")
    for (label, *_), cell in zip(CELLS, found):
        if not cell:
            print(f"| {label} | 0 | - | - | - |")
            continue
        entropies = [r["entropy"] for r in cell]
        print(f"| {label} | {len(cell)} | {', '.join(f'{e:.3f}' for e in entropies)} | "
              f"{statistics.mean(entropies):.3f} | {statistics.mean(r['reward'] for r in cell):.3f} |")
    print()
    for a, b in PAIRS:
        x, y = ([r["entropy"] for r in found[i]] for i in (a, b))
        if len(x) >= 2 and len(y) >= 2:
            test = ttest_ind(x, y, equal_var=False)
            print(f"{CELLS[a][0]} vs {CELLS[b][0]}: entropy difference {statistics.mean(y) - statistics.mean(x):+.3f}, "
                  f"Welch p = {test.pvalue:.2g}")


if __name__ == "__main__":
    main()
