"""Resumable sweeps of training runs, shared by ``mara llm one-or-two`` and ``mara llm creative``.

A sweep folder holds ``config.json`` (the settings its runs were trained with; a resumed sweep
must match them, except for the grid's seeds or methods, which may grow) and ``runs/<name>.json``, one per finished run, written to a temporary file and
renamed into place, so a kill at any instant leaves only whole files and the next call trains only
the runs that are missing. ``jobs > 1`` trains missing runs in that many spawned processes, each
on one torch thread; every run is seeded on its own, so the results are those of a sequential sweep
on one thread.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping


def check_stored_config(settings: Mapping[str, Any], out: Path, *, grid_keys: tuple[str, ...] = (),
                        per_run_specs: str | None = None, write: bool = True) -> None:
    """Write ``out/config.json``, or check that the one already there holds the same ``settings``
    (``write=False``: only check, as a report that trains nothing does).

    ``grid_keys`` (e.g. ``seeds``, ``methods``) may differ between calls: they only choose which
    runs to train, so a sweep can be extended with more seeds or methods. ``per_run_specs`` names a
    mapping (e.g. method name -> definition) whose entries are merged: a name already stored must
    keep its definition, new names are added.
    """
    stored = out / "config.json"
    wanted = json.loads(json.dumps(settings))
    previous = json.loads(stored.read_text()) if stored.exists() else wanted
    ignored = set(grid_keys) | ({per_run_specs} if per_run_specs else set())
    changed = sorted(k for k in (previous.keys() | wanted.keys()) - ignored if previous.get(k) != wanted.get(k))
    if per_run_specs:
        old_specs, new_specs = previous.get(per_run_specs, {}), wanted.get(per_run_specs, {})
        changed += [f"{per_run_specs}[{name}]" for name in sorted(old_specs.keys() & new_specs.keys())
                    if old_specs[name] != new_specs[name]]
        wanted[per_run_specs] = {**old_specs, **new_specs}
    if changed:
        raise ValueError(f"{out} holds a sweep with other settings ({', '.join(changed)}); use another --out")
    for key in grid_keys:  # every value ever asked for, so config.json lists what the folder may hold
        if isinstance(previous.get(key), list) and isinstance(wanted.get(key), list):
            wanted[key] = previous[key] + [v for v in wanted[key] if v not in previous[key]]
    if write:
        stored.write_text(json.dumps(wanted, indent=2))


def finished_runs(out: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """The results of the runs among ``names`` that ``out/runs`` already holds."""
    done = {}
    for name in names:
        run_file = out / "runs" / f"{name}.json"
        if run_file.exists():
            try:
                done[name] = json.loads(run_file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{run_file} is damaged ({err}); delete it to train that run again") from None
    return done


def _train_and_store(train: Callable[..., dict[str, Any]], name: str, args: tuple, out: Path) -> dict[str, Any]:
    """``train(*args)`` and write ``out/runs/<name>.json`` (renamed into place)."""
    result = train(*args)
    run_file = out / "runs" / f"{name}.json"
    partial = run_file.with_suffix(f".json.{os.getpid()}.tmp")
    partial.write_text(json.dumps(result, indent=2))
    partial.replace(run_file)
    return result


def _worker(parent: int) -> None:
    """One torch thread per run; the worker ends with the sweep (a killed sweep must not leave runs
    going on in its folder)."""
    import torch

    from mara_rl._workers import exit_with_parent

    torch.set_num_threads(1)
    exit_with_parent(parent)


def run_grid(out: Path, runs: Mapping[str, tuple], train: Callable[..., dict[str, Any]], *, jobs: int = 1,
             desc: str = "runs", report_only: bool = False) -> dict[str, dict[str, Any]]:
    """Train every run of ``runs`` (name -> arguments of ``train``) that ``out/runs`` lacks.

    ``train`` must be a module-level function (it is pickled into worker processes when ``jobs > 1``).
    ``report_only`` trains nothing and returns only the runs already finished, saying on stderr which
    of ``runs`` are not; with none finished it raises ``ValueError``.

    Returns:
        name -> result for every run, finished before or now, in the order of ``runs``.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    done = finished_runs(out, list(runs))
    if report_only:
        if not done:
            raise ValueError(f"{out} holds no finished run of this grid; run the sweep (without its report flag) to train it first")
        missing = [name for name in runs if name not in done]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            print(f"{desc}: reporting the {len(done)} of {len(runs)} runs finished; not finished: {shown}", file=sys.stderr)
        return {name: done[name] for name in runs if name in done}
    (out / "runs").mkdir(parents=True, exist_ok=True)
    todo = [name for name in runs if name not in done]
    progress = tqdm(total=len(runs), initial=len(done), desc=desc)
    if jobs == 1:
        for name in todo:
            done[name] = _train_and_store(train, name, runs[name], out)
            progress.update()
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_worker,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_train_and_store, train, name, runs[name], out): name for name in todo}
            for future in as_completed(futures):
                done[futures[future]] = future.result()
                progress.update()
    progress.close()
    return {name: done[name] for name in runs}
