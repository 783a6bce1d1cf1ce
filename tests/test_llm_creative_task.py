"""The creative task's prompt families, splits, criteria and reference corpus (pure Python)."""

import random
from collections import Counter

import pytest

from mara_rl.llm import creative_task as task

SONG = "Suggest a title for a song about rain ."


def test_training_and_held_out_families_are_disjoint():
    train_names = {f.name for f in task.TRAIN_FAMILIES}
    held_names = {f.name for f in task.HELD_OUT_FAMILIES}
    assert train_names and held_names and not train_names & held_names
    train_prompts = set(task.prompts_of(task.TRAIN_FAMILIES))
    held_prompts = set(task.prompts_of(task.HELD_OUT_FAMILIES))
    assert not train_prompts & held_prompts
    assert len(train_prompts) == sum(len(f.subjects) for f in task.TRAIN_FAMILIES)
    for family in task.FAMILIES:  # every prompt maps back to its own family and subject
        for subject in family.subjects:
            assert task.family_of(family.prompt(subject)) == (family, subject)
    train_templates = {f.template for f in task.TRAIN_FAMILIES}
    assert not train_templates & {f.template for f in task.HELD_OUT_FAMILIES}
    with pytest.raises(ValueError, match="not a prompt"):
        task.family_of("Name a colour for a spaceship .")


def test_criteria_on_hand_made_answers():
    best = task.criteria_features(SONG, "golden broken heart")
    assert best == {"topic": 1.0, "vivid": 1.0, "plain": 0.0, "length": 1.0, "repeat": 0.0, "copy": 0.0}
    weak = task.criteria_features(SONG, "rain rain")
    assert weak == {"topic": 0.0, "vivid": 0.0, "plain": 0.0, "length": 0.5, "repeat": 1.0, "copy": 1.0}
    mixed = task.criteria_features(SONG, "nice crispy heart of night")  # "crispy" belongs to the dish family
    assert mixed["topic"] == pytest.approx(4 / 5) and mixed["plain"] == 0.5 and mixed["length"] == 0.0
    assert task.criteria_features(SONG, "")["topic"] == 0.0
    weights = {"topic": 2.0, "copy": -1.0}
    assert task.criteria_score(SONG, "rain heart", weights) == pytest.approx(2.0 * 0.5 - 1.0)
    with pytest.raises(ValueError, match="unknown criteria"):
        task.criteria_score(SONG, "heart", {"rhyme": 1.0})


def test_answer_pools_are_seeded_distinct_and_drawn_with_zipf_frequencies():
    pool = task.answer_pool(SONG, seed=0)
    assert pool == task.answer_pool(SONG, seed=0) != task.answer_pool(SONG, seed=1)
    assert len(pool) == len(set(pool)) == task.POOL_SIZE
    assert all(1 <= len(a.split()) <= task.MAX_ANSWER_WORDS for a in pool)
    weights = task.zipf_weights(4, exponent=1.0)
    assert weights == pytest.approx([1 / k / (1 + 1 / 2 + 1 / 3 + 1 / 4) for k in range(1, 5)])
    corpus = task.Corpus(noise_share=0.0)
    sample = corpus.sampler()
    rng = random.Random(0)
    lines = [sample(rng) for _ in range(30_000)]
    song = Counter(a for p, a in lines if p == SONG)
    total = sum(song.values())
    expected = task.zipf_weights(task.POOL_SIZE)
    for rank in range(3):
        assert song[pool[rank]] / total == pytest.approx(expected[rank], abs=0.04)
    assert set(song) <= set(pool)


def test_every_prompt_and_answer_is_in_the_tokenizer():
    pytest.importorskip("transformers")
    from mara_rl.llm.creative import creative_tokenizer

    tok = creative_tokenizer()
    rng = random.Random(0)
    texts = list(task.prompts_of(task.FAMILIES))
    texts += [a for p in task.prompts_of(task.FAMILIES) for a in task.answer_pool(p)]
    texts += [task.noise_answer(rng) for _ in range(200)]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text
