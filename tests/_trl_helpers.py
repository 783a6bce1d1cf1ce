"""Shared pieces of the TRL tests: a tiny model that stops often, reward functions, plain log-probs.

The model is the untrained tiny Llama with eight stop tokens (``<eos>`` and the digits 3-9, as a
model with several end-of-turn ids declares them in its generation config) and a chat template, so
that with ``max_completion_length=3`` about a third of the completions are truncated.
"""

from __future__ import annotations

import torch

from mara_rl.llm.tiny import tiny_untrained_model

NUM_GENERATIONS = 4
STOP_IDS = [1, 7, 8, 9, 10, 11, 12, 13]  # <eos>, "3" ... "9"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}Answer :{% endif %}"
)


def save_tiny_model(path) -> str:
    """Save the tiny untrained model (eight stop ids, a chat template) and its tokenizer to ``path``."""
    model, tokenizer = tiny_untrained_model(seed=0)
    model.generation_config.eos_token_id = STOP_IDS
    tokenizer.chat_template = CHAT_TEMPLATE
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def is_truncated(ids: list[int], pad_token_id: int = 0) -> bool:
    """TRL's test: a completion is truncated when it does not end in a stop token or padding."""
    return ids[-1] not in [*STOP_IDS, pad_token_id]


def parity_reward(completion_ids, **kwargs):
    """1 when the first completion token id is even: about half the samples are 'good'."""
    return [float(ids[0] % 2 == 0) for ids in completion_ids]


def length_reward(completion_ids, **kwargs):
    """The completion's length in tokens: graded, so a tau quantile splits groups."""
    return [float(len(ids)) for ids in completion_ids]


def sometimes_none_reward(completion_ids, **kwargs):
    """By the first token id modulo 4: ``None`` (not scored) at 0, 0 at 3, else 1."""
    return [None if ids[0] % 4 == 0 else float(ids[0] % 4 != 3) for ids in completion_ids]


def reward_values(funcs, completion_ids) -> torch.Tensor:
    """``[B, len(funcs)]`` rewards with ``None`` as NaN, as TRL builds them."""
    columns = [[float("nan") if r is None else r for r in f(completion_ids=completion_ids)] for f in funcs]
    return torch.tensor(columns, dtype=torch.float32).T


@torch.no_grad()
def plain_sequence_logprobs(model, prompts: list[list[int]], completions: list[list[int]], temperature=1.0):
    """``[B]`` ``log p(completion | prompt)`` by one unpadded forward pass per sample (float32)."""
    out = []
    for prompt, completion in zip(prompts, completions):
        ids = torch.tensor([prompt + completion])
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float() / temperature
        out.append(torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(prompt) :, None]).sum())
    return torch.stack(out)
