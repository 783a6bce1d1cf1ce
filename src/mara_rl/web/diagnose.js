"use strict";
// The diagnose report: per-prompt table (sortable, filterable) and, per prompt, its answer classes
// with reward, reference probability and the vanilla and MARA targets as bars. The numbers are
// those of `mara diagnose --json`, embedded by the Python side; nothing is recomputed here. For a
// record folder, also its over-training curves (the --json "over_training") with a step slider.
(() => {
  const $ = (id) => document.getElementById(id);
  const { rollouts, results, over_training: overTraining } = MaraPage.data();
  const COLUMNS = [
    ["prompt", "prompt"], ["num_rows", "rows"], ["num_classes", "classes"], ["num_good", "good"], ["tau", "tau"],
    ["ref_second_to_top", "ref 2/1"], ["vanilla_top_good", "van top"], ["vanilla_second_to_top", "van 2/1"],
    ["vanilla_effective_good", "van eff"], ["vanilla_multimodal", "van multi"], ["mara_top_good", "MARA top"],
    ["mara_second_to_top", "MARA 2/1"], ["mara_effective_good", "MARA eff"], ["mara_multimodal", "MARA multi"],
    ["beta_half", "beta_1/2"], ["policy_tv_vanilla", "policy TV van"], ["policy_tv_mara", "policy TV MARA"],
  ];
  const BARS = [["ref_prob", "reference", "#9a9a9a"], ["vanilla", "vanilla target", "#d62728"], ["mara", "MARA target", "#1f5fbf"],
    ["policy_prob", "policy", "#2ca02c"]];
  const CURVES = [["sampled_good_classes", "policy: distinct good classes sampled", "#777", "3 3"],
    ["sampled_effective_good", "policy: exp(entropy) of its good samples", "#111"],
    ["vanilla_effective_good", "vanilla target: effective good classes", "#d62728"],
    ["mara_effective_good", "MARA target: effective good classes", "#1f5fbf"]];
  const REWARD = [["mean_reward", "mean reward", "#2ca02c"]];
  const view = { result: 0, sortKey: null, descending: false, filter: "", twoGood: false, selected: null, step: null };

  const current = () => results[view.result];
  const columns = () => COLUMNS.filter(([key]) => key in (current().prompts[0] || {}));

  // One line, shortened in the middle: prompts often differ only at the end (like report._middle).
  function oneLine(text, width) {
    const flat = String(text).split(/\s+/).filter(Boolean).join(" ");
    if (flat.length <= width) return flat;
    const head = Math.floor((width - 1) / 2);
    return `${flat.slice(0, head)}\u2026${flat.slice(flat.length - (width - 1 - head))}`;
  }

  function cell(key, value) {
    if (key === "prompt") return `<td data-key="prompt" title="${MaraPage.escapeHtml(value)}">${MaraPage.escapeHtml(oneLine(value, 48))}</td>`;
    if (typeof value === "boolean") return `<td data-key="${key}" data-value="${value}" class="${value ? "yes" : "no"}">${value ? "yes" : "no"}</td>`;
    return `<td data-key="${key}" ${MaraPage.valueAttr(value)}>${MaraPage.short(MaraPage.number(value))}</td>`;
  }

  // Sort order: numbers ascending with "-" (null) last either way; text by locale.
  function compare(a, b) {
    const x = MaraPage.number(a), y = MaraPage.number(b);
    if (x === null || y === null) return x === null ? (y === null ? 0 : 1) : -1;
    if (typeof x === "string") return x.localeCompare(y);
    return x < y ? -1 : x > y ? 1 : 0;
  }

  function shownIndices() {
    const prompts = current().prompts;
    const needle = view.filter.toLowerCase();
    let shown = prompts.map((_, i) => i).filter((i) =>
      (!needle || prompts[i].prompt.toLowerCase().includes(needle)) && (!view.twoGood || prompts[i].num_good >= 2));
    if (view.sortKey) {
      const key = view.sortKey, sign = view.descending ? -1 : 1;
      shown = shown.sort((i, j) => {
        const a = prompts[i][key], b = prompts[j][key];
        if (a === null || b === null) return compare(a, b) || i - j; // "-" stays last in both directions
        return sign * compare(a, b) || i - j;
      });
    }
    return shown;
  }

  function renderTable() {
    const prompts = current().prompts;
    const cols = columns();
    const descriptions = current().columns || {};
    $("prompts").tHead.innerHTML = `<tr>${cols.map(([key, title]) => {
      const sort = key === view.sortKey ? ` aria-sort="${view.descending ? "descending" : "ascending"}"` : "";
      return `<th data-key="${key}" title="${MaraPage.escapeHtml(descriptions[key] || "")}"${sort}>${title}</th>`;
    }).join("")}</tr>`;
    const shown = shownIndices();
    $("prompts").tBodies[0].innerHTML = shown.map((i) =>
      `<tr data-index="${i}"${i === view.selected ? ' class="selected"' : ""}>${cols.map(([key]) => cell(key, prompts[i][key])).join("")}</tr>`).join("");
    $("count").textContent = `${shown.length} of ${prompts.length} prompts`;
  }

  function renderDetail() {
    const prompt = view.selected === null ? null : current().prompts[view.selected];
    if (!prompt) {
      $("detail").innerHTML = '<p class="note">Click a prompt to see its answer classes.</p>';
      return;
    }
    const classes = prompt.classes || [];
    const bars = BARS.filter(([key]) => classes.length && key in classes[0]);
    const series = bars.map(([key, label, color]) => ({ name: key, label, color, values: classes.map((c) => c[key]) }));
    const labels = classes.map((c) => oneLine(c.answer, 10) || "''");
    const chart = classes.length <= 12
      ? MaraPage.legend(series) + MaraPage.chart(series, labels, { width: 520, height: 220, yMax: 1, marks: classes.flatMap((c, i) => (c.good ? [i] : [])) })
      : "";
    const rows = classes.map((c, i) => `<tr data-class="${i}"><td data-key="answer" title="${MaraPage.escapeHtml(c.answer)}">${MaraPage.escapeHtml(oneLine(c.answer, 30) || "''")}</td>` +
      `<td data-key="reward" ${MaraPage.valueAttr(c.reward)}>${MaraPage.short(c.reward)}</td>` +
      `<td data-key="good" class="${c.good ? "yes" : "no"}">${c.good ? "yes" : "no"}</td><td data-key="num_samples">${c.num_samples}</td>` +
      bars.map(([key, , color]) => `<td>${MaraPage.bar(c[key], color, key)}</td>`).join("") + "</tr>").join("");
    $("detail").innerHTML = `<h3>Prompt ${view.selected + 1}</h3><div class="prompt-text" id="detail-prompt">${MaraPage.escapeHtml(prompt.prompt)}</div>` +
      `<p>tau = ${MaraPage.short(prompt.tau)}; ${prompt.num_good} good of ${prompt.num_classes} classes (shaded)</p>` +
      `<div class="detail-body"><div>${chart}</div><table id="classes" class="numbers"><thead><tr><th>answer</th><th>reward</th><th>good</th><th>samples</th>` +
      `${bars.map(([, label]) => `<th>${label}</th>`).join("")}</tr></thead><tbody>${rows}</tbody></table></div>`;
  }

  // The over-training view of the current beta: curves per step, a marker and the numbers at view.step.
  function renderTraining() {
    if (!overTraining) return;
    const rows = overTraining[view.result].steps;
    const steps = rows.map((r) => r.step);
    const series = (specs) => specs.map(([name, label, color, dash]) => ({ name, label, color, dash, values: rows.map((r) => r[name]) }));
    const at = view.step;
    $("training-charts").innerHTML = MaraPage.legend(series(CURVES)) + MaraPage.lineChart(series(CURVES), steps, { marker: at }) +
      MaraPage.legend(series(REWARD)) + MaraPage.lineChart(series(REWARD), steps, { height: 140, marker: at });
    const row = rows[at];
    $("step-shown").textContent = `step ${row.step}`;
    $("step-values").innerHTML = [...CURVES, ...REWARD, ["rows", "completions"], ["groups", "prompt groups"]].map(([key, label]) =>
      `<tr><th>${label}</th><td data-key="${key}" ${MaraPage.valueAttr(row[key])}>${MaraPage.short(row[key])}</td></tr>`).join("");
  }

  function renderAll() {
    const r = current();
    $("verdict").textContent = r.summary.verdict;
    $("config").textContent = `beta = ${r.config.beta}, ${r.config.kl} KL, ` +
      (r.config.tau !== null ? `tau = ${r.config.tau}` : `tau = per-prompt quantile ${r.config.tau_quantile} of the rewards`) +
      (r.config.answer_key ? `, answer key ${r.config.answer_key}` : ", classes = exact completions");
    renderTable();
    renderDetail();
    renderTraining();
  }

  $("source").textContent = rollouts || "";
  $("beta-select").innerHTML = results.map((r, i) => `<option value="${i}">beta = ${r.config.beta}</option>`).join("");
  $("beta-select").disabled = results.length < 2;
  $("beta-select").addEventListener("change", () => { view.result = Number($("beta-select").value); renderAll(); });
  $("filter").addEventListener("input", () => { view.filter = $("filter").value; renderTable(); });
  $("two-good").addEventListener("change", () => { view.twoGood = $("two-good").checked; renderTable(); });
  $("prompts").tHead.addEventListener("click", (event) => {
    const th = event.target.closest("th");
    if (!th) return;
    view.descending = view.sortKey === th.dataset.key ? !view.descending : false;
    view.sortKey = th.dataset.key;
    renderTable();
  });
  $("prompts").tBodies[0].addEventListener("click", (event) => {
    const tr = event.target.closest("tr");
    if (!tr) return;
    view.selected = Number(tr.dataset.index);
    renderTable();
    renderDetail();
  });

  if (overTraining) {
    const slider = $("step-slider");
    slider.max = String(overTraining[0].steps.length - 1);
    slider.value = slider.max;
    view.step = Number(slider.max);
    slider.addEventListener("input", () => { view.step = Number(slider.value); renderTraining(); });
  }
  if (current().prompts.length) view.selected = 0;
  renderAll();
  window.maraReport = { shown: shownIndices, firstRenderMs: performance.now(), view, overTraining };
})();
