"""``mara diagnose``: answer classes and per-prompt targets reproduce the core's closed forms."""

from __future__ import annotations

import gzip
import io
import json
import math
import sys
import unicodedata

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from mara_rl.cli import main
from mara_rl.diagnose.classes import answer_classes
from mara_rl.diagnose.diagnosis import diagnose
from mara_rl.diagnose.reading import read_rollouts
from mara_rl.targets import MULTIMODAL_MIN_EFFECTIVE
from mara_rl.diagnose.report import format_table, to_dict
from mara_rl.targets import crossover_beta, describe_target, forward_kl_target, kl_target, mara_target


def known_rollouts() -> pd.DataFrame:
    """Two prompts whose classes and reference masses are known by construction.

    Prompt "p": answer "1" written two ways (log-probs -1 and -2, the first sampled three times),
    answer "2" (-3, sampled twice), and an invalid answer (-0.5, reward 0).
    Prompt "q": answers "7" (-0.2) and "8" (-2.5), both good, and "9" with reward 0.5.
    """
    rows = [
        ("p", "answer: 1", 1.0, -1.0),
        ("p", "answer: 1", 1.0, -1.0),
        ("p", "so answer: 1", 1.0, -2.0),
        ("p", "answer: 1", 1.0, -1.0),
        ("p", "answer: 2", 1.0, -3.0),
        ("p", "answer: 2", 1.0, -3.0),
        ("p", "pass", 0.0, -0.5),
        ("q", "answer: 7", 1.0, -0.2),
        ("q", "answer: 8", 1.0, -2.5),
        ("q", "answer: 9", 0.5, -4.0),
    ]
    return pd.DataFrame(rows, columns=["prompt", "completion", "reward", "ref_logprob"])


EXPECTED = {  # prompt -> answer -> (reward, log reference mass of the class)
    "p": {"1": (1.0, float(np.logaddexp(-1.0, -2.0))), "2": (1.0, -3.0), "pass": (0.0, -0.5)},
    "q": {"7": (1.0, -0.2), "8": (1.0, -2.5), "9": (0.5, -4.0)},
}


def test_classes_deduplicate_and_sum_distinct_members():
    classes = answer_classes(known_rollouts(), answer_key=r"answer: (\d)").classes
    for prompt, answers in EXPECTED.items():
        frame = classes[classes["prompt"] == prompt].set_index("answer")
        assert set(frame.index) == set(answers)
        for answer, (reward, logmass) in answers.items():
            assert frame.loc[answer, "reward"] == reward
            assert frame.loc[answer, "ref_logmass"] == pytest.approx(logmass, abs=1e-15)
    p = classes[classes["prompt"] == "p"].set_index("answer")
    assert p.loc["1", "num_samples"] == 4 and p.loc["1", "num_distinct"] == 2
    assert p.loc["2", "num_samples"] == 2 and p.loc["2", "num_distinct"] == 1
    assert list(p["sample_share"]) == pytest.approx([1 / 7, 4 / 7, 2 / 7])  # sorted by reference mass


@pytest.mark.parametrize("kl", ["reverse", "forward"])
@pytest.mark.parametrize("beta", [1e-3, 0.1, 1.0, 10.0])
def test_targets_equal_the_core_closed_forms(kl, beta):
    result = diagnose(known_rollouts(), beta, kl=kl, tau=0.9, answer_key=r"answer: (\d)")
    for prompt, answers in EXPECTED.items():
        names = list(answers)
        rewards = np.array([answers[a][0] for a in names])
        ref = np.array([answers[a][1] for a in names])
        frame = result.classes[result.classes["prompt"] == prompt].set_index("answer").loc[names]
        np.testing.assert_allclose(frame["vanilla"], kl_target(rewards, ref, beta, kl), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(frame["mara"], mara_target(rewards, ref, beta, 0.9, kl), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(frame["ref_prob"], np.exp(ref - logsumexp(ref)), rtol=1e-12)

        row = result.prompts.set_index("prompt").loc[prompt]
        for name, probs in (("vanilla", frame["vanilla"]), ("mara", frame["mara"])):
            summary = describe_target(probs.to_numpy(), rewards, 0.9)
            assert row[f"{name}_effective_good"] == pytest.approx(summary.effective_good, rel=1e-12)
            assert row[f"{name}_top_good"] == pytest.approx(summary.top_good_share * summary.mass_above_tau, rel=1e-12)
            assert row[f"{name}_mass_above_tau"] == pytest.approx(summary.mass_above_tau, rel=1e-12)
            assert row[f"{name}_multimodal"] == summary.multimodal
        assert row["num_good"] == 2


def test_equal_rewards_keep_the_reference_ratio_and_mara_splits_evenly():
    """Prop. 4.1: with equal rewards the vanilla ratio is the reference ratio at every beta."""
    for beta in (1e-4, 1e-2, 1.0, 100.0):
        result = diagnose(known_rollouts(), beta, tau=1.0, answer_key=r"answer: (\d)")
        rows = result.prompts.set_index("prompt")
        ratio_p = math.exp(-3.0 - float(np.logaddexp(-1.0, -2.0)))
        assert rows.loc["p", "ref_second_to_top"] == pytest.approx(ratio_p, rel=1e-12)
        assert rows.loc["p", "vanilla_second_to_top"] == pytest.approx(ratio_p, rel=1e-9)
        assert rows.loc["p", "mara_second_to_top"] == pytest.approx(1.0, rel=1e-9)
        assert rows.loc["p", "mara_effective_good"] == pytest.approx(2.0, rel=1e-9)
        assert rows.loc["p", "beta_half"] == math.inf  # equal rewards: no beta changes the ratio


def test_beta_half_is_the_crossover_of_the_two_best_good_classes():
    # "a" has the higher reward, "b" the higher reference mass: at small beta "a" leads, and "b"
    # reaches half of it at the beta where log G(b)/G(a) = -log 2 (Remark 4.4).
    rollouts = pd.DataFrame(
        [("r", "a", 1.0, -2.0), ("r", "b", 0.5, -0.1), ("r", "c", 0.0, -1.0)],
        columns=["prompt", "completion", "reward", "ref_logprob"],
    )
    result = diagnose(rollouts, 0.05, tau=0.4)
    row = result.prompts.iloc[0]
    expected = crossover_beta(0.5, 1.0, -0.1, -2.0, target_log_ratio=-math.log(2.0))
    assert expected == pytest.approx(0.5 / (1.9 + math.log(2.0)), rel=1e-12)
    assert row["beta_half"] == pytest.approx(expected, rel=1e-12)
    at_crossover = diagnose(rollouts, expected, tau=0.4).prompts.iloc[0]
    assert at_crossover["vanilla_second_to_top"] == pytest.approx(0.5, rel=1e-9)


@st.composite
def random_rollouts(draw):
    """Prompts with 1-4 classes of 1-3 distinct completions each, sampled 1-3 times."""
    rows, expected = [], {}
    for p in range(draw(st.integers(1, 4))):
        prompt = f"prompt {p}"
        expected[prompt] = {}
        for c in range(draw(st.integers(2, 4))):
            reward = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
            logprobs = draw(st.lists(st.floats(-30, 0), min_size=1, max_size=3, unique=True))
            for k, lp in enumerate(logprobs):
                for _ in range(draw(st.integers(1, 3))):
                    rows.append((prompt, f"#{c} variant {k}", reward, lp))
            expected[prompt][str(c)] = (reward, float(logsumexp(logprobs)))
    order = draw(st.permutations(range(len(rows))))
    frame = pd.DataFrame([rows[i] for i in order], columns=["prompt", "completion", "reward", "ref_logprob"])
    return frame, expected


@settings(max_examples=40, deadline=None)
@given(data=random_rollouts(), beta=st.sampled_from([1e-3, 0.05, 1.0]), kl=st.sampled_from(["reverse", "forward"]))
def test_random_rollouts_match_per_prompt_core_calls(data, beta, kl):
    frame, expected = data
    result = diagnose(frame, beta, kl=kl, tau_quantile=0.5, answer_key=r"#(\d+) ")
    for prompt, answers in expected.items():
        names = list(answers)
        rewards = np.array([answers[a][0] for a in names])
        ref = np.array([answers[a][1] for a in names])
        tau = float(np.quantile(frame.loc[frame["prompt"] == prompt, "reward"], 0.5))
        got = result.classes[result.classes["prompt"] == prompt].set_index("answer").loc[names]
        np.testing.assert_allclose(got["ref_logmass"], ref, rtol=1e-12, atol=1e-12)
        assert np.all(got["tau"] == tau)
        np.testing.assert_allclose(got["vanilla"], kl_target(rewards, ref, beta, kl), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got["mara"], mara_target(rewards, ref, beta, tau, kl), rtol=1e-9, atol=1e-12)


def test_default_tau_is_the_best_observed_reward():
    result = diagnose(known_rollouts(), 0.1, answer_key=r"answer: (\d)")
    taus = result.prompts.set_index("prompt")["tau"]
    assert taus["p"] == 1.0 and taus["q"] == 1.0


def test_policy_logprobs_give_a_policy_distribution_over_classes():
    rollouts = known_rollouts().assign(policy_logprob=np.linspace(-3, -0.1, 10))
    classes = diagnose(rollouts, 0.1).classes
    sums = classes.groupby("prompt")["policy_prob"].sum()
    np.testing.assert_allclose(sums, 1.0, rtol=1e-12)


def test_policy_at_the_mara_target_has_zero_distance_to_it():
    """A policy whose class masses equal MARA's target is 0 away from it and > 0 from vanilla."""
    rollouts = known_rollouts()
    target = diagnose(rollouts, 0.1, tau=1.0, answer_key=r"answer: (\d)")
    mara = target.classes.set_index(["prompt", "answer"])["mara"]
    # Give each class's mass to its first distinct completion, none to the others.
    keys = rollouts["completion"].str.extract(r"answer: (\d)")[0].fillna(rollouts["completion"])
    first = ~pd.DataFrame({"p": rollouts["prompt"], "k": keys}).duplicated()
    is_rep = rollouts["completion"].isin(rollouts.loc[first, "completion"])
    mass = np.array([mara[(p, k)] for p, k in zip(rollouts["prompt"], keys)])
    rollouts["policy_logprob"] = np.where(is_rep, np.log(mass), -800.0)
    rows = diagnose(rollouts, 0.1, tau=1.0, answer_key=r"answer: (\d)").prompts
    np.testing.assert_allclose(rows["policy_tv_mara"], 0.0, atol=1e-12)
    assert (rows["policy_tv_vanilla"] > 0.2).all()


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="missing column.*ref_logprob"):
        diagnose(known_rollouts().drop(columns="ref_logprob"), 0.1)


def test_non_numeric_values_are_rejected():
    rollouts = known_rollouts().astype({"reward": object})
    rollouts.loc[2, "reward"] = "high"
    with pytest.raises(ValueError, match="'reward' must hold numbers; row 2"):
        diagnose(rollouts, 0.1)


@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan")])
def test_beta_must_be_positive(beta):
    with pytest.raises(ValueError, match="beta"):
        diagnose(known_rollouts(), beta)


def test_non_finite_rows_and_single_row_prompts_are_skipped_with_warnings():
    rollouts = pd.concat(
        [
            known_rollouts(),
            pd.DataFrame(
                [
                    ("p", "answer: 3", 1.0, float("nan")),
                    ("p", "answer: 4", float("inf"), -1.0),
                    ("lonely", "answer: 1", 1.0, -1.0),
                ],
                columns=["prompt", "completion", "reward", "ref_logprob"],
            ),
        ]
    )
    result = diagnose(rollouts, 0.1, answer_key=r"answer: (\d)")
    assert set(result.prompts["prompt"]) == {"p", "q"}
    text = "\n".join(result.warnings)
    assert "'p': skipped 1 row(s) with non-finite ref_logprob" in text
    assert "'p': skipped 1 row(s) with non-finite reward" in text
    assert "'lonely': skipped, only one usable completion" in text
    # Same targets as without the unusable rows.
    clean = diagnose(known_rollouts(), 0.1, answer_key=r"answer: (\d)")
    np.testing.assert_allclose(result.classes["vanilla"], clean.classes["vanilla"], rtol=1e-15)


def test_no_usable_prompt_is_an_error():
    lonely = pd.DataFrame([("a", "x", 1.0, -1.0), ("b", "y", 1.0, float("-inf"))], columns=["prompt", "completion", "reward", "ref_logprob"])
    with pytest.raises(ValueError, match="no prompt has two or more usable completions"):
        diagnose(lonely, 0.1)


def test_mixed_rewards_in_a_class_use_the_mean_and_warn():
    rollouts = known_rollouts()
    rollouts.loc[rollouts["completion"] == "so answer: 1", "reward"] = 0.0
    result = diagnose(rollouts, 0.1, answer_key=r"answer: (\d)")
    p = result.classes[result.classes["prompt"] == "p"].set_index("answer")
    assert p.loc["1", "reward"] == pytest.approx(3 / 4)
    assert any("rewards from 0 to 1; using their mean" in w for w in result.warnings)


@pytest.mark.parametrize("pattern, message", [("answer: (\\d", "not a valid regular expression"), ("answer", "capturing group")])
def test_bad_answer_key(pattern, message):
    with pytest.raises(ValueError, match=message):
        diagnose(known_rollouts(), 0.1, answer_key=pattern)


@pytest.mark.parametrize("pattern", [r"answer: (?P<n>\d)", r"(?:so )?answer: (\d)(?P<rest>.*)", r"answer: (?P<a>\d)(?P<b>.*)"])
def test_the_first_group_is_the_key_named_or_not(pattern):
    reference = answer_classes(known_rollouts(), answer_key=r"answer: (\d)").classes
    classes = answer_classes(known_rollouts(), answer_key=pattern).classes
    pd.testing.assert_frame_equal(classes, reference)


@pytest.mark.parametrize("prompt, shown", [
    ("a\x00b", "a\\x00b"),
    ("\x1b[31mred\x07", "\\x1b[31mred\\x07"),
    ("tab\tand\r\nnewline", "tab and newline"),
    ("C1 \x9b control", "C1 \\x9b control"),
    ("zero\u200dwidth joiner 🙂", "zero\u200dwidth joiner 🙂"),
])
def test_table_escapes_control_characters_of_prompts(prompt, shown):
    frame = known_rollouts().replace({"prompt": {"q": prompt}})
    table = format_table(diagnose(frame, 0.1, answer_key=r"answer: (\d)"))
    assert shown in table
    assert not any(unicodedata.category(c) == "Cc" for c in table.replace("\n", ""))


def test_unmatched_completions_keep_their_text_as_class():
    classes = answer_classes(known_rollouts(), answer_key=r"answer: (\d)").classes
    assert "pass" in set(classes["answer"])


def test_json_has_no_nan_and_the_table_marks_missing_values():
    result = diagnose(known_rollouts(), 0.1, tau=1.0, answer_key=r"answer: (\d)")
    record = to_dict(result)
    text = json.dumps(record, allow_nan=False)
    assert '"beta_half": "inf"' in text
    assert len(record["prompts"][0]["classes"]) == 3
    table = format_table(result)
    assert "none" in table and "nan" not in table.lower()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_read_rollouts_formats(tmp_path, suffix):
    frame = known_rollouts()
    frame.loc[6, "completion"] = "NA"  # text, not a missing value
    path = tmp_path / f"rollouts{suffix}"
    if suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    read = read_rollouts(path)
    assert list(read["completion"]) == list(frame["completion"])
    np.testing.assert_array_equal(read["ref_logprob"], frame["ref_logprob"])


def test_read_rollouts_rejects_unknown_formats(tmp_path):
    path = tmp_path / "rollouts.txt"
    path.write_text("x")
    with pytest.raises(ValueError, match="unknown format"):
        read_rollouts(path)


def test_cli_writes_json_and_plot(tmp_path, capsys):
    path = tmp_path / "rollouts.jsonl"
    known_rollouts().to_json(path, orient="records", lines=True)
    out_json, out_png = tmp_path / "d.json", tmp_path / "d.png"
    code = main(["diagnose", str(path), "--beta", "0.01", "1", "--answer-key", r"answer: (\d)", "--json", str(out_json), "--plot", str(out_png)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "unimodal by construction on" in printed and "MARA:" in printed
    record = json.loads(out_json.read_text())
    assert [r["config"]["beta"] for r in record["results"]] == [0.01, 1.0]
    assert out_png.stat().st_size > 0


@pytest.mark.parametrize("with_json", [False, True])
def test_cli_says_where_the_rows_and_warnings_left_out_are(tmp_path, capsys, with_json):
    frame = known_rollouts()
    frame.loc[1, "ref_logprob"] = -3.0  # copies of one completion disagree: one warning
    argv = ["diagnose", _jsonl(tmp_path, frame=frame), "--beta", "0.1", "--max-rows", "1", "--max-warnings", "0"]
    json_path = tmp_path / "d.json"
    assert main(argv + (["--json", str(json_path)] if with_json else [])) == 0
    captured = capsys.readouterr()
    if with_json:
        assert f"... 1 more prompt(s) in {json_path}" in captured.out
        assert f"... 1 more in {json_path}" in captured.err
    else:
        assert "... 1 more prompt(s) (--max-rows N shows more; --json PATH writes them all)" in captured.out
        assert "... 1 more (--max-warnings N shows more; --json PATH writes them all)" in captured.err
        assert "JSON output" not in captured.out + captured.err


def _jsonl(tmp_path, name="rollouts.jsonl", frame=None) -> str:
    path = tmp_path / name
    (known_rollouts() if frame is None else frame).to_json(path, orient="records", lines=True)
    return str(path)


def _bytes(name: str, data: bytes):
    def make(tmp_path) -> str:
        path = tmp_path / name
        path.write_bytes(data)
        return str(path)

    return make


def _gz_jsonl_bytes() -> bytes:
    return gzip.compress(known_rollouts().to_json(orient="records", lines=True).encode() * 50)


def _csv_bytes() -> bytes:
    return known_rollouts().to_csv(index=False).encode()


def _parquet_bytes() -> bytes:
    buffer = io.BytesIO()
    known_rollouts().to_parquet(buffer)
    return buffer.getvalue()


def _flip_byte(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0xFF
    return bytes(out)


def _jsonl_lines(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


GOOD_LINE = '{"prompt": "p", "completion": "a", "reward": 1.0, "ref_logprob": -1.0}'


def _good_file(tmp_path) -> str:
    return _jsonl(tmp_path)


def _file_under_a_file(name: str):
    def make(tmp_path) -> str:
        (tmp_path / "plain").write_text("x")
        return str(tmp_path / "plain" / name)

    return make


# (case, rollouts file maker, extra flags (callables get tmp_path), expected substring of the error)
BAD_INPUTS = [
    ("missing file", lambda t: str(t / "absent.jsonl"), [], "does not exist"),
    ("directory", lambda t: str(t), [], "is a directory"),
    ("unknown extension", _bytes("rollouts.txt", b"x"), [], "unknown format '.txt'"),
    ("no extension", _bytes("rollouts", b"x"), [], "unknown format '(no extension)'"),
    ("gz of unknown format", _bytes("rollouts.txt.gz", gzip.compress(b"x")), [], "unknown format"),
    ("empty jsonl", _bytes("e.jsonl", b""), [], "is empty"),
    ("blank jsonl", _bytes("e.jsonl", b"\n \n\n"), [], "is empty"),
    ("empty csv", _bytes("e.csv", b""), [], "is empty"),
    ("empty parquet", _bytes("e.parquet", b""), [], "is empty"),
    ("empty gzip member", _bytes("e.jsonl.gz", gzip.compress(b"")), [], "is empty"),
    ("zero-byte gz", _bytes("e.jsonl.gz", b""), [], "is empty"),
    ("truncated jsonl.gz", _bytes("t.jsonl.gz", _gz_jsonl_bytes()[:-20]), [], "truncated gzip stream"),
    ("truncated csv.gz", _bytes("t.csv.gz", gzip.compress(_csv_bytes())[:-9]), [], "truncated gzip stream"),
    ("fake jsonl.gz", _bytes("f.jsonl.gz", _jsonl_lines(GOOD_LINE)), [], "not a valid gzip file"),
    ("corrupt gzip crc", _bytes("c.jsonl.gz", _flip_byte(_gz_jsonl_bytes(), -6)), [], "not a valid gzip file"),
    ("broken json line", _bytes("b.jsonl", _jsonl_lines(GOOD_LINE, GOOD_LINE, '{"prompt": "p",', GOOD_LINE)), [], "line 3 is not valid JSON"),
    ("jsonl cut mid-line", _bytes("b.jsonl", _jsonl_lines(GOOD_LINE, GOOD_LINE)[:-30]), [], "line 2 is not valid JSON"),
    ("json array line", _bytes("b.jsonl", _jsonl_lines(GOOD_LINE, "[1, 2]")), [], "line 2 is not a JSON object"),
    ("json array file", _bytes("b.json", b"[" + GOOD_LINE.encode() + b"]"), [], "line 1 is not a JSON object"),
    ("invalid utf-8", _bytes("b.jsonl", _jsonl_lines(GOOD_LINE).replace(b'"a"', b'"\xff"')), [], "line 1 is not valid JSON"),
    ("truncated parquet", _bytes("t.parquet", _parquet_bytes()[:200]), [], "not a valid Parquet file"),
    ("text as parquet", _bytes("t.parquet", _csv_bytes()), [], "not a valid Parquet file"),
    ("csv short row", _bytes("s.csv", _csv_bytes() + b"p,answer: 1\n"), [], "Row #12: Expected 4 columns, got 2"),
    ("csv long row", _bytes("s.csv", _csv_bytes() + b"p,a,1,-1,9\n"), [], "Expected 4 columns, got 5"),
    ("csv header only", _bytes("h.csv", b"prompt,completion,reward,ref_logprob\n"), [], "has no rows"),
    ("missing column", lambda t: _jsonl(t, frame=known_rollouts().drop(columns="ref_logprob")), [], "missing column(s) ref_logprob"),
    ("text reward", _bytes("r.jsonl", _jsonl_lines(GOOD_LINE, GOOD_LINE.replace('"reward": 1.0', '"reward": "high"'))), [], "'reward' must hold numbers; row 1"),
    ("null prompt", _bytes("r.jsonl", _jsonl_lines(GOOD_LINE, GOOD_LINE.replace('"p"', "null"))), [], "'prompt' is missing a value"),
    ("no usable prompt", _bytes("r.jsonl", _jsonl_lines(GOOD_LINE)), [], "no prompt has two or more usable completions"),
    ("beta zero", _good_file, ["--beta", "0"], "argument --beta: must be > 0"),
    ("beta negative", _good_file, ["--beta", "1", "-1"], "argument --beta: must be > 0"),
    ("beta nan", _good_file, ["--beta", "nan"], "argument --beta: must be a finite number"),
    ("beta inf", _good_file, ["--beta", "inf"], "argument --beta: must be a finite number"),
    ("beta text", _good_file, ["--beta", "small"], "argument --beta: expected a number"),
    ("beta missing", _good_file, None, "the following arguments are required: --beta"),
    ("tau nan", _good_file, ["--tau", "nan"], "argument --tau: must be a finite number"),
    ("tau -inf", _good_file, ["--tau=-inf"], "argument --tau: must be a finite number"),
    ("tau-quantile above 1", _good_file, ["--tau-quantile", "1.5"], "argument --tau-quantile: must lie in [0, 1]"),
    ("tau-quantile below 0", _good_file, ["--tau-quantile=-0.1"], "argument --tau-quantile: must lie in [0, 1]"),
    ("tau-quantile nan", _good_file, ["--tau-quantile", "nan"], "argument --tau-quantile: must be a finite number"),
    ("tau and tau-quantile", _good_file, ["--tau", "1", "--tau-quantile", "0.5"], "not allowed with argument"),
    ("kl unknown", _good_file, ["--kl", "sideways"], "argument --kl: invalid choice"),
    ("answer-key invalid", _good_file, ["--answer-key", "answer: (\\d"], "is not a valid regular expression"),
    ("answer-key no group", _good_file, ["--answer-key", "answer"], "must contain a capturing group"),
    ("json is a directory", _good_file, [lambda t: "--json", lambda t: str(t)], "--json: "),
    ("json under a file", _good_file, [lambda t: "--json", _file_under_a_file("d.json")], "is not a directory"),
    ("plot under a file", _good_file, [lambda t: "--plot", _file_under_a_file("d.png")], "is not a directory"),
    ("plot not a figure", _good_file, [lambda t: "--plot", lambda t: str(t / "d.txt")], "has the unsupported extension .txt"),
    ("plot no extension", _good_file, [lambda t: "--plot", lambda t: str(t / "d")], "has no extension"),
    ("plot-prompts negative", _good_file, ["--plot-prompts", "-1"], "argument --plot-prompts: must be >= 0"),
    ("plot-prompts zero with plot", _good_file, [lambda t: "--plot", lambda t: str(t / "d.png"), "--plot-prompts", "0"], "nothing to draw"),
    ("max-rows negative", _good_file, ["--max-rows", "-2"], "argument --max-rows: must be >= 0"),
    ("max-warnings text", _good_file, ["--max-warnings", "some"], "argument --max-warnings: expected an integer"),
]


@pytest.mark.parametrize("make_file, flags, message", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_cli_bad_input_is_one_error_line(tmp_path, capsys, make_file, flags, message):
    path = make_file(tmp_path)
    argv = ["diagnose", path]
    if flags is not None:
        argv += [f(tmp_path) if callable(f) else f for f in flags]
        argv += [] if "--beta" in flags else ["--beta", "0.1"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("mara diagnose: error:"), lines[0]
    assert message in lines[0]
    assert captured.out == ""  # failed before printing anything


def test_flags_are_checked_before_the_file_is_read(tmp_path, capsys):
    broken = tmp_path / "t.jsonl.gz"
    broken.write_bytes(_gz_jsonl_bytes()[:-20])
    for flags, message in (
        (["--answer-key", "("], "regular expression"),
        (["--json", str(tmp_path)], "--json"),
        (["--plot", str(tmp_path)], "--plot"),
    ):
        assert main(["diagnose", str(broken), "--beta", "0.1", *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and "gzip" not in err


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".csv.gz", ".json"])
def test_compressed_and_json_files_read_whole(tmp_path, suffix):
    frame = pd.concat([known_rollouts()] * 300, ignore_index=True)
    path = tmp_path / f"rollouts{suffix}"
    if suffix.startswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    read = read_rollouts(path)
    assert len(read) == len(frame)
    assert list(read["completion"]) == list(frame["completion"])
    np.testing.assert_array_equal(read["ref_logprob"], frame["ref_logprob"])


GZ_ROLLOUTS = _gz_jsonl_bytes()
PLAIN_ROLLOUTS = known_rollouts().to_json(orient="records", lines=True).encode()


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, len(GZ_ROLLOUTS) - 1))
def test_any_cut_of_a_gzip_file_is_an_error(tmp_path_factory, cut):
    path = tmp_path_factory.mktemp("cut") / "rollouts.jsonl.gz"
    path.write_bytes(GZ_ROLLOUTS[:cut])
    with pytest.raises(ValueError, match="is empty|truncated gzip stream|not a valid gzip file"):
        read_rollouts(path)


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(1, len(PLAIN_ROLLOUTS)))
def test_a_cut_json_lines_file_is_read_only_up_to_complete_lines(tmp_path_factory, cut):
    """Cut inside a line: an error naming that line. Cut at a line's end: the complete lines."""
    path = tmp_path_factory.mktemp("cut") / "rollouts.jsonl"
    data = PLAIN_ROLLOUTS[:cut]
    path.write_bytes(data)
    lines = data.split(b"\n")
    if lines[-1] == b"" or lines[-1].endswith(b"}"):
        read = read_rollouts(path)
        assert len(read) == sum(1 for line in lines if line)
        pd.testing.assert_frame_equal(read, read_rollouts_from(PLAIN_ROLLOUTS, tmp_path_factory).head(len(read)))
    else:
        with pytest.raises(ValueError, match=f"line {len(lines)} is not valid JSON"):
            read_rollouts(path)


def read_rollouts_from(data: bytes, tmp_path_factory) -> pd.DataFrame:
    path = tmp_path_factory.mktemp("whole") / "rollouts.jsonl"
    path.write_bytes(data)
    return read_rollouts(path)


def test_reading_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    path = _jsonl(tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import fails as if not installed
    with pytest.raises(ValueError, match=r"reading rollouts needs pyarrow; install it with: pip install"):
        read_rollouts(path)


def test_json_columns_of_mixed_types_are_judged_per_value(tmp_path):
    """Numbers written as text and integer prompts are read like pandas reads them."""
    lines = [GOOD_LINE, GOOD_LINE.replace('"reward": 1.0', '"reward": "0.5"'), GOOD_LINE.replace('"p"', "7"), GOOD_LINE.replace('"p"', "7")]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(_jsonl_lines(*lines))
    read = read_rollouts(path)
    assert list(read["reward"]) == [1.0, 0.5, 1.0, 1.0]
    assert list(read["prompt"]) == ["p", "p", "7", "7"]


def test_repeated_completions_with_different_logprobs_warn(tmp_path, capsys):
    rollouts = known_rollouts()
    rollouts.loc[1, "ref_logprob"] = -1.25  # a copy of row 0 ("answer: 1", -1.0)
    rollouts.loc[5, "ref_logprob"] = -3.0 * (1 + 1e-7)  # within tolerance of row 4
    rollouts = pd.concat([rollouts, rollouts.iloc[[7]].assign(ref_logprob=-0.2 - 0.5)], ignore_index=True)
    warnings = answer_classes(rollouts).warnings
    assert len(warnings) == 1
    assert warnings[0].startswith("2 repeated completion(s) have ref_logprob values that differ by more than 1e-06")
    assert "the largest difference is 0.5 nats" in warnings[0] and "'answer: 7'" in warnings[0]
    # The class mass uses the mean of the copies.
    p = answer_classes(rollouts).classes.set_index(["prompt", "answer"])
    assert p.loc[("p", "answer: 1"), "ref_logmass"] == pytest.approx(np.mean([-1.0, -1.25, -1.0]), rel=1e-12)
    assert answer_classes(known_rollouts()).warnings == []

    path = _jsonl(tmp_path, frame=rollouts)
    assert main(["diagnose", path, "--beta", "0.1"]) == 0
    assert "2 repeated completion(s) have ref_logprob values" in capsys.readouterr().err


def test_policy_logprob_copies_are_checked_too():
    rollouts = known_rollouts().assign(policy_logprob=-1.0)
    rollouts.loc[3, "policy_logprob"] = -2.0
    (warning,) = answer_classes(rollouts).warnings
    assert warning.startswith("1 repeated completion(s) have policy_logprob values") and "1 nats" in warning


@pytest.mark.parametrize("beta", [1e-3, 0.05, 1.0])
def test_forward_kl_with_log_prob_gaps_beyond_exp_range(beta):
    """Gaps of 775-5000 nats between answers (long completions) give the core's exact target."""
    rollouts = pd.DataFrame(
        [
            ("long", "a", 1.0, -10.0),
            ("long", "b", 1.0, -785.0),
            ("long", "c", 0.0, -2.0),
            ("longer", "x", 1.0, -5000.0),
            ("longer", "y", 0.0, -3.0),
            ("longer", "z", 0.5, -900.0),
        ],
        columns=["prompt", "completion", "reward", "ref_logprob"],
    )
    result = diagnose(rollouts, beta, kl="forward", tau=1.0)
    for prompt, frame in rollouts.groupby("prompt"):
        got = result.classes[result.classes["prompt"] == prompt].set_index("answer").loc[frame["completion"]]
        expected = forward_kl_target(frame["reward"].to_numpy(), frame["ref_logprob"].to_numpy(), beta)
        np.testing.assert_allclose(got["vanilla"], expected, rtol=1e-9, atol=1e-300)
        assert got["vanilla"].sum() == pytest.approx(1.0, rel=1e-12)
        assert np.isfinite(got["mara"]).all() and got["mara"].sum() == pytest.approx(1.0, rel=1e-12)
    assert result.prompts["vanilla_effective_good"].notna().all()


def test_classes_are_reused_across_betas_with_their_own_answer_key():
    groups = answer_classes(known_rollouts(), answer_key=r"answer: (\d)")
    assert diagnose(groups, 0.1).config["answer_key"] == r"answer: (\d)"
    with pytest.raises(ValueError, match="differs from the one the classes were built with"):
        diagnose(groups, 0.1, answer_key=r"(\d)")


def test_float32_rewards_equal_to_tau_are_good_as_in_training(tmp_path):
    """A float32 reward column (what torch pipelines write) counts 0.9 as reaching tau = 0.9, like mara_rewards."""
    path = tmp_path / "f32.parquet"
    pd.DataFrame(
        {
            "prompt": ["p"] * 3,
            "completion": ["a", "b", "c"],
            "reward": np.float32([0.9, 0.9, 0.1]),
            "ref_logprob": [-1.0, -2.0, -0.5],
        }
    ).to_parquet(path)
    result = diagnose(read_rollouts(path), beta=0.1, tau=0.9)
    assert result.prompts["num_good"].tolist() == [2]


def _example_output(text: str) -> list[str]:
    """The lines of the first fenced block that starts with the `mara diagnose` example's output."""
    start = text.index("256 completions, 4 prompts")
    return text[start : text.index("```", start)].strip().splitlines()


def test_the_documented_example_output_is_consistent_with_what_the_code_prints():
    """The example's numbers vary between builds of the tiny model; its invariants and format do not."""
    from pathlib import Path

    from mara_rl.diagnose.report import _TABLE

    root = Path(__file__).resolve().parents[1]
    docs = _example_output((root / "docs" / "diagnose.md").read_text(encoding="utf-8"))
    readme = [line for line in _example_output((root / "README.md").read_text(encoding="utf-8")) if line != "..."]
    assert all(line in docs for line in readme)  # the README quotes the docs' run
    header = " ".join(t.rjust(w) if i else t.ljust(w) for i, (t, _, w) in enumerate(_TABLE))
    assert docs.count(header) == 2
    rows = [line[29:].split() for line in docs if line.startswith("Answer with")]
    assert len(rows) == 8
    for _, _, good, _, ref, _, van, van_eff, _, mara, mara_eff, half in rows:
        assert van == ref and mara == "1" and mara_eff == good and half == "none"
    for beta, block in (("0.001", rows[:4]), ("1", rows[4:])):
        share = round(100 * sum(float(r[7]) < MULTIMODAL_MIN_EFFECTIVE for r in block) / len(block))
        assert f"unimodal by construction on {share}% of prompts at beta={beta} (reverse KL); MARA: 0%" in "\n".join(docs)


@pytest.mark.parametrize("kl", ["reverse", "forward"])
def test_second_to_top_ratios_keep_their_digits_below_the_normal_floats(kl):
    # Equal rewards: the vanilla target keeps the reference ratio e^-714 ~ 1e-310 between the two good
    # answers, whose target probabilities (~1e-10 and ~1e-320) reach float64's subnormal range.
    rows = [("p", "answer: 1", 1.0, -23.0), ("p", "answer: 2", 1.0, -737.0), ("p", "pass", 0.0, -1e-10)]
    rollouts = pd.DataFrame(rows, columns=["prompt", "completion", "reward", "ref_logprob"])
    row = diagnose(rollouts, 100.0, kl=kl, tau=1.0, answer_key=r"answer: (\d)").prompts.iloc[0]
    assert row["ref_second_to_top"] == pytest.approx(math.exp(-714.0), rel=1e-12, abs=0.0)
    assert row["vanilla_second_to_top"] == pytest.approx(math.exp(-714.0), rel=1e-12, abs=0.0)
    assert row["mara_second_to_top"] == pytest.approx(1.0, rel=1e-12)
