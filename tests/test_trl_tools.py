"""MARA and forward KL on GRPO's multi-turn rollouts: tool or environment output inside a completion.

TRL marks the tokens the model did not generate with ``tool_mask`` (tool results, a ``rollout_func``'s
``env_mask``); MARA's ``log pi_ref(y|x)`` and the forward-KL terms must sum over the model's own
tokens only. Here a ``rollout_func`` interleaves sampled tokens with fixed environment feedback
(tiny untrained Llama, CPU), and the advantages are checked against the core on reference log-probs
recomputed over the model's tokens by a plain forward pass.
"""

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from _trl_helpers import NUM_GENERATIONS, parity_reward, save_tiny_model, save_tiny_tool_model  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

from mara_rl.augment import mara_rewards  # noqa: E402
from mara_rl.integrations.forward_kl import token_forward_kl  # noqa: E402
from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer  # noqa: E402
from mara_rl.llm.tasks import random_choice_dataset_rows  # noqa: E402

BETA = 0.1
FEEDBACK = [17, 18, 19]  # environment output spliced between the model's two turns


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-stops"))


@pytest.fixture(scope="module")
def tool_model_dir(tmp_path_factory):
    return save_tiny_tool_model(tmp_path_factory.mktemp("tiny-tools"))


def two_turn_rollout(prompts, trainer):
    """Sample 2 tokens, append the environment's feedback (env_mask 0), sample 2 more."""
    tokenizer, model = trainer.processing_class, trainer.model
    prompt_ids, completion_ids, env_mask = [], [], []
    for prompt in prompts:
        ids = tokenizer(prompt)["input_ids"]
        with torch.no_grad():
            first = model.generate(torch.tensor([ids]), do_sample=True, max_new_tokens=2, min_new_tokens=2,
                                   eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
            context = ids + first + FEEDBACK
            second = model.generate(torch.tensor([context]), do_sample=True, max_new_tokens=2, min_new_tokens=2,
                                    eos_token_id=None, pad_token_id=0)[0, len(context):].tolist()
        prompt_ids.append(ids)
        completion_ids.append(first + FEEDBACK + second)
        env_mask.append([1] * len(first) + [0] * len(FEEDBACK) + [1] * len(second))
    return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None, "env_mask": env_mask}


class Recording(MaraGRPOTrainer):
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._ids = completion_ids_list
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)


def make(model_dir, tmp_path, kl, **extra):
    settings = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=NUM_GENERATIONS,
                    max_completion_length=8, beta=BETA, learning_rate=1e-3, max_steps=1, logging_steps=1,
                    report_to="none", use_cpu=True, seed=0, save_strategy="no", disable_tqdm=True, bf16=False,
                    mara=True, mara_tau=1.0, kl_direction=kl)
    args = MaraGRPOConfig(**{**settings, **extra})
    return Recording(model=model_dir, reward_funcs=parity_reward, args=args, rollout_func=two_turn_rollout,
                     train_dataset=Dataset.from_list(random_choice_dataset_rows(num_prompts=16)))


@torch.no_grad()
def model_token_logprobs(model, prompts, completions, masks):
    """``[B]`` sum of ``log p(y_t | x, y<t)`` over the positions ``masks`` keeps, by a plain forward pass each."""
    out = []
    for prompt, completion, keep in zip(prompts, completions, masks):
        ids = torch.tensor([prompt + completion])
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(prompt):, None])[:, 0]
        out.append((logps * torch.tensor(keep, dtype=torch.float32)).sum())
    return torch.stack(out)


@pytest.mark.parametrize("kl", ["reverse", "forward"])
def test_mara_anchors_on_the_models_own_tokens_of_multi_turn_rollouts(kl, model_dir, tmp_path):
    trainer = make(model_dir, tmp_path, kl)
    out = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    assert torch.equal(out["tool_mask"][:, 2:5], torch.zeros(8, 3, dtype=out["tool_mask"].dtype))
    ids = trainer._ids
    prompts = [p[m.bool()].tolist() for p, m in zip(out["prompt_ids"], out["prompt_mask"])]
    masks = [[1, 1, 0, 0, 0, 1, 1] for _ in ids]
    reference = LlamaForCausalLM.from_pretrained(model_dir).eval()
    ref = model_token_logprobs(reference, prompts, ids, masks)
    every_token = model_token_logprobs(reference, prompts, ids, [[1] * 7 for _ in ids])
    assert (ref - every_token).abs().min() > 0.1  # the feedback tokens would change log pi_ref: the test can tell
    rewards = torch.tensor(parity_reward(ids))
    groups = torch.arange(len(ids)) // NUM_GENERATIONS
    core = mara_rewards(rewards.double(), ref.double(), beta=BETA, tau=1.0, group_ids=groups, kl=kl)
    assert core.fraction_groups_augmented > 0
    augmented = core.rewards.float().view(-1, NUM_GENERATIONS)
    expected = (augmented - augmented.mean(dim=1, keepdim=True)).flatten()
    assert torch.allclose(out["advantages"], expected, atol=1e-4)
    if kl == "forward":
        assert torch.allclose(out["mara_ref_logps"], core.ref_logprobs.float(), atol=1e-4)
        check_token_kl_covers_the_models_tokens(trainer, out, reference)


def check_token_kl_covers_the_models_tokens(trainer, out, reference):
    """With the policy moved off the reference: the logged KL is the full-vocabulary KL at the model's tokens."""
    with torch.no_grad():
        torch.manual_seed(1)
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    trainer.model.eval()
    trainer._compute_loss(trainer.model, out)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    attention = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    t = out["completion_ids"].size(1)
    with torch.no_grad():
        policy = trainer.model(input_ids=ids, attention_mask=attention).logits[:, -t - 1 : -1].float()
        ref = reference(input_ids=ids, attention_mask=attention).logits[:, -t - 1 : -1].float()
    model_tokens = out["completion_mask"] * out["tool_mask"]
    expected = token_forward_kl(policy, ref, model_tokens)[1].sum(dim=1).mean().item()
    every_token = token_forward_kl(policy, ref, out["completion_mask"])[1].sum(dim=1).mean().item()
    assert abs(every_token - expected) > 1e-3 * expected  # the feedback positions carry KL too: the test can tell
    assert trainer._metrics["eval"]["kl"][-1] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("kl,estimator", [("reverse", "token"), ("forward", "token"), ("forward", "sequence")])
def test_multi_turn_rollouts_train_with_mara(kl, estimator, model_dir, tmp_path):
    trainer = make(model_dir, tmp_path, kl, forward_kl_estimator=estimator, max_steps=2)
    torch.set_num_threads(1)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) for h in logs)
    assert any(h["mara/frac_groups_augmented"] > 0 for h in logs)


class ObservingEnvironment:
    """An environment without tools: ``reset`` adds an observation to the prompt, ``get_reward`` scores it."""

    def reset(self, **kwargs):
        self.asked_for_options = "options" in kwargs["prompt"][-1]["content"]
        return " observe"

    def get_reward(self):
        return 0.75 if self.asked_for_options else 0.0


@pytest.mark.parametrize("kl", ["reverse", "forward"])
def test_an_environment_factory_without_tools_trains_with_mara_and_logs_its_raw_reward(kl, tool_model_dir,
                                                                                      tmp_path):
    rows = random_choice_dataset_rows(num_prompts=16)
    for row in rows:
        row["prompt"] = [{"role": "user", "content": row["prompt"]}]
    settings = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=NUM_GENERATIONS,
                    max_completion_length=4, beta=BETA, learning_rate=1e-3, max_steps=1, logging_steps=1,
                    report_to="none", use_cpu=True, seed=0, save_strategy="no", disable_tqdm=True, bf16=False,
                    mara=True, mara_tau_quantile=0.5, kl_direction=kl, chat_template_kwargs={"enable_thinking": False})
    trainer = MaraGRPOTrainer(model=tool_model_dir, reward_funcs=parity_reward, args=MaraGRPOConfig(**settings),
                              environment_factory=ObservingEnvironment, train_dataset=Dataset.from_list(rows))
    assert trainer.tools == [] and trainer.reward_func_names[-1] == "ObservingEnvironment"
    torch.set_num_threads(1)
    trainer.train()
    (log,) = [h for h in trainer.state.log_history if "loss" in h]
    assert math.isfinite(log["loss"]) and log["mara/frac_groups_augmented"] > 0
    assert log["rewards/ObservingEnvironment/mean"] == pytest.approx(0.75)  # raw
    assert log["reward"] == pytest.approx(log["rewards/parity_reward/mean"] + 0.75, abs=1e-6)


def multiply(a: int, b: int) -> int:
    """
    Multiplies two integers.

    Args:
        a: The first integer.
        b: The second integer.

    Returns:
        The product of the two integers.
    """
    return a * b


FIRST_TURNS = [  # per generation of a prompt: two valid tool calls, a failing one, a plain answer
    '<tool_call>\n{"name": "multiply", "arguments": {"a": 3, "b": 4}}\n</tool_call><|im_end|>',
    '<tool_call>\n{"name": "multiply", "arguments": {"a": 21, "b": 2}}\n</tool_call><|im_end|>',
    '<tool_call>\n{"name": "multiply", "arguments": {"a": 3, "c": 4}}\n</tool_call><|im_end|>',
    "No tool.<|im_end|>",
]


def scripted_generate(tokenizer):
    """``generate`` that answers the first turn from ``FIRST_TURNS`` and every later turn with ``Done!``."""
    calls = []

    def generate(input_ids, **kwargs):
        calls.append(input_ids.size(0))
        texts = [FIRST_TURNS[i % len(FIRST_TURNS)] for i in range(input_ids.size(0))] if len(calls) == 1 else [
            "Done!<|im_end|>"] * input_ids.size(0)
        rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(map(len, rows))
        padded = [r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows]
        return torch.cat([input_ids, torch.tensor(padded, device=input_ids.device)], dim=1)

    return generate


def used_the_tool(completions, **kwargs):
    """1 when a tool call returned a product, else 0."""
    return [float(any(m["role"] == "tool" and str(m["content"]).strip().isdigit() for m in c)) for c in completions]


@pytest.mark.parametrize("kl", ["reverse", "forward"])
def test_mara_on_tool_calling_rollouts_anchors_on_the_models_tokens(kl, tool_model_dir, tmp_path):
    from unittest.mock import patch

    path = tool_model_dir
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} times 7?"}]} for i in range(16)]
    settings = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=NUM_GENERATIONS,
                    max_completion_length=200, beta=BETA, learning_rate=1e-3, max_steps=1, logging_steps=1,
                    report_to="none", use_cpu=True, seed=0, save_strategy="no", disable_tqdm=True, bf16=False,
                    mara=True, mara_tau=1.0, kl_direction=kl, chat_template_kwargs={"enable_thinking": False})
    trainer = Recording(model=path, reward_funcs=used_the_tool, args=MaraGRPOConfig(**settings), tools=[multiply],
                        train_dataset=Dataset.from_list(rows))
    with patch.object(trainer.model, "generate", side_effect=scripted_generate(trainer.processing_class)):
        out = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    tool_mask = out["tool_mask"] * out["completion_mask"]
    hidden_by_tools = (out["completion_mask"] - tool_mask).sum(dim=1)
    called = torch.arange(8) % 4 < 3  # FIRST_TURNS: three tool calls (one failing) and a plain answer
    assert (hidden_by_tools[called] > 0).all() and (hidden_by_tools[~called] == 0).all()
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0] * 2)
    prompts = [p[m.bool()].tolist() for p, m in zip(out["prompt_ids"], out["prompt_mask"])]
    completions = [c[m.bool()].tolist() for c, m in zip(out["completion_ids"], out["completion_mask"])]
    masks = [m[: len(c)].tolist() for m, c in zip(tool_mask, completions)]
    reference = LlamaForCausalLM.from_pretrained(path).eval()
    ref = model_token_logprobs(reference, prompts, completions, masks)
    every_token = model_token_logprobs(reference, prompts, completions, [[1] * len(c) for c in completions])
    assert ((ref - every_token).abs() > 1.0).sum() == 6  # the tool output would change log pi_ref: the test can tell
    core = mara_rewards(rewards.double(), ref.double(), beta=BETA, tau=1.0,
                        group_ids=torch.arange(8) // NUM_GENERATIONS, kl=kl)
    assert core.fraction_groups_augmented == 1.0
    augmented = core.rewards.float().view(-1, NUM_GENERATIONS)
    expected = (augmented - augmented.mean(dim=1, keepdim=True)).flatten()
    assert torch.allclose(out["advantages"], expected, atol=1e-4)
    if kl == "forward":
        assert torch.allclose(out["mara_ref_logps"], core.ref_logprobs.float(), atol=1e-4)
