"""Per-molecule score terms in ``[0, 1]`` (RDKit) and the :class:`Scored` record of one molecule.

Both the built-in objectives (:mod:`mara_rl.chem.oracles`) and the docking composites
(:mod:`mara_rl.chem.docking`) are built from these terms, so neither module imports the other.
An objective made of several terms is a :class:`Composite`: its score is their product (or
geometric mean), and each term's value is kept as a named component in a run's ledger.
"""

from __future__ import annotations

import math
import sys
from typing import Callable, NamedTuple, Sequence

from rdkit import Chem, DataStructs, RDConfig, RDLogger
from rdkit.Chem import QED, Descriptors, Lipinski, rdFingerprintGenerator

RDLogger.DisableLog("rdApp.*")

if RDConfig.RDContribDir not in sys.path:  # the SA score ships as an RDKit Contrib script
    sys.path.append(f"{RDConfig.RDContribDir}/SA_Score")
import sascorer  # noqa: E402

_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)

CELECOXIB = "Cc1ccc(-c2cc(C(F)(F)F)nn2-c2ccc(S(N)(=O)=O)cc2)cc1"

# Structurally different marketed drugs of MOSES-like size (molecular weight 236-381), neutral, each
# the centre of one good region for ``drug_modes``. Their pairwise Tanimoto (Morgan r=2) is at most
# 0.20, so a molecule close to one is far from the others, and the shipped prior likes them to very
# different degrees (log-likelihood from -15.5 nats for diazepam to -36.6 for fluoxetine).
DRUG_MODES: dict[str, str] = {
    "celecoxib": CELECOXIB,
    "diazepam": "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc21",
    "fluoxetine": "CNCCC(Oc1ccc(C(F)(F)F)cc1)c1ccccc1",
    "zolpidem": "Cc1ccc(-c2nc3ccc(C)cn3c2CC(=O)N(C)C)cc1",
    "propranolol": "CC(C)NCC(O)COc1cccc2ccccc12",
    "carbamazepine": "NC(=O)N1c2ccccc2C=Cc2ccccc21",
}


class Scored(NamedTuple):
    """One molecule's score in ``[0, 1]``; for an objective that measures something first
    (docking: kcal/mol) also that raw value, and the reason it is missing (a failed docking);
    ``components``: the value of each of the objective's named terms (its ``components`` names)."""

    score: float
    raw: float | None = None
    reason: str = ""
    components: tuple[float, ...] = ()


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


def _fingerprint(smiles: str):
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"reference must be a valid SMILES, got {smiles!r}")
    return _MORGAN.GetFingerprint(mol)


def tanimoto_to(reference: str) -> Callable[[Chem.Mol], float]:
    """Tanimoto similarity (Morgan r=2, 2048 bits) to a reference molecule."""
    ref_fp = _fingerprint(reference)
    return lambda mol: float(DataStructs.TanimotoSimilarity(ref_fp, _MORGAN.GetFingerprint(mol)))


def nearest_tanimoto(references: Sequence[str]) -> Callable[[Chem.Mol], float]:
    """``max_k Tanimoto(mol, reference_k)`` (Morgan r=2, 2048 bits): similarity to the closest reference."""
    if not references:
        raise ValueError("nearest_tanimoto needs at least one reference SMILES")
    fps = [_fingerprint(r) for r in references]
    return lambda mol: float(max(DataStructs.BulkTanimotoSimilarity(_MORGAN.GetFingerprint(mol), fps)))


def capped(term: Callable[[Chem.Mol], float], full: float) -> Callable[[Chem.Mol], float]:
    """``min(term(mol) / full, 1)``: a desirability that is 1 from ``full`` on (GuacaMol's similarity cap)."""
    return lambda mol: min(term(mol) / full, 1.0)


def gaussian_desirability(mu: float, sigma: float) -> Callable[[float], float]:
    """GuacaMol-style Gaussian modifier ``exp(-(x - mu)^2 / (2 sigma^2))``."""
    return lambda x: math.exp(-0.5 * ((x - mu) / sigma) ** 2)


def product(*terms: Callable[[Chem.Mol], float]) -> Callable[[Chem.Mol], float]:
    """Product of per-molecule scores (a hard constraint is a 0/1 factor)."""
    return lambda mol: math.prod(t(mol) for t in terms)


def geometric_mean(*terms: Callable[[Chem.Mol], float]) -> Callable[[Chem.Mol], float]:
    """GuacaMol's aggregation of property desirabilities."""
    return lambda mol: math.prod(t(mol) for t in terms) ** (1.0 / len(terms))


class Composite:
    """A score made of named terms: ``score(mol) = combine(term_1(mol), ..., term_k(mol))`` with
    ``combine`` the product or the geometric mean; ``parts(mol)`` gives each term's value (in the
    order of ``components``) and the score computed from exactly those values. With ``recipe``, a
    module-level function returning an equal Composite, it pickles as that function (its terms
    are closures, which do not), so it can go to worker processes."""

    def __init__(self, terms: dict[str, Callable[[Chem.Mol], float]], combine: str = "product",
                 recipe: Callable[[], Composite] | None = None):
        if not terms:
            raise ValueError("a Composite needs at least one term")
        if combine not in ("product", "geometric_mean"):
            raise ValueError(f"combine must be 'product' or 'geometric_mean', got {combine!r}")
        self.terms, self.combine, self.recipe = dict(terms), combine, recipe
        self.components = tuple(self.terms)

    def __reduce__(self):
        if self.recipe is None:
            return super().__reduce__()
        return self.recipe, ()

    def parts(self, mol: Chem.Mol) -> tuple[float, tuple[float, ...]]:
        values = tuple(float(term(mol)) for term in self.terms.values())
        score = math.prod(values)
        return (score ** (1.0 / len(values)) if self.combine == "geometric_mean" else score), values

    def __call__(self, mol: Chem.Mol) -> float:
        return self.parts(mol)[0]


def qed_hbd_sa() -> Composite:
    """The paper's property terms: QED x (HBD < 4) x (10 - SA) / 9."""
    return Composite({"qed": qed, "hbd_below_4": hbd_below(4), "sa_desirability": sa_desirability}, recipe=qed_hbd_sa)


def celecoxib_mpo() -> Composite:
    """GuacaMol-style multi-property objective: geometric mean of
    ``min(Tanimoto(celecoxib) / 0.5, 1)``, a TPSA desirability (Gaussian at 70, sd 20) and a
    logP desirability (Gaussian at 3, sd 1)."""
    tpsa, logp = gaussian_desirability(70.0, 20.0), gaussian_desirability(3.0, 1.0)
    return Composite({"similarity": capped(tanimoto_to(CELECOXIB), 0.5),
                      "tpsa": lambda m: tpsa(Descriptors.TPSA(m)),
                      "logp": lambda m: logp(Descriptors.MolLogP(m))}, combine="geometric_mean", recipe=celecoxib_mpo)


def drug_modes(references: dict[str, str] | None = None, full_similarity: float = 0.4) -> Composite:
    """An objective with several good regions by construction: ``min(max_k Tanimoto(mol, drug_k)
    / full_similarity, 1) x QED x (HBD < 4) x (10 - SA) / 9`` over ``references`` (default
    :data:`DRUG_MODES`). A molecule scores high near any one of the drugs if it is also drug-like
    and easy to make; the drugs are structurally far apart, so the good set has one mode per drug."""
    default = references is None and full_similarity == 0.4
    references = DRUG_MODES if references is None else references
    return Composite({"nearest_drug": capped(nearest_tanimoto(list(references.values())), full_similarity),
                      **qed_hbd_sa().terms}, recipe=drug_modes if default else None)
