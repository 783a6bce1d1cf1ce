"""Sampled KL-regularised policy gradient on a discrete bandit, top to bottom in one function.

Objective of one run (paper Sec. 3), with ``D`` the reverse or the forward KL:

    J(pi) = E_{y~pi}[R(y)] - beta * D(pi, pi_ref)

Each step samples ``N`` outcomes per run, turns each into a *shaped reward* ``s_i`` that already
contains the KL term, and follows the score-function gradient ``mean_i (s_i - b_i) grad log pi(y_i)``
with the leave-one-out baseline ``b_i = mean_{j != i} s_j`` (unbiased, as in RLOO).

Estimators of the KL terms (``s_i`` is treated as a constant: no gradient flows through it):

- reverse, ``KL(pi || pi_ref)``: ``s_i = R_i - beta (log pi(y_i) - log pi_ref(y_i))``. Since
  ``E_pi[grad log pi] = 0``, ``E[s grad log pi]`` is exactly ``grad J``: an unbiased estimate.
- forward, ``KL(pi_ref || pi) = const - sum_y pi_ref(y) log pi(y)``, whose gradient
  ``beta sum_y pi_ref(y) grad log pi(y) = E_pi[beta pi_ref(y)/pi(y) grad log pi(y)]`` is estimated by
  importance weighting: ``s_i = R_i + beta pi_ref(y_i) / pi(y_i)``. Unbiased wherever ``pi > 0``, and
  at the optimum ``R + beta pi_ref/pi = Lambda`` for every outcome (paper Sec. 3.2), so the
  estimator's variance vanishes there. It is per-sample, which is the form MARA's Algorithm 2 needs.

MARA (``mara=True``) passes each run's batch through :func:`mara_rl.augment.mara_rewards` before
shaping: reverse KL uses the augmented rewards (Alg. 1); forward KL uses the augmented rewards and
the anchor's reference log-prob in the importance weight (Alg. 2). The objective is otherwise the
same, so the fixed point is :func:`mara_rl.targets.mara_target`.

Runs are independent rows of one batched policy (``[R, K]`` log-probs); Adam's update is
element-wise, so batching changes nothing but the speed. Seeded and deterministic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mara_rl.augment import mara_rewards
from mara_rl.targets import kl_target, mara_target
from mara_rl.toy.problems import Bandit


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters shared by all runs of one :func:`train` call.

    ``lr`` decays linearly to ``lr * final_lr_fraction`` over ``steps``: a constant step size
    leaves Adam's sampling noise in the final policy. Adam's second-moment decay defaults to 0.99,
    not 0.999: the early 0/1 reward gaps are ~1/beta times larger than the late KL-sized
    gradients, and a 1000-step memory of them would freeze the late phase.
    """

    steps: int = 1000
    batch_size: int = 32
    lr: float = 0.1
    final_lr_fraction: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    seed: int = 0
    record_every: int = 50
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "record_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if int(self.batch_size) < 2:
            raise ValueError(f"batch_size must be >= 2 (the baseline leaves one sample out), got {self.batch_size!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0 <= self.final_lr_fraction <= 1:
            raise ValueError(f"final_lr_fraction must lie in [0, 1], got {self.final_lr_fraction!r}")


@dataclass(frozen=True)
class RunSpec:
    """One training run: a bandit, a KL coefficient and direction, and MARA on or off."""

    bandit: Bandit
    beta: float
    kl: Literal["reverse", "forward"] = "reverse"
    mara: bool = False

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta!r}")
        if self.kl not in ("reverse", "forward"):
            raise ValueError(f"kl must be 'reverse' or 'forward', got {self.kl!r}")

    def target(self) -> np.ndarray:
        """The closed-form optimum of this run's objective (``kl_target`` or ``mara_target``)."""
        b = self.bandit
        if self.mara:
            return mara_target(b.rewards, b.ref_logprobs, self.beta, b.tau, kl=self.kl)
        return kl_target(b.rewards, b.ref_logprobs, self.beta, kl=self.kl)

    def label(self) -> str:
        return f"{self.kl} KL, beta={self.beta:g}, {'MARA' if self.mara else 'vanilla'}"


@dataclass
class TrainResult:
    """Final policies ``probs`` ``[R, K]``, snapshots ``history`` ``[T, R, K]`` at ``history_steps`` ``[T]``."""

    probs: np.ndarray
    history: np.ndarray
    history_steps: np.ndarray
    seconds: float
    config: TrainConfig

    @property
    def steps_per_second(self) -> float:
        return self.config.steps / self.seconds


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``TV(p, q) = 0.5 sum_y |p(y) - q(y)|`` over the last axis."""
    return 0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(axis=-1)


def shaped_rewards(
    rewards: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, beta: torch.Tensor, forward: torch.Tensor
) -> torch.Tensor:
    """Per-sample reward whose score-function gradient ``E_pi[s grad log pi]`` is ``grad J`` (module docstring).

    reverse: ``s = R - beta (log pi - log pi_ref)``; forward: ``s = R + beta pi_ref / pi``.
    All arguments broadcast (``[R, N]`` samples, ``[R, 1]`` beta and bool ``forward``).
    """
    log_ratio = logprobs - ref_logprobs
    return torch.where(forward, rewards + beta * torch.exp(-log_ratio), rewards - beta * log_ratio)


def _finite(log_probs: torch.Tensor, updates: int, config: TrainConfig) -> torch.Tensor:
    """``log_probs``, or ``ValueError`` once a too large step has pushed the logits to inf or NaN."""
    if not torch.isfinite(log_probs).all():
        raise ValueError(f"training diverged at step {updates} of {config.steps}: the policy's logits are no longer "
                         f"finite; lower the learning rate (lr = {config.lr:g})")
    return log_probs


def train(
    policy: torch.nn.Module, runs: Sequence[RunSpec], config: TrainConfig = TrainConfig(), desc: str = "training"
) -> TrainResult:
    """Train ``len(runs)`` independent runs, row ``r`` of ``policy.log_probs()`` being run ``r``'s policy."""
    if not runs:
        raise ValueError("runs must not be empty")
    num_outcomes = {run.bandit.num_outcomes for run in runs}
    if len(num_outcomes) != 1:
        raise ValueError(f"all runs must share one outcome space, got sizes {sorted(num_outcomes)}")
    generator = torch.Generator().manual_seed(config.seed)
    rewards = torch.as_tensor(np.stack([run.bandit.rewards for run in runs]))  # [R, K]
    ref_logprobs = torch.as_tensor(np.stack([run.bandit.ref_logprobs for run in runs]))  # [R, K]
    beta = torch.tensor([[run.beta] for run in runs], dtype=torch.float64)  # [R, 1]
    forward = torch.tensor([[run.kl == "forward"] for run in runs])  # [R, 1]
    if tuple(policy.log_probs().shape) != tuple(rewards.shape):
        raise ValueError(f"policy gives log-probs of shape {tuple(policy.log_probs().shape)}, runs need {tuple(rewards.shape)}")
    n = config.batch_size

    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, betas=config.adam_betas, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 - (1.0 - config.final_lr_fraction) * step / config.steps
    )
    history, history_steps = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # [R, K] tensors are tiny: extra threads only add synchronisation
    start = time.perf_counter()
    for step in tqdm(range(config.steps), desc=desc, disable=not config.progress, leave=False):
        log_probs = _finite(policy.log_probs(), step, config)  # [R, K]
        samples = torch.multinomial(log_probs.detach().exp(), n, replacement=True, generator=generator)  # [R, N]
        sample_logprobs = log_probs.gather(1, samples)  # [R, N], carries the gradient
        sample_rewards = rewards.gather(1, samples)
        sample_ref = ref_logprobs.gather(1, samples)

        for r, run in enumerate(runs):
            if run.mara:
                augmented = mara_rewards(sample_rewards[r], sample_ref[r], beta=run.beta, tau=run.bandit.tau, kl=run.kl)
                sample_rewards[r] = augmented.rewards
                sample_ref[r] = augmented.ref_logprobs

        with torch.no_grad():
            shaped = shaped_rewards(sample_rewards, sample_logprobs, sample_ref, beta, forward)
            baseline = (shaped.sum(1, keepdim=True) - shaped) / (n - 1)
            advantage = shaped - baseline

        loss = -(advantage * sample_logprobs).mean(1).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()

        if (step + 1) % config.record_every == 0 or step == 0:
            history.append(policy.log_probs().detach().exp().numpy())
            history_steps.append(step + 1)
    seconds = time.perf_counter() - start
    torch.set_num_threads(threads)
    final = _finite(policy.log_probs(), config.steps, config).detach().exp().numpy()
    if history_steps[-1] != config.steps:
        history.append(final)
        history_steps.append(config.steps)
    return TrainResult(final, np.stack(history), np.asarray(history_steps), seconds, config)
