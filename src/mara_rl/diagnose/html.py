"""``mara diagnose --html``: the diagnosis as one self-contained, browsable HTML page.

The page holds the same record as ``--json`` (:func:`mara_rl.diagnose.report.to_dict`, one per beta)
and draws it: the per-prompt table, sortable and filterable, and per prompt the answer classes with
their reward, reference probability and vanilla and MARA targets as bars. For a record folder it
also draws the ``--json`` "over_training" curves per step, with a slider that picks a step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mara_rl.diagnose.diagnosis import Diagnosis
from mara_rl.diagnose.report import _jsonable, to_dict
from mara_rl.web import render_page, write_page

BODY = """
<header>
  <h1>mara diagnose: which target does each prompt's objective aim at?</h1>
  <p>Exact targets over the answers sampled for each prompt: the vanilla KL-regularised target and
  MARA's. <span id="source" class="note"></span></p>
</header>
<main>
  <div class="toolbar">
    <label>Result <select id="beta-select"></select></label>
    <span id="config" class="note"></span>
  </div>
  <p id="verdict" class="headline"></p>
<!--training-->  <div class="toolbar">
    <label>Filter prompts <input id="filter" type="search" placeholder="text in the prompt" size="30"></label>
    <label><input id="two-good" type="checkbox"> only prompts with two or more good classes</label>
    <span id="count" class="note"></span>
    <span class="note">Click a column to sort, a prompt to see its classes.</span>
  </div>
  <div class="report-grid">
    <div class="table-wrap"><table id="prompts" class="numbers sortable"><thead></thead><tbody></tbody></table></div>
    <section id="detail"></section>
  </div>
</main>
"""

TRAINING = """
  <section id="training">
    <h2>Over training</h2>
    <p class="note">Means over the prompt groups of each step that have a good answer (as
    <code>--plot-training</code> draws them); the line marks the step the slider picks.</p>
    <div class="toolbar">
      <label>Step <input id="step-slider" type="range" min="0" max="0" step="1" value="0"></label>
      <b id="step-shown"></b>
    </div>
    <div class="detail-body"><div id="training-charts"></div><table id="step-values" class="numbers"></table></div>
  </section>
"""


def html_report(results: Sequence[Diagnosis], *, rollouts: str | None = None, over_training: list[dict] | None = None) -> str:
    """The report page for one diagnosis per beta (the same record ``--json`` writes).

    ``over_training``: for a record folder, one ``{"settings": dict, "steps": [per-step means]}`` per
    beta, in the order of ``results`` (``--json``'s "over_training"); the page then shows it by step.
    """
    if not results:
        raise ValueError("html_report needs at least one diagnosis")
    if over_training is not None and (len(over_training) != len(results) or not all(o["steps"] for o in over_training)):
        raise ValueError("html_report needs one non-empty over_training curve per diagnosis")
    data = {"rollouts": rollouts, "results": [to_dict(d) for d in results]}
    body = BODY
    if over_training is not None:
        data["over_training"] = _jsonable(over_training)
        body = BODY.replace("<!--training-->", TRAINING)
    return render_page("mara diagnose report", body, data, ("common.js", "diagnose.js"))


def write_html(
    results: Sequence[Diagnosis], path: str | Path, *, rollouts: str | None = None, over_training: list[dict] | None = None
) -> Path:
    """Write :func:`html_report` to ``path``."""
    return write_page(html_report(results, rollouts=rollouts, over_training=over_training), path)
