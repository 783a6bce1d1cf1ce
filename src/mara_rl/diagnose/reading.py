"""Reading rollout files: one row per sampled completion.

Columns: ``prompt`` (str), ``completion`` (str), ``reward`` (float), ``ref_logprob`` (float, the
reference model's log-probability of the whole completion given the prompt) and optionally
``policy_logprob`` (the trained policy's, same convention). Formats: JSON Lines (``.jsonl``,
``.json``), Parquet (``.parquet``) and CSV (``.csv``), optionally gzip-compressed (``.gz``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ("prompt", "completion", "reward", "ref_logprob")
OPTIONAL_COLUMNS = ("policy_logprob",)


def read_rollouts(path: str | Path) -> pd.DataFrame:
    """Read and check a rollout file (see :func:`check_rollouts`); the format follows the suffix."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"rollouts file {str(path)!r} does not exist")
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".jsonl", ".json"):
        try:
            frame = pd.read_json(path, lines=True, dtype=False)
        except ValueError as err:
            raise ValueError(f"rollouts file {str(path)!r} is not valid JSON Lines: {err}") from None
    elif kind == ".parquet":
        frame = pd.read_parquet(path)
    elif kind == ".csv":
        # Completions such as "NA" or "" are text, not missing values.
        frame = pd.read_csv(path, dtype={"prompt": str, "completion": str}, keep_default_na=False)
    else:
        raise ValueError(f"rollouts file {str(path)!r}: unknown format; use .jsonl, .json, .parquet or .csv")
    return check_rollouts(frame)


def check_rollouts(frame: pd.DataFrame) -> pd.DataFrame:
    """Check the columns and types of a rollout table; returns a copy with canonical dtypes.

    Non-finite ``reward`` / log-prob values are kept here (the diagnosis skips those rows and says
    so per prompt); a missing column, a missing prompt or completion, or a value that is not a number
    raises ``ValueError``.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"rollouts are missing column(s) {', '.join(missing)}; expected one row per completion with "
            f"columns {', '.join(REQUIRED_COLUMNS)} (optionally {', '.join(OPTIONAL_COLUMNS)})"
        )
    if len(frame) == 0:
        raise ValueError("rollouts are empty (no rows)")
    columns = [c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in frame.columns]
    out = frame[columns].reset_index(drop=True)
    for name in ("prompt", "completion"):
        absent = out[name].isna().to_numpy()
        if absent.any():
            raise ValueError(f"column {name!r} is missing a value in {int(absent.sum())} row(s), first at row {int(np.flatnonzero(absent)[0])}")
        if not pd.api.types.is_string_dtype(out[name]):
            out[name] = out[name].astype(str)
    for name in columns[2:]:
        if pd.api.types.is_numeric_dtype(out[name]) and not pd.api.types.is_bool_dtype(out[name]):
            out[name] = out[name].astype(np.float64)
            continue
        values = pd.to_numeric(out[name], errors="coerce")
        spelled_nan = out[name].astype(str).str.strip().str.lower().isin(("nan", "null", "none", ""))
        bad = values.isna().to_numpy() & out[name].notna().to_numpy() & ~spelled_nan.to_numpy()
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(f"column {name!r} must hold numbers; row {first} has {out[name].iloc[first]!r}")
        out[name] = values.astype(np.float64)
    return out
