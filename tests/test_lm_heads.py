"""The token estimator rebuilds each architecture's logits from its hidden states (tiny random models, CPU).

For every model family TRL's tests train (and the logit transforms TRL's fused LM head knows: a
soft-cap, a logit scale, a head bias), ``lm_head_of(model).logits`` of the backbone's last hidden
states must equal the model's own logits, and their log-softmax TRL's fused per-token log-probs, with
and without ``cast_lm_head_to_fp32``. A model that transforms its logits in a way the head does not
describe is refused by ``check_token_estimator_model``.
"""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("trl")

from _trl_helpers import ARCHS, tiny_arch_model  # noqa: E402
from trl.trainer.utils import add_fused_lm_head  # noqa: E402

from mara_rl.integrations.trl.trainers import (  # noqa: E402
    capture_completion_hidden,
    check_token_estimator_model,
    lm_head_of,
)

VOCAB = 96
LENGTH = 10
TRANSFORMED = {"gemma2", "gemma3", "cohere", "cohere2", "phi", "granite", "falcon_h1"}


def build(arch, dtype=torch.float32):
    return tiny_arch_model(arch, VOCAB).to(dtype)


def token_ids():
    return (torch.arange(LENGTH) * 7 % VOCAB)[None, :]


def rebuilt_logits(model, ids):
    """``[1, L - 1, V]`` logits predicting tokens 1..L-1, rebuilt from the captured backbone states."""
    hidden = []
    with torch.no_grad(), capture_completion_hidden(model, LENGTH - 1, hidden):
        own = model(input_ids=ids).logits[:, :-1]
    (states,) = hidden
    return lm_head_of(model).logits(states[0]).unsqueeze(0), own, states[0]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_rebuilt_logits_are_the_models_own(arch):
    model = build(arch)
    rebuilt, own, states = rebuilt_logits(model, token_ids())
    assert torch.allclose(rebuilt, own.float(), rtol=1e-5, atol=1e-5), float((rebuilt - own).abs().max())
    plain = states @ model.get_output_embeddings().weight.t()
    if arch in TRANSFORMED:  # the transform is not the identity here: the comparison can tell
        assert (plain - own[0]).abs().max() > 0.1
    check_token_estimator_model(model)


def cast_lm_head_to_fp32(model):
    """What TRL's ``cast_lm_head_to_fp32`` leaves: an fp32 head that projects fp32 hidden states (a tied
    input embedding, cast along, hands the backbone its states in the model's dtype again)."""
    dtype = model.get_output_embeddings().weight.dtype
    head = model.get_output_embeddings().float()
    head.forward = lambda hidden: torch.nn.functional.linear(hidden.float(), head.weight, head.bias)
    if model.get_input_embeddings().weight.dtype == torch.float32:
        model.get_input_embeddings().register_forward_hook(lambda module, args, out: out.to(dtype))


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("cast", [False, True], ids=["model-dtype-head", "fp32-head"])
def test_rebuilt_logprobs_are_trls_fused_head_logprobs_in_bfloat16(arch, cast):
    model = build(arch, torch.bfloat16)
    add_fused_lm_head(model, cast_lm_head_to_fp32=cast)
    if cast:
        cast_lm_head_to_fp32(model)
    ids = token_ids()
    with torch.no_grad():
        fused = model(input_ids=ids, labels=ids, fused_lm_head=True).log_probs[0]
    rebuilt, own, _ = rebuilt_logits(model, ids)
    ours = torch.log_softmax(rebuilt[0], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    assert torch.allclose(ours, fused.float(), rtol=0, atol=1e-4 if cast else 2e-2), float((ours - fused).abs().max())
    # and the model's own logits, to the precision of the dtype they are computed in
    tolerance = (1e-5 if cast else 2e-2) * max(1.0, float(own.abs().max()))
    assert torch.allclose(rebuilt, own.float(), rtol=0, atol=tolerance), float((rebuilt - own).abs().max())
    check_token_estimator_model(model)


class LogitScaledLlama(transformers.LlamaForCausalLM):
    """A model whose forward scales its logits by a factor no config field names (as remote code may)."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 3.0
        return out


def test_a_logit_transform_the_head_does_not_describe_is_refused():
    model = LogitScaledLlama(tiny_arch_model("llama", VOCAB).config).eval()
    with pytest.raises(ValueError, match="cannot rebuild the logits of this 'llama' model") as caught:
        check_token_estimator_model(model)
    assert "forward_kl_estimator='sequence'" in str(caught.value)


def test_forward_mara_trains_soft_capped_gemma2_in_bfloat16_with_the_head_cast_to_fp32(tmp_path):
    from _trl_helpers import NUM_GENERATIONS, parity_reward, save_tiny_arch_model
    from datasets import Dataset

    from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer
    from mara_rl.llm.tasks import random_choice_dataset_rows

    path = save_tiny_arch_model(tmp_path / "gemma2", "gemma2", dtype=torch.bfloat16)
    args = MaraGRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8,
                          num_generations=NUM_GENERATIONS, max_completion_length=4, beta=0.1, learning_rate=1e-3,
                          max_steps=2, logging_steps=1, report_to="none", use_cpu=True, seed=0, save_strategy="no",
                          disable_tqdm=True, mara=True, mara_tau=1.0, kl_direction="forward",
                          cast_lm_head_to_fp32=True, model_init_kwargs={"dtype": "bfloat16"})
    trainer = MaraGRPOTrainer(model=path, reward_funcs=parity_reward, args=args,
                              train_dataset=Dataset.from_list(random_choice_dataset_rows(num_prompts=16)))
    head = lm_head_of(trainer.ref_model)
    assert head.softcap == 0.5 and head.weight.dtype == torch.float32  # TRL's cast, the model's soft-cap
    out = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    hidden = out["mara_ref_hidden"]
    assert trainer.ref_model.model.norm.weight.dtype == torch.bfloat16  # the backbone stays bf16
    logits = head.logits(hidden.reshape(-1, hidden.size(-1))).view(*hidden.shape[:2], -1) / trainer.temperature
    rebuilt = torch.log_softmax(logits, -1).gather(2, out["completion_ids"][..., None])[..., 0]
    mask = out["completion_mask"].bool()
    assert torch.allclose(rebuilt[mask], out["mara_ref_token_logps"][mask].float(), atol=1e-4)
    torch.set_num_threads(1)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor([h["loss"], h["kl"]])).all() for h in logs)
    assert logs[-1]["kl"] > 0.0  # the policy moved off the reference after one step
