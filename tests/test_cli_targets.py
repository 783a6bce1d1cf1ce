"""`mara targets`: table, JSON, figure and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mara_rl import targets as T
from mara_rl.cli import main


def test_targets_table_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "t.json", tmp_path / "t.png"
    code = main([
        "targets", "--rewards", "0", "1", "1", "--ref-probs", "0.68", "0.30", "0.02",
        "--beta", "0.001", "1", "--tau", "0.5", "--json", str(out_json), "--plot", str(out_png),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "beta = 0.001" in printed and "MARA (reverse)" in printed and "Unimodal" in printed
    data = json.loads(out_json.read_text())
    reverse = np.array(data["betas"][0]["targets"]["reverse"])
    np.testing.assert_allclose(reverse, T.reverse_kl_target([0, 1, 1], np.log([0.68, 0.30, 0.02]), 0.001))
    assert data["betas"][0]["summaries"]["mara_reverse"]["multimodal"] is True
    assert out_png.stat().st_size > 10_000


def test_targets_from_yaml_file(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("rewards: [0.0, 0.9, 1.0]\nref_logprobs: [-1.0, -1.0, -1.0]\nbetas: [0.001]\nlabels: [a, b, c]\n")
    assert main(["targets", "--file", str(spec)]) == 0
    assert "tau = 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["targets", "--rewards", "0", "1"], "ref-probs"),
        (["targets", "--rewards", "0", "1", "--ref-probs", "0.5"], "needs 2 entries"),
        (["targets", "--rewards", "0", "1", "--ref-probs", "0.5", "0.5", "--beta", "0"], "beta"),
        (["targets", "--rewards", "0", "1", "--ref-probs", "0.5", "0.5", "--tau", "2"], "tau"),
    ],
)
def test_targets_errors_are_clean(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
