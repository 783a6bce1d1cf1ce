"""verl reward function for the "1 or 2" task: 1 for a valid answer (one of the listed options), else 0."""

from __future__ import annotations

from mara_rl.llm.tasks import parse_answer


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None) -> float:
    return float(parse_answer(solution_str, ground_truth.split(",")) is not None)
