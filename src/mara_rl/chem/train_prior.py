"""Maximum-likelihood training of the SMILES prior (``mara chem train-prior``).

Loss: mean over non-pad target tokens of ``-log p(x_k | x_<k)`` (teacher forcing), Adam,
gradient-norm clipping, learning rate ``lr * lr_decay ** epoch``. Data order is a seeded
permutation per epoch, so an interrupted run resumes at the same batch from ``checkpoint.pt``.
Writes ``prior.pt`` (compact float16 checkpoint with the vocabulary), ``checkpoint.pt``
(resumable: weights, optimiser, position, elapsed time), ``config.json``, ``metrics.json``,
``summary.md`` and ``loss.png``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from mara_rl.chem.checks import atomic_write_text, check_device, check_float, check_int, check_seed, first_line, parse_device, writable_folder
from mara_rl.chem.data import check_parsable, moses_path, read_smiles
from mara_rl.chem.model import PriorConfig, SmilesRNN
from mara_rl.chem.tokenizer import Vocabulary


@dataclass
class TrainPriorConfig:
    out: str = "runs/chem-prior"
    data: str | None = None  # default: the MOSES training set from the molsets wheel
    limit: int | None = None  # use only the first `limit` SMILES
    model: PriorConfig = field(default_factory=PriorConfig)
    batch_size: int = 256
    lr: float = 1e-3
    lr_decay: float = 0.85
    grad_clip: float = 1.0
    epochs: int = 10
    max_minutes: float | None = None  # stop (and checkpoint) once this much training time has passed
    checkpoint_every: int = 500  # steps
    log_every: int = 50  # steps
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.batch_size = check_int(self.batch_size, "--batch-size", 1)
        self.epochs = check_int(self.epochs, "--epochs", 1)
        self.lr = check_float(self.lr, "--lr", positive=True)
        self.lr_decay = check_float(self.lr_decay, "--lr-decay", positive=True)
        self.grad_clip = check_float(self.grad_clip, "grad_clip", positive=True)
        if self.max_minutes is not None:
            self.max_minutes = check_float(self.max_minutes, "--max-minutes", positive=True)
        if self.limit is not None:
            self.limit = check_int(self.limit, "--limit", 1)
        self.checkpoint_every = check_int(self.checkpoint_every, "--checkpoint-every", 1)
        self.log_every = check_int(self.log_every, "--log-every", 1)
        self.seed = check_seed(self.seed, "--seed")
        parse_device(self.device)


def encode_dataset(smiles: list[str], vocab: Vocabulary) -> tuple[torch.Tensor, torch.Tensor]:
    """All SMILES as one right-padded ``[N, L]`` int16 tensor plus their lengths ``[N]``."""
    encoded = [vocab.encode(s) for s in smiles]
    lengths = torch.tensor([len(e) for e in encoded], dtype=torch.int32)
    ids = torch.full((len(encoded), int(lengths.max())), vocab.pad, dtype=torch.int16)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e, dtype=torch.int16)
    return ids, lengths


def nll_loss(model: SmilesRNN, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token negative log-likelihood over the non-pad targets of ``batch [B, T]``."""
    logits, _ = model(batch[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1), ignore_index=model.vocab.pad)


def train_prior(config: TrainPriorConfig, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) a prior; returns the metrics written to ``metrics.json``."""
    out = Path(config.out)
    checkpoint_path = out / "checkpoint.pt"
    if resume and not checkpoint_path.is_file():
        raise ValueError(f"--resume given but {checkpoint_path} does not exist")
    check_device(config.device)
    writable_folder(out)
    state = _load_checkpoint(checkpoint_path) if resume else None
    data_path = Path(config.data) if config.data else moses_path("train")
    smiles = read_smiles(data_path, config.limit)
    check_parsable(smiles, data_path)

    if state is not None:
        vocab = Vocabulary.from_list(state["model"]["vocabulary"])
        if state["config"]["model"] != asdict(config.model):
            raise ValueError("the model architecture differs from the checkpoint's; resume with the same options")
    else:
        vocab = Vocabulary.from_smiles(smiles)
    device = torch.device(config.device)
    ids = encode_dataset(smiles, vocab)[0].to(device)  # the whole set fits on a GPU: no per-batch copies
    torch.manual_seed(config.seed)
    model = SmilesRNN(vocab, config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    step, epoch, batch_start, elapsed = 0, 0, 0, 0.0
    history: list[dict[str, float]] = []
    if state is not None:
        model.load_state_dict(state["model"]["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, batch_start, elapsed = state["step"], state["epoch"], state["batch"], state["elapsed"]
        history = state["history"]
    atomic_write_text(out / "config.json", json.dumps({**asdict(config), "data": str(data_path), "num_smiles": len(smiles)}, indent=2))

    def save_checkpoint() -> None:
        payload = {
            "model": model.checkpoint(),
            "optimizer": optimizer.state_dict(),
            "config": asdict(config),
            "step": step,
            "epoch": epoch,
            "batch": batch_start,
            "elapsed": elapsed,
            "history": history,
        }
        torch.save(payload, checkpoint_path.with_suffix(".tmp"))
        checkpoint_path.with_suffix(".tmp").replace(checkpoint_path)  # atomic: never a half-written checkpoint
        torch.save(model.checkpoint(half=True), out / "prior.pt")

    num_batches = math.ceil(len(smiles) / config.batch_size)
    stopped_early = False
    running = torch.zeros((), device=device)
    progress = tqdm(total=config.epochs * num_batches, initial=epoch * num_batches + batch_start, desc="train-prior", unit="batch")
    t0 = time.perf_counter() - elapsed
    while epoch < config.epochs and not stopped_early:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * config.lr_decay**epoch
        order = torch.randperm(len(smiles), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch)).to(device)
        while batch_start < num_batches:
            index = order[batch_start * config.batch_size : (batch_start + 1) * config.batch_size]
            batch = ids[index]
            batch = batch[:, : int((batch != vocab.pad).sum(1).max())].long()
            loss = nll_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            batch_start += 1
            progress.update(1)
            running += loss.detach()  # summed on the device: no host sync per step
            if step % config.log_every == 0:
                elapsed = time.perf_counter() - t0
                mean_loss = float(running) / config.log_every
                history.append({"step": step, "epoch": epoch + batch_start / num_batches, "loss": mean_loss, "minutes": elapsed / 60})
                progress.set_postfix(loss=f"{mean_loss:.3f}")
                running.zero_()
            if step % config.checkpoint_every == 0:
                elapsed = time.perf_counter() - t0
                save_checkpoint()
            if config.max_minutes is not None and time.perf_counter() - t0 >= 60 * config.max_minutes:
                stopped_early = True
                break
        if not stopped_early:
            epoch, batch_start = epoch + 1, 0
    progress.close()
    elapsed = time.perf_counter() - t0
    save_checkpoint()
    metrics = {
        "num_smiles": len(smiles),
        "vocabulary_size": len(vocab),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": step,
        "epochs_completed": epoch + batch_start / num_batches,
        "train_minutes": elapsed / 60,
        "final_loss": history[-1]["loss"] if history else None,
        "stopped_by_time_limit": stopped_early,
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "history": history,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _write_report(out, metrics)
    return metrics


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint, or a ValueError that says what is wrong with the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        Vocabulary.from_list(state["model"]["vocabulary"])
        missing = [k for k in ("optimizer", "config", "step", "epoch", "batch", "elapsed", "history") if k not in state]
    except Exception as err:  # torch.load fails in many ways on a damaged file
        missing, problem = [], f"{type(err).__name__}: {first_line(err)}"
    else:
        problem = f"it lacks {missing}" if missing else ""
    if problem:
        raise ValueError(f"checkpoint {path} is damaged ({problem}); checkpoints are replaced atomically, so something "
                         "else changed it: delete it and train without --resume") from None
    return state


def _write_report(out: Path, metrics: dict[str, Any]) -> None:
    lines = [
        "# SMILES prior training",
        "",
        f"- SMILES: {metrics['num_smiles']:,}; vocabulary: {metrics['vocabulary_size']} tokens; parameters: {metrics['parameters']:,}",
        f"- steps: {metrics['steps']:,}; epochs: {metrics['epochs_completed']:.2f}; time: {metrics['train_minutes']:.1f} min on {metrics['device']}",
        f"- final training loss (nats/token): {metrics['final_loss']}",
        "",
    ]
    (out / "summary.md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # training hosts without matplotlib still get metrics.json
        return
    history = metrics["history"]
    if not history:
        return
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history])
    ax.set_xlabel("epoch")
    ax.set_ylabel("training NLL (nats / token)")
    ax.set_title("SMILES prior training")
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=120)
    plt.close(fig)
