"""The target explorer (``mara explore``): one HTML page that recomputes the targets as you move beta.

The page's script (``targets.js``) mirrors :mod:`mara_rl.targets` for one outcome set, so the page
needs no server; the browser tests compare its numbers with the core. The presets are the paper's
didactic problems, built by :mod:`mara_rl.toy.problems`.
"""

from __future__ import annotations

import math
from typing import Sequence

from mara_rl.web import render_page

PRESET_NAMES = ("three-actions-gap", "three-actions-rare", "two-bumps", "binary-intervals")
"""The keys of :func:`presets`, in the page's order (``mara explore --preset``)."""

def _jsonable_logprobs(ref_logprobs) -> list[float | None]:
    """``-inf`` (probability 0) as ``null``: JSON has no infinities."""
    return [None if math.isinf(v) else float(v) for v in ref_logprobs]


def problem(rewards: Sequence[float], ref_logprobs: Sequence[float], *, name: str, description: str, tau: float,
            beta: float, labels: Sequence[str] | None = None) -> dict:
    """One problem of the page: rewards, reference log-probs (``-inf`` allowed), labels and the initial
    tau and beta."""
    labels = [str(i) for i in range(len(rewards))] if labels is None else [str(label) for label in labels]
    return {
        "name": name,
        "description": description,
        "rewards": [float(r) for r in rewards],
        "ref_logprobs": _jsonable_logprobs(ref_logprobs),
        "labels": labels,
        "tau": float(tau),
        "beta": float(beta),
    }


def presets() -> dict[str, dict]:
    """The paper's didactic problems (Figs. 2-5), keyed by ``PRESET_NAMES``."""
    from mara_rl.toy.problems import binary_interval_problem, three_action_examples, two_bumps_problem

    gap, rare = three_action_examples()
    bumps, intervals = two_bumps_problem(), binary_interval_problem()
    return {
        "three-actions-gap": problem(
            gap.rewards, gap.ref_logprobs, name="Three actions, R = [0, 0.9, 1], uniform reference (Fig. 3)",
            description="A reward gap of 0.1: at small beta the best action takes all the mass, under either KL.",
            tau=0.9, beta=0.01, labels=["R=0", "R=0.9", "R=1"]),
        "three-actions-rare": problem(
            rare.rewards, rare.ref_logprobs, name="Three actions, R = [0, 1, 1], reference [0.68, 0.30, 0.02] (Fig. 4)",
            description="Two correct answers 15:1 under the reference: the ratio survives every beta; MARA evens it.",
            tau=1.0, beta=0.01, labels=["wrong", "common", "rare"]),
        "two-bumps": problem(
            bumps.rewards, bumps.ref_logprobs, name="Two reward bumps, 0.75 and 1.0, exponential reference (Fig. 2)",
            description="Sweep beta: the preferred bump flips from the higher reward to the better-supported one.",
            tau=bumps.tau, beta=0.1),
        "binary-intervals": problem(
            intervals.rewards, intervals.ref_logprobs, name="Reward 1 on two intervals, exponential reference (Fig. 5)",
            description="Both intervals are equally good; vanilla keeps the reference's 12:1 preference, MARA spreads evenly.",
            tau=intervals.tau, beta=0.01),
    }


BODY = """
<header>
  <h1>Which target is my objective aiming at?</h1>
  <p>A KL-regularised RL objective fixes a target distribution; training only matches it
  (GX-Chen et al., 2025). Move beta and tau, switch the KL direction and MARA, edit the problem:
  the targets are recomputed in this page, with the same formulas as <code>mara_rl.targets</code>.</p>
</header>
<main class="explorer">
<section class="controls">
  <label>Problem <select id="preset"></select></label>
  <p id="preset-description" class="note"></p>
  <label>beta (log scale) <input id="beta-slider" type="range" min="-8" max="2" step="0.01">
    <input id="beta-input" type="text" size="10" spellcheck="false"></label>
  <label>tau <input id="tau-slider" type="range" min="0" max="1000" step="1">
    <input id="tau-input" type="text" size="10" spellcheck="false"></label>
  <fieldset><legend>KL direction</legend>
    <label><input type="radio" name="kl" value="reverse" checked> reverse KL(&pi; || &pi;_ref)</label>
    <label><input type="radio" name="kl" value="forward"> forward KL(&pi;_ref || &pi;)</label>
  </fieldset>
  <label class="inline"><input id="mara-toggle" type="checkbox" checked> MARA (uniform over R &ge; tau)</label>
  <label>Rewards <textarea id="rewards-input" rows="3" spellcheck="false"></textarea></label>
  <label>Reference as <select id="ref-mode"><option value="probs">probabilities</option>
    <option value="logprobs">log-probabilities</option></select>
    <textarea id="ref-input" rows="3" spellcheck="false"></textarea></label>
  <p id="error" class="error" role="alert"></p>
</section>
<section class="view">
  <div id="headline" class="headline"></div>
  <div id="legend"></div>
  <div id="target-chart"></div>
  <div id="reward-chart"></div>
  <p>Forward multiplier &Lambda; = <span id="lambda"></span>
    <span class="note">(root of &sum; beta &pi;<sub>ref</sub>(y)/(&Lambda; - R(y)) = 1, &Lambda; &gt; max R)</span></p>
  <table id="summary" class="numbers"><thead><tr><th>target</th><th>effective good modes</th>
    <th>mass on R &ge; tau</th><th>top good share</th><th>entropy (nats)</th><th>verdict</th></tr></thead><tbody></tbody></table>
  <details><summary>Every outcome's numbers</summary>
    <table id="numbers" class="numbers"><thead></thead><tbody></tbody></table></details>
</section>
</main>
"""


def explorer_page(problems: dict[str, dict], initial: dict) -> str:
    """The explorer's HTML. ``problems``: name -> :func:`problem`; ``initial``: ``preset`` (a key of
    ``problems``) and optionally ``beta``, ``tau``, ``kl`` and ``mara`` overriding the preset's."""
    if initial["preset"] not in problems:
        raise ValueError(f"initial preset {initial['preset']!r} is not one of {sorted(problems)}")
    return render_page("mara explore: targets of KL-regularised RL", BODY, {"presets": problems, "initial": initial},
                       ("common.js", "targets.js", "explorer.js"))
