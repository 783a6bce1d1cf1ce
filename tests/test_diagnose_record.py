"""``mara diagnose`` on rollout record folders: per-step summaries against ``diagnose`` per step,
windows, caching, added and rewritten shards, damaged caches, bounded reading, bad input."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _record_helpers import random_rows, write_record, write_shard  # noqa: E402

from mara_rl.cli import main  # noqa: E402
from mara_rl.diagnose.diagnosis import diagnose  # noqa: E402
from mara_rl.diagnose.record import batches, open_record, select_steps  # noqa: E402
from mara_rl.diagnose.stream import CACHE_DIR, MAX_JOBS, cache_path, summarize_steps  # noqa: E402
from mara_rl.diagnose.training import Settings, step_means  # noqa: E402


def expected_means(rows: list[dict], settings: Settings) -> pd.DataFrame:
    """Per-step means recomputed independently: ``diagnose`` on each step's rows with one prompt per
    (step, group_id), then the sampled effective number with numpy from the classes' sample shares."""
    frame = pd.DataFrame(rows)
    out = []
    for step, part in frame.groupby("step", sort=True):
        part = part.assign(prompt=part["group_id"].astype(str))
        columns = ["prompt", "completion", "reward", "ref_logprob"] + (["policy_logprob"] if "policy_logprob" in part else [])
        tau_q = None if settings.tau is not None else settings.tau_quantile
        d = diagnose(part[columns], settings.beta, kl=settings.kl, tau=settings.tau, tau_quantile=tau_q, answer_key=settings.answer_key)
        prompts, classes = d.prompts, d.classes
        good = prompts["num_good"].to_numpy() >= 1
        two = prompts["num_good"].to_numpy() >= 2
        sampled = []
        for pid in range(len(prompts)):
            share = classes.loc[(classes["prompt_id"] == pid) & classes["good"], "sample_share"].to_numpy()
            q = share / share.sum() if share.size else share
            sampled.append(np.exp(-np.sum(q * np.log(q))) if share.size else 0.0)
        sampled = np.array(sampled)
        used = part[np.isfinite(part["reward"]) & np.isfinite(part["ref_logprob"])]
        record = {
            "step": step,
            "groups": len(prompts),
            "mean_reward": float(used[used["group_id"].astype(str).isin(prompts["prompt"])]["reward"].mean()),
            "sampled_good_classes": prompts["num_good"][good].mean(),
            "sampled_effective_good": sampled[good].mean(),
            "vanilla_effective_good": prompts["vanilla_effective_good"][good].mean(),
            "mara_effective_good": prompts["mara_effective_good"][good].mean(),
            "vanilla_unimodal_share": (~prompts["vanilla_multimodal"][two]).mean() if two.any() else np.nan,
            "mara_unimodal_share": (~prompts["mara_multimodal"][two]).mean() if two.any() else np.nan,
        }
        if "policy_tv_vanilla" in prompts:
            record["policy_tv_vanilla"] = prompts["policy_tv_vanilla"].mean()
            record["policy_tv_mara"] = prompts["policy_tv_mara"].mean()
        out.append(record)
    return pd.DataFrame(out)


def compare(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert got["step"].tolist() == want["step"].tolist()
    for column in want.columns:
        np.testing.assert_allclose(got[column].to_numpy(float), want[column].to_numpy(float), rtol=1e-10, atol=1e-12, err_msg=column)


SETTINGS = [
    Settings(0.05),
    Settings(1.0, tau=0.5),
    Settings(0.3, tau_quantile=0.5),
    Settings(0.05, kl="forward"),
    Settings(0.2, answer_key=r"answer: (\d)"),
    Settings(1e-4, tau=1.0, answer_key=r"answer: (\d)"),
    Settings(1e-300, tau_quantile=0.8),
    Settings(1e-300, kl="forward", tau=0.5),
]


@pytest.mark.parametrize("deal, ranks, row_group_size", [("group", 1, None), ("group", 2, None), ("row", 3, None), ("group", 2, 7)])
def test_step_summaries_equal_diagnose_per_step(tmp_path, deal, ranks, row_group_size):
    """Whole groups per shard (dictionaries compared as stored), groups spanning shards (texts hashed
    across them), several row groups per shard: all equal diagnose run step by step."""
    rows = random_rows(1, steps=5, groups=6, size=9)
    rows[3]["reward"] = float("nan")  # skipped rows, as diagnose skips them
    rows[10]["ref_logprob"] = float("-inf")
    rows += [{**rows[0], "group_id": 17, "completion": "lonely"}]  # a group of one row: skipped
    rows[20]["ref_logprob"] = -5e3  # a log-prob gap far beyond exp's range
    rows[21]["reward"] = 1e3
    record = open_record(write_record(tmp_path / "rec", rows, ranks=ranks, deal=deal, row_group_size=row_group_size))
    results = summarize_steps(record, SETTINGS, select_steps(record), use_cache=False)
    for settings, result in zip(SETTINGS, results):
        compare(step_means(result.summaries), expected_means(rows, settings))


def test_batches_do_not_change_the_summaries(tmp_path):
    rows = random_rows(2, steps=7, groups=4, size=6)
    record = open_record(write_record(tmp_path / "rec", rows, ranks=2))
    plan = list(batches(record, record.step_numbers, rows_per_batch=30))
    assert [s for batch in plan for s in batch] == record.step_numbers and max(len(b) for b in plan) < 7
    one = summarize_steps(record, SETTINGS[:2], record.step_numbers, use_cache=False, rows_per_batch=10**9)
    many = summarize_steps(record, SETTINGS[:2], record.step_numbers, use_cache=False, rows_per_batch=1)
    for a, b in zip(one, many):
        pd.testing.assert_frame_equal(a.summaries, b.summaries)


@pytest.mark.parametrize("jobs", [1, 2, 5])
def test_threads_do_not_change_the_summaries(tmp_path, jobs):
    rows = random_rows(4, steps=9, groups=4, size=6)
    record = open_record(write_record(tmp_path / "rec", rows, ranks=2))
    steps = record.step_numbers
    one = summarize_steps(record, SETTINGS[:2], steps, use_cache=False, rows_per_batch=10**9, jobs=1)
    threaded = summarize_steps(record, SETTINGS[:2], steps, use_cache=False, rows_per_batch=1, jobs=jobs)
    for a, b in zip(one, threaded):
        pd.testing.assert_frame_equal(a.summaries, b.summaries)
        assert b.computed == len(steps)


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True, "2", np.int64(0), 33, 10**6])
def test_jobs_must_be_a_bounded_positive_integer(tmp_path, jobs):
    record = open_record(write_record(tmp_path / "rec", random_rows(0, 2, 2, 3)))
    with pytest.raises(ValueError, match="jobs must be an integer from 1 to 32"):
        summarize_steps(record, SETTINGS[:1], record.step_numbers, use_cache=False, jobs=jobs)


def test_help_states_the_cap_on_jobs(capsys):
    assert main(["diagnose", "--help"]) == 0
    assert f"at most {MAX_JOBS}:" in " ".join(capsys.readouterr().out.split())


def test_an_error_in_a_batch_stops_the_pass_names_the_shard_and_keeps_the_steps_before(tmp_path):
    from mara_rl.diagnose.stream import load_cache

    folder = write_record(tmp_path / "rec", random_rows(5, steps=6, groups=3, size=4))
    (folder / "shards" / "step-000000003-rank-00000.parquet").write_bytes(b"not parquet")
    record = open_record(folder)
    with pytest.raises(ValueError, match="step-000000003-rank-00000.parquet is not a readable Parquet file"):
        summarize_steps(record, SETTINGS[:1], record.step_numbers, rows_per_batch=1, jobs=3)
    assert sorted(load_cache(record, SETTINGS[0])[0]) == [0, 1, 2]  # summarised before the error: kept


def test_policy_logprobs_absent_give_no_distance(tmp_path):
    rows = random_rows(3, steps=2, groups=3, size=5, policy=False)
    record = open_record(write_record(tmp_path / "rec", rows))
    means = step_means(summarize_steps(record, [Settings(0.1)], record.step_numbers, use_cache=False)[0].summaries)
    assert means["policy_tv_vanilla"].isna().all()
    compare(means, expected_means(rows, Settings(0.1)))


def test_windows_and_every(tmp_path):
    record = open_record(write_record(tmp_path / "rec", random_rows(4, steps=9, groups=2, size=4)))
    assert select_steps(record) == list(range(9))
    assert select_steps(record, (2, 7)) == [2, 3, 4, 5, 6]
    assert select_steps(record, (2, 7), every=2) == [2, 4, 6]
    assert select_steps(record, (None, 3)) == [0, 1, 2]
    assert select_steps(record, (7, None), every=5) == [7]
    assert select_steps(record, (20, None)) == []


def _steps_in(json_path: Path) -> list[int]:
    return [row["step"] for row in json.loads(json_path.read_text())["over_training"][0]["steps"]]


def test_cli_window_every_json_and_table(tmp_path, capsys):
    rows = random_rows(5, steps=8, groups=3, size=6)
    folder = write_record(tmp_path / "rec", rows, ranks=2)
    out = tmp_path / "d.json"
    assert main(["diagnose", str(folder), "--steps", "2:7", "--every", "2", "--json", str(out), "--table-rows", "40", "--jobs", "3"]) == 0
    assert _steps_in(out) == [2, 4, 6]
    record = json.loads(out.read_text())
    assert record["table_steps"] == [4, 6]  # 18 rows a step: the last two selected steps fit in 40
    assert main(["diagnose", str(folder), "--steps", "2:7", "--json", str(out), "--table-rows", "40"]) == 0
    assert json.loads(out.read_text())["table_steps"] == [5, 6]
    text = capsys.readouterr().out
    assert "per-prompt diagnosis of 2 steps 5..6" in text and "policy_logprob left out" in text
    # one step: the policy's distribution is that step's, and its distance to the targets is shown
    assert main(["diagnose", str(folder), "--steps", "6:7", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pol-van TV" in text.split("per-prompt diagnosis")[1]
    prompts = json.loads(out.read_text())["results"][0]["prompts"]
    assert all(p["policy_tv_vanilla"] is not None for p in prompts)


def test_record_defaults_come_from_record_json(tmp_path, capsys):
    folder = write_record(tmp_path / "rec", random_rows(6, steps=2, groups=3, size=5), beta=0.2, kl_direction="forward", mara=True, mara_tau=0.5, mara_tau_quantile=None)
    out = tmp_path / "d.json"
    assert main(["diagnose", str(folder), "--json", str(out)]) == 0
    settings = json.loads(out.read_text())["over_training"][0]["settings"]
    assert settings == {"beta": 0.2, "kl": "forward", "tau": 0.5, "tau_quantile": None, "answer_key": None}
    assert main(["diagnose", str(folder), "--json", str(out), "--beta", "0.01", "0.1", "--kl", "reverse", "--tau-quantile", "0.9"]) == 0
    over = json.loads(out.read_text())["over_training"]
    assert [o["settings"]["beta"] for o in over] == [0.01, 0.1]
    assert over[0]["settings"]["kl"] == "reverse" and over[0]["settings"]["tau_quantile"] == 0.9


def test_cache_is_reused_and_extended_by_new_shards(tmp_path):
    rows = random_rows(7, steps=6, groups=4, size=5)
    folder = write_record(tmp_path / "rec", [r for r in rows if r["step"] < 4], ranks=2)
    settings = [Settings(0.05), Settings(0.5, tau=0.5)]
    record = open_record(folder)
    first = summarize_steps(record, settings, record.step_numbers)
    assert [r.computed for r in first] == [4, 4]
    again = summarize_steps(open_record(folder), settings, open_record(folder).step_numbers)
    assert [r.computed for r in again] == [0, 0]
    for a, b in zip(first, again):
        pd.testing.assert_frame_equal(a.summaries, b.summaries)
    # a run that goes on: new steps are read, the cached ones are not
    for step in (4, 5):
        for rank in range(2):
            write_shard(folder, step, rank, [r for r in rows if r["step"] == step and r["group_id"] % 2 == rank])
    record = open_record(folder)
    third = summarize_steps(record, settings, record.step_numbers)
    assert [r.computed for r in third] == [2, 2]
    fresh = summarize_steps(record, settings, record.step_numbers, use_cache=False)
    for settings_, result, result_fresh in zip(settings, third, fresh):
        pd.testing.assert_frame_equal(result.summaries, result_fresh.summaries)
        compare(step_means(result.summaries), expected_means(rows, settings_))


def test_only_new_or_changed_steps_are_recomputed(tmp_path):
    rows = random_rows(8, steps=5, groups=4, size=5)
    folder = write_record(tmp_path / "rec", [r for r in rows if r["group_id"] % 2 == 0 or r["step"] < 4], ranks=2)
    record = open_record(folder)
    assert summarize_steps(record, [Settings(0.05)], record.step_numbers)[0].computed == 5
    # step 4's second rank arrives late (a live view of a run still writing): only step 4 is read again
    write_shard(folder, 4, 1, [r for r in rows if r["step"] == 4 and r["group_id"] % 2 == 1])
    record = open_record(folder)
    result = summarize_steps(record, [Settings(0.05)], record.step_numbers)[0]
    assert result.computed == 1
    compare(step_means(result.summaries), expected_means(rows, Settings(0.05)))
    # a step appended
    write_shard(folder, 9, 0, [{**r, "step": 9} for r in rows if r["step"] == 0])
    record = open_record(folder)
    result = summarize_steps(record, [Settings(0.05)], record.step_numbers)[0]
    assert result.computed == 1 and result.summaries["step"].tolist() == [0, 1, 2, 3, 4, 9]
    # a shard rewritten in place (a resumed run regenerating a step) is read again
    write_shard(folder, 2, 0, [{**r, "reward": 1.0 - r["reward"]} for r in rows if r["step"] == 2 and r["group_id"] % 2 == 0])
    record = open_record(folder)
    result = summarize_steps(record, [Settings(0.05)], record.step_numbers)[0]
    assert result.computed == 1
    # a step whose shards are gone drops out of the cache
    (folder / "shards" / "step-000000009-rank-00000.parquet").unlink()
    record = open_record(folder)
    summarize_steps(record, [Settings(0.05)], record.step_numbers)
    cached = pq.read_table(cache_path(record, Settings(0.05)))
    assert cached.column("step").to_pylist() == [0, 1, 2, 3, 4]
    assert not [p for p in (folder / CACHE_DIR).iterdir() if p.suffix != ".parquet"]  # no temporary file left


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":
        i = data.index(b"PAR1") + 40  # inside the first data page
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "other settings":
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[b"mara_rl"])
        meta["settings"]["beta"] = 0.5
        pq.write_table(table.replace_schema_metadata({b"mara_rl": json.dumps(meta).encode()}), path)
    elif how == "column dropped":
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["mara_unimodal"]).replace_schema_metadata(table.schema.metadata), path)
    elif how == "not parquet":
        path.write_text("{}")


@pytest.mark.parametrize("how", ["truncated", "flipped", "empty", "other settings", "column dropped", "not parquet"])
def test_a_damaged_cache_is_rebuilt_never_trusted(tmp_path, how):
    rows = random_rows(9, steps=4, groups=3, size=5)
    record = open_record(write_record(tmp_path / "rec", rows))
    settings = [Settings(0.05)]
    fresh = summarize_steps(record, settings, record.step_numbers)[0]
    path = Path(cache_path(record, settings[0]))
    _damage(path, how)
    result = summarize_steps(record, settings, record.step_numbers)[0]
    assert result.computed == 4
    assert any("damaged" in w for w in result.warnings)
    pd.testing.assert_frame_equal(result.summaries, fresh.summaries)
    after = summarize_steps(record, settings, record.step_numbers)[0]  # rebuilt: trusted again
    assert after.computed == 0 and not after.warnings


class Counting(pafs.FileSystemHandler):
    """A pyarrow filesystem (its own extension point) over the local one that records which files
    are opened and how many bytes are read from each, and can refuse every write."""

    def __init__(self, read_only: bool = False):
        self.local = pafs.LocalFileSystem()
        self.opened: list[str] = []
        self.bytes: dict[str, int] = {}
        self.read_only = read_only

    def get_type_name(self):
        return "counting"

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def normalize_path(self, path):
        return path

    def _write(self):
        if self.read_only:
            raise PermissionError("read-only storage")

    def create_dir(self, path, recursive):
        self._write()
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self._write()
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self._write()
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise PermissionError("no")

    def delete_file(self, path):
        self._write()
        self.local.delete_file(path)

    def move(self, src, dest):
        self._write()
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self._write()
        self.local.copy_file(src, dest)

    def _counted(self, path):
        self.opened.append(path)
        handler = self

        class File:
            def __init__(self):
                self.raw = open(path, "rb")
                self.closed = False

            def read(self, n=-1):
                data = self.raw.read(n)
                handler.bytes[path] = handler.bytes.get(path, 0) + len(data)
                return data

            def seek(self, offset, whence=0):
                return self.raw.seek(offset, whence)

            def tell(self):
                return self.raw.tell()

            def close(self):
                self.closed = True
                self.raw.close()

            def seekable(self):
                return True

            def readable(self):
                return True

            def writable(self):
                return False

            @property
            def mode(self):
                return "rb"

            @property
            def size(self):
                return os.path.getsize(path)

        return pa.PythonFile(File(), mode="r")

    def open_input_stream(self, path):
        return self._counted(path)

    def open_input_file(self, path):
        return self._counted(path)

    def open_output_stream(self, path, metadata):
        self._write()
        return self.local.open_output_stream(path)

    def open_append_stream(self, path, metadata):
        self._write()
        return self.local.open_append_stream(path)


def test_only_the_selected_shards_and_needed_columns_are_read(tmp_path):
    rows = random_rows(10, steps=6, groups=3, size=5)
    for r in rows:  # a large column the over-training view never needs
        r["prompt"] = r["prompt"] + " " + "x" * 20_000 + str(r["step"] * 100 + r["group_id"])
    folder = write_record(tmp_path / "rec", rows, ranks=2)
    handler = Counting()
    record = open_record(str(folder), filesystem=pafs.PyFileSystem(handler))
    result = summarize_steps(record, [Settings(0.05)], select_steps(record, (2, 5)), use_cache=False)[0]
    shards = sorted({Path(p).name for p in handler.opened if "/shards/" in p})
    assert shards == [f"step-{s:09d}-rank-{r:05d}.parquet" for s in (2, 3, 4) for r in (0, 1)]
    prompt_bytes = sum(len(r["prompt"]) for r in rows if r["step"] == 2)
    read = sum(n for p, n in handler.bytes.items() if "step-000000002" in p)
    assert read < prompt_bytes / 5, (read, prompt_bytes)  # the prompt column was not read
    compare(step_means(result.summaries), expected_means([r for r in rows if 2 <= r["step"] < 5], Settings(0.05)))
    # with the cache written, a re-run opens no shard at all
    summarize_steps(record, [Settings(0.05)], select_steps(record))
    handler.opened.clear()
    assert summarize_steps(record, [Settings(0.05)], select_steps(record))[0].computed == 0
    assert not [p for p in handler.opened if "/shards/" in p]


def test_read_only_storage_works_without_the_cache(tmp_path):
    folder = write_record(tmp_path / "rec", random_rows(11, steps=3, groups=3, size=4))
    record = open_record(str(folder), filesystem=pafs.PyFileSystem(Counting(read_only=True)))
    result = summarize_steps(record, [Settings(0.05)], record.step_numbers)[0]
    assert result.computed == 3 and any("could not write the summary cache" in w for w in result.warnings)
    assert not (folder / CACHE_DIR).exists()


def test_a_uri_is_read_through_pyarrow_filesystems(tmp_path, capsys):
    folder = write_record(tmp_path / "rec", random_rows(12, steps=3, groups=3, size=4))
    assert main(["diagnose", folder.as_uri(), "--max-rows", "2"]) == 0
    assert "3 steps recorded (0..2)" in capsys.readouterr().out


def test_cli_plot_training_writes_a_figure(tmp_path, capsys):
    folder = write_record(tmp_path / "rec", random_rows(13, steps=12, groups=4, size=8))
    png = tmp_path / "figs" / "training.png"
    assert main(["diagnose", str(folder), "--beta", "0.01", "1", "--plot-training", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _bad_shard(tmp_path: Path, change) -> Path:
    folder = write_record(tmp_path / "rec", random_rows(14, steps=2, groups=3, size=4))
    path = folder / "shards" / "step-000000001-rank-00000.parquet"
    table = pq.read_table(path)
    pq.write_table(change(table), path)
    return folder


def _set(name, values):
    return lambda t: t.set_column(t.schema.get_field_index(name), name, values(t))


RECORD_ERRORS = [
    ("no record.json", lambda t: (write_record(t / "rec", random_rows(0, 1, 2, 3)) / "record.json").unlink() or t / "rec", [], "is a directory without record.json"),
    ("other schema", lambda t: write_record(t / "rec", random_rows(0, 1, 2, 3), schema="other/9"), [], "is not 'mara-rl.record/1'"),
    ("record.json broken", lambda t: (write_record(t / "rec", random_rows(0, 1, 2, 3)) / "record.json").write_text("{") and t / "rec", [], "record.json is not valid JSON"),
    ("no shards", lambda t: write_record(t / "rec", []), [], "has no shards yet"),
    ("beta 0 without --beta", lambda t: write_record(t / "rec", random_rows(0, 1, 2, 3), beta=0.0), [], "--beta is required"),
    ("steps reversed", lambda t: write_record(t / "rec", random_rows(0, 1, 2, 3)), ["--steps", "5:2"], "STOP must be greater than START"),
    ("steps text", lambda t: write_record(t / "rec", random_rows(0, 1, 2, 3)), ["--steps", "a:b"], "--steps must be START:STOP"),
    ("steps empty", lambda t: write_record(t / "rec", random_rows(0, 2, 2, 3)), ["--steps", "7:9"], "selects no recorded step; the record holds steps 0..1"),
    ("every zero", lambda t: write_record(t / "rec", random_rows(0, 1, 2, 3)), ["--every", "0"], "argument --every: must be >= 1"),
    ("table-rows zero", lambda t: write_record(t / "rec", random_rows(0, 1, 2, 3)), ["--table-rows", "0"], "argument --table-rows: must be >= 1"),
    ("jobs zero", lambda t: write_record(t / "rec", random_rows(0, 1, 2, 3)), ["--jobs", "0"], "argument --jobs: must be >= 1"),
    ("jobs huge", lambda t: write_record(t / "rec", random_rows(0, 1, 2, 3)), ["--jobs", "100000"], "argument --jobs: must be <= 32"),
    ("plot-training extension", lambda t: write_record(t / "rec", random_rows(0, 1, 2, 3)), [lambda t: "--plot-training", lambda t: str(t / "x.txt")], "--plot-training"),
    ("bool ref_logprob", lambda t: _bad_shard(t, _set("ref_logprob", lambda t: pa.array([True] * len(t)))), [], "column 'ref_logprob' must hold numbers, but its type is bool"),
    ("timestamp reward", lambda t: _bad_shard(t, _set("reward", lambda t: pa.array([1_580_000_000_000_000] * len(t), pa.timestamp("us")))), [], "column 'reward' must hold numbers"),
    ("text group_id", lambda t: _bad_shard(t, _set("group_id", lambda t: pa.array(["a"] * len(t)))), [], "column 'group_id' must hold integers"),
    ("missing completion", lambda t: _bad_shard(t, lambda tab: tab.drop_columns(["completion"])), [], "has no column(s) completion"),
    ("step disagrees", lambda t: _bad_shard(t, _set("step", lambda t: pa.array([7] * len(t), pa.int64()))), [], "holds rows of step 7..7"),
    ("shard cut", lambda t: _cut_shard(t), [], "step-000000001-rank-00000.parquet is not a readable Parquet file"),
]


def _cut_shard(tmp_path: Path) -> Path:
    folder = write_record(tmp_path / "rec", random_rows(14, steps=2, groups=3, size=4))
    path = folder / "shards" / "step-000000001-rank-00000.parquet"
    path.write_bytes(path.read_bytes()[:-30])
    return folder


@pytest.mark.parametrize("make, flags, message", [c[1:] for c in RECORD_ERRORS], ids=[c[0] for c in RECORD_ERRORS])
def test_record_bad_input_is_one_error_line(tmp_path, capsys, make, flags, message):
    folder = make(tmp_path)
    argv = ["diagnose", str(folder)] + [f(tmp_path) if callable(f) else f for f in flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mara diagnose: error:"), err
    assert message in err[0], err[0]


@pytest.mark.parametrize("flag", [["--steps", "1:2"], ["--every", "2"], ["--plot-training", "x.png"], ["--no-cache"], ["--table-rows", "5"], ["--jobs", "2"]])
def test_record_flags_on_a_file_are_an_error(tmp_path, capsys, flag):
    path = tmp_path / "r.jsonl"
    pd.DataFrame(random_rows(0, 1, 2, 3)).to_json(path, orient="records", lines=True)
    assert main(["diagnose", str(path), "--beta", "0.1", *flag]) == 2
    assert "applies to a rollout record folder" in capsys.readouterr().err


def _parquet(tmp_path: Path, **columns) -> Path:
    base = {"prompt": ["p"] * 4, "completion": ["a", "b", "a", "c"], "reward": [1.0, 1.0, 0.0, 1.0], "ref_logprob": [-1.0, -2.0, -1.0, -3.0]}
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({**base, **columns}), path)
    return path


@pytest.mark.parametrize(
    "columns, message",
    [
        ({"ref_logprob": [True, False, True, False]}, "column 'ref_logprob' must hold numbers, but it holds booleans"),
        ({"policy_logprob": [True, False, True, False]}, "column 'policy_logprob' must hold numbers, but it holds booleans"),
        ({"reward": pa.array([1_580_000_000_000_000] * 4, pa.timestamp("us"))}, "column 'reward' must hold numbers, but it holds dates or durations"),
        ({"reward": pa.array([10**6] * 4, pa.duration("us"))}, "column 'reward' must hold numbers, but it holds dates or durations"),
    ],
)
def test_files_with_boolean_or_date_columns_are_one_line_errors(tmp_path, capsys, columns, message):
    assert main(["diagnose", str(_parquet(tmp_path, **columns)), "--beta", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_json_booleans_among_numbers_are_an_error(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    lines = [{"prompt": "p", "completion": c, "reward": r, "ref_logprob": -1.0} for c, r in (("a", 1.0), ("b", True))]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    assert main(["diagnose", str(path), "--beta", "0.1"]) == 2
    assert "column 'reward' must hold numbers; row 1 has True" in capsys.readouterr().err


def test_file_table_shows_the_policy_distance_to_the_targets(tmp_path, capsys):
    path = _parquet(tmp_path, policy_logprob=[-0.5, -3.0, -0.5, -1.0])
    out = tmp_path / "d.json"
    assert main(["diagnose", str(path), "--beta", "0.1", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("prompt"))
    row = lines[lines.index(header) + 2].split()
    prompt = json.loads(out.read_text())["results"][0]["prompts"][0]
    assert header.split()[-4:] == ["pol-van", "TV", "pol-MARA", "TV"]
    assert row[-2:] == [f"{prompt['policy_tv_vanilla']:.3g}", f"{prompt['policy_tv_mara']:.3g}"]


def test_large_group_ids_are_labels(tmp_path):
    rows = random_rows(15, steps=3, groups=4, size=5)
    big = [{**r, "group_id": r["group_id"] * 2**40 + 7} for r in rows]
    record = open_record(write_record(tmp_path / "rec", big))
    means = step_means(summarize_steps(record, [Settings(0.05)], record.step_numbers, use_cache=False)[0].summaries)
    compare(means, expected_means(rows, Settings(0.05)))


RECORDED_SWEEP = Path(__file__).parent.parent / "results" / "llm" / "one-or-two-record" / "records"


@pytest.mark.parametrize("method", ["vanilla", "mara"])
def test_a_recorded_one_or_two_run_aims_at_the_reference_ratio_or_at_one_to_one(tmp_path, method):
    """The committed "1 or 2" records: two good answers with equal reward, so the vanilla target keeps
    the reference's ratio (Prop. 4.1) and MARA's is 1:1, whatever the policy did."""
    out = tmp_path / "diagnosis.json"
    record = RECORDED_SWEEP / f"beta0.01-reverse-{method}-seed0"
    assert main(["diagnose", str(record), "--no-cache", "--json", str(out)]) == 0
    (prompt,) = json.loads(out.read_text())["results"][0]["prompts"]
    assert prompt["num_good"] == 2
    assert 0.08 < prompt["ref_second_to_top"] < 0.14  # the tiny reference answers about 90/10
    assert prompt["vanilla_second_to_top"] == pytest.approx(prompt["ref_second_to_top"], rel=1e-9)
    assert prompt["mara_second_to_top"] == pytest.approx(1.0, rel=1e-9)
