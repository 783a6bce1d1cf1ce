"""The rollout record: one Parquet row per sampled completion, written by both hosts (TRL and verl).

A record is a folder::

    <folder>/record.json                                   metadata (RecordMetadata), checked on resume
    <folder>/shards/step-{step:09d}-rank-{rank:05d}.parquet  one per (generation step, process)

Each process writes the rows it generated, so with several processes every completion is written
exactly once. A shard is written to a temporary file and moved into place with ``os.replace``: a
folder only ever holds whole shards, whenever the run is killed. A resumed run continues the
record from the step it resumes at: before its first shard, a :class:`RolloutRecorder` deletes the
shards of steps at or after that step (those of the killed run's steps that its checkpoint does not
cover), so every step is recorded exactly once.

Columns (:func:`record_schema`): ``step`` int64 (trainer global step at which the batch was
generated), ``group_id`` int64 (prompt group within the step: the completions that share an
anchor), ``prompt_id`` string (:func:`prompt_id`), ``prompt``, ``completion`` strings,
``completion_length`` int32 (tokens), ``truncated`` bool, ``reward_<name>`` float64 per reward
function (raw; null where it returned None), ``reward`` float64 (the host's weighted total, raw,
before MARA; null where no function scored the completion), ``ref_logprob`` float64 (sequence
``log pi_ref(y|x)``; null without a reference pass or where the host masked the whole completion),
``policy_logprob`` float64 (sequence log-prob under the policy that sampled), ``mara_reward`` float64
and ``mara_anchor`` bool (null when MARA is off).

pyarrow is imported when a recorder is made, not with this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "mara-rl.record/1"
METADATA_FILE = "record.json"
SHARDS = "shards"
SHARD_PATTERN = re.compile(r"^step-(\d{9})-rank-(\d{5})\.parquet$")
HOSTS = ("trl", "verl")

logger = logging.getLogger(__name__)


def shard_name(step: int, rank: int) -> str:
    """``step-{step:09d}-rank-{rank:05d}.parquet``."""
    return f"step-{step:09d}-rank-{rank:05d}.parquet"


def canonical_text(value: Any) -> str:
    """A prompt or completion as one string: a string as is, a conversation as canonical JSON.

    Canonical JSON: sorted keys, no spaces, non-ASCII kept (``json.dumps(sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)``), so equal conversations give equal strings.
    """
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def completion_text(completion: Any) -> str:
    """A completion as text: a string as is, one assistant message's text content, else canonical JSON."""
    if isinstance(completion, str):
        return completion
    if (isinstance(completion, list) and len(completion) == 1 and isinstance(completion[0], dict)
            and isinstance(completion[0].get("content"), str) and set(completion[0]) <= {"role", "content"}):
        return completion[0]["content"]
    return canonical_text(completion)


def prompt_id(text: str) -> str:
    """First 16 hex digits of ``sha256(text)`` (UTF-8): a prompt's id, stable across runs and hosts."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class RecordMetadata:
    """``record.json``: what produced the record. A resumed run must match it field for field."""

    host: str
    trainer: str
    beta: float
    kl_direction: str
    mara: bool
    mara_tau: float | None
    mara_tau_quantile: float | None
    num_generations: int
    reward_funcs: list[str]
    reward_weights: list[float]
    model: str
    reward_transform: str | None = None  # a rival transform in MARA's place; the record keeps the task rewards
    reward_transform_value: float | None = None
    schema: str = field(default=SCHEMA)

    def __post_init__(self) -> None:
        if self.host not in HOSTS:
            raise ValueError(f"host must be one of {HOSTS}, got {self.host!r}")
        if self.kl_direction not in ("reverse", "forward"):
            raise ValueError(f"kl_direction must be 'reverse' or 'forward', got {self.kl_direction!r}")
        names = list(self.reward_funcs)
        if len(set(names)) != len(names):
            raise ValueError(f"reward function names must be distinct to name the record's columns, got {names}")
        if len(self.reward_weights) != len(names):
            raise ValueError(f"{len(names)} reward functions but {len(self.reward_weights)} reward weights")
        # Plain JSON types, so that a record.json read back compares equal.
        object.__setattr__(self, "beta", float(self.beta))
        object.__setattr__(self, "mara", bool(self.mara))
        object.__setattr__(self, "num_generations", int(self.num_generations))
        object.__setattr__(self, "reward_funcs", [str(n) for n in names])
        object.__setattr__(self, "reward_weights", [float(w) for w in self.reward_weights])
        for name in ("mara_tau", "mara_tau_quantile", "reward_transform_value"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else float(value))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {"schema": data.pop("schema"), **data}


def record_schema(reward_funcs: Sequence[str]) -> Any:
    """The pyarrow schema of a shard with these reward functions (see the module docstring)."""
    pa = _pyarrow()
    return pa.schema(
        [
            ("step", pa.int64()),
            ("group_id", pa.int64()),
            ("prompt_id", pa.string()),
            ("prompt", pa.string()),
            ("completion", pa.string()),
            ("completion_length", pa.int32()),
            ("truncated", pa.bool_()),
            *[(f"reward_{name}", pa.float64()) for name in reward_funcs],
            ("reward", pa.float64()),
            ("ref_logprob", pa.float64()),
            ("policy_logprob", pa.float64()),
            ("mara_reward", pa.float64()),
            ("mara_anchor", pa.bool_()),
        ]
    )


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ValueError("recording rollouts needs pyarrow; install it with: pip install 'pyarrow>=14'") from None
    return pyarrow


def _float_column(values: Any, n: int, name: str) -> Any:
    """float64 pyarrow array of ``n`` values, NaN as null; all null when ``values`` is None."""
    pa = _pyarrow()
    if values is None:
        return pa.nulls(n, pa.float64())
    array = _numpy(values).astype(np.float64, copy=False).reshape(-1)
    if array.shape != (n,):
        raise ValueError(f"{name} has {array.size} values for {n} completions")
    return pa.array(array, mask=np.isnan(array))


def _numpy(values: Any) -> np.ndarray:
    if type(values).__module__.startswith("torch"):
        values = values.detach().to("cpu")
        if values.is_floating_point():
            values = values.double()
        return values.numpy()
    return np.asarray(values)


class RolloutRecorder:
    """Writes one process's shards of a record folder (see the module docstring).

    Args:
        folder: the record folder (created if missing).
        metadata: checked against an existing ``record.json`` (``ValueError`` naming the first field
            that differs), else written before any shard.
        rank / world_size: this process and the number of processes.
    """

    def __init__(self, folder: str | os.PathLike, metadata: RecordMetadata, *, rank: int = 0, world_size: int = 1):
        _pyarrow()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        self.folder = Path(folder)
        self.metadata = metadata
        self.rank, self.world_size = int(rank), int(world_size)
        self.schema = record_schema(metadata.reward_funcs)
        self._continued_from: int | None = None
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"record folder {str(self.folder)!r} exists and is not a folder")
        (self.folder / SHARDS).mkdir(parents=True, exist_ok=True)
        self._check_or_write_metadata()

    @property
    def shards(self) -> Path:
        return self.folder / SHARDS

    def _check_or_write_metadata(self) -> None:
        path = self.folder / METADATA_FILE
        wanted = self.metadata.to_json()
        if path.exists():
            try:
                found = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise ValueError(f"{path} is not readable JSON ({err}); remove it or record into a new folder") from None
            for key, value in wanted.items():
                if found.get(key) != value:
                    raise ValueError(
                        f"record folder {str(self.folder)!r} was written with {key}={found.get(key)!r}, this run has "
                        f"{key}={value!r}: record into a new folder (a record holds one run's settings)"
                    )
            return
        _atomic_write(path, (json.dumps(wanted, indent=2) + "\n").encode())

    def continue_from(self, step: int) -> list[Path]:
        """Delete this process's shards of steps ``>= step`` (and, on rank 0, those of ranks beyond the world).

        Called once before the first shard of this run: a resumed run re-generates those steps.
        Leftover temporary files of this rank are removed too. Returns the deleted shards.
        """
        removed = []
        for path in self.shards.iterdir():
            if path.name.startswith(f".tmp-rank-{self.rank:05d}-"):
                path.unlink(missing_ok=True)
                continue
            match = SHARD_PATTERN.match(path.name)
            if match is None:
                continue
            shard_step, shard_rank = int(match[1]), int(match[2])
            mine = shard_rank == self.rank or (self.rank == 0 and shard_rank >= self.world_size)
            if mine and shard_step >= step:
                path.unlink(missing_ok=True)
                removed.append(path)
        if removed:
            logger.warning("rollout record %s: continuing at step %d, deleted %d shard(s) of later steps from an "
                           "earlier run", self.folder, step, len(removed))
        self._continued_from = step
        return removed

    def write(
        self,
        step: int,
        *,
        group_ids: Any,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_lengths: Any,
        truncated: Any,
        rewards_per_func: Any,
        reward: Any,
        ref_logprobs: Any = None,
        policy_logprobs: Any = None,
        mara_rewards: Any = None,
        mara_anchors: Any = None,
    ) -> Path:
        """Write this process's completions of one generation step as one shard; returns its path.

        Args:
            step: the trainer's global step at generation.
            group_ids: ``[n]`` prompt group of each completion (global across processes).
            prompts / completions: ``n`` prompts and completions (strings or conversations).
            completion_lengths: ``[n]`` token counts; truncated: ``[n]`` bools.
            rewards_per_func: ``[n, F]`` raw rewards of the ``F`` reward functions (NaN: None).
            reward: ``[n]`` the host's weighted total before MARA (NaN: unscored).
            ref_logprobs / policy_logprobs: ``[n]`` sequence log-probs or None (NaN: not available).
            mara_rewards / mara_anchors: ``[n]`` MARA's reward and anchor flags, or None (MARA off).
        """
        pa = _pyarrow()
        n = len(prompts)
        if len(completions) != n:
            raise ValueError(f"{n} prompts but {len(completions)} completions")
        if (mara_rewards is None) != (mara_anchors is None):
            raise ValueError("give both mara_rewards and mara_anchors, or neither")
        if self._continued_from is None:
            self.continue_from(step)
        per_func = _numpy(rewards_per_func).astype(np.float64, copy=False)
        names = self.metadata.reward_funcs
        if per_func.shape != (n, len(names)):
            raise ValueError(f"rewards_per_func has shape {per_func.shape}, expected ({n}, {len(names)})")
        prompt_texts = [canonical_text(p) for p in prompts]
        columns = {
            "step": pa.array(np.full(n, int(step), dtype=np.int64)),
            "group_id": pa.array(_numpy(group_ids).astype(np.int64).reshape(n)),
            "prompt_id": pa.array([prompt_id(t) for t in prompt_texts], pa.string()),
            "prompt": pa.array(prompt_texts, pa.string()),
            "completion": pa.array([completion_text(c) for c in completions], pa.string()),
            "completion_length": pa.array(_numpy(completion_lengths).astype(np.int32).reshape(n)),
            "truncated": pa.array(_numpy(truncated).astype(bool).reshape(n)),
            **{f"reward_{name}": _float_column(per_func[:, i], n, name) for i, name in enumerate(names)},
            "reward": _float_column(reward, n, "reward"),
            "ref_logprob": _float_column(ref_logprobs, n, "ref_logprobs"),
            "policy_logprob": _float_column(policy_logprobs, n, "policy_logprobs"),
            "mara_reward": _float_column(mara_rewards, n, "mara_rewards"),
            "mara_anchor": (pa.nulls(n, pa.bool_()) if mara_anchors is None
                            else pa.array(_numpy(mara_anchors).astype(bool).reshape(n))),
        }
        table = pa.Table.from_arrays(list(columns.values()), schema=self.schema)
        path = self.shards / shard_name(int(step), self.rank)
        tmp = self.shards / f".tmp-rank-{self.rank:05d}-{os.getpid()}-{path.name}"
        import pyarrow.parquet as pq

        pq.write_table(table, tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        return path


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_record(folder: str | os.PathLike) -> Any:
    """All shards of a record folder as one pyarrow Table, rows ordered by (step, rank, row).

    Raises ``ValueError`` when the folder has no ``record.json`` or shards whose columns differ.
    """
    pa = _pyarrow()
    import pyarrow.parquet as pq

    folder = Path(folder)
    if not (folder / METADATA_FILE).is_file():
        raise ValueError(f"{str(folder)!r} is not a rollout record (no {METADATA_FILE})")
    metadata = json.loads((folder / METADATA_FILE).read_text())
    schema = record_schema(metadata["reward_funcs"])
    found = sorted(
        (int(m[1]), int(m[2]), p)
        for p in (folder / SHARDS).iterdir()
        if (m := SHARD_PATTERN.match(p.name)) is not None
    )
    tables = [pq.read_table(p) for _, _, p in found]
    for (_, _, path), table in zip(found, tables):
        if not table.schema.equals(schema):
            raise ValueError(f"shard {path} has columns {table.schema.names}, expected {schema.names}")
    return pa.concat_tables(tables) if tables else schema.empty_table()
