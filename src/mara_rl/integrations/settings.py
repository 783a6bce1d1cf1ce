"""MARA's settings as the host adapters read them: one check for TRL's config fields and verl's ``algorithm.mara``.

Both hosts give MARA the same four settings (on/off, ``tau`` or ``tau_quantile``, the KL direction),
under their own names: ``mara``, ``mara_tau``, ``mara_tau_quantile``, ``kl_direction`` in a TRL
config; ``algorithm.mara.enable``, ``.tau``, ``.tau_quantile``, ``.kl`` in verl's. They are checked
here, when the config is built, with the core's own checks (:mod:`mara_rl._checks`, the ones
:func:`mara_rl.augment.mara_rewards` runs), so a host accepts exactly the values the core accepts and
a mistake costs no model load. Each error is one line naming the setting as the user wrote it.

Switches take booleans or the words YAML and Hydra users write for them: a TRL config parsed by
``TrlParser`` already turns ``"no"`` into ``False``, but a Hydra override ``enable=no`` arrives as the
string ``"no"`` and ``enable=1`` as the integer 1. Any other value (``"maybe"``, ``2``, ``None``) is an
error rather than Python's truthiness, under which every non-empty string switches MARA on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from mara_rl._checks import check_choice, check_quantile, check_threshold, shown
from mara_rl.augment import KL_DIRECTIONS, KLDirection

__all__ = ["DEFAULT_TAU_QUANTILE", "KL_DIRECTIONS", "MaraOptions", "check_flag", "check_mara_options", "check_transform"]

DEFAULT_TAU_QUANTILE = 0.9  # the paper's choice for rewards of unknown scale, when neither tau is given
_FLAG_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def check_flag(value: Any, name: str) -> bool:
    """``value`` as a bool: a bool, the integers 0 / 1, or true/false, yes/no, on/off, 1/0 in any case."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _FLAG_WORDS:
        return _FLAG_WORDS[value.lower()]
    raise ValueError(f"{name} must be true or false (or yes/no, on/off, 1/0), got {shown(value)}")


class MaraOptions(NamedTuple):
    """The four MARA settings, checked: what the host passes to :func:`mara_rl.augment.mara_rewards`."""

    enable: bool
    tau: float | None  # a finite reward threshold, or None
    tau_quantile: float | None  # a per-group reward quantile in [0, 1], or None
    kl: KLDirection


def check_mara_options(
    *, enable: Any, tau: Any, tau_quantile: Any, kl: Any, names: Mapping[str, str]
) -> MaraOptions:
    """Check MARA's settings as the user gave them; ``names`` maps each keyword to the user's name for it.

    ``tau`` and ``tau_quantile`` may each be None (unset) but not both set; filling a default
    quantile is the host's (its rule differs: TRL fills it only with MARA on).

    Raises:
        ValueError: one line naming the setting (``names[keyword]``): ``enable`` not a switch,
            ``tau`` not a finite real number, ``tau_quantile`` not a number in ``[0, 1]``, ``kl`` not
            one of ``KL_DIRECTIONS``, or both taus given.
    """
    options = MaraOptions(
        enable=check_flag(enable, names["enable"]),
        tau=None if tau is None else check_threshold(tau, names["tau"]),
        tau_quantile=None if tau_quantile is None else check_quantile(tau_quantile, names["tau_quantile"]),
        kl=check_choice(kl, KL_DIRECTIONS, names["kl"]),
    )
    if options.tau is not None and options.tau_quantile is not None:
        raise ValueError(
            f"give at most one of {names['tau']} (a reward threshold) and {names['tau_quantile']} (a group quantile)"
        )
    return options


def check_transform(name: Any, value: Any, *, group_sizes: tuple[int, ...], names: Mapping[str, str]) -> tuple[Any, float | None]:
    """The registered transform ``name`` and its knob ``value`` (``None``: the recommended value), checked
    by running the transform once on a group of each of ``group_sizes`` samples, so that a knob the
    groups cannot take (``pkpo``'s ``k`` above the group size, a negative penalty) fails when the
    config is built, not at the first training step; a knob that pays a correct answer less than a
    wrong one when every answer differs (``unlikeliness``'s penalty above ``G / (G - 1)``) is warned
    about, once. Inversions that need repeated answers (an exploration bonus on a rare wrong answer)
    are the outcome transforms' design and are not. ``names`` maps ``name`` and ``value`` to the
    user's names for them. Returns ``(None, None)`` without a transform.

    Raises:
        ValueError: one line naming the setting: an unknown transform, a value without one, a value
            that is not a finite number, or one the transform rejects.
    """
    from mara_rl.transforms import get_transform

    if name is None:
        if value is not None:
            raise ValueError(f"{names['value']} is the knob of {names['name']}: name a transform")
        return None, None
    try:
        transform = get_transform(name)
    except ValueError as err:
        raise ValueError(f"{names['name']}: {err}") from None
    if value is not None:
        given = value
        number = isinstance(given, (int, float, np.integer, np.floating)) and not isinstance(given, (bool, np.bool_))
        try:
            value = float(given) if number else math.nan
        except OverflowError:  # an integer beyond float
            value = math.inf
        if not math.isfinite(value):
            raise ValueError(f"{names['value']} must be a finite number, got {shown(given)}")
    setting = (f"{names['value']}={value:g} ({transform.name}'s {transform.knob})" if value is not None else
               f"{names['name']}={transform.name} at its recommended {transform.knob} {transform.default:g}")
    inverted = {}  # group size -> (least paid correct answer, best paid wrong one)
    for n in sorted(set(group_sizes)):
        # Half the group correct, the correct half the most likely, every answer distinct: the worst
        # case for a likelihood penalty, with no exploration bonus to tell the answers apart.
        correct = np.arange(n) >= n // 2
        inputs = {"policy_logprobs": np.arange(n, dtype=np.float64), "outcomes": [str(i) for i in range(n)],
                  "outcome_counts": np.ones(n)}
        try:
            shaped = np.asarray(transform(correct.astype(np.float64), value=value, **{key: inputs[key] for key in transform.needs}))
        except ValueError as err:
            raise ValueError(f"{setting} cannot run on groups of {n}: {err}") from None
        low, high = shaped[correct].min(initial=np.inf), shaped[~correct].max(initial=-np.inf)
        if transform.kind == "reward" and low < high - 1e-9 * max(1.0, abs(high)):  # ties are no inversion
            inverted[n] = (low, high)
    if inverted:
        n, (low, high) = next(iter(inverted.items()))
        sizes = ", ".join(map(str, inverted))
        warnings.warn(f"{setting} pays a correct answer less than a wrong one on groups of {sizes} (at {n} samples the "
                      f"most likely correct answer gets {low:.3g}, a wrong one {high:.3g}); the method's recommended "
                      f"{transform.knob} is {transform.default:g}", UserWarning, stacklevel=3)
    return transform, value
