"""Forward-KL regularisers ``KL(pi_ref(.|x) || pi(.|x))`` for LLM policy-gradient trainers (pure torch).

Two estimators, both taking completions ``y ~ pi_old`` (the policy that sampled; ``pi_old = pi`` on-policy):

- :func:`token_forward_kl_loss` (the default): the exact forward KL over the full vocabulary at each
  sampled prefix, ``K(y) = sum_t KL(pi_ref(.|x, y<t) || pi(.|x, y<t))``, computed in row chunks so no
  ``[B, T, V]`` tensor is ever materialised beyond the inputs (from hidden states and LM heads, none
  at all). MARA's Algorithm 2 enters as a per-sample coefficient on ``log pi(y|x)`` and a scale of the
  sample's KL term, normalised by the *other* samples of its prompt group (:func:`mara_forward_weights`),
  so the expected gradient points exactly along Alg. 2's; off-policy batches get prefix importance
  weights (:func:`prefix_importance_weights`). Every weight is capped.
- :func:`sequence_forward_kl`: the sequence-level score-function estimator with weight
  ``rho = pi_ref(y|x) / pi_old(y|x)`` (unbiased, but ``rho`` is exponential in the length).

What each estimates, its bias and how Algorithm 2 enters are derived in ``docs/forward_kl.md``.
Shapes: ``B`` completions, ``T`` completion positions, ``V`` vocabulary, ``H`` hidden width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

MAX_LOG_RATIO = 20.0
DEFAULT_CHUNK_ROWS = 1024
DEFAULT_MAX_IMPORTANCE_WEIGHT = 3.0
DEFAULT_MAX_MARA_WEIGHT = 50.0


def _check_shape(tensor: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(tensor.shape)}")


def _check_temperature(temperature: float) -> float:
    value = float(temperature)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return value


@dataclass(frozen=True)
class LMHead:
    """A causal LM's output layer: ``logits = softcap(logit_scale * (h W^T + b))`` for final hidden states ``h``.

    ``softcap(z) = cap * tanh(z / cap)`` (Gemma 2/3's ``final_logit_softcapping``), the identity when
    ``softcap`` is None; ``logit_scale`` covers Cohere's ``logit_scale``, Granite's ``1 / logits_scaling``
    and the like; ``bias`` an LM head with a bias (Phi). This is the transform TRL's fused LM head
    applies (``trl.trainer.utils.add_fused_lm_head``): the product ``h W^T + b`` in the dtype both
    operands promote to (fp32 for TRL's ``cast_lm_head_to_fp32``), the rest in fp32.

    Attributes:
        weight: ``[V, H]``; gets a gradient when it requires one (the policy's).
        bias: ``[V]`` or None; likewise.
        logit_scale: multiplier of the logits before the soft-cap.
        softcap: the cap, or None.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    logit_scale: float = 1.0
    softcap: float | None = None

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[N, V]`` fp32 logits of hidden states ``hidden [N, H]`` (untempered)."""
        return self._finish(self._product(hidden))[0]

    def _product(self, hidden: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(hidden.dtype, self.weight.dtype)
        product = hidden.to(dtype) @ self.weight.to(dtype).t()
        return product if self.bias is None else product + self.bias.to(dtype)

    def _finish(self, product: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """``(logits, d logits / d product)``: the derivative is a tensor with a soft-cap, else the scale."""
        scaled = product.float() * self.logit_scale
        if self.softcap is None:
            return scaled, self.logit_scale
        capped = torch.tanh(scaled / self.softcap)
        return self.softcap * capped, self.logit_scale * (1.0 - capped * capped)


def _as_head(head: torch.Tensor | LMHead | None) -> LMHead | None:
    return head if head is None or isinstance(head, LMHead) else LMHead(head)


def _rows_to_logits(rows: torch.Tensor, head: LMHead | None, inv_t: float) -> tuple[torch.Tensor, Any]:
    """fp32 tempered logits of a chunk of rows (logits, or hidden states through ``head``) and their derivative."""
    if head is None:
        return rows.float() * inv_t, 1.0
    logits, slope = head._finish(head._product(rows))
    return logits * inv_t, slope


class _TokenForwardKL(torch.autograd.Function):
    """``sum_n w_n KL(softmax(r_n / T) || softmax(p_n / T))`` over rows ``n``, gradients built in the forward.

    The weights are constants, so the gradient is known in the forward pass: per row
    ``d/dp_n = w_n (softmax(p_n/T) - softmax(r_n/T)) / T``, and through a head (``p = f(u)``,
    ``u = h W^T + b``, ``f`` the scale and soft-cap) ``d/du = f'(u) d/dp``, ``d/dh = (d/du) W``,
    ``d/dW = sum_n (d/du_n)^T h_n``, ``d/db = sum_n d/du_n``. Only one chunk of ``[rows, V]`` logits
    exists at a time.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, policy, policy_weight, policy_bias, ref, weights, inv_t, chunk_rows, policy_head, ref_head
    ):
        n = policy.shape[0]
        kl = torch.zeros(n, dtype=torch.float32, device=policy.device)
        want_input = ctx.needs_input_grad[0]
        want_weight = policy_head is not None and ctx.needs_input_grad[1]
        want_bias = policy_bias is not None and ctx.needs_input_grad[2]
        grad_policy = torch.zeros_like(policy) if want_input else None
        fp32 = dict(dtype=torch.float32, device=policy.device)
        grad_weight = torch.zeros(policy_weight.shape, **fp32) if want_weight else None
        grad_bias = torch.zeros(policy_bias.shape, **fp32) if want_bias else None
        for start in range(0, n, chunk_rows):
            rows = slice(start, min(start + chunk_rows, n))
            logits, slope = _rows_to_logits(policy[rows], policy_head, inv_t)
            log_p = torch.log_softmax(logits, dim=-1)
            log_q = torch.log_softmax(_rows_to_logits(ref[rows], ref_head, inv_t)[0], dim=-1)
            q = log_q.exp()
            # q = 0 contributes nothing, even where log p or log q is -inf.
            kl[rows] = torch.where(q > 0, q * (log_q - log_p), 0.0).sum(dim=-1)
            if not (want_input or want_weight or want_bias):
                continue
            d_logits = (log_p.exp() - q) * (weights[rows, None].float() * inv_t) * slope
            if policy_head is None:
                grad_policy[rows] = d_logits.to(policy.dtype)
                continue
            if want_input:
                grad_policy[rows] = (d_logits @ policy_weight.float()).to(policy.dtype)
            if want_weight:
                grad_weight += d_logits.t() @ policy[rows].float()
            if want_bias:
                grad_bias += d_logits.sum(dim=0)
        ctx.mark_non_differentiable(kl)
        ctx.save_for_backward(
            grad_policy,
            None if grad_weight is None else grad_weight.to(policy_weight.dtype),
            None if grad_bias is None else grad_bias.to(policy_bias.dtype),
        )
        return (weights.float() * kl).sum(), kl

    @staticmethod
    def backward(ctx, grad_loss, grad_kl):  # type: ignore[override]
        scale = grad_loss.to(torch.float32)
        grads = [None if g is None else g * scale.to(g.dtype) for g in ctx.saved_tensors]
        return (*grads, None, None, None, None, None, None)


def token_forward_kl(
    policy: torch.Tensor,
    ref: torch.Tensor,
    mask: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    policy_head: torch.Tensor | LMHead | None = None,
    ref_head: torch.Tensor | LMHead | None = None,
    temperature: float = 1.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-position forward KL over the vocabulary, ``KL_t = sum_v q_t(v) (log q_t(v) - log p_t(v))``.

    ``p_t = softmax(policy logits / T)``, ``q_t = softmax(ref logits / T)`` at completion position ``t``
    (the distributions of token ``y_t`` given ``x, y<t``; ``T`` the sampling temperature, as TRL's
    reference pass uses). Gradient w.r.t. the policy logits: ``w_t (p_t - q_t) / T``; the reference gets none.

    Args:
        policy: ``[B, T, V]`` policy logits, or ``[B, T, H]`` final hidden states when ``policy_head`` is given.
        ref: the same for the reference (no gradient); ``[B, T, H]`` with ``ref_head``.
        mask: ``[B, T]`` completion mask; masked positions cost nothing and give ``KL_t = 0``.
        weights: ``[B, T]`` constant weight of each position in ``loss`` (default: ``mask``).
        policy_head, ref_head: :class:`LMHead` (bias, logit scale, soft-cap) or a ``[V, H]`` weight
            (``logits = hidden @ head.T``); only ``policy_head``'s weight and bias get gradients.
        temperature: ``T > 0``.
        chunk_rows: positions per chunk; peak extra memory is a few ``[chunk_rows, V]`` fp32 tensors
            plus, with heads, an fp32 ``[V, H]`` gradient buffer.

    Returns:
        ``(loss, kl)``: ``loss = sum_{b,t} weights * KL_t`` (scalar, differentiable w.r.t. ``policy``
        and ``policy_head``) and ``kl`` ``[B, T]`` (fp32, detached).
    """
    if policy.dim() != 3 or ref.dim() != 3:
        raise ValueError(f"policy and ref must be [B, T, V or H], got {tuple(policy.shape)} and {tuple(ref.shape)}")
    batch, length = policy.shape[:2]
    _check_shape(mask, (batch, length), "mask")
    _check_shape(ref, (batch, length, ref.shape[-1]), "ref")
    weights = mask if weights is None else weights
    _check_shape(weights, (batch, length), "weights")
    policy_head, ref_head = _as_head(policy_head), _as_head(ref_head)
    if (policy_head is None) != (ref_head is None):
        raise ValueError("give both policy_head and ref_head (hidden states) or neither (logits)")
    if policy_head is not None:
        vocab = policy_head.weight.shape[0]
        if vocab != ref_head.weight.shape[0]:
            raise ValueError(f"the heads must share a vocabulary, got {vocab} and {ref_head.weight.shape[0]} rows")
        _check_shape(policy_head.weight, (vocab, policy.shape[-1]), "policy_head")
        _check_shape(ref_head.weight, (vocab, ref.shape[-1]), "ref_head")
        for name, head in (("policy_head", policy_head), ("ref_head", ref_head)):
            if head.bias is not None:
                _check_shape(head.bias, (vocab,), f"{name}.bias")
        ref_head = LMHead(ref_head.weight.detach(), None if ref_head.bias is None else ref_head.bias.detach(),
                          ref_head.logit_scale, ref_head.softcap)
    elif policy.shape[-1] != ref.shape[-1]:
        raise ValueError(f"policy and ref logits must share a vocabulary, got {policy.shape[-1]} and {ref.shape[-1]}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    inv_t = 1.0 / _check_temperature(temperature)

    keep = mask.reshape(-1).bool()
    # Only unmasked positions are projected; masked rows keep KL 0 and no gradient.
    loss, kl_rows = _TokenForwardKL.apply(
        policy.reshape(batch * length, -1)[keep],
        None if policy_head is None else policy_head.weight,
        None if policy_head is None else policy_head.bias,
        ref.detach().reshape(batch * length, -1)[keep],
        weights.detach().reshape(-1)[keep],
        inv_t,
        int(chunk_rows),
        policy_head,
        ref_head,
    )
    kl = torch.zeros(batch * length, dtype=torch.float32, device=policy.device)
    kl[keep] = kl_rows
    return loss, kl.view(batch, length)


def prefix_importance_weights(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    mask: torch.Tensor,
    *,
    max_weight: float | None = DEFAULT_MAX_IMPORTANCE_WEIGHT,
) -> torch.Tensor:
    """Off-policy weight of each position's full-vocabulary term: ``W_t = prod_{s<t} pi(y_s) / pi_old(y_s)``.

    ``KL_t`` sums over every next token exactly, so the only sampled part it depends on is the prefix
    ``y<t``; ``E_{y~pi_old}[W_t KL_t] = E_{y~pi}[KL_t]``. This is the same correction TRL applies to its
    own per-token terms (``coef_1 = pi(y_t)/pi_old(y_t)`` for a term that depends on the sampled
    ``y_t``), applied to what ``KL_t`` depends on. ``W_0 = 1``; on-policy every weight is exactly 1.

    Args:
        logps: ``[B, T]`` current per-token log-probs of the sampled tokens (detached here).
        old_logps: ``[B, T]`` log-probs under the policy that sampled (TRL's ``old_per_token_logps``,
            or the inference engine's ``sampling_per_token_logps`` to also correct its mismatch).
        mask: ``[B, T]`` completion mask.
        max_weight: truncation ``W_t <= max_weight`` (TRL's ``vllm_importance_sampling_clip_max``
            default, 3); ``None`` for the exact, unbounded weights.

    Returns:
        ``[B, T]`` fp32 weights, detached (the prefix distribution is held fixed, as on-policy).
    """
    _check_shape(old_logps, tuple(logps.shape), "old_logps")
    _check_shape(mask, tuple(logps.shape), "mask")
    step = ((logps.detach() - old_logps.detach()).float() * mask).nan_to_num(nan=0.0)
    log_w = torch.cumsum(step, dim=1) - step  # exclusive: the prefix before t
    if max_weight is not None:
        if not max_weight >= 1.0:
            raise ValueError(f"max_weight must be >= 1 (a truncation of the ratio), got {max_weight!r}")
        log_w = log_w.clamp(max=math.log(max_weight))
    return log_w.exp()


def _leave_one_out_logsumexp(log_values: torch.Tensor, codes: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``log sum_{j in group(i), j != i} exp(log_values_j)`` per ``i`` (``-inf`` alone in its group).

    Built from prefix and suffix sums inside each group, never as ``total - own``, which would cancel
    when one term dominates.
    """
    order = torch.argsort(codes, stable=True)
    grouped = codes[order]
    sizes = torch.bincount(codes, minlength=num_groups)
    slot = torch.arange(codes.numel(), device=codes.device) - (torch.cumsum(sizes, 0) - sizes)[grouped]
    # One -inf column on each side, so slot s has its prefix at column s and its suffix at column s + 2.
    table = torch.full((num_groups, int(sizes.max()) + 2), -math.inf, dtype=log_values.dtype, device=log_values.device)
    table[grouped, slot + 1] = log_values[order]
    before = torch.logcumsumexp(table, dim=1)
    after = torch.logcumsumexp(table.flip(1), dim=1).flip(1)
    out = torch.empty_like(log_values)
    out[order] = torch.logaddexp(before[grouped, slot], after[grouped, slot + 2])
    return out


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - e^x)`` for ``x < 0``, accurate at both ends (Maechler's switch at ``-log 2``)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def mara_forward_weights(
    ref_logps: torch.Tensor,
    mara_ref_logps: torch.Tensor,
    sample_logps: torch.Tensor,
    group_ids: torch.Tensor | None = None,
    *,
    max_weight: float | None = DEFAULT_MAX_MARA_WEIGHT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 2 as per-sample weights: a coefficient ``c_i`` on ``-grad log pi(y_i)`` and a scale ``s_i`` of the KL term.

    Alg. 2 raises the regulariser's reference mass on good samples from ``pi_ref(y)`` to ``m(y) =
    pi_ref(z)``: ``m = pi_ref + D`` with ``D = m - pi_ref >= 0``, and the forward term is ``KL(q || pi)``
    towards ``q = m / M``, ``M = 1 + sum_y D(y)``. Its gradient is a mixture,

        grad KL(q || pi) = (1 / M) [grad KL(pi_ref || pi) - E_{pi_old}[d grad log pi]],   d = D / pi_old,

    and the only part no sample can estimate without bias is ``1 / M`` (``docs/forward_kl.md``). Each
    sample ``i`` of a group of ``n_g`` gets the normaliser from the *other* samples,

        N_i = 1 + sum_{j != i} d_j / (n_g - 1),   c_i = min(d_i / N_i, max_weight),   s_i = 1 / N_i

    (``N_i = 1`` for a sample alone in its group). ``N_i`` does not depend on sample ``i``'s own draw,
    so while the cap does not bind ``E[s_i grad K_i - c_i grad log pi(y_i)] = kappa_n grad KL(q || pi)``
    exactly (one-token completions; ``grad K_i`` the token-level term): the intended gradient times
    the scalar ``kappa_n = M E[1 / N]`` in ``[1, M]``. The cap only shortens Alg. 2's pull on samples
    the sampler rarely draws. ``0 <= c_i <= max_weight``, ``0 < s_i <= 1``; without a raised sample in a
    group ``c = 0`` and ``s = 1`` (forward KL alone).

    Args:
        ref_logps: ``[B]`` ``log pi_ref(y_i|x)``.
        mara_ref_logps: ``[B]`` ``log m(y_i)``: :func:`mara_rl.augment.mara_rewards`' ``ref_logprobs``
            with ``kl="forward"`` (the anchor's on good samples, ``ref_logps`` elsewhere); never below
            ``ref_logps`` (Alg. 2 only raises the reference mass). Gaps up to ``1e-3 + 1e-5 |log pi_ref|``
            either way are read as equal: the rounding of a float32 sequence sum, which ``d``'s
            ``1 / pi_old`` would otherwise amplify into a pull.
        sample_logps: ``[B]`` ``log pi_old(y_i|x)`` of the policy that sampled (``log pi`` on-policy).
        group_ids: ``[B]`` integer prompt-group id per sample; ``None``: one group.
        max_weight: cap on ``c_i``; ``None``: exact, unbounded weights (an error where they overflow float32).

    Returns:
        ``(c, s)``, each ``[B]`` fp32, detached.
    """
    if ref_logps.dim() != 1:
        raise ValueError(f"ref_logps must be 1-D [B], got shape {tuple(ref_logps.shape)}")
    n = ref_logps.shape[0]
    _check_shape(mara_ref_logps, (n,), "mara_ref_logps")
    _check_shape(sample_logps, (n,), "sample_logps")
    if max_weight is not None and not max_weight > 0.0:
        raise ValueError(f"max_weight must be > 0 or None, got {max_weight!r}")
    ref = ref_logps.detach().double()
    mara_ref = mara_ref_logps.detach().double()
    sample = sample_logps.detach().double().to(ref.device)
    for name, values in (("ref_logps", ref), ("mara_ref_logps", mara_ref), ("sample_logps", sample)):
        if torch.isnan(values).any() or torch.isposinf(values).any():
            raise ValueError(f"{name} must not contain NaN or +inf")
    if torch.isneginf(sample).any():
        raise ValueError("sample_logps must be finite: every completion was sampled, so it has probability > 0")
    # Sequence sums of the same per-token log-probs, added in another order or precision, differ by
    # rounding; d amplifies a difference by 1/pi_old, so gaps within it count as none.
    tolerance = 1e-3 + 1e-5 * torch.where(torch.isfinite(ref), ref.abs(), 0.0)
    if (mara_ref < ref - tolerance).any():
        raise ValueError("mara_ref_logps must not be below ref_logps: Alg. 2 only raises a sample's reference mass")
    if n == 0:
        empty = torch.zeros(0, dtype=torch.float32, device=ref.device)
        return empty, empty.clone()
    if group_ids is None:
        codes = torch.zeros(n, dtype=torch.long, device=ref.device)
    else:
        _check_shape(group_ids, (n,), "group_ids")
        codes = torch.unique(group_ids, return_inverse=True)[1].to(ref.device)
    num_groups = int(codes.max()) + 1
    raised = mara_ref > ref + tolerance
    # log d_i = log(m_i - pi_ref_i) - log pi_old_i, in log space: d is exponential in the length.
    log_d = torch.where(raised, mara_ref + _log1mexp(torch.where(raised, ref - mara_ref, -1.0)) - sample, -math.inf)
    others = (torch.bincount(codes, minlength=num_groups) - 1)[codes].to(ref.dtype)
    log_mean_others = _leave_one_out_logsumexp(log_d, codes, num_groups) - others.clamp(min=1).log()
    log_norm = torch.where(others > 0, torch.logaddexp(torch.zeros_like(log_d), log_mean_others), 0.0)
    log_c = log_d - log_norm
    if max_weight is not None:
        log_c = log_c.clamp(max=math.log(max_weight))
    coefficients = log_c.exp().float()
    if not torch.isfinite(coefficients).all():
        raise ValueError("Alg. 2's uncapped weights overflow float32 at these log-prob gaps: give max_weight a value")
    return coefficients, (-log_norm).exp().float()


@dataclass(frozen=True)
class ForwardKLOutput:
    """Result of :func:`token_forward_kl_loss`.

    Attributes:
        loss: scalar surrogate; ``loss.backward()`` gives the regulariser's gradient (multiply by beta).
        kl: ``[B]`` per-sample value ``sum_t KL_t`` (detached, unweighted).
        mara_coefficients: ``[B]`` Alg. 2 coefficients ``c_i`` (zeros without MARA).
        mara_scales: ``[B]`` Alg. 2 scales ``s_i`` of each sample's KL term (ones without MARA).
        importance_weights: ``[B, T]`` prefix weights ``W_t`` (ones on-policy), before ``s_i``.
    """

    loss: torch.Tensor
    kl: torch.Tensor
    mara_coefficients: torch.Tensor
    mara_scales: torch.Tensor
    importance_weights: torch.Tensor


def token_forward_kl_loss(
    policy: torch.Tensor,
    ref: torch.Tensor,
    mask: torch.Tensor,
    logps: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    mara_ref_logps: torch.Tensor | None = None,
    group_ids: torch.Tensor | None = None,
    old_logps: torch.Tensor | None = None,
    max_importance_weight: float | None = DEFAULT_MAX_IMPORTANCE_WEIGHT,
    max_mara_weight: float | None = DEFAULT_MAX_MARA_WEIGHT,
    prefix_correction: bool = True,
    policy_head: torch.Tensor | LMHead | None = None,
    ref_head: torch.Tensor | LMHead | None = None,
    temperature: float = 1.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ForwardKLOutput:
    """The token-level forward-KL regulariser with MARA's Algorithm 2 and off-policy correction.

    Per sample ``i`` (mean over the ``B`` samples):

        loss_i = s_i sum_t W_it KL_it  +  c_i * (sg(log pi(y_i|x)) - log pi(y_i|x)),   log pi(y_i|x) = sum_t mask_it logps_it

    ``KL_it`` from :func:`token_forward_kl`, ``W`` from :func:`prefix_importance_weights` (ones when
    ``old_logps`` is None), ``(c, s)`` from :func:`mara_forward_weights` (``c = 0``, ``s = 1`` when
    ``mara_ref_logps`` is None). On-policy without MARA the gradient is exactly that of
    ``E_{y~sg(pi)}[sum_t KL(pi_ref(.|x,y<t) || pi(.|x,y<t))]``; for one-token completions its expectation
    over a group is ``kappa_n grad KL(q || pi)`` with ``q`` the anchored reference and ``kappa_n >= 1``
    a scalar, while the cap ``max_mara_weight`` does not bind (``docs/forward_kl.md``).

    Args:
        policy, ref, mask, policy_head, ref_head, temperature, chunk_rows: as in :func:`token_forward_kl`.
        logps: ``[B, T]`` current per-token log-probs of the sampled tokens, with grad (TRL's
            ``per_token_logps`` of the loss pass).
        ref_logps: ``[B, T]`` reference per-token log-probs; required with ``mara_ref_logps``.
        mara_ref_logps: ``[B]`` Alg. 2's regulariser log-probs from ``mara_rewards(..., kl="forward")``.
        group_ids: ``[B]`` prompt-group ids for Alg. 2 (``None``: one group).
        old_logps: ``[B, T]`` per-token log-probs of the policy that sampled; ``None``: on-policy.
        max_importance_weight: truncation of the prefix weights (``None``: exact).
        max_mara_weight: cap on Alg. 2's coefficients ``c_i`` (``None``: exact, unbounded).
        prefix_correction: ``False`` keeps ``W = 1`` off-policy (as TRL's ``use_bias_correction_kl=False``
            leaves its own KL term uncorrected); Alg. 2's coefficients still use ``old_logps``, the sampler.

    Returns:
        :class:`ForwardKLOutput`.
    """
    batch, length = mask.shape
    _check_shape(logps, (batch, length), "logps")
    mask_f = mask.to(torch.float32)
    importance = mask_f.clone()
    if old_logps is not None:
        _check_shape(old_logps, (batch, length), "old_logps")
        if prefix_correction:
            importance *= prefix_importance_weights(logps, old_logps, mask_f, max_weight=max_importance_weight)
    if mara_ref_logps is None:
        coefficients = torch.zeros(batch, dtype=torch.float32, device=mask.device)
        scales = torch.ones(batch, dtype=torch.float32, device=mask.device)
    else:
        if ref_logps is None:
            raise ValueError("mara_ref_logps needs ref_logps (the reference's own per-token log-probs)")
        _check_shape(ref_logps, (batch, length), "ref_logps")
        sampler = logps if old_logps is None else old_logps
        ref_seq, sample_seq = ((x.detach().double() * mask_f).sum(dim=1) for x in (ref_logps, sampler))
        coefficients, scales = mara_forward_weights(ref_seq, mara_ref_logps, sample_seq, group_ids,
                                                    max_weight=max_mara_weight)
        coefficients, scales = coefficients.to(mask.device), scales.to(mask.device)
    kl_sum, kl = token_forward_kl(
        policy, ref, mask, weights=importance * scales[:, None] / batch, policy_head=policy_head, ref_head=ref_head,
        temperature=temperature, chunk_rows=chunk_rows,
    )
    seq_logps = (logps * mask_f).sum(dim=1)
    # c_i (sg(log pi) - log pi): gradient -c_i grad log pi, value 0.
    loss = kl_sum + (coefficients.to(seq_logps.dtype) * (seq_logps.detach() - seq_logps)).sum() / batch
    return ForwardKLOutput(loss=loss, kl=kl.sum(dim=1), mara_coefficients=coefficients, mara_scales=scales,
                           importance_weights=importance)


def sequence_forward_kl(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    old_logps: torch.Tensor | None = None,
    *,
    max_log_ratio: float = MAX_LOG_RATIO,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence-level forward-KL surrogate and value for ``y ~ pi_old`` (``pi_old = pi`` when ``old_logps`` is None).

    With ``rho = pi_ref(y)/pi_old(y)`` (log clipped at ``max_log_ratio``) and ``r = pi(y)/pi_old(y)``:
    value ``rho log(pi_ref/pi) - rho + r`` (non-negative; unbiased for ``KL(pi_ref || pi)`` below the
    clip, since ``E_old[rho f] = E_ref[f]`` and ``E_old[r] = 1``); surrogate ``value + rho (sg(log pi) - log pi)``,
    gradient ``-rho grad log pi(y)``. On-policy this is ``rho log rho - rho + 1``. MARA's Alg. 2: pass
    the anchor's log-prob on good samples as ``ref_logps``.

    Args:
        logps: ``[B]`` current ``log pi(y|x)`` (with grad).
        ref_logps: ``[B]`` ``log pi_ref(y|x)`` (Alg. 2: ``mara_rewards(..., kl="forward").ref_logprobs``).
        old_logps: ``[B]`` ``log pi_old(y|x)`` of the policy that sampled.
        max_log_ratio: clip on ``log rho``; it bounds the weight by ``e^max_log_ratio`` and biases the
            estimate wherever it binds.

    Returns:
        ``(surrogate [B], value [B])``.
    """
    _check_shape(ref_logps, tuple(logps.shape), "ref_logps")
    current = logps.detach()
    sampled = current if old_logps is None else old_logps.detach()
    _check_shape(sampled, tuple(logps.shape), "old_logps")
    log_rho = (ref_logps - sampled).clamp(max=max_log_ratio)
    rho = log_rho.exp()
    ratio = (current - sampled).exp()
    # log(pi_ref/pi) = log rho + log(pi_old/pi); rho = 0 contributes nothing.
    value = torch.where(rho > 0, rho * (log_rho + sampled - current), 0.0) - rho + ratio
    return value + rho * (current - logps), value
