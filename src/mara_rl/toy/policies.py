"""Policies over ``K`` discrete outcomes, batched over ``R`` independent runs.

Both return ``log pi`` as an ``[R, K]`` tensor from ``log_probs()``; the training loop never needs
anything else.

- :class:`CategoricalPolicy`: expressive, one free logit per outcome (can represent any target).
- :class:`DiscretisedGaussianPolicy`: restrictive, ``pi(y) ∝ exp(-(y - mu)^2 / (2 sigma^2))`` with a
  learnable mean and log-scale (one mode only), as in paper Fig. 1.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class CategoricalPolicy(nn.Module):
    """``pi(y) = softmax(theta)_y`` with ``theta`` of shape ``[R, K]``, initialised to ``init_logprobs``."""

    def __init__(self, init_logprobs: np.ndarray):
        super().__init__()
        init = torch.as_tensor(np.atleast_2d(init_logprobs), dtype=torch.float64)
        if not torch.isfinite(init).all():
            raise ValueError("init_logprobs must be finite: a zero-probability outcome could never be sampled")
        self.logits = nn.Parameter(init.clone())

    def log_probs(self) -> torch.Tensor:
        return torch.log_softmax(self.logits, dim=-1)


class DiscretisedGaussianPolicy(nn.Module):
    """``pi(y) ∝ exp(-(y - mu)^2 / (2 sigma^2))`` over ``y = 0..K-1``, one ``(mu, sigma)`` per run (``[R]`` each).

    Parameters are ``mu / K`` and ``log sigma``, so one learning rate suits both: a step of 0.1
    moves the mean by a tenth of the outcome range and the scale by about 10%.
    """

    def __init__(self, num_outcomes: int, mean: np.ndarray, scale: np.ndarray):
        super().__init__()
        mean = torch.as_tensor(np.atleast_1d(mean), dtype=torch.float64)
        scale = torch.as_tensor(np.atleast_1d(scale), dtype=torch.float64)
        if mean.shape != scale.shape or (scale <= 0).any():
            raise ValueError("mean and scale must have one shape [R] and scale must be > 0")
        self.num_outcomes = int(num_outcomes)
        self.relative_mean = nn.Parameter(mean / self.num_outcomes)
        self.log_scale = nn.Parameter(scale.log())
        self.register_buffer("outcomes", torch.arange(self.num_outcomes, dtype=torch.float64))

    def log_probs(self) -> torch.Tensor:
        mean = self.relative_mean * self.num_outcomes
        z = (self.outcomes[None, :] - mean[:, None]) / self.log_scale.exp()[:, None]
        return torch.log_softmax(-0.5 * z**2, dim=-1)
