"""Tokenizer, prior log-likelihoods, the augmented-likelihood loss and the RL run's oracle
accounting (budget, cache, invalid molecules, resume)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("rdkit")

from mara_rl.augment import mara_rewards  # noqa: E402
from mara_rl.chem.model import PriorConfig, SmilesRNN, load_prior  # noqa: E402
from mara_rl.chem.rl import Ledger, RunConfig, augmented_likelihood_loss, run, shaped_rewards  # noqa: E402
from mara_rl.chem.tokenizer import Vocabulary, tokenize  # noqa: E402

SMILES = [
    "Clc1ccc(Br)cc1",
    "C[C@@H](N)C(=O)O",
    "c1ccc2[nH]ccc2c1",
    "C%10CCCCC%10",
    "O=[N+]([O-])c1ccccc1",
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
]


def test_tokenizer_keeps_multi_character_tokens():
    assert tokenize("Clc1ccc(Br)cc1")[:2] == ["Cl", "c"]
    assert "Br" in tokenize("Clc1ccc(Br)cc1")
    assert tokenize("C[C@@H](N)")[1] == "[C@@H]"
    assert tokenize("C%10CCCCC%10") == ["C", "%10", "C", "C", "C", "C", "C", "%10"]
    assert tokenize("O=[N+]([O-])") == ["O", "=", "[N+]", "(", "[O-]", ")"]


@pytest.mark.parametrize("smiles", SMILES)
def test_vocabulary_round_trip(smiles):
    vocab = Vocabulary.from_smiles(SMILES)
    ids = vocab.encode(smiles)
    assert ids[0] == vocab.bos and ids[-1] == vocab.eos
    assert vocab.decode(ids) == smiles
    assert Vocabulary.from_list(vocab.to_list()) == vocab


def test_vocabulary_rejects_unknown_token():
    vocab = Vocabulary.from_smiles(["CCO"])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("CCCl")


def _tiny_model(cell: str) -> SmilesRNN:
    torch.manual_seed(0)
    return SmilesRNN(Vocabulary.from_smiles(SMILES), PriorConfig(cell=cell, embedding_dim=8, hidden_size=16, num_layers=2, max_length=30))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_sampled_loglik_equals_teacher_forced(cell):
    model = _tiny_model(cell)
    ids, sampled = model.sample(32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        forced = model.log_likelihood(ids)
    torch.testing.assert_close(sampled, forced, rtol=1e-5, atol=1e-4)
    # ended sequences decode to a string without frame tokens
    assert all("^" not in s and "$" not in s for s in model.decode(ids))


def test_teacher_forced_loglik_is_sum_of_token_logprobs():
    model = _tiny_model("gru")
    ids = model.encode(["CCO"])
    logits, _ = model(ids[:, :-1])
    expected = torch.log_softmax(logits, -1)[0, torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum()
    torch.testing.assert_close(model.log_likelihood(ids)[0], expected)


def test_checkpoint_round_trip(tmp_path):
    model = _tiny_model("gru")
    torch.save(model.checkpoint(), tmp_path / "p.pt")
    loaded = load_prior(tmp_path / "p.pt")
    ids = model.encode(SMILES)
    torch.testing.assert_close(loaded.log_likelihood(ids), model.log_likelihood(ids))


def test_loss_without_mara_is_reinvent_formula():
    agent = torch.tensor([-20.0, -35.0, -12.0])
    prior = torch.tensor([-22.0, -30.0, -15.0])
    scores = torch.tensor([0.9, 0.1, 0.5])
    sigma = 60.0
    config = RunConfig(sigma=sigma)
    rewards, augmented = shaped_rewards(scores, prior, config)
    assert augmented == 0.0
    loss = augmented_likelihood_loss(agent, prior, rewards, sigma)
    by_hand = np.mean([(-20 - (-22 + 60 * 0.9)) ** 2, (-35 - (-30 + 6)) ** 2, (-12 - (-15 + 30)) ** 2])
    assert float(loss) == pytest.approx(by_hand)


def test_mara_flattens_augmented_likelihood_over_good_samples():
    prior = torch.tensor([-22.0, -30.0, -15.0, -40.0], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.85, 0.5, 0.95], dtype=torch.float64)
    config = RunConfig(sigma=50.0, mara=True, tau=0.8)
    rewards, fraction = shaped_rewards(scores, prior, config)
    assert fraction == 0.75
    target = prior + config.sigma * rewards
    good = scores >= 0.8
    # anchor = most prior-likely good sample (index 0): every good sample gets its target
    torch.testing.assert_close(target[good], torch.full((3,), -22.0 + 50.0 * 0.9, dtype=torch.float64))
    assert float(target[2]) == pytest.approx(-15.0 + 50.0 * 0.5)
    expected = mara_rewards(scores.numpy(), prior.numpy(), beta=1 / 50.0, tau=0.8).rewards
    np.testing.assert_allclose(rewards.numpy(), expected)


class CountingOracle:
    """Scores by string length; counts every molecule it is asked to score."""

    name = "length"
    cost = 1

    def __init__(self, fail_after: int | None = None):
        self.seen: list[str] = []
        self.fail_after = fail_after

    def __call__(self, smiles):
        if self.fail_after is not None and len(self.seen) + len(smiles) > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.seen.extend(smiles)
        return np.array([min(len(s) / 40.0, 1.0) for s in smiles])


def test_ledger_cache_invalid_and_exact_budget(tmp_path):
    oracle = CountingOracle()
    ledger = Ledger(tmp_path / "m.csv", oracle, budget=3)
    scores = ledger.score(["CCO", None, "CCO", "CCN"], step=0)
    assert oracle.seen == ["CCO", "CCN"]  # the repeat and the invalid one cost nothing
    np.testing.assert_allclose(scores, [3 / 40, 0.0, 3 / 40, 3 / 40])
    scores = ledger.score(["CCC", "CCCC", "CCO"], step=1)
    assert ledger.calls == 3 and ledger.exhausted
    assert np.isnan(scores[1]) and scores[2] == pytest.approx(3 / 40)  # over budget: unscored
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert [r["smiles"] for r in rows] == ["CCO", "CCN", "CCC"]
    assert [int(r["call"]) for r in rows] == [1, 2, 3]
    reopened = Ledger(tmp_path / "m.csv", oracle, budget=3)
    assert reopened.calls == 3 and reopened.cache == ledger.cache


@pytest.fixture(scope="module")
def shipped_prior():
    """The shipped prior: mostly valid samples, so small budgets fill in a few steps."""
    from mara_rl.chem.model import DEFAULT_PRIOR

    return str(DEFAULT_PRIOR)


def _ledger_rows(folder):
    return list(csv.DictReader((folder / "molecules.csv").open()))


def test_run_stops_at_exact_budget(tmp_path, shipped_prior):
    oracle = CountingOracle()
    config = RunConfig(out=str(tmp_path / "run"), budget=50, batch_size=16, prior=shipped_prior, sigma=10.0, mara=True, tau=0.5)
    metrics = run(config, oracle=oracle)
    rows = _ledger_rows(tmp_path / "run")
    assert metrics["oracle_calls"] == 50 == len(rows) == len(oracle.seen)
    assert len({r["smiles"] for r in rows}) == 50  # no molecule paid for twice
    assert (tmp_path / "run" / "yield.png").is_file() and (tmp_path / "run" / "metrics.json").is_file()


def test_interrupted_run_resumes_without_losing_or_repeating_calls(tmp_path, shipped_prior):
    folder = tmp_path / "run"
    config = RunConfig(out=str(folder), budget=60, batch_size=16, prior=shipped_prior, sigma=10.0, checkpoint_every=1)
    first = CountingOracle(fail_after=25)
    with pytest.raises(KeyboardInterrupt):
        run(config, oracle=first)
    scored_before = [r["smiles"] for r in _ledger_rows(folder)]
    assert scored_before == first.seen and 0 < len(scored_before) <= 25
    second = CountingOracle()
    metrics = run(config, resume=True, oracle=second)
    rows = [r["smiles"] for r in _ledger_rows(folder)]
    assert metrics["oracle_calls"] == 60 == len(rows) == len(set(rows))
    assert rows[: len(scored_before)] == scored_before
    assert set(second.seen).isdisjoint(scored_before) and len(second.seen) == 60 - len(scored_before)


def test_run_with_replay_and_diversity_filter(tmp_path, shipped_prior):
    config = RunConfig(out=str(tmp_path / "run"), budget=40, batch_size=16, prior=shipped_prior, sigma=10.0,
                       replay_size=8, replay_batch=4, diversity_filter=True, df_bucket_size=1, df_min_score=0.1)
    metrics = run(config, oracle=CountingOracle())
    assert metrics["oracle_calls"] == 40


def test_run_refuses_to_overwrite(tmp_path, shipped_prior):
    config = RunConfig(out=str(tmp_path / "run"), budget=20, batch_size=16, prior=shipped_prior)
    run(config, oracle=CountingOracle())
    with pytest.raises(ValueError, match="already holds a finished run"):
        run(config, oracle=CountingOracle())


def test_config_validation():
    with pytest.raises(ValueError, match="sigma"):
        RunConfig(sigma=0.0)
    with pytest.raises(ValueError, match="tau"):
        RunConfig(mara=True)
    with pytest.raises(ValueError, match="need --mara"):
        RunConfig(tau=0.8)


def test_step_limit_ends_a_run_that_stops_paying(tmp_path, shipped_prior):
    config = RunConfig(out=str(tmp_path / "run"), budget=1000, batch_size=16, prior=shipped_prior, step_limit=2)
    metrics = run(config, oracle=CountingOracle())
    assert metrics["steps"] == 2 and metrics["stopped_by_step_limit"]
    assert metrics["oracle_calls"] == len(_ledger_rows(tmp_path / "run")) <= 32
    assert RunConfig(budget=100, batch_size=16).step_limit == 28
