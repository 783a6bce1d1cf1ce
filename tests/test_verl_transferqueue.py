"""``mara_sync``'s ``_compute_advantage`` end to end through a local Ray + TransferQueue (verl env only).

The batch is put into TransferQueue the way verl's agent loop does (nested per-token fields, keys
``{uid}_{session}_{index}``, a padding row tagged ``is_padding``); the mode's advantages must equal
verl's stock ``_compute_advantage`` run on the same batch with ``rm_scores`` set by hand to the core
``mara_rewards`` result.
"""

from __future__ import annotations

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
from verl.utils.tensordict_utils import list_of_dict_to_tensordict  # noqa: E402

from mara_rl.augment import mara_rewards  # noqa: E402
from mara_rl.integrations.verl.loss import MARA_KL_REF_FIELD  # noqa: E402

torch.set_num_threads(1)
BETA = 0.05
# (uid, session, index, response length, reward, is_padding); session b_0 has two outputs (verl gives both its reward).
ROWS = [
    ("a", 0, 0, 4, 1.0, False),
    ("a", 1, 0, 3, 1.0, False),
    ("a", 2, 0, 5, 0.0, False),
    ("b", 0, 0, 2, 1.0, False),
    ("b", 0, 1, 3, 1.0, False),
    ("b", 1, 0, 4, 1.0, False),
    ("b", 2, 0, 3, 0.0, False),
    ("pad9", 0, 0, 1, 0.0, True),
]


@pytest.fixture(scope="module")
def transfer_queue():
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        tq.init()
        yield
    finally:
        tq.close()
        ray.shutdown()


def put_batch(partition: str, rm_overrides: dict[int, float] | None = None) -> KVBatchMeta:
    gen = torch.Generator().manual_seed(0)
    keys, fields, tags = [], [], []
    for i, (uid, session, index, length, reward, padding) in enumerate(ROWS):
        mask = torch.zeros(length, dtype=torch.int64) if padding else torch.ones(length, dtype=torch.int64)
        rm = torch.zeros(length)
        rm[-1] = reward if rm_overrides is None or i not in rm_overrides else rm_overrides[i]
        old = -torch.rand(length, generator=gen)
        fields.append({
            "uid": uid,
            "response_mask": mask,
            "rm_scores": rm,
            "old_log_probs": old,
            "ref_log_prob": old - torch.rand(length, generator=gen),
        })
        keys.append(f"{uid}_{session}_{index}")
        tags.append({"is_padding": True} if padding else {})
    tq.kv_batch_put(keys=keys, partition_id=partition, fields=list_of_dict_to_tensordict(fields), tags=tags)
    return KVBatchMeta(partition_id=partition, keys=keys, tags=tags)


def sequence_sums(partition: str, keys: list[str], field: str, masked: bool) -> np.ndarray:
    data = tq.kv_batch_get(keys=keys, partition_id=partition, select_fields=[field, "response_mask"]).to_padded_tensor()
    values = data[field] * data["response_mask"] if masked else data[field]
    return values.double().sum(dim=1).numpy()


def advantages(partition: str, keys: list[str]) -> torch.Tensor:
    data = tq.kv_batch_get(keys=keys, partition_id=partition, select_fields=["advantages"])
    return data.to_padded_tensor()["advantages"]


@pytest.mark.parametrize("kl", ["reverse", "forward"])
def test_compute_advantage_through_transferqueue(transfer_queue, kl):
    kl_overrides = (
        ["algorithm.use_kl_in_reward=True", f"algorithm.kl_ctrl.kl_coef={BETA}"]
        if kl == "reverse"
        else ["actor_rollout_ref.actor.use_kl_loss=True", f"actor_rollout_ref.actor.kl_loss_coef={BETA}"]
    )
    config = verl_config(
        "trainer.v1.trainer_mode=mara_sync", "algorithm.adv_estimator=grpo", "+algorithm.mara.tau=0.5",
        f"+algorithm.mara.kl={kl}", *kl_overrides,
    )
    trainer = get_trainer_cls(config.trainer.v1.trainer_mode)(config)
    batch = put_batch(f"mara_{kl}")
    metrics: dict = {}
    out = trainer._compute_advantage(batch, metrics)

    # Independently: GRPO's samples are each session's final output; MARA per uid on their sums.
    samples = [0, 1, 2, 4, 5, 6]
    raw = np.array([ROWS[i][4] for i in samples])
    ref = sequence_sums(f"mara_{kl}", batch.keys, "ref_log_prob", masked=True)[samples]
    expected = mara_rewards(raw, ref, beta=BETA, tau=0.5, group_ids=[ROWS[i][0] for i in samples], kl=kl)
    new_scores = sequence_sums(f"mara_{kl}", batch.keys, "rm_scores", masked=False)
    np.testing.assert_allclose(new_scores[samples], expected.rewards, atol=1e-5)
    assert new_scores[3] == 1.0 and new_scores[7] == 0.0, "non-final outputs and padding keep their scores"
    assert metrics["mara/frac_groups_augmented"] == 1.0
    assert metrics["mara/reward_raw"] == pytest.approx(raw.mean())
    if kl == "forward":
        assert MARA_KL_REF_FIELD in out.fields, "the actor update reads every persisted field"
        kl_ref = sequence_sums(f"mara_{kl}", batch.keys, MARA_KL_REF_FIELD, masked=True)[samples]
        np.testing.assert_allclose(kl_ref, expected.ref_logprobs, atol=1e-5)
        assert not np.allclose(kl_ref, ref), "Alg. 2 moves good samples' reference to the anchor's"
    else:
        assert "actor/reward_kl_penalty" in metrics, "verl's in-reward KL still runs after MARA"

    # verl's own method on the same batch with the MARA rewards written by hand gives the same advantages.
    by_hand = put_batch(f"stock_{kl}", dict(zip(samples, expected.rewards.tolist())))
    PPOTrainer._compute_advantage(trainer, by_hand, {})
    torch.testing.assert_close(advantages(f"mara_{kl}", batch.keys), advantages(f"stock_{kl}", by_hand.keys))
    if kl == "reverse":  # Alg. 2 gives equal good rewards R(z) = 1 here: only reverse MARA moves advantages
        plain = put_batch(f"plain_{kl}")
        PPOTrainer._compute_advantage(trainer, plain, {})
        assert not torch.allclose(advantages(f"mara_{kl}", batch.keys), advantages(f"plain_{kl}", plain.keys))
