"""``algorithm.mara`` settings of the ``mara_sync`` trainer mode, checked against the rest of verl's config.

Keys (all optional; ``+algorithm.mara.<key>=...`` on verl's Hydra command line, since verl's schema
has no ``mara`` section):

- ``enable`` (default true): apply MARA per prompt group; false keeps only the forward-KL option,
  and with reverse KL runs verl's stock sync trainer unchanged (any KL setting, or none);
- ``tau``: reward threshold of a good sample; or ``tau_quantile``: per-group reward quantile
  (default 0.9 when neither is given, the paper's choice for rewards of unknown scale);
- ``kl``: ``"reverse"`` (verl's own KL, unchanged) or ``"forward"`` (``KL(pi_ref || pi)`` in the actor loss);
- ``max_log_ratio`` (forward only, default 20): clip on the sequence weight's ``log(pi_ref/pi_old)``;
- ``reward_transform`` / ``reward_transform_value``: instead of MARA, a rival reward transform of
  :mod:`mara_rl.transforms` by name (``unlikeliness``, ``pkpo``, ``outcome_batch``, ``outcome_ucb``) and
  its knob (default: the method's recommended value), applied at MARA's place; it needs no KL term;
- ``answer_key``: a regex whose first group is a response's final answer, for the outcome transforms
  (default: the whole response text);
- ``record_dir``: a folder for the rollout record (:mod:`mara_rl.integrations.record`: one Parquet
  row per response with its reward, sequence ``log pi_ref``, sampler log-prob and MARA's reward and
  anchor), written every step, with MARA on or off.

MARA's beta is the KL coefficient verl actually applies: ``algorithm.kl_ctrl``'s current value with
``algorithm.use_kl_in_reward``, else ``actor_rollout_ref.actor.kl_loss_coef`` with ``use_kl_loss``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from mara_rl._checks import check_beta, check_nonnegative, shown
from mara_rl.integrations.forward_kl import MAX_LOG_RATIO
from mara_rl.integrations.settings import DEFAULT_TAU_QUANTILE, check_mara_options, check_transform
from mara_rl.transforms import get_transform

SECTION = "algorithm.mara"
KL_IN_REWARD = "reward"
KL_IN_LOSS = "loss"


def _get(node: Any, path: str, default: Any = None) -> Any:
    for name in path.split("."):
        if node is None:
            return default
        node = node.get(name, None) if isinstance(node, Mapping) or hasattr(node, "get") else getattr(node, name, None)
    return default if node is None else node


@dataclass(frozen=True)
class MaraSettings:
    """The validated ``algorithm.mara`` section plus where verl's KL term lives (``kl_source``)."""

    enable: bool = True
    tau: float | None = None
    tau_quantile: float | None = None
    kl: str = "reverse"
    max_log_ratio: float = MAX_LOG_RATIO
    kl_source: str = KL_IN_REWARD
    record_dir: str | None = None
    reward_transform: str | None = None
    reward_transform_value: float | None = None
    answer_key: str | None = None

    def __post_init__(self) -> None:
        _check_transform_choice(self.enable, self.reward_transform)

    @classmethod
    def from_config(cls, config: Any) -> MaraSettings:
        """Read and check ``config.algorithm.mara`` against verl's KL, estimator and distillation settings.

        Raises:
            ValueError: one line naming the key: an unknown key, a value
                :func:`mara_rl.integrations.settings.check_mara_options` rejects (``enable`` not a switch,
                ``tau`` not a finite number, a quantile outside ``[0, 1]``, an unknown ``kl``, both taus),
                a bad ``max_log_ratio`` (or one with reverse KL); unless ``enable=false``
                with reverse KL (stock verl, any KL setting): no KL term on (MARA is inert without
                one), KL both in the reward and in the loss (two coefficients, no single beta), forward
                KL without ``use_kl_loss`` or with in-reward KL or distillation, a KL coefficient that
                is not a finite number > 0 (MARA's beta); an unknown or advantage ``reward_transform``, one
                with ``enable=true``, a ``reward_transform_value`` that is not a finite number or that the
                transform rejects on groups of ``actor_rollout_ref.rollout.n``.
        """
        section = _get(config, SECTION, {})
        if not hasattr(section, "items"):
            raise ValueError(f"{SECTION} must be a section of settings (+{SECTION}.tau=..., ...), got {shown(section)}")
        raw = dict(section.items())
        known = {f.name for f in fields(cls)} - {"kl_source"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{SECTION}: unknown key(s) {unknown}; known: {sorted(known)}")
        transform, transform_value = _check_transform(raw, config)
        options = check_mara_options(
            enable=raw.get("enable", transform is None),
            tau=raw.get("tau"),
            tau_quantile=raw.get("tau_quantile"),
            kl=raw.get("kl", "reverse"),
            names={key: f"{SECTION}.{key}" for key in ("enable", "tau", "tau_quantile", "kl")},
        )
        enable, tau, tau_quantile, kl = options
        _check_transform_choice(enable, transform)
        chosen = {"reward_transform": transform, "reward_transform_value": transform_value,
                  "answer_key": _check_answer_key(raw.get("answer_key"))}
        if "max_log_ratio" in raw and kl != "forward":
            raise ValueError(f"{SECTION}.max_log_ratio clips the forward-KL weight: it needs {SECTION}.kl=forward")
        max_log_ratio = check_nonnegative(raw.get("max_log_ratio", MAX_LOG_RATIO), f"{SECTION}.max_log_ratio")
        if tau is None and tau_quantile is None:
            tau_quantile = DEFAULT_TAU_QUANTILE
        record_dir = raw.get("record_dir")
        if record_dir is not None and (not isinstance(record_dir, str) or not record_dir):
            raise ValueError(f"{SECTION}.record_dir must be a folder path, got {shown(record_dir)}")

        in_reward = bool(_get(config, "algorithm.use_kl_in_reward", False))
        in_loss = bool(_get(config, "actor_rollout_ref.actor.use_kl_loss", False))
        source = KL_IN_LOSS if in_loss else KL_IN_REWARD
        if not enable and kl == "reverse":  # the stock sync trainer, or a transform: every KL setting of verl's is valid
            return cls(enable=False, tau=tau, tau_quantile=tau_quantile, kl=kl, kl_source=source,
                       record_dir=record_dir, **chosen)
        if in_reward and in_loss:
            raise ValueError(
                "mara_sync needs one KL coefficient as MARA's beta: turn off either algorithm.use_kl_in_reward "
                "or actor_rollout_ref.actor.use_kl_loss"
            )
        if kl == "forward":
            if not in_loss:
                raise ValueError(
                    "algorithm.mara.kl=forward puts KL(pi_ref || pi) in the actor loss: set "
                    "actor_rollout_ref.actor.use_kl_loss=True (its kl_loss_coef is beta) and "
                    "algorithm.use_kl_in_reward=False"
                )
            if bool(_get(config, "distillation.enabled", False)):
                raise ValueError("algorithm.mara.kl=forward replaces the actor loss and cannot run with distillation")
        elif not (in_reward or in_loss):
            raise ValueError(
                "mara_sync needs a KL term: MARA reshapes the KL-regularised target and is inert without one. "
                "Set algorithm.use_kl_in_reward=True (beta = algorithm.kl_ctrl.kl_coef) or "
                "actor_rollout_ref.actor.use_kl_loss=True (beta = actor_rollout_ref.actor.kl_loss_coef)"
            )
        coef = "actor_rollout_ref.actor.kl_loss_coef" if source == KL_IN_LOSS else "algorithm.kl_ctrl.kl_coef"
        check_beta(_get(config, coef, 0.0), coef)  # MARA's beta
        if (
            enable
            and str(_get(config, "algorithm.adv_estimator", "")) == "grpo"
            and bool(_get(config, "algorithm.norm_adv_by_std_in_grpo", True))
        ):
            warnings.warn(
                "mara_sync with GRPO's std normalisation: GRPO divides reward gaps by each group's reward std s "
                "while the KL coefficient stays beta, so the target is that of beta * s and MARA's target is no "
                "longer uniform over good samples. Set algorithm.norm_adv_by_std_in_grpo=False.",
                UserWarning,
                stacklevel=2,
            )
        return cls(
            enable=enable,
            tau=tau,
            tau_quantile=tau_quantile,
            kl=kl,
            max_log_ratio=max_log_ratio,
            kl_source=source,
            record_dir=record_dir,
            **chosen,
        )


def _check_answer_key(answer_key: Any) -> str | None:
    from mara_rl.diagnose.classes import compile_answer_key

    if answer_key is not None and not isinstance(answer_key, str):
        raise ValueError(f"{SECTION}.answer_key must be a regular expression (a string), got {shown(answer_key)}")
    try:
        compile_answer_key(answer_key)
    except ValueError as err:
        raise ValueError(f"{SECTION}.answer_key: {err}") from None
    return answer_key


def _check_transform_choice(enable: bool, transform: str | None) -> None:
    """A transform excludes MARA, and this mode applies reward transforms only."""
    if transform is None:
        return
    if enable:
        raise ValueError(f"give one of {SECTION}.enable=true (MARA) and {SECTION}.reward_transform={transform}: "
                         "they are alternatives applied at the same place")
    if get_transform(transform).kind != "reward":
        hint = " (verl has it as algorithm.adv_estimator=grpo_passk)" if transform == "grpo_passk" else ""
        raise ValueError(f"{SECTION}.reward_transform={transform} is an advantage transform{hint}; this mode "
                         "applies reward transforms only: unlikeliness, pkpo, outcome_batch, outcome_ucb")


def _check_transform(raw: Mapping, config: Any) -> tuple[str | None, float | None]:
    """``reward_transform`` and its value (:func:`mara_rl.integrations.settings.check_transform`, on
    groups of ``actor_rollout_ref.rollout.n``)."""
    n = _get(config, "actor_rollout_ref.rollout.n", 2)
    if raw.get("reward_transform") is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"actor_rollout_ref.rollout.n must be an integer >= 1 (the group size), got {shown(n)}")
    transform, value = check_transform(
        raw.get("reward_transform"), raw.get("reward_transform_value"), group_sizes=(n,),
        names={"name": f"{SECTION}.reward_transform", "value": f"{SECTION}.reward_transform_value"},
    )
    return (None, None) if transform is None else (transform.name, value)
