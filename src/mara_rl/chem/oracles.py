"""Molecular objectives: the :class:`Oracle` protocol and RDKit-based scores in ``[0, 1]``.

An oracle takes a batch of valid canonical SMILES and returns one score per molecule. The RL
loop handles invalid SMILES (score 0, no call), caching and the budget; an oracle only scores.
Plug in your own (a docking command, a model) by implementing the protocol and passing
``--objective my_package.my_module:make_oracle`` (a zero-argument factory).
"""

from __future__ import annotations

import importlib
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
from rdkit import Chem

from mara_rl.chem.scores import (
    CELECOXIB, Composite, Scored, celecoxib_mpo, drug_modes, hbd_below, qed, qed_hbd_sa, sa_desirability, tanimoto_to,
)


@runtime_checkable
class Oracle(Protocol):
    """``scores = oracle(smiles)``: ``[n]`` floats in ``[0, 1]`` for ``n`` valid SMILES.
    ``cost`` is what one call on one molecule spends of the budget (1 for cheap RDKit scores), an
    integer >= 1. Optional: ``components``, names of the terms whose values ``details(smiles)``
    returns in each :class:`Scored` (a run's ledger keeps them)."""

    name: str
    cost: int

    def __call__(self, smiles: Sequence[str]) -> np.ndarray: ...


class Details:
    """``Details(oracle)(smiles)`` -> a :class:`Scored` per molecule: the oracle's own
    ``details(smiles)`` where it has one (docking oracles), else its scores without a raw value.
    The batch function a run hands its executor; it pickles whenever the oracle does."""

    def __init__(self, oracle: Oracle):
        self.oracle, self.name = oracle, oracle.name

    def __call__(self, smiles: Sequence[str]) -> list[Scored]:
        details = getattr(self.oracle, "details", None)
        if details is not None:
            return [d if isinstance(d, Scored) else Scored(*d) for d in details(smiles)]
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
        self.components = score.components if isinstance(score, Composite) else ()

    def __reduce__(self):
        if self._objective is None:
            return super().__reduce__()
        return get_oracle, (self._objective,)

    def _mol(self, smiles: str) -> Chem.Mol:
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise ValueError(f"oracle {self.name!r} got an invalid SMILES {smiles!r}; score invalid molecules as 0 before calling")
        return mol

    def __call__(self, smiles: Sequence[str]) -> np.ndarray:
        return np.array([self._score(self._mol(s)) for s in smiles], dtype=np.float64)

    def details(self, smiles: Sequence[str]) -> list[Scored]:
        """Score and, for a :class:`Composite` score, the value of each of its terms, per molecule."""
        if not self.components:
            return [Scored(float(s)) for s in self(smiles)]
        return [Scored(score, components=values) for score, values in (self._score.parts(self._mol(s)) for s in smiles)]


# name -> the per-molecule score function of a built-in objective
OBJECTIVES: dict[str, Callable[[], Callable[[Chem.Mol], float]]] = {
    "qed": lambda: qed,
    "sa": lambda: sa_desirability,
    "hbd": lambda: hbd_below(4),
    "similarity": lambda: tanimoto_to(CELECOXIB),
    # the paper's objective without docking: QED x (HBD < 4) x synthesisability (10 - SA) / 9
    "qed_hbd_sa": qed_hbd_sa,
    "celecoxib_mpo": celecoxib_mpo,
    # many good modes by construction: near any of six different drugs, times the paper's property terms
    "drug_modes": drug_modes,
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
        check_cost(oracle.cost, name)
        return oracle
    raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, dock:<TARGET>, dock_qed_hbd_sa:<TARGET> or module:factory, got {name!r}")


def check_cost(cost: object, name: str) -> int:
    """An oracle's ``cost`` (budget spent per molecule) as an int >= 1; ValueError otherwise
    (a cost of 0 would make every molecule free and the budget endless)."""
    if isinstance(cost, bool) or not isinstance(cost, (int, np.integer)) or cost < 1:
        raise ValueError(f"objective {name!r}: its oracle's cost (budget spent per molecule) must be an integer >= 1, got {cost!r}")
    return int(cost)


def is_user_objective(name: str) -> bool:
    """Whether ``name`` is a user's ``module:factory`` (not a built-in or docking objective)."""
    return name not in OBJECTIVES and not is_docking(name) and ":" in name


def check_scores(scores: np.ndarray, n: int, name: str) -> np.ndarray:
    """Scores from an oracle as float64 ``[n]`` in ``[0, 1]``; ValueError otherwise."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise ValueError(f"oracle {name!r} returned shape {scores.shape}, expected ({n},)")
    if not np.all((scores >= 0.0) & (scores <= 1.0)):  # also catches NaN
        raise ValueError(f"oracle {name!r} returned scores outside [0, 1] (or NaN): {scores[~((scores >= 0) & (scores <= 1))][:5]}")
    return scores
