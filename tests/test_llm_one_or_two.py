"""The one-or-two sweep end to end on a tiny untrained model (seconds), and the tiny-model helpers."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from mara_rl.llm.one_or_two import SweepConfig, aggregate, pareto_front, run_sweep, train_run  # noqa: E402
from mara_rl.llm.sweep import check_stored_config  # noqa: E402
from mara_rl.llm.tiny import build_tokenizer, cache_root, tiny_untrained_model  # noqa: E402


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("MARA_RL_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("MARA_RL_CACHE")
    assert cache_root() == Path.home() / ".cache" / "mara-rl"


def test_tokenizer_round_trips_prompts_and_answers():
    tok = build_tokenizer()
    text = "Answer with one of these 2 options, chosen uniformly at random: 1, 2. Answer:"
    ids = tok(text)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(tok("2")["input_ids"] + [tok.eos_token_id], skip_special_tokens=True) == "2"


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 0.1), (0.9, 0.9), (1.0, 0.99), (0.5, 0.5)]
    assert pareto_front(points) == [(1.0, 0.99)]
    assert pareto_front([(1.0, 0.2), (0.8, 0.9)]) == [(1.0, 0.2), (0.8, 0.9)]


def tiny_sweep_config(tmp_path, **overrides):
    model_dir = tmp_path / "model"
    if not model_dir.exists():
        model, tokenizer = tiny_untrained_model(seed=0)
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    settings = dict(model=str(model_dir), betas=(0.01,), kl_directions=("reverse", "forward"), steps=2,
                    eval_every=1, eval_samples=8, final_samples=16, num_generations=4, prompts_per_step=2)
    return SweepConfig(**{**settings, **overrides})


def test_sweep_writes_table_figures_and_resumes(tmp_path):
    cfg = tiny_sweep_config(tmp_path)
    out = tmp_path / "sweep"
    metrics = run_sweep(cfg, out)
    assert len(metrics["runs"]) == 4
    for name in ("config.json", "metrics.json", "runs.csv", "pareto.png", "curves.png", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    run = metrics["runs"][0]
    assert [c["step"] for c in run["curve"]] == [0, 1, 2]
    assert 0.0 <= run["reward"] <= 1.0 and 0.0 <= run["entropy"] <= 1.0
    assert sum(run["histogram"].values()) == cfg.final_samples
    assert run["min_valid_rate"] == min([c["reward"] for c in run["curve"]] + [run["reward"]])
    assert run["all_invalid"] == (run["min_valid_rate"] == 0.0)
    rows = aggregate(metrics["runs"])
    assert {(r["kl"], r["method"]) for r in rows} == {(k, m) for k in ("reverse", "forward")
                                                     for m in ("vanilla", "mara")}
    from mara_rl.integrations.record import read_record

    for r in metrics["runs"]:  # every run's training rollouts, recorded in its own folder
        record = read_record(out / "records" / r["name"]).to_pandas()
        assert record.groupby("step").size().to_dict() == {0: 8, 1: 8}
        assert record["mara_anchor"].notna().all() == (r["method"] == "mara")
    run_file = out / "runs" / f"{run['name']}.json"
    run_file.write_text(json.dumps({**run, "reward": 0.123}))
    again = run_sweep(cfg, out)  # finished runs are reused, not retrained
    assert any(r["reward"] == 0.123 for r in again["runs"])
    with pytest.raises(ValueError, match="other settings.*steps"):
        run_sweep(tiny_sweep_config(tmp_path, steps=3), out)
    from mara_rl.llm.one_or_two import GRID_KEYS

    grown = replace(cfg, seeds=(*cfg.seeds, 7), methods=(*cfg.methods, "pkpo=2"))
    check_stored_config(asdict(grown), out, grid_keys=GRID_KEYS)  # more seeds and methods: the same sweep, grown
    assert json.loads((out / "config.json").read_text())["seeds"] == [*cfg.seeds, 7]
    stored = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({k: v for k, v in stored.items() if k != "adam_epsilon"}))
    with pytest.raises(ValueError, match=r"other settings \(adam_epsilon\)"):  # a sweep from before the setting
        run_sweep(cfg, out)
    (out / "config.json").write_text(json.dumps(stored))
    run_file.write_text("{bad json")
    with pytest.raises(ValueError, match=f"{run_file.name} is damaged.*delete it"):
        run_sweep(cfg, out)


@pytest.mark.slow
def test_parallel_sweep_equals_the_sequential_one_on_one_thread(tmp_path):
    import torch

    cfg = tiny_sweep_config(tmp_path, kl_directions=("forward",))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sequential = run_sweep(cfg, tmp_path / "sequential")
    finally:
        torch.set_num_threads(threads)
    parallel = run_sweep(cfg, tmp_path / "parallel", jobs=2)

    def strip(run):
        return {k: v for k, v in run.items() if k != "step_time_s"}

    assert [strip(r) for r in parallel["runs"]] == [strip(r) for r in sequential["runs"]]
    assert {r["method"] for r in parallel["runs"]} == {"vanilla", "mara"}


def test_the_sweeps_optimizer_settings_reach_trl(tmp_path, monkeypatch):
    import mara_rl.integrations.trl.trainers as trainers

    class Built(Exception):
        pass

    def capture(*, args, **kwargs):
        raise Built({k: getattr(args, k) for k in ("learning_rate", "adam_beta1", "adam_beta2", "adam_epsilon")})

    monkeypatch.setattr(trainers, "MaraGRPOTrainer", capture)
    settings = {"learning_rate": 2e-3, "adam_beta1": 0.4, "adam_beta2": 0.6, "adam_epsilon": 3e-7}
    with pytest.raises(Built) as built:
        train_run(tiny_sweep_config(tmp_path, **settings), 0.01, "reverse", "mara", 0, tmp_path / "trainer")
    assert built.value.args[0] == settings


def test_sweep_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="betas"):
        SweepConfig(betas=(0.0,))
    with pytest.raises(ValueError, match="methods"):
        SweepConfig(methods=("ppo",))
    with pytest.raises(ValueError, match="steps"):
        SweepConfig(steps=0)
    with pytest.raises(ValueError, match="num_generations"):
        SweepConfig(num_generations=1)


def test_group_size_and_methods_flags_reach_the_stored_config(tmp_path, monkeypatch):
    import mara_rl.llm.one_or_two as one_or_two
    from mara_rl.cli import main

    seen = {}

    def capture(cfg, out, jobs=1):
        check_stored_config(asdict(cfg), out)
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(one_or_two, "run_sweep", capture)
    out = tmp_path / "sweep"
    out.mkdir()
    argv = ["llm", "one-or-two", "--num-generations", "4", "--methods", "mara", "--kl", "forward",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    with pytest.raises(SystemExit):
        main(argv)
    assert seen["cfg"].num_generations == 4 and seen["cfg"].methods == ("mara",)
    assert json.loads((out / "config.json").read_text())["num_generations"] == 4
    # Resuming with another group size is refused, naming the setting.
    with pytest.raises(ValueError, match="num_generations"):
        check_stored_config(asdict(SweepConfig(**{**seen["cfg"].__dict__, "num_generations": 8})), out)


def test_sweep_compares_named_methods_and_reports_finished_runs(tmp_path, capsys):
    from mara_rl.llm.methods import config_kwargs, expand_methods

    methods = expand_methods(["vanilla", "mara", "pkpo=2", "entropy=0.01", "grpo_passk"])
    cfg = tiny_sweep_config(tmp_path, kl_directions=("reverse",), methods=methods, seeds=(0, 1))
    out = tmp_path / "sweep"
    metrics = run_sweep(cfg, out)
    assert {r["method"] for r in metrics["runs"]} == set(methods)
    assert (out / "runs" / "beta0.01-reverse-pkpo=2-seed1.json").is_file()
    for name in ("methods.md", "methods.png"):
        assert (out / name).stat().st_size > 0, name
    best = {row["family"]: row for row in metrics["methods"]}
    assert set(best) == {"vanilla", "mara", "pkpo", "entropy", "grpo_passk"}
    assert all(row["seeds"] == 2 for row in best.values())
    assert "p vs MARA" in (out / "methods.md").read_text()
    # --report: nothing trained, the table rebuilt from whatever finished
    (out / "runs" / "beta0.01-reverse-vanilla-seed1.json").unlink()
    capsys.readouterr()
    report = run_sweep(cfg, out, train=False)
    assert len(report["runs"]) == len(metrics["runs"]) - 1
    assert "not finished: beta0.01-reverse-vanilla-seed1" in capsys.readouterr().err
    assert config_kwargs("entropy=0.01", 1.0) == {"entropy_coef": 0.01}
    assert config_kwargs("mara", 0.5) == {"mara": True, "mara_tau": 0.5}
    assert config_kwargs("pkpo=2", 1.0) == {"reward_transform": "pkpo", "reward_transform_value": 2.0}


def test_a_sweep_folder_from_before_the_methods_option_still_resumes(tmp_path):
    """Old folders store methods ("vanilla", "mara") and runs without knob fields: same config, same names."""
    cfg = tiny_sweep_config(tmp_path, kl_directions=("reverse",))
    out = tmp_path / "old"
    run_sweep(cfg, out)
    runs = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert runs == ["beta0.01-reverse-mara-seed0.json", "beta0.01-reverse-vanilla-seed0.json"]
    assert json.loads((out / "config.json").read_text())["methods"] == ["vanilla", "mara"]
    assert not (out / "methods.md").exists()
    run_sweep(cfg, out)  # resumes without retraining or complaint


SLOW_GRID = '''
import os, sys, time
from pathlib import Path


def slow_run(name, folder):
    (Path(folder) / f"{name}.pid").write_text(str(os.getpid()))
    time.sleep(60)
    return {"name": name}


if __name__ == "__main__":
    from mara_rl.llm.sweep import run_grid

    out = Path(sys.argv[1])
    run_grid(out, {f"r{i}": (f"r{i}", str(out)) for i in range(6)}, slow_run, jobs=2)
'''


def test_a_killed_sweep_takes_its_runs_with_it(tmp_path):
    """A sweep with ``--jobs 2`` SIGKILLed (not Ctrl-C: its workers get no signal): they end within
    seconds instead of training the runs already queued into its folder."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from _processes import still_alive

    import mara_rl

    script = tmp_path / "slow_grid.py"
    script.write_text(SLOW_GRID)
    env = {**os.environ, "PYTHONPATH": str(Path(mara_rl.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(tmp_path.glob("*.pid"))) < 2:
        time.sleep(0.2)
    workers = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
    assert len(workers) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not still_alive(workers), "runs outlived their killed sweep"
    assert not list((tmp_path / "runs").glob("*.json")) and len(list(tmp_path.glob("*.pid"))) == 2


def test_report_of_a_folder_without_finished_runs_fails_before_building_anything(tmp_path, monkeypatch):
    import mara_rl.llm.one_or_two as one_or_two

    monkeypatch.setattr(one_or_two, "reference_metrics", lambda cfg: pytest.fail("built the reference for nothing"))
    with pytest.raises(ValueError, match="holds no finished run of this grid"):
        run_sweep(tiny_sweep_config(tmp_path), tmp_path / "empty", train=False)
