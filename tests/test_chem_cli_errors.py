"""Every bad ``mara chem`` flag is one line on stderr and exit 2, found before any model is
loaded or oracle called (the run folder stays empty), never a traceback."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("rdkit")

from mara_rl.cli import main  # noqa: E402


@pytest.fixture
def files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 64)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    smiles = tmp_path / "smiles.txt"
    smiles.write_text("CCO\nc1ccccc1\n")
    gz = tmp_path / "bad.csv.gz"
    gz.write_bytes(b"not gzip")
    no_column = tmp_path / "no_column.csv"
    no_column.write_text("id,name\n1,CCO\n")
    not_smiles = tmp_path / "words.txt"
    not_smiles.write_text("hello\nworld\nCCO\n")
    return {"GARBAGE": str(garbage), "UNWRITABLE": str(blocker / "sub"), "SMILES": str(smiles), "BADGZ": str(gz),
            "NOCOLUMN": str(no_column), "NOTSMILES": str(not_smiles), "DIR": str(tmp_path),
            "MISSING": str(tmp_path / "missing.pt"), "OUT": str(tmp_path / "out")}


RUN = [
    (["--sigma", "inf"], "--sigma"),
    (["--sigma", "nan"], "--sigma"),
    (["--sigma", "0"], "--sigma"),
    (["--lr", "0"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--threads", "0"], "--threads"),
    (["--device", "banana"], "--device"),
    (["--device", "meta"], "--device"),
    (["--prior", "GARBAGE"], "--prior"),
    (["--prior", "MISSING"], "prior checkpoint"),
    (["--out", "UNWRITABLE"], "--out"),
    (["--screens", "nan"], "--screens"),
    (["--screens", "1.5"], "--screens"),
    (["--screens", "0.8", "0.8"], "--screens"),
    (["--max-steps", "-1"], "--max-steps"),
    (["--replay-size", "-1"], "--replay-size"),
    (["--replay-batch", "0"], "--replay-batch"),
    (["--budget", "0"], "--budget"),
    (["--batch-size", "1"], "--batch-size"),
    (["--df-bucket-size", "0"], "--df-bucket-size"),
    (["--df-min-score", "nan"], "--df-min-score"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "4294967296"], "--seed must be <= 4294967295"),
    (["--checkpoint-every", "0"], "--checkpoint-every"),
    (["--mara"], "--tau"),
    (["--tau", "0.8"], "--mara"),
    (["--mara", "--tau", "inf"], "--tau"),
    (["--mara", "--tau", "1.5"], "--tau"),
    (["--mara", "--tau-quantile", "2"], "--tau-quantile"),
    (["--mara", "--tau", "0.8", "--tau-quantile", "0.5"], "--tau"),
    (["--objective", "banana"], "objective"),
    (["--objective", "no_such_module:make"], "objective"),
    (["--objective", "os:system"], "must take no arguments and return an Oracle"),
    (["--objective", "os:sep"], "is not a factory"),
    (["--objective", ":"], "cannot load"),
    (["--resume"], "holds no run"),
    (["--oracle-workers", "0"], "--oracle-workers"),
    (["--ray-address", ""], "--ray-address"),
    (["--dock-exhaustiveness", "2"], "--dock-exhaustiveness needs a docking objective"),
    (["--objective", "dock:DRD2", "--dock-exhaustiveness", "0"], "--dock-exhaustiveness"),
]
COMPARE = [
    (["--seeds", "0"], "--seeds"),
    (["--seeds", "0", "0"], "--seeds"),
    (["--seeds", "-1", "2"], "--seeds"),
    (["--seeds", "0", "4294967296"], "--seeds must be <= 4294967295"),
    (["--jobs", "0"], "--jobs"),
    (["--taus", "1.5"], "--taus"),
    (["--taus", "nan"], "--taus"),
    (["--sigma", "inf"], "--sigma"),
    (["--threads", "0"], "--threads"),
    (["--device", "banana"], "--device"),
    (["--prior", "GARBAGE"], "--prior"),
    (["--out", "UNWRITABLE"], "--out"),
    (["--screens", "nan"], "--screens"),
    (["--objective", "banana"], "objective"),
    (["--oracle-workers", "0"], "--oracle-workers"),
    (["--ray-address", "local", "--jobs", "2"], "--ray-address local"),
]
TRAIN_PRIOR = [
    (["--batch-size", "0"], "--batch-size"),
    (["--epochs", "0"], "--epochs"),
    (["--lr", "nan"], "--lr"),
    (["--lr-decay", "0"], "--lr-decay"),
    (["--max-minutes", "0"], "--max-minutes"),
    (["--max-minutes", "inf"], "--max-minutes"),
    (["--limit", "0"], "--limit"),
    (["--dropout", "1"], "dropout"),
    (["--hidden-size", "0"], "hidden_size"),
    (["--checkpoint-every", "0"], "--checkpoint-every"),
    (["--log-every", "0"], "--log-every"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "4294967296"], "--seed must be <= 4294967295"),
    (["--device", "banana"], "--device"),
    (["--out", "UNWRITABLE"], "--out"),
    (["--data", "MISSING"], "does not exist"),
    (["--data", "BADGZ"], "not a SMILES file"),
    (["--data", "NOCOLUMN"], "without a SMILES column"),
    (["--data", "NOTSMILES"], "2 of the first 3 rows"),
    (["--data", "DIR"], "is a directory"),
    (["--resume"], "does not exist"),
]
EVAL_PRIOR = [
    (["--samples", "0"], "--samples"),
    (["--batch-size", "0"], "--batch-size"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "4294967296"], "--seed must be <= 4294967295"),
    (["--threads", "0"], "--threads"),
    (["--prior", "GARBAGE"], "--prior"),
    (["--out", "UNWRITABLE"], "--out"),
    (["--training-smiles", "MISSING"], "--training-smiles"),
    (["--training-smiles", "NOTSMILES"], "2 of the first 3 rows"),
]
CASES = ([("run", *case) for case in RUN] + [("compare", *case) for case in COMPARE]
         + [("train-prior", *case) for case in TRAIN_PRIOR] + [("eval-prior", *case) for case in EVAL_PRIOR])


@pytest.mark.parametrize("command, flags, named", CASES, ids=[f"{c}{' '.join(f)}" for c, f, _ in CASES])
def test_bad_flag_is_one_line_and_exit_2(command, flags, named, files, capsys):
    argv = [files.get(f, f) for f in flags]
    if "--out" not in argv and command != "eval-prior":
        argv += ["--out", files["OUT"]]
    if command == "train-prior" and "--data" not in argv:
        argv += ["--data", files["SMILES"]]
    code = main(["chem", command, *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("mara chem") and err.count("\n") == 1 and "Traceback" not in err, err
    assert named in err, err
    assert not Path(files["OUT"]).exists() or not any(Path(files["OUT"]).iterdir())  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["run", "compare", "train-prior"])
def test_missing_cuda_is_a_clear_error(command, files, capsys):
    argv = ["chem", command, "--device", "cuda", "--out", files["OUT"]] + (["--data", files["SMILES"]] if command == "train-prior" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["run", "compare"])
def test_ray_address_without_ray_is_a_clear_error(command, files, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    assert main(["chem", command, "--ray-address", "auto", "--out", files["OUT"]]) == 2
    err = capsys.readouterr().err
    assert "--ray-address auto needs Ray" in err and "pip install" in err and err.count("\n") == 1, err
    assert not any(Path(files["OUT"]).iterdir())


def test_an_oracle_that_cannot_reach_worker_processes_is_a_clear_error(files, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    argv = ["chem", "run", "--objective", "chem_counting_oracle:make_unpicklable", "--oracle-workers", "2", "--out", files["OUT"]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--oracle-workers 2" in err and "cannot be sent to worker processes" in err and err.count("\n") == 1, err
    assert not any(Path(files["OUT"]).iterdir())


def test_smiles_column_is_found_whatever_its_case(tmp_path):
    from mara_rl.chem.data import read_smiles

    path = tmp_path / "lower.csv"
    path.write_text("smiles,id\nCCO,1\nc1ccccc1,2\n")
    assert read_smiles(path) == ["CCO", "c1ccccc1"]


def test_a_few_unparsable_rows_are_one_warning_line(tmp_path, capsys):
    from mara_rl.chem.data import check_parsable

    check_parsable(["CCO", "c1ccccc1", "C1CC"], tmp_path / "data.txt")
    err = capsys.readouterr().err
    assert err.startswith("warning: 1 of the first 3 rows") and "'C1CC'" in err and err.count("\n") == 1, err
    check_parsable(["CCO"], tmp_path / "data.txt")
    assert capsys.readouterr().err == ""


def test_the_canonical_training_set_is_computed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    import mara_rl.metrics.molecules as molecules
    from mara_rl.chem.evaluate import canonical_training_set

    monkeypatch.setenv("MARA_RL_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "train.txt"
    data.write_text("OCC\nc1ccccc1\nnot-smiles\n")
    assert canonical_training_set(data) == {"CCO", "c1ccccc1"}

    def no_more_canonicalising(smiles):
        raise AssertionError("the cached set was not used")

    monkeypatch.setattr(molecules, "canonical_smiles", no_more_canonicalising)
    assert canonical_training_set(data) == {"CCO", "c1ccccc1"}
    data.write_text("OCC\n")  # another file content: another key
    monkeypatch.undo()
    monkeypatch.setenv("MARA_RL_CACHE", str(tmp_path / "cache"))
    assert canonical_training_set(data) == {"CCO"}
    for cached in (tmp_path / "cache" / "canonical").iterdir():
        cached.write_bytes(b"damaged")
    assert canonical_training_set(data) == {"CCO"}  # recomputed
    broken = bytearray(gzip.compress(b"CCO\nCCC" * 50))
    broken[10] ^= 0xFF  # the first byte of the deflate stream: zlib's own error, not gzip's
    for cached in (tmp_path / "cache" / "canonical").iterdir():
        cached.write_bytes(bytes(broken))
    assert canonical_training_set(data) == {"CCO"}


def test_the_smiles_check_leaves_rdkit_logging_as_it_found_it(tmp_path, capfd):
    from mara_rl.chem.data import check_parsable
    from mara_rl.metrics.molecules import canonical_smiles

    check_parsable(["C1CC", "CCO", "CCC"], tmp_path / "data.txt")
    assert capfd.readouterr().err.startswith("warning: 1 of the first 3 rows")
    assert canonical_smiles("C1CC") is None
    assert capfd.readouterr().err == ""  # the metrics keep RDKit's parse errors silenced
