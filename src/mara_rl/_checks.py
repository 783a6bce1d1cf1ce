"""Input validation shared by the core modules: every failure names the argument and the reason."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` on one line and at most ``limit`` characters, for error messages."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _real(value: Any) -> float | None:
    """``value`` as a float if it is one real number (Python, numpy or 0-d torch), else None.

    Bools, strings, bytes and sequences are not numbers here, even where ``float()`` would take
    them: ``True`` as 1.0 or ``"0.9"`` as 0.9 is a setting mistyped, not a threshold.
    """
    if isinstance(value, (bool, np.bool_, str, bytes, complex, np.complexfloating)):
        return None
    try:
        if np.ndim(value) != 0:
            return None
        return float(value)
    except OverflowError:  # an integer beyond float64's range
        return math.inf if value > 0 else -math.inf
    except (TypeError, ValueError):
        return None


def check_beta(beta: float, name: str = "beta") -> float:
    """Return ``beta`` as a float after checking it is a finite number > 0."""
    value = _real(beta)
    if value is None:
        raise ValueError(f"{name} must be a number, got {shown(beta)}")
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(
            f"{name} must be a finite number > 0 (the KL coefficient; with {name}=0 the "
            f"objective has no target distribution), got {shown(beta)}"
        )
    return value


def check_nonnegative(value: float, name: str) -> float:
    """Return ``value`` as a float after checking it is a finite number >= 0."""
    out = _real(value)
    if out is None or not math.isfinite(out) or out < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {shown(value)}")
    return out


def check_quantile(q: float, name: str = "tau_quantile") -> float:
    """Return ``q`` as a float after checking it is a number in ``[0, 1]`` (NaN is not)."""
    value = _real(q)
    if value is None or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {shown(q)}")
    return value


def check_choice(value: Any, choices: tuple[str, ...], name: str) -> str:
    """Return ``value`` after checking it is one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {shown(value)}")
    return value


@dataclass(frozen=True)
class NumericKind:
    """Where an array came from (numpy or torch, device, dtype), to give results back in kind.

    Results are floating: float64 and float32 inputs keep their dtype; float16 and bfloat16 come
    back as float32 (a half-precision value cannot hold a beta-sized reward gap); integer and bool
    inputs come back as float64 (numpy) or torch's default float dtype.
    """

    torch_device: Any = None
    dtype: Any = None

    @property
    def is_torch(self) -> bool:
        return self.torch_device is not None

    def round(self, value):
        """``value`` (a float or an array) rounded to the input's floating dtype and back to float64, so
        that comparisons with the input happen in one dtype; unchanged for integer inputs."""
        if self.is_torch:
            import torch

            if self.dtype.is_floating_point:
                rounded = torch.as_tensor(np.asarray(value, dtype=np.float64)).to(self.dtype).double().numpy()
                return float(rounded) if np.ndim(rounded) == 0 else rounded
            return value
        if np.issubdtype(self.dtype, np.floating):
            with np.errstate(over="ignore"):
                rounded = np.asarray(value, dtype=np.float64).astype(self.dtype).astype(np.float64)
            return float(rounded) if np.ndim(rounded) == 0 else rounded
        return value

    @property
    def result_dtype(self) -> np.dtype:
        """The numpy dtype of :meth:`give_back`'s result."""
        if self.is_torch:
            import torch

            if self.dtype == torch.float64 or (not self.dtype.is_floating_point and torch.get_default_dtype() == torch.float64):
                return np.dtype(np.float64)
            return np.dtype(np.float32)
        if self.dtype == np.float64 or not np.issubdtype(self.dtype, np.floating):
            return np.dtype(np.float64)
        return np.dtype(np.float32)

    def give_back(self, array: np.ndarray) -> Any:
        """float64 ``array`` in the input's kind and device, as :attr:`result_dtype`."""
        out = np.ascontiguousarray(array.astype(self.result_dtype, copy=False))
        if self.is_torch:
            import torch

            return torch.from_numpy(out).to(self.torch_device)
        return out

    def give_back_exact(self, array: np.ndarray) -> Any:
        """Integer or bool ``array`` (indices, masks) as numpy or as a torch tensor on the input's device."""
        if self.is_torch:
            import torch

            return torch.from_numpy(np.ascontiguousarray(array)).to(self.torch_device)
        return array


def _with_kind(values: Any, name: str) -> tuple[Any, NumericKind]:
    """``values`` as they are (a torch tensor, or a numpy array of real numbers) and their kind."""
    if type(values).__module__.startswith("torch"):
        if values.is_complex():
            raise ValueError(f"{name} must be real numbers, got a complex tensor")
        if values.is_meta:
            raise ValueError(f"{name} is a tensor on the 'meta' device, which holds no values; pass real data")
        return values, NumericKind(values.device, values.dtype)
    try:
        array = np.asarray(values)
        if array.dtype.kind not in "fiub":
            if array.dtype.kind != "O":  # complex, strings, dates, bytes
                raise TypeError
            array = array.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of real numbers") from None
    return array, NumericKind(None, array.dtype if array.dtype.kind == "f" else np.dtype(np.int64))


def as_float64(values: Any, name: str) -> tuple[np.ndarray, NumericKind]:
    """float64 numpy copy of numbers (numpy, torch on any device and dtype, lists) and their kind."""
    array, kind = _with_kind(values, name)
    if kind.is_torch:
        import torch

        return array.detach().to(device="cpu", dtype=torch.float64).numpy(), kind
    return array.astype(np.float64, copy=False), kind


def check_threshold(tau, name: str = "tau") -> float:
    """Return the threshold ``tau`` as a float: a finite real number (not a bool, string or sequence).

    An infinite tau would make every sample bad (``+inf``) or every sample good (``-inf``): MARA
    would then silently do nothing, or anchor every group on its most likely sample whatever its reward.
    """
    value = _real(tau)
    if value is None:
        raise ValueError(f"{name} must be a number, got {shown(tau)}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {'NaN' if math.isnan(value) else shown(tau)}")
    return value


def threshold_for(rewards, tau, name: str = "rewards") -> float:
    """``tau`` rounded to the rewards' own dtype (``rewards`` are not copied): ``R >= tau`` then means
    the same for a float32 reward equal to tau as it does for :func:`mara_rl.augment.mara_rewards`."""
    return _with_kind(rewards, name)[1].round(check_threshold(tau))


def as_vector(values, name: str) -> np.ndarray:
    """1-D float64 copy of ``values``; rejects other ranks and empty input."""
    array, _ = as_float64(values, name)
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
    if np.less(ref_logprobs, np.inf).all():  # one pass: False for NaN and +inf only
        return
    if np.isnan(ref_logprobs).any():
        first = int(np.flatnonzero(np.isnan(ref_logprobs))[0])
        raise ValueError(f"{name} must not contain NaN (first at index {first})")
    first = int(np.flatnonzero(np.isposinf(ref_logprobs))[0])
    raise ValueError(f"{name} must not contain +inf (first at index {first})")
