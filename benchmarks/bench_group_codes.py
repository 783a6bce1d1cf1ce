"""``_groups.group_codes`` on strings against ``pandas.factorize`` and ``np.unique``, in one run; prints the ratio.

Labels: ``--n`` prompt-like strings (about 60 characters) drawn from ``--distinct`` distinct ones, as
an object array (what a DataFrame column or a list of prompts gives) and as a numpy unicode array.
``group_codes`` returns dense codes in sorted-label order (what ``Segments`` needs), so its figure
includes that sort over the distinct labels; ``pandas.factorize(sort=False)`` is the baseline the
target is set against (within 2x). Each timing is the best of ``--repeats``.

    python benchmarks/bench_group_codes.py                      # 1e6 strings, 1e4 distinct
    python benchmarks/bench_group_codes.py --distinct 1000000   # all distinct
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from mara_rl._groups import group_codes
from timing import best_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--distinct", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vocabulary = np.array([f"Answer with one of these options, chosen uniformly at random: {i:08d}"
                           for i in rng.permutation(args.distinct)], dtype=object)
    objects = vocabulary[rng.integers(0, args.distinct, args.n)]
    unicode = objects.astype(str)
    codes, labels = group_codes(objects, args.n)
    expected_labels, expected_codes = np.unique(unicode, return_inverse=True)
    assert np.array_equal(codes, expected_codes) and np.array_equal(labels.astype(str), expected_labels)
    print(f"{args.n:,} strings, {len(labels):,} distinct; best of {args.repeats}")
    for name, values in (("object array", objects), ("unicode array", unicode)):
        ours = best_time(lambda: group_codes(values, args.n), args.repeats)
        pandas = best_time(lambda: pd.factorize(values, sort=False), args.repeats)
        pandas_sorted = best_time(lambda: pd.factorize(values, sort=True), args.repeats)
        numpy = best_time(lambda: np.unique(values, return_inverse=True), args.repeats)
        print(f"{name:14s} group_codes {ours:7.3f} s | pandas.factorize {pandas:7.3f} s (sort=True {pandas_sorted:7.3f} s)"
              f" | np.unique {numpy:7.3f} s | group_codes / pandas.factorize = {ours / pandas:.2f}")


if __name__ == "__main__":
    main()
