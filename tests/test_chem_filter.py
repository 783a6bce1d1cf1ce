"""REINVENT4's IdenticalMurckoScaffold diversity filter, and the order of the transforms in a run:
oracle scores -> diversity filter -> MARA -> the augmented-likelihood update."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("rdkit")

from mara_rl.chem import rl  # noqa: E402
from mara_rl.chem.model import DEFAULT_PRIOR  # noqa: E402
from mara_rl.chem.rl import RunConfig, ScaffoldFilter  # noqa: E402


def test_filter_follows_reinvent4_by_hand():
    f = ScaffoldFilter(bucket_size=2, min_score=0.5)
    batch = ["Cc1ccccc1", "CCc1ccccc1", "Cc1ccccc1", "CCCc1ccccc1", "CCO", "c1ccncc1", "c1ccncc1", "OCc1ccccc1", None]
    scores = np.array([0.9, 0.8, 0.9, 0.7, 0.6, 0.3, 0.3, 0.4, 0.0])
    out = f(batch, scores)
    # kept, kept, memorised repeat -> 0, third good benzene (bucket of 2 full) -> 0, acyclic (empty scaffold) kept,
    # below min_score: never memorised, so kept and kept again, and not filtered even with its bucket full
    np.testing.assert_array_equal(out, [0.9, 0.8, 0.0, 0.0, 0.6, 0.3, 0.3, 0.4, 0.0])
    assert scores[2] == 0.9  # the caller's scores (the ledger's) stay as they were
    assert f.buckets == {"c1ccccc1": 3, "": 1} and f.memory == {"Cc1ccccc1", "CCc1ccccc1", "CCCc1ccccc1", "CCO"}
    np.testing.assert_array_equal(f(["CCCc1ccccc1", "CCO"], np.array([0.7, 0.6])), [0.0, 0.0])  # later re-proposals earn nothing


def test_a_rebuilt_filter_equals_the_one_that_ran():
    """A resumed run refills the filter from the ledger's distinct molecules in call order."""
    rng = np.random.default_rng(0)
    pool = ["Cc1ccccc1", "CCc1ccccc1", "CCCc1ccccc1", "OCc1ccccc1", "CCO", "CCN", "c1ccncc1", "Cc1ccncc1", "C1CCCCC1", "CC1CCCCC1"]
    value = dict(zip(pool, rng.uniform(0, 1, len(pool))))
    ran, first_seen = ScaffoldFilter(2, 0.3), []
    for _ in range(6):
        batch = list(rng.choice(pool, 5))
        ran(batch, np.array([value[m] for m in batch]))
        first_seen += [m for m in batch if m not in first_seen]
    rebuilt = ScaffoldFilter(2, 0.3)
    rebuilt(first_seen, np.array([value[m] for m in first_seen]))
    assert rebuilt.buckets == ran.buckets and rebuilt.memory == ran.memory


def test_min_score_zero_is_refused():
    with pytest.raises(ValueError, match="--df-min-score must be above 0"):
        RunConfig(diversity_filter=True, df_min_score=0.0)


def test_mara_sees_the_filtered_scores_that_the_update_uses(tmp_path, monkeypatch):
    seen: dict[str, list] = {"filter_in": [], "filter_out": [], "mara_in": [], "mara_out": [], "loss_rewards": []}
    real_filter, real_mara, real_loss = ScaffoldFilter.__call__, rl.mara_rewards, rl.augmented_likelihood_loss

    def spy_filter(self, molecules, scores):
        out = real_filter(self, molecules, scores)
        seen["filter_in"].append(np.array(scores))
        seen["filter_out"].append(out.copy())
        return out

    def spy_mara(scores, ref_logprobs, **kwargs):
        result = real_mara(scores, ref_logprobs, **kwargs)
        seen["mara_in"].append(scores.detach().numpy().copy())
        seen["mara_out"].append(result.rewards.detach().numpy().copy())
        return result

    def spy_loss(agent_ll, prior_ll, rewards, sigma):
        seen["loss_rewards"].append(rewards.detach().numpy().copy())
        return real_loss(agent_ll, prior_ll, rewards, sigma)

    monkeypatch.setattr(ScaffoldFilter, "__call__", spy_filter)
    monkeypatch.setattr(rl, "mara_rewards", spy_mara)
    monkeypatch.setattr(rl, "augmented_likelihood_loss", spy_loss)
    # sigma 200 and lr 1e-3: the agent soon re-proposes its good molecules, which the filter zeroes
    config = RunConfig(out=str(tmp_path / "run"), objective="qed", budget=64, batch_size=16, prior=str(DEFAULT_PRIOR), sigma=200.0,
                       lr=1e-3, mara=True, tau=0.5, diversity_filter=True, df_bucket_size=1, df_min_score=0.3, seed=1)
    rl.run(config)
    steps = len(seen["loss_rewards"])
    assert steps >= 4 and all(len(seen[k]) == steps for k in seen)
    for f_out, m_in, m_out, loss in zip(seen["filter_out"], seen["mara_in"], seen["mara_out"], seen["loss_rewards"]):
        np.testing.assert_array_equal(m_in, f_out.astype(m_in.dtype))  # MARA gets the filter's output
        np.testing.assert_array_equal(loss, m_out)  # and the update gets MARA's rewards
    # the filter did bite on good molecules, so the order matters in this run
    assert any(((f_in >= 0.5) & (f_out == 0)).any() for f_in, f_out in zip(seen["filter_in"], seen["filter_out"]))
