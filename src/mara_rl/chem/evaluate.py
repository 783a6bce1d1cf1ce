"""Quality of a prior's samples: validity, uniqueness and novelty against its training set."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mara_rl._cache import cache_root
from mara_rl.chem.checks import check_int, check_seed, open_prior
from mara_rl.chem.data import SMILES_CHECKED_ROWS, check_parsable, moses_path, read_smiles
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


def canonical_training_set(path: str | Path) -> set[str]:
    """Canonical SMILES of every parsable row of ``path``.

    Canonicalising MOSES train takes minutes, so the set is kept in ``<cache>/canonical/`` under a key
    of the file's resolved path, size, modification time and the RDKit version; a damaged or
    unwritable cache only costs the recomputation.
    """
    from rdkit import rdBase

    from mara_rl.metrics.molecules import canonical_smiles

    path = Path(path)
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{rdBase.rdkitVersion}".encode()).hexdigest()
    cached = cache_root() / "canonical" / f"{path.name}.{key[:16]}.txt.gz"
    try:
        with gzip.open(cached, "rt") as handle:
            return set(handle.read().split("\n")) - {""}
    except (OSError, EOFError, UnicodeDecodeError, zlib.error):
        pass
    reference = {c for c in map(canonical_smiles, tqdm(read_smiles(path), desc="canonicalising training set")) if c}
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        with gzip.open(partial, "wt") as handle:
            handle.write("\n".join(sorted(reference)))
        partial.replace(cached)
    except OSError:
        pass
    return reference


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
    from mara_rl.metrics.molecules import novelty, uniqueness, validity

    num_samples = check_int(num_samples, "--samples", 1)
    batch_size = check_int(batch_size, "--batch-size", 1)
    seed = check_seed(seed, "--seed")
    train_path = Path(training_smiles) if training_smiles else moses_path("train")
    if not train_path.is_file():  # before minutes of sampling
        raise ValueError(f"--training-smiles {train_path} {'is a directory' if train_path.is_dir() else 'does not exist'}")
    check_parsable(read_smiles(train_path, SMILES_CHECKED_ROWS), train_path)
    torch.set_num_threads(check_int(threads, "--threads", 1))  # small RNN steps: extra threads mostly wait on each other
    model = open_prior(prior)
    model.eval()
    samples = sample_smiles(model, num_samples, batch_size, seed)
    reference = canonical_training_set(train_path)
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
