"""MARA on a hand-built verl batch, the ``algorithm.mara`` settings and the forward-KL actor loss (verl env only)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

pytest.importorskip("verl")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.workers.config import ActorConfig  # noqa: E402
from verl.workers.utils.losses import ppo_loss  # noqa: E402

from mara_rl.augment import mara_rewards  # noqa: E402
from mara_rl.integrations.verl.loss import (  # noqa: E402
    MARA_KL_COEF_FIELD,
    MARA_KL_REF_FIELD,
    MARA_KL_SCALE_FIELD,
    forward_kl_ppo_loss,
)
from mara_rl.integrations.verl.rewards import mara_rewrite, session_final_rows  # noqa: E402
from mara_rl.integrations.verl.settings import KL_IN_LOSS, KL_IN_REWARD, MaraSettings  # noqa: E402
from mara_rl.integrations.forward_kl import mara_forward_weights, sequence_forward_kl  # noqa: E402

torch.set_num_threads(1)
WIDTH = 7


def make_batch(seed: int = 0):
    """Three prompt groups of sessions, a two-output session in group b, two padding rows.

    Each row: (uid, key, is_padding, response length, masked positions inside the response).
    """
    rows = [
        ("a", "a_0_0", False, 5, ()),
        ("a", "a_1_0", False, 3, ()),
        ("a", "a_2_0", False, 7, (2, 3)),  # tool tokens inside the response
        ("b", "b_0_0", False, 4, ()),  # first output of a two-output session: not GRPO's row
        ("b", "b_0_1", False, 6, ()),
        ("b", "b_1_0", False, 2, ()),
        ("b", "b_2_0", False, 5, (4,)),  # last response position masked
        ("c", "c_0_0", False, 6, ()),
        ("c", "c_1_0", False, 4, ()),
        ("padf00d", "padf00d_0_0", True, 1, (0,)),
        ("padf00d", "padf00d_1_0", True, 1, (0,)),
    ]
    gen = torch.Generator().manual_seed(seed)
    n = len(rows)
    lengths = torch.tensor([r[3] for r in rows])
    inside = torch.arange(WIDTH)[None, :] < lengths[:, None]
    mask = inside.clone()
    for i, r in enumerate(rows):
        for t in r[4]:
            mask[i, t] = False
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.3, 0.0, 0.0, 0.0, 0.0])
    rm = torch.zeros(n, WIDTH)
    rm[torch.arange(n), lengths - 1] = rewards
    ref = torch.where(inside, -torch.rand(n, WIDTH, generator=gen) * 3.0, torch.zeros(()))
    return rows, rm, ref, mask.int(), lengths


def independent_sums(rm, ref, mask, lengths):
    rewards, refs = [], []
    for i in range(rm.shape[0]):
        rewards.append(sum(float(rm[i, t]) for t in range(int(lengths[i]))))
        refs.append(sum(float(ref[i, t]) for t in range(WIDTH) if mask[i, t]))
    return np.array(rewards), np.array(refs)


def old_log_probs(ref, mask):
    return (ref - 0.3 * torch.rand(ref.shape, generator=torch.Generator().manual_seed(7))) * mask


def rewrite(settings: MaraSettings, final_output_only: bool, beta: float = 0.05):
    rows, rm, ref, mask, lengths = make_batch()
    out = mara_rewrite(
        rm, ref, mask, lengths, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
        old_log_prob=old_log_probs(ref, mask), beta=beta, settings=settings, final_output_only=final_output_only,
    )
    return rows, rm, ref, mask, lengths, out


@pytest.mark.parametrize("final_output_only", [True, False])
@pytest.mark.parametrize("kl", ["reverse", "forward"])
def test_rewrite_equals_core_mara_on_recomputed_sequence_logprobs(final_output_only, kl):
    settings = MaraSettings(tau=0.5, kl=kl)
    rows, rm, ref, mask, lengths, out = rewrite(settings, final_output_only)
    raw, ref_seq = independent_sums(rm, ref, mask, lengths)
    samples = [i for i, r in enumerate(rows) if not r[2] and not (final_output_only and r[1] == "b_0_0")]
    expected = mara_rewards(
        raw[samples], ref_seq[samples], beta=0.05, tau=0.5, group_ids=[rows[i][0] for i in samples], kl=kl
    )
    new_raw, _ = independent_sums(out.rm_scores, ref, mask, lengths)
    np.testing.assert_allclose(new_raw[samples], expected.rewards, rtol=0, atol=1e-5)
    others = [i for i in range(len(rows)) if i not in samples]
    torch.testing.assert_close(out.rm_scores[others], rm[others], rtol=0, atol=0)
    # Only the last response position of a sample changes, where verl's reward managers put the score.
    changed = (out.rm_scores != rm).nonzero().tolist()
    assert all(t == int(lengths[i]) - 1 for i, t in changed)
    assert {i for i, _ in changed} == {samples[j] for j in np.flatnonzero(expected.augmented)} - {
        samples[j] for j in np.flatnonzero(expected.rewards == raw[samples])
    }
    if kl == "reverse":
        assert out.kl_scale is None and out.kl_coef is None
    else:
        # Alg. 2's weights over each whole uid group, from independently summed log-probs.
        _, old_seq = independent_sums(rm, old_log_probs(ref, mask), mask, lengths)
        codes = np.unique([rows[i][0] for i in samples], return_inverse=True)[1]
        coef, scale = mara_forward_weights(*(torch.tensor(x, dtype=torch.float64) for x in (
            ref_seq[samples], expected.ref_logprobs, old_seq[samples])), torch.tensor(codes))
        torch.testing.assert_close(out.kl_coef[samples], coef, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.kl_scale[samples], scale, rtol=1e-5, atol=1e-6)
        assert bool((coef > 0).any()), "the batch has good samples below their anchor"
        assert torch.equal(out.kl_coef[others], torch.zeros(len(others)))
        assert torch.equal(out.kl_scale[others], torch.ones(len(others)))
    assert out.metrics["mara/frac_groups_augmented"] == pytest.approx(expected.fraction_groups_augmented)
    assert out.metrics["mara/reward_raw"] == pytest.approx(raw[samples].mean())
    assert out.metrics["mara/reward_augmented"] == pytest.approx(float(expected.rewards.mean()), abs=1e-6)
    assert out.metrics["mara/beta"] == 0.05


def test_group_without_good_sample_and_padding_are_untouched():
    rows, rm, ref, mask, lengths, out = rewrite(MaraSettings(tau=0.5), final_output_only=True)
    group_c = [i for i, r in enumerate(rows) if r[0] == "c" or r[2]]
    torch.testing.assert_close(out.rm_scores[group_c], rm[group_c], rtol=0, atol=0)
    assert out.metrics["mara/frac_groups_augmented"] == pytest.approx(2 / 3)


def test_anchor_is_the_most_reference_likely_good_sample():
    rows, rm, ref, mask, lengths, out = rewrite(MaraSettings(tau=0.5), final_output_only=True, beta=0.2)
    raw, ref_seq = independent_sums(rm, ref, mask, lengths)
    new_raw, _ = independent_sums(out.rm_scores, ref, mask, lengths)
    good = [0, 1]  # group a
    z = good[int(np.argmax(ref_seq[good]))]
    for i in good:
        assert new_raw[i] == pytest.approx(raw[z] + 0.2 * (ref_seq[z] - ref_seq[i]), abs=1e-5)
    assert out.metrics["mara/anchor_ref_logprob"] == pytest.approx(
        np.mean([max(ref_seq[[0, 1]]), max(ref_seq[[4, 5]])]), abs=1e-5
    )


def test_disabled_mara_with_forward_kl_keeps_rewards_and_reference():
    rows, rm, ref, mask, lengths, out = rewrite(MaraSettings(enable=False, kl="forward"), final_output_only=True)
    assert torch.equal(out.rm_scores, rm)
    assert torch.equal(out.kl_scale, torch.ones(len(rows))) and torch.equal(out.kl_coef, torch.zeros(len(rows)))
    assert set(out.metrics) == {"mara/beta"}


def test_session_final_rows_and_bad_keys():
    final = session_final_rows(["u_0_0", "u_0_2", "u_0_1", "u_1_0", "v_x_0_0"])
    assert final.tolist() == [False, True, False, True, True]
    with pytest.raises(ValueError, match="not of the form"):
        session_final_rows(["nouid"])


def test_bad_response_lengths_rejected():
    rows, rm, ref, mask, lengths = make_batch()
    with pytest.raises(ValueError, match="response_lengths"):
        mara_rewrite(rm, ref, mask, lengths + WIDTH, [r[0] for r in rows], [r[1] for r in rows],
                     [r[2] for r in rows], beta=0.1, settings=MaraSettings(tau=0.5), final_output_only=False)


# ----------------------------------------------------------------------------- settings


def config(**overrides):
    base = {
        "algorithm": {"use_kl_in_reward": True, "kl_ctrl": {"kl_coef": 0.01}, "adv_estimator": "rloo",
                      "norm_adv_by_std_in_grpo": True},
        "actor_rollout_ref": {"actor": {"use_kl_loss": False, "kl_loss_coef": 0.02}},
    }
    cfg = OmegaConf.create(base)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


@pytest.mark.parametrize("value", ["", 3, ["a"]])
def test_record_dir_must_be_a_folder_path(value):
    with pytest.raises(ValueError, match="record_dir must be a folder path"):
        MaraSettings.from_config(config(**{"algorithm.mara": {"record_dir": value}}))
    assert MaraSettings.from_config(config(**{"algorithm.mara": {"record_dir": "runs/r"}})).record_dir == "runs/r"
    off = MaraSettings.from_config(config(**{"algorithm.mara": {"enable": False, "record_dir": "runs/r"}}))
    assert off.record_dir == "runs/r" and not off.enable


def test_settings_defaults_and_sources():
    s = MaraSettings.from_config(config())
    assert (s.enable, s.tau, s.tau_quantile, s.kl, s.kl_source) == (True, None, 0.9, "reverse", KL_IN_REWARD)
    s = MaraSettings.from_config(config(**{
        "algorithm.use_kl_in_reward": False, "actor_rollout_ref.actor.use_kl_loss": True,
        "algorithm.mara": {"tau": 0.5, "kl": "forward"},
    }))
    assert (s.tau, s.tau_quantile, s.kl, s.kl_source) == (0.5, None, "forward", KL_IN_LOSS)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algorithm.use_kl_in_reward": False}, "inert without one"),
        ({"actor_rollout_ref.actor.use_kl_loss": True}, "one KL coefficient"),
        ({"algorithm.mara": {"kl": "forward"}}, "use_kl_loss=True"),
        ({"algorithm.mara": {"kl": "sideways"}}, "algorithm.mara.kl"),
        ({"algorithm.mara": {"tau": 0.5, "tau_quantile": 0.9}}, "at most one"),
        ({"algorithm.mara": {"tau_quantile": 1.5}}, r"\[0, 1\]"),
        ({"algorithm.mara": {"tua": 0.5}}, "unknown key"),
        ({"algorithm.kl_ctrl.kl_coef": 0.0}, r"^algorithm\.kl_ctrl\.kl_coef must be a finite number > 0"),
        ({"algorithm.use_kl_in_reward": False, "actor_rollout_ref.actor.use_kl_loss": True,
          "actor_rollout_ref.actor.kl_loss_coef": 0.0}, r"^actor_rollout_ref\.actor\.kl_loss_coef must be a finite number > 0"),
        ({"algorithm.use_kl_in_reward": False, "actor_rollout_ref.actor.use_kl_loss": True,
          "algorithm.mara": {"kl": "forward"}, "distillation": {"enabled": True}}, "distillation"),
    ],
)
def test_settings_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        MaraSettings.from_config(config(**overrides))


def test_forward_kl_without_mara_needs_no_reward_kl():
    s = MaraSettings.from_config(config(**{
        "algorithm.use_kl_in_reward": False, "actor_rollout_ref.actor.use_kl_loss": True,
        "algorithm.mara": {"enable": False, "kl": "forward"},
    }))
    assert (s.enable, s.kl) == (False, "forward")


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"algorithm.use_kl_in_reward": False},
        {"actor_rollout_ref.actor.use_kl_loss": True},
        {"algorithm.kl_ctrl.kl_coef": 0.0, "algorithm.adv_estimator": "grpo"},
        {"algorithm.use_kl_in_reward": False, "actor_rollout_ref.actor.use_kl_loss": True,
         "actor_rollout_ref.actor.kl_loss_coef": 0.0},
    ],
)
def test_disabled_mara_with_reverse_kl_accepts_every_stock_kl_setting(overrides):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = MaraSettings.from_config(config(**overrides, **{"algorithm.mara": {"enable": False}}))
    assert (s.enable, s.kl) == (False, "reverse")


def test_grpo_std_normalisation_warns():
    with pytest.warns(UserWarning, match="norm_adv_by_std_in_grpo=False"):
        MaraSettings.from_config(config(**{"algorithm.adv_estimator": "grpo"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MaraSettings.from_config(config(**{"algorithm.adv_estimator": "grpo", "algorithm.norm_adv_by_std_in_grpo": False}))


# ----------------------------------------------------------------------------- forward-KL actor loss


def actor_config(use_kl_loss: bool = False) -> ActorConfig:
    return ActorConfig(strategy="fsdp", rollout_n=2, ppo_micro_batch_size_per_gpu=2, use_kl_loss=use_kl_loss,
                       loss_agg_mode="token-mean")


def micro_batch(seed: int = 0, lengths: tuple[int, ...] = (3, 5, 2, 4), mara: bool = False):
    """A padded micro-batch as verl's actor engine hands it to the loss (left-right padding)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    b, prompt, width = len(lengths), 2, int(lengths.max())
    mask = (torch.arange(width)[None, :] < lengths[:, None]).int()
    attention = torch.cat([torch.ones(b, prompt, dtype=torch.int64), mask.long()], dim=1)
    old = -torch.rand(b, width, generator=gen) * mask
    ref = -torch.rand(b, width, generator=gen) * 2 * mask
    kl_ref = ref.clone()
    # Alg. 2's weights as the trainer writes them: per sample, on every response token.
    scale = torch.tensor([0.5, 1.0, 0.8, 1.0])[:b] if mara else torch.ones(b)
    coef = torch.tensor([0.0, 0.0, 2.5, 0.0])[:b] if mara else torch.zeros(b)
    data = TensorDict(
        {
            "prompts": torch.zeros(b, prompt, dtype=torch.int64),
            "responses": torch.zeros(b, width, dtype=torch.int64),
            "attention_mask": attention,
            "response_mask": mask,
            "old_log_probs": old,
            "advantages": torch.randn(b, width, generator=gen) * mask,
            "ref_log_prob": ref,
            MARA_KL_REF_FIELD: kl_ref,
            MARA_KL_SCALE_FIELD: scale[:, None] * mask,
            MARA_KL_COEF_FIELD: coef[:, None] * mask,
        },
        batch_size=b,
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=b)
    log_probs = (old + 0.1 * torch.randn(b, width, generator=gen) * mask).requires_grad_(True)
    return data, log_probs, mask, kl_ref, old


def padded_log_probs(log_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Model output in verl's no-padding layout: 2 prompt + n response positions per row, left-shifted by one."""
    rows = []
    for i in range(log_probs.shape[0]):
        n = int(mask[i].sum())
        pad = torch.zeros(1, dtype=log_probs.dtype)
        rows.append(torch.cat([pad, log_probs[i, :n], pad]))
    return torch.cat(rows)


@pytest.mark.parametrize("mara", [False, True])
def test_forward_kl_loss_is_ppo_loss_plus_beta_times_sequence_surrogate(mara):
    beta = 0.3
    data, log_probs, mask, kl_ref, old = micro_batch(mara=mara)
    stock_data, _, _, _, _ = micro_batch(mara=mara)
    stock_logp = log_probs.detach().clone().requires_grad_(True)
    loss, metrics = forward_kl_ppo_loss(actor_config(), {"log_probs": padded_log_probs(log_probs, mask)}, data, beta=beta)
    stock, _ = ppo_loss(actor_config(), {"log_probs": padded_log_probs(stock_logp, mask)}, stock_data)
    seq = lambda t: (t * mask).sum(-1)  # noqa: E731
    scale, coef = (data[name][:, 0] for name in (MARA_KL_SCALE_FIELD, MARA_KL_COEF_FIELD))
    surrogate, value = sequence_forward_kl(seq(stock_logp), seq(kl_ref), seq(old))
    expected = stock + beta * (scale * surrogate + coef * (seq(stock_logp).detach() - seq(stock_logp))).mean()
    torch.testing.assert_close(loss, expected)
    assert metrics["kl_coef"] == beta
    assert float(metrics["kl_loss"].values[0]) == pytest.approx(float(value.mean()), rel=1e-5)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(log_probs.grad, stock_logp.grad)
    # The forward term's gradient is -beta (s rho + c) / B on every policy token.
    rho = torch.exp(seq(kl_ref) - seq(old))
    pg_only = stock_logp.detach().clone().requires_grad_(True)
    ppo_loss(actor_config(), {"log_probs": padded_log_probs(pg_only, mask)}, micro_batch()[0])[0].backward()
    torch.testing.assert_close(log_probs.grad - pg_only.grad, (-beta * (scale * rho + coef) / 4)[:, None] * mask)


def test_forward_kl_loss_refuses_a_config_with_verl_kl_loss():
    data, log_probs, mask, _, _ = micro_batch()
    with pytest.raises(ValueError, match="use_kl_loss=False"):
        forward_kl_ppo_loss(actor_config(use_kl_loss=True), {"log_probs": padded_log_probs(log_probs, mask)},
                            data, beta=0.1)


def test_forward_kl_value_is_zero_at_the_reference():
    data, log_probs, mask, _, old = micro_batch()
    data[MARA_KL_REF_FIELD] = old.clone()
    with torch.no_grad():
        _, metrics = forward_kl_ppo_loss(actor_config(), {"log_probs": padded_log_probs(old, mask)}, data, beta=1.0)
    assert math.isclose(float(metrics["kl_loss"].values[0]), 0.0, abs_tol=1e-6)


def forward_term_grad(data, log_probs, mask, **kwargs) -> torch.Tensor:
    """Gradient of the forward-KL term alone: the loss's gradient minus ``ppo_loss``'s on the same batch."""
    loss, metrics = forward_kl_ppo_loss(actor_config(), {"log_probs": padded_log_probs(log_probs, mask)}, data, **kwargs)
    loss.backward()
    pg_only = log_probs.detach().clone().requires_grad_(True)
    ppo_loss(actor_config(), {"log_probs": padded_log_probs(pg_only, mask)}, data)[0].backward()
    return log_probs.grad - pg_only.grad, metrics


def reference_ess(log_rho: torch.Tensor) -> float:
    rho = log_rho.double().exp()
    return float(rho.sum() ** 2 / (len(rho) * (rho**2).sum()))


def test_forward_kl_clips_the_sequence_weight():
    beta, clip = 0.3, 1.0
    data, log_probs, mask, kl_ref, old = micro_batch()
    data[MARA_KL_REF_FIELD][1, 0] += 5.0  # row 1: pi_ref far above pi_old, log rho > clip
    seq = lambda t: (t.double() * mask).sum(-1)  # noqa: E731
    log_rho = seq(data[MARA_KL_REF_FIELD]) - seq(old)
    assert (log_rho > clip).tolist() == [False, True, False, False]
    grad, metrics = forward_term_grad(data, log_probs, mask, beta=beta, max_log_ratio=clip)
    # The weight is rho on unclipped rows and e^clip on the clipped one; the value uses the same weight.
    rho = log_rho.clamp(max=clip).exp().float()
    torch.testing.assert_close(grad, (-beta * rho / 4)[:, None] * mask)
    _, value = sequence_forward_kl(seq(log_probs.detach()).float(), log_rho.float() + seq(old).float(),
                                   seq(old).float(), max_log_ratio=clip)
    assert float(metrics["kl_loss"].values[0]) == pytest.approx(float(value.mean()), rel=1e-5)
    assert metrics["actor/forward_kl_clip_frac"].values == [0.25]
    assert metrics["actor/forward_kl_ess"].values[0] == pytest.approx(reference_ess(log_rho.clamp(max=clip)))


def test_forward_kl_weight_collapses_at_long_completions():
    """log rho sums per-token log ratios: at 1000 tokens the weights span hundreds of nats, so the term
    is carried by one sequence (ESS -> 1/n) and, on average, underflows: the regulariser is off."""
    data, log_probs, mask, _, old = micro_batch(lengths=(1000, 900, 1000, 800))
    seq = lambda t: (t.double() * mask).sum(-1)  # noqa: E731
    log_rho = seq(data[MARA_KL_REF_FIELD]) - seq(old)
    assert bool((log_rho < -200).all()), "E_old[log rho] = -KL(pi_old || pi_ref), summed over every token"
    grad, metrics = forward_term_grad(data, log_probs, mask, beta=0.3)
    assert torch.count_nonzero(grad) == 0, "e^(log rho) underflows: no forward-KL gradient reaches the policy"
    assert metrics["actor/forward_kl_clip_frac"].values == [0.0]
    assert metrics["actor/forward_kl_ess"].values[0] == pytest.approx(0.25, abs=1e-6)
    short_data, _, _, _, short_old = micro_batch()
    short_mask = short_data["response_mask"]
    short = (short_data[MARA_KL_REF_FIELD] * short_mask).sum(-1) - (short_old * short_mask).sum(-1)
    assert reference_ess(short) > 0.5, "at a few tokens the weights are comparable"


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "big"])
def test_max_log_ratio_errors(value):
    base = {"algorithm.use_kl_in_reward": False, "actor_rollout_ref.actor.use_kl_loss": True}
    with pytest.raises(ValueError, match="max_log_ratio must be a finite number >= 0"):
        MaraSettings.from_config(config(**base, **{"algorithm.mara": {"kl": "forward", "max_log_ratio": value}}))


def test_max_log_ratio_needs_forward_kl_and_reaches_the_settings():
    with pytest.raises(ValueError, match="needs algorithm.mara.kl=forward"):
        MaraSettings.from_config(config(**{"algorithm.mara": {"max_log_ratio": 5.0}}))
    base = {"algorithm.use_kl_in_reward": False, "actor_rollout_ref.actor.use_kl_loss": True}
    s = MaraSettings.from_config(config(**base, **{"algorithm.mara": {"kl": "forward", "max_log_ratio": 5}}))
    assert s.max_log_ratio == 5.0
    assert MaraSettings.from_config(config(**base, **{"algorithm.mara": {"kl": "forward"}})).max_log_ratio == 20.0


# ----------------------------------------------------------------------------- rival reward transforms


def test_a_reward_transform_replaces_mara_and_needs_no_kl_term():
    s = MaraSettings.from_config(config(**{"algorithm.use_kl_in_reward": False,
                                           "algorithm.mara": {"reward_transform": "unlikeliness"}}))
    assert (s.enable, s.reward_transform, s.reward_transform_value) == (False, "unlikeliness", None)
    s = MaraSettings.from_config(config(**{"actor_rollout_ref.rollout.n": 8,
                                           "algorithm.mara": {"reward_transform": "pkpo", "reward_transform_value": 8}}))
    assert (s.reward_transform, s.reward_transform_value) == ("pkpo", 8.0)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"reward_transform": "entropy"}, r"^algorithm\.mara\.reward_transform: unknown transform 'entropy'"),
        ({"reward_transform": "grpo_passk"}, "advantage transform .*adv_estimator=grpo_passk"),
        ({"reward_transform": "passk_advantage"}, "reward transforms only"),
        ({"reward_transform": "pkpo", "enable": True}, "give one of algorithm.mara.enable=true"),
        ({"reward_transform": "pkpo", "reward_transform_value": "four"}, "must be a finite number, got 'four'"),
        ({"reward_transform": "pkpo", "reward_transform_value": True}, "must be a finite number"),
        ({"reward_transform": "pkpo", "reward_transform_value": 8}, r"value=8 \(pkpo's k\) cannot run on groups of 4"),  # k above rollout.n
        ({"reward_transform": "unlikeliness", "reward_transform_value": -1}, "unlikeliness's penalty"),
        ({"reward_transform_value": 0.5}, "name a transform"),
    ],
)
def test_reward_transform_errors_are_one_line(section, message):
    with pytest.raises(ValueError, match=message) as err:
        MaraSettings.from_config(config(**{"actor_rollout_ref.rollout.n": 4, "algorithm.mara": section}))
    assert "\n" not in str(err.value)


def test_transform_rewrite_needs_its_inputs():
    rows, rm, ref, mask, lengths = make_batch()
    args = (rm, ref, mask, lengths, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    with pytest.raises(ValueError, match="old_log_prob"):
        mara_rewrite(*args, beta=0.1, settings=MaraSettings(enable=False, reward_transform="unlikeliness"),
                     final_output_only=False)
    with pytest.raises(ValueError, match="each response's answer"):
        mara_rewrite(*args, beta=0.1, settings=MaraSettings(enable=False, reward_transform="outcome_batch"),
                     final_output_only=False)


def test_settings_built_directly_refuse_mara_with_a_transform():
    with pytest.raises(ValueError, match="alternatives"):
        MaraSettings(reward_transform="pkpo")


@pytest.mark.parametrize(("section", "n", "message"), [
    ({"reward_transform": "pkpo", "reward_transform_value": 10**400}, 4, "must be a finite number, got 1000000"),
    ({"reward_transform": "pkpo"}, 2, r"reward_transform=pkpo at its recommended k 4 cannot run on groups of 2"),
    ({"reward_transform": "pkpo"}, "abc", "rollout.n must be an integer"),
])
def test_reward_transform_value_and_group_size_edges(section, n, message):
    with pytest.raises(ValueError, match=message) as err:
        MaraSettings.from_config(config(**{"actor_rollout_ref.rollout.n": n, "algorithm.mara": section}))
    assert "\n" not in str(err.value)


def test_settings_built_directly_refuse_an_advantage_transform():
    with pytest.raises(ValueError, match="advantage transform"):
        MaraSettings(enable=False, reward_transform="grpo_passk")


def test_a_runtime_group_smaller_than_pkpo_k_names_the_setting():
    rows, rm, ref, mask, lengths = make_batch()
    with pytest.raises(ValueError, match=r"^algorithm\.mara\.reward_transform=pkpo on this batch: k = 4"):
        mara_rewrite(rm, ref, mask, lengths, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                     beta=0.1, settings=MaraSettings(enable=False, reward_transform="pkpo"), final_output_only=False)


def test_record_metadata_names_the_transform():
    from mara_rl.integrations.verl.recording import record_metadata

    cfg = config(**{"actor_rollout_ref.rollout.n": 4, "actor_rollout_ref.model.path": "m",
                    "algorithm.mara": {"reward_transform": "pkpo", "reward_transform_value": 2}})
    meta = record_metadata(cfg, MaraSettings.from_config(cfg), 0.01)
    assert (meta.mara, meta.reward_transform, meta.reward_transform_value) == (False, "pkpo", 2.0)


@pytest.mark.parametrize(("answer_key", "message"), [
    ("(unclosed", "not a valid regular expression"), ("no group", "capturing group"), (3, "a string"),
])
def test_answer_key_errors(answer_key, message):
    with pytest.raises(ValueError, match=rf"^algorithm\.mara\.answer_key.*{message}"):
        MaraSettings.from_config(config(**{"algorithm.mara": {"reward_transform": "outcome_batch",
                                                               "answer_key": answer_key}}))
    s = MaraSettings.from_config(config(**{"algorithm.mara": {"reward_transform": "outcome_batch", "answer_key": r"(\d+)"}}))
    assert s.answer_key == r"(\d+)"
