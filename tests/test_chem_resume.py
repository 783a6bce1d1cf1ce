"""``mara chem run`` survives a SIGKILL at any moment: runs in their own processes are killed
while sampling, scoring, writing the ledger or checkpointing (forked from this process, which has
torch loaded already), at random points (a fresh ``python -m mara_rl.cli`` each time) and while a
pool of ``--oracle-workers`` scores a batch, resumed with ``--resume`` alone, and must end with the
uninterrupted serial run's exact ledger and metrics, every score the oracle's own, and at most one
batch paid twice per kill. Serial, pool and Ray scoring write the same ledger."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402
from rdkit.Chem import QED  # noqa: E402

import mara_rl  # noqa: E402
from mara_rl.cli import main  # noqa: E402

TESTS = Path(__file__).parent
SOURCE = Path(mara_rl.__file__).parents[1]  # the mara_rl under test, also for the runs started in fresh interpreters
BUDGET, BATCH = 40, 8
RUN_FLAGS = ["--objective", "chem_counting_oracle:make", "--budget", str(BUDGET), "--batch-size", str(BATCH), "--sigma", "20",
             "--mara", "--tau", "0.7", "--diversity-filter", "--df-bucket-size", "2", "--replay-size", "8", "--replay-batch", "4",
             "--checkpoint-every", "2", "--threads", "1"]


def _cli(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["chem", "run", *argv])
    return code, capsys.readouterr().err


def _ledger(folder: Path) -> list[tuple[str, str]]:
    with (folder / "molecules.csv").open(newline="") as handle:
        return [(row["smiles"], row["score"]) for row in csv.DictReader(handle)]


def _metrics(folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("wall_minutes_last_session")
    return metrics


def _oracle_calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.is_file() else []


@pytest.fixture(autouse=True)
def _oracle_log(tmp_path, monkeypatch):
    log = tmp_path / "oracle.log"
    monkeypatch.setenv("CHEM_ORACLE_LOG", str(log))
    monkeypatch.delenv("CHEM_KILL", raising=False)
    monkeypatch.syspath_prepend(str(TESTS))
    return log


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The run never killed: its ledger and metrics, and the oracle calls it made."""
    folder = tmp_path_factory.mktemp("reference")
    log = folder / "oracle.log"
    env = {"CHEM_ORACLE_LOG": str(log)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sys.path.insert(0, str(TESTS))
    try:
        assert main(["chem", "run", *RUN_FLAGS, "--out", str(folder / "run")]) == 0
    finally:
        sys.path.remove(str(TESTS))
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    ledger = _ledger(folder / "run")
    assert len(ledger) == BUDGET and _oracle_calls(log) == [m for m, _ in ledger]
    return {"ledger": ledger, "metrics": _metrics(folder / "run"), "csv": (folder / "run" / "molecules.csv").read_bytes()}


def _start(folder: Path, *extra: str, **env: str) -> subprocess.Popen:
    """``mara chem run`` in a fresh interpreter."""
    return subprocess.Popen([sys.executable, "-m", "mara_rl.cli", "chem", "run", "--out", str(folder), *extra],
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(SOURCE)]), **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _run_until_killed(folder: Path, kill: str) -> int:
    """Exit code of ``mara chem run`` in a forked process that SIGKILLs itself at ``kill``."""

    def child() -> None:
        os.environ["CHEM_KILL"] = kill
        main(["chem", "run", *RUN_FLAGS, "--out", str(folder)])
        os._exit(0)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(300)
    if proc.is_alive():
        proc.kill()
        pytest.fail(f"the run meant to die at {kill} still ran after 300 s")
    return proc.exitcode


def _check_resumed(folder: Path, log: Path, reference: dict, kills: int) -> None:
    ledger = _ledger(folder)
    assert len(ledger) == BUDGET == len({m for m, _ in ledger})
    for smiles, score in ledger:  # the oracle's own score, recomputed here, never a merged row
        assert float(score) == QED.qed(Chem.MolFromSmiles(smiles)), smiles
    assert ledger == reference["ledger"]  # the resumed run continued exactly where it was killed
    assert _metrics(folder) == reference["metrics"]
    calls = _oracle_calls(log)
    assert set(calls) == {m for m, _ in ledger}
    paid_twice = sum(n - 1 for n in Counter(calls).values())
    assert len(calls) <= BUDGET + kills * BATCH and paid_twice <= kills * BATCH


@pytest.mark.slow
@pytest.mark.parametrize("kill", [
    "checkpoint:1",  # writing the first checkpoint, before any oracle call
    "score:1",  # inside the first oracle batch, long before the first periodic checkpoint
    "write:3",  # half-way through the third batch of ledger rows: a torn last row
    "checkpoint:3",  # half-way through the checkpoint of step 4
    "sample:4",  # while sampling step 3, a step after the last checkpoint
])
def test_sigkill_at_each_phase_then_resume(tmp_path, capsys, reference, _oracle_log, kill):
    folder = tmp_path / "run"
    assert _run_until_killed(folder, kill) == -signal.SIGKILL
    if kill.startswith("write"):
        assert not (folder / "molecules.csv").read_bytes().endswith(b"\n")  # the kill left a torn row
    code, err = _cli(capsys, "--out", str(folder), "--resume")
    assert code == 0, err
    if kill.startswith("write"):
        assert "dropped a torn last row" in err
    _check_resumed(folder, _oracle_log, reference, kills=1)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(tmp_path, capsys, reference, _oracle_log):
    folder = tmp_path / "run"
    rng = random.Random(7)
    for kills in (1, 2):  # the second kill hits the resumed process, later in the run
        proc = _start(folder, *(RUN_FLAGS if kills == 1 else ["--resume"]))
        target = rng.randint(1, 2 * BATCH) + (kills - 1) * 2 * BATCH  # the second kill is well before the end
        while len(_oracle_calls(_oracle_log)) < target and proc.poll() is None:
            time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    code, err = _cli(capsys, "--out", str(folder), "--resume")
    assert code == 0, err
    _check_resumed(folder, _oracle_log, reference, kills=2)


@pytest.mark.slow
@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").is_file(), reason="needs Linux's /proc children")
def test_sigkill_while_a_worker_pool_scores_then_resume(tmp_path, capsys, reference, _oracle_log):
    folder = tmp_path / "run"
    proc = _start(folder, *RUN_FLAGS, "--oracle-workers", "2", CHEM_ORACLE_DELAY="0.1")
    workers: set[int] = set()
    target = 2 * BATCH + 3  # inside the third batch: its first molecules are being scored by the pool
    while len(_oracle_calls(_oracle_log)) < target and proc.poll() is None:
        workers.update(_children(proc.pid))
        time.sleep(0.01)
    workers.update(_children(proc.pid))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert len(workers) >= 2  # the pool's workers (and multiprocessing's resource tracker)
    deadline = time.monotonic() + 20
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(_alive, workers)), "pool workers outlived their killed run"
    assert json.loads((folder / "config.json").read_text())["oracle_workers"] == 2
    code, err = _cli(capsys, "--out", str(folder), "--resume")  # scores on the stored pool of 2 again
    assert code == 0, err
    _check_resumed(folder, _oracle_log, reference, kills=1)


@pytest.mark.slow
@pytest.mark.parametrize("executor", [["--oracle-workers", "2"], ["--ray-address", "local", "--oracle-workers", "2"]], ids=["pool", "ray"])
def test_pool_and_ray_write_the_serial_ledger(tmp_path, reference, _oracle_log, executor):
    if "--ray-address" in executor:
        pytest.importorskip("ray")
    folder = tmp_path / "run"
    proc = _start(folder, *RUN_FLAGS, *executor)
    assert proc.wait(timeout=300) == 0
    assert (folder / "molecules.csv").read_bytes() == reference["csv"]
    assert _metrics(folder) == reference["metrics"]
    assert sorted(_oracle_calls(_oracle_log)) == sorted(m for m, _ in reference["ledger"])  # each paid once


def test_resume_alone_continues_with_the_stored_settings(tmp_path, capsys, reference, _oracle_log):
    folder = tmp_path / "run"
    assert _cli(capsys, *RUN_FLAGS, "--out", str(folder), "--max-steps", "2")[0] == 0
    stored = (folder / "config.json").read_bytes()
    code, err = _cli(capsys, "--out", str(folder), "--resume", "--threads", "2", "--oracle-workers", "2", "--max-steps", "1")
    assert code == 0, err  # session settings may change
    assert code == 0, err
    code, err = _cli(capsys, "--out", str(folder), "--resume")
    assert code == 0, err
    assert (folder / "config.json").read_bytes() == stored
    assert _ledger(folder) == reference["ledger"] and _metrics(folder) == reference["metrics"]
    assert len(_oracle_calls(_oracle_log)) == BUDGET


@pytest.mark.parametrize("flags, named", [
    (["--sigma", "30"], "--sigma"),
    (["--budget", "50"], "--budget"),
    (["--objective", "qed"], "--objective"),
    (["--tau", "0.8"], "--tau"),
    (["--screens", "0.9"], "--screens"),
    (["--seed", "1"], "--seed"),
])
def test_resume_refuses_a_flag_that_changes_the_run(tmp_path, capsys, flags, named):
    folder = tmp_path / "run"
    assert _cli(capsys, *RUN_FLAGS, "--out", str(folder), "--max-steps", "0")[0] == 0
    stored = (folder / "config.json").read_bytes()
    code, err = _cli(capsys, "--out", str(folder), "--resume", *flags)
    assert code == 2 and err.startswith("mara chem") and f"error: {named} " in err and err.count("\n") == 1, err
    assert (folder / "config.json").read_bytes() == stored


def test_partial_and_finished_folders_are_not_overwritten(tmp_path, capsys):
    folder = tmp_path / "run"
    assert _cli(capsys, *RUN_FLAGS, "--out", str(folder), "--max-steps", "0")[0] == 0
    assert not _oracle_calls(Path(os.environ["CHEM_ORACLE_LOG"]))  # set up, nothing paid yet
    assert {p.name for p in folder.iterdir()} == {"config.json", "checkpoint.pt", "molecules.csv"}
    code, err = _cli(capsys, *RUN_FLAGS, "--out", str(folder))
    assert code == 2 and "unfinished run" in err and "--resume" in err
    code, err = _cli(capsys, "--out", str(tmp_path / "empty"), "--resume")
    assert code == 2 and "holds no run" in err


def _partial_run(capsys, folder: Path, steps: int = 3) -> int:
    """Run ``steps`` steps in ``folder``; returns how many molecules they scored."""
    assert _cli(capsys, *RUN_FLAGS, "--out", str(folder), "--max-steps", str(steps))[0] == 0
    return len(_ledger(folder))


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_checkpoint_is_a_clear_error_and_deleting_it_replays_for_free(tmp_path, capsys, reference, _oracle_log, damage):
    folder = tmp_path / "run"
    scored = _partial_run(capsys, folder)
    checkpoint = folder / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes({"empty": b"", "truncated": data[: len(data) // 3], "garbage": b"not a checkpoint\n" * 10}[damage])
    code, err = _cli(capsys, "--out", str(folder), "--resume")
    assert code == 2 and err.startswith("mara chem") and "error: checkpoint " in err and err.count("\n") == 1, err
    assert "delete it" in err and "Traceback" not in err
    paid = len(_oracle_calls(_oracle_log))
    checkpoint.unlink()
    assert _cli(capsys, "--out", str(folder), "--resume")[0] == 0
    assert _ledger(folder) == reference["ledger"]
    assert len(_oracle_calls(_oracle_log)) == BUDGET and paid == scored  # the replay paid nothing twice


def test_ledger_shorter_than_its_checkpoint_is_a_clear_error(tmp_path, capsys):
    folder = tmp_path / "run"
    scored = _partial_run(capsys, folder)
    lines = (folder / "molecules.csv").read_bytes().splitlines(keepends=True)
    (folder / "molecules.csv").write_bytes(b"".join(lines[:10]))
    code, err = _cli(capsys, "--out", str(folder), "--resume")
    assert code == 2 and "holds 9 scored molecules" in err and f"saved after {scored}" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("line, problem", [
    (b"3,0,CCO,abc,,,20.1,20.1\r\n", "not a number"),
    (b"3,0,CCO,0.5,x,,20.1,20.1\r\n", "not a number"),
    (b"3,0,CCO,0.5,inf,,20.1,20.1\r\n", "not finite"),
    (b"9,0,CCO,0.5,,,20.1,20.1\r\n", "is call 9"),
    (b"3,0,CCO,1.5,,,20.1,20.1\r\n", "outside [0, 1]"),
    (b"3,0,CCO,0.5\r\n", "4 fields instead of 8"),
])
def test_damaged_ledger_row_is_a_clear_error(tmp_path, capsys, line, problem):
    folder = tmp_path / "run"
    _partial_run(capsys, folder)
    lines = (folder / "molecules.csv").read_bytes().splitlines(keepends=True)
    lines[3] = line
    (folder / "molecules.csv").write_bytes(b"".join(lines))
    code, err = _cli(capsys, "--out", str(folder), "--resume")
    assert code == 2 and "line 4" in err and problem in err and err.count("\n") == 1, err


def test_torn_row_is_cut_before_new_rows_are_appended(tmp_path, capsys, reference, _oracle_log):
    folder = tmp_path / "run"
    _partial_run(capsys, folder, steps=2)
    ledger = folder / "molecules.csv"
    smiles, score = reference["ledger"][BATCH * 2]  # the first molecule of step 2, half written
    ledger.write_bytes(ledger.read_bytes() + f"{2 * BATCH + 1},2,{smiles},{score[:4]}".encode())
    code, err = _cli(capsys, "--out", str(folder), "--resume")
    assert code == 0 and "dropped a torn last row" in err
    assert _ledger(folder) == reference["ledger"]


def test_a_ledger_without_the_raw_columns_resumes_as_it_is(tmp_path, capsys, reference, _oracle_log):
    folder = tmp_path / "run"
    _partial_run(capsys, folder)
    ledger = folder / "molecules.csv"
    rows = list(csv.reader(ledger.open(newline="")))
    assert rows[0][:6] == ["call", "step", "smiles", "score", "raw", "reason"] and all(r[4:6] == ["", ""] for r in rows[1:])
    with ledger.open("w", newline="") as handle:  # the four columns ledgers had before raw and reason
        csv.writer(handle).writerows(r[:4] for r in rows)
    code, err = _cli(capsys, "--out", str(folder), "--resume")
    assert code == 0, err
    assert _ledger(folder) == reference["ledger"] and _metrics(folder) == reference["metrics"]
    assert all(len(r) == 4 for r in csv.reader(ledger.open(newline="")))
    assert len(_oracle_calls(_oracle_log)) == BUDGET


@pytest.mark.parametrize("stage", ["partial", "damaged"])
def test_a_ledger_kept_compressed_resumes_without_paying_again(tmp_path, capsys, reference, _oracle_log, stage):
    """A run kept as results/ keeps them (ledger gzipped, no checkpoint) resumes against its ledger:
    what was paid is not paid again; a damaged archive is a one-line error naming it."""
    import gzip

    folder = tmp_path / "run"
    scored = _partial_run(capsys, folder)
    ledger = folder / "molecules.csv"
    packed = gzip.compress(ledger.read_bytes())
    (folder / "molecules.csv.gz").write_bytes(packed if stage == "partial" else packed[: len(packed) // 2])
    ledger.unlink()
    (folder / "checkpoint.pt").unlink()
    code, err = _cli(capsys, "--out", str(folder), "--resume")
    if stage == "damaged":
        assert code == 2 and "molecules.csv.gz is damaged" in err and err.count("\n") == 1, err
        return
    assert code == 0, err
    assert _ledger(folder) == reference["ledger"] and _metrics(folder) == reference["metrics"]
    assert len(_oracle_calls(_oracle_log)) == BUDGET  # the replay paid nothing twice
    assert scored < BUDGET


def test_an_archived_run_keeps_what_its_readers_need(tmp_path, capsys):
    """``mara chem archive``: the whole ledger compressed reads back row for row; kept as hits alone,
    the rows from the lowest screen up, byte for byte as the ledger wrote them, and nothing below
    (a one-line error, and no resume from them); every folder is checked before any is changed."""
    import gzip

    from mara_rl.chem.rl import ledger_rows

    folder = tmp_path / "run"
    assert _cli(capsys, *RUN_FLAGS, "--out", str(folder))[0] == 0
    written = (folder / "molecules.csv").read_bytes()
    rows = ledger_rows(folder)
    with pytest.raises(ValueError, match="at_least must be a score, not NaN"):
        ledger_rows(folder, at_least=float("nan"))

    def archive(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        return main(["chem", "archive", *argv]), capsys.readouterr().err

    code, err = archive(str(folder), str(tmp_path / "missing"))
    assert code == 2 and "missing holds no finished run" in err and err.count("\n") == 1, err
    damaged = tmp_path / "damaged"  # a finished run whose ledger cannot be read is found before the first run changes
    damaged.mkdir()
    for name in ("config.json", "metrics.json"):
        (damaged / name).write_bytes((folder / name).read_bytes())
    (damaged / "molecules.csv.gz").write_bytes(gzip.compress(written)[:-9])
    code, err = archive("--hits-only", str(folder), str(damaged))
    assert code == 2 and "molecules.csv.gz is damaged" in err and err.count("\n") == 1, err
    (damaged / "molecules.csv.gz").write_bytes(gzip.compress(written.replace(b",0.", b",zero.", 1)))
    code, err = archive("--hits-only", str(folder), str(damaged))
    assert code == 2 and "has a row whose score is not a number" in err, err
    assert (folder / "molecules.csv").read_bytes() == written and (folder / "checkpoint.pt").is_file()

    assert archive(str(folder))[0] == 0
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(("molecules", "checkpoint", "hits"))) == ["molecules.csv.gz"]
    assert ledger_rows(folder) == rows

    assert archive("--hits-only", "--drop-figures", str(folder))[0] == 0
    assert not any(folder.glob("*.png")) and not (folder / "molecules.csv.gz").exists()
    lines = written.decode().splitlines(keepends=True)
    hits = [line for line in lines[1:] if float(line.split(",")[3]) >= 0.8]
    assert 0 < len(hits) < len(lines) - 1, len(hits)  # some rows kept, some left out
    assert gzip.decompress((folder / "hits.csv.gz").read_bytes()).decode() == "".join(lines[:1] + hits)
    for screen in (0.8, 0.85, 0.9):
        assert ledger_rows(folder, at_least=screen) == [r for r in rows if float(r["score"]) >= screen]
    for at_least in (None, 0.5):
        with pytest.raises(ValueError, match="keeps only the molecules scoring >= 0.8"):
            ledger_rows(folder, at_least=at_least)
    code, err = _cli(capsys, "--out", str(folder), "--resume")
    assert code == 2 and "keeps only its hits (hits.csv.gz)" in err and err.count("\n") == 1, err
    code, err = archive(str(folder))
    assert code == 2 and "its whole ledger cannot be made from them" in err, err
