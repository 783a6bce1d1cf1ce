"""A tiny pre-trained reference model for the ``random_choice`` tasks, built locally (no downloads).

``load_tiny_reference()`` returns ``(model, tokenizer)``: a word-level tokenizer (``tokenizers``
WordLevel wrapped as ``PreTrainedTokenizerFast``) and a ``LlamaForCausalLM`` from a small
``LlamaConfig`` (about 0.1 M parameters), pre-trained for a few hundred steps on a synthetic corpus
of ``random_choice`` prompts whose answers follow a skewed distribution:

- 5% invalid answers (a word that is not a listed option);
- of the valid answers, 90% the first listed option, the rest shared evenly by the others.

For the paper's task ("1 or 2") the model therefore answers validly about 95% of the time with a
90/10 preference for "1" (normalised answer entropy about 0.47), like the base LLM in the paper.
The trained model is saved under ``<cache>/tiny-random-choice-v1`` and reused; the cache
directory is the ``cache_dir`` argument, else ``$MARA_RL_CACHE``, else ``~/.cache/mara-rl``.
``tiny_reference_path()`` gives that folder, which TRL trainers accept as a model id.
``tiny_untrained_model()`` gives the same architecture at random init, for fast mechanics tests.

The pieces are generic so other local tasks build their own reference the same way (the creative
task, ``mara_rl.llm.creative_task``): :func:`word_tokenizer` over a word list, :func:`pretrain` on any
``sample_line(rng) -> (prompt, answer)`` corpus, and :func:`build_cached_model`, which builds into a
temporary folder and renames it into place.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from mara_rl._cache import cache_root
from mara_rl.llm.tasks import ONE_OR_TWO, random_choice_prompt

MODEL_DIRNAME = "tiny-random-choice-v1"
DIGITS = tuple(str(d) for d in range(1, 10))
INVALID_WORDS = ("maybe", "none", "random", "yes", "no")
PRE_TRAIN_STEPS = 500
P_INVALID = 0.05
P_FIRST = 0.9
# A conversation renders as its messages' texts, so a one-message chat is the plain prompt the model
# was trained on: conversational datasets work and give the same completions as plain prompts.
CHAT_TEMPLATE = "{% for message in messages %}{% if not loop.first %} {% endif %}{{ message['content'] }}{% endfor %}"


def word_tokenizer(texts: Iterable[str]) -> Any:
    """Word-level tokenizer whose vocabulary is ``<pad>``, ``<eos>``, ``<unk>`` (ids 0, 1, 2) and then
    every whitespace/punctuation-split word of ``texts``, sorted; left padding for generation."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Whitespace().pre_tokenize_str
    words = {w for text in texts for w, _ in split(text)}
    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>"] + sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>", padding_side="left"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tokenizer() -> Any:
    """Word-level tokenizer covering every ``random_choice`` prompt with digit options 1-9."""
    return word_tokenizer([random_choice_prompt(DIGITS[:k]) for k in range(2, 10)] + list(DIGITS + INVALID_WORDS))


def tiny_config(vocab_size: int) -> Any:
    """The small Llama architecture: 2 layers, width 64, 4 heads, context 64."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=True,
    )


def tiny_untrained_model(seed: int = 0, tokenizer: Any | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` with random weights (default tokenizer: :func:`build_tokenizer`)."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(len(tokenizer)))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def sample_corpus_answer(options: tuple[str, ...], rng: random.Random) -> str:
    """One answer of the synthetic corpus: 5% invalid, else 90% the first option, rest shared."""
    if rng.random() < P_INVALID:
        return rng.choice([w for w in INVALID_WORDS + DIGITS if w not in options])
    if rng.random() < P_FIRST:
        return options[0]
    return rng.choice(options[1:])


def sample_random_choice_line(rng: random.Random) -> tuple[str, str]:
    """One ``(prompt, answer)`` line of the ``random_choice`` corpus."""
    options = sample_corpus_options(rng)
    return random_choice_prompt(options), sample_corpus_answer(options, rng)


def sample_corpus_options(rng: random.Random) -> tuple[str, ...]:
    """Half the corpus is the paper's "1, 2"; the rest are 2-5 distinct digits in random order."""
    if rng.random() < 0.5:
        return ONE_OR_TWO
    return tuple(rng.sample(DIGITS, rng.randint(2, 5)))


def answer_distribution(model: Any, tokenizer: Any, options: tuple[str, ...] = ONE_OR_TWO) -> dict[str, float]:
    """Exact probability of each option as a complete answer (option token then end of sequence)."""
    import torch

    prompt_ids = tokenizer(random_choice_prompt(options))["input_ids"]
    out: dict[str, float] = {}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for option in options:
            ids = torch.tensor([prompt_ids + tokenizer(option)["input_ids"] + [tokenizer.eos_token_id]]).to(model.device)
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            targets = ids[0, 1:]
            tail = logp[len(prompt_ids) - 1 :].gather(1, targets[len(prompt_ids) - 1 :, None]).sum()
            out[option] = float(tail.exp())
    model.train(was_training)
    return out


def pretrain(model: Any, tokenizer: Any, *, steps: int = PRE_TRAIN_STEPS, batch_size: int = 64, seed: int = 0,
             sample_line: Callable[[random.Random], tuple[str, str]] = sample_random_choice_line,
             learning_rate: float = 3e-3) -> None:
    """Maximum likelihood on freshly sampled corpus lines ``sample_line(rng) -> (prompt, answer)``
    (default: the ``random_choice`` corpus); loss only on answer tokens and end of sequence, learning
    rate decaying linearly to 0."""
    import torch
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    model.train()
    for _ in tqdm(range(steps), desc="pre-training the tiny reference model", leave=False):
        rows, labels = [], []
        for _ in range(batch_size):
            prompt_text, answer_text = sample_line(rng)
            prompt = tokenizer(prompt_text)["input_ids"]
            answer = tokenizer(answer_text)["input_ids"] + [tokenizer.eos_token_id]
            rows.append(prompt + answer)
            labels.append([-100] * len(prompt) + answer)
        width = max(len(r) for r in rows)
        # Right padding keeps positions aligned with generation, which starts right after the prompt.
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    model.eval()


def build_cached_model(dirname: str, build: Callable[[Path], dict[str, Any]],
                       cache_dir: str | os.PathLike[str] | None = None, *, rebuild: bool = False) -> Path:
    """``<cache>/<dirname>``, made on first use by ``build(folder) -> info`` and then reused.

    ``build`` writes its files into a temporary folder, which gets ``info.json`` (the returned dict)
    and is then renamed into place, so concurrent processes never see a half-written folder; a
    folder counts as built once its ``info.json`` exists.
    """
    target = cache_root(cache_dir) / dirname
    if rebuild and target.exists():
        shutil.rmtree(target)
    if (target / "info.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
    try:
        info = build(tmp)
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        tmp.rename(target)
    except OSError:
        if not (target / "info.json").exists():
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)  # failed, or another process finished first: its copy is identical in kind
    return target


def _add_chat_template(folder: Path) -> None:
    """Give a reference cached before the tokenizer had a chat template its template (weights unchanged).

    The tokenizer is saved into a temporary folder and its files are moved in one by one with
    ``os.replace``: a concurrent reader sees the old or the new file, never half of one.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.chat_template is not None:
        return
    tokenizer.chat_template = CHAT_TEMPLATE
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".chat-template-"))
    try:
        tokenizer.save_pretrained(tmp)
        for path in tmp.iterdir():
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_random_choice_reference(folder: Path) -> dict[str, Any]:
    model, tokenizer = tiny_untrained_model(seed=0)
    pretrain(model, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"answer_probabilities_one_or_two": answer_distribution(model, tokenizer), "pre_train_steps": PRE_TRAIN_STEPS}


def tiny_reference_path(cache_dir: str | os.PathLike[str] | None = None, *, rebuild: bool = False) -> Path:
    """Folder of the pre-trained tiny reference (built on first use, then reused).

    ``info.json`` there records the measured answer probabilities.
    """
    path = build_cached_model(MODEL_DIRNAME, _build_random_choice_reference, cache_dir, rebuild=rebuild)
    _add_chat_template(path)  # a reference cached before the tokenizer had one
    return path


def load_tiny_reference(cache_dir: str | os.PathLike[str] | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of the pre-trained tiny reference, building and caching it if needed."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    path = tiny_reference_path(cache_dir)
    return LlamaForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
