"""Open-ended prompts with many acceptable answers: the task of ``mara llm creative``.

The paper's non-verifiable experiment (Sec. 6.2) post-trains on open chat prompts scored by a
learned reward model and evaluates on other prompts (NoveltyBench). This module is its small,
self-written counterpart:

- **Families** of prompts (``Suggest a title for a song about rain .``, ``Describe the sea in a
  few words .``): each has a template with a subject slot, subjects, and a lexicon of nouns, *vivid*
  adjectives and *plain* adjectives from which answers (short phrases) are made. Six families form
  the training split (:data:`TRAIN_FAMILIES`), three others are held out (:data:`HELD_OUT_FAMILIES`),
  the out-of-distribution prompts.
- **Answers** follow templates such as ``A N`` ("golden river"), ``A A N``, ``the A N``, ``N of N``,
  ``A N of N``, and weaker ones: a bare noun, the prompt's subject copied, a word repeated, five
  words, an adjective pair from another family.
- **Criteria** (:func:`criteria_features`), which the preference data of the reward models are drawn
  from: on-topic share of words, vivid adjectives, plain adjectives, length near three words,
  repeated words, the subject copied from the prompt. :data:`TRAIN_CRITERIA` and
  :data:`EVAL_CRITERIA` weigh them differently (the two reward models disagree somewhat, as two
  learned reward models do).
- **The reference corpus** (:func:`answer_pool`, :func:`sample_corpus_line`): every prompt of either
  split gets a seeded pool of distinct answers, ranked at random and drawn with Zipf frequencies
  ``p(rank k) ~ k^-ZIPF_EXPONENT``, plus a few noise lines; a model pre-trained on it answers every
  prompt with many valid answers and prefers a few, whatever their quality.

Pure Python: nothing here imports torch or transformers.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence

FUNCTION_WORDS = ("the", "of")
ANSWER_TEMPLATES = ("A N", "A A N", "the A N", "N of N", "A N of N")
"""Well-formed answer shapes: ``A`` an adjective (vivid or plain), ``N`` a noun of the family."""
WEAK_TEMPLATES = ("N", "S N", "N N", "A A A N N", "X X")
"""Weaker shapes: a bare noun, the subject ``S`` copied, a repeated noun, five words, ``X`` words of another family."""
POOL_SIZE = 36
WEAK_SHARE = 0.3
ZIPF_EXPONENT = 1.1
NOISE_SHARE = 0.03
MAX_ANSWER_WORDS = 5


@dataclass(frozen=True)
class Family:
    """A prompt family: ``template`` holds ``{}`` for the subject; answers are made from the lexicon."""

    name: str
    template: str
    subjects: tuple[str, ...]
    nouns: tuple[str, ...]
    vivid: tuple[str, ...]
    plain: tuple[str, ...]

    def prompt(self, subject: str) -> str:
        return self.template.format(subject)

    @property
    def prompts(self) -> tuple[str, ...]:
        return tuple(self.prompt(s) for s in self.subjects)

    @property
    def lexicon(self) -> frozenset[str]:
        return frozenset(self.nouns + self.vivid + self.plain + FUNCTION_WORDS)


PLAIN = ("nice", "good", "big", "small")

TRAIN_FAMILIES: tuple[Family, ...] = (
    Family("colour", "Name a colour for a {} .", ("car", "dress", "wall", "kite", "boat"),
           ("blue", "red", "green", "amber", "teal", "violet", "grey", "gold"),
           ("deep", "dusty", "electric", "burnt"), PLAIN),
    Family("song", "Suggest a title for a song about {} .", ("rain", "summer", "home", "trains", "friends"),
           ("heart", "night", "road", "fire", "river", "dream", "light", "echo"),
           ("broken", "golden", "endless", "lonely"), PLAIN),
    Family("place", "Describe the {} in a few words .", ("sea", "forest", "city", "desert", "mountain"),
           ("waves", "trees", "lights", "sand", "wind", "stone", "mist", "silence"),
           ("ancient", "restless", "glowing", "hidden"), PLAIN),
    Family("dish", "Invent a name for a dish with {} .", ("rice", "lemon", "beans", "mushrooms", "cheese"),
           ("stew", "pie", "salad", "soup", "tart", "curry", "bowl", "roast"),
           ("smoky", "crispy", "zesty", "velvety"), PLAIN),
    Family("team", "Suggest a name for a {} team .", ("football", "chess", "rowing", "hockey", "debate"),
           ("tigers", "rockets", "knights", "storm", "falcons", "giants", "wolves", "comets"),
           ("mighty", "iron", "thunder", "royal"), PLAIN),
    Family("pet", "Suggest a name for a pet {} .", ("cat", "dog", "parrot", "hamster", "rabbit"),
           ("biscuit", "pepper", "ziggy", "mochi", "captain", "shadow", "noodle", "pickle"),
           ("fluffy", "sir", "lady", "tiny"), PLAIN),
)

HELD_OUT_FAMILIES: tuple[Family, ...] = (
    Family("shop", "Suggest a name for a {} shop .", ("book", "flower", "coffee", "bike"),
           ("corner", "nook", "garden", "house", "cup", "wheel", "page", "market"),
           ("cozy", "velvet", "secret", "humble"), PLAIN),
    Family("morning", "Describe a {} morning in a few words .", ("spring", "winter", "autumn", "rainy"),
           ("frost", "dew", "sun", "leaves", "birds", "fog", "breeze", "bells"),
           ("crisp", "misty", "gentle", "pale"), PLAIN),
    Family("vessel", "Suggest a name for a {} .", ("sailboat", "robot", "spaceship", "balloon"),
           ("star", "voyager", "arrow", "spirit", "dawn", "horizon", "drifter", "compass"),
           ("silver", "brave", "wandering", "lucky"), PLAIN),
)

FAMILIES: tuple[Family, ...] = TRAIN_FAMILIES + HELD_OUT_FAMILIES

TRAIN_CRITERIA: Mapping[str, float] = {"topic": 2.0, "vivid": 1.5, "plain": -0.5, "length": 1.0, "repeat": -1.5,
                                       "copy": -1.0}
"""Weights of the training reward model's criteria (its preference data are drawn from them)."""
EVAL_CRITERIA: Mapping[str, float] = {"topic": 2.0, "vivid": 0.75, "plain": -1.0, "length": 1.5, "repeat": -2.0,
                                      "copy": -0.5}
"""Weights of the evaluation reward model's criteria: the same kinds of quality, mixed otherwise."""


def family_of(prompt: str) -> tuple[Family, str]:
    """``(family, subject)`` of a prompt of :data:`FAMILIES`; ``ValueError`` for any other text."""
    for family in FAMILIES:
        for subject in family.subjects:
            if family.prompt(subject) == prompt.strip():
                return family, subject
    raise ValueError(f"not a prompt of the creative task: {prompt!r}")


@lru_cache(maxsize=1)
def all_words() -> tuple[str, ...]:
    """Every word a prompt or an answer of the task can hold (the tokenizer's vocabulary), sorted."""
    out = set(FUNCTION_WORDS) | set(PLAIN)
    for family in FAMILIES:
        out.update(w for p in family.prompts for w in p.split())
        out.update(family.nouns + family.vivid + family.subjects)
    return tuple(sorted(out))


def criteria_features(prompt: str, answer: str) -> dict[str, float]:
    """The criteria an answer is judged by, each in ``[0, 1]``.

    - ``topic``: share of the answer's words in the family's lexicon (0 for an empty answer);
    - ``vivid`` / ``plain``: vivid / plain adjectives of the family, counted up to 2, halved;
    - ``length``: ``max(0, 1 - |words - 3| / 2)`` (three words best, one or five worst);
    - ``repeat``: 1 when a word appears twice;
    - ``copy``: 1 when the answer repeats the prompt's subject.
    """
    family, subject = family_of(prompt)
    tokens = answer.split()
    if not tokens:
        return {"topic": 0.0, "vivid": 0.0, "plain": 0.0, "length": 0.0, "repeat": 0.0, "copy": 0.0}
    return {
        "topic": sum(w in family.lexicon for w in tokens) / len(tokens),
        "vivid": min(sum(w in family.vivid for w in tokens), 2) / 2,
        "plain": min(sum(w in family.plain for w in tokens), 2) / 2,
        "length": max(0.0, 1.0 - abs(len(tokens) - 3) / 2),
        "repeat": float(len(set(tokens)) < len(tokens)),
        "copy": float(subject in tokens),
    }


def criteria_score(prompt: str, answer: str, weights: Mapping[str, float]) -> float:
    """``sum_k weights[k] * feature_k(prompt, answer)``: the quality a preference pair is drawn from."""
    features = criteria_features(prompt, answer)
    unknown = set(weights) - set(features)
    if unknown:
        raise ValueError(f"unknown criteria {sorted(unknown)}; known: {sorted(features)}")
    return float(sum(w * features[k] for k, w in weights.items()))


def fill_template(template: str, family: Family, subject: str, rng: random.Random) -> str:
    """One answer of ``template``'s shape made of ``family``'s words (``X``: another family's)."""
    others = [f for f in FAMILIES if f.name != family.name]
    slot = {
        "A": lambda: rng.choice(family.vivid + family.plain),
        "N": lambda: rng.choice(family.nouns),
        "S": lambda: subject,
        "X": lambda: rng.choice(rng.choice(others).vivid),
        "the": lambda: "the",
        "of": lambda: "of",
    }
    if template == "N N":
        noun = rng.choice(family.nouns)
        return f"{noun} {noun}"
    return " ".join(slot[part]() for part in template.split())


def random_answer(prompt: str, rng: random.Random, weak_share: float = WEAK_SHARE) -> str:
    """A fresh answer to ``prompt``: a weak template with probability ``weak_share``, else a well-formed one."""
    family, subject = family_of(prompt)
    templates = WEAK_TEMPLATES if rng.random() < weak_share else ANSWER_TEMPLATES
    return fill_template(rng.choice(templates), family, subject, rng)


def noise_answer(rng: random.Random) -> str:
    """1 to 5 words drawn from the whole vocabulary: what an untrained policy says."""
    vocab = all_words()
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(1, MAX_ANSWER_WORDS)))


def _prompt_seed(prompt: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{prompt}".encode()).digest()[:8], "little")


def answer_pool(prompt: str, seed: int = 0, size: int = POOL_SIZE) -> list[str]:
    """The reference corpus's ``size`` distinct answers to ``prompt``, most frequent first (seeded)."""
    rng = random.Random(_prompt_seed(prompt, seed))
    pool: list[str] = []
    for _ in range(100 * size):
        answer = random_answer(prompt, rng)
        if answer not in pool:
            pool.append(answer)
        if len(pool) == size:
            return pool
    raise ValueError(f"could not make {size} distinct answers to {prompt!r}")


def zipf_weights(size: int, exponent: float = ZIPF_EXPONENT) -> list[float]:
    """``p(rank k) = k^-exponent / sum_j j^-exponent`` for ranks ``k = 1..size``."""
    raw = [k ** -exponent for k in range(1, size + 1)]
    total = sum(raw)
    return [r / total for r in raw]


@dataclass(frozen=True)
class Corpus:
    """The reference corpus: every prompt of every family, its answer pool and Zipf frequencies."""

    seed: int = 0
    pool_size: int = POOL_SIZE
    zipf_exponent: float = ZIPF_EXPONENT
    noise_share: float = NOISE_SHARE

    def pools(self) -> dict[str, list[str]]:
        return {p: answer_pool(p, self.seed, self.pool_size) for f in FAMILIES for p in f.prompts}

    def sampler(self):
        """``sample_line(rng) -> (prompt, answer)`` for :func:`mara_rl.llm.tiny.pretrain`."""
        pools = self.pools()
        prompts = list(pools)
        weights = zipf_weights(self.pool_size, self.zipf_exponent)

        def sample_line(rng: random.Random) -> tuple[str, str]:
            prompt = rng.choice(prompts)
            if rng.random() < self.noise_share:
                return prompt, noise_answer(rng)
            return prompt, rng.choices(pools[prompt], weights)[0]

        return sample_line


def prompts_of(families: Sequence[Family]) -> list[str]:
    """Every prompt of ``families``, in order."""
    return [p for f in families for p in f.prompts]
