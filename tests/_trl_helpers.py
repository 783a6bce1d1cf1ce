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


_COMMON = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               head_dim=8, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=1)
_MOE = dict(num_experts_per_tok=2, moe_intermediate_size=16)
# family: (config class, model class, settings); the scales and caps put each logit transform far from identity
ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", dict(num_experts=4, **_MOE)),
    "mistral": ("MistralConfig", "MistralForCausalLM", {}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(final_logit_softcapping=0.5)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(final_logit_softcapping=0.5)),
    "cohere": ("CohereConfig", "CohereForCausalLM", dict(logit_scale=3.0)),
    "cohere2": ("Cohere2Config", "Cohere2ForCausalLM", dict(logit_scale=3.0)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}),
    "phi": ("PhiConfig", "PhiForCausalLM", {}),  # an LM head with a bias
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {}),
    "gpt_oss": ("GptOssConfig", "GptOssForCausalLM", dict(num_local_experts=4, num_experts_per_tok=2)),
    "glm4_moe": ("Glm4MoeConfig", "Glm4MoeForCausalLM", dict(n_routed_experts=4, first_k_dense_replace=1, n_group=1,
                                                             topk_group=1, **_MOE)),
    "nemotron_h": ("NemotronHConfig", "NemotronHForCausalLM", {}),
    "granite": ("GraniteConfig", "GraniteForCausalLM", dict(logits_scaling=0.25)),
    "falcon_h1": ("FalconH1Config", "FalconH1ForCausalLM", dict(lm_head_multiplier=2.5)),
}


def tiny_arch_model(arch: str, vocab_size: int, seed: int = 0):
    """A tiny random ``arch`` causal LM (fp32, eval mode) whose LM head gives logits of a few units."""
    import transformers

    config_name, model_name, settings = ARCHS[arch]
    config = getattr(transformers, config_name)(vocab_size=vocab_size, **{**_COMMON, **settings})
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval()
    with torch.no_grad():
        head = model.get_output_embeddings()
        head.weight.mul_(10.0)
        if head.bias is not None:
            head.bias.normal_(0.0, 1.0)
    return model


def save_tiny_arch_model(path, arch: str, dtype=None) -> str:
    """Save a tiny random ``arch`` model with the tiny tokenizer (eight stop ids, a chat template) to ``path``."""
    _, tokenizer = tiny_untrained_model(seed=0)
    model = tiny_arch_model(arch, len(tokenizer))
    if dtype is not None:
        model = model.to(dtype)
    model.generation_config.eos_token_id = STOP_IDS
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.chat_template = CHAT_TEMPLATE
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


TOOL_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<tool_response>",
                       "</tool_response>", "<think>", "</think>"]


def tool_calling_tokenizer():
    """A character-level tokenizer with Qwen3's tool-calling chat template (TRL's copy) and its special tokens."""
    import string

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from trl.chat_template_utils import qwen3_chat_template

    vocab = {t: i for i, t in enumerate(TOOL_SPECIAL_TOKENS + sorted(set(string.printable)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=TOOL_SPECIAL_TOKENS[1:])
    tokenizer.chat_template = qwen3_chat_template
    return tokenizer


def save_tiny_tool_model(path) -> str:
    """A tiny random Llama with :func:`tool_calling_tokenizer`, saved to ``path``."""
    tokenizer = tool_calling_tokenizer()
    model = tiny_arch_model("llama", len(tokenizer))
    model.config.max_position_embeddings = 4096  # character-level prompts with a tool schema run long
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def is_truncated(ids: list[int], pad_token_id: int = 0) -> bool:
    """TRL's test: a completion is truncated when it does not end in a stop token or padding."""
    return ids[-1] not in [*STOP_IDS, pad_token_id]


def tiny_trainer(trainer_cls, config_cls, model_dir, out_dir, **overrides):
    """A TRL trainer of ``model_dir`` on 32 "pick one of N" prompts with :func:`parity_reward`: one step
    of 8 completions, ``NUM_GENERATIONS`` a prompt, on the CPU; ``overrides`` replace its settings."""
    from datasets import Dataset

    from mara_rl.llm.tasks import random_choice_dataset_rows

    settings = dict(
        output_dir=str(out_dir), per_device_train_batch_size=8, num_generations=NUM_GENERATIONS,
        max_completion_length=4, beta=0.1, learning_rate=1e-3, max_steps=1, logging_steps=1, report_to="none",
        use_cpu=True, seed=0, save_strategy="no", disable_tqdm=True,
    )
    settings.update(overrides)
    return trainer_cls(model=model_dir, reward_funcs=parity_reward, args=config_cls(**settings),
                       train_dataset=Dataset.from_list(random_choice_dataset_rows(num_prompts=32)))


def parity_reward(completion_ids, **kwargs):
    """1 when the first completion token id is even: about half the samples are 'good'."""
    return [float(len(ids) > 0 and ids[0] % 2 == 0) for ids in completion_ids]


def length_reward(completion_ids, **kwargs):
    """The completion's length in tokens: graded, so a tau quantile splits groups."""
    return [float(len(ids)) for ids in completion_ids]


def always_one(completion_ids, **kwargs):
    """1 for every completion."""
    return [1.0] * len(completion_ids)


def always_zero(completion_ids, **kwargs):
    """0 for every completion."""
    return [0.0] * len(completion_ids)


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
