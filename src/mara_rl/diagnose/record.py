"""Read a rollout record folder (the trainers' recorder) through pyarrow's filesystems.

A record is ``<folder>/record.json`` (metadata, schema ``mara-rl.record/1``) and
``<folder>/shards/step-{step:09d}-rank-{rank:05d}.parquet``, one shard per (generation step,
process), each written whole. The step is in the shard's name, so a window of steps is chosen from
one directory listing without opening a file, and only the columns asked for are read from the
chosen shards.

The folder may be a local path or any URI pyarrow's filesystems resolve (``s3://bucket/run``,
``gs://bucket/run``, ``hdfs://...``; credentials come from the environment as pyarrow documents), or
a path on a ``pyarrow.fs.FileSystem`` given explicitly.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

RECORD_SCHEMA = "mara-rl.record/1"
RECORD_FILE = "record.json"
SHARDS_DIR = "shards"
SHARD_NAME = re.compile(r"step-(\d{9})-rank-(\d{5})\.parquet")


def is_uri(path: str) -> bool:
    """Whether ``path`` names a filesystem scheme (``s3://``, ``gs://``, ``file://``...)."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(path)) is not None


def resolve(path: str | os.PathLike, filesystem=None):
    """``(pyarrow filesystem, path on it)`` for a local path or a URI; ``ValueError`` if pyarrow cannot resolve it."""
    import pyarrow.fs

    text = str(path)
    if filesystem is not None:
        return filesystem, text
    if not is_uri(text):
        return pyarrow.fs.LocalFileSystem(), os.path.abspath(text).replace(os.sep, "/")
    try:
        return pyarrow.fs.FileSystem.from_uri(text)
    except Exception as err:  # pyarrow raises ArrowInvalid, ArrowNotImplementedError, OSError by scheme
        raise ValueError(f"cannot open {text!r} through pyarrow's filesystems: {' '.join(str(err).split())}") from None


def looks_like_record(path: str | os.PathLike, filesystem=None) -> bool:
    """Whether ``path`` is a record folder (a local folder with ``record.json``; any URI is taken for
    one) rather than a single rollouts file."""
    import pyarrow.fs

    if is_uri(str(path)):
        return True  # only records are read through URIs: open_record says what is wrong
    if filesystem is not None:
        return filesystem.get_file_info(str(path)).type == pyarrow.fs.FileType.Directory
    return os.path.isfile(os.path.join(path, RECORD_FILE))


@dataclass(frozen=True)
class Shard:
    """One shard file: its step, rank, path on the filesystem, size and modification time (ns)."""

    step: int
    rank: int
    path: str
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def signature(self) -> list:
        """What identifies this version of the shard: a rewritten shard changes its size or time."""
        return [self.name, self.size, self.mtime_ns]


@dataclass(frozen=True)
class Record:
    """An opened record: metadata, and its shards grouped by step (ascending)."""

    location: str
    filesystem: object
    root: str
    metadata: dict
    steps: dict[int, list[Shard]] = field(repr=False)

    @property
    def step_numbers(self) -> list[int]:
        return sorted(self.steps)

    def shards_of(self, steps: Iterable[int]) -> list[Shard]:
        return [shard for step in steps for shard in self.steps[step]]


def _check_metadata(metadata: object, where: str) -> dict:
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: expected a JSON object")
    schema = metadata.get("schema")
    if schema != RECORD_SCHEMA:
        raise ValueError(f"{where}: schema {schema!r} is not {RECORD_SCHEMA!r}, the one this version of mara reads")
    beta = metadata.get("beta")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
        raise ValueError(f"{where}: 'beta' must be a number >= 0, got {beta!r}")
    if metadata.get("kl_direction") not in ("reverse", "forward"):
        raise ValueError(f"{where}: 'kl_direction' must be 'reverse' or 'forward', got {metadata.get('kl_direction')!r}")
    for key in ("mara_tau", "mara_tau_quantile"):
        value = metadata.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{where}: {key!r} must be a number or null, got {value!r}")
    return metadata


def open_record(path: str | os.PathLike, filesystem=None) -> Record:
    """Open a record folder: read and check ``record.json`` and list the shards (one listing call).

    Files in ``shards/`` whose names do not follow ``step-{step:09d}-rank-{rank:05d}.parquet``
    (a writer's temporary files) are ignored. ``ValueError`` names the folder and what is wrong.
    """
    import pyarrow.fs

    fs, root = resolve(path, filesystem)
    root = root.rstrip("/") or "/"
    where = f"record {str(path)!r}"
    try:
        info = fs.get_file_info(root)
        if info.type == pyarrow.fs.FileType.NotFound:
            raise ValueError(f"{where} does not exist")
        if info.type != pyarrow.fs.FileType.Directory:
            raise ValueError(f"{where} is not a folder")
        meta_path = f"{root}/{RECORD_FILE}"
        if fs.get_file_info(meta_path).type != pyarrow.fs.FileType.File:
            raise ValueError(f"{where} has no {RECORD_FILE}: not a rollout record (give a record folder or a rollouts file)")
        with fs.open_input_stream(meta_path) as stream:
            raw = stream.read()
        try:
            metadata = json.loads(raw)
        except ValueError as err:
            raise ValueError(f"{where}: {RECORD_FILE} is not valid JSON ({err})") from None
        metadata = _check_metadata(metadata, f"{where}: {RECORD_FILE}")
        shard_dir = f"{root}/{SHARDS_DIR}"
        listing = fs.get_file_info(pyarrow.fs.FileSelector(shard_dir, allow_not_found=True))
    except OSError as err:
        raise ValueError(f"{where}: cannot read it ({' '.join(str(err).split())})") from None
    steps: dict[int, list[Shard]] = {}
    for entry in listing:
        match = SHARD_NAME.fullmatch(entry.base_name)
        if entry.type != pyarrow.fs.FileType.File or match is None:
            continue
        mtime = entry.mtime_ns if entry.mtime_ns is not None else 0
        shard = Shard(int(match.group(1)), int(match.group(2)), entry.path, int(entry.size or 0), int(mtime))
        steps.setdefault(shard.step, []).append(shard)
    for shards in steps.values():
        shards.sort(key=lambda s: s.rank)
    return Record(str(path), fs, root, metadata, steps)


def parse_steps(text: str) -> tuple[int | None, int | None]:
    """``"A:B"`` -> ``(A, B)``: the steps ``A <= step < B``; either side may be left out (``"100:"``)."""
    match = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text)
    if match is None:
        raise ValueError(f"--steps must be START:STOP with non-negative integers (either may be left out), got {text!r}")
    start = int(match.group(1)) if match.group(1) else None
    stop = int(match.group(2)) if match.group(2) else None
    if start is not None and stop is not None and stop <= start:
        raise ValueError(f"--steps {text!r} selects no step: STOP must be greater than START")
    return start, stop


def select_steps(record: Record, window: tuple[int | None, int | None] = (None, None), every: int = 1) -> list[int]:
    """The recorded steps in ``[start, stop)``, then every ``every``-th of them (the first kept)."""
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    start, stop = window
    chosen = [s for s in record.step_numbers if (start is None or s >= start) and (stop is None or s < stop)]
    return chosen[::every]


def batches(record: Record, steps: Sequence[int], rows_per_batch: int, max_bytes: int = 128 << 20) -> Iterator[list[int]]:
    """Consecutive groups of ``steps`` of at most about ``rows_per_batch`` rows and ``max_bytes`` of
    shards (long completions make few rows large); a step is never split.

    Sizes are estimated from the shards' bytes and the first shard's rows, so no footer is opened
    for the plan.
    """
    if not steps:
        return
    bytes_per_row = _bytes_per_row(record, steps[0])
    budget = max(1.0, min(rows_per_batch * bytes_per_row, max_bytes))
    current: list[int] = []
    size = 0.0
    for step in steps:
        step_bytes = float(sum(s.size for s in record.steps[step]))
        if current and size + step_bytes > budget:
            yield current
            current, size = [], 0.0
        current.append(step)
        size += step_bytes
    if current:
        yield current


def _bytes_per_row(record: Record, step: int) -> float:
    import pyarrow.parquet as pq

    shard = record.steps[step][0]
    try:
        with record.filesystem.open_input_file(shard.path) as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
    except Exception as err:  # a damaged shard: named here rather than deep in a scan
        raise ValueError(f"record {record.location!r}: shard {shard.name} is not a readable Parquet file ({' '.join(str(err).split())})") from None
    return shard.size / max(rows, 1)


NUMBER_COLUMNS = ("reward", "ref_logprob", "policy_logprob")
INTEGER_COLUMNS = ("step", "group_id")
TEXT_COLUMNS = ("prompt", "completion", "prompt_id")


def _check_type(name: str, kind, where: str):
    """The Arrow type a column is read as; ``ValueError`` naming the column for a wrong type
    (a boolean log-prob or a timestamp reward is a writer's mistake, not a number to guess)."""
    import pyarrow as pa

    base = kind.value_type if pa.types.is_dictionary(kind) else kind
    if name in NUMBER_COLUMNS:
        ok = pa.types.is_floating(base) or pa.types.is_integer(base) or pa.types.is_null(base)
        wanted = "numbers"
    elif name in INTEGER_COLUMNS:
        ok = pa.types.is_integer(base)
        wanted = "integers"
    else:
        ok = pa.types.is_string(base) or pa.types.is_large_string(base) or pa.types.is_null(base)
        wanted = "text"
    if not ok:
        raise ValueError(f"{where}: column {name!r} must hold {wanted}, but its type is {base}")


def read_shards(record: Record, steps: Sequence[int], columns: Sequence[str], *, dictionary_columns: Sequence[str] = ()):
    """One pyarrow Table of ``columns`` over the shards of ``steps``: only those files are opened and
    only those columns are read from them.

    Numbers come back as float64, integers as int64; ``dictionary_columns`` come back
    dictionary-encoded, as Parquet stores them, without building a string per row. An optional
    column absent from a shard (``policy_logprob``) reads as nulls; a missing required column, a
    column of the wrong type, or a shard whose ``step`` column disagrees with its name is a
    ``ValueError`` naming the shard.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables = []
    for shard in record.shards_of(steps):
        where = f"record {record.location!r}: shard {shard.name}"
        try:
            with record.filesystem.open_input_file(shard.path) as handle:
                footer = pq.read_metadata(handle)
                schema = footer.schema.to_arrow_schema()
                present = [c for c in columns if c in schema.names]
                source = pq.ParquetFile(handle, metadata=footer, read_dictionary=[c for c in dictionary_columns if c in present])
                for name in present:
                    _check_type(name, schema.field(name).type, where)
                missing = [c for c in columns if c not in present and c != "policy_logprob"]
                if missing:
                    raise ValueError(f"{where} has no column(s) {', '.join(missing)}")
                table = source.read(columns=present)
        except (pa.ArrowException, OSError) as err:
            raise ValueError(f"{where} is not a readable Parquet file ({' '.join(str(err).split())})") from None
        parts = []
        for name in columns:
            if name not in present:
                parts.append(pa.nulls(table.num_rows, pa.float64()))
                continue
            column = table.column(name)
            if name in NUMBER_COLUMNS:
                column = column.cast(pa.float64())
            elif name in INTEGER_COLUMNS:
                column = column.cast(pa.int64())
            elif name not in dictionary_columns and pa.types.is_dictionary(column.type):
                column = column.cast(pa.string())
            parts.append(column)
        table = pa.table(parts, names=list(columns))
        if "step" in columns and table.num_rows:
            low, high = pc.min_max(table.column("step")).values()
            if low.as_py() != shard.step or high.as_py() != shard.step:
                raise ValueError(f"{where} holds rows of step {low.as_py()}..{high.as_py()}, not of the step in its name")
        tables.append(table)
    if not tables:
        raise ValueError(f"record {record.location!r}: no shard in the selected steps")
    return pa.concat_tables(tables, promote_options="permissive")
