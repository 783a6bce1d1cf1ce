"""The random_choice task family (pure Python) and the llm CLI wiring."""

import math

import pytest

from mara_rl.llm.tasks import (
    ONE_OR_TWO,
    answer_histogram,
    check_options,
    normalized_answer_entropy,
    parse_answer,
    random_choice_dataset_rows,
    random_choice_metrics,
    random_choice_prompt,
    random_choice_reward,
)


def test_prompt_lists_the_options():
    assert random_choice_prompt(ONE_OR_TWO) == (
        "Answer with one of these 2 options, chosen uniformly at random: 1, 2. Answer:"
    )
    assert "3 options" in random_choice_prompt(("a", "b", "c"))


@pytest.mark.parametrize("options", [("1",), ("1", "1"), ("1", "two words"), ("1", "")])
def test_bad_options_are_rejected(options):
    with pytest.raises(ValueError, match="option"):
        check_options(options)


def test_reward_is_one_only_for_an_exact_listed_option():
    completions = ["1", " 2 ", "3", "1 2", "", "maybe", "2"]
    options = [list(ONE_OR_TWO)] * len(completions)
    assert random_choice_reward(completions, options) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert parse_answer(" 2\n", ONE_OR_TWO) == "2"
    with pytest.raises(ValueError, match="option lists"):
        random_choice_reward(["1"], [])


def test_histogram_entropy_and_metrics():
    completions = ["1"] * 9 + ["2"] + ["x"] * 2
    hist = answer_histogram(completions, ONE_OR_TWO)
    assert hist == {"1": 9, "2": 1, "invalid": 2}
    expected = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    assert normalized_answer_entropy(hist, ONE_OR_TWO) == pytest.approx(expected)
    assert expected == pytest.approx(0.469, abs=1e-3)
    assert normalized_answer_entropy({"1": 5, "2": 5}, ONE_OR_TWO) == pytest.approx(1.0)
    assert normalized_answer_entropy({"1": 5, "2": 0}, ONE_OR_TWO) == 0.0
    assert normalized_answer_entropy({"invalid": 3}, ONE_OR_TWO) == 0.0
    m = random_choice_metrics(completions)
    assert m["reward"] == pytest.approx(10 / 12)
    assert m["histogram"] == hist


def test_dataset_rows_carry_the_options_for_the_reward():
    rows = random_choice_dataset_rows(("1", "2", "3"), num_prompts=3)
    assert len(rows) == 3 and rows[0]["options"] == ["1", "2", "3"]
    assert random_choice_reward(["3"], [rows[0]["options"]]) == [1.0]
    with pytest.raises(ValueError, match="num_prompts"):
        random_choice_dataset_rows(num_prompts=0)


def test_cli_registers_one_or_two_without_importing_torch():
    import subprocess
    import sys

    code = (
        "import sys; from mara_rl.cli import build_parser; p = build_parser(); "
        "a = p.parse_args(['llm', 'one-or-two', '--quick']); "
        "assert a.out == 'runs/one-or-two' and a.quick and a.model is None; "
        "assert 'torch' not in sys.modules and 'trl' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
