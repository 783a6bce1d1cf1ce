"""REINVENT-style RL on a SMILES prior, with MARA as the reward transform (``mara chem run``).

Per step: sample a batch from the agent; score the new valid molecules (invalid SMILES score 0
and cost nothing; a cached molecule costs nothing; the run stops at exactly ``budget`` oracle
calls); optionally apply REINVENT4's scaffold diversity filter; turn the filtered scores, exactly
those the update uses, into rewards with MARA (``mara_rewards``: R = score, ref log-prob = prior
log-likelihood, beta = 1 / sigma); regress the agent's log-likelihood onto the augmented
likelihood ``log p_prior(x) + sigma * r(x)``.

The augmented likelihood is the log of the reverse-KL Gibbs target ``p_prior(x) exp(sigma R(x))``
with beta = 1 / sigma, so REINVENT is KL-regularised RL and MARA belongs exactly where the
rewards enter that target: for samples with ``R >= tau`` it makes ``log p_prior(x) + sigma r(x)``
equal to the anchor's value, a target that is flat over the good molecules.

Run folder and crash safety: ``config.json`` (written atomically first, the run's settings from
then on), ``checkpoint.pt`` (agent, optimiser, sampler RNG, counters; replaced atomically every
``checkpoint_every`` steps, the first before any oracle call) and ``molecules.csv``, the ledger:
every scored molecule (``call, step, smiles, score, raw, reason, prior_nll, agent_nll`` and one
column per component of the objective: ``raw`` is a docking objective's Vina score in kcal/mol,
``reason`` why a molecule scored 0 unmeasured, the NLLs (nats) are the prior's and the sampling
agent's, a component is one term of the score, e.g. ``qed``), appended, flushed and fsync'd per batch.
The ledger is the source of truth for the budget and the cache. A resumed run replays the steps
since the checkpoint from the same RNG state, finds their molecules in the ledger and pays
nothing for them, so it continues exactly where the killed run was. Only the batch being scored
at the kill, whose rows were not yet complete in the ledger, is paid again (at most
``batch_size`` molecules). A torn last row has no newline: it is dropped and rescored.

Scoring goes through one executor (``--oracle-workers N``: a local process pool, ``--ray-address``:
Ray), which returns each molecule's score in input order, so the ledger is the same whichever
executor scored it; the ledger is written by this process alone.
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
import json
import math
import os
import sys
import time
import zlib
from bisect import bisect_left
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mara_rl.augment import mara_rewards
from mara_rl.chem.checks import (
    atomic_write_text, check_device, check_float, check_int, check_oracle_executor, check_seed, first_line, open_prior, parse_device,
    writable_folder,
)
from mara_rl.chem.executors import Executor, SerialExecutor, make_executor
from mara_rl.chem.model import SmilesRNN
from mara_rl.chem.oracles import Details, Oracle, check_scores, get_oracle, is_docking, is_user_objective

LEDGER_FIELDS = ("call", "step", "smiles", "score", "raw", "reason", "prior_nll", "agent_nll")  # then the objective's components
# headers of ledgers written by earlier versions (before the raw score; before the NLLs and components): they resume as they are
LEGACY_LEDGER_FIELDS = (LEDGER_FIELDS[:4], LEDGER_FIELDS[:6])
RUN_FILES = ("config.json", "checkpoint.pt", "molecules.csv")
LEDGER_ARCHIVE = "molecules.csv.gz"  # a finished run's whole ledger, compressed (archive_run)
HITS_ARCHIVE = "hits.csv.gz"  # or its hits alone: the rows scoring at least the run's lowest screen
RUN_FIGURES = ("yield.png", "top_molecules.png")
# settings of one session that leave the molecules and metrics unchanged: they may differ on --resume
SESSION_FIELDS = ("out", "device", "threads", "max_steps", "checkpoint_every", "oracle_workers", "ray_address", "tensorboard")
EXECUTOR_FIELDS = ("oracle_workers", "ray_address")
HISTORY_EVERY = 2  # steps between history rows: a 500-call run (8 steps of 64) still draws a curve
TOP_MOLECULES = 20  # listed in summary.md; the first 12 drawn in top_molecules.png


class OracleError(ValueError):
    """A user's oracle (``--objective module:factory``) raised: the user's error, reported as one line."""


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
    df_bucket_size: int = 25  # good molecules per scaffold before that scaffold scores 0 (REINVENT4's default)
    df_min_score: float = 0.4  # molecules below this are not memorised and do not fill buckets (REINVENT4's default)
    replay_size: int = 0  # top-k experience replay memory (0: off)
    replay_batch: int = 24
    screens: tuple[float, ...] = (0.8, 0.85)
    prior: str | None = None
    seed: int = 0
    dock_exhaustiveness: int | None = None  # Vina's, for docking objectives (None: 8)
    device: str = "cpu"
    threads: int = 1  # torch CPU threads; more threads than free cores slow small RNN steps badly
    oracle_workers: int = 1  # local processes scoring each batch (1: in this process)
    ray_address: str | None = None  # score on Ray: "auto", "ray://host:port", or "local" (started here)
    checkpoint_every: int = 10  # steps
    tensorboard: bool = False  # also log the history and the top molecules to out/tensorboard
    max_steps: int | None = None  # stop this session early (the run stays resumable)
    step_limit: int | None = None  # total steps; default 4 * budget / batch_size (see run)

    def __post_init__(self) -> None:
        self.budget = check_int(self.budget, "--budget", 1)
        self.batch_size = check_int(self.batch_size, "--batch-size", 2)
        self.sigma = check_float(self.sigma, "--sigma (beta = 1 / sigma)", positive=True)
        self.lr = check_float(self.lr, "--lr", positive=True)
        if self.mara and (self.tau is None) == (self.tau_quantile is None):
            raise ValueError("--mara needs exactly one of --tau and --tau-quantile")
        if not self.mara and (self.tau is not None or self.tau_quantile is not None):
            raise ValueError("--tau / --tau-quantile need --mara")
        if self.tau is not None:  # scores lie in [0, 1]: a tau outside augments all or nothing
            self.tau = check_float(self.tau, "--tau", 0.0, 1.0)
        if self.tau_quantile is not None:
            self.tau_quantile = check_float(self.tau_quantile, "--tau-quantile", 0.0, 1.0)
        self.df_bucket_size = check_int(self.df_bucket_size, "--df-bucket-size", 1)
        self.df_min_score = check_float(self.df_min_score, "--df-min-score", 0.0, 1.0)
        if self.df_min_score == 0.0:  # a zeroed repeat would fill buckets, and a resumed run could not rebuild them
            raise ValueError("--df-min-score must be above 0 (at 0 every re-proposal, scored 0 by the filter, would fill its bucket)")
        self.replay_size = check_int(self.replay_size, "--replay-size", 0)
        self.replay_batch = check_int(self.replay_batch, "--replay-batch", 1)
        self.screens = tuple(check_float(s, "--screens", 0.0, 1.0) for s in self.screens)
        if not self.screens or len(set(self.screens)) != len(self.screens):
            raise ValueError(f"--screens must be one or more distinct scores, got {list(self.screens)}")
        if self.prior is not None:  # absolute, so a resume from another folder finds the same file
            self.prior = str(Path(self.prior).resolve())
        self.seed = check_seed(self.seed, "--seed")
        if self.dock_exhaustiveness is not None:
            self.dock_exhaustiveness = check_int(self.dock_exhaustiveness, "--dock-exhaustiveness", 1)
        parse_device(self.device)
        self.threads = check_int(self.threads, "--threads", 1)
        self.oracle_workers = check_int(self.oracle_workers, "--oracle-workers", 1)
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address.strip()):
            raise ValueError(f"--ray-address must be auto, local or a cluster address, got {self.ray_address!r}")
        self.checkpoint_every = check_int(self.checkpoint_every, "--checkpoint-every", 1)
        if self.max_steps is not None:
            self.max_steps = check_int(self.max_steps, "--max-steps", 0)
        if self.step_limit is None:
            self.step_limit = 4 * -(-self.budget // self.batch_size)
        self.step_limit = check_int(self.step_limit, "step_limit", 1)

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


def ledger_fields(oracle: Oracle) -> tuple[str, ...]:
    """A new ledger's columns: :data:`LEDGER_FIELDS`, then one per component of ``oracle``."""
    components = tuple(getattr(oracle, "components", ()))
    for name in components:
        if not isinstance(name, str) or not name.isidentifier() or name in LEDGER_FIELDS or components.count(name) > 1:
            raise ValueError(f"objective {oracle.name!r}: component names must be distinct identifiers other than "
                             f"{', '.join(LEDGER_FIELDS)}, got {components}")
    return LEDGER_FIELDS + components


class Ledger:
    """Oracle budget, cache and CSV log of every scored molecule (rebuilt from the CSV on resume).

    ``executor`` scores each batch's new molecules (in order, whichever executor it is). Rows end
    with a newline, so a row torn by a kill is the file's unterminated tail: it is cut off (its
    molecule is scored again). Any other damage is a ValueError. A ledger with the four columns of
    older versions keeps them (its rows have no raw score)."""

    def __init__(self, path: Path, oracle: Oracle, budget: int, executor: Executor | None = None):
        self.path, self.oracle, self.budget = path, oracle, budget
        self.executor = executor or SerialExecutor()
        self.fields = ledger_fields(oracle)
        self.cache: dict[str, float] = {}
        self.row: dict[str, int] = {}  # each molecule's index in ``order``
        self.order: list[str] = []  # molecules in call order
        self.steps: list[int] = []  # the step that scored each of them
        self.raw: list[float | None] = []  # a docking objective's raw score of each of them
        self.reasons: list[str] = []  # why each of them scored 0 unmeasured ("" when measured)
        if path.is_file():
            self._read()
        else:
            atomic_write_text(path, ",".join(self.fields) + "\r\n")  # csv's own line end, as in the rows

    def _read(self) -> None:
        raw = self.path.read_bytes()
        torn = len(raw) - (raw.rfind(b"\n") + 1)
        if torn:
            with self.path.open("r+b") as handle:  # cut the torn row so the next batch starts a fresh line
                handle.truncate(len(raw) - torn)
                os.fsync(handle.fileno())
            print(f"mara chem: {self.path}: dropped a torn last row ({torn} bytes, written when the run was killed); "
                  "its molecule is scored again", file=sys.stderr)
        try:
            lines = raw[: len(raw) - torn].decode().splitlines()
        except UnicodeDecodeError as err:
            self._damaged(f"bytes that are not text at offset {err.start}")
        header = tuple(lines[0].split(",")) if lines else ()
        if header != self.fields and header not in LEGACY_LEDGER_FIELDS:
            if header[: len(LEDGER_FIELDS)] == LEDGER_FIELDS:
                raise ValueError(f"ledger {self.path} holds the components {', '.join(header[len(LEDGER_FIELDS):]) or 'none'}, but "
                                 f"objective {self.oracle.name!r} has {', '.join(self.fields[len(LEDGER_FIELDS):]) or 'none'}: it was "
                                 "written for another objective; start a new run in another --out")
            self._damaged(f"its first line is not the header {','.join(self.fields)}")
        self.fields = header
        for number, row in enumerate(csv.reader(lines[1:]), start=2):
            problem = self._add_row(row)
            if problem:
                self._damaged(f"line {number} {problem}")

    def _add_row(self, row: list[str]) -> str | None:
        """Append one stored row to the cache; a description of what is wrong with it, if anything."""
        if len(row) != len(self.fields):
            return f"has {len(row)} fields instead of {len(self.fields)}"
        call, step, smiles, score, raw, reason = (row + ["", ""])[:6]  # the oldest ledgers have no raw and reason
        try:
            call_n, step_n, value = int(call), int(step), float(score)
            raw_value = float(raw) if raw else None
        except ValueError:
            return "holds a call, step, score or raw score that is not a number"
        if call_n != len(self.order) + 1:
            return f"is call {call_n} where call {len(self.order) + 1} was expected"
        if step_n < (self.steps[-1] if self.steps else 0):
            return f"has step {step_n}, before the previous row's"
        if not smiles or smiles in self.cache:
            return f"repeats or lacks its molecule {smiles!r}"
        if not 0.0 <= value <= 1.0:
            return f"has score {score}, outside [0, 1]"
        if raw_value is not None and not np.isfinite(raw_value):
            return f"has raw score {raw}, not finite"
        self._keep(smiles, step_n, value, raw_value, reason)
        return None

    def _keep(self, smiles: str, step: int, score: float, raw: float | None, reason: str) -> None:
        self.cache[smiles] = score
        self.row[smiles] = len(self.order)
        self.order.append(smiles)
        self.steps.append(step)
        self.raw.append(raw)
        self.reasons.append(reason)

    def _damaged(self, problem: str) -> None:
        raise ValueError(f"ledger {self.path} is damaged: {problem}; restore it from a copy, or start a new run in another --out")

    @property
    def calls(self) -> int:
        """Oracle calls spent so far (each costs ``oracle.cost``)."""
        return len(self.order) * self.oracle.cost

    @property
    def exhausted(self) -> bool:
        return self.calls + self.oracle.cost > self.budget

    @property
    def last_step(self) -> int:
        """Step of the last scored molecule (-1 before the first)."""
        return self.steps[-1] if self.steps else -1

    def scored_before(self, smiles: str, step: int) -> bool:
        """Whether ``smiles`` was scored at a step before ``step`` (the same answer on a resumed replay)."""
        row = self.row.get(smiles)
        return row is not None and self.steps[row] < step

    def rows_before(self, step: int) -> int:
        """How many molecules were scored before ``step``."""
        return bisect_left(self.steps, step)

    def score(self, molecules: Sequence[str | None], step: int, prior_nll: Sequence[float] | None = None,
              agent_nll: Sequence[float] | None = None) -> np.ndarray:
        """Scores for canonical SMILES (``None`` = invalid -> 0, no call). New molecules are
        scored in order while the budget allows; the rest get NaN (unscored, left out of the
        update). The batch's new rows are appended, flushed and fsync'd before this returns;
        ``prior_nll`` / ``agent_nll`` (one per molecule) go into a new molecule's row."""
        new: list[str] = []
        for m in molecules:
            if m is not None and m not in self.cache and m not in new:
                new.append(m)
        affordable = max(0, (self.budget - self.calls) // self.oracle.cost)
        new = new[:affordable]
        if new:
            details = self.executor.map(Details(self.oracle), new)
            scores = check_scores(np.array([d.score for d in details]), len(new), self.oracle.name)
            components = len(getattr(self.oracle, "components", ()))
            for d in details:  # before any row is written, so that the ledger keeps whole batches
                if len(d.components) != components:
                    raise ValueError(f"oracle {self.oracle.name!r} names {components} components but returned {len(d.components)} "
                                     "values for a molecule")
            text = io.StringIO()
            writer = csv.writer(text)
            first = {m: i for i, m in reversed(list(enumerate(molecules)))}  # where each molecule was first sampled
            nll = lambda values, m: "" if values is None else repr(float(values[first[m]]))  # noqa: E731
            for m, s, d in zip(new, scores, details):
                reason = " ".join(d.reason.split())  # one line, so that a row is one line
                raw = None if d.raw is None else float(d.raw)
                self._keep(m, step, float(s), raw, reason)
                row = (len(self.order), step, m, repr(float(s)), "" if raw is None else repr(raw), reason,
                       nll(prior_nll, m), nll(agent_nll, m), *(repr(float(c)) for c in d.components))
                writer.writerow(row[: len(self.fields)])
            self._append(text.getvalue())
        return np.array([0.0 if m is None else self.cache.get(m, np.nan) for m in molecules])

    def _append(self, text: str) -> None:
        with self.path.open("a", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def scores_in_order(self) -> np.ndarray:
        return np.array([self.cache[m] for m in self.order])


class ScaffoldFilter:
    """REINVENT4's ``IdenticalMurckoScaffold`` diversity filter (its defaults: ``bucket_size`` 25,
    ``minscore`` 0.4; the penalty is a score of 0). Molecules are taken in batch order; for each
    valid one:

    1. a molecule the filter has memorised before scores 0 (REINVENT4 "also memorizes all seen
       SMILES": a re-proposal earns nothing);
    2. if its score is still at least ``min_score``, it is memorised and counted in the bucket of
       its Bemis-Murcko scaffold (RDKit ``GetScaffoldForMol``, canonical SMILES; every acyclic
       molecule shares the empty scaffold); once that bucket holds more than ``bucket_size``
       molecules, it scores 0.

    So the first ``bucket_size`` good molecules of a scaffold keep their score and later ones get 0.
    The filter changes the scores used for training only (the ledger keeps the oracle's). With
    ``min_score > 0`` its memory is a function of the distinct molecules in the order they were
    first proposed (a zeroed repeat never counts), which is how a resumed run rebuilds it."""

    def __init__(self, bucket_size: int, min_score: float):
        self.bucket_size, self.min_score = bucket_size, min_score
        self.buckets: dict[str, int] = {}
        self.memory: set[str] = set()

    def __call__(self, molecules: Sequence[str | None], scores: np.ndarray) -> np.ndarray:
        from rdkit import Chem
        from rdkit.Chem.Scaffolds import MurckoScaffold

        out = np.array(scores, dtype=np.float64, copy=True)
        for i, m in enumerate(molecules):
            if m is None:
                continue
            if m in self.memory:
                out[i] = 0.0
            if out[i] >= self.min_score:
                self.memory.add(m)
                scaffold = Chem.MolToSmiles(MurckoScaffold.GetScaffoldForMol(Chem.MolFromSmiles(m)))
                self.buckets[scaffold] = self.buckets.get(scaffold, 0) + 1
                if self.buckets[scaffold] > self.bucket_size:
                    out[i] = 0.0
        return out


@dataclass
class RunState:
    step: int = 0
    invalid: int = 0
    sampled: int = 0
    replay: list[tuple[str, float]] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    # valid proposals of a molecule already scored at an earlier step or earlier in the same batch
    # (free for the budget, but a wasted update); ``repeated_hits`` per screen counts those scoring >= it
    repeats: int = 0
    repeated_hits: dict[str, int] = field(default_factory=dict)


def read_config(out: str | Path) -> RunConfig:
    """The configuration stored in ``out/config.json``."""
    path = Path(out) / "config.json"
    if not path.is_file():
        raise ValueError(f"{out} holds no run to resume (no config.json); start it without --resume")
    try:
        stored = json.loads(path.read_text())
        return RunConfig(**{**stored, "out": str(out)})
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
        raise ValueError(f"{path} is damaged ({type(err).__name__}: {err}); it is written atomically, so something else "
                         "changed it: restore it, or start a new run in another --out") from None


def config_conflict(stored: RunConfig, config: RunConfig) -> str | None:
    """Why ``config`` cannot continue the run stored as ``stored`` (None when it can): a setting
    outside ``SESSION_FIELDS`` that differs."""
    for f in fields(RunConfig):
        old, new = getattr(stored, f.name), getattr(config, f.name)
        if f.name not in SESSION_FIELDS and old != new:
            flag = "--" + f.name.replace("_", "-")
            return (f"{flag} {new} differs from {old}, the setting stored in {stored.out}/config.json; continue that "
                    f"run without {flag}, or start a new run in another --out")
    return None


def resume_config(out: str | Path, **given: Any) -> RunConfig:
    """The stored configuration of the run in ``out``. Settings in ``given`` (those the user
    named) replace it where they only concern this session (``SESSION_FIELDS``); any other must
    equal the stored value."""
    stored = asdict(read_config(out))
    stored["max_steps"] = None  # --max-steps bounds one session: the stored one ended the session that set it
    if any(name in given for name in EXECUTOR_FIELDS):  # naming one chooses the executor afresh
        stored.update({f.name: f.default for f in fields(RunConfig) if f.name in EXECUTOR_FIELDS})
    merged = RunConfig(**{**stored, **given, "out": str(out)})
    conflict = config_conflict(read_config(out), merged)
    if conflict:
        raise ValueError(conflict)
    return merged


def make_oracle(config: RunConfig) -> Oracle:
    """The oracle of ``config``'s objective and docking settings."""
    return get_oracle(config.objective, dock_exhaustiveness=config.dock_exhaustiveness)


def run(config: RunConfig, resume: bool = False, oracle: Oracle | None = None) -> dict[str, Any]:
    """Run (or resume) REINVENT / MARA-REINVENT until the oracle budget is spent; returns metrics.

    Everything is checked before a model is loaded or the oracle called. With ``resume`` the
    run's stored settings must equal ``config``'s outside ``SESSION_FIELDS``."""
    from mara_rl.metrics.molecules import canonical_smiles

    out = Path(config.out)
    checkpoint_path, ledger_path = out / "checkpoint.pt", out / "molecules.csv"
    if resume:
        conflict = config_conflict(read_config(out), config)
        if conflict:
            raise ValueError(conflict)
        if keeps_hits_only(out):
            raise ValueError(f"{out} keeps only its hits ({HITS_ARCHIVE}), not the whole ledger a resume replays; rerun its "
                             "seed in another --out (runs are deterministic)")
        archive = standing_archive(out)
        if archive is not None:  # a run kept compressed: its paid molecules back in place
            restored = ledger_path.with_name(ledger_path.name + ".restore.tmp")
            restored.write_bytes(archived_ledger(archive))
            restored.replace(ledger_path)
    elif any((out / name).exists() for name in RUN_FILES):
        if (out / "metrics.json").is_file():
            raise ValueError(f"{out} already holds a finished run; choose another --out")
        raise ValueError(f"{out} holds an unfinished run; continue it with `mara chem run --out {out} --resume` or choose another --out")
    check_device(config.device)
    check_tensorboard(config.tensorboard)
    writable_folder(out)
    oracle = oracle or make_oracle(config)
    check_oracle_executor(oracle, config.oracle_workers, config.ray_address)

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    prior = open_prior(config.prior, config.device).eval()
    agent = copy.deepcopy(prior).train()
    for p in prior.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.lr)
    generator = torch.Generator(device=agent.device).manual_seed(config.seed)
    state = RunState()
    rows_at_checkpoint = 0  # molecules the ledger held when the checkpoint was saved
    if resume and checkpoint_path.is_file():
        state, rows_at_checkpoint = _load_checkpoint(checkpoint_path, agent, optimizer, generator)

    def save_checkpoint() -> None:
        payload = {"agent": agent.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                   "state": asdict(state), "ledger_rows": len(ledger.order) if ledger is not None else 0}
        tmp = checkpoint_path.with_name(checkpoint_path.name + ".tmp")
        torch.save(payload, tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(checkpoint_path)

    # On disk before the first oracle call, in this order: settings, restart point, ledger.
    ledger: Ledger | None = None
    if not resume:
        atomic_write_text(out / "config.json", json.dumps(asdict(config), indent=2))
    if not checkpoint_path.is_file():  # without one, a resume replays the run from step 0
        save_checkpoint()
    if rows_at_checkpoint and not ledger_path.is_file():
        raise ValueError(f"{ledger_path} is missing but {checkpoint_path} was saved after {rows_at_checkpoint} scored molecules; "
                         "restore the ledger, or start a new run in another --out")
    ledger = Ledger(ledger_path, oracle, config.budget)
    if len(ledger.order) < rows_at_checkpoint:
        raise ValueError(f"{ledger_path} holds {len(ledger.order)} scored molecules but {checkpoint_path} was saved after "
                         f"{rows_at_checkpoint}: the ledger lost paid molecules. Restore it, or delete {checkpoint_path} and rerun "
                         "with --resume to replay the run from its start (the lost molecules are paid again)")
    diversity = ScaffoldFilter(config.df_bucket_size, config.df_min_score) if config.diversity_filter else None
    known = ledger.rows_before(state.step)
    if diversity is not None and known:  # refill the memory as it was at the checkpoint, in first-proposal order
        diversity(ledger.order[:known], ledger.scores_in_order()[:known])

    def finished() -> bool:
        # A resumed run replays the steps whose molecules the ledger already holds (for free).
        # A collapsed agent resamples cached molecules that cost no call; the step limit ends
        # such a run (recorded in its metrics) instead of spinning on free repeats.
        return (ledger.exhausted and state.step > ledger.last_step) or state.step >= config.step_limit

    board = _tensorboard(out) if config.tensorboard else None
    # started last: a local Ray takes seconds to start, and the checks above may still refuse the run
    ledger.executor = make_executor(config.oracle_workers, config.ray_address)
    t0 = time.perf_counter()
    progress = tqdm(total=config.budget, initial=ledger.calls, desc=f"chem run ({'MARA' if config.mara else 'REINVENT'})", unit="call")
    steps_this_session, saved_at = 0, state.step
    try:
        while not finished() and (config.max_steps is None or steps_this_session < config.max_steps):
            ids, _ = agent.sample(config.batch_size, generator=generator)
            molecules = [canonical_smiles(s) for s in agent.decode(ids)]
            agent_ll = agent.log_likelihood(ids)
            with torch.no_grad():
                prior_ll = prior.log_likelihood(ids)
            calls_before = ledger.calls
            try:
                scores = ledger.score(molecules, state.step, prior_nll=(-prior_ll).tolist(), agent_nll=(-agent_ll.detach()).tolist())
            except Exception as err:
                if is_user_objective(config.objective):  # the user's code failed, not ours: say so, and how to go on
                    raise OracleError(f"objective {config.objective!r} raised {type(err).__name__}: {first_line(err)} (an error in that "
                                      f"oracle; the ledger holds the {len(ledger.order)} molecules scored before it, none of this "
                                      f"batch). Fix it and continue with: mara chem run --out {config.out} --resume") from err
                raise
            if calls_before == 0 and ledger.calls:  # the first batch is the prior's: can the run's thresholds be reached?
                warn_unreachable(scores, config)
            keep = ~np.isnan(scores)  # molecules the budget could no longer pay for sit out the update
            ids, molecules, scores = ids[keep], [m for m, k in zip(molecules, keep) if k], scores[keep]
            keep_t = torch.as_tensor(keep, device=agent_ll.device)
            agent_ll, prior_ll = agent_ll[keep_t], prior_ll[keep_t]
            state.invalid += sum(m is None for m in molecules)
            state.sampled += len(molecules)
            _count_repeats(state, ledger, molecules, scores, config.screens)
            train_scores = diversity(molecules, scores) if diversity is not None else scores

            if config.replay_size:  # replay from the memory as it was before this batch, then update it
                pick = np.random.default_rng([config.seed, state.step]).permutation(len(state.replay))[: config.replay_batch]
                replayed = [state.replay[i] for i in pick]
                memory = dict(state.replay)
                memory.update({m: float(s) for m, s in zip(molecules, train_scores) if m is not None})
                state.replay = sorted(memory.items(), key=lambda kv: -kv[1])[: config.replay_size]
                if replayed:
                    extra = agent.encode([m for m, _ in replayed])
                    agent_ll = torch.cat([agent_ll, agent.log_likelihood(extra)])
                    with torch.no_grad():
                        prior_ll = torch.cat([prior_ll, prior.log_likelihood(extra)])
                    train_scores = np.concatenate([train_scores, [s for _, s in replayed]])

            # the budget always pays for at least one new molecule, so the batch is never empty
            score_t = torch.as_tensor(train_scores, dtype=prior_ll.dtype, device=prior_ll.device)
            rewards, frac_augmented = shaped_rewards(score_t, prior_ll, config)
            loss = augmented_likelihood_loss(agent_ll, prior_ll, rewards, config.sigma)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state.step += 1
            steps_this_session += 1
            progress.update(ledger.calls - calls_before)
            done = finished()
            if state.step % HISTORY_EVERY == 0 or done:
                state.history.append(_snapshot(ledger, state, config, float(loss.detach()), frac_augmented, float(np.mean(scores))))
                if board is not None:
                    for key, value in state.history[-1].items():
                        if key not in ("step", "oracle_calls"):
                            board.add_scalar(key, value, global_step=state.history[-1]["oracle_calls"])
            if state.step % config.checkpoint_every == 0 or done:
                save_checkpoint()
                saved_at = state.step
    finally:
        progress.close()
        ledger.executor.close()
        if board is not None:
            board.flush()
    if saved_at != state.step:
        save_checkpoint()
    if not finished():
        return {"finished": False, "oracle_calls": ledger.calls, "step": state.step}
    metrics = summarise(ledger, state, config, wall_minutes_this_session=(time.perf_counter() - t0) / 60)
    atomic_write_text(out / "history.json", json.dumps(state.history))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    grid = _write_report(out, metrics, state)
    if board is not None:
        if grid is not None:
            board.add_image("top_molecules", np.asarray(grid.convert("RGB")), global_step=ledger.calls, dataformats="HWC")
        board.close()
    return metrics


def _load_checkpoint(path: Path, agent: SmilesRNN, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> tuple[RunState, int]:
    """Restore a run's checkpoint into agent, optimiser and generator; returns its counters and
    the ledger length it recorded."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        agent.load_state_dict(saved["agent"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        return RunState(**saved["state"]), int(saved.get("ledger_rows", 0))  # 0: saved before the count was kept
    except Exception as err:  # torch.load and load_state_dict fail in many ways on a damaged file
        raise ValueError(f"checkpoint {path} is damaged or from another prior ({type(err).__name__}: {first_line(err)}); "
                         f"delete it and rerun with --resume to replay the run from its start "
                         "(molecules already in molecules.csv are not paid again)") from None


def _count_repeats(state: RunState, ledger: Ledger, molecules: Sequence[str | None], scores: np.ndarray,
                   screens: Sequence[float]) -> None:
    """Add this batch's repeats (valid molecules scored at an earlier step, or earlier in the batch)
    to ``state``'s counters, and per screen those of them scoring at least the screen."""
    seen: set[str] = set()
    for m, s in zip(molecules, scores):
        if m is None:
            continue
        if m in seen or ledger.scored_before(m, state.step):
            state.repeats += 1
            for screen in screens:
                if s >= screen:
                    state.repeated_hits[str(screen)] = state.repeated_hits.get(str(screen), 0) + 1
        seen.add(m)


def _snapshot(ledger: Ledger, state: RunState, config: RunConfig, loss: float, frac_augmented: float, mean_score: float) -> dict[str, float]:
    known = ledger.rows_before(state.step)  # a replayed step sees the ledger as its first pass did
    scores = ledger.scores_in_order()[:known]
    row = {"step": state.step, "oracle_calls": known * ledger.oracle.cost, "loss": loss, "mean_score": mean_score, "fraction_augmented": frac_augmented,
           "invalid_fraction": state.invalid / max(state.sampled, 1), "sampled": state.sampled, "repeats": state.repeats}
    for screen in config.screens:
        row[f"yield@{screen}"] = int((scores >= screen).sum())
        row[f"repeated_hits@{screen}"] = state.repeated_hits.get(str(screen), 0)
    return row


def summarise(ledger: Ledger, state: RunState, config: RunConfig, wall_minutes_this_session: float) -> dict[str, Any]:
    """Final metrics from the ledger: Yield and OB100 per screen, IntDiv1 and #Circles of all
    scored molecules, scaffolds of the hits, validity of the samples; for docking objectives the
    median and best raw Vina score and how many molecules could not be docked."""
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
        "repeats": state.repeats,
        "mean_score": float(scores.mean()),
        "intdiv1": internal_diversity(ledger.order),
        "circles": num_circles(ledger.order),
        "wall_minutes_last_session": wall_minutes_this_session,
    }
    if is_docking(config.objective):  # Vina scores in kcal/mol (lower binds better) and the molecules never docked
        raw = np.array([r for r in ledger.raw if r is not None])
        metrics["raw_median"] = float(np.median(raw)) if raw.size else None
        metrics["raw_min"] = float(raw.min()) if raw.size else None
        metrics["not_docked"] = sum(bool(r) for r in ledger.reasons)
    for screen in config.screens:
        hits = [m for m, s in zip(ledger.order, scores) if s >= screen]
        metrics[f"yield@{screen}"] = len(hits)
        metrics[f"ob100@{screen}"] = oracle_calls_to_hits(scores, screen, 100)
        metrics[f"scaffolds@{screen}"] = num_scaffolds(hits)
        metrics[f"repeated_hits@{screen}"] = state.repeated_hits.get(str(screen), 0)
    return metrics


def method_label(config: RunConfig) -> str:
    """``REINVENT``, ``MARA tau=0.8`` or ``MARA q=0.9``, with `` + filter`` when the diversity filter is on."""
    if not config.mara:
        label = "REINVENT"
    else:
        label = f"MARA tau={config.tau}" if config.tau is not None else f"MARA q={config.tau_quantile}"
    return label + " + filter" if config.diversity_filter else label


def _tensorboard(out: Path):
    """A TensorBoard writer logging into ``out/tensorboard`` (extra ``tensorboard``)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("--tensorboard needs TensorBoard: pip install 'mara-rl[tensorboard]'") from None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def check_tensorboard(enabled: bool) -> None:
    """``--tensorboard`` can log: the package is installed (checked before anything is spent)."""
    import importlib.util

    if enabled and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("--tensorboard needs TensorBoard: pip install 'mara-rl[tensorboard]'")


def warn_unreachable(scores: np.ndarray, config: RunConfig) -> list[str]:
    """Warn on stderr (and return the warnings) for each screen, and MARA's tau, far out in the
    tail of the first batch's scores (the prior's own, since the agent starts as the prior):
    above ``q95 + (q95 - median)``, the 95th percentile plus its distance from the median. Hits
    that far out are rare at the start and may never come (e.g. 0.8 on a docking composite whose
    prior 95th percentile is 0.41); stopping now has cost one batch of the budget."""
    measured = scores[np.isfinite(scores)]
    if not measured.size:
        return []
    median, q95 = (float(q) for q in np.percentile(measured, [50, 95]))
    thresholds = [(f"screen {s}", s) for s in config.screens]
    if config.mara and config.tau is not None:
        thresholds.append((f"MARA's --tau {config.tau}", config.tau))
    warnings = [f"mara chem run: warning: {name} lies far above the prior's scores (first {measured.size} molecules: median "
                f"{median:.3g}, 95th percentile {q95:.3g}, best {measured.max():.3g}): hits may be rare or never come. "
                f"Stop now (Ctrl-C) to choose a lower one, having spent {measured.size} of the {config.budget} calls"
                for name, value in thresholds if value > q95 + (q95 - median)]
    for line in warnings:
        tqdm.write(line, file=sys.stderr)
    return warnings


def ledger_rows(out: str | Path, at_least: float | None = None) -> list[dict[str, str]]:
    """The rows of the run ``out``'s ledger scoring at least ``at_least`` (``None``: every row), as
    written: ``molecules.csv``, or a finished run kept small by :func:`archive_run`, its whole ledger
    compressed (``molecules.csv.gz``) or its hits alone (``hits.csv.gz``, which serves ``at_least``
    from the run's lowest screen up; below that, or every row, is a ``ValueError``)."""
    if at_least is not None and math.isnan(at_least):
        raise ValueError("at_least must be a score, not NaN")
    out = Path(out)
    archive = standing_archive(out)
    if archive is None:
        with (out / "molecules.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        if archive.name == HITS_ARCHIVE:
            kept = hits_threshold(out)
            if at_least is None or at_least < kept:
                asked = "every molecule" if at_least is None else f"the molecules scoring >= {at_least:g}"
                raise ValueError(f"{out} keeps only the molecules scoring >= {kept:g} ({HITS_ARCHIVE}), not {asked}; "
                                 "rerun its seed for the whole ledger (runs are deterministic)")
        rows = list(csv.DictReader(io.StringIO(archived_ledger(archive).decode(), newline="")))
    return rows if at_least is None else [r for r in rows if float(r["score"]) >= at_least]


def standing_archive(out: Path) -> Path | None:
    """``out``'s archived ledger where it stands in for a missing ``molecules.csv`` (the live ledger
    wins): the whole ledger compressed, else its hits."""
    if (out / "molecules.csv").is_file():
        return None
    return next((out / name for name in (LEDGER_ARCHIVE, HITS_ARCHIVE) if (out / name).is_file()), None)


def keeps_hits_only(out: str | Path) -> bool:
    """Whether the run ``out`` keeps only its hits (``hits.csv.gz``, :func:`archive_run`)."""
    archive = standing_archive(Path(out))
    return archive is not None and archive.name == HITS_ARCHIVE


def hits_threshold(out: Path) -> float:
    """The score from which a hits archive keeps a run's molecules: its lowest screen."""
    return min(read_config(out).screens)


def archived_ledger(path: Path) -> bytes:
    """The bytes of a compressed ledger; a damaged file is a ``ValueError`` naming it."""
    try:
        return gzip.decompress(path.read_bytes())
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{path} is damaged ({type(err).__name__}: {first_line(err)}); restore it from its source") from None


@dataclass(frozen=True)
class Archive:
    """What :func:`archive_run` writes for one run, read and checked before anything changes."""

    out: Path
    source: Path  # the ledger it is made from
    target: Path  # molecules.csv.gz or hits.csv.gz
    data: bytes  # the ledger's bytes (all of them, or the header and the hits)


def plan_archive(out: str | Path, hits_only: bool = False) -> Archive:
    """Read and check the ledger of the finished run ``out`` and select what its archive keeps
    (see :func:`archive_run`); a ``ValueError`` naming the problem where it cannot be archived."""
    if str(out) == "":
        raise ValueError("a run folder must be named (got an empty path)")
    out = Path(out)
    if not (out / "metrics.json").is_file():
        raise ValueError(f"{out} holds no finished run (no metrics.json): only a finished run is archived")
    source = standing_archive(out) or out / "molecules.csv"
    if not source.is_file():
        raise ValueError(f"{out} has no ledger (no molecules.csv, {LEDGER_ARCHIVE} or {HITS_ARCHIVE})")
    if source.name == HITS_ARCHIVE and not hits_only:
        raise ValueError(f"{out} keeps only its hits ({HITS_ARCHIVE}); its whole ledger cannot be made from them")
    data = archived_ledger(source) if source.suffix == ".gz" else source.read_bytes()
    target = out / (HITS_ARCHIVE if hits_only else LEDGER_ARCHIVE)
    if not hits_only:
        return Archive(out, source, target, data)
    if not (out / "config.json").is_file():
        raise ValueError(f"{out} has no config.json, which names the screens its hits are kept from")
    kept = hits_threshold(out)
    try:
        rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{source} is not a readable CSV ledger ({first_line(err)})") from None
    if not rows:
        return Archive(out, source, target, data)
    text = io.StringIO()
    csv.writer(text).writerows(rows)  # as the ledger writes its rows
    if text.getvalue().encode() != data or "score" not in rows[0]:
        raise ValueError(f"{source} is not a ledger as mara writes them (a header with 'score', rows as csv.writer "
                         "writes them), so its hits cannot be selected byte for byte")
    score = rows[0].index("score")
    try:
        hits = [r for r in rows[1:] if float(r[score]) >= kept]
    except (ValueError, IndexError):
        raise ValueError(f"{source} has a row whose score is not a number") from None
    text = io.StringIO()
    csv.writer(text).writerows([rows[0], *hits])
    return Archive(out, source, target, text.getvalue().encode())


def archive_run(out: str | Path | Archive, hits_only: bool = False, drop_figures: bool = False) -> tuple[Path, int, int]:
    """Keep the finished run ``out`` small, as the runs under ``results/`` are kept.

    Its ledger is compressed (``molecules.csv.gz``), or with ``hits_only`` only its header and the
    rows scoring at least the run's lowest screen are kept, as written (``hits.csv.gz``). The hits
    are all that the comparison's tables and its mechanism read at those screens: a molecule
    another run proposed and that scores >= the screen is one of that run's hits too, whenever the
    oracle scores a molecule the same in every run (true of the deterministic objectives). The
    archive is written to a temporary name, read back and compared before it replaces anything;
    then ``molecules.csv`` (or a whole archive the hits replace), ``checkpoint.pt`` and, with
    ``drop_figures``, the run's own figures are removed. An archived run is reused by ``compare``
    and read by :func:`ledger_rows`; one kept as hits cannot be resumed. ``out`` may be the
    :func:`plan_archive` of the run (so that many runs are checked before any is changed). Returns
    the archive and its sizes before and after (bytes).
    """
    plan = out if isinstance(out, Archive) else plan_archive(out, hits_only)
    before = plan.source.stat().st_size
    if plan.source != plan.target:
        temporary = plan.target.with_name(plan.target.name + ".tmp")
        temporary.write_bytes(gzip.compress(plan.data, compresslevel=9, mtime=0))
        if archived_ledger(temporary) != plan.data:
            raise ValueError(f"{temporary} did not read back as written; nothing was removed")
        temporary.replace(plan.target)
    for name in ("molecules.csv", LEDGER_ARCHIVE, "checkpoint.pt", *(RUN_FIGURES if drop_figures else ())):
        if name != plan.target.name:
            (plan.out / name).unlink(missing_ok=True)
    return plan.target, before, plan.target.stat().st_size


def top_molecules(out: Path, n: int = TOP_MOLECULES) -> list[dict[str, str]]:
    """The ``n`` best-scoring rows of ``out``'s ledger (ties in call order), as the ledger wrote them."""
    return sorted(ledger_rows(out), key=lambda r: -float(r["score"]))[:n]


def _write_report(out: Path, metrics: dict[str, Any], state: RunState):
    """``summary.md`` (metrics and the top molecules with their scores and components),
    ``yield.png`` and ``top_molecules.png`` (an RDKit grid of the best 12). Returns that grid
    image (PIL), or None when no molecule was scored."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rdkit import Chem
    from rdkit.Chem import Draw

    lines = [f"# {metrics['method']} on {metrics['objective']} (seed {metrics['seed']})", ""]
    lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v if v is not None else 'not reached'}" for k, v in metrics.items()]
    top = top_molecules(out)
    grid = None
    if top:
        extra = [k for k in top[0] if k not in ("call", "step", "smiles", "score", "reason") and any(r[k] for r in top)]
        lines += ["", f"## Top {len(top)} molecules (`top_molecules.png`: the first 12; every molecule: `molecules.csv`)", "",
                  "| rank | SMILES | score | " + " | ".join(extra) + " | call |", "|" + "---|" * (len(extra) + 4)]
        for rank, r in enumerate(top, start=1):
            cells = [f"{float(r[k]):.4g}" if r[k] else "" for k in extra]
            lines.append(f"| {rank} | `{r['smiles']}` | {float(r['score']):.4f} | " + " | ".join(cells) + f" | {r['call']} |")
        drawn = top[:12]
        grid = Draw.MolsToGridImage([Chem.MolFromSmiles(r["smiles"]) for r in drawn], molsPerRow=4, subImgSize=(260, 220),
                                    legends=[f"#{i} score {float(r['score']):.3f}" for i, r in enumerate(drawn, start=1)])
        grid.save(out / "top_molecules.png")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    calls = [h["oracle_calls"] for h in state.history]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for key in [k for k in metrics if k.startswith("yield@")]:
        ax.plot(calls, [h[key] for h in state.history], marker=".", label=f"score >= {key.split('@')[1]}")
    ax.set_xlabel("oracle calls")
    ax.set_ylabel("yield (distinct molecules)")
    ax.set_title(f"{metrics['method']}, {metrics['objective']}, seed {metrics['seed']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "yield.png", dpi=120)
    plt.close(fig)
    return grid
