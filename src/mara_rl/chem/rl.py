"""REINVENT-style RL on a SMILES prior, with MARA as the reward transform (``mara chem run``).

Per step: sample a batch from the agent; score the new valid molecules (invalid SMILES score 0
and cost nothing; a cached molecule costs nothing; the run stops at exactly ``budget`` oracle
calls); optionally apply the scaffold diversity filter; turn scores into rewards with MARA
(``mara_rewards``: R = score, ref log-prob = prior log-likelihood, beta = 1 / sigma); regress
the agent's log-likelihood onto the augmented likelihood ``log p_prior(x) + sigma * r(x)``.

The augmented likelihood is the log of the reverse-KL Gibbs target ``p_prior(x) exp(sigma R(x))``
with beta = 1 / sigma, so REINVENT is KL-regularised RL and MARA belongs exactly where the
rewards enter that target: for samples with ``R >= tau`` it makes ``log p_prior(x) + sigma r(x)``
equal to the anchor's value, a target that is flat over the good molecules.

Ledger: every scored molecule is appended to ``molecules.csv`` as soon as it is scored
(``call, step, smiles, score``). The CSV is the source of truth for the oracle budget and the
cache, so a resumed run never pays twice for a molecule and never loses a call.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mara_rl.augment import mara_rewards
from mara_rl.chem.model import SmilesRNN, load_prior
from mara_rl.chem.oracles import Oracle, check_scores, get_oracle

LEDGER_FIELDS = ("call", "step", "smiles", "score")


@dataclass
class RunConfig:
    """Hyperparameters of one run. Batch 64 and sigma 500 follow the tuned REINVENT of the PMO
    benchmark (Gao et al., 2022); the learning rate is REINVENT's own 1e-4 (at PMO's 5e-4 our
    agent collapsed onto repeats before proposing 10,000 distinct molecules)."""

    out: str = "runs/chem-run"
    objective: str = "qed_hbd_sa"
    budget: int = 10_000
    batch_size: int = 64
    sigma: float = 500.0
    lr: float = 1e-4
    mara: bool = False
    tau: float | None = None
    tau_quantile: float | None = None
    diversity_filter: bool = False
    df_bucket_size: int = 25  # molecules per scaffold before that scaffold scores 0
    df_min_score: float = 0.4  # molecules below this do not fill buckets
    replay_size: int = 0  # top-k experience replay memory (0: off)
    replay_batch: int = 24
    screens: tuple[float, ...] = (0.8, 0.85)
    prior: str | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int = 1  # torch CPU threads; more threads than free cores slow small RNN steps badly
    checkpoint_every: int = 10  # steps
    max_steps: int | None = None  # stop this session early (the run stays resumable)
    step_limit: int | None = None  # total steps; default 4 * budget / batch_size (see run)

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"budget must be >= 1, got {self.budget}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0 (beta = 1 / sigma), got {self.sigma}")
        if self.mara and (self.tau is None) == (self.tau_quantile is None):
            raise ValueError("with mara, give exactly one of tau and tau_quantile")
        if not self.mara and (self.tau is not None or self.tau_quantile is not None):
            raise ValueError("tau / tau_quantile need mara=True")
        self.screens = tuple(float(s) for s in self.screens)
        if self.step_limit is None:
            self.step_limit = 4 * -(-self.budget // self.batch_size)

    @property
    def beta(self) -> float:
        return 1.0 / self.sigma


def augmented_likelihood(prior_loglik: torch.Tensor, rewards: torch.Tensor, sigma: float) -> torch.Tensor:
    """REINVENT's target ``log p_prior(x) + sigma * r(x)`` (``[B]``), the log of the reverse-KL
    Gibbs target ``p_prior(x) exp(r(x) / beta)`` with beta = 1 / sigma, up to its normaliser."""
    return prior_loglik + sigma * rewards


def augmented_likelihood_loss(
    agent_loglik: torch.Tensor, prior_loglik: torch.Tensor, rewards: torch.Tensor, sigma: float
) -> torch.Tensor:
    """``mean_i (log p_agent(x_i) - (log p_prior(x_i) + sigma * r_i))^2`` over the batch."""
    return (agent_loglik - augmented_likelihood(prior_loglik, rewards, sigma)).pow(2).mean()


def shaped_rewards(scores: torch.Tensor, prior_loglik: torch.Tensor, config: RunConfig) -> tuple[torch.Tensor, float]:
    """Rewards entering the augmented likelihood: the scores, or MARA's augmentation of them
    (Algorithm 1 with beta = 1 / sigma). Returns ``(rewards [B], fraction augmented)``."""
    if not config.mara:
        return scores, 0.0
    result = mara_rewards(scores, prior_loglik, beta=config.beta, tau=config.tau, tau_quantile=config.tau_quantile)
    return result.rewards, float(result.augmented.float().mean())


class Ledger:
    """Oracle budget, cache and CSV log of every scored molecule (rebuilt from the CSV on resume)."""

    def __init__(self, path: Path, oracle: Oracle, budget: int):
        self.path, self.oracle, self.budget = path, oracle, budget
        self.cache: dict[str, float] = {}
        self.order: list[str] = []  # molecules in call order
        if path.is_file():
            with path.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    self.cache[row["smiles"]] = float(row["score"])
                    self.order.append(row["smiles"])
        else:
            with path.open("w", newline="") as handle:
                csv.writer(handle).writerow(LEDGER_FIELDS)

    @property
    def calls(self) -> int:
        """Oracle calls spent so far (each costs ``oracle.cost``)."""
        return len(self.order) * self.oracle.cost

    @property
    def exhausted(self) -> bool:
        return self.calls + self.oracle.cost > self.budget

    def score(self, molecules: Sequence[str | None], step: int) -> np.ndarray:
        """Scores for canonical SMILES (``None`` = invalid -> 0, no call). New molecules are
        scored in order while the budget allows; the rest get NaN (unscored, left out of the
        update). Each new molecule is appended to the CSV as soon as its batch is scored."""
        new: list[str] = []
        for m in molecules:
            if m is not None and m not in self.cache and m not in new:
                new.append(m)
        affordable = max(0, (self.budget - self.calls) // self.oracle.cost)
        new = new[:affordable]
        if new:
            scores = check_scores(self.oracle(new), len(new), self.oracle.name)
            with self.path.open("a", newline="") as handle:
                writer = csv.writer(handle)
                for m, s in zip(new, scores):
                    self.cache[m] = float(s)
                    self.order.append(m)
                    writer.writerow((len(self.order), step, m, repr(float(s))))
        return np.array([0.0 if m is None else self.cache.get(m, np.nan) for m in molecules])

    def scores_in_order(self) -> np.ndarray:
        return np.array([self.cache[m] for m in self.order])


class ScaffoldFilter:
    """Scaffold-bucket diversity filter: once ``bucket_size`` molecules scoring at least
    ``min_score`` share a Bemis-Murcko scaffold, further molecules of that scaffold score 0
    for training (the ledger keeps the oracle's score)."""

    def __init__(self, bucket_size: int, min_score: float):
        self.bucket_size, self.min_score = bucket_size, min_score
        self.buckets: dict[str, set[str]] = {}

    def __call__(self, molecules: Sequence[str | None], scores: np.ndarray) -> np.ndarray:
        from rdkit import Chem
        from rdkit.Chem.Scaffolds import MurckoScaffold

        out = scores.copy()
        for i, (m, s) in enumerate(zip(molecules, scores)):
            if m is None or not s >= self.min_score:
                continue
            scaffold = MurckoScaffold.MurckoScaffoldSmiles(mol=Chem.MolFromSmiles(m))
            bucket = self.buckets.setdefault(scaffold, set())
            if m not in bucket and len(bucket) >= self.bucket_size:
                out[i] = 0.0
            else:
                bucket.add(m)
        return out


@dataclass
class RunState:
    step: int = 0
    invalid: int = 0
    sampled: int = 0
    replay: list[tuple[str, float]] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)


def run(config: RunConfig, resume: bool = False, oracle: Oracle | None = None) -> dict[str, Any]:
    """Run (or resume) REINVENT / MARA-REINVENT until the oracle budget is spent; returns metrics."""
    from mara_rl.metrics.molecules import canonical_smiles

    out = Path(config.out)
    checkpoint_path = out / "checkpoint.pt"
    if resume and not checkpoint_path.is_file():
        raise ValueError(f"--resume given but {checkpoint_path} does not exist")
    if not resume and (out / "molecules.csv").exists():
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    oracle = oracle or get_oracle(config.objective)
    ledger = Ledger(out / "molecules.csv", oracle, config.budget)

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    prior = load_prior(config.prior, config.device).eval()
    agent = load_prior(config.prior, config.device).train()
    for p in prior.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.lr)
    generator = torch.Generator(device=agent.device).manual_seed(config.seed)
    state = RunState()
    if resume:
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        agent.load_state_dict(saved["agent"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        state = RunState(**saved["state"])
    diversity = ScaffoldFilter(config.df_bucket_size, config.df_min_score) if config.diversity_filter else None
    if diversity is not None:  # refill the buckets from the ledger, in call order
        diversity(ledger.order, ledger.scores_in_order())

    def save_checkpoint() -> None:
        payload = {"agent": agent.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state(), "state": asdict(state)}
        torch.save(payload, checkpoint_path.with_suffix(".tmp"))
        checkpoint_path.with_suffix(".tmp").replace(checkpoint_path)

    t0 = time.perf_counter()
    progress = tqdm(total=config.budget, initial=ledger.calls, desc=f"chem run ({'MARA' if config.mara else 'REINVENT'})", unit="call")
    steps_this_session = 0
    # A collapsed agent resamples cached molecules that cost no call; the step limit ends such a
    # run (recorded in its metrics) instead of spinning on free repeats.
    while not ledger.exhausted and state.step < config.step_limit and (config.max_steps is None or steps_this_session < config.max_steps):
        ids, _ = agent.sample(config.batch_size, generator=generator)
        molecules = [canonical_smiles(s) for s in agent.decode(ids)]
        calls_before = ledger.calls
        scores = ledger.score(molecules, state.step)
        keep = ~np.isnan(scores)  # molecules the budget could no longer pay for sit out the update
        ids, molecules, scores = ids[keep], [m for m, k in zip(molecules, keep) if k], scores[keep]
        state.invalid += sum(m is None for m in molecules)
        state.sampled += len(molecules)
        train_scores = diversity(molecules, scores) if diversity is not None else scores

        if config.replay_size:  # replay from the memory as it was before this batch, then update it
            pick = np.random.default_rng([config.seed, state.step]).permutation(len(state.replay))[: config.replay_batch]
            replayed = [state.replay[i] for i in pick]
            memory = dict(state.replay)
            memory.update({m: float(s) for m, s in zip(molecules, train_scores) if m is not None})
            state.replay = sorted(memory.items(), key=lambda kv: -kv[1])[: config.replay_size]
            if replayed:
                ids = _stack(agent, ids, [m for m, _ in replayed])
                train_scores = np.concatenate([train_scores, [s for _, s in replayed]])

        # the budget always pays for at least one new molecule, so the batch is never empty
        agent_ll = agent.log_likelihood(ids)
        with torch.no_grad():
            prior_ll = prior.log_likelihood(ids)
        score_t = torch.as_tensor(train_scores, dtype=prior_ll.dtype, device=prior_ll.device)
        rewards, frac_augmented = shaped_rewards(score_t, prior_ll, config)
        loss = augmented_likelihood_loss(agent_ll, prior_ll, rewards, config.sigma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state.step += 1
        steps_this_session += 1
        progress.update(ledger.calls - calls_before)
        done = ledger.exhausted or state.step >= config.step_limit
        if state.step % 5 == 0 or done:
            state.history.append(_snapshot(ledger, state, config, float(loss.detach()), frac_augmented, float(np.mean(scores))))
        if state.step % config.checkpoint_every == 0 or done:
            save_checkpoint()
    progress.close()
    save_checkpoint()
    if not ledger.exhausted and state.step < config.step_limit:
        return {"finished": False, "oracle_calls": ledger.calls, "step": state.step}
    metrics = summarise(ledger, state, config, wall_minutes_this_session=(time.perf_counter() - t0) / 60)
    (out / "history.json").write_text(json.dumps(state.history))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _write_report(out, metrics, state)
    return metrics


def _stack(agent: SmilesRNN, ids: torch.Tensor, smiles: list[str]) -> torch.Tensor:
    """Sampled ``ids`` and encoded ``smiles`` in one right-padded batch."""
    extra = agent.encode(smiles)
    width = max(ids.shape[1], extra.shape[1])
    pad = agent.vocab.pad
    grow = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=pad)  # noqa: E731
    return torch.cat([grow(ids), grow(extra)])


def _snapshot(ledger: Ledger, state: RunState, config: RunConfig, loss: float, frac_augmented: float, mean_score: float) -> dict[str, float]:
    scores = ledger.scores_in_order()
    row = {"step": state.step, "oracle_calls": ledger.calls, "loss": loss, "mean_score": mean_score, "fraction_augmented": frac_augmented,
           "invalid_fraction": state.invalid / max(state.sampled, 1)}
    for screen in config.screens:
        row[f"yield@{screen}"] = int((scores >= screen).sum())
    return row


def summarise(ledger: Ledger, state: RunState, config: RunConfig, wall_minutes_this_session: float) -> dict[str, Any]:
    """Final metrics from the ledger: Yield and OB100 per screen, IntDiv1 and #Circles of all
    scored molecules, scaffolds of the hits, validity of the samples."""
    from mara_rl.metrics.molecules import internal_diversity, num_circles, num_scaffolds, oracle_calls_to_hits

    scores = ledger.scores_in_order()
    metrics: dict[str, Any] = {
        "objective": ledger.oracle.name,
        "method": method_label(config),
        "seed": config.seed,
        "oracle_calls": ledger.calls,
        "steps": state.step,
        "stopped_by_step_limit": not ledger.exhausted,
        "sampled": state.sampled,
        "validity": 1.0 - state.invalid / max(state.sampled, 1),
        "mean_score": float(scores.mean()),
        "intdiv1": internal_diversity(ledger.order),
        "circles": num_circles(ledger.order),
        "wall_minutes_last_session": wall_minutes_this_session,
    }
    for screen in config.screens:
        hits = [m for m, s in zip(ledger.order, scores) if s >= screen]
        metrics[f"yield@{screen}"] = len(hits)
        metrics[f"ob100@{screen}"] = oracle_calls_to_hits(scores, screen, 100)
        metrics[f"scaffolds@{screen}"] = num_scaffolds(hits)
    return metrics


def method_label(config: RunConfig) -> str:
    if not config.mara:
        return "REINVENT"
    return f"MARA tau={config.tau}" if config.tau is not None else f"MARA q={config.tau_quantile}"


def _write_report(out: Path, metrics: dict[str, Any], state: RunState) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [f"# {metrics['method']} on {metrics['objective']} (seed {metrics['seed']})", ""]
    lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v if v is not None else 'not reached'}" for k, v in metrics.items()]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    calls = [h["oracle_calls"] for h in state.history]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for key in [k for k in metrics if k.startswith("yield@")]:
        ax.plot(calls, [h[key] for h in state.history], label=f"score >= {key.split('@')[1]}")
    ax.set_xlabel("oracle calls")
    ax.set_ylabel("yield (distinct molecules)")
    ax.set_title(f"{metrics['method']}, {metrics['objective']}, seed {metrics['seed']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "yield.png", dpi=120)
    plt.close(fig)
