"""``examples/verl/run_mara_grpo.sh``: its command line composes with verl's config and builds the mode (verl env only).

The script runs with ``python`` replaced by a recorder (no GPU here): the recorded ``main_ppo``
overrides are composed with verl's own ``ppo_trainer`` config, as ``python -m verl.trainer.main_ppo``
does, and the trainer class verl selects is built from them. The recipe in ``docs/verl.md`` must
be the same command line.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import warnings
from pathlib import Path

import pytest

verl = pytest.importorskip("verl")

from hydra import compose, initialize_config_dir  # noqa: E402
from verl.trainer.ppo.reward import get_custom_reward_fn  # noqa: E402
from verl.trainer.ppo.v1 import get_trainer_cls  # noqa: E402

from mara_rl.integrations.verl import MaraSyncTrainer  # noqa: E402
from mara_rl.integrations.verl.settings import KL_IN_LOSS, KL_IN_REWARD  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "verl"
RECORDER = """#!/usr/bin/env bash
n=$(ls "$RECORD_DIR" | wc -l)
printf '%s\\n' "$@" > "$RECORD_DIR/$n"
"""


def recorded_calls(tmp_path: Path, kl: str) -> tuple[Path, list[list[str]]]:
    bin_dir, record, out = tmp_path / "bin", tmp_path / "calls", tmp_path / "out"
    bin_dir.mkdir()
    record.mkdir()
    (bin_dir / "python").write_text(RECORDER)
    (bin_dir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD_DIR": str(record)}
    subprocess.run(["bash", str(EXAMPLE / "run_mara_grpo.sh"), str(out), kl], check=True, env=env, timeout=60)
    calls = [(record / str(i)).read_text().splitlines() for i in range(len(list(record.iterdir())))]
    return out, calls


def compose_main_ppo(overrides: list[str]):
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose("ppo_trainer", overrides=overrides)


@pytest.mark.parametrize("kl", ["reverse", "forward"])
def test_script_overrides_build_the_mara_trainer(tmp_path, kl):
    out, calls = recorded_calls(tmp_path, kl)
    assert calls[0] == [str(EXAMPLE / "prepare_tiny.py"), str(out)]
    assert calls[1][:2] == ["-m", "verl.trainer.main_ppo"] and len(calls) == 2
    config = compose_main_ppo(calls[1][2:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = get_trainer_cls(config.trainer.v1.trainer_mode)(config)
    assert not [w for w in caught if "mara" in str(w.message).lower()], "the recipe triggers none of the mode's warnings"
    assert isinstance(trainer, MaraSyncTrainer)
    assert (trainer.mara.enable, trainer.mara.tau, trainer.mara.kl) == (True, 0.5, kl)
    assert trainer.mara.kl_source == (KL_IN_REWARD if kl == "reverse" else KL_IN_LOSS)
    assert trainer.mara_beta() == 0.01
    assert config.actor_rollout_ref.model.path == str(out / "model")

    score = get_custom_reward_fn(config)
    assert [score("random_choice", answer, "1,2") for answer in ("1", " 2\n", "3", "1 or 2")] == [1.0, 1.0, 0.0, 0.0]


def test_docs_recipe_is_the_scripts_command_line(tmp_path):
    out, calls = recorded_calls(tmp_path, "reverse")
    text = (ROOT / "docs" / "verl.md").read_text()
    block = re.search(r'## Recipe: the "1 or 2" task.*?```bash\n(.*?)```', text, re.S)
    assert block, "docs/verl.md has the recipe's bash block"
    lines = [shlex.split(line, comments=True) for line in block.group(1).replace("\\\n", " ").splitlines()]
    assert dict(part.split("=", 1) for part in lines[0]) == {"OUT": "runs/verl-one-or-two", "HERE": "examples/verl"}

    def resolve(tokens: list[str]) -> list[str]:
        return [t.replace("$OUT", str(out)).replace("$HERE", str(EXAMPLE)) for t in tokens]

    assert lines[1][0] == "python" and resolve(lines[1][1:]) == calls[0]
    assert lines[2][:3] == ["python", "-m", "verl.trainer.main_ppo"]
    assert resolve(lines[2][3:]) == calls[1][2:]
