"""Reading rollout files: one row per sampled completion.

Columns: ``prompt`` (str), ``completion`` (str), ``reward`` (float), ``ref_logprob`` (float, the
reference model's log-probability of the whole completion given the prompt) and optionally
``policy_logprob`` (the trained policy's, same convention). Formats: JSON Lines (``.jsonl``,
``.json``), Parquet (``.parquet``) and CSV (``.csv``), optionally gzip-compressed (``.gz``).

Files are parsed by pyarrow's multi-threaded readers. A file is read whole or not at all: a
truncated or corrupt gzip stream, a line that is not a JSON object, a CSV row with the wrong number
of fields or an unreadable Parquet footer is a ``ValueError`` naming the file and the place.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ("prompt", "completion", "reward", "ref_logprob")
OPTIONAL_COLUMNS = ("policy_logprob",)
FORMATS = {".jsonl": "JSON Lines", ".json": "JSON Lines", ".parquet": "Parquet", ".csv": "CSV"}


def _pyarrow():
    try:
        import pyarrow
    except ImportError:
        raise ValueError("reading rollouts needs pyarrow; install it with: pip install 'pyarrow>=14'") from None
    return pyarrow


def rollouts_format(path: str | Path) -> tuple[str, bool]:
    """``(format, gzip-compressed)`` from the file name, e.g. ``("JSON Lines", True)`` for ``.jsonl.gz``."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    kind = suffixes[-2 if compressed else -1] if len(suffixes) > compressed else ""
    if kind not in FORMATS:
        raise ValueError(
            f"rollouts file {str(path)!r}: unknown format {''.join(path.suffixes) or '(no extension)'!r}; "
            "use .jsonl, .json, .parquet or .csv, optionally followed by .gz"
        )
    return FORMATS[kind], compressed


def _gunzip(data: bytes, where: str) -> bytes:
    try:
        return gzip.decompress(data)
    except EOFError:
        raise ValueError(f"{where}: truncated gzip stream (the file ends before the end of its compressed data)") from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{where}: not a valid gzip file ({err})") from None


def _read_json_lines(data: bytes, where: str) -> pd.DataFrame:
    pa = _pyarrow()
    import pyarrow.json

    try:
        table = pyarrow.json.read_json(pa.BufferReader(data))
        table.validate(full=True)  # the JSON reader does not check that strings are UTF-8
        return table.to_pandas()
    except pa.ArrowException:
        pass
    # pyarrow wants one type per column, valid UTF-8, and numbers rows per block: parse line by line
    # to say which line is broken, or to let check_rollouts judge columns of mixed types.
    records = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:  # includes UnicodeDecodeError
            raise ValueError(f"{where}: line {number} is not valid JSON ({err}); expected one JSON object per line") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: line {number} is not a JSON object (got a {type(record).__name__}); expected one per line")
        records.append(record)
    return pd.DataFrame.from_records(records)


def _read_csv(data: bytes, where: str) -> pd.DataFrame:
    pa = _pyarrow()
    import pyarrow.csv

    # Completions such as "NA" or "" are text, not missing values.
    convert = pyarrow.csv.ConvertOptions(
        column_types={"prompt": pa.string(), "completion": pa.string()},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        return pyarrow.csv.read_csv(pa.BufferReader(data), convert_options=convert).to_pandas()
    except pa.ArrowException:
        pass
    try:  # single-threaded, pyarrow numbers the broken row
        single = pyarrow.csv.ReadOptions(use_threads=False)
        return pyarrow.csv.read_csv(pa.BufferReader(data), read_options=single, convert_options=convert).to_pandas()
    except pa.ArrowException as err:
        raise ValueError(f"{where}: not valid CSV ({' '.join(str(err).split())})") from None


def _read_parquet(data: bytes, where: str) -> pd.DataFrame:
    pa = _pyarrow()
    import pyarrow.parquet

    try:
        source = pyarrow.parquet.ParquetFile(pa.BufferReader(data))
        wanted = [c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in source.schema_arrow.names]
        return source.read(columns=wanted).to_pandas()
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{where}: not a valid Parquet file ({' '.join(str(err).split())})") from None


_READERS = {"JSON Lines": _read_json_lines, "CSV": _read_csv, "Parquet": _read_parquet}


def check_rollouts_path(path: str | Path) -> tuple[str, bool]:
    """``ValueError`` unless ``path`` is an existing file with a known suffix; returns :func:`rollouts_format`."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"rollouts file {str(path)!r} is a directory without record.json; give a .jsonl, .json, .parquet or .csv file, or a rollout record folder")
    if not path.exists():
        raise ValueError(f"rollouts file {str(path)!r} does not exist")
    return rollouts_format(path)


def read_rollouts(path: str | Path) -> pd.DataFrame:
    """Read and check a rollout file (see :func:`check_rollouts`); the format follows the suffix.

    Raises ``ValueError`` for a missing, empty, unreadable, truncated or corrupt file, a directory,
    or an unknown suffix, naming the file and what is wrong.
    """
    path = Path(path)
    where = f"rollouts file {str(path)!r}"
    kind, compressed = check_rollouts_path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{where}: cannot read it ({err.strerror or err})") from None
    if compressed and data:
        data = _gunzip(data, where)
    if not data or data.isspace():
        raise ValueError(f"{where} is empty")
    frame = _READERS[kind](data, where)
    if len(frame) == 0:
        raise ValueError(f"{where} has no rows")
    try:
        return check_rollouts(frame)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _reject_non_numbers(column: pd.Series, name: str) -> None:
    """``ValueError`` naming the column when it holds booleans, dates or durations: a boolean
    log-prob read as 1/0 or a timestamp read as 1.58e15 would be diagnosed as if it were a number."""
    kind = column.dtype
    if pd.api.types.is_bool_dtype(kind):
        raise ValueError(f"column {name!r} must hold numbers, but it holds booleans (True/False); write them as numbers")
    if pd.api.types.is_datetime64_any_dtype(kind) or pd.api.types.is_timedelta64_dtype(kind) or isinstance(kind, pd.PeriodDtype):
        raise ValueError(f"column {name!r} must hold numbers, but it holds dates or durations ({kind})")
    if kind == object:
        flags = column.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
        if flags.any():
            first = int(np.flatnonzero(flags)[0])
            raise ValueError(f"column {name!r} must hold numbers; row {first} has {column.iloc[first]!r}")


def check_rollouts(frame: pd.DataFrame) -> pd.DataFrame:
    """Check the columns and types of a rollout table; returns a copy with canonical dtypes.

    Non-finite ``reward`` / log-prob values are kept here (the diagnosis skips those rows and says
    so per prompt); a missing column, a missing prompt or completion, or a value that is not a number
    (text, a boolean, a date) raises ``ValueError`` naming the column.
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
        _reject_non_numbers(out[name], name)
        if pd.api.types.is_float_dtype(out[name]):
            continue  # float32 stays float32: tau is compared in the rewards' own dtype, as in training
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
