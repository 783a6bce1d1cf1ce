"""Forward-KL estimators of mara_rl.integrations.forward_kl: exact values, gradients and expectations by enumeration."""

import itertools
import math

import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mara_rl.augment import mara_rewards  # noqa: E402
from mara_rl.integrations.forward_kl import (  # noqa: E402
    LMHead,
    mara_forward_weights,
    prefix_importance_weights,
    sequence_forward_kl,
    token_forward_kl,
    token_forward_kl_loss,
)

torch.set_num_threads(1)


def direct_kl(policy_logits, ref_logits, temperature=1.0):
    """[B, T] KL(softmax(ref/T) || softmax(policy/T)) by autograd-friendly torch ops."""
    log_p = torch.log_softmax(policy_logits / temperature, dim=-1)
    log_q = torch.log_softmax(ref_logits / temperature, dim=-1)
    return (log_q.exp() * (log_q - log_p)).sum(dim=-1)


@pytest.mark.parametrize("chunk_rows", [1, 3, 1024])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_kl_value_and_gradient_match_direct_formula(chunk_rows, temperature):
    gen = torch.Generator().manual_seed(0)
    policy = torch.randn(3, 4, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(3, 4, 7, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    weights = torch.rand(3, 4, generator=gen, dtype=torch.float64) * mask
    loss, kl = token_forward_kl(policy, ref, mask, weights=weights, temperature=temperature, chunk_rows=chunk_rows)
    expected_kl = direct_kl(policy, ref, temperature) * mask
    torch.testing.assert_close(kl.double(), expected_kl.detach(), rtol=1e-5, atol=1e-6)
    loss.backward()
    ours = policy.grad.clone()
    policy.grad = None
    (weights * direct_kl(policy, ref, temperature)).sum().backward()
    torch.testing.assert_close(ours, policy.grad, rtol=1e-5, atol=1e-7)
    assert torch.all(ours[mask == 0] == 0)


def test_token_kl_from_hidden_states_matches_logits_path_and_grads_the_head():
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 5, 6, generator=gen, requires_grad=True)
    head = torch.randn(11, 6, generator=gen, requires_grad=True)
    ref_hidden, ref_head = torch.randn(2, 5, 6, generator=gen), torch.randn(11, 6, generator=gen)
    mask = torch.ones(2, 5)
    loss, kl = token_forward_kl(hidden, ref_hidden, mask, policy_head=head, ref_head=ref_head, chunk_rows=4)
    loss.backward()
    got = (hidden.grad.clone(), head.grad.clone())
    hidden.grad = head.grad = None
    direct = direct_kl(hidden @ head.t(), ref_hidden @ ref_head.t())
    direct.sum().backward()
    torch.testing.assert_close(kl, direct.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[0], hidden.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[1], head.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bias,scale,softcap", [(True, 1.0, None), (False, 3.0, None), (False, 1.0, 0.7),
                                                (True, 0.25, 1.5)])
def test_token_kl_through_an_affine_soft_capped_head_grads_hidden_weight_and_bias(bias, scale, softcap):
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(11, generator=gen, dtype=torch.float64, requires_grad=True) if bias else None
    ref_hidden = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64)
    ref_weight, ref_b = torch.randn(11, 6, generator=gen, dtype=torch.float64), torch.randn(11, generator=gen,
                                                                                              dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])

    def model_logits(h, w, b_):  # as the model computes them: linear, scale, cap
        z = (h @ w.t() + (0.0 if b_ is None else b_)) * scale
        return z if softcap is None else softcap * torch.tanh(z / softcap)

    loss, kl = token_forward_kl(hidden, ref_hidden, mask, policy_head=LMHead(weight, b, scale, softcap),
                                ref_head=LMHead(ref_weight, ref_b, scale, softcap), temperature=0.8, chunk_rows=3)
    loss.backward()
    params = [hidden, weight] + ([b] if bias else [])
    got = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    direct = direct_kl(model_logits(hidden, weight, b), model_logits(ref_hidden, ref_weight, ref_b), 0.8) * mask
    direct.sum().backward()
    torch.testing.assert_close(kl.double(), direct.detach(), rtol=1e-5, atol=1e-6)
    for ours, exact in zip(got, (p.grad for p in params)):
        torch.testing.assert_close(ours, exact, rtol=1e-4, atol=1e-6)
    plain = direct_kl(hidden @ weight.t(), ref_hidden @ ref_weight.t(), 0.8) * mask
    assert (plain - direct).abs().max() > 1e-2  # the head's transform matters in every case


def test_token_kl_keeps_pulling_when_the_policy_left_the_reference_support():
    # The reference never says token 0; the policy says nothing else. Sampled tokens are all 0.
    ref = torch.tensor([[[-1e4, 0.0, 0.0]]])
    policy = torch.tensor([[[30.0, 0.0, 0.0]]], requires_grad=True)
    loss, kl = token_forward_kl(policy, ref, torch.ones(1, 1))
    loss.backward()
    torch.testing.assert_close(policy.grad[0, 0], torch.tensor([1.0, -0.5, -0.5]), atol=1e-6, rtol=0)
    assert kl.item() == pytest.approx(30.0 - math.log(2.0), abs=1e-4)
    # The sequence estimator's weight rho = pi_ref(y)/pi(y) is 0 on every such sample: no pull.
    logps = torch.log_softmax(policy, dim=-1)[0, 0, 0].reshape(1)
    surrogate, _ = sequence_forward_kl(logps, torch.log_softmax(ref, dim=-1)[0, 0, 0].reshape(1))
    (grad,) = torch.autograd.grad(surrogate.sum(), policy)
    assert grad.abs().max() == 0


def test_token_kl_rejects_bad_shapes_and_temperature():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="mask"):
        token_forward_kl(x, x, torch.ones(2, 4))
    with pytest.raises(ValueError, match="vocabulary"):
        token_forward_kl(x, torch.zeros(2, 3, 5), torch.ones(2, 3))
    with pytest.raises(ValueError, match="temperature"):
        token_forward_kl(x, x, torch.ones(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="policy_head"):
        token_forward_kl(x, x, torch.ones(2, 3), policy_head=torch.zeros(5, 4))


# A tabular autoregressive model over V tokens and 2 positions: logits at t=0 [V], at t=1 [V, V] (by y0).
V = 3


def tabular(seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(V, generator=gen, dtype=torch.float64), torch.randn(V, V, generator=gen, dtype=torch.float64)


def sequences_and_logits(model):
    """Every length-2 sequence, its [2, V] logits per position and its per-token log-probs."""
    first, second = model
    for y0, y1 in itertools.product(range(V), repeat=2):
        logits = torch.stack([first, second[y0]])
        logps = torch.log_softmax(logits, dim=-1)[[0, 1], [y0, y1]]
        yield (y0, y1), logits, logps


def test_token_kl_expectation_by_enumeration_with_and_without_prefix_weights():
    policy, ref, old = tabular(0), tabular(1), tabular(2)
    ref_by_seq = {y: logits for y, logits, _ in sequences_and_logits(ref)}
    # On-policy: E_{y~pi}[sum_t KL_t] = KL_0 + sum_{y0} pi(y0) KL_1(y0).
    on_policy, off_policy = 0.0, 0.0
    old_by_seq = {y: logps for y, _, logps in sequences_and_logits(old)}
    for y, logits, logps in sequences_and_logits(policy):
        _, kl = token_forward_kl(logits[None], ref_by_seq[y][None], torch.ones(1, 2))
        on_policy += logps.sum().exp() * kl.sum()
        # Sampled by pi_old instead, weighted by the exact prefix ratio.
        weights = prefix_importance_weights(logps[None], old_by_seq[y][None], torch.ones(1, 2), max_weight=None)
        off_policy += old_by_seq[y].sum().exp() * (weights * kl).sum()
    log_p0 = torch.log_softmax(policy[0], -1)
    expected = direct_kl(policy[0], ref[0]) + (log_p0.exp() * direct_kl(policy[1], ref[1])).sum()
    assert float(on_policy) == pytest.approx(float(expected), rel=1e-6)
    assert float(off_policy) == pytest.approx(float(expected), rel=1e-6)


def test_prefix_weights_are_one_on_policy_and_truncated():
    logps = torch.tensor([[-1.0, -2.0, -0.5]])
    assert torch.equal(prefix_importance_weights(logps, logps, torch.ones(1, 3)), torch.ones(1, 3))
    weights = prefix_importance_weights(logps, logps - 1.0, torch.ones(1, 3), max_weight=2.0)
    torch.testing.assert_close(weights, torch.tensor([[1.0, 2.0, 2.0]]))


def test_without_prefix_correction_weights_are_one_and_alg2_still_uses_the_sampler():
    torch.manual_seed(0)
    policy, ref = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    mask = torch.ones(4, 3)
    logps = torch.log_softmax(policy, -1)[..., 0]
    old = logps - 0.5 * torch.rand(4, 3)
    ref_logps = torch.log_softmax(ref, -1)[..., 0]
    mara = (ref_logps * mask).sum(1).clone()
    mara[:2] = mara[0]  # two "good" samples share the anchor's reference log-prob
    kwargs = dict(ref_logps=ref_logps, mara_ref_logps=mara, group_ids=torch.zeros(4), old_logps=old)
    corrected = token_forward_kl_loss(policy, ref, mask, logps, **kwargs)
    plain = token_forward_kl_loss(policy, ref, mask, logps, prefix_correction=False, **kwargs)
    assert torch.equal(plain.importance_weights, mask)
    assert (corrected.importance_weights != 1).any()
    torch.testing.assert_close(plain.mara_coefficients, corrected.mara_coefficients)
    on_policy_sampler = token_forward_kl_loss(policy, ref, mask, logps, **{**kwargs, "old_logps": None})
    assert not torch.allclose(on_policy_sampler.mara_coefficients, plain.mara_coefficients)


# Alg. 2 on sampled groups. One-token completions over K outcomes: the intended gradient on the
# logits is pi - q (q = m / M the anchored reference), and the estimator's expectation over groups
# of n samples from pi_old is kappa_n (pi - q) with the population's anchor (docs/forward_kl.md).
PROBLEMS = {
    # ref logits, policy logits, sampler logits (None: on-policy), good outcomes
    "anchor-not-the-reference-mode": ([2.0, 0.0, -1.0, 0.5], [0.3, -0.2, 0.1, 0.0], None, [False, True, True, False]),
    "off-policy-three-good": ([0.5, -1.5, 1.0, -0.5], [1.5, -1.0, 0.0, 0.2], [0.0, 0.5, 0.3, -0.4], [True, True, False, True]),
    "rare-good-answer": ([2.5, 0.2, -0.5, -3.0], [3.0, -1.0, -1.5, -2.0], None, [True, True, False, True]),
}


def problem(name):
    ref, pi, old, good = PROBLEMS[name]
    ref, pi = torch.tensor(ref, dtype=torch.float64), torch.tensor(pi, dtype=torch.float64)
    old = pi if old is None else torch.tensor(old, dtype=torch.float64)
    return ref, pi, old, torch.tensor(good)


def anchored_reference(ref_logits, good):
    """(m, q, d-function pieces) for the population's anchor: m = pi_ref(z*) on good outcomes."""
    pi_ref = torch.softmax(ref_logits, -1)
    m = torch.where(good, pi_ref[good].max(), pi_ref)
    return pi_ref, m, m / m.sum()


def groups_gradient(ref_logits, pi_logits, old_logits, good, tuples, *, anchor, max_weight=None):
    """[G, K] gradient on the logits of each group's mean loss (the real token_forward_kl_loss, one call)."""
    num, n = tuples.shape
    k = ref_logits.numel()
    ys = tuples.reshape(-1)
    batch = ys.numel()
    groups = torch.arange(num).repeat_interleave(n)
    log_ref = torch.log_softmax(ref_logits, -1)
    if anchor == "population":
        mara_ref = torch.where(good, log_ref[good].max(), log_ref)[ys]
    else:  # Alg. 2 as the trainers run it: the anchor is the best good sample of each group
        mara_ref = mara_rewards(good[ys].double(), log_ref[ys], beta=0.5, tau=1.0, group_ids=groups,
                                kl="forward").ref_logprobs
    policy = pi_logits.expand(batch, 1, k).clone().requires_grad_(True)
    logps = torch.log_softmax(policy, -1)[torch.arange(batch), 0, ys][:, None]
    on_policy = old_logits is pi_logits
    out = token_forward_kl_loss(
        policy, ref_logits.expand(batch, 1, k), torch.ones(batch, 1), logps, ref_logps=log_ref[ys][:, None],
        mara_ref_logps=mara_ref, group_ids=groups,
        old_logps=None if on_policy else torch.log_softmax(old_logits, -1)[ys][:, None],
        max_importance_weight=None, max_mara_weight=max_weight,
    )
    out.loss.backward()
    return (policy.grad[:, 0, :] * batch).view(num, n, k).mean(dim=1)


def all_groups(k, n):
    return torch.tensor(list(itertools.product(range(k), repeat=n)))


def group_probabilities(old_logits, tuples):
    return torch.log_softmax(old_logits, -1)[tuples].sum(dim=1).exp()


def kappa(m, pi_ref, old, n):
    """M E[1 / (1 + mean of n - 1 iid d)], d = (m - pi_ref) / pi_old, by exact multinomial enumeration."""
    d = ((m - pi_ref) / old).tolist()
    p = old.tolist()
    expected = 0.0
    for combo in itertools.combinations_with_replacement(range(len(d)), n - 1):
        counts = [combo.count(y) for y in range(len(d))]
        ways = math.factorial(n - 1) / math.prod(math.factorial(c) for c in counts)
        prob = ways * math.prod(p[y] ** c for y, c in enumerate(counts))
        expected += prob / (1.0 + sum(d[y] for y in combo) / (n - 1))
    return float(m.sum()) * expected


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("n", [2, 3, 4])
def test_alg2_expected_gradient_is_exactly_along_the_anchored_forward_kl_gradient(name, n):
    # Every group of n samples, weighted by its probability under the sampler.
    ref, pi_logits, old_logits, good = problem(name)
    tuples = all_groups(ref.numel(), n)
    grads = groups_gradient(ref, pi_logits, old_logits, good, tuples, anchor="population")
    expected = (group_probabilities(old_logits, tuples)[:, None] * grads).sum(dim=0)
    pi_ref, m, q = anchored_reference(ref, good)
    pi, old = torch.softmax(pi_logits, -1), torch.softmax(old_logits, -1)
    scale = kappa(m, pi_ref, old, n)
    assert 1.0 <= scale <= float(m.sum())
    torch.testing.assert_close(expected, scale * (pi - q), rtol=0, atol=1e-6)  # weights are fp32


@pytest.mark.parametrize("n", [8, 16])
def test_alg2_expected_gradient_by_monte_carlo(n):
    ref, pi_logits, old_logits, good = problem("off-policy-three-good")
    gen = torch.Generator().manual_seed(n)
    tuples = torch.multinomial(torch.softmax(old_logits, -1), 3000 * n, replacement=True, generator=gen).view(-1, n)
    grads = groups_gradient(ref, pi_logits, old_logits, good, tuples, anchor="population")
    pi_ref, m, q = anchored_reference(ref, good)
    target = kappa(m, pi_ref, torch.softmax(old_logits, -1), n) * (torch.softmax(pi_logits, -1) - q)
    stderr = grads.std(dim=0) / math.sqrt(grads.shape[0])
    assert ((grads.mean(dim=0) - target).abs() <= 4.5 * stderr).all()
    assert 4.5 * stderr.max() < 0.05 * target.abs().max()  # the check has power


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("n", [2, 3, 4])
def test_alg2_with_the_groups_own_anchor_pulls_with_the_anchor_of_the_other_samples(name, n):
    # Alg. 2 as the paper defines it: the anchor is the group's best good sample. Sample i's pull
    # -c_i grad log pi(y_i) is non-zero only below the anchor, where the anchor is that of the other
    # n - 1 samples, so E[pull] = E_others[Gamma(a_others) / N(others)],
    # Gamma(a) = sum_{y good} (a - pi_ref(y))_+ (e_y - pi), and the KL term is scaled by E[s].
    ref, pi_logits, old_logits, good = problem(name)
    tuples = all_groups(ref.numel(), n)
    grads = groups_gradient(ref, pi_logits, old_logits, good, tuples, anchor="group")
    got = (group_probabilities(old_logits, tuples)[:, None] * grads).sum(dim=0)

    pi_ref, pi, old = (torch.softmax(x, -1).tolist() for x in (ref, pi_logits, old_logits))
    k, good_list = len(pi), good.tolist()

    def d_values(group, anchor):
        return [(anchor - pi_ref[y]) / old[y] if good_list[y] and anchor is not None and anchor > pi_ref[y] else 0.0
                for y in group]

    def anchor_of(group):
        values = [pi_ref[y] for y in group if good_list[y]]
        return max(values) if values else None

    def prob(group):
        return math.prod(old[y] for y in group)

    mean_scale = 0.0
    for group in itertools.product(range(k), repeat=n):
        d = d_values(group, anchor_of(group))
        mean_scale += prob(group) * sum(1.0 / (1.0 + (sum(d) - d[i]) / (n - 1)) for i in range(n)) / n
    pull = [0.0] * k
    for others in itertools.product(range(k), repeat=n - 1):
        anchor = anchor_of(others)
        if anchor is None:
            continue
        norm = 1.0 + sum(d_values(others, anchor)) / (n - 1)
        for y in range(k):
            if good_list[y] and anchor > pi_ref[y]:
                weight = prob(others) * (anchor - pi_ref[y]) / norm
                pull = [p - weight * ((v == y) - pi[v]) for v, p in enumerate(pull)]
    expected = torch.tensor([mean_scale * (pi[v] - pi_ref[v]) + pull[v] for v in range(k)], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_alg2_cap_binds_only_on_outlying_weights_and_bounds_them():
    ref, pi_logits, old_logits, good = problem("rare-good-answer")
    tuples = all_groups(ref.numel(), 3)
    exact = groups_gradient(ref, pi_logits, old_logits, good, tuples, anchor="population")
    loose = groups_gradient(ref, pi_logits, old_logits, good, tuples, anchor="population", max_weight=1e6)
    torch.testing.assert_close(loose, exact, rtol=0, atol=1e-12)
    log_ref = torch.log_softmax(ref, -1)
    ys = tuples.reshape(-1)
    c, s = mara_forward_weights(log_ref[ys], torch.where(good, log_ref[good].max(), log_ref)[ys],
                                torch.log_softmax(old_logits, -1)[ys], torch.arange(len(tuples)).repeat_interleave(3),
                                max_weight=2.0)
    assert c.max() == pytest.approx(2.0) and (c <= 2.0).all() and ((s > 0) & (s <= 1)).all()


def direct_weights(ref, mara_ref, sample, groups, cap):
    """c_i, s_i by the formula, in plain float64 Python (raised: above the rounding tolerance)."""
    d = [(math.exp(m) - math.exp(r)) / math.exp(s) if m > r + 1e-3 + 1e-5 * abs(r) else 0.0
         for r, m, s in zip(ref, mara_ref, sample)]
    c, scale = [], []
    for i, g in enumerate(groups):
        others = [d[j] for j in range(len(d)) if groups[j] == g and j != i]
        norm = 1.0 + sum(others) / len(others) if others else 1.0
        c.append(d[i] / norm if cap is None else min(d[i] / norm, cap))
        scale.append(1.0 / norm)
    return c, scale


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-30.0, 0.0), st.floats(0.0, 8.0), st.booleans(), st.integers(0, 2),
                       st.floats(-30.0, 0.0)), min_size=1, max_size=10),
    st.sampled_from([None, 5.0, 50.0]),
)
def test_alg2_weights_match_their_formula(rows, cap):
    ref = [r for r, _, _, _, _ in rows]
    mara_ref = [r + g if k else r for r, g, k, _, _ in rows]
    groups = [g for _, _, _, g, _ in rows]
    sample = [s for *_, s in rows]
    c, s = mara_forward_weights(*(torch.tensor(x, dtype=torch.float64) for x in (ref, mara_ref, sample)),
                                torch.tensor(groups), max_weight=cap)
    want_c, want_s = direct_weights(ref, mara_ref, sample, groups, cap)
    torch.testing.assert_close(c.double(), torch.tensor(want_c, dtype=torch.float64), rtol=1e-6, atol=1e-30)
    torch.testing.assert_close(s.double(), torch.tensor(want_s, dtype=torch.float64), rtol=1e-6, atol=0.0)
    assert ((s > 0) & (s <= 1)).all() and (c >= 0).all()
    if cap is not None:
        assert (c <= cap * (1 + 1e-6)).all()
    unraised = mara_forward_weights(*(torch.tensor(x, dtype=torch.float64) for x in (ref, ref, sample)),
                                    torch.tensor(groups), max_weight=cap)
    assert torch.equal(unraised[0], torch.zeros(len(rows))) and torch.equal(unraised[1], torch.ones(len(rows)))


def test_alg2_weights_stay_finite_at_sequence_scale_log_ratios():
    # log d = 4000 and 8000 (1000-token completions): d overflows float64, the capped weights do not.
    ref = torch.tensor([-5000.0, -1000.0, -9000.0], dtype=torch.float64)
    mara_ref = torch.tensor([-1000.0, -1000.0, -1000.0], dtype=torch.float64)
    sample = torch.tensor([-5000.0, -900.0, -9000.0], dtype=torch.float64)
    c, s = mara_forward_weights(ref, mara_ref, sample, max_weight=50.0)
    assert c.tolist() == pytest.approx([0.0, 0.0, 50.0], abs=1e-30)
    assert torch.isfinite(s).all() and ((s >= 0) & (s <= 1)).all()
    with pytest.raises(ValueError, match="max_weight"):
        mara_forward_weights(ref, mara_ref, sample, max_weight=None)


def test_alg2_leave_one_out_sums_do_not_cancel():
    # d = (e^40, e^2, 0): sample 0's normaliser 1 + e^2 / 2 must not come from (e^40 + e^2) - e^40.
    ref = torch.tensor([-math.inf, -math.inf, 0.0], dtype=torch.float64)
    c, s = mara_forward_weights(ref, torch.zeros(3, dtype=torch.float64), torch.tensor([-40.0, -2.0, 0.0]),
                                max_weight=None)
    norm = 1.0 + math.exp(2.0) / 2.0
    assert float(c[0]) == pytest.approx(math.exp(40.0) / norm, rel=1e-6)
    assert float(s[0]) == pytest.approx(1.0 / norm, rel=1e-6)
    assert float(c[1]) == pytest.approx(math.exp(2.0) / (1.0 + math.exp(40.0) / 2.0), rel=1e-6, abs=0.0)


def test_alg2_weights_read_rounding_of_sequence_sums_as_no_change():
    # The trainer's float32 sequence sums and the loss's float64 ones differ in the last bits; at
    # pi_old = e^-300 that difference times 1/pi_old must not become a pull.
    ref = torch.tensor([-120.0, -250.0, -80.0], dtype=torch.float64)
    rounded = ref + torch.tensor([3e-5, -2e-5, 0.0], dtype=torch.float64)
    c, s = mara_forward_weights(ref, rounded, torch.full((3,), -300.0, dtype=torch.float64))
    assert torch.equal(c, torch.zeros(3)) and torch.equal(s, torch.ones(3))


def test_alg2_weights_reject_nan_shapes_and_lowered_mass():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="mara_ref_logps"):
        mara_forward_weights(x, torch.zeros(2), x)
    with pytest.raises(ValueError, match="NaN"):
        mara_forward_weights(x, torch.tensor([0.0, float("nan"), 0.0]), x)
    with pytest.raises(ValueError, match="below ref_logps"):
        mara_forward_weights(x, torch.tensor([0.0, -1.0, 0.0]), x)
    with pytest.raises(ValueError, match="max_weight"):
        mara_forward_weights(x, x, x, max_weight=0.0)


def test_sequence_estimator_off_policy_is_unbiased_by_enumeration():
    policy, ref, old = (torch.log_softmax(torch.randn(5, generator=torch.Generator().manual_seed(s),
                                                      dtype=torch.float64), -1) for s in (3, 4, 5))
    logps = policy.clone().requires_grad_(True)
    surrogate, value = sequence_forward_kl(logps, ref, old)
    weight = old.exp()
    exact = (ref.exp() * (ref - policy)).sum()
    assert float((weight * value).sum()) == pytest.approx(float(exact), rel=1e-9)
    (grad,) = torch.autograd.grad((weight * surrogate).sum(), logps)
    torch.testing.assert_close(grad, -ref.exp())  # d KL(ref||pi) / d log pi(y), summed under pi_old
    on_policy, value_on = sequence_forward_kl(policy, ref)
    rho = (ref - policy).exp()
    torch.testing.assert_close(value_on, rho * (ref - policy) - rho + 1.0)
