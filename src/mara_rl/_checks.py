"""Input validation shared by the core modules: every failure names the argument and the reason."""

from __future__ import annotations

import math

import numpy as np


def check_beta(beta: float, name: str = "beta") -> float:
    """Return ``beta`` as a float after checking it is a finite number > 0."""
    try:
        value = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {beta!r}") from None
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(
            f"{name} must be a finite number > 0 (the KL coefficient; with {name}=0 the "
            f"objective has no target distribution), got {beta!r}"
        )
    return value


def check_nonnegative(value: float, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out) or out < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return out


def as_vector(values, name: str) -> np.ndarray:
    """1-D float64 copy of ``values``; rejects other ranks and empty input."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D array of numbers") from None
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty")
    return array


def check_finite(array: np.ndarray, name: str, what: str = "value") -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must be finite; {int(bad.sum())} non-finite {what}(s), first at index "
            f"{first} ({array[first]})"
        )


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}")


def check_ref_logprobs(ref_logprobs: np.ndarray, name: str = "ref_logprobs") -> None:
    """Reference log-probabilities may be -inf (pi_ref = 0) but never NaN or +inf."""
    if np.isnan(ref_logprobs).any():
        first = int(np.flatnonzero(np.isnan(ref_logprobs))[0])
        raise ValueError(f"{name} must not contain NaN (first at index {first})")
    if np.isposinf(ref_logprobs).any():
        first = int(np.flatnonzero(np.isposinf(ref_logprobs))[0])
        raise ValueError(f"{name} must not contain +inf (first at index {first})")
