"""Write rollout records in the recorder's schema (``mara-rl.record/1``) for the diagnose tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

METADATA = {
    "schema": "mara-rl.record/1",
    "host": "trl",
    "trainer": "MaraGRPOTrainer",
    "beta": 0.05,
    "kl_direction": "reverse",
    "mara": True,
    "mara_tau": None,
    "mara_tau_quantile": 1.0,
    "num_generations": 8,
    "reward_funcs": ["valid"],
    "reward_weights": [1.0],
    "model": "tiny",
}


def prompt_id(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def shard_table(rows: list[dict]) -> pa.Table:
    """A shard in the recorder's column order and types from row dicts (missing optional values null)."""
    get = lambda key, default=None: [r.get(key, default) for r in rows]  # noqa: E731
    prompts = get("prompt")
    return pa.table(
        {
            "step": pa.array(get("step"), pa.int64()),
            "group_id": pa.array(get("group_id"), pa.int64()),
            "prompt_id": pa.array([prompt_id(p) for p in prompts], pa.string()),
            "prompt": pa.array(prompts, pa.string()),
            "completion": pa.array(get("completion"), pa.string()),
            "completion_length": pa.array([len(c.split()) for c in get("completion")], pa.int32()),
            "truncated": pa.array([False] * len(rows), pa.bool_()),
            "reward_valid": pa.array(get("reward"), pa.float64()),
            "reward": pa.array(get("reward"), pa.float64()),
            "ref_logprob": pa.array(get("ref_logprob"), pa.float64()),
            "policy_logprob": pa.array(get("policy_logprob"), pa.float64()),
            "mara_reward": pa.array(get("reward"), pa.float64()),
            "mara_anchor": pa.array([False] * len(rows), pa.bool_()),
        }
    )


def write_shard(folder: Path, step: int, rank: int, rows: list[dict], row_group_size: int | None = None) -> Path:
    shards = Path(folder) / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    path = shards / f"step-{step:09d}-rank-{rank:05d}.parquet"
    temporary = path.with_suffix(".parquet.tmp")
    pq.write_table(shard_table(rows), temporary, row_group_size=row_group_size)
    temporary.replace(path)
    return path


def write_record(folder: Path, rows: list[dict], *, ranks: int = 1, deal: str = "group", row_group_size: int | None = None, **metadata) -> Path:
    """A record of ``rows`` (dicts with step, group_id, prompt, completion, reward, ref_logprob and
    optionally policy_logprob): one shard per step and rank. ``deal="group"`` gives each rank whole
    groups; ``deal="row"`` deals rows in turn, so every group spans the ranks' shards (as when a
    host spreads a group's generations over processes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "record.json").write_text(json.dumps({**METADATA, **metadata}))
    for step in sorted({r["step"] for r in rows}):
        of_step = [r for r in rows if r["step"] == step]
        for rank in range(ranks):
            if deal == "group":
                part = [r for r in of_step if r["group_id"] % ranks == rank]
            else:
                part = of_step[rank::ranks]
            if part:
                write_shard(folder, step, rank, part, row_group_size)
    return folder


def random_rows(seed: int, steps: int, groups: int, size: int, answers: int = 5, policy: bool = True) -> list[dict]:
    """Rows of a synthetic run: per step, ``groups`` prompts with ``size`` completions each drawn from
    ``answers`` answers (some written two ways), 0/1 or graded rewards, log-probs fixed per answer
    text for the reference and drifting with the step for the policy."""
    rng = np.random.default_rng(seed)
    ref = {}
    rows = []
    for step in range(steps):
        for g in range(groups):
            prompt = f"prompt {g % max(groups - 1, 1)}"  # two groups of a step may share a prompt
            weights = rng.dirichlet(np.full(answers, 0.5))
            for _ in range(size):
                a = int(rng.choice(answers, p=weights))
                text = f"answer: {a}" if rng.random() < 0.8 else f"so answer: {a}"
                key = (prompt, text)
                ref.setdefault(key, float(-rng.gamma(2.0, 1.5)))
                row = {
                    "step": step,
                    "group_id": g,
                    "prompt": prompt,
                    "completion": text,
                    "reward": float(a % 3 != 0) if g % 2 == 0 else float(round(rng.random() * 0 + (a % 3) / 2, 2)),
                    "ref_logprob": ref[key],
                }
                if policy:
                    row["policy_logprob"] = ref[key] + 0.1 * step * (a == 1)
                rows.append(row)
    return rows
