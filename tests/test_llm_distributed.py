"""MARA across processes: ``torchrun --nproc_per_node 2`` (gloo, CPU) against a single process.

Run under torchrun, this file is the worker: each rank trains one GRPO step where a prompt group
spans both ranks (6 completions per rank, groups of 4) and records what ``_calculate_rewards``
returned. The test then feeds the same completions to a single-process trainer and checks that the
augmented rewards agree, and that each group has one anchor: ``r_i + beta * log pi_ref(y_i|x)`` is
the same for every good sample of a group, and the most reference-likely good sample keeps ``R``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NUM_GENERATIONS = 4
PER_RANK = 6
BETA = 0.1


def parity_reward(completion_ids, **kwargs):
    """1 when the first completion token id is even: about half the samples are 'good'."""
    return [float(len(ids) > 0 and ids[0] % 2 == 0) for ids in completion_ids]


def make_trainer(model_dir, out_dir, per_device_batch, record_dir=None):
    from datasets import Dataset

    from mara_rl.llm.tasks import random_choice_dataset_rows
    from mara_rl.integrations.trl.trainers import MaraGRPOConfig, MaraGRPOTrainer

    class RecordingTrainer(MaraGRPOTrainer):
        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            from accelerate.utils import gather_object

            adjusted = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            if not hasattr(self, "recorded"):
                self.recorded = {"ids": gather_object([list(map(int, c)) for c in completion_ids_list]),
                                 "augmented": adjusted[:, 0].tolist(),
                                 "completions": gather_object(list(completions))}
            return adjusted

    args = MaraGRPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=per_device_batch, num_generations=NUM_GENERATIONS,
        max_completion_length=4, beta=BETA, mara=True, mara_tau=1.0, max_steps=1, report_to="none",
        use_cpu=True, seed=0, save_strategy="no", disable_tqdm=True, learning_rate=1e-3, bf16=False,
        record_rollouts_dir=record_dir,
    )
    dataset = Dataset.from_list(random_choice_dataset_rows(num_prompts=48))
    return RecordingTrainer(model=model_dir, reward_funcs=parity_reward, args=args, train_dataset=dataset)


def worker(out_dir: str, model_dir: str) -> None:
    trainer = make_trainer(model_dir, Path(out_dir) / "trainer", PER_RANK, record_dir=str(Path(out_dir) / "record"))
    trainer.train()
    rank = trainer.accelerator.process_index
    record = dict(trainer.recorded, world_size=trainer.accelerator.num_processes)
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(record))
    # Leave without running destructors: torch 2.13's gloo process group, freed with the DDP reducer
    # at exit, joins its worker thread while holding the GIL that thread waits for (a hang, or
    # "terminate called without an active exception").
    trainer.accelerator.wait_for_everyone()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.mark.slow
def test_two_processes_give_one_anchor_per_group_and_the_single_process_rewards(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")
    from mara_rl.llm.tiny import tiny_untrained_model

    model_dir = tmp_path / "model"
    model, tokenizer = tiny_untrained_model(seed=0)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, str(tmp_path), str(model_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    assert ranks[0] == ranks[1]  # every rank sees the same gathered, augmented batch
    ids, augmented = ranks[0]["ids"], torch.tensor(ranks[0]["augmented"])
    assert len(ids) == 2 * PER_RANK

    # The same completions through a single-process trainer.
    single = make_trainer(str(model_dir), tmp_path / "single", 2 * PER_RANK)
    prompt = single.processing_class(single.train_dataset[0]["prompt"])["input_ids"]
    width = max(len(c) for c in ids)
    pad = single.processing_class.pad_token_id
    completion = torch.tensor([c + [pad] * (width - len(c)) for c in ids])
    input_ids = torch.cat([torch.tensor([prompt] * len(ids)), completion], dim=1)
    attention = torch.cat([torch.ones(len(ids), len(prompt), dtype=torch.long),
                           torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in ids])], dim=1)
    single.model.train()
    inputs = [dict(single.train_dataset[0]) for _ in ids]
    completions = single.processing_class.batch_decode(completion, skip_special_tokens=True)
    with torch.no_grad(), single._mara_capture("scoring"):  # as inside _generate_and_score_completions
        ref_tokens = single._get_per_token_logps_and_entropies(single.ref_model, input_ids, attention, width)[0]
        expected = single._calculate_rewards(inputs, [x["prompt"] for x in inputs], completions, ids)[:, 0]
    assert torch.allclose(augmented, expected, atol=1e-5)

    # One anchor per group, including the group that spans both ranks (samples 4-7).
    mask = torch.arange(width)[None, :] < torch.tensor([len(c) for c in ids])[:, None]
    ref = (ref_tokens * mask).sum(dim=1)
    raw = torch.tensor(parity_reward(ids))
    anchored = 0
    for g in range(len(ids) // NUM_GENERATIONS):
        sl = slice(g * NUM_GENERATIONS, (g + 1) * NUM_GENERATIONS)
        good = raw[sl] >= 1.0
        if not good.any():
            assert torch.equal(augmented[sl], raw[sl])
            continue
        anchored += 1
        level = (augmented[sl] + BETA * ref[sl])[good]
        assert torch.allclose(level, level[0].expand_as(level), atol=1e-5)
        best = torch.where(good, ref[sl], torch.tensor(-float("inf"))).argmax()
        assert augmented[sl][best] == pytest.approx(raw[sl][best].item(), abs=1e-6)
        assert torch.equal(augmented[sl][~good], raw[sl][~good])
    assert anchored >= 1

    # The record: one shard per rank, each completion exactly once, with the single-process values.
    from mara_rl.integrations.record import read_record, shard_name

    shards = sorted(p.name for p in (tmp_path / "record" / "shards").iterdir())
    assert shards == [shard_name(0, 0), shard_name(0, 1)]
    record = read_record(tmp_path / "record").to_pandas()
    assert len(record) == 2 * PER_RANK
    assert record["completion"].tolist() == ranks[0]["completions"]
    assert record["group_id"].tolist() == [i // NUM_GENERATIONS for i in range(len(ids))]
    assert record["completion_length"].tolist() == [len(c) for c in ids]
    assert torch.allclose(torch.tensor(record["ref_logprob"].to_numpy()), ref.double(), atol=1e-5)
    assert torch.allclose(torch.tensor(record["reward"].to_numpy()), raw.double())
    assert torch.allclose(torch.tensor(record["mara_reward"].to_numpy()), expected.double(), atol=1e-5)
    anchors = record["mara_anchor"].to_numpy(dtype=bool)
    assert anchors.sum() == anchored  # one per group with a good sample, wherever its rows were written


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
