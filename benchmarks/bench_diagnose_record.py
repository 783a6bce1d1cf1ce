"""``mara diagnose`` over a rollout record at 1e6 .. 1e8 rows: time and peak memory against pyarrow's read.

Writes (once, resumably: a finished shard is not written again) a synthetic record in the recorder's
schema (``mara-rl.record/1``, every column): ``--groups`` prompt groups of ``--group-size``
completions per step, split over ``--ranks`` shards per step. Each prompt samples from 8 answers
(6 valid, reward 1) written 4 ways, plus a long reasoning text unique to the row in a quarter of the
rows; the sampling distribution sharpens over the steps (the policy collapses onto its most
reference-likely valid answer). Log-probs are fixed per (prompt, text) for the reference and drift
with the step for the policy.

Then, for the first ``N`` rows (whole steps) of the record for each ``--sizes`` N, each in a fresh
process so that peak RSS (``ru_maxrss``) is that of the measured work alone:

- floor: pyarrow reading the same columns of the same shards, discarding them, two ways:
  ``pyarrow.dataset`` scanning them in batches (its multi-file reader), and ``ParquetFile.read``
  per shard with ``completion`` read as a dictionary (what the view does);
- view, cold: the over-training view's per-step summaries (read, answer classes, targets through the
  core) with no cache, in one thread and in ``--jobs`` threads (``mara diagnose --jobs``, whose
  default is the machine's cores, 2 to 4);
- view, warm: the same call again with the cache it wrote (a re-run: only the cache is read).

The figures: view-cold time over the faster floor (done: <= 2), peak RSS at the largest size
(done: < 2 GB), and time and memory per size (linear time, flat memory). With ``--duckdb`` (DuckDB
importable), DuckDB reading the same columns and aggregating the answer classes is timed too.

    nice -n 19 python benchmarks/bench_diagnose_record.py --dir /tmp/mara-record --sizes 1e6 1e7 1e8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mara_rl.diagnose.stream import default_jobs

ANSWERS = 8
VALID = 6
WAYS = 4


def _texts() -> list[str]:
    ways = ("The answer is {a}.", "{a}", "Answer: {a}", "I pick {a}, since the options are equally good.")
    return [w.format(a=a) for a in range(ANSWERS) for w in ways]


def _random_texts(rng: np.random.Generator, count: int, chars: int):
    """``count`` strings of ``chars`` random lowercase letters and spaces (incompressible, like the
    reasoning of a long completion), built as one Arrow buffer."""
    import pyarrow as pa

    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ", dtype=np.uint8)
    data = letters[rng.integers(0, letters.size, size=count * chars)]
    offsets = np.arange(count + 1, dtype=np.int32) * chars
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(data))


def write_record(folder: Path, steps: int, groups: int, group_size: int, ranks: int, seed: int = 0, text_chars: int = 0) -> None:
    """The synthetic record (see the module docstring); existing shards are kept. With ``text_chars``,
    every completion starts with that many random characters instead (all distinct, as long
    reasoning completions are)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    shards = folder / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    meta = {
        "schema": "mara-rl.record/1", "host": "trl", "trainer": "MaraGRPOTrainer", "beta": 0.05,
        "kl_direction": "reverse", "mara": False, "mara_tau": None, "mara_tau_quantile": None,
        "num_generations": group_size, "reward_funcs": ["valid"], "reward_weights": [1.0], "model": "synthetic",
    }
    (folder / "record.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(seed)
    num_prompts = 4 * groups
    texts = pa.array(_texts())
    prompts = pa.array([f"Pick one of the options uniformly at random; prompt number {p}." for p in range(num_prompts)])
    prompt_ids = pa.array([f"{p:016x}" for p in range(num_prompts)])
    reference = rng.dirichlet(np.full(ANSWERS, 0.7), size=num_prompts)  # [P, A]
    way_logprob = np.log(rng.dirichlet(np.full(WAYS, 2.0), size=(num_prompts, ANSWERS)))  # [P, A, W]
    per_rank = groups // ranks
    for step in range(steps):
        sharpness = 1.0 + 6.0 * step / max(steps - 1, 1)
        for rank in range(ranks):
            path = shards / f"step-{step:09d}-rank-{rank:05d}.parquet"
            if path.exists():
                continue
            step_rng = np.random.default_rng([seed, step, rank])
            group = np.repeat(np.arange(rank * per_rank, (rank + 1) * per_rank), group_size)
            prompt = (group * 7 + step * 3) % num_prompts
            weights = reference[prompt] ** sharpness * (np.arange(ANSWERS) < VALID)
            weights /= weights.sum(axis=1, keepdims=True)
            answer = (step_rng.random(group.size)[:, None] > np.cumsum(weights, axis=1)).sum(axis=1).clip(0, ANSWERS - 1)
            way = step_rng.integers(0, WAYS, group.size)
            ref = np.log(reference[prompt, answer]) + way_logprob[prompt, answer, way]
            unique = step_rng.random(group.size) < 0.25
            code = pa.array(answer * WAYS + way, pa.int32())
            completion = pc.take(texts, code)
            row_ids = pc.cast(pa.array(step * groups * group_size + np.arange(group.size)), pa.string())
            long = pc.binary_join_element_wise("Let me reason about it step by step, then answer. Row ", row_ids, " says:", "")
            completion = pc.if_else(pa.array(unique), pc.binary_join_element_wise(long, completion, " "), completion)
            if text_chars:
                unique[:] = True
                completion = pc.binary_join_element_wise(_random_texts(step_rng, group.size, text_chars), pc.take(texts, code), " ")
            ref = np.where(unique, ref - 30.0 - 0.01 * (np.arange(group.size) % 97), ref)
            reward = (answer < VALID).astype(np.float64)
            table = pa.table({
                "step": pa.array(np.full(group.size, step, np.int64)),
                "group_id": pa.array(group.astype(np.int64)),
                "prompt_id": pc.take(prompt_ids, pa.array(prompt)),
                "prompt": pc.take(prompts, pa.array(prompt)),
                "completion": completion,
                "completion_length": pc.cast(pc.utf8_length(completion), pa.int32()),
                "truncated": pa.array(np.zeros(group.size, bool)),
                "reward_valid": pa.array(reward),
                "reward": pa.array(reward),
                "ref_logprob": pa.array(ref),
                "policy_logprob": pa.array(ref + 0.5 * sharpness * (answer == 0)),
                "mara_reward": pa.nulls(group.size, pa.float64()),
                "mara_anchor": pa.nulls(group.size, pa.bool_()),
            })
            temporary = path.with_suffix(".parquet.tmp")
            pq.write_table(table, temporary)
            os.replace(temporary, path)
        if step % 50 == 0:
            print(f"  wrote step {step + 1}/{steps}", file=sys.stderr, flush=True)


def _child(args: argparse.Namespace) -> None:
    """Run one measurement in this process; print one JSON line with wall time and peak RSS."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from mara_rl.diagnose.record import open_record
    from mara_rl.diagnose.stream import summarize_steps
    from mara_rl.diagnose.training import READ_COLUMNS, Settings

    record = open_record(args.dir)
    steps = record.step_numbers[: args.num_steps]
    paths = [s.path for s in record.shards_of(steps)]
    start = time.perf_counter()
    rows = 0
    if args.child == "floor-dataset":
        for batch in ds.dataset(paths, format="parquet").to_batches(columns=list(READ_COLUMNS)):
            rows += batch.num_rows
    elif args.child.startswith("duckdb"):
        import duckdb

        con = duckdb.connect()
        con.execute("SET threads = 2")
        columns = ", ".join(READ_COLUMNS)
        if args.child == "duckdb-read":  # the same columns as Arrow batches
            query = f"SELECT {columns} FROM read_parquet({paths!r})"
        else:  # the class aggregation alone (no targets): what DuckDB could take over
            query = f"SELECT step, group_id, completion, count(*), sum(reward), sum(ref_logprob), sum(policy_logprob) FROM read_parquet({paths!r}) GROUP BY ALL"
        for batch in con.sql(query).to_arrow_reader(1 << 20):
            rows += batch.num_rows
    elif args.child == "floor-files":
        for path in paths:
            rows += pq.ParquetFile(path, read_dictionary=["completion"]).read(columns=list(READ_COLUMNS)).num_rows
    else:
        jobs = args.jobs if args.child == "view-cold-jobs" else 1
        result = summarize_steps(record, [Settings(0.05)], steps, use_cache=args.child == "view-warm", jobs=jobs)[0]
        rows = int(result.summaries["rows"].sum())
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"what": args.child, "rows": rows, "seconds": seconds, "peak_mb": peak_mb}))


def _measure(args: argparse.Namespace, what: str, num_steps: int) -> dict:
    command = [sys.executable, __file__, "--dir", str(args.dir), "--child", what, "--num-steps", str(num_steps)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mara-bench-record"), help="where the record is written (kept)")
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7, 1e8], help="rows measured (whole steps)")
    parser.add_argument("--groups", type=int, default=1000, help="prompt groups per step")
    parser.add_argument("--group-size", type=int, default=64, help="completions per group")
    parser.add_argument("--ranks", type=int, default=2, help="shards per step")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs per measurement")
    parser.add_argument("--text-chars", type=int, default=0, help="every completion this many random characters long (0: short answers)")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help=f"threads of the parallel view (default: {default_jobs()}, as mara diagnose)")
    parser.add_argument("--duckdb", action="store_true", help="also time DuckDB reading the same columns and aggregating the classes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--num-steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args)

    rows_per_step = args.groups * args.group_size
    steps_for = [max(1, int(round(n / rows_per_step))) for n in args.sizes]
    start = time.perf_counter()
    write_record(args.dir, max(steps_for), args.groups, args.group_size, args.ranks, text_chars=args.text_chars)
    usage = shutil.disk_usage(args.dir)
    size_gb = sum(p.stat().st_size for p in (args.dir / "shards").iterdir()) / 1e9
    print(f"record {args.dir}: {max(steps_for)} steps x {rows_per_step} rows, {args.ranks} shards per step, "
          f"{size_gb:.2f} GB on disk ({usage.free / 1e9:.0f} GB free); ready in {time.perf_counter() - start:.0f} s")
    print(f"{'rows':>11} {'floor ds s':>10} {'floor files s':>13} {'view cold s':>11} {'ratio':>6} "
          f"{f'{args.jobs} jobs s':>10} {'ratio':>6} {'view warm s':>11} {'floor MB':>9} {'view MB':>8} "
          f"{f'{args.jobs} jobs MB':>11} {'view s/1e6 rows':>15}")
    for num_steps in steps_for:
        cache = args.dir / "diagnose-cache"
        shutil.rmtree(cache, ignore_errors=True)
        runs: dict[str, list[dict]] = {}
        for _ in range(args.repeats):  # interleaved, so that a change of load hits floor and view alike
            for what in ("floor-dataset", "floor-files", "view-cold", "view-cold-jobs") + (("duckdb-read", "duckdb-classes") if args.duckdb else ()):
                runs.setdefault(what, []).append(_measure(args, what, num_steps))
        best = {w: min(r, key=lambda x: x["seconds"]) | {"peak_mb": max(x["peak_mb"] for x in r)} for w, r in runs.items()}
        _measure(args, "view-warm", num_steps)  # writes the cache
        best["view-warm"] = _measure(args, "view-warm", num_steps)
        rows = best["view-cold"]["rows"]
        floor = min(best["floor-dataset"]["seconds"], best["floor-files"]["seconds"])
        print(
            f"{rows:>11,} {best['floor-dataset']['seconds']:>10.2f} {best['floor-files']['seconds']:>13.2f} "
            f"{best['view-cold']['seconds']:>11.2f} {best['view-cold']['seconds'] / floor:>6.2f} "
            f"{best['view-cold-jobs']['seconds']:>10.2f} {best['view-cold-jobs']['seconds'] / floor:>6.2f} "
            f"{best['view-warm']['seconds']:>11.3f} {max(best['floor-dataset']['peak_mb'], best['floor-files']['peak_mb']):>9.0f} "
            f"{best['view-cold']['peak_mb']:>8.0f} {best['view-cold-jobs']['peak_mb']:>11.0f} "
            f"{best['view-cold']['seconds'] / rows * 1e6:>15.3f}",
            flush=True,
        )
        if args.duckdb:
            print(f"{'':>11} DuckDB: reading the same columns {best['duckdb-read']['seconds']:.2f} s, "
                  f"aggregating the classes (count and sums per step, group, completion) {best['duckdb-classes']['seconds']:.2f} s")
    print(f"ratio = view cold (one thread; then {args.jobs} threads, --jobs) / the faster floor (done: <= 2); "
          "MB = peak RSS (done: < 2000, flat)")


if __name__ == "__main__":
    main()
