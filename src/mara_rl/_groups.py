"""The one factorisation of group labels (prompts, problems, answer classes) the core uses.

``group_codes`` turns any labels into dense int64 codes; ``Segments`` sorts by those codes once so
that per-group reductions are single ``reduceat`` calls. ``mara_rewards``, every target function and
``mara diagnose`` group through these two; the target functions also take a ``Segments`` as their
``group_ids``, so a caller grouping once for several of them does not factorise again.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def group_codes(group_ids: Any, n: int, *, compact: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Dense int64 codes ``[n]`` and the label of each code ``[G]`` (sorted unique labels).

    ``None`` is one group labelled 0. Small non-negative integer labels are used as codes directly
    (no ``O(n log n)`` sort); with ``compact=False`` their unused values stay as empty groups.
    Labels may be ints, strings or floats (not NaN), numpy arrays, lists or torch tensors, or a
    :class:`Segments` of ``n`` values.
    """
    if group_ids is None:
        return np.zeros(n, dtype=np.int64), np.zeros(1, dtype=np.int64)
    if isinstance(group_ids, Segments):  # a grouping made once: its codes, back in the callers' order
        segments = Segments.of(group_ids, n)
        labels = np.arange(segments.num_groups) if segments.labels is None else segments.labels
        return segments.unsort(segments.index), labels
    if type(group_ids).__module__.startswith("torch"):
        group_ids = group_ids.detach().to("cpu").numpy()
    ids = np.asarray(group_ids)
    if ids.shape != (n,):
        raise ValueError(f"group_ids must have shape ({n},), one label per value, got {ids.shape}")
    if ids.dtype.kind == "f" and np.isnan(ids).any():
        raise ValueError("group_ids must not contain NaN")
    if n and ids.dtype.kind in "iub":
        lo, hi = int(ids.min()), int(ids.max())
        if lo >= 0 and hi < 2 * n + 1:
            codes = ids.astype(np.int64, copy=False)
            if not compact:
                return codes, np.arange(hi + 1)
            used = np.bincount(codes, minlength=hi + 1) > 0
            if used.all():
                return codes, np.arange(hi + 1)
            return (np.cumsum(used) - 1)[codes], np.flatnonzero(used)
    if ids.dtype.kind in "UO":
        hashed = _string_codes(ids)
        if hashed is not None:
            return hashed
    try:
        labels, codes = np.unique(ids, return_inverse=True)
    except TypeError:  # e.g. None among ints: labels that cannot be ordered
        raise ValueError("group_ids must be labels of one orderable kind (all ints, or all strings)") from None
    return codes.reshape(n).astype(np.int64, copy=False), labels


def _string_codes(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``group_codes`` of strings by hashing (pyarrow's dictionary encoding), then sorting only the distinct labels.

    ``np.unique`` sorts all ``n`` strings; this sorts the ``G`` distinct ones. ``None`` when pyarrow is
    missing or the labels are not all strings (the caller falls back to ``np.unique``).
    """
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:
        return None
    try:
        strings = pa.array(ids, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if strings.null_count:
        return None
    if isinstance(strings, pa.ChunkedArray):  # what pyarrow makes of a large numpy unicode array
        strings = strings.combine_chunks()
    encoded = pc.dictionary_encode(strings)
    order = pc.array_sort_indices(encoded.dictionary).to_numpy()  # UTF-8 byte order = code point order
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)]
    labels = encoded.dictionary.take(pa.array(order)).to_numpy(zero_copy_only=False)
    return codes, labels.astype(ids.dtype) if ids.dtype.kind == "U" else labels


class Segments:
    """Values sorted by group so that per-group reductions are single ``reduceat`` calls.

    ``index`` is the group code of each sorted position; groups are numbered in the order of the
    sorted unique labels (``labels``; ``None`` for a single group). Already-sorted codes skip the sort.
    """

    @classmethod
    def of(cls, group_ids: Any, n: int) -> "Segments":
        """``group_ids`` itself when it already is the Segments of ``n`` values (a caller grouping once
        for several target functions, as ``mara diagnose`` does), else ``Segments(group_ids, n)``."""
        if isinstance(group_ids, Segments):
            if group_ids.size != n:
                raise ValueError(f"group_ids are Segments of {group_ids.size} values, not of {n}")
            return group_ids
        return cls(group_ids, n)

    def __init__(self, group_ids: Any, n: int):
        self.size = n
        codes, labels = group_codes(group_ids, n)
        self.labels = None if group_ids is None else labels
        self.num_groups = labels.shape[0]
        if group_ids is None or n == 0 or bool((codes[1:] >= codes[:-1]).all()):
            self.order = None
            self.index = codes
        else:
            self.order = np.argsort(codes, kind="stable")
            self.index = codes[self.order]
        self.starts = np.flatnonzero(np.r_[True, self.index[1:] != self.index[:-1]]) if n else np.zeros(0, np.int64)

    def sort(self, values: np.ndarray) -> np.ndarray:
        return values if self.order is None else values[self.order]

    def unsort(self, values: np.ndarray) -> np.ndarray:
        if self.order is None:
            return values
        out = np.empty_like(values)
        out[self.order] = values
        return out

    def max(self, values: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(values, self.starts)

    def sum(self, values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, self.starts)

    def count(self, mask: np.ndarray) -> np.ndarray:
        return np.add.reduceat(mask.astype(np.int64), self.starts)

    def logsumexp(self, values: np.ndarray) -> np.ndarray:
        """Per-group ``log sum exp``; ``-inf`` for a group whose values are all ``-inf``."""
        peak = self.max(values)
        shift = np.where(np.isfinite(peak), peak, 0.0)
        with np.errstate(divide="ignore", over="ignore"):
            return shift + np.log(self.sum(np.exp(values - shift[self.index])))

    def softmax(self, values: np.ndarray, log: bool = False, peak: np.ndarray | None = None) -> np.ndarray:
        """Per-group ``exp(v) / sum exp(v)``, or with ``log`` its log, from one ``exp`` per value (the
        sum's own, shifted by the group's maximum: ``peak`` when the caller has it); NaN for a group
        whose values are all ``-inf``."""
        if peak is None:
            peak = self.max(values)
        with np.errstate(over="ignore"):  # a gap beyond the float range is -inf: weight 0, as it should be
            shifted = values - np.where(np.isfinite(peak), peak, 0.0)[self.index]
        weights = np.exp(shifted)
        total = self.sum(weights)
        if log:
            with np.errstate(divide="ignore", invalid="ignore"):
                return shifted - np.log(total)[self.index]
        with np.errstate(invalid="ignore"):
            return weights / total[self.index]
