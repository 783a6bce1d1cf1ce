"""Parallel scoring: ``executor.map(fn, items) -> results``, the same results in the same order
whichever executor runs it.

``fn`` is a batch function (an :class:`~mara_rl.chem.oracles.Oracle`, or a docking oracle's
``dock``): it takes a list of items and returns one result per item. An executor cuts ``items``
into chunks of ``chunk_size``, applies ``fn`` to each chunk somewhere and concatenates the results
in input order. The results equal ``fn(items)`` whenever ``fn`` scores each item independently of
the others, as every oracle here does (docking reseeds each search). ``fn`` must pickle for the
process pool and Ray (a module-level function or an object such as ``DockingOracle``).

- :class:`SerialExecutor`: in this process.
- :class:`ProcessExecutor`: ``workers`` local processes (started with ``spawn``, so a parent
  holding threads or CUDA is safe), kept for the executor's life so that per-process state
  (a docking engine's maps) is built once per worker.
- :class:`RayExecutor`: a Ray cluster (``address="auto"`` or ``"ray://host:port"``) or a local
  Ray started on demand with ``workers`` CPUs; one CPU per task. Needs ``pip install ray``.

Typical use in a scoring loop: ``scores = np.asarray(executor.map(oracle, smiles))``.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from typing import Any, Callable, Protocol, Sequence, TypeVar

from mara_rl._workers import exit_with_parent

T = TypeVar("T")
R = TypeVar("R")
BatchFn = Callable[[list[T]], Sequence[R]]


class Executor(Protocol):
    """Applies a batch function over items in parallel, preserving order."""

    workers: int

    def map(self, fn: BatchFn, items: Sequence[T]) -> list[R]: ...

    def close(self) -> None: ...


def _chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _apply(fn: BatchFn, chunk: list[T]) -> list[R]:
    out = list(fn(chunk))
    if len(out) != len(chunk):
        raise ValueError(f"{getattr(fn, 'name', fn)!r} returned {len(out)} results for {len(chunk)} items")
    return out


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class _Base:
    workers = 1

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the workers (the executor can not be used after)."""


class SerialExecutor(_Base):
    """``fn(items)`` in this process, in one call."""

    def map(self, fn: BatchFn, items: Sequence[T]) -> list[R]:
        return _apply(fn, list(items)) if len(items) else []


class ProcessExecutor(_Base):
    """A pool of ``workers`` local processes; chunks of ``chunk_size`` items (1 balances slow,
    uneven work such as docking; raise it for cheap oracles)."""

    def __init__(self, workers: int, chunk_size: int = 1):
        self.workers = _check_positive("workers", workers)
        self.chunk_size = _check_positive("chunk_size", chunk_size)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def map(self, fn: BatchFn, items: Sequence[T]) -> list[R]:
        if not len(items):
            return []
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                                initializer=exit_with_parent, initargs=(os.getpid(),))
        chunks = _chunks(items, self.chunk_size)
        try:
            results = list(self._pool.map(_apply, [fn] * len(chunks), chunks))
        except concurrent.futures.process.BrokenProcessPool:
            self._pool = None  # unusable; a later map starts a fresh pool
            raise ValueError(f"a worker process of the pool died while running {getattr(fn, 'name', fn)!r} "
                             "(killed, or out of memory)") from None
        return [r for chunk in results for r in chunk]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor(_Base):
    """Ray tasks of one CPU each. With ``address`` (``"auto"``, ``"ray://host:port"``) it joins
    that cluster; without, it uses the Ray already initialised in this process or starts a local
    one with ``workers`` CPUs. It shuts down on :meth:`close` only a Ray it started."""

    def __init__(self, workers: int | None = None, address: str | None = None, chunk_size: int = 1):
        try:
            import ray
        except ImportError:
            raise ValueError("the Ray executor needs Ray: pip install 'ray>=2.40'") from None
        if workers is not None:
            _check_positive("workers", workers)
        if address is not None and workers is not None:
            raise ValueError("give workers (a local Ray) or address (an existing cluster), not both")
        self.chunk_size = _check_positive("chunk_size", chunk_size)
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            options: dict[str, Any] = {"address": address} if address else {"num_cpus": workers}
            try:
                ray.init(include_dashboard=False, log_to_driver=False, **options)
            except Exception as err:  # no cluster at the address, a refused connection, a failed start
                detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise ValueError(f"Ray at {address or 'a new local instance'}: {detail}") from None
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self._remote = ray.remote(num_cpus=1)(_apply)

    def map(self, fn: BatchFn, items: Sequence[T]) -> list[R]:
        if not len(items):
            return []
        fn_ref = self._ray.put(fn)
        refs = [self._remote.remote(fn_ref, chunk) for chunk in _chunks(items, self.chunk_size)]
        return [r for chunk in self._ray.get(refs) for r in chunk]

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False


def make_executor(workers: int = 1, ray_address: str | None = None, chunk_size: int = 1) -> Executor:
    """The executor for ``--oracle-workers N`` / ``--ray-address A``: serial for 1 worker and no
    address, a local process pool for N > 1, Ray when an address is given (``"local"`` starts a
    local Ray with ``workers`` CPUs)."""
    _check_positive("workers", workers)
    if ray_address is not None:
        if ray_address == "local":
            return RayExecutor(workers=workers, chunk_size=chunk_size)
        return RayExecutor(address=ray_address, chunk_size=chunk_size)
    if workers == 1:
        return SerialExecutor()
    return ProcessExecutor(workers, chunk_size)
