"""Docking oracles: AutoDock Vina on dockstring's curated receptors, with a persistent cache.

``dock:<TARGET>`` scores a molecule by its best Vina pose against one of the 58 receptors that the
``dockstring`` wheel ships (``DRD2``, ``ESR1``, ``PARP1``, ...; :func:`list_targets`). Only the
receptor PDBQT files and search boxes are read from that package; its own docking code (which
calls an ``obabel`` executable) is never imported. The pipeline is pip-only:

1. RDKit: canonical SMILES -> one neutral fragment -> explicit hydrogens -> ETKDGv3 embedding
   (seeded) -> MMFF94 refinement (UFF where MMFF has no parameters);
2. meeko: ligand PDBQT (AutoDock atom types, rotatable bonds);
3. vina: affinity maps over the target's box (once per process and target), Monte Carlo search,
   raw score = the best pose's energy in kcal/mol (lower is better).

Unlike dockstring, the ligand is docked in the protonation state its SMILES gives (no pH 7.4
protonation: that needs Open Babel); docs/docking.md states what that changes.

Normalisation (the oracle's score in ``[0, 1]``, monotone in the raw score):
``d = clip((worst - score) / (worst - best), 0, 1)``, by default ``worst = -6`` and ``best = -12``
kcal/mol: a molecule that binds no better than -6 scores 0, one at -12 or below scores 1, linear
in between. A molecule that cannot be parsed, embedded, prepared or docked scores 0 and keeps
its reason. ``dock_qed_hbd_sa:<TARGET>`` multiplies ``d`` by the paper's property terms
(QED x (HBD < 4) x (10 - SA) / 9, from :mod:`mara_rl.chem.scores`); a molecule whose property
product is already 0 is not docked.

Every result (score or failure) is stored in a SQLite cache keyed by canonical SMILES, target
and a hash of everything that can change the score (settings, receptor file, package versions),
so no run docks a molecule twice for the same target and settings.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem

from mara_rl._cache import cache_root
from mara_rl.chem.scores import Composite, Scored, qed_hbd_sa

# the ligand pipeline above; bump it when the pipeline changes so that old cache rows stop matching
PROTOCOL = "rdkit-etkdgv3-mmff94/meeko/vina-best-pose/1"
DOCKSTRING_SEED = 974528263


@dataclass(frozen=True)
class DockingSettings:
    """Everything that can change a raw docking score.

    ``exhaustiveness`` (Vina's number of Monte Carlo runs; 8 is Vina's and dockstring's default,
    1 is about 9x faster and noisier), ``seed`` (RDKit embedding and Vina search; 1 .. 2^31 - 1,
    since Vina treats 0 as "pick a random seed"), ``n_poses`` (poses Vina refines and keeps),
    ``box_size`` (edge lengths in Angstrom; ``None`` = the target's dockstring box),
    ``box_padding`` (Angstrom added to every edge), ``spacing`` (grid spacing of the maps)."""

    exhaustiveness: int = 8
    seed: int = DOCKSTRING_SEED
    n_poses: int = 9
    box_size: tuple[float, float, float] | None = None
    box_padding: float = 0.0
    spacing: float = 0.375

    def __post_init__(self) -> None:
        for name, low in (("exhaustiveness", 1), ("n_poses", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 1 <= self.seed < 2**31:
            raise ValueError(f"seed must be an integer in [1, 2^31 - 1] (Vina reads 0 as a random seed), got {self.seed!r}")
        if self.box_size is not None:
            size = tuple(self.box_size)
            if len(size) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in size):
                raise ValueError(f"box_size must be three positive lengths in Angstrom, got {self.box_size!r}")
            object.__setattr__(self, "box_size", tuple(float(v) for v in size))
        if not (math.isfinite(self.box_padding) and self.box_padding >= 0):
            raise ValueError(f"box_padding must be a finite length >= 0, got {self.box_padding!r}")
        if not (math.isfinite(self.spacing) and 0.1 <= self.spacing <= 1.0):
            raise ValueError(f"spacing must lie in [0.1, 1.0] Angstrom, got {self.spacing!r}")


@dataclass(frozen=True)
class Target:
    """A receptor and its search box (centre and edge lengths in Angstrom)."""

    name: str
    receptor: Path
    center: tuple[float, float, float]
    size: tuple[float, float, float]

    @functools.cached_property
    def receptor_sha256(self) -> str:
        return hashlib.sha256(self.receptor.read_bytes()).hexdigest()


@dataclass(frozen=True)
class DockResult:
    """One molecule's docking: ``score`` is Vina's best-pose energy in kcal/mol (``None`` when
    it failed, ``reason`` then says why), ``seconds`` the wall time it took when docked
    (preparation included), ``cached`` whether it came from the cache."""

    smiles: str
    score: float | None
    reason: str = ""
    seconds: float = 0.0
    cached: bool = False


def targets_dir() -> Path:
    """The receptor folder of the installed ``dockstring`` wheel (located, not imported)."""
    spec = importlib.util.find_spec("dockstring")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("docking needs the receptors of the dockstring package: pip install 'mara-rl[dock]'")
    return Path(next(iter(spec.submodule_search_locations))) / "resources" / "targets"


def list_targets() -> list[str]:
    """Names of the shipped receptors (``DRD2``, ``ESR1``, ...)."""
    return sorted(p.name[: -len("_target.pdbqt")] for p in targets_dir().glob("*_target.pdbqt"))


def load_target(name: str) -> Target:
    """The receptor ``<name>_target.pdbqt`` and box ``<name>_conf.txt`` shipped by dockstring."""
    folder = targets_dir()
    receptor, conf = folder / f"{name}_target.pdbqt", folder / f"{name}_conf.txt"
    if not receptor.is_file() or not conf.is_file():
        raise ValueError(f"unknown docking target {name!r}; the targets are {', '.join(list_targets())}")
    values: dict[str, float] = {}
    for line in conf.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = float(value)
    try:
        center = tuple(values[f"center_{a}"] for a in "xyz")
        size = tuple(values[f"size_{a}"] for a in "xyz")
    except KeyError as missing:
        raise ValueError(f"search box {conf} lacks {missing}") from None
    return Target(name, receptor, center, size)  # type: ignore[arg-type]


def box_size(target: Target, settings: DockingSettings) -> tuple[float, float, float]:
    """Edge lengths searched: the settings' ``box_size`` or the target's, plus the padding."""
    size = settings.box_size or target.size
    return tuple(float(s) + settings.box_padding for s in size)  # type: ignore[return-value]


def settings_key(target: Target, settings: DockingSettings) -> str:
    """Hash of everything that can change a raw score besides the molecule: the settings, the
    box, the receptor file, the pipeline and the versions of RDKit, meeko and vina."""
    try:
        versions = {pkg: metadata.version(pkg) for pkg in ("rdkit", "meeko", "vina")}
    except metadata.PackageNotFoundError as missing:
        raise ValueError(f"docking needs the {missing.name} package: pip install 'mara-rl[dock]'") from None
    record = {
        "protocol": PROTOCOL,
        "settings": asdict(settings),
        "center": target.center,
        "size": box_size(target, settings),
        "receptor_sha256": target.receptor_sha256,
        "versions": versions,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]


def _first_line(message: object) -> str:
    """The first non-blank line of an error message (meeko and vina repeat theirs per atom)."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return lines[0] if lines else type(message).__name__


class LigandError(Exception):
    """A molecule that cannot be turned into a dockable ligand; the message is the reason."""


def prepare_ligand(smiles: str, seed: int) -> str:
    """PDBQT text of one 3D conformer of ``smiles`` (ETKDGv3 with ``seed``, then MMFF94 or UFF
    refinement, then meeko); :class:`LigandError` with the reason when that is impossible."""
    from meeko import MoleculePreparation, PDBQTWriterLegacy

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise LigandError("invalid SMILES")
    if len(Chem.GetMolFrags(mol)) != 1:
        raise LigandError(f"{len(Chem.GetMolFrags(mol))} fragments; a ligand is one molecule")
    if any(atom.GetNumRadicalElectrons() for atom in mol.GetAtoms()):
        raise LigandError("radical")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.maxIterations = 10 * mol.GetNumAtoms()
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise LigandError("3D embedding failed")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=1000)
    elif AllChem.UFFHasAllMoleculeParams(mol):
        AllChem.UFFOptimizeMolecule(mol, maxIters=1000)
    else:
        raise LigandError("no MMFF94 or UFF parameters for its atoms")
    try:
        setups = MoleculePreparation().prepare(mol)
        pdbqt, ok, error = PDBQTWriterLegacy.write_string(setups[0])
    except Exception as err:  # meeko raises plain RuntimeError/ValueError for atoms it cannot type
        raise LigandError(f"meeko could not prepare it: {_first_line(err)}") from None
    if not ok:
        raise LigandError(f"meeko could not write it: {_first_line(error)}")
    return pdbqt


_EXPLAINED: list[bool] = []  # whether this process has explained Vina's box-volume warning


@functools.lru_cache(maxsize=2)
def _vina(target: Target, settings: DockingSettings):
    """A Vina engine with the receptor's maps, built once per process for a target and settings
    (the maps of a dockstring box take seconds; a second target evicts the oldest)."""
    from vina import Vina

    engine = Vina(sf_name="vina", cpu=1, seed=settings.seed, verbosity=0)
    engine.set_receptor(str(target.receptor))
    volume = math.prod(box_size(target, settings))
    if volume > 27_000 and not _EXPLAINED:  # Vina's own warning, printed from C++ whatever the verbosity
        _EXPLAINED.append(True)
        print(f"mara chem: Vina's warning 'Search space volume is greater than 27000 Angstrom^3' is expected: {target.name}'s box "
              f"is {volume:,.0f} A^3, dockstring's published size", file=sys.stderr, flush=True)
    engine.compute_vina_maps(center=list(target.center), box_size=list(box_size(target, settings)), spacing=settings.spacing)
    return engine


def dock_smiles(smiles: str, target: Target, settings: DockingSettings) -> DockResult:
    """Dock one molecule (no cache). Vina reseeds every search from ``settings.seed``, so the
    result depends only on the molecule, target and settings, not on what this process docked
    before. ``seconds`` counts preparation and search, not the one-off maps."""
    engine = _vina(target, settings)
    start = time.perf_counter()
    try:
        ligand = prepare_ligand(smiles, settings.seed)
    except LigandError as err:
        return DockResult(smiles, None, str(err), time.perf_counter() - start)
    try:
        engine.set_ligand_from_string(ligand)
        engine.dock(exhaustiveness=settings.exhaustiveness, n_poses=settings.n_poses)
        score = float(engine.energies(n_poses=1)[0][0])
    except Exception as err:  # vina raises RuntimeError/TypeError for ligands it cannot place
        return DockResult(smiles, None, f"vina failed: {_first_line(err)}", time.perf_counter() - start)
    if not math.isfinite(score):
        return DockResult(smiles, None, f"vina returned a non-finite score {score}", time.perf_counter() - start)
    return DockResult(smiles, score, "", time.perf_counter() - start)


def default_cache_path() -> Path:
    """``$MARA_RL_CACHE/docking.sqlite``, else ``~/.cache/mara-rl/docking.sqlite``."""
    return cache_root() / "docking.sqlite"


class DockingCache:
    """Docking results on disk (SQLite), shared by every run and process that opens the same file.

    One row per (canonical SMILES, target, settings key): the raw score (NULL on failure), the
    reason, the seconds it took and when it was stored; ``settings`` maps each key to the JSON
    it hashes, so the file describes itself. WAL journaling lets readers run beside one writer;
    writers wait for each other (SQLite's busy timeout, then retries with back-off), and the
    first result stored wins (the same inputs give the same score anyway). Each process opens
    its own connection, so the object can be sent to worker processes."""

    RETRIES = 8

    def __init__(self, path: str | os.PathLike[str] | None = None, timeout: float = 60.0):
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._connect()  # fail now, not in a worker, if the file cannot be created

    def __getstate__(self) -> dict:
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["timeout"])

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            except (OSError, sqlite3.Error) as err:
                raise ValueError(f"docking cache {self.path}: cannot open it ({err})") from None
            self._conn, self._pid = conn, os.getpid()
            self._retry(self._create)
        return self._conn

    def _create(self) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed row survives a killed process
        conn.execute("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, description TEXT NOT NULL)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS docking (smiles TEXT NOT NULL, target TEXT NOT NULL, key TEXT NOT NULL, "
            "score REAL, reason TEXT NOT NULL, seconds REAL NOT NULL, created REAL NOT NULL, "
            "PRIMARY KEY (smiles, target, key)) WITHOUT ROWID"
        )

    def _retry(self, action: Callable[[], object]) -> object:
        error: sqlite3.OperationalError | None = None
        for attempt in range(self.RETRIES):
            try:
                return action()
            except sqlite3.OperationalError as err:
                error = err
                if "locked" not in str(err) and "busy" not in str(err):
                    break
                time.sleep(0.05 * 2**attempt)
        raise ValueError(f"docking cache {self.path}: {error}")

    def describe(self, key: str, description: dict) -> None:
        """Record what a settings key stands for (once)."""
        text = json.dumps(description, sort_keys=True)
        self._retry(lambda: self._connect().execute("INSERT OR IGNORE INTO settings VALUES (?, ?)", (key, text)))

    def get(self, target: str, key: str, smiles: Sequence[str]) -> dict[str, DockResult]:
        """Stored results for those of ``smiles`` that have one."""
        def read() -> dict[str, DockResult]:
            conn, found = self._connect(), {}
            unique = list(dict.fromkeys(smiles))
            for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
                chunk = unique[start : start + 500]
                rows = conn.execute(
                    f"SELECT smiles, score, reason, seconds FROM docking WHERE target = ? AND key = ? AND smiles IN ({','.join('?' * len(chunk))})",
                    (target, key, *chunk),
                )
                for s, score, reason, seconds in rows:
                    found[s] = DockResult(s, score, reason, seconds, cached=True)
            return found
        return self._retry(read)  # type: ignore[return-value]

    def put(self, target: str, key: str, results: Sequence[DockResult]) -> None:
        """Store results in one transaction (a row already there is kept)."""
        rows = [(r.smiles, target, key, r.score, r.reason, r.seconds, time.time()) for r in results]

        def write() -> None:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR IGNORE INTO docking VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        self._retry(write)

    def count(self, target: str | None = None) -> int:
        """Rows stored (for one target, or all)."""
        sql, args = ("SELECT COUNT(*) FROM docking WHERE target = ?", (target,)) if target else ("SELECT COUNT(*) FROM docking", ())
        return int(self._retry(lambda: self._connect().execute(sql, args).fetchone()[0]))  # type: ignore[index]


def normalise(score: float | None, best: float = -12.0, worst: float = -6.0) -> float:
    """``clip((worst - score) / (worst - best), 0, 1)``; a failed docking (``None``) is 0."""
    if score is None:
        return 0.0
    return min(1.0, max(0.0, (worst - score) / (worst - best)))


class DockingOracle:
    """``dock:<TARGET>`` (and, with ``terms``, composites such as ``dock_qed_hbd_sa:<TARGET>``).

    ``oracle(smiles)`` -> ``[n]`` scores in ``[0, 1]``: ``normalise(vina_score) * terms(mol)``.
    ``oracle.details(smiles)`` -> a :class:`~mara_rl.chem.scores.Scored` per molecule: that score,
    the raw kcal/mol score, the reason a molecule was not scored and the components (the
    normalised docking score, then each property term: what a run's ledger keeps).
    ``oracle.dock(smiles)`` -> the :class:`DockResult` of each molecule. All read the cache first and
    store each new result as soon as it exists. Each molecule costs one oracle call whether it
    docked, failed or was skipped for a zero property term.

    The object is small and picklable (the Vina engine lives in each process), so an executor
    can send it to worker processes or Ray workers."""

    cost = 1

    def __init__(
        self,
        target: str,
        settings: DockingSettings = DockingSettings(),
        cache: DockingCache | str | os.PathLike[str] | None = None,
        *,
        best: float = -12.0,
        worst: float = -6.0,
        terms: Callable[[Chem.Mol], float] | None = None,
        name: str | None = None,
    ):
        if not (math.isfinite(best) and math.isfinite(worst) and best < worst):
            raise ValueError(f"best must be a finite score below worst (kcal/mol), got best={best}, worst={worst}")
        self.target = load_target(target)
        self.settings = settings
        self.cache = cache if isinstance(cache, DockingCache) else DockingCache(cache)
        self.best, self.worst, self.terms = best, worst, terms
        self.name = name or f"dock:{target}"
        self.components = ("docking",) + (terms.components if isinstance(terms, Composite) else ("terms",) if terms else ())
        self.key = settings_key(self.target, settings)
        self.cache.describe(self.key, {"protocol": PROTOCOL, "target": target, "settings": asdict(settings),
                                       "box_size": box_size(self.target, settings)})

    def _terms(self, mol: Chem.Mol) -> tuple[float, tuple[float, ...]]:
        """The property factor of ``mol`` (1 without ``terms``) and its components."""
        if self.terms is None:
            return 1.0, ()
        if isinstance(self.terms, Composite):
            return self.terms.parts(mol)
        value = float(self.terms(mol))
        return value, (value,)

    def evaluate(self, smiles: Sequence[str]) -> tuple[list[DockResult], np.ndarray]:
        """Docking results (under each molecule's canonical SMILES) and property terms (``[n]``,
        ones without ``terms``) in the order of ``smiles``. Cached results are not docked again;
        a molecule whose property term is 0 is not docked (its result says so and is not cached)."""
        results, terms = self._evaluate(smiles)
        return results, np.array([t for t, _ in terms])

    def _evaluate(self, smiles: Sequence[str]) -> tuple[list[DockResult], list[tuple[float, tuple[float, ...]]]]:
        mols = [Chem.MolFromSmiles(s) for s in smiles]
        for s, mol in zip(smiles, mols):
            if mol is None:
                raise ValueError(f"oracle {self.name!r} got an invalid SMILES {s!r}; score invalid molecules as 0 before calling")
        canonical = [Chem.MolToSmiles(mol) for mol in mols]
        terms = [self._terms(mol) for mol in mols]
        found = self.cache.get(self.target.name, self.key, canonical)
        for s, (term, _) in zip(canonical, terms):
            if s in found:
                continue
            if term == 0.0:
                found[s] = DockResult(s, None, "not docked: a property term is 0")
                continue
            result = dock_smiles(s, self.target, self.settings)
            self.cache.put(self.target.name, self.key, [result])
            found[s] = result
        return [found[s] for s in canonical], terms

    def dock(self, smiles: Sequence[str]) -> list[DockResult]:
        """The :class:`DockResult` of each molecule, as :meth:`evaluate` gives them."""
        return self._evaluate(smiles)[0]

    def details(self, smiles: Sequence[str]) -> list[Scored]:
        """Score in ``[0, 1]``, raw Vina score (``None`` when not docked), reason and components
        (normalised docking score, then the property terms) per molecule."""
        results, terms = self._evaluate(smiles)
        out = []
        for r, (term, parts) in zip(results, terms):
            docking = normalise(r.score, self.best, self.worst)
            out.append(Scored(docking * term, r.score, r.reason, (docking, *parts)))
        return out

    def __call__(self, smiles: Sequence[str]) -> np.ndarray:
        return np.array([d.score for d in self.details(smiles)])


# oracle name prefix -> the property terms multiplied into the normalised docking score
DOCKING_OBJECTIVES: dict[str, Callable[[Chem.Mol], float] | None] = {
    "dock": None,
    "dock_qed_hbd_sa": qed_hbd_sa(),  # pickles as its recipe
}


def make_docking_oracle(name: str, settings: DockingSettings = DockingSettings(),
                        cache: DockingCache | str | os.PathLike[str] | None = None) -> DockingOracle:
    """``dock:<TARGET>`` or ``dock_qed_hbd_sa:<TARGET>`` with the given settings and cache."""
    prefix, _, target = name.partition(":")
    if prefix not in DOCKING_OBJECTIVES or not target:
        raise ValueError(f"a docking objective is {' or '.join(p + ':<TARGET>' for p in DOCKING_OBJECTIVES)}, got {name!r}")
    return DockingOracle(target, settings, cache, terms=DOCKING_OBJECTIVES[prefix], name=name)
