"""``mara_sync``'s ``_compute_advantage`` end to end through a local Ray + TransferQueue (verl env only).

The batch is put into TransferQueue the way verl's agent loop does (nested per-token fields, keys
``{uid}_{session}_{index}``, padding rows tagged ``is_padding``), with each prompt's rows interleaved
with other prompts' and with padding, and multi-output sessions out of index order. The rewritten
scores must be exactly the core ``mara_rewards`` result on independently summed inputs, the
advantages those of verl's stock ``_compute_advantage`` with those rewards written by hand, and with
``algorithm.mara.enable=false`` the mode must be verl's stock sync trainer bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("verl")

import ray  # noqa: E402
import torch  # noqa: E402
import transfer_queue as tq  # noqa: E402
from _verl_helpers import verl_config  # noqa: E402
from transfer_queue import KVBatchMeta  # noqa: E402
from verl.trainer.ppo.v1 import get_trainer_cls  # noqa: E402
from verl.trainer.ppo.v1.trainer_base import PPOTrainer  # noqa: E402
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync  # noqa: E402
from verl.utils.tensordict_utils import list_of_dict_to_tensordict  # noqa: E402

from mara_rl.augment import mara_rewards  # noqa: E402
from mara_rl.integrations.forward_kl import mara_forward_weights  # noqa: E402
from mara_rl.integrations.verl.loss import MARA_KL_COEF_FIELD, MARA_KL_REF_FIELD, MARA_KL_SCALE_FIELD  # noqa: E402
from mara_rl.integrations.verl.trainer import MaraSyncTrainer  # noqa: E402

torch.set_num_threads(1)
BETA = 0.05
TAU = 0.5
PAD = "pad0c0ffee"
# (uid, session, index, response length, reward, is_padding). Three sessions per prompt (rollout.n=3),
# rows of a prompt interleaved with other prompts and with padding; session b_0 has three outputs,
# stored out of index order, each carrying the final output's reward (as verl's agent loop does).
ROWS = [
    ("a", 0, 0, 4, 1.0, False),
    ("b", 0, 1, 3, 0.9, False),
    ("c", 0, 0, 5, 0.2, False),
    (PAD, 0, 0, 1, 0.0, True),
    ("a", 1, 0, 3, 0.8, False),
    ("b", 1, 0, 4, 0.7, False),
    ("a", 2, 0, 5, 0.1, False),
    ("b", 0, 2, 2, 0.9, False),
    ("c", 1, 0, 3, 0.6, False),
    (PAD, 1, 0, 1, 0.0, True),
    ("b", 0, 0, 6, 0.9, False),
    ("c", 2, 0, 2, 0.9, False),
    ("b", 2, 0, 3, 0.3, False),
]
KEYS = [f"{uid}_{session}_{index}" for uid, session, index, *_ in ROWS]
REAL = [i for i, row in enumerate(ROWS) if not row[5]]
GRPO_SAMPLES = [i for i in REAL if KEYS[i] not in ("b_0_0", "b_0_1")]  # each session's final output


EOS = 1  # the tiny tokenizer's end of sequence


def row_fields() -> list[dict]:
    """Per-row nested fields: a reward on the last response token, random old and reference log-probs,
    prompt and response token ids (every other response ends with the end-of-sequence token)."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i, (uid, _, _, length, reward, padding) in enumerate(ROWS):
        mask = torch.zeros(length, dtype=torch.int64) if padding else torch.ones(length, dtype=torch.int64)
        rm = torch.zeros(length)
        rm[-1] = reward
        old = -torch.rand(length, generator=gen)
        prompt = torch.full((3 + ord(uid[0]) % 3,), 3 + ord(uid[0]) % 20, dtype=torch.int64)
        response = torch.randint(3, 29, (length,), generator=gen)
        if i % 2:
            response[-1] = EOS
        rows.append({"uid": uid, "response_mask": mask, "rm_scores": rm, "old_log_probs": old,
                     "ref_log_prob": old - torch.rand(length, generator=gen), "prompts": prompt,
                     "responses": response})
    return rows


FIELDS = row_fields()


@pytest.fixture(scope="module")
def transfer_queue():
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        tq.init()
        yield
    finally:
        tq.close()
        ray.shutdown()


def put_batch(partition: str, last_scores: dict[int, float] | None = None, rows: list[dict] | None = None) -> KVBatchMeta:
    """``rows`` (default ``FIELDS``) into TransferQueue; ``last_scores`` replaces some rows' last-token reward (float32)."""
    fields = []
    for i, row in enumerate(FIELDS if rows is None else rows):
        row = dict(row, rm_scores=row["rm_scores"].clone())
        if last_scores and i in last_scores:
            row["rm_scores"][-1] = last_scores[i]
        fields.append(row)
    tags = [{"is_padding": True} if row[5] else {} for row in ROWS]
    tq.kv_batch_put(keys=KEYS, partition_id=partition, fields=list_of_dict_to_tensordict(fields), tags=tags)
    return KVBatchMeta(partition_id=partition, keys=list(KEYS), tags=tags)


def read(partition: str, field: str) -> list[torch.Tensor]:
    """``field`` of every row, unpadded, in ``KEYS`` order."""
    return list(tq.kv_batch_get(keys=KEYS, partition_id=partition, select_fields=[field])[field].unbind())


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> float:
    return math.fsum(float(v) for v, m in zip(values, mask) if m)


def expected_mara(samples: list[int], kl: str):
    """The core on sequence sums taken here, row by row, from the fields put into TransferQueue."""
    raw = np.array([math.fsum(FIELDS[i]["rm_scores"].double().tolist()) for i in samples])
    ref = np.array([masked_sum(FIELDS[i]["ref_log_prob"].double(), FIELDS[i]["response_mask"]) for i in samples])
    return mara_rewards(raw, ref, beta=BETA, tau=TAU, group_ids=[ROWS[i][0] for i in samples], kl=kl), ref


def kl_overrides(kl_in: str) -> list[str]:
    return {
        "reward": ["algorithm.use_kl_in_reward=True", f"algorithm.kl_ctrl.kl_coef={BETA}"],
        "loss": ["actor_rollout_ref.actor.use_kl_loss=True", f"actor_rollout_ref.actor.kl_loss_coef={BETA}"],
        "none": ["algorithm.use_kl_in_reward=False"],
        "both": ["algorithm.use_kl_in_reward=True", "actor_rollout_ref.actor.use_kl_loss=True"],
    }[kl_in]


@pytest.mark.parametrize(
    ("kl", "estimator"), [("reverse", "grpo"), ("reverse", "rloo"), ("forward", "grpo"), ("forward", "rloo")]
)
def test_compute_advantage_through_transferqueue(transfer_queue, kl, estimator):
    config = verl_config(
        "trainer.v1.trainer_mode=mara_sync", f"algorithm.adv_estimator={estimator}", f"+algorithm.mara.tau={TAU}",
        f"+algorithm.mara.kl={kl}", *kl_overrides("reward" if kl == "reverse" else "loss"),
    )
    trainer = get_trainer_cls(config.trainer.v1.trainer_mode)(config)
    part = f"mara_{kl}_{estimator}"
    metrics: dict = {}
    out = trainer._compute_advantage(put_batch(part), metrics)

    samples = GRPO_SAMPLES if estimator == "grpo" else REAL  # GRPO reads each session's final output only
    expected, ref = expected_mara(samples, kl)
    scores = read(part, "rm_scores")
    for j, i in enumerate(samples):
        want = FIELDS[i]["rm_scores"].clone()
        want[-1] = float(np.float32(expected.rewards[j]))
        assert torch.equal(scores[i], want), f"row {KEYS[i]}: {scores[i].tolist()} != MARA's {want.tolist()}"
    for i in set(range(len(ROWS))) - set(samples):
        assert torch.equal(scores[i], FIELDS[i]["rm_scores"]), f"row {KEYS[i]} (padding or non-final output) changed"
    assert expected.fraction_groups_augmented == 1.0 and not np.array_equal(expected.rewards, [ROWS[i][4] for i in samples])
    assert metrics["mara/frac_groups_augmented"] == 1.0
    assert metrics["mara/reward_raw"] == pytest.approx(np.mean([ROWS[i][4] for i in samples]))
    if kl == "forward":
        for field in (MARA_KL_REF_FIELD, MARA_KL_SCALE_FIELD, MARA_KL_COEF_FIELD):
            assert field in out.fields, "the actor update reads every persisted field"
        for i, values in enumerate(read(part, MARA_KL_REF_FIELD)):
            assert torch.equal(values, FIELDS[i]["ref_log_prob"])
        # Alg. 2's weights over each whole uid group, on sums taken here; the same on every response token.
        old = np.array([masked_sum(FIELDS[i]["old_log_probs"].double(), FIELDS[i]["response_mask"]) for i in samples])
        codes = np.unique([ROWS[i][0] for i in samples], return_inverse=True)[1]
        coef, scale = mara_forward_weights(*(torch.tensor(x, dtype=torch.float64) for x in (ref, expected.ref_logprobs, old)),
                                           torch.tensor(codes))
        for name, want in ((MARA_KL_SCALE_FIELD, scale), (MARA_KL_COEF_FIELD, coef)):
            got = read(part, name)
            for j, i in enumerate(samples):
                torch.testing.assert_close(got[i], torch.full_like(got[i], float(want[j])), rtol=1e-5, atol=1e-6)
        assert bool((coef > 0).any()), "Alg. 2 pulls on good samples below their anchor"
    else:
        assert "actor/reward_kl_penalty" in metrics, "verl's in-reward KL still runs after MARA"

    # verl's own method on the same batch with MARA's rewards written by hand gives the same advantages.
    by_hand = f"stock_{kl}_{estimator}"
    PPOTrainer._compute_advantage(trainer, put_batch(by_hand, dict(zip(samples, expected.rewards.tolist()))), {})
    for mine, stock in zip(read(part, "advantages"), read(by_hand, "advantages")):
        assert torch.equal(mine, stock)
    plain = f"plain_{kl}_{estimator}"
    PPOTrainer._compute_advantage(trainer, put_batch(plain), {})
    assert not all(torch.equal(m, p) for m, p in zip(read(part, "advantages"), read(plain, "advantages")))


@pytest.mark.parametrize("kl_in", ["reward", "loss", "none", "both"])
@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_disabled_mara_is_verl_stock_sync_bit_for_bit(transfer_queue, kl_in, estimator):
    common = [f"algorithm.adv_estimator={estimator}", *kl_overrides(kl_in)]
    mara = get_trainer_cls("mara_sync")(verl_config("trainer.v1.trainer_mode=mara_sync", "+algorithm.mara.enable=false", *common))
    stock = get_trainer_cls("sync")(verl_config("trainer.v1.trainer_mode=sync", *common))
    assert type(mara) is MaraSyncTrainer and type(stock) is PPOTrainerSync
    mara_metrics, stock_metrics = {}, {}
    part = f"{kl_in}_{estimator}"
    mara_out = mara._compute_advantage(put_batch(f"off_{part}"), mara_metrics)
    stock_out = stock._compute_advantage(put_batch(f"stock_{part}"), stock_metrics)
    assert mara_out.fields == stock_out.fields and mara_metrics == stock_metrics
    assert ("token_level_rewards" in mara_out.fields) == (kl_in in ("reward", "both"))
    tensors = [f for f in mara_out.fields if f != "uid"]
    assert {"advantages", "returns", "rm_scores"} <= set(tensors)
    for field in tensors:
        for i, (mine, theirs) in enumerate(zip(read(f"off_{part}", field), read(f"stock_{part}", field))):
            assert mine.dtype == theirs.dtype and torch.equal(mine, theirs), f"{field} of row {KEYS[i]} differs from stock verl"


@pytest.mark.parametrize("enable", [True, False])
def test_record_dir_writes_every_response_with_its_values(transfer_queue, tmp_path, enable):
    from mara_rl.integrations.record import read_record, shard_name
    from mara_rl.llm.tiny import build_tokenizer

    config = verl_config(
        "trainer.v1.trainer_mode=mara_sync", "algorithm.adv_estimator=grpo", f"+algorithm.mara.tau={TAU}",
        f"+algorithm.mara.enable={str(enable).lower()}", f"+algorithm.mara.record_dir={tmp_path}",
        *kl_overrides("reward"),
    )
    trainer = get_trainer_cls("mara_sync")(config)
    trainer.tokenizer = build_tokenizer()  # what verl's _setup loads from actor_rollout_ref.model
    trainer.global_steps = 4
    trainer._compute_advantage(put_batch(f"record_{enable}"), {})
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [shard_name(4, 0)]
    meta = read_record(tmp_path).schema.names
    assert "reward_score" in meta
    record = read_record(tmp_path).to_pandas()
    assert len(record) == len(REAL) and (record["step"] == 4).all()
    tokenizer = trainer.tokenizer
    first_uid = {}
    for j, i in enumerate(REAL):
        row, fields = record.iloc[j], FIELDS[i]
        assert row["group_id"] == first_uid.setdefault(ROWS[i][0], len(first_uid))
        assert row["prompt"] == tokenizer.decode(fields["prompts"].tolist(), skip_special_tokens=True)
        assert row["completion"] == tokenizer.decode(fields["responses"].tolist(), skip_special_tokens=True)
        assert row["completion_length"] == ROWS[i][3] and row["truncated"] == (fields["responses"][-1] != EOS)
        assert row["reward"] == row["reward_score"] == pytest.approx(ROWS[i][4], abs=1e-7)
        assert row["ref_logprob"] == pytest.approx(masked_sum(fields["ref_log_prob"].double(), fields["response_mask"]))
        assert row["policy_logprob"] == pytest.approx(math.fsum(fields["old_log_probs"].double().tolist()))
    if not enable:
        assert record["mara_reward"].isna().all() and record["mara_anchor"].isna().all()
        return
    expected, _ = expected_mara(GRPO_SAMPLES, "reverse")
    by_row = dict(zip(GRPO_SAMPLES, expected.rewards))
    anchors = {GRPO_SAMPLES[a] for a in expected.anchor_index[expected.anchor_index >= 0]}
    for j, i in enumerate(REAL):
        want = by_row.get(i, ROWS[i][4])  # a session's non-final outputs are no MARA sample: unchanged
        assert record["mara_reward"].iloc[j] == pytest.approx(float(np.float32(want)), abs=1e-6)
        assert bool(record["mara_anchor"].iloc[j]) == (i in anchors)
    assert len(anchors) == 3  # one per prompt group


def answer_fields() -> list[dict]:
    """``FIELDS`` with each response one of two answers (by session) followed by end-of-sequence tokens,
    which decoding skips: answers repeat within a prompt's group."""
    rows = []
    for (_, session, *_), row in zip(ROWS, FIELDS):
        response = torch.full_like(row["responses"], EOS)
        response[0] = 5 + session % 2
        rows.append(dict(row, responses=response))
    return rows


def expected_transform(name: str, samples: list[int], tokenizer, rows: list[dict], counts=None):
    """The core transform on inputs taken here, row by row: reward sums, the sampling policy's masked
    ``old_log_probs`` sums, decoded responses (stripped) as answers, decoded prompts as their identity."""
    from mara_rl.transforms import get_transform

    raw = np.array([math.fsum(rows[i]["rm_scores"].double().tolist()) for i in samples])
    decode = lambda i, field: tokenizer.decode(rows[i][field].tolist(), skip_special_tokens=True)  # noqa: E731
    answers = [decode(i, "responses").strip() for i in samples]
    assert len(set(answers)) == 2
    inputs = {
        "policy_logprobs": np.array([masked_sum(rows[i]["old_log_probs"].double(), rows[i]["response_mask"]) for i in samples]),
        "outcomes": answers,
        "outcome_counts": None if counts is None else counts.update([decode(i, "prompts") for i in samples], answers),
    }
    transform = get_transform(name)
    return transform(raw, group_ids=[ROWS[i][0] for i in samples], value=None, **{k: inputs[k] for k in transform.needs})


@pytest.mark.parametrize("name", ["unlikeliness", "pkpo", "outcome_batch", "outcome_ucb"])
@pytest.mark.parametrize(("kl_in", "estimator"), [("reward", "grpo"), ("none", "rloo"), ("forward", "grpo")])
def test_reward_transform_through_transferqueue(transfer_queue, name, kl_in, estimator):
    from mara_rl.llm.tiny import build_tokenizer
    from mara_rl.transforms import OutcomeCounts

    kl = ["+algorithm.mara.kl=forward", *kl_overrides("loss")] if kl_in == "forward" else kl_overrides(kl_in)
    config = verl_config("trainer.v1.trainer_mode=mara_sync", f"algorithm.adv_estimator={estimator}",
                         f"+algorithm.mara.reward_transform={name}", "+algorithm.mara.reward_transform_value=null"
                         if name != "pkpo" else "+algorithm.mara.reward_transform_value=2", *kl)
    trainer = get_trainer_cls("mara_sync")(config)
    trainer.tokenizer = build_tokenizer()
    samples = GRPO_SAMPLES if estimator == "grpo" else REAL
    counts = OutcomeCounts() if name == "outcome_ucb" else None
    rows = answer_fields()
    for step in range(2):  # outcome_ucb's counts carry over to the next step
        part = f"{name}_{kl_in}_{estimator}_{step}"
        metrics: dict = {}
        trainer._compute_advantage(put_batch(part, rows=rows), metrics)
        if name == "pkpo":
            from mara_rl.transforms import pkpo_rewards

            raw = np.array([math.fsum(rows[i]["rm_scores"].double().tolist()) for i in samples])
            expected = pkpo_rewards(raw, k=2, group_ids=[ROWS[i][0] for i in samples])
        else:
            expected = expected_transform(name, samples, trainer.tokenizer, rows, counts)
        scores = read(part, "rm_scores")
        for j, i in enumerate(samples):
            want = FIELDS[i]["rm_scores"].clone()
            want[-1] = float(np.float32(expected[j]))
            assert torch.equal(scores[i], want), f"{name}, row {KEYS[i]}: {scores[i].tolist()} != {want.tolist()}"
        for i in set(range(len(ROWS))) - set(samples):
            assert torch.equal(scores[i], FIELDS[i]["rm_scores"]), f"row {KEYS[i]} (padding or non-final output) changed"
        assert not np.allclose(expected, [ROWS[i][4] for i in samples]), "the transform changes this batch's rewards"
        assert metrics["mara/reward_transformed"] == pytest.approx(float(np.mean(expected)), abs=1e-6)
        # verl's own method with those rewards written by hand gives the same advantages.
        by_hand = f"hand_{part}"
        PPOTrainer._compute_advantage(trainer, put_batch(by_hand, dict(zip(samples, np.asarray(expected).tolist())), rows), {})
        for mine, stock in zip(read(part, "advantages"), read(by_hand, "advantages")):
            assert torch.equal(mine, stock)


def test_outcome_transforms_compare_the_answer_key_first_group(transfer_queue):
    """Responses 'word : digit' all differ as texts; with answer_key ': (\\d)' two answers repeat per prompt."""
    import re

    from mara_rl.llm.tiny import build_tokenizer
    from mara_rl.transforms import outcome_batch_rewards

    rows = []
    for i, ((_, session, *_), row) in enumerate(zip(ROWS, FIELDS)):
        response = torch.full_like(row["responses"], EOS)
        tail = [14, 5 + session % 2]  # ': 1' or ': 2'
        head = [15 + i % 14] if len(response) > 2 else []  # a word unique to the row, where it fits
        if len(response) >= 2:  # (padding rows hold one token)
            response[: len(head) + 2] = torch.tensor(head + tail)
        rows.append(dict(row, responses=response))
    config = verl_config("trainer.v1.trainer_mode=mara_sync", "algorithm.adv_estimator=rloo",
                         "+algorithm.mara.reward_transform=outcome_batch", r"+algorithm.mara.answer_key=': (\d)'",
                         *kl_overrides("reward"))
    trainer = get_trainer_cls("mara_sync")(config)
    trainer.tokenizer = build_tokenizer()
    trainer._compute_advantage(put_batch("answer_key", rows=rows), {})
    texts = [trainer.tokenizer.decode(rows[i]["responses"].tolist(), skip_special_tokens=True) for i in REAL]
    answers = [re.search(r": (\d)", t).group(1) for t in texts]
    assert len(set(texts)) > len(set(answers)) == 2
    raw = np.array([math.fsum(rows[i]["rm_scores"].double().tolist()) for i in REAL])
    expected = outcome_batch_rewards(raw, answers, group_ids=[ROWS[i][0] for i in REAL])
    assert not np.allclose(expected, outcome_batch_rewards(raw, texts, group_ids=[ROWS[i][0] for i in REAL]))
    scores = read("answer_key", "rm_scores")
    for j, i in enumerate(REAL):
        assert float(scores[i][-1]) == float(np.float32(expected[j])), KEYS[i]
