"""Molecular objectives: the :class:`Oracle` protocol and RDKit-based scores in ``[0, 1]``.

An oracle takes a batch of valid canonical SMILES and returns one score per molecule. The RL
loop handles invalid SMILES (score 0, no call), caching and the budget; an oracle only scores.
Plug in your own (a docking command, a model) by implementing the protocol and passing
``--objective my_package.my_module:make_oracle`` (a zero-argument factory).
"""

from __future__ import annotations

import importlib
import math
import sys
from typing import Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np
from rdkit import Chem, DataStructs, RDConfig, RDLogger
from rdkit.Chem import QED, Descriptors, Lipinski, rdFingerprintGenerator

RDLogger.DisableLog("rdApp.*")

if RDConfig.RDContribDir not in sys.path:  # the SA score ships as an RDKit Contrib script
    sys.path.append(f"{RDConfig.RDContribDir}/SA_Score")
import sascorer  # noqa: E402

_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)

CELECOXIB = "Cc1ccc(-c2cc(C(F)(F)F)nn2-c2ccc(S(N)(=O)=O)cc2)cc1"


@runtime_checkable
class Oracle(Protocol):
    """``scores = oracle(smiles)``: ``[n]`` floats in ``[0, 1]`` for ``n`` valid SMILES.
    ``cost`` is what one call on one molecule spends of the budget (1 for cheap RDKit scores)."""

    name: str
    cost: int

    def __call__(self, smiles: Sequence[str]) -> np.ndarray: ...


class Scored(NamedTuple):
    """One molecule's score in ``[0, 1]``; for an objective that measures something first
    (docking: kcal/mol) also that raw value, and the reason it is missing (a failed docking)."""

    score: float
    raw: float | None = None
    reason: str = ""


class Details:
    """``Details(oracle)(smiles)`` -> a :class:`Scored` per molecule: the oracle's own
    ``details(smiles)`` where it has one (docking oracles), else its scores without a raw value.
    The batch function a run hands its executor; it pickles whenever the oracle does."""

    def __init__(self, oracle: Oracle):
        self.oracle, self.name = oracle, oracle.name

    def __call__(self, smiles: Sequence[str]) -> list[Scored]:
        details = getattr(self.oracle, "details", None)
        if details is not None:
            return list(details(smiles))
        return [Scored(float(s)) for s in self.oracle(smiles)]


class MolOracle:
    """An oracle from a per-molecule function ``score(mol) -> float``. A built-in objective
    (``objective`` set) pickles as its name and is rebuilt by :func:`get_oracle` in a worker
    process, since its score functions are closures that do not pickle."""

    cost = 1

    def __init__(self, name: str, score: Callable[[Chem.Mol], float], objective: str | None = None):
        self.name = name
        self._score = score
        self._objective = objective

    def __reduce__(self):
        if self._objective is None:
            return super().__reduce__()
        return get_oracle, (self._objective,)

    def __call__(self, smiles: Sequence[str]) -> np.ndarray:
        out = np.empty(len(smiles))
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s)
            if mol is None:
                raise ValueError(f"oracle {self.name!r} got an invalid SMILES {s!r}; score invalid molecules as 0 before calling")
            out[i] = self._score(mol)
        return out


def qed(mol: Chem.Mol) -> float:
    """RDKit QED (Bickerton et al., 2012), in ``[0, 1]``."""
    return float(QED.qed(mol))


def sa_score(mol: Chem.Mol) -> float:
    """Raw synthetic accessibility (Ertl & Schuffenhauer, 2009): 1 (easy) .. 10 (hard)."""
    return float(sascorer.calculateScore(mol))


def sa_desirability(mol: Chem.Mol) -> float:
    """SA mapped to ``[0, 1]``: ``(10 - SA) / 9``."""
    return (10.0 - sa_score(mol)) / 9.0


def hbd_below(max_donors: int = 4) -> Callable[[Chem.Mol], float]:
    """Constraint: 1 when the molecule has fewer than ``max_donors`` H-bond donors, else 0."""
    return lambda mol: float(Lipinski.NumHDonors(mol) < max_donors)


def tanimoto_to(reference: str) -> Callable[[Chem.Mol], float]:
    """Tanimoto similarity (Morgan r=2, 2048 bits) to a reference molecule."""
    ref = Chem.MolFromSmiles(reference)
    if ref is None:
        raise ValueError(f"reference must be a valid SMILES, got {reference!r}")
    ref_fp = _MORGAN.GetFingerprint(ref)
    return lambda mol: float(DataStructs.TanimotoSimilarity(ref_fp, _MORGAN.GetFingerprint(mol)))


def gaussian_desirability(mu: float, sigma: float) -> Callable[[float], float]:
    """GuacaMol-style Gaussian modifier ``exp(-(x - mu)^2 / (2 sigma^2))``."""
    return lambda x: math.exp(-0.5 * ((x - mu) / sigma) ** 2)


def product(*terms: Callable[[Chem.Mol], float]) -> Callable[[Chem.Mol], float]:
    """Product of per-molecule scores (a hard constraint is a 0/1 factor)."""
    return lambda mol: math.prod(t(mol) for t in terms)


def geometric_mean(*terms: Callable[[Chem.Mol], float]) -> Callable[[Chem.Mol], float]:
    """GuacaMol's aggregation of property desirabilities."""
    return lambda mol: math.prod(t(mol) for t in terms) ** (1.0 / len(terms))


def celecoxib_mpo() -> Callable[[Chem.Mol], float]:
    """GuacaMol-style multi-property objective: geometric mean of
    ``min(Tanimoto(celecoxib) / 0.5, 1)``, a TPSA desirability (Gaussian at 70, sd 20) and a
    logP desirability (Gaussian at 3, sd 1)."""
    sim = tanimoto_to(CELECOXIB)
    tpsa, logp = gaussian_desirability(70.0, 20.0), gaussian_desirability(3.0, 1.0)
    return geometric_mean(
        lambda m: min(sim(m) / 0.5, 1.0),
        lambda m: tpsa(Descriptors.TPSA(m)),
        lambda m: logp(Descriptors.MolLogP(m)),
    )


# name -> the per-molecule score function of a built-in objective
OBJECTIVES: dict[str, Callable[[], Callable[[Chem.Mol], float]]] = {
    "qed": lambda: qed,
    "sa": lambda: sa_desirability,
    "hbd": lambda: hbd_below(4),
    "similarity": lambda: tanimoto_to(CELECOXIB),
    # the paper's objective without docking: QED x (HBD < 4) x synthesisability (10 - SA) / 9
    "qed_hbd_sa": lambda: product(qed, hbd_below(4), sa_desirability),
    "celecoxib_mpo": celecoxib_mpo,
}


def is_docking(name: str) -> bool:
    """Whether objective ``name`` is a docking objective (``dock:<TARGET>``, ``dock_qed_hbd_sa:<TARGET>``)."""
    return name.partition(":")[0] in ("dock", "dock_qed_hbd_sa")


def get_oracle(name: str, dock_exhaustiveness: int | None = None) -> Oracle:
    """A built-in objective by name, a docking objective (``dock:<TARGET>``,
    ``dock_qed_hbd_sa:<TARGET>``; :mod:`mara_rl.chem.docking`; ``dock_exhaustiveness`` is Vina's,
    default 8), or ``module:factory`` for a user oracle."""
    if dock_exhaustiveness is not None and not is_docking(name):
        raise ValueError(f"--dock-exhaustiveness needs a docking objective (dock:<TARGET>, dock_qed_hbd_sa:<TARGET>), not {name!r}")
    if name in OBJECTIVES:
        return MolOracle(name, OBJECTIVES[name](), objective=name)
    if is_docking(name):  # AutoDock Vina, extra [dock]
        from mara_rl.chem.docking import DockingSettings, make_docking_oracle

        settings = DockingSettings() if dock_exhaustiveness is None else DockingSettings(exhaustiveness=dock_exhaustiveness)
        return make_docking_oracle(name, settings)
    if ":" in name:
        module, attr = name.split(":", 1)
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(f"objective {name!r}: cannot load {attr!r} from module {module!r}: {err}") from None
        if not callable(factory):
            raise ValueError(f"objective {name!r}: {module}.{attr} is not a factory (a callable returning an Oracle)")
        try:
            oracle = factory()
        except TypeError as err:  # a callable that is not a no-argument oracle factory
            raise ValueError(f"objective {name!r}: {module}.{attr}() must take no arguments and return an Oracle: {err}") from None
        if not isinstance(oracle, Oracle):
            raise ValueError(f"objective {name!r} must return an Oracle (name, cost, __call__)")
        return oracle
    raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, dock:<TARGET>, dock_qed_hbd_sa:<TARGET> or module:factory, got {name!r}")


def check_scores(scores: np.ndarray, n: int, name: str) -> np.ndarray:
    """Scores from an oracle as float64 ``[n]`` in ``[0, 1]``; ValueError otherwise."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise ValueError(f"oracle {name!r} returned shape {scores.shape}, expected ({n},)")
    if not np.all((scores >= 0.0) & (scores <= 1.0)):  # also catches NaN
        raise ValueError(f"oracle {name!r} returned scores outside [0, 1] (or NaN): {scores[~((scores >= 0) & (scores <= 1))][:5]}")
    return scores
