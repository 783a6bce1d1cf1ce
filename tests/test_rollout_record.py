"""The rollout record (writer, TRL trainers) and the live collapse metrics, against independent recomputations."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mara_rl.integrations.monitor import collapse_metrics
from mara_rl.integrations.record import (
    RecordMetadata,
    RolloutRecorder,
    prompt_id,
    read_record,
    shard_name,
)

NUM_GENERATIONS = 4


def metadata(**overrides):
    fields = dict(host="trl", trainer="T", beta=0.1, kl_direction="reverse", mara=True, mara_tau=1.0,
                  mara_tau_quantile=None, num_generations=2, reward_funcs=["a", "b"], reward_weights=[1.0, 0.5],
                  model="m")
    fields.update(overrides)
    return RecordMetadata(**fields)


def write_step(recorder, step, n=4):
    return recorder.write(
        step, group_ids=np.arange(n) // 2, prompts=["p"] * (n - 1) + [[{"role": "user", "content": "q"}]],
        completions=[f"c{i}" for i in range(n)], completion_lengths=np.arange(n), truncated=[False] * n,
        rewards_per_func=np.c_[np.ones(n), np.r_[np.nan, np.ones(n - 1)]], reward=np.arange(n, dtype=float),
        ref_logprobs=np.r_[-1.0, np.nan, -3.0, -4.0][:n], policy_logprobs=-np.ones(n),
        mara_rewards=np.ones(n), mara_anchors=np.arange(n) % 2 == 0,
    )


def test_writer_columns_nulls_and_ids(tmp_path):
    recorder = RolloutRecorder(tmp_path, metadata())
    path = write_step(recorder, 3)
    assert path.name == shard_name(3, 0) == "step-000000003-rank-00000.parquet"
    assert json.loads((tmp_path / "record.json").read_text())["schema"] == "mara-rl.record/1"
    table = read_record(tmp_path)
    assert table.column_names == [
        "step", "group_id", "prompt_id", "prompt", "completion", "completion_length", "truncated", "reward_a",
        "reward_b", "reward", "ref_logprob", "policy_logprob", "mara_reward", "mara_anchor"]
    assert str(table.schema.field("completion_length").type) == "int32"
    rows = table.to_pylist()
    assert rows[0]["reward_b"] is None and rows[1]["ref_logprob"] is None and rows[2]["ref_logprob"] == -3.0
    assert rows[3]["prompt"] == '[{"content":"q","role":"user"}]'
    import hashlib

    assert rows[3]["prompt_id"] == hashlib.sha256(rows[3]["prompt"].encode()).hexdigest()[:16] == prompt_id(rows[3]["prompt"])
    assert [r["mara_anchor"] for r in rows] == [True, False, True, False]


def test_writer_refuses_other_settings_and_continues_from_a_step(tmp_path):
    write_step(RolloutRecorder(tmp_path, metadata(), rank=0, world_size=2), 0)
    write_step(RolloutRecorder(tmp_path, metadata(), rank=1, world_size=2), 0)
    for step in (1, 2):
        for rank in (0, 1):
            recorder = RolloutRecorder(tmp_path, metadata(), rank=rank, world_size=2)
            recorder.continue_from(step)
            write_step(recorder, step)
    with pytest.raises(ValueError, match="beta=0.1.*beta=0.2"):
        RolloutRecorder(tmp_path, metadata(beta=0.2))
    (tmp_path / "shards" / ".tmp-rank-00000-1-x.parquet").write_bytes(b"half")
    resumed = RolloutRecorder(tmp_path, metadata(), rank=0, world_size=1)  # one process now: rank 1's too
    write_step(resumed, 1)
    names = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert names == [shard_name(0, 0), shard_name(0, 1), shard_name(1, 0)]
    assert read_record(tmp_path).column("step").to_pylist() == [0] * 8 + [1] * 4


@pytest.mark.parametrize("kind", ["float16", "float32", "int64", "torch.bfloat16", "torch.float64"])
def test_writer_takes_every_numeric_kind(kind, tmp_path):
    values = np.array([-1.5, -2.25, 0.0, 3.0])
    if kind.startswith("torch."):
        torch = pytest.importorskip("torch")
        cast = lambda v: torch.tensor(v).to(getattr(torch, kind[6:]))  # noqa: E731
    else:
        cast = lambda v: v.astype(kind)  # noqa: E731
    recorder = RolloutRecorder(tmp_path, metadata(reward_funcs=["a"], reward_weights=[1.0]))
    recorder.write(0, group_ids=cast(np.array([0, 0, 1, 1])), prompts=["p"] * 4, completions=list("abcd"),
                   completion_lengths=cast(np.array([1, 2, 3, 4])), truncated=[True, False, True, False],
                   rewards_per_func=cast(values[:, None]), reward=cast(values), ref_logprobs=cast(values),
                   policy_logprobs=cast(values), mara_rewards=cast(values), mara_anchors=cast(np.array([1, 0, 0, 1])))
    table = read_record(tmp_path)
    expected = np.trunc(values) if kind == "int64" else values  # exact in every float kind
    for column in ("reward_a", "reward", "ref_logprob", "policy_logprob", "mara_reward"):
        assert table.column(column).to_pylist() == expected.tolist()
    assert table.column("mara_anchor").to_pylist() == [True, False, False, True]
    with pytest.raises(ValueError, match="3 values for 4"):
        recorder.write(1, group_ids=np.zeros(4), prompts=["p"] * 4, completions=list("abcd"),
                       completion_lengths=np.ones(4), truncated=np.zeros(4), rewards_per_func=np.ones((4, 1)),
                       reward=np.ones(4), ref_logprobs=np.ones(3))


def test_record_json_names_a_rival_transform_and_reads_older_records(tmp_path):
    RolloutRecorder(tmp_path, metadata(mara=False, reward_transform="pkpo", reward_transform_value=4))
    stored = json.loads((tmp_path / "record.json").read_text())
    assert (stored["reward_transform"], stored["reward_transform_value"]) == ("pkpo", 4.0)
    with pytest.raises(ValueError, match="reward_transform='pkpo'.*reward_transform=None"):
        RolloutRecorder(tmp_path, metadata(mara=False))
    older = tmp_path / "older"  # a record.json written before the transform fields existed
    RolloutRecorder(older, metadata())
    data = json.loads((older / "record.json").read_text())
    del data["reward_transform"], data["reward_transform_value"]
    (older / "record.json").write_text(json.dumps(data))
    RolloutRecorder(older, metadata())  # continues it


def test_metadata_rejects_duplicate_reward_names():
    with pytest.raises(ValueError, match="distinct"):
        metadata(reward_funcs=["a", "a"])


def test_collapse_metrics_by_hand():
    # Prompt a: two good classes with reference masses 3:1 (class "1" twice: one distinct completion), one bad.
    prompts = ["a"] * 4 + ["b"] * 2
    completions = ["1", "1", "2", "3", "x", "y"]
    rewards = [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    ref = np.log([0.3, 0.3, 0.1, 0.6, 0.5, 0.5])
    out = collapse_metrics(prompts, completions, rewards, ref, beta=0.5, tau=1.0)
    p = np.array([0.75, 0.25])
    assert out["collapse/good_classes"] == pytest.approx(1.5)
    assert out["collapse/prompts_two_good"] == pytest.approx(0.5)
    assert out["collapse/vanilla_effective_good"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert out["collapse/mara_effective_good"] == pytest.approx(2.0)
    assert out["collapse/vanilla_unimodal_share"] == 1.0 and out["collapse/mara_unimodal_share"] == 0.0
    keyed = collapse_metrics(prompts, completions, rewards, ref, beta=0.5, tau=1.0, answer_key=lambda t: "12" if t in "12" else t)
    assert keyed["collapse/good_classes"] == pytest.approx(1.0)  # "1" and "2" are one answer
    assert collapse_metrics(prompts, completions, rewards, None) == {
        "collapse/good_classes": 1.5, "collapse/prompts_two_good": 0.5}


torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from _trl_helpers import parity_reward  # noqa: E402


def recorded_run(trainer_cls, config_cls, model_dir, tmp_path, steps=2, peft_config=None, **overrides):
    """Train with a record; returns the trainer, the record and, per step, TRL's output and the policy's log-probs."""
    from datasets import Dataset

    from mara_rl.llm.tasks import random_choice_dataset_rows

    seen = []

    class Spy(trainer_cls):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            if self.model.training:  # the sampling policy, before this batch's update
                seen.append((out, plain_sequence_logprobs(self.model, out, self.temperature)))
            return out

    settings = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=NUM_GENERATIONS,
        max_completion_length=4, beta=0.1, learning_rate=1e-2, max_steps=steps, logging_steps=1, report_to="none",
        use_cpu=True, seed=0, save_strategy="no", disable_tqdm=True, record_rollouts_dir=str(tmp_path / "record"),
        temperature=0.7, bf16=False,  # TRL's default bf16 autocast would make the passes bf16 on CPU too
    )
    settings.update(overrides)
    trainer = Spy(model=model_dir, reward_funcs=parity_reward, args=config_cls(**settings),
                  train_dataset=Dataset.from_list(random_choice_dataset_rows(num_prompts=32)), peft_config=peft_config)
    trainer.train()
    folder = settings["record_rollouts_dir"]
    return trainer, read_record(folder).to_pandas() if folder else None, seen


@torch.no_grad()
def plain_sequence_logprobs(model, out, temperature):
    """log p(y|x) over the unmasked completion tokens, one plain forward pass with full logits."""
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    mask = torch.cat([out["prompt_mask"], torch.ones_like(out["completion_ids"])], dim=1)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].double()
    logp = torch.log_softmax(logits / temperature, dim=-1).gather(2, ids[:, 1:, None])[..., 0]
    t = out["completion_ids"].size(1)
    return (logp[:, -t:] * out["completion_mask"]).sum(dim=1)


def check_record(record, seen, reference, temperature, *, mara, beta, kl="reverse"):
    from mara_rl.augment import mara_rewards

    assert sorted(record["step"].unique()) == list(range(len(seen)))
    for step, (out, policy) in enumerate(seen):
        rows = record[record["step"] == step].reset_index(drop=True)
        lengths = out["completion_mask"].sum(dim=1)
        ids = [c[: int(n)].tolist() for c, n in zip(out["completion_ids"], lengths)]
        assert rows["completion_length"].tolist() == [len(c) for c in ids]
        assert rows["group_id"].tolist() == [i // NUM_GENERATIONS for i in range(len(ids))]
        rewards = np.array(parity_reward(ids))
        np.testing.assert_array_equal(rows["reward_parity_reward"], rewards)
        np.testing.assert_array_equal(rows["reward"], rewards)
        np.testing.assert_allclose(rows["policy_logprob"], policy.numpy(), atol=1e-4)
        if reference is None:
            assert rows["ref_logprob"].isna().all()
            continue
        ref = plain_sequence_logprobs(reference, out, temperature).numpy()
        np.testing.assert_allclose(rows["ref_logprob"], ref, atol=1e-4)
        if mara:
            expected = mara_rewards(rewards, rows["ref_logprob"].to_numpy(), beta=beta, tau=1.0,
                                    group_ids=rows["group_id"].to_numpy(), kl=kl)
            np.testing.assert_allclose(rows["mara_reward"], expected.rewards, atol=1e-5)
            anchors = expected.anchor_index[expected.anchor_index >= 0]
            assert sorted(np.flatnonzero(rows["mara_anchor"].to_numpy(dtype=bool))) == sorted(anchors)
        else:
            assert rows["mara_reward"].isna().all() and rows["mara_anchor"].isna().all()


@pytest.mark.parametrize("kind,mara,kl", [("grpo", True, "reverse"), ("grpo", False, "forward"),
                                          ("rloo", True, "forward"), ("rloo", False, "reverse")])
def test_recorded_logprobs_and_rewards_equal_a_recomputation(kind, mara, kl, model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer, MaraRLOOConfig, MaraRLOOTrainer

    classes = (MaraGRPOTrainer, MaraGRPOConfig) if kind == "grpo" else (MaraRLOOTrainer, MaraRLOOConfig)
    extra = dict(mara_tau=1.0) if mara else {}
    trainer, record, seen = recorded_run(*classes, model_dir, tmp_path, mara=mara, kl_direction=kl, **extra)
    reference = AutoModelForCausalLM.from_pretrained(model_dir)
    check_record(record, seen, reference, 0.7, mara=mara, beta=0.1, kl=kl)
    meta = json.loads((tmp_path / "record" / "record.json").read_text())
    assert meta["trainer"] == "Spy" and meta["host"] == "trl" and meta["num_generations"] == NUM_GENERATIONS
    assert (meta["kl_direction"], meta["mara"], meta["reward_funcs"]) == (kl, mara, ["parity_reward"])
    logged = [h for h in trainer.state.log_history if "collapse/good_classes" in h]
    assert len(logged) == 2


@pytest.mark.parametrize("beta", [0.1, 0.0], ids=["trl-reference-pass", "record-reference-pass"])
def test_lora_records_the_base_model_as_reference(beta, model_dir, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer

    lora = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    mara = dict(mara=True, mara_tau=1.0) if beta else dict(record_reference_pass=True)
    _, record, seen = recorded_run(MaraGRPOTrainer, MaraGRPOConfig, model_dir, tmp_path, peft_config=lora,
                                   beta=beta, **mara)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    check_record(record, seen, base, 0.7, mara=bool(beta), beta=beta)
    # The adapter starts away from the base (init_lora_weights=False): policy and reference differ.
    assert not np.allclose(record["policy_logprob"], record["ref_logprob"], atol=1e-3)


@pytest.mark.parametrize("reference_pass", [True, False])
def test_beta_zero_runs_a_reference_pass_only_when_asked(reference_pass, model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer

    trainer, record, seen = recorded_run(MaraGRPOTrainer, MaraGRPOConfig, model_dir, tmp_path, beta=0.0,
                                         record_reference_pass=reference_pass)
    assert trainer.ref_model is None
    reference = AutoModelForCausalLM.from_pretrained(model_dir) if reference_pass else None
    check_record(record, seen, reference, 0.7, mara=False, beta=0.0)


def test_truncated_completions_masked_by_trl_record_null_logprobs(model_dir, tmp_path):
    from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer

    _, record, seen = recorded_run(MaraGRPOTrainer, MaraGRPOConfig, model_dir, tmp_path, steps=1,
                                   mask_truncated_completions=True)
    truncated = record["truncated"].to_numpy(dtype=bool)
    assert truncated.any() and not truncated.all()
    assert record.loc[truncated, ["ref_logprob", "policy_logprob"]].isna().all().all()
    assert record.loc[~truncated, ["ref_logprob", "policy_logprob"]].notna().all().all()


def test_a_bad_answer_key_is_refused_before_training(model_dir, tmp_path):
    from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer

    with pytest.raises(ValueError, match="collapse_answer_key: .*capturing group"):
        recorded_run(MaraGRPOTrainer, MaraGRPOConfig, model_dir, tmp_path, collapse_answer_key="no group")


def test_mara_settings_are_logged_once(model_dir, tmp_path, caplog):
    from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer

    with caplog.at_level("INFO", logger="mara_rl"):
        recorded_run(MaraGRPOTrainer, MaraGRPOConfig, model_dir, tmp_path, steps=1, mara=True, mara_tau=0.5,
                     record_rollouts_dir=None)
    lines = [r.getMessage() for r in caplog.records if "MARA" in r.getMessage()]
    assert lines == ["Spy: MARA on (tau=0.5, beta=0.1, reverse KL)"]


# A run killed at any instant and resumed from its checkpoint records every step exactly once.

def resumable_worker(model_dir: str, out: str, kill_at: int) -> None:
    from datasets import Dataset
    from transformers import TrainerCallback

    from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer
    from mara_rl.llm.tasks import random_choice_dataset_rows

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == kill_at:
                os._exit(3)  # as a kill: no cleanup, no checkpoint of this step

    args = MaraGRPOConfig(
        output_dir=str(Path(out) / "out"), per_device_train_batch_size=8, num_generations=NUM_GENERATIONS,
        max_completion_length=4, beta=0.1, mara=True, mara_tau=1.0, learning_rate=1e-3, max_steps=5,
        report_to="none", bf16=False, use_cpu=True, seed=0, save_strategy="steps", save_steps=2, disable_tqdm=True,
        record_rollouts_dir=str(Path(out) / "record"),
    )
    trainer = MaraGRPOTrainer(model=model_dir, reward_funcs=parity_reward, args=args, callbacks=[Kill()],
                              train_dataset=Dataset.from_list(random_choice_dataset_rows(num_prompts=64)))
    trainer.train(resume_from_checkpoint=kill_at < 0 or None)


def test_killed_and_resumed_run_records_every_step_once(model_dir, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run(kill_at):
        return subprocess.run([sys.executable, __file__, model_dir, str(tmp_path), str(kill_at)], env=env,
                              capture_output=True, text=True, timeout=600)

    killed = run(3)
    assert killed.returncode == 3, killed.stderr[-3000:]
    before = read_record(tmp_path / "record").to_pandas()
    assert sorted(before["step"].unique()) == [0, 1, 2]  # generated at steps 0-2; checkpoint at step 2
    stale = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "record" / "shards").iterdir()}
    resumed = run(-1)  # resume from the last checkpoint (step 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = read_record(tmp_path / "record").to_pandas()
    assert record.groupby("step").size().to_dict() == {s: 8 for s in range(5)}
    assert not record.duplicated(["step", "group_id", "completion", "policy_logprob"]).any()
    shards = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "record" / "shards").iterdir()}
    assert shards[shard_name(0, 0)] == stale[shard_name(0, 0)] and shards[shard_name(1, 0)] == stale[shard_name(1, 0)]
    assert shards[shard_name(2, 0)] != stale[shard_name(2, 0)]  # regenerated after the checkpoint


if __name__ == "__main__":
    resumable_worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
