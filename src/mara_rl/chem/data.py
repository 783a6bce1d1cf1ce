"""MOSES SMILES sets, read as files from the ``molsets`` wheel (``moses`` itself is never imported)."""

from __future__ import annotations

import csv
import gzip
import importlib.metadata
import site
import sys
from pathlib import Path

MOSES_SPLITS = ("train", "test", "test_scaffolds")


def moses_path(split: str = "train") -> Path:
    """Path of ``moses/dataset/data/<split>.csv.gz`` inside the installed ``molsets`` wheel."""
    if split not in MOSES_SPLITS:
        raise ValueError(f"split must be one of {MOSES_SPLITS}, got {split!r}")
    relative = f"moses/dataset/data/{split}.csv.gz"
    try:
        for file in importlib.metadata.files("molsets") or []:
            if str(file) == relative:
                return Path(file.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    for root in site.getsitepackages():
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    raise ValueError(f"MOSES {split} set not found: install molsets (`pip install --no-deps molsets`) or pass a SMILES file of your own")


def read_smiles(path: str | Path, limit: int | None = None) -> list[str]:
    """SMILES from a CSV (optionally gzipped) with a ``SMILES`` column, or a plain one-per-line file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {path} {'is a directory' if path.is_dir() else 'does not exist'}")
    try:
        out = _read_rows(path, limit)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"data file {path} is not a SMILES file ({type(err).__name__}: {err})") from None
    if not out:
        raise ValueError(f"no SMILES read from {path}")
    return out


SMILES_CHECKED_ROWS = 2000


def check_parsable(smiles: list[str], path: str | Path) -> None:
    """RDKit-parse the first ``SMILES_CHECKED_ROWS`` rows before any training is paid for.

    Most of them unparsable means the wrong file or column: a ``ValueError``. A few: one warning line
    on stderr (training uses every row as it is: the prior learns characters, not molecules).
    """
    from rdkit import Chem, rdBase

    sample = smiles[:SMILES_CHECKED_ROWS]
    with rdBase.BlockLogs():  # restores the caller's logging state afterwards
        bad = [s for s in sample if Chem.MolFromSmiles(s) is None]
    if not bad:
        return
    what = f"{len(bad)} of the first {len(sample)} rows of {path} are not SMILES RDKit can parse (first: {bad[0][:60]!r})"
    if 2 * len(bad) > len(sample):
        raise ValueError(f"{what}; is this the right file?")
    print(f"warning: {what}; training uses them as they are", file=sys.stderr)


def _read_rows(path: Path, limit: int | None) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        first = handle.readline().strip()
        header = [name.strip().upper() for name in first.split(",")]
        if "SMILES" in header:
            column = header.index("SMILES")
            rows = (row[column] for row in csv.reader(handle))
        elif len(header) > 1:  # SMILES never contain a comma: a CSV without a SMILES column
            raise ValueError(f"data file {path} is a CSV without a SMILES column (header: {first[:80]!r})")
        else:
            rows = (line.strip() for line in [first, *handle])
        out = []
        for smiles in rows:
            if smiles:
                out.append(smiles)
                if limit is not None and len(out) >= limit:
                    break
    return out
