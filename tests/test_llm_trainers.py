"""MaraGRPOTrainer / MaraRLOOTrainer mechanics on a tiny untrained Llama (CPU, a few seconds each)."""

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer  # noqa: E402

from _trl_helpers import NUM_GENERATIONS, parity_reward, save_tiny_arch_model, tiny_trainer  # noqa: E402

from mara_rl.augment import mara_rewards  # noqa: E402
from mara_rl.integrations.forward_kl import prefix_importance_weights, token_forward_kl  # noqa: E402
from mara_rl.integrations.trl.trainers import (  # noqa: E402
    MaraGRPOConfig,
    MaraGRPOTrainer,
    MaraRLOOConfig,
    MaraRLOOTrainer,
    forward_kl_surrogate,
)


def make_trainer(trainer_cls, config_cls, model_dir, tmp_path, **overrides):
    return tiny_trainer(trainer_cls, config_cls, model_dir, tmp_path / "out", **{"max_steps": 2, **overrides})


def final_params(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


@pytest.mark.parametrize(
    "stock,ours",
    [((GRPOTrainer, GRPOConfig), (MaraGRPOTrainer, MaraGRPOConfig)),
     ((RLOOTrainer, RLOOConfig), (MaraRLOOTrainer, MaraRLOOConfig))],
    ids=["grpo", "rloo"],
)
def test_without_mara_reverse_kl_equals_the_stock_trainer(stock, ours, model_dir, tmp_path):
    reference = make_trainer(*stock, model_dir, tmp_path / "stock")
    reference.train()
    subclass = make_trainer(*ours, model_dir, tmp_path / "ours", mara=False, kl_direction="reverse")
    subclass.train()
    stock_logs = [h for h in reference.state.log_history if "loss" in h]
    our_logs = [h for h in subclass.state.log_history if "loss" in h]
    assert len(stock_logs) == len(our_logs) == 2
    for a, b in zip(stock_logs, our_logs):
        for key in ("loss", "reward", "kl"):
            assert a[key] == b[key], key
    assert torch.equal(final_params(reference), final_params(subclass))
    assert not any(k.startswith("mara/") for h in our_logs for k in h)


def plain_sequence_logprobs(model, trainer, out):
    """log p(y|x) over TRL's completion mask, recomputed with a plain forward pass of ``model``."""
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits / trainer.temperature, dim=-1).gather(2, ids[:, 1:, None])[..., 0]
    t = out["completion_ids"].size(1)
    return (logp[:, -t:] * out["completion_mask"]).sum(dim=1)


def reference_sequence_logprobs(trainer, out):
    """log pi_ref(y|x) recomputed with a plain forward pass of the reference model."""
    return plain_sequence_logprobs(trainer.ref_model, trainer, out)


@pytest.mark.parametrize("kl", ["reverse", "forward"])
def test_grpo_advantages_are_those_of_core_mara_on_the_batch(kl, model_dir, tmp_path):
    beta = 0.1
    trainer = make_trainer(MaraGRPOTrainer, MaraGRPOConfig, model_dir, tmp_path, mara=True, mara_tau=1.0,
                           kl_direction=kl, scale_rewards="none", beta=beta)
    batch = next(iter(trainer.get_train_dataloader()))
    out = trainer._generate_and_score_completions(batch)

    rewards = torch.tensor(parity_reward([ids[m.bool()].tolist() for ids, m in
                                          zip(out["completion_ids"], out["completion_mask"])]))
    ref = reference_sequence_logprobs(trainer, out)
    groups = torch.arange(len(rewards)) // NUM_GENERATIONS
    expected = mara_rewards(rewards.double(), ref.double(), beta=beta, tau=1.0, group_ids=groups, kl=kl)
    aug = expected.rewards.float()
    if kl == "forward":
        assert torch.allclose(out["mara_ref_logps"], expected.ref_logprobs.float(), atol=1e-4)
    else:
        assert "mara_ref_logps" not in out
    group_mean = aug.view(-1, NUM_GENERATIONS).mean(dim=1).repeat_interleave(NUM_GENERATIONS)
    assert torch.allclose(out["advantages"], aug - group_mean, atol=1e-4)
    metrics = trainer._metrics["train" if trainer.model.training else "eval"]
    assert metrics["mara/frac_groups_augmented"][-1] == pytest.approx(expected.fraction_groups_augmented)
    assert metrics["mara/reward_raw"][-1] == pytest.approx(rewards.mean().item())


def perturbed_forward_trainer(trainer_cls, config_cls, model_dir, tmp_path, beta, **overrides):
    """A forward-KL trainer, one scored batch, and the policy then moved off the reference (so KL is not ~0)."""
    # float32 (TRL's CPU default is bf16 autocast), so plain forward passes match TRL's log-probs
    trainer = make_trainer(trainer_cls, config_cls, model_dir, tmp_path, kl_direction="forward", beta=beta,
                           bf16=False, **overrides)
    out = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        torch.manual_seed(1)
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    trainer.model.eval()  # eval mode: no gradient-accumulation scaling
    return trainer, out


def test_sequence_forward_kl_loss_adds_beta_times_the_estimator(model_dir, tmp_path):
    beta = 0.1
    trainer, out = perturbed_forward_trainer(MaraGRPOTrainer, MaraGRPOConfig, model_dir, tmp_path, beta,
                                             loss_type="grpo", forward_kl_estimator="sequence")
    assert "mara_ref_hidden" not in out
    loss = trainer._compute_loss(trainer.model, out)
    kl_logged = trainer._metrics["eval"]["kl"][-1]
    trainer.args.kl_direction = "reverse"
    trainer.beta = 0.0
    no_kl = trainer._compute_loss(trainer.model, out)
    assert kl_logged > 1e-3
    assert loss.item() == pytest.approx(no_kl.item() + beta * kl_logged, rel=1e-4, abs=1e-6)
    seq_logps = plain_sequence_logprobs(trainer.model, trainer, out)
    value = forward_kl_surrogate(seq_logps, out["mara_ref_logps"])[1]
    assert kl_logged == pytest.approx(value.mean().item(), rel=1e-4)


def completion_logits(model, trainer, out):
    """``[B, T, V]`` tempered logits predicting each completion token, by a plain forward pass of ``model``."""
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    t = out["completion_ids"].size(1)
    return model(input_ids=ids, attention_mask=mask).logits[:, -t - 1 : -1].float() / trainer.temperature


@pytest.mark.parametrize("trainer_cls,config_cls", [(MaraGRPOTrainer, MaraGRPOConfig),
                                                    (MaraRLOOTrainer, MaraRLOOConfig)], ids=["grpo", "rloo"])
def test_token_forward_kl_loss_is_the_full_vocabulary_kl_of_the_two_models(trainer_cls, config_cls, model_dir,
                                                                          tmp_path):
    check_full_vocabulary_kl(trainer_cls, config_cls, model_dir, tmp_path)


@pytest.mark.parametrize("arch,trainer_cls,config_cls", [("gemma2", MaraGRPOTrainer, MaraGRPOConfig),
                                                         ("phi", MaraGRPOTrainer, MaraGRPOConfig),
                                                         ("granite", MaraRLOOTrainer, MaraRLOOConfig)],
                         ids=["gemma2-softcap-grpo", "phi-bias-grpo", "granite-scale-rloo"])
def test_token_forward_kl_through_soft_capped_scaled_and_biased_heads(arch, trainer_cls, config_cls, tmp_path):
    check_full_vocabulary_kl(trainer_cls, config_cls, save_tiny_arch_model(tmp_path / arch, arch), tmp_path)


def check_full_vocabulary_kl(trainer_cls, config_cls, model_dir, tmp_path):
    """The trainer's loss and gradients against the forward KL of both models' own full logits."""
    beta = 0.1
    extra = dict(loss_type="grpo") if trainer_cls is MaraGRPOTrainer else {}
    trainer, out = perturbed_forward_trainer(trainer_cls, config_cls, model_dir, tmp_path, beta, **extra)
    metric = "kl" if trainer_cls is MaraGRPOTrainer else "mara/kl_forward"
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    loss = trainer._compute_loss(trainer.model, out)
    grads = torch.autograd.grad(loss, params)
    kl_logged = trainer._metrics["eval"][metric][-1]
    trainer.args.kl_direction, beta_kept = "reverse", trainer.beta
    trainer.beta = 0.0
    no_kl = trainer._compute_loss(trainer.model, out)
    no_kl_grads = torch.autograd.grad(no_kl, params)
    # The same KL from full logits of plain forward passes of the policy and the reference model
    mask = out["completion_mask"]
    with torch.no_grad():
        ref_logits = completion_logits(trainer.ref_model, trainer, out)
    policy_logits = completion_logits(trainer.model, trainer, out)
    weights = mask.float()
    if trainer_cls is MaraRLOOTrainer:  # RLOO keeps the sampler's log-probs: the policy moved since, so W != 1
        logps = torch.log_softmax(policy_logits, -1).gather(2, out["completion_ids"][..., None])[..., 0]
        weights = weights * prefix_importance_weights(logps, out["mara_old_token_logps"], mask)
        assert (weights[mask.bool()] != 1).any()
    else:
        assert "old_per_token_logps" not in out  # on-policy GRPO: TRL keeps no old log-probs, W = 1
    exact_sum, exact_kl = token_forward_kl(policy_logits, ref_logits, mask, weights=weights)
    exact = exact_sum / mask.size(0)
    exact_grads = torch.autograd.grad(exact, params)
    assert kl_logged > 1e-3
    assert kl_logged == pytest.approx(exact_kl.sum(dim=1).mean().item(), rel=1e-4)
    assert loss.item() == pytest.approx(no_kl.item() + beta_kept * exact.item(), rel=1e-4, abs=1e-6)
    for g, g0, ge in zip(grads, no_kl_grads, exact_grads):
        assert torch.allclose(g, g0 + beta_kept * ge, atol=1e-5, rtol=1e-4)


def test_forward_kl_surrogate_is_unbiased_in_value_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(6, requires_grad=True)
    ref = torch.log_softmax(torch.randn(6), dim=0)
    logp = torch.log_softmax(logits, dim=0)
    pi = logp.exp().detach()
    surrogate, value = forward_kl_surrogate(logp, ref)
    exact_kl = (ref.exp() * (ref - logp)).sum()
    assert (value >= 0).all()
    assert (pi * value).sum().item() == pytest.approx(exact_kl.item(), rel=1e-5)
    (grad_estimate,) = torch.autograd.grad((pi * surrogate).sum(), logits, retain_graph=True)
    (grad_exact,) = torch.autograd.grad(exact_kl, logits)
    assert torch.allclose(grad_estimate, grad_exact, atol=1e-6)
    same = forward_kl_surrogate(ref, ref)[1]
    assert torch.allclose(same, torch.zeros_like(same))


@pytest.mark.parametrize("trainer_cls,config_cls", [(MaraGRPOTrainer, MaraGRPOConfig),
                                                    (MaraRLOOTrainer, MaraRLOOConfig)], ids=["grpo", "rloo"])
@pytest.mark.parametrize("kl", ["reverse", "forward"])
def test_training_logs_mara_metrics(trainer_cls, config_cls, kl, model_dir, tmp_path):
    trainer = make_trainer(trainer_cls, config_cls, model_dir, tmp_path, mara=True, mara_tau=1.0,
                           kl_direction=kl, max_steps=1)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h][0]
    assert math.isfinite(logs["loss"])
    assert 0.0 <= logs["mara/frac_groups_augmented"] <= 1.0
    for key in ("mara/mean_augmentation", "mara/reward_raw"):
        assert math.isfinite(logs[key])
    if logs["mara/frac_groups_augmented"] > 0:
        assert logs["mara/anchor_ref_logprob"] < 0.0


@pytest.mark.parametrize("config_cls", [MaraGRPOConfig, MaraRLOOConfig], ids=["grpo", "rloo"])
def test_config_validation(config_cls, tmp_path):
    base = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="beta > 0"):
        config_cls(**base, mara=True, beta=0.0)
    with pytest.raises(ValueError, match="kl_direction"):
        config_cls(**base, kl_direction="sideways")
    with pytest.raises(ValueError, match="at most one"):
        config_cls(**base, mara=True, beta=0.1, mara_tau=1.0, mara_tau_quantile=0.9)
    with pytest.raises(ValueError, match="mara_tau_quantile"):
        config_cls(**base, mara=True, beta=0.1, mara_tau_quantile=1.5)
    cfg = config_cls(**base, mara=True, beta=0.1)
    assert cfg.mara_tau_quantile == 0.9 and cfg.mara_tau is None
    if config_cls is MaraGRPOConfig:  # normalised rewards are z-scores: a reward value means nothing there
        with pytest.raises(ValueError, match="give mara_tau_quantile instead"):
            config_cls(**base, mara=True, beta=0.1, multi_objective_aggregation="normalize_then_sum", mara_tau=1.0)
        cfg = config_cls(**base, mara=True, beta=0.1, multi_objective_aggregation="normalize_then_sum")
        assert cfg.mara_tau_quantile == 0.9
    assert config_cls(**base, beta=0.0).mara is False


@pytest.mark.parametrize("kl,estimator", [("reverse", "token"), ("forward", "token"), ("forward", "sequence")])
def test_rloo_advantages_are_those_of_core_mara_on_the_batch(kl, estimator, model_dir, tmp_path):
    beta = 0.1
    trainer = make_trainer(MaraRLOOTrainer, MaraRLOOConfig, model_dir, tmp_path, mara=True, mara_tau=1.0,
                           kl_direction=kl, beta=beta, forward_kl_estimator=estimator)
    out = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    rewards = torch.tensor(parity_reward([ids[m.bool()].tolist() for ids, m in
                                          zip(out["completion_ids"], out["completion_mask"])]))
    ref = reference_sequence_logprobs(trainer, out)
    old = out["old_logps"]  # the policy before any update
    groups = torch.arange(len(rewards)) // NUM_GENERATIONS
    expected = mara_rewards(rewards.double(), ref.double(), beta=beta, tau=1.0, group_ids=groups, kl=kl)
    if kl == "reverse":  # TRL's penalty -beta * (log pi_old - log pi_ref)
        shaped = expected.rewards.float() - beta * (old - ref)
    elif estimator == "sequence":  # the forward penalty +beta * rho, rho with the anchor's log pi_ref on good samples
        shaped = expected.rewards.float() + beta * torch.exp(expected.ref_logprobs.float() - old)
    else:  # the token estimator is a loss term: no KL on the reward side
        shaped = expected.rewards.float()
    grouped = shaped.view(-1, NUM_GENERATIONS)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (NUM_GENERATIONS - 1)
    assert torch.allclose(out["advantages"], (grouped - baseline).flatten(), atol=1e-4)


def one_perturbed_step(model_dir, tmp_path, length, mara, trainer_cls=MaraGRPOTrainer, config_cls=MaraGRPOConfig):
    """One step on ``length``-token completions (stop tokens suppressed) from a policy moved off the reference."""
    trainer = make_trainer(trainer_cls, config_cls, model_dir, tmp_path, kl_direction="forward", mara=mara,
                           mara_tau=1.0 if mara else None, max_completion_length=length, max_steps=1,
                           generation_kwargs={"min_new_tokens": length}, bf16=False)
    with torch.no_grad():
        torch.manual_seed(1)
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    torch.set_num_threads(1)
    trainer.train()
    (log,) = [h for h in trainer.state.log_history if "loss" in h]
    return log


@pytest.mark.parametrize("trainer_cls,config_cls", [(MaraGRPOTrainer, MaraGRPOConfig),
                                                    (MaraRLOOTrainer, MaraRLOOConfig)], ids=["grpo", "rloo"])
@pytest.mark.parametrize("length", [32, pytest.param(256, marks=pytest.mark.slow)])
def test_token_forward_kl_with_algorithm_2_stays_within_10x_of_forward_alone(length, trainer_cls, config_cls,
                                                                             model_dir, tmp_path):
    alone = one_perturbed_step(model_dir, tmp_path / "alone", length, False, trainer_cls, config_cls)
    with_mara = one_perturbed_step(model_dir, tmp_path / "mara", length, True, trainer_cls, config_cls)
    kl = "kl" if trainer_cls is MaraGRPOTrainer else "mara/kl_forward"
    assert with_mara["mara/frac_groups_augmented"] > 0  # Alg. 2 acted
    assert with_mara["completions/mean_length"] == alone["completions/mean_length"] == length
    for log in (alone, with_mara):
        assert all(math.isfinite(log[k]) for k in ("loss", "grad_norm", kl))
        assert log[kl] > 0
    assert with_mara[kl] == pytest.approx(alone[kl], rel=1e-4)  # the same completions, so the same KL
    for key in ("loss", "grad_norm"):
        ratio = abs(with_mara[key]) / abs(alone[key])
        assert 0.1 <= ratio <= 10.0, (key, with_mara[key], alone[key])


def test_the_older_import_paths_name_the_same_modules():
    import mara_rl.integrations.forward_kl as forward_kl
    import mara_rl.integrations.trl.trainers as trainers
    import mara_rl.llm.forward_kl as old_forward_kl
    import mara_rl.llm.trainers as old_trainers

    assert old_trainers is trainers and old_forward_kl is forward_kl


@pytest.mark.parametrize("config_cls", [MaraGRPOConfig, MaraRLOOConfig], ids=["grpo", "rloo"])
def test_mara_refuses_beta_zero_and_says_what_mara_would_be_there(config_cls, tmp_path):
    base = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none", mara=True)
    for beta in ({"beta": 0.0}, {"beta": 0}, {} if config_cls is MaraGRPOConfig else {"beta": 0.0}):
        with pytest.raises(ValueError) as caught:
            config_cls(**base, **beta)  # GRPO: TRL's default beta is 0.0
        message = str(caught.value)
        assert "beta > 0" in message and "r_i = R(z) for every sample with reward >= tau" in message
        assert "reference model" in message and "beta=0.04" in message
    # The formula's limit, by the core: as beta -> 0 every good reward becomes the anchor's, R(z)
    rewards = torch.tensor([0.2, 0.9, 0.95, 1.0], dtype=torch.float64)
    ref = torch.tensor([-1.0, -2.0, -0.5, -9.0], dtype=torch.float64)
    out = mara_rewards(rewards, ref, beta=1e-300, tau=0.9)
    assert out.rewards.tolist() == [0.2, 0.95, 0.95, 0.95]  # z = the good sample with log pi_ref -0.5
