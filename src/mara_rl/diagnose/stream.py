"""Stream a record's steps into per-step summaries, cached beside the record.

Steps are read in batches of whole steps (about ``rows_per_batch`` rows each, only the shards of
those steps and only :data:`~mara_rl.diagnose.training.READ_COLUMNS`), summarised
(:func:`~mara_rl.diagnose.training.step_summaries`) and dropped, so memory follows the batch, not
the record.

The cache is one Parquet file per setting (beta, KL, tau, answer key) in
``<record>/diagnose-cache/``: one row per step with its summary and the signature (name, size,
modification time) of the shards it was computed from. A step is reused only while its shards are
exactly those; a step with a new or rewritten shard, or a new step, is computed again, so a re-run,
or a live view of a run still writing, reads only what changed. The file is written to a temporary
name and moved into place (a reader sees the old or the new file, whole); a file that cannot be
read, fails its page checksums, or does not have exactly the expected settings, format and columns
is ignored and rebuilt, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from mara_rl.diagnose.record import Record, read_shards
from mara_rl.diagnose.training import READ_COLUMNS, SUMMARY_COLUMNS, Settings, step_summaries

CACHE_DIR = "diagnose-cache"
CACHE_FORMAT = "mara-rl.diagnose-steps/1"
_META_KEY = b"mara_rl"


@dataclass
class OverTraining:
    """Per-step summaries (:data:`~mara_rl.diagnose.training.SUMMARY_COLUMNS`) of the selected steps at one setting."""

    settings: Settings
    summaries: object  # pandas DataFrame, one row per selected step, ascending
    computed: int = 0  # steps computed in this call (the others came from the cache)
    warnings: list[str] = field(default_factory=list)


def cache_path(record: Record, settings: Settings) -> str:
    """Where the summaries of ``record`` at ``settings`` are cached."""
    key = json.dumps({"format": CACHE_FORMAT, **settings.as_dict()}, sort_keys=True)
    return f"{record.root}/{CACHE_DIR}/steps-{hashlib.sha256(key.encode()).hexdigest()[:16]}.parquet"


def _signature(record: Record, step: int) -> str:
    return json.dumps([shard.signature() for shard in record.steps[step]])


def load_cache(record: Record, settings: Settings) -> tuple[dict[int, dict], str | None]:
    """``{step: summary row with its "shards" signature}`` from the cache, and a warning when the
    cache exists but is damaged (then nothing of it is used)."""
    import pyarrow as pa
    import pyarrow.fs
    import pyarrow.parquet as pq

    path = cache_path(record, settings)
    fs = record.filesystem
    try:
        if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
            return {}, None
        with fs.open_input_file(path) as handle:
            table = pq.read_table(handle, page_checksum_verification=True)
        meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"null"))
        expected = {"format": CACHE_FORMAT, "settings": settings.as_dict()}
        if meta != expected:
            raise ValueError(f"its header {meta!r} is not {expected!r}")
        names = list(SUMMARY_COLUMNS) + ["shards"]
        kinds = [pa.type_for_alias(k) for k in SUMMARY_COLUMNS.values()] + [pa.string()]
        if table.column_names != names or [f.type for f in table.schema] != kinds:
            raise ValueError(f"its columns are {table.schema.names}, not {names}")
        if any(table.column(n).null_count for n in names):
            raise ValueError("it has missing values")
        columns = {n: table.column(n).to_pylist() for n in names}
        if len(set(columns["step"])) != len(columns["step"]):
            raise ValueError("it repeats a step")
        for text in columns["shards"]:
            json.loads(text)
    except Exception as err:  # anything wrong with the file means: do not trust it
        return {}, f"summary cache {path.rsplit('/', 1)[-1]} is damaged ({' '.join(str(err).split())[:200]}); rebuilding it"
    rows = [dict(zip(names, values)) for values in zip(*columns.values())]
    return {row["step"]: row for row in rows}, None


def write_cache(record: Record, settings: Settings, entries: dict[int, dict]) -> str | None:
    """Write ``entries`` atomically (temporary file, then a move); a warning instead of an error when
    the record's storage cannot be written (a read-only bucket): the summaries are then not kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = cache_path(record, settings)
    fs = record.filesystem
    steps = sorted(entries)
    arrays = {
        name: pa.array([entries[s][name] for s in steps], type=pa.type_for_alias(kind)) for name, kind in SUMMARY_COLUMNS.items()
    }
    arrays["shards"] = pa.array([entries[s]["shards"] for s in steps], type=pa.string())
    header = json.dumps({"format": CACHE_FORMAT, "settings": settings.as_dict()}).encode()
    table = pa.table(arrays).replace_schema_metadata({_META_KEY: header})
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(temporary) as out:
            pq.write_table(table, out, write_page_checksum=True)
        fs.move(temporary, path)
    except OSError as err:
        try:
            fs.delete_file(temporary)
        except OSError:
            pass
        return f"could not write the summary cache beside the record ({' '.join(str(err).split())}); continuing without it"
    return None


def _read_and_summarize(record: Record, steps: list[int], settings_list: list[Settings]) -> list[dict]:
    table = read_shards(record, steps, READ_COLUMNS, dictionary_columns=("completion",))
    return step_summaries(table, settings_list)


MAX_JOBS = 32  # each thread holds one batch of about 1e6 rows (about 0.3 GB at its peak)


def default_jobs() -> int:
    """Threads for :func:`summarize_steps`: the cores, at least 2 (reading one batch while summarising
    another pays even on one core), at most 4 (memory grows with the batches in flight)."""
    return max(2, min(4, os.cpu_count() or 1))


def _summarized(record: Record, plan: list[tuple[list[int], list[Settings]]], jobs: int) -> Iterator[list[dict]]:
    """``step_summaries`` of each ``(steps, settings)`` of ``plan``, in order.

    Each batch is read and summarised in one of ``jobs`` threads: Parquet decoding and numpy's array
    loops release the GIL, so threads share the cores without copying batches between processes
    (measured: benchmarks/bench_diagnose_record.py). At most ``jobs + 1`` batches are in flight, so
    memory follows the batch size, not the record.
    """
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        pending: deque = deque()
        try:
            for steps, settings_list in plan:
                pending.append(pool.submit(_read_and_summarize, record, steps, settings_list))
                if len(pending) > jobs:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def summarize_steps(
    record: Record,
    settings_list: Sequence[Settings],
    steps: Sequence[int],
    *,
    use_cache: bool = True,
    rows_per_batch: int = 1_000_000,
    flush_seconds: float = 30.0,
    progress: bool = False,
    jobs: int | None = None,
) -> list[OverTraining]:
    """Per-step summaries of ``steps`` for each of ``settings_list``, in one pass over what is not cached.

    Each batch of steps is read once for all settings, by ``jobs`` threads (default:
    :func:`default_jobs`; see :func:`_summarized`).
    The cache is written at the end and at most every ``flush_seconds`` on the way, so an
    interrupted run keeps what it computed.
    """
    import pandas as pd

    from mara_rl.diagnose.record import batches

    settings_list = list(settings_list)
    signatures = {s: _signature(record, s) for s in steps}
    results = [OverTraining(settings, None) for settings in settings_list]
    cached: list[dict[int, dict]] = []
    pruned = False
    for result in results:
        entries, warning = load_cache(record, result.settings) if use_cache else ({}, None)
        if warning:
            result.warnings.append(warning)
        # Keep only entries whose step still has exactly the shards it was computed from.
        live = {s: row for s, row in entries.items() if s in record.steps and row["shards"] == _signature(record, s)}
        cached.append(live)
        pruned |= len(live) < len(entries)
    todo = [s for s in steps if any(s not in c for c in cached)]

    writable = [use_cache] * len(results)

    def flush() -> None:
        for i, (result, entries) in enumerate(zip(results, cached)):
            if writable[i]:
                warning = write_cache(record, result.settings, entries)
                if warning:
                    result.warnings.append(warning)
                    writable[i] = False

    if jobs is None:
        jobs = default_jobs()
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or not 1 <= jobs <= MAX_JOBS:
        raise ValueError(f"jobs must be an integer from 1 to {MAX_JOBS} (each thread holds a batch of about 1e6 rows), got {jobs!r}")
    plan = []
    for batch in batches(record, todo, rows_per_batch):
        wanted = [i for i, entries in enumerate(cached) if any(s not in entries for s in batch)]
        plan.append((batch, wanted))
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="diagnose steps", unit="step", leave=False)
    last_flush = time.monotonic()
    summarized = _summarized(record, [(batch, [settings_list[i] for i in wanted]) for batch, wanted in plan], int(jobs))
    try:
        for (batch, wanted), computed in zip(plan, summarized):
            for i, columns in zip(wanted, computed):
                for step in batch:  # a step whose shards hold no rows sums to zeros
                    cached[i][step] = {name: 0 for name in SUMMARY_COLUMNS} | {"step": step, "shards": signatures[step]}
                for j, step in enumerate(columns["step"].tolist()):
                    cached[i][step].update({name: columns[name][j].item() for name in SUMMARY_COLUMNS})
                results[i].computed += len(batch)
            if bar is not None:
                bar.update(len(batch))
            if time.monotonic() - last_flush > flush_seconds:
                flush()
                last_flush = time.monotonic()
    finally:  # an error or Ctrl-C mid-pass still keeps every step summarised so far
        if bar is not None:
            bar.close()
        if todo or pruned:
            flush()
    for result, entries in zip(results, cached):
        rows = [entries[s] for s in steps if s in entries]
        frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
        result.summaries = frame.astype(SUMMARY_COLUMNS).reset_index(drop=True)
    return results
