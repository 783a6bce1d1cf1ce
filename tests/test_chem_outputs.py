"""What a user of ``mara chem run`` gets back: the ledger's NLL and component columns, the
repeat counters, history density, and one-line errors for a user's faulty oracle or an
unreachable Ray address; the chem package's modules import without a cycle."""

from __future__ import annotations

import ast
import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("rdkit")

from mara_rl.chem.model import DEFAULT_PRIOR  # noqa: E402
from mara_rl.chem.oracles import get_oracle  # noqa: E402
from mara_rl.chem.rl import LEDGER_FIELDS, Ledger, RunConfig, run  # noqa: E402
from mara_rl.cli import main  # noqa: E402
from mara_rl.metrics.molecules import canonical_smiles  # noqa: E402

HERE = Path(__file__).parent


def _error_line(err: str) -> str:
    """The error line of a run's stderr (tqdm's progress bar, redrawn with carriage returns, precedes it)."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("mara")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _rows(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "molecules.csv").open(newline="")))


@pytest.fixture
def user_oracles(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def test_ledger_keeps_nlls_and_components_recomputed_independently(tmp_path):
    folder = tmp_path / "run"
    config = RunConfig(out=str(folder), budget=40, batch_size=16, prior=str(DEFAULT_PRIOR), sigma=10.0, seed=3)
    run(config)
    rows = _rows(folder)
    assert tuple(rows[0]) == LEDGER_FIELDS + ("qed", "hbd_below_4", "sa_desirability")
    # components: recomputed from RDKit, and their product is the score
    from rdkit import Chem
    from rdkit.Chem import QED, Lipinski

    from mara_rl.chem.scores import sa_desirability

    for r in rows:
        mol = Chem.MolFromSmiles(r["smiles"])
        assert float(r["qed"]) == pytest.approx(QED.qed(mol), abs=1e-12)
        assert float(r["hbd_below_4"]) == float(Lipinski.NumHDonors(mol) < 4)
        assert float(r["sa_desirability"]) == pytest.approx(sa_desirability(mol), abs=1e-12)
        assert float(r["score"]) == pytest.approx(float(r["qed"]) * float(r["hbd_below_4"]) * float(r["sa_desirability"]), abs=1e-12)
    # NLLs of step 0: replay the first batch (same seed, agent = prior) and score the sampled strings with the prior
    from mara_rl.chem.checks import open_prior

    prior = open_prior(str(DEFAULT_PRIOR)).eval()
    torch.manual_seed(3)
    ids, _ = prior.sample(16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        nll = (-prior.log_likelihood(ids)).tolist()
    first: dict[str, float] = {}
    for smiles, value in zip((canonical_smiles(s) for s in prior.decode(ids)), nll):
        if smiles is not None:
            first.setdefault(smiles, value)
    step0 = [r for r in rows if r["step"] == "0"]
    assert step0 and {r["smiles"] for r in step0} == set(first)
    for r in step0:
        assert float(r["prior_nll"]) == pytest.approx(first[r["smiles"]], rel=1e-5)
        assert float(r["agent_nll"]) == pytest.approx(first[r["smiles"]], rel=1e-5)  # the agent starts as the prior
    later = [r for r in rows if r["step"] != "0"]
    assert later and any(abs(float(r["agent_nll"]) - float(r["prior_nll"])) > 1e-3 for r in later)  # the agent has moved


def test_a_users_components_reach_the_ledger(tmp_path, user_oracles):
    folder = tmp_path / "run"
    run(RunConfig(out=str(folder), objective="chem_user_oracles:two_parts", budget=20, batch_size=16, prior=str(DEFAULT_PRIOR)))
    rows = _rows(folder)
    assert tuple(rows[0]) == LEDGER_FIELDS + ("qed", "size")
    for r in rows:
        assert float(r["score"]) == pytest.approx(float(r["qed"]) * float(r["size"]), abs=1e-12)


def test_an_older_six_column_ledger_resumes_in_its_own_format(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("call,step,smiles,score,raw,reason\r\n1,0,CCO,0.4,,\r\n")
    ledger = Ledger(path, get_oracle("qed_hbd_sa"), budget=5)
    ledger.score(["c1ccccc1", "CCO", None], step=1, prior_nll=[1.0, 2.0, 3.0], agent_nll=[1.0, 2.0, 3.0])
    lines = path.read_text().splitlines()
    assert lines[0] == "call,step,smiles,score,raw,reason" and lines[2].count(",") == 5 and lines[2].startswith("2,1,c1ccccc1,")


def test_a_ledger_of_another_objective_is_refused(tmp_path):
    path = tmp_path / "m.csv"
    Ledger(path, get_oracle("qed_hbd_sa"), budget=5)
    with pytest.raises(ValueError, match="written for another objective"):
        Ledger(path, get_oracle("celecoxib_mpo"), budget=5)


def test_repeats_and_history_density(tmp_path):
    folder = tmp_path / "run"
    # sigma 200 on a tiny budget: the agent soon re-proposes what it found
    metrics = run(RunConfig(out=str(folder), budget=96, batch_size=16, prior=str(DEFAULT_PRIOR), sigma=200.0, lr=1e-3, seed=1))
    rows = _rows(folder)
    valid = round(metrics["sampled"] * metrics["validity"])
    assert metrics["repeats"] == valid - len(rows)  # every valid proposal is either a new ledger row or a repeat
    history = json.loads((folder / "history.json").read_text())
    assert len(history) >= 3 and history[-1]["repeats"] == metrics["repeats"]
    assert all(h["repeated_hits@0.8"] <= h["repeats"] for h in history)


def test_a_user_oracle_that_raises_is_the_users_one_line_error(tmp_path, user_oracles, capsys):
    out = tmp_path / "run"
    code = main(["chem", "run", "--objective", "chem_user_oracles:raises_on_second_batch", "--budget", "64", "--batch-size", "16",
                 "--out", str(out)])
    err = _error_line(capsys.readouterr().err)
    assert code == 2 and err.startswith("mara chem run: error: "), err
    assert "objective 'chem_user_oracles:raises_on_second_batch' raised RuntimeError: the assay service is down" in err
    assert f"mara chem run --out {out} --resume" in err
    rows = _rows(out)  # the first batch, whole; nothing of the failed one
    assert rows and [int(r["call"]) for r in rows] == list(range(1, len(rows) + 1)) and {r["step"] for r in rows} == {"0"}
    assert f"holds the {len(rows)} molecules scored before it" in err
    assert len(Ledger(out / "molecules.csv", get_oracle("qed"), budget=64).order) == len(rows)  # it reads back whole


def test_an_oracle_that_costs_nothing_is_a_one_line_error(tmp_path, user_oracles, capsys):
    out = tmp_path / "run"
    code = main(["chem", "run", "--objective", "chem_user_oracles:free", "--budget", "64", "--out", str(out)])
    err = _error_line(capsys.readouterr().err)
    assert code == 2 and "cost" in err and "integer >= 1, got 0" in err, err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("command", ["run", "compare"])
def test_an_unreachable_ray_address_fails_within_seconds(tmp_path, command, capsys):
    pytest.importorskip("ray")
    start = time.monotonic()
    code = main(["chem", command, "--ray-address", "127.0.0.1:1", "--budget", "64", "--out", str(tmp_path / "out")])
    err = _error_line(capsys.readouterr().err)
    assert code == 2 and "no Ray cluster answers" in err, err
    assert time.monotonic() - start < 10


def test_the_chem_modules_import_without_a_cycle():
    """No module of mara_rl.chem imports (at any depth of its code) one that imports it back."""
    package = Path(__file__).parents[1] / "src" / "mara_rl" / "chem"
    imports: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mara_rl.chem."):
                names.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                names.update(a.name.split(".")[2] for a in node.names if a.name.startswith("mara_rl.chem."))
        imports[path.stem] = names

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in imports.get(start, ()))

    cycles = [m for m in imports if reaches(m, m, {m})]
    assert not cycles, f"import cycle through {cycles}"


def test_summary_lists_the_top_molecules_and_draws_them(tmp_path):
    folder = tmp_path / "run"
    run(RunConfig(out=str(folder), budget=40, batch_size=16, prior=str(DEFAULT_PRIOR), sigma=10.0))
    rows = sorted(_rows(folder), key=lambda r: -float(r["score"]))
    summary = (folder / "summary.md").read_text()
    assert "| rank | SMILES | score | prior_nll | agent_nll | qed | hbd_below_4 | sa_desirability | call |" in summary
    best = rows[0]
    assert f"| 1 | `{best['smiles']}` | {float(best['score']):.4f} | {float(best['prior_nll']):.4g} |" in summary
    assert summary.count("\n| ") >= 20 + 1  # 20 molecules and the header
    from PIL import Image

    with Image.open(folder / "top_molecules.png") as image:
        assert image.size == (4 * 260, 3 * 220)  # 12 molecules, 4 per row


def test_tensorboard_logs_the_history_and_the_grid(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = tmp_path / "run"
    run(RunConfig(out=str(folder), budget=64, batch_size=16, prior=str(DEFAULT_PRIOR), sigma=10.0, tensorboard=True))
    events = EventAccumulator(str(folder / "tensorboard")).Reload()
    history = json.loads((folder / "history.json").read_text())
    logged = events.Scalars("yield@0.8")
    assert [(e.step, e.value) for e in logged] == [(h["oracle_calls"], h["yield@0.8"]) for h in history]
    assert events.Tags()["images"] == ["top_molecules"]


def test_tensorboard_missing_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "tensorboard", None)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    out = tmp_path / "run"
    assert main(["chem", "run", "--tensorboard", "--out", str(out)]) == 2
    assert "--tensorboard needs TensorBoard" in _error_line(capsys.readouterr().err)
    assert not out.exists() or not any(out.iterdir())


def test_ctrl_c_prints_the_resume_command_and_the_run_resumes(tmp_path, user_oracles, capsys):
    out = tmp_path / "run"
    argv = ["chem", "run", "--objective", "chem_user_oracles:interrupted_on_second_batch", "--budget", "48", "--batch-size", "16",
            "--out", str(out)]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"mara chem run: interrupted; continue with: mara chem run --out {out} --resume" in err
    before = _rows(out)
    assert before and {r["step"] for r in before} == {"0"}
    # the resumed run's fresh oracle fails again on its second batch: step 0 is replayed from the ledger for free
    assert main(["chem", "run", "--out", str(out), "--resume"]) == 130
    after = _rows(out)
    assert after[: len(before)] == before and {r["step"] for r in after[len(before):]} == {"1"}


def test_an_unreachable_screen_is_warned_about_after_the_first_batch(tmp_path, capsys):
    run(RunConfig(out=str(tmp_path / "far"), budget=16, batch_size=16, prior=str(DEFAULT_PRIOR), screens=(0.8, 0.99), mara=True, tau=0.98))
    err = capsys.readouterr().err
    assert "warning: screen 0.99 lies far above the prior's scores (first 16 molecules: median" in err
    assert "warning: MARA's --tau 0.98 lies far above" in err and "screen 0.8 " not in err
    from mara_rl.chem.rl import warn_unreachable

    config = RunConfig(screens=(0.5, 0.9))
    scores = np.linspace(0, 1, 101)  # median 0.5, 95th percentile 0.95: reach 1.4
    assert warn_unreachable(scores, config) == []
    warned = warn_unreachable(scores * 0.5, config)  # median 0.25, 95th percentile 0.475: reach 0.7
    assert len(warned) == 1 and "screen 0.9 " in warned[0]
