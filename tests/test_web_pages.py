"""``mara explore`` and ``mara diagnose --html``: the pages, tested in a real headless browser.

The explorer computes its targets in JavaScript; every number it shows must equal the core's
(:mod:`mara_rl.targets`) to 1e-9, at tiny beta and huge reference gaps too. The diagnose report shows
the ``--json`` record; its table must sort and filter, and its bars must carry the record's numbers.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from _browser import start_browser
from mara_rl.cli import main
from mara_rl.targets import describe_target, forward_kl_target, mara_target, reverse_kl_target
from mara_rl.toy.problems import binary_interval_problem
from mara_rl.web.explorer import PRESET_NAMES, presets

TOL = 1e-9


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def explorer_url(tmp_path_factory):
    path = tmp_path_factory.mktemp("explore") / "explorer.html"
    assert main(["explore", "--out", str(path)]) == 0
    return path.as_uri()


def _core(rewards, ref_logprobs, beta, tau, kl):
    """Everything the page shows, from the core."""
    reverse = reverse_kl_target(rewards, ref_logprobs, beta)
    forward, multiplier = forward_kl_target(rewards, ref_logprobs, beta, return_multiplier=True)
    try:
        mara = mara_target(rewards, ref_logprobs, beta, tau, kl)
    except ValueError:  # a good outcome outside the reference support: MARA is undefined
        mara = None
    targets = {"reverse": reverse, "forward": forward, "mara": mara}
    return targets, multiplier, {k: describe_target(p, rewards, tau) for k, p in targets.items() if p is not None}


def _assert_page_equals_core(page: dict, rewards, ref_logprobs, beta, tau, kl):
    targets, multiplier, summaries = _core(rewards, ref_logprobs, beta, tau, kl)
    where = f"rewards={list(rewards)} ref_logprobs={list(ref_logprobs)} beta={beta!r} tau={tau!r} kl={kl}"
    for name in ("reverse", "forward"):
        np.testing.assert_allclose(page[name], targets[name], rtol=0, atol=TOL, err_msg=f"{name}: {where}")
    assert math.isclose(page["forwardMultiplier"], multiplier, rel_tol=TOL, abs_tol=TOL), where
    if targets["mara"] is None:
        assert page["mara"] is None and "reference probability 0" in page["maraError"], where
    else:
        np.testing.assert_allclose(page["mara"], targets["mara"], rtol=0, atol=TOL, err_msg=f"mara: {where}")
    for name, summary in summaries.items():
        shown = page["summaries"][name]
        assert shown["sentence"] == summary.sentence, where
        assert shown["multimodal"] == summary.multimodal and shown["numGood"] == summary.num_good, where
        for js, py in (("effectiveGood", "effective_good"), ("massAboveTau", "mass_above_tau"), ("topGoodShare", "top_good_share"),
                       ("entropy", "entropy")):
            assert math.isclose(shown[js], getattr(summary, py), rel_tol=1e-9, abs_tol=TOL), (name, js, where)


def _random_problems(seed: int, count: int) -> list[dict]:
    """Small problems at the numeric extremes: beta down to 1e-300, reference gaps up to 1e4 nats,
    tied rewards, outcomes outside the reference support."""
    rng = np.random.default_rng(seed)
    problems = []
    for i in range(count):
        k = int(rng.integers(2, 13))
        rewards = np.round(rng.choice([1.0, 0.1, 1e3]) * rng.random(k), int(rng.integers(1, 4)))
        scale = rng.choice([1.0, 30.0, 1e4])
        ref = -scale * rng.random(k)
        ref[int(rng.integers(k))] = 0.0
        if rng.random() < 0.3:  # an impossible outcome (sometimes a good one: MARA is then undefined)
            ref[int(rng.integers(k))] = -np.inf
            if np.isneginf(ref).all():
                ref[0] = 0.0
        beta = float(rng.choice([1e-300, 5e-324 * 2**40, 1e-17, 10 ** rng.uniform(-6, 1)]))
        tau = float(np.sort(rewards)[int(rng.integers(k))])
        if i % 10 == 9:  # no outcome reaches tau
            tau = float(rewards.max()) + 0.5
        problems.append({"rewards": rewards.tolist(), "ref": [None if np.isneginf(v) else float(v) for v in ref],
                         "beta": beta, "tau": tau, "kl": "reverse" if i % 2 else "forward"})
    # The best reward outside the reference support: the forward multiplier sits at it and the
    # leftover mass goes there (and MARA is undefined: a good outcome has probability 0).
    for beta in (1e-300, 0.01, 10.0):
        problems.append({"rewards": [0.0, 1.0, 2.0, 2.0], "ref": [0.0, -1.0, None, None], "beta": beta, "tau": 1.0, "kl": "forward"})
    return problems


def _logprobs(values) -> np.ndarray:
    return np.array([-np.inf if v is None else v for v in values])


def test_page_numbers_equal_the_core_on_random_extreme_problems(browser, explorer_url):
    browser.get(explorer_url)
    problems = _random_problems(0, 80)
    pages = browser.execute_script(
        "return arguments[0].map((p) => window.maraExplorer.compute(p.rewards, p.ref, p.beta, p.tau, p.kl));", problems)
    for problem, page in zip(problems, pages):
        _assert_page_equals_core(page, problem["rewards"], _logprobs(problem["ref"]), problem["beta"], problem["tau"], problem["kl"])


def test_presets_are_the_papers_problems_and_match_the_core(browser, explorer_url):
    browser.get(explorer_url)
    assert tuple(presets()) == PRESET_NAMES
    options = browser.execute_script("return [...document.querySelectorAll('#preset option')].map((o) => o.value);")
    assert options == list(PRESET_NAMES)
    compute = "const p = arguments[0]; return window.maraExplorer.compute(p.rewards, p.ref_logprobs, p.beta, p.tau, arguments[1]);"
    for preset in presets().values():
        for kl in ("reverse", "forward"):
            page = browser.execute_script(compute, preset, kl)
            _assert_page_equals_core(page, preset["rewards"], _logprobs(preset["ref_logprobs"]), preset["beta"], preset["tau"], kl)


def test_sentences_format_numbers_as_python_does_ties_included(browser, explorer_url):
    rng = np.random.default_rng(2)
    ties = [k / 8 for k in range(-80, 80)] + [123456.5, 999999.5, 0.125, 12.25, 2.5e-7, 9999995.0]
    values = ties + list(rng.uniform(-1e3, 1e3, 200)) + list(10 ** rng.uniform(-320, 300, 200)) + [0.0, 1e-5, 5e-324]
    shares = [k / 1600 for k in range(1601)] + list(rng.random(200))
    moderate = [x for x in values if abs(x) < 1e6]  # fixed point is only used for shares and effective numbers
    browser.get(explorer_url)
    shown = browser.execute_script(
        "return [arguments[0].map(MaraTargets.formatG), arguments[1].map((x) => MaraTargets.fixed(x, 2)),"
        " arguments[2].map((x) => MaraTargets.fixed(x * 100, 1) + '%')];", values, moderate, shares)
    assert shown == [[f"{x:g}" for x in values], [f"{x:.2f}" for x in moderate], [f"{x:.1%}" for x in shares]]


def _type(element, text: str, *, enter: bool = False) -> None:
    from selenium.webdriver.common.keys import Keys

    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text + (Keys.ENTER if enter else ""))


def _dom_column(browser, table_id: str, key: str) -> list[float]:
    return [float(v) for v in browser.execute_script(
        f"return [...document.querySelectorAll('#{table_id} tbody td[data-key=\"{key}\"]')].map((td) => td.dataset.value);")]


def test_typed_problem_at_tiny_beta_and_huge_gap_shows_the_cores_numbers(browser, explorer_url):
    from selenium.webdriver.support.ui import Select

    browser.get(explorer_url)
    find = browser.find_element
    Select(find("id", "ref-mode")).select_by_value("logprobs")
    _type(find("id", "rewards-input"), "0 1 1 0.5 1")
    _type(find("id", "ref-input"), "0 -10000 -3 -inf -0.5")
    _type(find("id", "beta-input"), "1e-300", enter=True)
    _type(find("id", "tau-input"), "1", enter=True)
    assert find("id", "error").text == ""
    rewards, ref = [0.0, 1.0, 1.0, 0.5, 1.0], np.array([0.0, -1e4, -3.0, -np.inf, -0.5])
    targets, multiplier, summaries = _core(rewards, ref, 1e-300, 1.0, "reverse")
    for name in ("reverse", "forward", "mara"):
        np.testing.assert_allclose(_dom_column(browser, "numbers", name), targets[name], rtol=0, atol=TOL)
    assert math.isclose(float(find("css selector", "#lambda b").get_attribute("data-value")), multiplier, rel_tol=TOL)
    for name, summary in summaries.items():
        row = find("css selector", f'#summary tr[data-target="{name}"]')
        assert row.find_element("css selector", 'td[data-key="sentence"]').text == summary.sentence
        assert math.isclose(float(row.find_element("css selector", 'td[data-key="effective_good"]').get_attribute("data-value")),
                            summary.effective_good, rel_tol=TOL)
    assert summaries["reverse"].sentence in find("id", "headline").text
    assert summaries["mara"].sentence in find("id", "headline").text

    _type(find("id", "ref-input"), "0 -10000 -inf -3 -0.5")  # a good outcome with probability 0
    assert "reference probability 0" in find("id", "error").text
    assert not browser.find_elements("css selector", '#summary tr[data-target="mara"]')
    _type(find("id", "beta-input"), "-1", enter=True)
    assert "beta must be a finite number > 0" in find("id", "error").text


def _series(browser, name: str) -> str | None:
    return browser.execute_script(
        "const g = document.querySelector(`#target-chart g[data-series='${arguments[0]}']`); return g ? g.innerHTML : null;", name)


def _state(browser) -> dict:
    return browser.execute_script("return window.maraExplorer.state();")


def test_sliders_toggles_and_presets_change_what_is_shown(browser, explorer_url):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser.get(explorer_url)
    find = browser.find_element
    Select(find("id", "preset")).select_by_value("two-bumps")
    assert _state(browser)["rewards"] == pytest.approx(presets()["two-bumps"]["rewards"], abs=0)
    before, headline = _series(browser, "reverse"), find("id", "headline").text
    find("id", "beta-slider").send_keys(Keys.HOME)  # the slider's smallest beta
    state = _state(browser)
    assert state["beta"] == 1e-8 and find("id", "beta-input").get_attribute("value") == "1e-8"
    assert _series(browser, "reverse") != before and find("id", "headline").text != headline
    page = browser.execute_script("return window.maraExplorer.result();")
    _assert_page_equals_core(page, state["rewards"], _logprobs(state["refLogprobs"]), 1e-8, state["tau"], "reverse")
    find("id", "beta-slider").send_keys(Keys.ARROW_RIGHT)
    assert _state(browser)["beta"] == pytest.approx(10 ** -7.99, rel=1e-2)

    assert _series(browser, "mara") is not None
    find("id", "mara-toggle").click()
    assert _series(browser, "mara") is None and "with MARA" not in find("id", "headline").text
    find("id", "mara-toggle").click()
    assert _series(browser, "mara") is not None

    find("css selector", 'input[name="kl"][value="forward"]').click()
    state = _state(browser)
    assert state["kl"] == "forward" and find("id", "headline").text.startswith("forward KL")
    np.testing.assert_allclose(_dom_column(browser, "numbers", "mara"),
                               mara_target(state["rewards"], _logprobs(state["refLogprobs"]), state["beta"], state["tau"], "forward"),
                               rtol=0, atol=TOL)

    find("id", "tau-slider").send_keys(Keys.HOME)  # tau = the lowest reward: every outcome is good
    state = _state(browser)
    assert state["tau"] == min(state["rewards"])
    assert f"on the {len(state['rewards'])} good outcomes" in find("id", "headline").text

    Select(find("id", "preset")).select_by_value("binary-intervals")
    assert _state(browser)["rewards"] == binary_interval_problem().rewards.tolist()


def test_open_hands_the_pages_file_uri_to_the_web_browser(tmp_path, monkeypatch, capsys):
    import webbrowser

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda uri: opened.append(uri) or True)
    out = tmp_path / "page.html"
    assert main(["explore", "--out", str(out), "--open"]) == 0
    assert opened == [out.resolve().as_uri()]


def test_explore_writes_one_self_contained_page(tmp_path, capsys):
    out = tmp_path / "sub" / "page.html"
    assert main(["explore", "--out", str(out), "--rewards", "0", "1", "1", "--ref-probs", "0.68", "0.3", "0",
                 "--labels", "a", "b", "c", "--beta", "1e-300", "--kl", "forward", "--no-mara"]) == 0
    text = out.read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", text), "the page must not load anything"
    assert "http://" not in text and "https://" not in text
    data = json.loads(re.search(r'<script type="application/json" id="page-data">(.*?)</script>', text, re.S).group(1))
    assert data["initial"] == {"preset": "custom", "beta": 1e-300, "tau": None, "kl": "forward", "mara": False}
    assert data["presets"]["custom"]["ref_logprobs"][2] is None and data["presets"]["custom"]["labels"] == ["a", "b", "c"]
    assert f"wrote {out}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--out", "page.txt"], "--out: page.txt should end in .html"),
        (["--ref-probs", "1", "2"], "--ref-probs describes your own problem: give --rewards too"),
        (["--rewards", "0", "1"], "--rewards needs --ref-probs or --ref-logprobs"),
        (["--rewards", "0", "1", "--ref-probs", "1"], "--ref-probs: the reference needs 2 entries"),
        (["--rewards", "0", "1", "--ref-probs", "0", "0"], "--ref-probs: the reference gives probability 0 to every outcome"),
        (["--rewards", "0", "1", "--ref-probs", "1", "1", "--labels", "a"], "--labels needs one name per reward"),
        (["--beta", "0"], "argument --beta: must be > 0"),
        (["--preset", "nope"], "argument --preset: invalid choice"),
    ],
)
def test_explore_flag_mistakes_are_one_line_errors(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(["explore", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mara explore: error: ") and message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def _rollouts(num_prompts: int, seed: int, per_prompt: int = 8) -> pd.DataFrame:
    """Prompts with 2-6 answers each, rewards 0, 0.5 or 1 per answer, reference log-probs in [-12, 0];
    prompt 3 holds markup."""
    rng = np.random.default_rng(seed)
    prompt = np.repeat(np.arange(num_prompts), per_prompt)
    answer = (rng.random(prompt.size) * rng.integers(2, 7, num_prompts)[prompt]).astype(int)
    reward = rng.choice([0.0, 0.5, 1.0], (num_prompts, 6))[prompt, answer]
    ref_logprob = -rng.uniform(0, 12, (num_prompts, 6))[prompt, answer]
    texts = [f"Prompt {p}: pick a number" for p in range(num_prompts)]
    texts[3] = "Prompt 3 </script><b>bold</b> & friends"
    return pd.DataFrame({"prompt": np.array(texts, dtype=object)[prompt], "completion": [f"answer {a}" for a in answer],
                         "reward": reward, "ref_logprob": ref_logprob})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("diagnose")
    rollouts = folder / "rollouts.jsonl"
    _rollouts(40, 0).to_json(rollouts, orient="records", lines=True)
    html, record = folder / "report.html", folder / "diagnosis.json"
    assert main(["diagnose", str(rollouts), "--beta", "0.01", "1", "--tau", "1", "--html", str(html), "--json", str(record)]) == 0
    return html.as_uri(), json.loads(record.read_text())


def _shown_rows(browser) -> list[int]:
    return [int(i) for i in browser.execute_script(
        "return [...document.querySelectorAll('#prompts tbody tr')].map((tr) => tr.dataset.index);")]


def test_report_bars_equal_the_diagnosis_json(browser, report):
    url, record = report
    browser.get(url)
    result = record["results"][0]
    assert browser.find_element("id", "verdict").text == result["summary"]["verdict"]
    assert _shown_rows(browser) == list(range(len(result["prompts"])))
    for index in (0, 3, 17):
        browser.find_element("css selector", f'#prompts tbody tr[data-index="{index}"]').click()
        prompt = result["prompts"][index]
        assert browser.find_element("id", "detail-prompt").text == prompt["prompt"]
        for key in ("ref_prob", "vanilla", "mara"):
            shown = [float(v) for v in browser.execute_script(
                f"return [...document.querySelectorAll('#classes .hbar[data-key=\"{key}\"]')].map((b) => b.dataset.value);")]
            assert shown == [c[key] for c in prompt["classes"]], (index, key)  # the very same doubles
        rewards = _dom_column(browser, "classes", "reward")
        assert rewards == [c["reward"] for c in prompt["classes"]]
    assert browser.find_elements("css selector", "#prompts b") == []  # markup in a prompt is shown as text

    browser.find_element("css selector", "#beta-select option[value='1']").click()
    assert browser.find_element("id", "verdict").text == record["results"][1]["summary"]["verdict"]


def test_report_table_sorts_and_filters(browser, report):
    url, record = report
    browser.get(url)
    prompts = record["results"][0]["prompts"]
    header = browser.find_element("css selector", '#prompts th[data-key="vanilla_effective_good"]')
    header.click()
    shown = [prompts[i]["vanilla_effective_good"] for i in _shown_rows(browser)]
    assert shown == sorted(shown)
    browser.find_element("css selector", '#prompts th[data-key="vanilla_effective_good"]').click()
    shown = [prompts[i]["vanilla_effective_good"] for i in _shown_rows(browser)]
    assert shown == sorted(shown, reverse=True)

    browser.find_element("css selector", '#prompts th[data-key="ref_second_to_top"]').click()
    values = [prompts[i]["ref_second_to_top"] for i in _shown_rows(browser)]
    present = [v for v in values if v is not None]
    assert present == sorted(present) and values[len(present):] == [None] * (len(values) - len(present))  # "-" last

    browser.find_element("id", "two-good").click()
    assert sorted(_shown_rows(browser)) == [i for i, p in enumerate(prompts) if p["num_good"] >= 2]
    browser.find_element("id", "two-good").click()
    _type(browser.find_element("id", "filter"), "prompt 1")
    assert sorted(_shown_rows(browser)) == [i for i, p in enumerate(prompts) if "prompt 1" in p["prompt"].lower()]
    assert browser.find_element("id", "count").text.startswith(f"{len(_shown_rows(browser))} of {len(prompts)}")


def test_report_renders_every_prompt_of_a_thousand_prompt_file(browser, tmp_path):
    rollouts = tmp_path / "rollouts.parquet"
    _rollouts(1000, 1, per_prompt=4).to_parquet(rollouts)
    html = tmp_path / "report.html"
    assert main(["diagnose", str(rollouts), "--beta", "0.01", "--html", str(html)]) == 0
    browser.get(html.as_uri())
    assert len(_shown_rows(browser)) == 1000
    browser.find_element("css selector", '#prompts th[data-key="mara_effective_good"]').click()
    assert len(_shown_rows(browser)) == 1000


def test_diagnose_html_flag_is_checked_before_the_file_is_read(tmp_path, capsys):
    rollouts = tmp_path / "rollouts.jsonl"
    rollouts.write_text("not JSON at all\n")  # reading it would be an error of its own
    assert main(["diagnose", str(rollouts), "--beta", "1", "--html", str(tmp_path / "r.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mara diagnose: error: --html: ") and "should end in .html" in err and err.count("\n") == 1


TRAINING_KEYS = ("sampled_good_classes", "sampled_effective_good", "vanilla_effective_good", "mara_effective_good", "mean_reward")


def _values(strings) -> list[float | None]:
    return [None if s == "" else float(s) for s in strings]


def _close(shown, expected) -> bool:
    return len(shown) == len(expected) and all(
        (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, rel_tol=0, abs_tol=TOL))
        for a, b in zip(shown, expected))


def _step_values(browser) -> dict:
    return dict(browser.execute_script(
        "return [...document.querySelectorAll('#step-values td')].map((td) => [td.dataset.key, td.dataset.value]);"))


def test_record_report_draws_the_over_training_curves_with_a_step_slider(browser, tmp_path):
    from selenium.webdriver.common.keys import Keys

    from _record_helpers import random_rows, write_record

    folder = write_record(tmp_path / "rec", random_rows(21, steps=7, groups=4, size=6), ranks=2)
    html, out = tmp_path / "page.html", tmp_path / "d.json"
    assert main(["diagnose", str(folder), "--beta", "0.01", "1", "--steps", "1:7", "--html", str(html), "--json", str(out)]) == 0
    over = json.loads(out.read_text())["over_training"]
    browser.get(html.as_uri())
    for result, curve in enumerate(over):
        if result:
            browser.find_element("css selector", f"#beta-select option[value='{result}']").click()
        rows = curve["steps"]
        for key in TRAINING_KEYS:  # every drawn point carries the --json value of its step
            points = browser.execute_script(
                f"return [...document.querySelectorAll('#training-charts g[data-series=\"{key}\"] circle')].map((c) => [c.dataset.step, c.dataset.value]);")
            assert [int(s) for s, _ in points] == [r["step"] for r in rows], key
            assert _close(_values([v for _, v in points]), [r[key] for r in rows]), (result, key)
    # the slider starts at the last step; moving it moves the marker and the numbers to that step
    assert browser.find_element("id", "step-shown").text == f"step {rows[-1]['step']}"
    slider = browser.find_element("id", "step-slider")
    slider.send_keys(Keys.HOME)
    slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    chosen = rows[2]
    assert browser.find_element("id", "step-shown").text == f"step {chosen['step']}"
    assert {int(m.get_attribute("data-step")) for m in browser.find_elements("css selector", "#training-charts .step-marker")} == {chosen["step"]}
    shown = _step_values(browser)
    for key in (*TRAINING_KEYS, "rows", "groups"):
        assert _close(_values([shown[key]]), [chosen[key]]), key
    assert chosen["sampled_good_classes"] != rows[-1]["sampled_good_classes"] or chosen["mean_reward"] != rows[-1]["mean_reward"]


def test_a_rollouts_file_report_has_no_step_slider(browser, report):
    url, record = report
    browser.get(url)
    assert "over_training" not in record
    assert browser.find_elements("id", "step-slider") == [] and browser.find_elements("id", "training") == []
    assert browser.execute_script("return window.maraReport.overTraining === undefined;")
