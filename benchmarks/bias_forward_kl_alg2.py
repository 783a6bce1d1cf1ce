"""Expected gradient of the token-level forward KL with MARA's Alg. 2 over sampled groups, exactly.

    python benchmarks/bias_forward_kl_alg2.py [--sizes 2 4 8 16]

One-token completions over a handful of outcomes: the intended gradient on the logits is
``pi - q`` (``q`` the anchored reference, ``docs/forward_kl.md``). For every group size ``n`` the
expectation over all groups of ``n`` samples from the policy is computed exactly (one group per
multiset of outcomes, weighted by its multinomial probability), running the real
``token_forward_kl_loss`` on each group, with

- the population's anchor (Alg. 2's anchor fixed at the best good outcome) and with the group's own
  anchor (Alg. 2 as the paper and the trainers run it, ``mara_rewards`` per group);
- the estimator's weights (leave-one-out normaliser, capped at ``max_mara_weight``) and, for
  comparison, the per-group self-normalised weights it replaced (``c_i = n (a_i - b_i)``, ``a`` and
  ``b`` the group softmaxes of ``log m - log pi`` and ``log pi_ref - log pi``; KL term unscaled).

Prints, per problem and ``n``: ``gap = max |E[grad] - (pi - q)|``, the best scalar ``k`` with
``E[grad] ~ k (pi - q)`` and ``dir = max |E[grad] - k (pi - q)|`` (the part no change of beta absorbs).
"""

from __future__ import annotations

import argparse
import itertools
import math

import torch

from mara_rl.augment import mara_rewards
from mara_rl.integrations.forward_kl import DEFAULT_MAX_MARA_WEIGHT, token_forward_kl_loss

PROBLEMS = {
    # name: (ref logits, policy logits, good outcomes)
    "4 outcomes, 2 good": ([2.0, 0.0, -1.0, 0.5], [0.3, -0.2, 0.1, 0.0], [False, True, True, False]),
    "4 outcomes, rare good": ([2.5, 0.2, -0.5, -3.0], [3.0, -1.0, -1.5, -2.0], [True, True, False, True]),
    "'1 or 2', pi = .97/.02/.01": ([math.log(0.85), math.log(0.09), math.log(0.06)],
                                   [math.log(0.97), math.log(0.02), math.log(0.01)], [True, True, False]),
    "'1 or 2', pi = .50/.45/.05": ([math.log(0.85), math.log(0.09), math.log(0.06)],
                                   [math.log(0.50), math.log(0.45), math.log(0.05)], [True, True, False]),
}


def self_normalised_weights(ref, mara_ref, sample, groups):
    """The weights the estimator replaced: c = n (a - b) per group, KL term unscaled."""
    c = torch.zeros_like(ref)
    for g in groups.unique():
        rows = groups == g
        a = torch.softmax(mara_ref[rows] - sample[rows], 0)
        b = torch.softmax(ref[rows] - sample[rows], 0)
        c[rows] = rows.sum() * (a - b)
    return c


def expected_gradient(ref_logits, pi_logits, good, n, *, anchor, estimator):
    k = ref_logits.numel()
    combos = list(itertools.combinations_with_replacement(range(k), n))
    log_pi = torch.log_softmax(pi_logits, -1)
    probs = torch.tensor([math.factorial(n) / math.prod(math.factorial(c.count(y)) for y in range(k))
                          for c in combos], dtype=torch.float64) * torch.stack([log_pi[list(c)].sum() for c in combos]).exp()
    ys = torch.tensor(combos).reshape(-1)
    batch = ys.numel()
    groups = torch.arange(len(combos)).repeat_interleave(n)
    log_ref = torch.log_softmax(ref_logits, -1)
    if anchor == "population":
        mara_ref = torch.where(good, log_ref[good].max(), log_ref)[ys]
    else:
        mara_ref = mara_rewards(good[ys].double(), log_ref[ys], beta=0.5, tau=1.0, group_ids=groups,
                                kl="forward").ref_logprobs
    policy = pi_logits.expand(batch, 1, k).clone().requires_grad_(True)
    logps = torch.log_softmax(policy, -1)[torch.arange(batch), 0, ys][:, None]
    if estimator == "this":
        out = token_forward_kl_loss(policy, ref_logits.expand(batch, 1, k), torch.ones(batch, 1), logps,
                                    ref_logps=log_ref[ys][:, None], mara_ref_logps=mara_ref, group_ids=groups)
        out.loss.backward()
    else:
        plain = token_forward_kl_loss(policy, ref_logits.expand(batch, 1, k), torch.ones(batch, 1), logps)
        c = self_normalised_weights(log_ref[ys], mara_ref, log_pi[ys], groups)
        (plain.loss + (c * (logps[:, 0].detach() - logps[:, 0])).sum() / batch).backward()
    per_group = (policy.grad[:, 0, :] * batch).view(len(combos), n, k).mean(dim=1)
    return (probs[:, None] * per_group).sum(dim=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"max_mara_weight = {DEFAULT_MAX_MARA_WEIGHT:g}")
    print("| problem | max abs(pi - q) | anchor | n | self-normalised: gap / k / dir | leave-one-out: gap / k / dir |")
    print("|---|---|---|---|---|---|")
    for name, (ref, pi, good) in PROBLEMS.items():
        ref, pi = torch.tensor(ref, dtype=torch.float64), torch.tensor(pi, dtype=torch.float64)
        good = torch.tensor(good)
        pi_ref = torch.softmax(ref, -1)
        m = torch.where(good, pi_ref[good].max(), pi_ref)
        target = torch.softmax(pi, -1) - m / m.sum()
        for anchor in ("population", "group"):
            for n in args.sizes:
                cells = []
                for estimator in ("self-normalised", "this"):
                    got = expected_gradient(ref, pi, good, n, anchor=anchor, estimator=estimator)
                    scale = float(got @ target / (target @ target))
                    cells.append(f"{(got - target).abs().max():.3f} / {scale:.2f} / {(got - scale * target).abs().max():.3f}")
                print(f"| {name} | {target.abs().max():.2f} | {anchor} | {n} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
