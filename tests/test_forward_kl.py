"""Forward-KL estimators of mara_rl.integrations.forward_kl: exact values, gradients and expectations by enumeration."""

import itertools
import math

import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mara_rl.integrations.forward_kl import (  # noqa: E402
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


def test_one_token_alg2_gradient_is_the_anchored_forward_kl_gradient():
    # One position, every outcome once as if sampled uniformly: the self-normalised weights are then
    # exact, and the loss gradient must be grad KL(q || pi) = pi - q with q the anchored reference.
    ref_logits = torch.tensor([2.0, 0.0, -1.0, 0.5], dtype=torch.float64)
    policy_logits = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64, requires_grad=True)
    log_ref = torch.log_softmax(ref_logits, -1)
    good = torch.tensor([True, False, True, True])
    anchor = log_ref[good].max()
    log_m = torch.where(good, anchor, log_ref)
    q = log_m.exp() / log_m.exp().sum()
    tokens = torch.arange(4)
    logps = torch.log_softmax(policy_logits, -1)[tokens][:, None]
    out = token_forward_kl_loss(
        policy_logits.expand(4, 1, 4), ref_logits.expand(4, 1, 4), torch.ones(4, 1), logps,
        ref_logps=log_ref[tokens][:, None], mara_ref_logps=log_m, old_logps=torch.full((4, 1), -math.log(4.0),
        dtype=torch.float64),
    )
    out.loss.backward()
    pi = torch.softmax(policy_logits.detach(), -1)
    torch.testing.assert_close(policy_logits.grad, pi - q, rtol=0, atol=1e-6)
    # Without Alg. 2 it is the plain forward-KL gradient pi - pi_ref.
    policy_logits.grad = None
    logps = torch.log_softmax(policy_logits, -1)[tokens][:, None]
    plain = token_forward_kl_loss(policy_logits.expand(4, 1, 4), ref_logits.expand(4, 1, 4), torch.ones(4, 1), logps)
    plain.loss.backward()
    torch.testing.assert_close(policy_logits.grad, pi - log_ref.exp(), rtol=1e-6, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-1e4, 0.0), st.floats(0.0, 1e4), st.booleans(), st.integers(0, 2)),
             min_size=1, max_size=12),
    st.floats(-1e4, 0.0),
)
def test_alg2_coefficients_are_bounded_zero_sum_and_vanish_without_anchor(rows, sample_shift):
    ref = torch.tensor([r for r, _, _, _ in rows], dtype=torch.float64)
    gap = torch.tensor([g for _, g, _, _ in rows], dtype=torch.float64)
    good = torch.tensor([k for _, _, k, _ in rows])
    groups = torch.tensor([g for _, _, _, g in rows])
    sample = ref * 0.5 + sample_shift
    mara_ref = torch.where(good, ref + gap, ref)
    c = mara_forward_weights(ref, mara_ref, sample, groups).double()
    assert torch.isfinite(c).all()
    for g in groups.unique():
        members = groups == g
        assert c[members].abs().max() <= members.sum() + 1e-9
        assert abs(float(c[members].sum())) <= 1e-6 * float(members.sum())
    assert torch.equal(mara_forward_weights(ref, ref, sample, groups), torch.zeros(len(rows)))


def test_alg2_coefficients_reject_nan_and_shapes():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="mara_ref_logps"):
        mara_forward_weights(x, torch.zeros(2), x)
    with pytest.raises(ValueError, match="NaN"):
        mara_forward_weights(x, torch.tensor([0.0, float("nan"), 0.0]), x)


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
