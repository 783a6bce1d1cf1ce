"""Didactic bandits (GX-Chen et al., 2025, Sec. 4 and Figs. 1-5): trained policies vs closed-form targets.

- :mod:`mara_rl.toy.problems`: reference distributions and reward families over ``K`` outcomes;
- :mod:`mara_rl.toy.policies`: categorical (expressive) and discretised-Gaussian (restrictive) policies;
- :mod:`mara_rl.toy.train`: the sampled KL-regularised policy-gradient loop, MARA on or off;
- :mod:`mara_rl.toy.experiments`: the paper's didactic figures as run folders.

``problems`` needs only numpy; the policies and the training loop need torch (extra ``[torch]``).
"""

from mara_rl.toy.problems import (
    Bandit,
    binary_interval_problem,
    binary_intervals,
    exponential_reference,
    explicit_problem,
    gaussian_bumps,
    mixture_logprobs,
    three_action_examples,
    two_bumps_problem,
    uniform_reference,
)

__all__ = [
    "Bandit",
    "binary_interval_problem",
    "binary_intervals",
    "exponential_reference",
    "explicit_problem",
    "gaussian_bumps",
    "mixture_logprobs",
    "three_action_examples",
    "two_bumps_problem",
    "uniform_reference",
]
