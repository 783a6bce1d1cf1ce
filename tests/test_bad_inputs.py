"""Bad input, table-driven: every user mistake is one clear error, and legitimate odd input works.

CLI cases run in-process through ``mara_rl.cli.main`` and check the error boundary's contract: exit
code 2, exactly one stderr line ``mara <command>: error: ...`` holding a given substring, no
traceback, and nothing done (no stdout). Core cases call the Python API and check the
``ValueError`` (or the right result). Two subprocess cases cover the console script and Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mara_rl import targets as T
from mara_rl.augment import mara_rewards
from mara_rl.cli import main

BIN = Path(sys.executable).parent

# Files the CLI cases refer to by name, created in a fresh working directory for each case.
FILES = {
    "afile": "just text\n",
    "syntax.yaml": "rewards: [0, 1\n",
    "tabs.yaml": "rewards:\n\t- 1\n",
    "scalar_rewards.yaml": "rewards: 3\nref_probs: [1]\n",
    "scalar_betas.yaml": "rewards: [0, 1]\nref_probs: [0.5, 0.5]\nbetas: 0.1\n",
    "string_rewards.yaml": "rewards: [a, b]\nref_probs: [0.5, 0.5]\n",
    "bool_rewards.yaml": "rewards: [true, false]\nref_probs: [0.5, 0.5]\n",
    "nan_rewards.yaml": "rewards: [0, .nan]\nref_probs: [0.5, 0.5]\n",
    "inf_tau.yaml": "rewards: [0, 1]\nref_probs: [0.5, 0.5]\ntau: .inf\n",
    "top_list.yaml": "- 1\n- 2\n",
    "empty.yaml": "",
    "no_rewards.yaml": "ref_probs: [0.5, 0.5]\n",
    "no_ref.yaml": "rewards: [0, 1]\n",
    "both_refs.yaml": "rewards: [0, 1]\nref_probs: [0.5, 0.5]\nref_logprobs: [-1, -1]\n",
    "unknown_key.yaml": "rewards: [0, 1]\nref_probs: [0.5, 0.5]\nbetaz: [1]\n",
    "beta_and_betas.yaml": "rewards: [0, 1]\nref_probs: [0.5, 0.5]\nbeta: 1\nbetas: [1]\n",
    "negative_beta.yaml": "rewards: [0, 1]\nref_probs: [0.5, 0.5]\nbetas: [0.1, -1]\n",
    "zero_beta.yaml": "rewards: [0, 1]\nref_probs: [0.5, 0.5]\nbeta: 0\n",
    "scalar_labels.yaml": "rewards: [0, 1]\nref_probs: [0.5, 0.5]\nlabels: ab\n",
    "short_labels.yaml": "rewards: [0, 1]\nref_probs: [0.5, 0.5]\nlabels: [a]\n",
    "empty_rewards.yaml": "rewards: []\nref_probs: []\n",
    "nested_rewards.yaml": "rewards: [[0, 1]]\nref_probs: [0.5, 0.5]\n",
    "short_ref.yaml": "rewards: [0, 1]\nref_probs: [1]\n",
    "negative_ref.yaml": "rewards: [0, 1]\nref_probs: [-0.5, 1.5]\n",
    "nan_ref.yaml": "rewards: [0, 1]\nref_logprobs: [.nan, 0]\n",
    "tau_high.yaml": "rewards: [0, 1]\nref_probs: [0.5, 0.5]\ntau: 1.5\n",
    "bad.json": "{rewards: [0, 1]}",
    "list.json": "[1, 2]",
    "good.yaml": "rewards: [0, 1, 1]\nref_probs: [0.68, 0.30, 0.02]\nbetas: [1e-3, 0.1]\nlabels: [ноль, 一, \"🙂\"]\n",
}

TARGETS = ["targets", "--rewards", "0", "1", "1", "--ref-probs", "0.68", "0.30", "0.02"]
TWO = ["targets", "--rewards", "0", "1", "--ref-probs", "0.5", "0.5"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "latin1.yaml").write_bytes(b"rewards: [0, 1]\nref_probs: [0.5, 0.5]\nlabels: [\xe9, b]\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir.yaml").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MARA_DEBUG", raising=False)
    return tmp_path


CLI_ERRORS = [
    # mara targets: flags
    # a command group without its subcommand: one line, whatever group
    pytest.param([], "mara", "the following arguments are required: COMMAND (see mara --help)", id="no-command"),
    pytest.param(["chem"], "mara chem", "the following arguments are required: CHEM_COMMAND (see mara chem --help)", id="chem-no-command"),
    pytest.param(["targets"], "mara targets", "give --rewards", id="targets-nothing"),
    pytest.param(["targets", "--rewards", "0", "1"], "mara targets", "--ref-probs", id="targets-no-reference"),
    pytest.param(["targets", "--rewards", "0", "x", "--ref-probs", "1", "1"], "mara targets", "expected a number", id="targets-reward-word"),
    pytest.param(["targets", "--rewards", "0", "nan", "--ref-probs", "1", "1"], "mara targets", "finite", id="targets-reward-nan"),
    pytest.param(["targets", "--rewards", "0", "inf", "--ref-probs", "1", "1"], "mara targets", "finite", id="targets-reward-inf"),
    pytest.param(["targets", "--rewards", "0", "-inf", "--ref-probs", "1", "1"], "mara targets", "finite", id="targets-reward-minus-inf"),
    pytest.param(["targets", "--rewards", "0", "1", "--ref-probs", "0.5"], "mara targets", "needs 2 entries", id="targets-short-ref"),
    pytest.param(["targets", "--rewards", "0", "1", "--ref-probs", "0.5", "0.2", "0.3"], "mara targets", "needs 2 entries", id="targets-long-ref"),
    pytest.param(["targets", "--rewards", "0", "1", "--ref-probs", "-0.5", "1.5"], "mara targets", "non-negative", id="targets-negative-ref"),
    pytest.param(["targets", "--rewards", "0", "1", "--ref-probs", "0", "0"], "mara targets", "probability 0 to every", id="targets-zero-ref"),
    pytest.param(["targets", "--rewards", "0", "1", "--ref-probs", "nan", "1"], "mara targets", "finite", id="targets-nan-ref"),
    pytest.param(["targets", "--rewards", "0", "1", "--ref-logprobs", "nan", "0"], "mara targets", "not NaN", id="targets-nan-logref"),
    pytest.param(["targets", "--rewards", "0", "1", "--ref-logprobs", "inf", "0"], "mara targets", "+inf", id="targets-posinf-logref"),
    pytest.param(["targets", "--rewards", "0", "1", "--ref-logprobs", "-inf", "-inf"], "mara targets", "probability 0 to every", id="targets-all-neginf"),
    pytest.param(["targets", "--rewards", "0", "1", "--ref-probs", "1", "1", "--ref-logprobs", "0", "0"], "mara targets", "not allowed with", id="targets-both-refs"),
    pytest.param([*TWO, "--beta", "0"], "mara targets", "must be > 0", id="targets-beta-zero"),
    pytest.param([*TWO, "--beta", "-1"], "mara targets", "must be > 0", id="targets-beta-negative"),
    pytest.param([*TWO, "--beta", "nan"], "mara targets", "finite", id="targets-beta-nan"),
    pytest.param([*TWO, "--beta", "inf"], "mara targets", "finite", id="targets-beta-inf"),
    pytest.param([*TWO, "--beta", "0.1", "abc"], "mara targets", "expected a number", id="targets-beta-word"),
    pytest.param([*TWO, "--tau", "1.5"], "mara targets", "above every reward", id="targets-tau-above-rewards"),
    pytest.param([*TWO, "--tau", "nan"], "mara targets", "finite", id="targets-tau-nan"),
    pytest.param([*TWO, "--tau", "inf"], "mara targets", "finite", id="targets-tau-inf"),
    pytest.param([*TWO, "--labels", "a"], "mara targets", "labels needs 2", id="targets-short-labels"),
    pytest.param([*TWO, "--frobnicate"], "mara targets", "unrecognized arguments", id="targets-unknown-flag"),
    # mara targets: output paths, checked before any work
    pytest.param([*TWO, "--plot", "adir"], "mara targets", "is a directory", id="targets-plot-dir"),
    pytest.param([*TWO, "--json", "adir"], "mara targets", "is a directory", id="targets-json-dir"),
    pytest.param([*TWO, "--plot", "afile/x.png"], "mara targets", "not a directory", id="targets-plot-under-file"),
    pytest.param([*TWO, "--json", "afile/sub/x.json"], "mara targets", "not a directory", id="targets-json-under-file"),
    pytest.param([*TWO, "--plot", "/proc/mara-plot.png"], "mara targets", "cannot write in /proc", id="targets-plot-unwritable"),
    pytest.param([*TWO, "--json", "/proc/mara.json"], "mara targets", "cannot write in /proc", id="targets-json-unwritable"),
    pytest.param([*TWO, "--plot", "t.txt"], "mara targets", "--plot: t.txt has the unsupported extension .txt; use one of", id="targets-plot-not-a-figure"),
    pytest.param([*TWO, "--plot", "t"], "mara targets", "--plot: t has no extension", id="targets-plot-no-extension"),
    # mara targets: spec files
    pytest.param(["targets", "--file", "missing.yaml"], "mara targets", "does not exist", id="spec-missing"),
    pytest.param(["targets", "--file", "adir.yaml"], "mara targets", "is a directory", id="spec-directory"),
    pytest.param(["targets", "--file", "syntax.yaml"], "mara targets", "not valid YAML", id="spec-yaml-syntax"),
    pytest.param(["targets", "--file", "tabs.yaml"], "mara targets", "not valid YAML", id="spec-yaml-tabs"),
    pytest.param(["targets", "--file", "latin1.yaml"], "mara targets", "not UTF-8", id="spec-not-utf8"),
    pytest.param(["targets", "--file", "bad.json"], "mara targets", "not valid JSON", id="spec-json-syntax"),
    pytest.param(["targets", "--file", "list.json"], "mara targets", "must be a mapping", id="spec-json-list"),
    pytest.param(["targets", "--file", "top_list.yaml"], "mara targets", "must be a mapping", id="spec-yaml-list"),
    pytest.param(["targets", "--file", "empty.yaml"], "mara targets", "must be a mapping", id="spec-empty"),
    pytest.param(["targets", "--file", "scalar_rewards.yaml"], "mara targets", "'rewards' in scalar_rewards.yaml must be a list", id="spec-scalar-rewards"),
    pytest.param(["targets", "--file", "scalar_betas.yaml"], "mara targets", "'betas' in scalar_betas.yaml must be a list", id="spec-scalar-betas"),
    pytest.param(["targets", "--file", "string_rewards.yaml"], "mara targets", "must be a number, got 'a'", id="spec-string-rewards"),
    pytest.param(["targets", "--file", "bool_rewards.yaml"], "mara targets", "must be a number, got True", id="spec-bool-rewards"),
    pytest.param(["targets", "--file", "nested_rewards.yaml"], "mara targets", "must be a number, got [0, 1]", id="spec-nested-rewards"),
    pytest.param(["targets", "--file", "empty_rewards.yaml"], "mara targets", "must not be empty", id="spec-empty-rewards"),
    pytest.param(["targets", "--file", "nan_rewards.yaml"], "mara targets", "must be finite", id="spec-nan-rewards"),
    pytest.param(["targets", "--file", "inf_tau.yaml"], "mara targets", "'tau' in inf_tau.yaml must be finite", id="spec-inf-tau"),
    pytest.param(["targets", "--file", "tau_high.yaml"], "mara targets", "above every reward", id="spec-tau-above-rewards"),
    pytest.param(["targets", "--file", "no_rewards.yaml"], "mara targets", "'rewards' list", id="spec-no-rewards"),
    pytest.param(["targets", "--file", "no_ref.yaml"], "mara targets", "ref_probs / ref_logprobs", id="spec-no-reference"),
    pytest.param(["targets", "--file", "both_refs.yaml"], "mara targets", "both ref_probs and ref_logprobs", id="spec-both-refs"),
    pytest.param(["targets", "--file", "unknown_key.yaml"], "mara targets", "unknown key(s) betaz", id="spec-unknown-key"),
    pytest.param(["targets", "--file", "beta_and_betas.yaml"], "mara targets", "not both", id="spec-beta-and-betas"),
    pytest.param(["targets", "--file", "negative_beta.yaml"], "mara targets", "must be > 0", id="spec-negative-beta"),
    pytest.param(["targets", "--file", "zero_beta.yaml"], "mara targets", "must be > 0", id="spec-zero-beta"),
    pytest.param(["targets", "--file", "scalar_labels.yaml"], "mara targets", "must be a list of names", id="spec-scalar-labels"),
    pytest.param(["targets", "--file", "short_labels.yaml"], "mara targets", "labels needs 2", id="spec-short-labels"),
    pytest.param(["targets", "--file", "short_ref.yaml"], "mara targets", "needs 2 entries", id="spec-short-ref"),
    pytest.param(["targets", "--file", "negative_ref.yaml"], "mara targets", "non-negative", id="spec-negative-ref"),
    pytest.param(["targets", "--file", "nan_ref.yaml"], "mara targets", "not NaN or +inf", id="spec-nan-logref"),
    # mara toy / mara reproduce didactic
    pytest.param(["toy"], "mara toy", "required: experiment", id="toy-no-experiment"),
    pytest.param(["toy", "banana"], "mara toy", "invalid choice", id="toy-unknown-experiment"),
    pytest.param(["toy", "intervals", "--steps", "0"], "mara toy", "--steps: must be >= 1", id="toy-steps-zero"),
    pytest.param(["toy", "intervals", "--steps", "-5"], "mara toy", "--steps: must be >= 1", id="toy-steps-negative"),
    pytest.param(["toy", "intervals", "--steps", "1.5"], "mara toy", "expected an integer", id="toy-steps-float"),
    pytest.param(["toy", "intervals", "--batch-size", "1"], "mara toy", "--batch-size: must be >= 2", id="toy-batch-one"),
    pytest.param(["toy", "intervals", "--lr", "0"], "mara toy", "--lr: must be > 0", id="toy-lr-zero"),
    pytest.param(["toy", "intervals", "--lr", "nan"], "mara toy", "finite", id="toy-lr-nan"),
    pytest.param(["toy", "intervals", "--lr", "inf"], "mara toy", "finite", id="toy-lr-inf"),
    pytest.param(["toy", "intervals", "--lr", "fast"], "mara toy", "expected a number", id="toy-lr-word"),
    pytest.param(["toy", "intervals", "--seed", "-1"], "mara toy", "--seed: must be >= 0", id="toy-seed-negative"),
    pytest.param(["toy", "intervals", "--seed", "4294967296"], "mara toy", "--seed: must be <= 4294967295", id="toy-seed-above-32-bit"),
    pytest.param(["toy", "intervals", "--seed", "99999999999999999999"], "mara toy", "--seed: must be <= 4294967295", id="toy-seed-huge"),
    pytest.param(["toy", "three-action", "--lr", "1e308", "--steps", "3", "--no-progress", "--out", "run"], "mara toy",
                 "training diverged at step 1 of 3", id="toy-lr-diverges"),
    pytest.param(["toy", "intervals", "--out", "afile"], "mara toy", "not a directory", id="toy-out-file"),
    pytest.param(["toy", "beta-sweep", "--out", "afile/run"], "mara toy", "not a directory", id="toy-out-under-file"),
    pytest.param(["toy", "matching", "--out", "/proc/mara-run"], "mara toy", "cannot write in /proc", id="toy-out-unwritable"),
    pytest.param(["reproduce"], "mara reproduce", "required: STUDY", id="reproduce-no-study"),
    pytest.param(["reproduce", "nothing"], "mara reproduce", "invalid choice", id="reproduce-unknown-study"),
    pytest.param(["reproduce", "didactic", "--steps", "0"], "mara reproduce didactic", "--steps: must be >= 1", id="didactic-steps-zero"),
    pytest.param(["reproduce", "didactic", "--lr", "-0.1"], "mara reproduce didactic", "--lr: must be > 0", id="didactic-lr-negative"),
    pytest.param(["reproduce", "didactic", "--batch-size", "0"], "mara reproduce didactic", "must be >= 2", id="didactic-batch-zero"),
    pytest.param(["reproduce", "didactic", "--out", "afile"], "mara reproduce didactic", "not a directory", id="didactic-out-file"),
    pytest.param(["reproduce", "didactic", "--out", "/proc/mara-didactic"], "mara reproduce didactic", "cannot write in /proc", id="didactic-out-unwritable"),
    # mara llm
    pytest.param(["llm"], "mara llm", "required: JOB", id="llm-no-job"),
    pytest.param(["llm", "one-or-two", "--threads", "0"], "mara llm one-or-two", "--threads: must be >= 1", id="llm-threads-zero"),
    pytest.param(["llm", "one-or-two", "--threads", "two"], "mara llm one-or-two", "expected an integer", id="llm-threads-word"),
    pytest.param(["llm", "one-or-two", "--betas", "nan"], "mara llm one-or-two", "finite", id="llm-betas-nan"),
    pytest.param(["llm", "one-or-two", "--betas", "0.01", "0"], "mara llm one-or-two", "must be > 0", id="llm-betas-zero"),
    pytest.param(["llm", "one-or-two", "--betas", "-0.01"], "mara llm one-or-two", "must be > 0", id="llm-betas-negative"),
    pytest.param(["llm", "one-or-two", "--betas", "inf"], "mara llm one-or-two", "finite", id="llm-betas-inf"),
    pytest.param(["llm", "one-or-two", "--steps", "0"], "mara llm one-or-two", "--steps: must be >= 1", id="llm-steps-zero"),
    pytest.param(["llm", "one-or-two", "--num-generations", "1"], "mara llm one-or-two", "--num-generations: must be >= 2", id="llm-num-generations-one"),
    pytest.param(["llm", "one-or-two", "--seeds", "0", "-1"], "mara llm one-or-two", "--seeds: must be >= 0", id="llm-seeds-negative"),
    pytest.param(["llm", "one-or-two", "--seeds", "4294967296"], "mara llm one-or-two", "--seeds: must be <= 4294967295",
                 id="llm-seeds-too-large"),
    pytest.param(["llm", "one-or-two", "--kl", "sideways"], "mara llm one-or-two", "invalid choice", id="llm-kl-unknown"),
    pytest.param(["llm", "one-or-two", "--methods", "ppo"], "mara llm one-or-two", "--methods: unknown method 'ppo'",
                 id="llm-methods-unknown"),
    pytest.param(["llm", "one-or-two", "--methods", "pkpo=two"], "mara llm one-or-two", "is not a number",
                 id="llm-methods-bad-value"),
    pytest.param(["llm", "one-or-two", "--methods", "vanilla=1"], "mara llm one-or-two", "has no knob",
                 id="llm-methods-knobless"),
    pytest.param(["llm", "one-or-two", "--report", "--out", "nosweep"], "mara llm one-or-two", "holds no sweep",
                 id="llm-report-empty"),
    pytest.param(["llm", "one-or-two", "--model", "/no/such/model"], "mara llm one-or-two", "does not exist", id="llm-model-missing"),
    pytest.param(["llm", "one-or-two", "--model", "./no/../model"], "mara llm one-or-two", "does not exist", id="llm-model-missing-relative"),
    pytest.param(["llm", "one-or-two", "--model", "afile"], "mara llm one-or-two", "is a file", id="llm-model-file"),
    pytest.param(["llm", "one-or-two", "--model", "adir"], "mara llm one-or-two", "no config.json", id="llm-model-not-a-model"),
    pytest.param(["llm", "one-or-two", "--out", "afile"], "mara llm one-or-two", "--out: afile exists and is not a directory", id="llm-out-file"),
    pytest.param(["llm", "one-or-two", "--out", "/proc/mara-llm"], "mara llm one-or-two", "cannot write in /proc", id="llm-out-unwritable"),
    pytest.param(["llm", "one-or-two", "--cache-dir", "afile"], "mara llm one-or-two", "--cache-dir", id="llm-cache-file"),
]


@pytest.mark.parametrize("argv, command, message", CLI_ERRORS)
def test_cli_user_mistake_is_one_line_and_exit_2(argv, command, message, workdir, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{command}: error: "), lines[0]
    assert message in lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""  # failed before doing anything


CLI_LEGITIMATE = [
    pytest.param([*TARGETS, "--labels", "ноль", "一", "🙂"], ["🙂", "ноль"], id="targets-unicode-labels"),
    pytest.param(["targets", "--file", "good.yaml"], ["一", "beta = 0.001"], id="spec-unicode-labels-and-1e-3"),
    pytest.param([*TARGETS, "--tau", "-5"], ["tau = -5"], id="targets-tau-below-every-reward"),
    pytest.param([*TWO, "--plot", "t.SVG"], ["wrote t.SVG"], id="targets-plot-upper-case-extension"),
    pytest.param(["targets", "--rewards", "0", "1", "--ref-logprobs", "-inf", "0"], ["beta = 1"], id="targets-neginf-logref"),
    pytest.param(["targets", "--rewards", "-1e-3", "-2E+1", "--ref-logprobs", "-0.5", "-.5", "--tau", "-1e1"], ["tau = -10"],
                 id="targets-negative-scientific-numbers"),
    pytest.param(["targets", "--rewards", "1e3", "0", "--ref-probs", "1e-300", "1", "--beta", "1e-300"], ["beta = 1e-300"], id="targets-extreme-scales"),
    pytest.param(["targets", "--file", "good.yaml", "--beta", "1", "--debug"], ["beta = 1"], id="flags-override-spec-and-trailing-debug"),
]


@pytest.mark.parametrize("argv, expected", CLI_LEGITIMATE)
def test_cli_odd_but_legitimate_input_works(argv, expected, workdir, capsys):
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    for text in expected:
        assert text in captured.out


def test_the_largest_seed_is_accepted():
    from mara_rl.cli_args import SEED_MAX, seed

    assert seed(str(SEED_MAX)) == SEED_MAX == 2**32 - 1


def test_cli_writes_outputs_into_new_folders(workdir, capsys):
    assert main([*TARGETS, "--json", "new/a/t.json", "--plot", "new/b/t.png"]) == 0
    assert (workdir / "new/a/t.json").is_file() and (workdir / "new/b/t.png").is_file()


@pytest.mark.parametrize("debug", ["flag", "env"])
def test_debug_lets_the_traceback_through(debug, workdir, monkeypatch):
    argv = [*TWO, "--tau", "2"]
    if debug == "flag":
        argv = ["--debug", *argv]
    else:
        monkeypatch.setenv("MARA_DEBUG", "1")
    with pytest.raises(ValueError, match="above every reward"):
        main(argv)


def test_an_internal_bug_is_exit_1_with_a_debug_hint(workdir, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("an invariant broke")

    monkeypatch.setattr("mara_rl.target_report.build_report", broken)
    assert main(TARGETS) == 1
    line, = capsys.readouterr().err.strip().splitlines()
    assert line == "mara targets: internal error: RuntimeError: an invariant broke (rerun with --debug for the traceback)"


def test_console_script_end_to_end(tmp_path):
    env = {**os.environ, "MARA_DEBUG": ""}
    done = subprocess.run([str(BIN / "mara"), *TWO, "--tau", "1.5"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()] and done.stderr.startswith("mara targets: error: tau = 1.5")
    debug = subprocess.run([str(BIN / "mara"), *TWO, "--tau", "1.5"], capture_output=True, text=True,
                           env={**env, "MARA_DEBUG": "1"}, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ValueError" in debug.stderr


@pytest.mark.parametrize("where", ["mara_rl.cli.build_parser", "mara_rl.cli.Parser.parse_args"])
def test_ctrl_c_while_the_parser_is_built_or_parses_is_one_line(where, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.delenv("MARA_DEBUG", raising=False)
    monkeypatch.setattr(where, interrupted)
    assert main(TWO) == 130
    assert capsys.readouterr().err == "mara: interrupted\n"


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MARA_DEBUG": "", "OMP_NUM_THREADS": "1"}
    # A shell's background job starts with SIGINT ignored, and Python keeps it so: give the child Ctrl-C back.
    proc = subprocess.Popen([str(BIN / "mara"), "reproduce", "didactic", "--no-progress", "--out", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().startswith("[1/4]")  # the first experiment has started
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.strip() == "mara reproduce didactic: interrupted"


def test_the_command_reaches_its_ctrl_c_handling_before_importing_numpy():
    # Ctrl-C before main() starts is Python's own traceback: keep that window to the interpreter's start.
    code = "import sys, mara_rl.cli, mara_rl; assert 'numpy' not in sys.modules, 'numpy loaded before main()'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    from mara_rl import mara_rewards, summarize_targets

    assert callable(mara_rewards) and callable(summarize_targets)


# Python API of the core --------------------------------------------------------------------------

R3, L3 = np.array([0.0, 1.0, 1.0]), np.log([0.68, 0.30, 0.02])
CORE_FUNCTIONS = {
    "reverse": lambda r, l, b: T.reverse_kl_target(r, l, b),
    "forward": lambda r, l, b: T.forward_kl_target(r, l, b),
    "mara_reverse": lambda r, l, b: T.mara_target(r, l, b, 0.5, kl="reverse"),
    "mara_forward": lambda r, l, b: T.mara_target(r, l, b, 0.5, kl="forward"),
}
TARGET_ERRORS = [
    ("beta zero", R3, L3, 0.0, "beta"),
    ("beta negative", R3, L3, -1.0, "beta"),
    ("beta nan", R3, L3, float("nan"), "beta"),
    ("beta inf", R3, L3, float("inf"), "beta"),
    ("beta string", R3, L3, "small", "beta"),
    ("reward nan", np.array([0.0, np.nan, 1.0]), L3, 0.1, "rewards"),
    ("reward inf", np.array([0.0, np.inf, 1.0]), L3, 0.1, "rewards"),
    ("shape mismatch", R3, L3[:2], 0.1, "shape"),
    ("2-D rewards", R3[None], L3[None], 0.1, "1-D"),
    ("empty", np.array([]), np.array([]), 0.1, "empty"),
    ("string rewards", np.array(["a", "b", "c"]), L3, 0.1, "rewards"),
    ("ref nan", R3, np.array([np.nan, 0.0, 0.0]), 0.1, "ref_logprobs"),
    ("ref +inf", R3, np.array([np.inf, 0.0, 0.0]), 0.1, "ref_logprobs"),
    ("ref all -inf", R3, np.full(3, -np.inf), 0.1, "ref_logprobs"),
]


@pytest.mark.parametrize("name", list(CORE_FUNCTIONS))
@pytest.mark.parametrize("case, rewards, ref_logprobs, beta, match", TARGET_ERRORS, ids=[c[0] for c in TARGET_ERRORS])
def test_core_targets_reject_bad_input(name, case, rewards, ref_logprobs, beta, match):
    with pytest.raises(ValueError, match=match):
        CORE_FUNCTIONS[name](rewards, ref_logprobs, beta)


@pytest.mark.parametrize("name", list(CORE_FUNCTIONS))
@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.float32, np.float64])
def test_core_targets_accept_every_numeric_kind(name, dtype):
    probs = CORE_FUNCTIONS[name](np.array([0, 1, 1], dtype=dtype), L3, 0.5)
    assert probs.dtype == np.float64 and probs.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(probs, CORE_FUNCTIONS[name](R3, L3, 0.5), rtol=1e-12)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: T.mara_target(R3, L3, 0.1, float("nan")), "tau", id="mara_target-tau-nan"),
    pytest.param(lambda: T.mara_target(R3, L3, 0.1, 0.5, kl="sideways"), "kl", id="mara_target-kl"),
    pytest.param(lambda: T.mara_target(R3, np.array([0.0, -np.inf, 0.0]), 0.1, 0.5), "-inf", id="mara_target-neginf-good"),
    pytest.param(lambda: T.reverse_kl_target(R3, L3, 0.1, entropy_coef=-1), "entropy_coef", id="reverse-negative-entropy"),
    pytest.param(lambda: T.log_ratio(1.0, 0.0, -1.0, -2.0, 0.0), "beta", id="log_ratio-beta-zero"),
    pytest.param(lambda: T.log_ratio(1.0, 0.0, -1.0, -2.0, 0.1, entropy_coef=-1), "entropy_coef", id="log_ratio-negative-entropy"),
    pytest.param(lambda: T.log_ratio(float("nan"), 0.0, -1.0, -2.0, 0.1), "reward_1", id="log_ratio-nan-reward"),
    pytest.param(lambda: T.log_ratio(1.0, 0.0, float("nan"), -2.0, 0.1), "ref_logprob_1", id="log_ratio-nan-ref"),
    pytest.param(lambda: T.crossover_beta(float("nan"), 0.0, -1.0, -2.0), "reward_1", id="crossover-nan-reward"),
    pytest.param(lambda: T.crossover_beta(1.0, 0.0, np.array([-1.0, np.nan]), -2.0), "ref_logprob_1", id="crossover-nan-ref"),
    pytest.param(lambda: T.crossover_beta(1.0, 0.0, -1.0, -2.0, target_log_ratio=float("nan")), "target_log_ratio", id="crossover-nan-target"),
    pytest.param(lambda: T.describe_target([0.5, 0.2, 0.1], R3, 0.5), "sum", id="describe-not-normalised"),
    pytest.param(lambda: T.describe_target([0.5, 0.6, -0.1], R3, 0.5), "negative", id="describe-negative"),
    pytest.param(lambda: T.describe_target([0.5, np.nan, 0.5], R3, 0.5), "finite", id="describe-nan"),
    pytest.param(lambda: T.describe_target([0.5, 0.5], R3, 0.5), "shape", id="describe-shape"),
    pytest.param(lambda: T.describe_target([], [], 0.5), "empty", id="describe-empty"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.0, tau=0.5), "beta", id="mara_rewards-beta-zero"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=float("nan"), tau=0.5), "beta", id="mara_rewards-beta-nan"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.1), "exactly one", id="mara_rewards-no-tau"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.1, tau=0.5, tau_quantile=0.5), "exactly one", id="mara_rewards-both-taus"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.1, tau=float("nan")), "NaN", id="mara_rewards-tau-nan"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.1, tau="high"), "tau", id="mara_rewards-tau-string"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.1, tau=float("inf")), "^tau must be a finite number, got inf$", id="mara_rewards-tau-inf"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.1, tau=-float("inf")), "^tau must be a finite number", id="mara_rewards-tau-neginf"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.1, tau=10**400), "^tau must be a finite number", id="mara_rewards-tau-huge-int"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.1, tau=True), "^tau must be a number", id="mara_rewards-tau-bool"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.1, tau_quantile=True), "^tau_quantile", id="mara_rewards-quantile-bool"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.1, tau_quantile="0.5"), "^tau_quantile", id="mara_rewards-quantile-string"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.1, tau_quantile=float("nan")), "^tau_quantile", id="mara_rewards-quantile-nan"),
    pytest.param(lambda: mara_rewards(R3, L3, beta="0.1", tau=0.5), "^beta must be a number", id="mara_rewards-beta-string"),
    pytest.param(lambda: T.mara_target(R3, L3, 0.1, float("inf")), "^tau must be a finite number", id="mara_target-tau-inf"),
    pytest.param(lambda: T.mass_above([0.2, 0.3, 0.5], R3, float("inf")), "^tau must be a finite number", id="mass_above-tau-inf"),
    pytest.param(lambda: T.mass_above([0.2, 0.3, 0.5], R3, -float("inf")), "^tau must be a finite number", id="mass_above-tau-neginf"),
    pytest.param(lambda: T.effective_num_modes([0.2, 0.3, 0.5], R3, float("inf")), "^tau must be a finite number", id="modes-tau-inf"),
    pytest.param(lambda: T.describe_target([0.2, 0.3, 0.5], R3, -float("inf")), "^tau must be a finite number", id="describe-tau-neginf"),
    pytest.param(lambda: T.summarize_targets([0.2, 0.3, 0.5], R3, float("inf")), "^tau must be a finite number", id="summarize-tau-inf"),
    pytest.param(lambda: T.summarize_targets([0.5, 0.5, 1.0], R3, [0.5, float("inf")], group_ids=[0, 0, 1]), "^tau must be finite", id="summarize-group-tau-inf"),
    pytest.param(lambda: T.kl_target(R3, L3, 0.1, kl="sideways"), "^kl must be one of", id="kl_target-kl"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.1, tau_quantile=1.5), "tau_quantile", id="mara_rewards-quantile-above-1"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.1, tau=0.5, kl="sideways"), "kl", id="mara_rewards-kl"),
    pytest.param(lambda: mara_rewards(np.array([0.0, np.nan, 1.0]), L3, beta=0.1, tau=0.5), "NaN", id="mara_rewards-nan-reward"),
    pytest.param(lambda: mara_rewards(R3, L3[:2], beta=0.1, tau=0.5), "shape", id="mara_rewards-shape"),
    pytest.param(lambda: mara_rewards(R3[None], L3[None], beta=0.1, tau=0.5), "1-D", id="mara_rewards-2d"),
    pytest.param(lambda: mara_rewards(R3, np.array([0.0, -np.inf, 0.0]), beta=0.1, tau=0.5), "-inf", id="mara_rewards-neginf-good"),
    pytest.param(lambda: mara_rewards(R3, np.array([0.0, np.nan, 0.0]), beta=0.1, tau=0.5), "NaN", id="mara_rewards-nan-ref"),
    pytest.param(lambda: mara_rewards(R3, L3, beta=0.1, tau=0.5, group_ids=[0, 1]), "group_ids", id="mara_rewards-group-shape"),
])
def test_core_rejects_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_core_legitimate_edge_cases():
    # Unicode group labels are labels like any other.
    out = mara_rewards(np.array([1.0, 1.0, 1.0]), np.log([0.6, 0.3, 0.1]), beta=0.5, tau=1.0, group_ids=["ä", "ä", "🙂"])
    np.testing.assert_allclose(out.rewards, [1.0, 1.0 + 0.5 * np.log(2.0), 1.0])
    # Equal rewards: no crossover; beta = 1e-300 still puts all mass on the best outcome.
    assert T.crossover_beta(1.0, 1.0, -1.0, -2.0) == float("inf")
    np.testing.assert_array_equal(T.reverse_kl_target([0.0, 1.0], [0.0, -700.0], 1e-300), [0.0, 1.0])


def test_float32_reward_equal_to_tau_counts_as_good():
    rewards = np.array([0.1, 0.7, 0.7], dtype=np.float32)
    out = mara_rewards(rewards, np.log([0.5, 0.3, 0.2]), beta=0.1, tau=0.7)
    assert out.augmented.tolist() == [False, True, True]


def test_integer_rewards_are_augmented_and_returned_as_float():
    out = mara_rewards(np.array([0, 1, 1]), np.log([0.5, 0.4, 0.1]), beta=0.5, tau=1)
    assert np.issubdtype(out.rewards.dtype, np.floating)
    np.testing.assert_allclose(out.rewards, [0.0, 1.0, 1.0 + 0.5 * np.log(4.0)])


@pytest.mark.parametrize("kind", ["numpy-float16", "torch-float16", "torch-bfloat16"])
def test_half_precision_rewards_are_computed_in_float64_and_returned_as_float32(kind):
    values = [0.0, 1.0, 1.0]
    expected = [0.0, 1.0, 1.0 + 0.001 * np.log(300.0)]  # float16 keeps only ~3 digits of it
    if kind == "numpy-float16":
        rewards = np.array(values, dtype=np.float16)
    else:
        torch = pytest.importorskip("torch")
        rewards = torch.tensor(values, dtype=getattr(torch, kind.split("-")[1]))
    out = mara_rewards(rewards, np.log([0.69, 0.3, 0.001]), beta=0.001, tau=1.0)
    assert str(out.rewards.dtype).endswith("float32")
    result = np.asarray(out.rewards.numpy() if hasattr(out.rewards, "numpy") else out.rewards)
    np.testing.assert_allclose(result, expected, rtol=1e-7)
