"""The ``random_choice`` family of verifiable prompts (the paper's "1 or 2" task, Sec. 5).

A prompt asks for one of K listed options, chosen uniformly at random, answered in a required
format: the completion must be exactly one listed option (surrounding whitespace ignored).
The reward is 1 for a valid answer and 0 otherwise, so every valid answer is equally good and
the closed-form KL-regularised target keeps the reference's ratio between them at every beta
(Prop. 4.1): only MARA can spread the mass evenly.

Pure Python: nothing here imports torch or transformers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from mara_rl.targets import entropy

ONE_OR_TWO: tuple[str, ...] = ("1", "2")
"""The paper's task: K = 2 with options 1 and 2."""


def check_options(options: Sequence[str]) -> tuple[str, ...]:
    """Validate a list of options: at least two, distinct, each a single non-empty word."""
    options = tuple(str(o) for o in options)
    if len(options) < 2:
        raise ValueError(f"options must hold at least 2 choices, got {options!r}")
    if len(set(options)) != len(options):
        raise ValueError(f"options must be distinct, got {options!r}")
    if any(not o or o.split() != [o] for o in options):
        raise ValueError(f"each option must be one word without spaces, got {options!r}")
    return options


def random_choice_prompt(options: Sequence[str] = ONE_OR_TWO) -> str:
    """The prompt text asking for one of ``options`` chosen uniformly at random.

    ``random_choice_prompt(("1", "2"))`` is
    ``"Answer with one of these 2 options, chosen uniformly at random: 1, 2. Answer:"``.
    """
    options = check_options(options)
    return (
        f"Answer with one of these {len(options)} options, chosen uniformly at random: "
        f"{', '.join(options)}. Answer:"
    )


def random_choice_dataset_rows(options: Sequence[str] = ONE_OR_TWO, num_prompts: int = 64) -> list[dict[str, Any]]:
    """Rows ``{"prompt": str, "options": list[str]}`` for a TRL dataset (``datasets.Dataset.from_list``).

    TRL passes the ``options`` column to :func:`random_choice_reward` as a keyword argument.
    """
    if num_prompts < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")
    options = check_options(options)
    prompt = random_choice_prompt(options)
    return [{"prompt": prompt, "options": list(options)} for _ in range(num_prompts)]


def parse_answer(completion: str, options: Sequence[str]) -> str | None:
    """The chosen option if ``completion`` is exactly one of ``options`` (whitespace stripped), else None."""
    answer = completion.strip()
    return answer if answer in options else None


def random_choice_reward(completions: Sequence[Any], options: Sequence[Sequence[str]], **kwargs: Any) -> list[float]:
    """TRL reward function: 1.0 for a valid answer, 0.0 otherwise; ``options[i]`` belongs to completion i.

    Completions are texts, or conversations (TRL's ``[{"role": "assistant", "content": text}]``):
    the last message's text is the answer.
    """
    if len(completions) != len(options):
        raise ValueError(f"got {len(completions)} completions but {len(options)} option lists")
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(parse_answer(c, o) is not None) for c, o in zip(texts, options)]


def answer_histogram(completions: Sequence[str], options: Sequence[str]) -> dict[str, int]:
    """Counts of each option among ``completions`` plus ``"invalid"`` for everything else."""
    options = check_options(options)
    counts = Counter(parse_answer(c, options) for c in completions)
    hist = {o: counts.get(o, 0) for o in options}
    hist["invalid"] = counts.get(None, 0)
    return hist


def normalized_answer_entropy(histogram: dict[str, int], options: Sequence[str]) -> float:
    """Entropy of the valid answers divided by ``log K``: 1 for uniform, 0 for one answer.

    ``H = -sum_k p_k log p_k / log K`` with ``p_k`` the share of option k among valid answers;
    NaN-free: 0.0 when there is no valid answer at all. The 90/10 reference gives about 0.469.
    """
    options = check_options(options)
    counts = [histogram.get(o, 0) for o in options]
    total = sum(counts)
    if total == 0:
        return 0.0
    return entropy([c / total for c in counts], normalized=True)


def random_choice_metrics(completions: Sequence[str], options: Sequence[str] = ONE_OR_TWO) -> dict[str, Any]:
    """Mean reward, normalised entropy of valid answers, and the answer histogram of a sample."""
    if len(completions) == 0:
        raise ValueError("completions must not be empty")
    hist = answer_histogram(completions, options)
    return {
        "reward": 1.0 - hist["invalid"] / len(completions),
        "entropy": normalized_answer_entropy(hist, options),
        "histogram": hist,
    }
