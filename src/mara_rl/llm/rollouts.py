"""Rollouts from a Hugging Face causal LM: N sampled completions per prompt, rewards, and sequence
log-probabilities under the reference (and the sampling policy), the input of ``mara diagnose``.

A row is ``{"prompt", "completion", "reward", "ref_logprob"[, "policy_logprob"]}``, where
``ref_logprob = log pi_ref(y|x) = sum_t log pi_ref(y_t | x, y_<t)`` over the completion's tokens,
including the end-of-sequence token when the model stopped by itself (a completion cut off at
``max_new_tokens`` has no such token). Log-probs are those of the model itself (temperature 1),
whatever temperature was used to sample.

``reward_fn`` gets what TRL's trainers pass, ``reward_fn(prompts=[...], completions=[...],
completion_ids=[...], **columns) -> list[float]``, so a trainer's reward function can be reused:
plain-text prompts give text completions; conversational prompts (lists of ``{"role", "content"}``
messages, rendered with the tokenizer's chat template) give the conversations as prompts and
``[{"role": "assistant", "content": text}]`` as completions. ``columns`` are extra per-prompt
fields (e.g. a task's ``options``), repeated for each completion. A row's ``prompt`` is the text, or
the conversation as canonical JSON (as the rollout record writes it).

torch and transformers are imported inside the functions (extra ``[llm]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

RewardFn = Callable[..., Sequence[float]]


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def sequence_logprobs(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    batch_size: int = 64,
) -> list[float]:
    """``log p(completion | prompt)`` under ``model``: the sum of the completion tokens' log-probs.

    Args:
        model: a causal LM returning ``logits`` ``[batch, length, vocab]``.
        prompt_ids, completion_ids: token ids per sequence (same length lists).
        pad_token_id: id used for right padding (masked out).
        batch_size: sequences per forward pass.

    Returns:
        one float per sequence (0.0 for an empty completion).
    """
    import torch

    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"got {len(prompt_ids)} prompts but {len(completion_ids)} completions")
    _check_positive_int(batch_size, "batch_size")
    device = next(model.parameters()).device
    out: list[float] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(prompt_ids), batch_size):
            prompts = prompt_ids[start : start + batch_size]
            completions = completion_ids[start : start + batch_size]
            rows = [list(p) + list(c) for p, c in zip(prompts, completions)]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            scored = torch.zeros((len(rows), width), dtype=torch.bool)
            for i, (row, prompt) in enumerate(zip(rows, prompts)):
                ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
                mask[i, : len(row)] = 1
                scored[i, len(prompt) : len(row)] = True
            ids, mask, scored = ids.to(device), mask.to(device), scored.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            # Position t predicts token t + 1.
            token_logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None])[..., 0]
            totals = (token_logprobs * scored[:, 1:]).sum(dim=1)
            out.extend(float(v) for v in totals.cpu())
    return out


def _prompt_texts(tokenizer: Any, prompts: Sequence[Any]) -> tuple[list[str], bool]:
    """The texts to generate from, and whether the prompts are conversations (all or none)."""
    conversational = [not isinstance(p, str) for p in prompts]
    if not any(conversational):
        return list(prompts), False
    if not all(conversational):
        raise ValueError("prompts must be all texts or all conversations (lists of messages), not a mix")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("conversational prompts need a tokenizer with a chat template (tokenizer.chat_template)")
    texts = [tokenizer.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True) for p in prompts]
    return texts, True


def sample_rollouts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str] | Sequence[list[dict[str, Any]]],
    reward_fn: RewardFn,
    *,
    num_samples: int = 16,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    ref_model: Any | None = None,
    reward_columns: Mapping[str, Sequence[Any]] | None = None,
    batch_size: int = 16,
) -> list[dict[str, Any]]:
    """Sample ``num_samples`` completions per prompt from ``model``, score them and add log-probs.

    Args:
        model: the sampling model (a ``transformers`` causal LM). It is also the reference unless
            ``ref_model`` is given, in which case the rows carry ``policy_logprob`` (``model``) and
            ``ref_logprob`` (``ref_model``).
        tokenizer: its tokenizer (needs ``pad_token_id`` and ``eos_token_id``).
        prompts: prompt texts (used as they are), or conversations (rendered with the chat template).
        reward_fn: ``reward_fn(prompts=..., completions=..., completion_ids=..., **columns) -> list[float]``,
            given what TRL gives a reward function (see the module docstring).
        num_samples: completions per prompt.
        max_new_tokens, temperature, top_p: sampling settings.
        seed: seeds torch before sampling (same seed, same rollouts on the same machine).
        ref_model: the reference model, when it differs from ``model``.
        reward_columns: extra per-prompt fields passed to ``reward_fn``, one entry per prompt.
        batch_size: prompts per ``generate`` call.

    Returns:
        one dict per completion, grouped by prompt in the order given.
    """
    import torch

    from mara_rl.integrations.record import canonical_text

    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of prompt texts or conversations")
    _check_positive_int(num_samples, "num_samples")
    _check_positive_int(max_new_tokens, "max_new_tokens")
    _check_positive_int(batch_size, "batch_size")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    columns = dict(reward_columns or {})
    for name, values in columns.items():
        if len(values) != len(prompts):
            raise ValueError(f"reward_columns[{name!r}] has {len(values)} entries for {len(prompts)} prompts")
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if pad_id is None or eos_id is None:
        raise ValueError("the tokenizer needs a pad_token_id and an eos_token_id")
    texts, conversational = _prompt_texts(tokenizer, prompts)

    torch.manual_seed(seed)
    device = next(model.parameters()).device
    model.eval()
    prompt_ids: list[list[int]] = []
    completion_ids: list[list[int]] = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            batch = texts[start : start + batch_size]
            encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in batch]
            width = max(len(e) for e in encoded)
            # Left padding: every prompt ends where generation starts.
            ids = torch.tensor([[pad_id] * (width - len(e)) + e for e in encoded], device=device)
            mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
            generated = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                num_return_sequences=num_samples,
                pad_token_id=pad_id,
                eos_token_id=eos_id,
            )[:, width:].tolist()
            for i, tokens in enumerate(generated):
                if eos_id in tokens:
                    tokens = tokens[: tokens.index(eos_id) + 1]
                prompt_ids.append(encoded[i // num_samples])
                completion_ids.append(tokens)

    completions = [tokenizer.decode(c, skip_special_tokens=True) for c in completion_ids]
    repeated_prompts = [p for p in prompts for _ in range(num_samples)]
    repeated_columns = {name: [v for v in values for _ in range(num_samples)] for name, values in columns.items()}
    scored = [[{"role": "assistant", "content": c}] for c in completions] if conversational else completions
    rewards = [float(r) for r in reward_fn(prompts=repeated_prompts, completions=scored,
                                           completion_ids=completion_ids, **repeated_columns)]
    if len(rewards) != len(completions):
        raise ValueError(f"reward_fn returned {len(rewards)} rewards for {len(completions)} completions")
    ref_logprobs = sequence_logprobs(ref_model or model, prompt_ids, completion_ids, pad_token_id=pad_id)
    rows = [
        {"prompt": canonical_text(p), "completion": c, "reward": r, "ref_logprob": lp}
        for p, c, r, lp in zip(repeated_prompts, completions, rewards, ref_logprobs)
    ]
    if ref_model is not None:
        for row, lp in zip(rows, sequence_logprobs(model, prompt_ids, completion_ids, pad_token_id=pad_id)):
            row["policy_logprob"] = lp
    return rows


def write_rollouts(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rollout rows as JSON Lines (``.jsonl``), Parquet (``.parquet``) or CSV (``.csv``)."""
    import pandas as pd

    path = Path(path)
    frame = pd.DataFrame(list(rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        raise ValueError(f"unknown rollouts format {suffix!r}; use .jsonl, .parquet or .csv")
    return path
