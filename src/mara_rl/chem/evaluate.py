"""Quality of a prior's samples: validity, uniqueness and novelty against its training set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mara_rl.chem.checks import check_int, check_seed, open_prior
from mara_rl.chem.data import moses_path, read_smiles
from mara_rl.chem.model import SmilesRNN


def sample_smiles(model: SmilesRNN, num_samples: int, batch_size: int = 500, seed: int = 0) -> list[str]:
    """``num_samples`` SMILES by ancestral sampling, seeded."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    out: list[str] = []
    with tqdm(total=num_samples, desc="sampling", unit="mol") as progress:
        while len(out) < num_samples:
            ids, _ = model.sample(min(batch_size, num_samples - len(out)), generator=generator)
            out.extend(model.decode(ids))
            progress.update(ids.shape[0])
    return out


def evaluate_prior(
    prior: str | Path | None = None,
    *,
    num_samples: int = 10_000,
    batch_size: int = 500,
    seed: int = 0,
    training_smiles: str | Path | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Validity, uniqueness and novelty (vs the canonicalised training set, default MOSES train)
    of ``num_samples`` samples from ``prior`` (default: the shipped prior)."""
    from mara_rl.metrics.molecules import canonical_smiles, novelty, uniqueness, validity

    num_samples = check_int(num_samples, "--samples", 1)
    batch_size = check_int(batch_size, "--batch-size", 1)
    seed = check_seed(seed, "--seed")
    torch.set_num_threads(check_int(threads, "--threads", 1))  # small RNN steps: extra threads mostly wait on each other
    model = open_prior(prior)
    model.eval()
    samples = sample_smiles(model, num_samples, batch_size, seed)
    train_path = Path(training_smiles) if training_smiles else moses_path("train")
    reference = {c for c in map(canonical_smiles, tqdm(read_smiles(train_path), desc="canonicalising training set")) if c}
    return {
        "prior": str(prior or "shipped"),
        "samples": num_samples,
        "seed": seed,
        "validity": validity(samples),
        "uniqueness": uniqueness(samples),
        "novelty": novelty(samples, reference),
        "training_set": str(train_path),
        "training_set_size": len(reference),
    }
