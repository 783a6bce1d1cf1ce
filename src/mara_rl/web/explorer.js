"use strict";
// The explorer page: state, controls and drawing. Numbers come from MaraTargets (targets.js).
(() => {
  const $ = (id) => document.getElementById(id);
  const { presets, initial } = MaraPage.data();
  const COLORS = { reference: "#9a9a9a", reverse: "#d62728", forward: "#ff8c1a", mara: "#1f5fbf" };
  const state = { rewards: [], refLogprobs: [], labels: [], beta: 0.01, tau: 1, kl: "reverse", mara: true, refMode: "probs" };
  let result = null;

  // Lists typed by a person: numbers separated by spaces or commas; "-inf" allowed for log-probs.
  function parseList(text, what, allowMinusInf) {
    const parts = text.split(/[\s,;]+/).filter(Boolean);
    if (parts.length === 0) throw new Error(`${what}: give at least one number`);
    return parts.map((part, i) => {
      const value = /^-inf(inity)?$/i.test(part) && allowMinusInf ? -Infinity : Number(part);
      if (Number.isNaN(value) || value === Infinity || (value === -Infinity && !allowMinusInf)) {
        throw new Error(`${what}: entry ${i + 1} (${part}) is not a finite number`);
      }
      return value;
    });
  }

  const refText = () => (state.refMode === "probs"
    ? state.refLogprobs.map((l) => String(Number(Math.exp(l).toPrecision(6)))).join(" ")
    : state.refLogprobs.map((l) => (l === -Infinity ? "-inf" : String(l))).join(" "));

  // The texts as the page last wrote them (six significant digits): while a box still holds its
  // text, the exact values behind it are kept.
  let shownRefText = null;
  let shownRewardsText = null;

  function showRef() {
    shownRefText = refText();
    $("ref-input").value = shownRefText;
  }

  function showRewards() {
    shownRewardsText = state.rewards.map((r) => String(Number(r.toPrecision(6)))).join(" ");
    $("rewards-input").value = shownRewardsText;
  }

  function setError(message) {
    $("error").textContent = message || "";
  }

  function syncBeta() {
    $("beta-input").value = String(state.beta);
    $("beta-slider").value = String(Math.min(Math.max(Math.log10(state.beta), -8), 2));
  }

  function rewardRange() {
    return [Math.min(...state.rewards), Math.max(...state.rewards)];
  }

  function syncTau() {
    $("tau-input").value = String(state.tau);
    const [lo, hi] = rewardRange();
    $("tau-slider").value = hi > lo ? String(Math.round((1000 * (state.tau - lo)) / (hi - lo))) : "1000";
  }

  function loadPreset(name) {
    const p = presets[name];
    state.rewards = p.rewards.slice();
    state.refLogprobs = p.ref_logprobs.map((l) => (l === null ? -Infinity : l));
    state.labels = p.labels.slice();
    state.tau = p.tau;
    state.beta = p.beta;
    $("preset").value = name;
    $("preset-description").textContent = p.description;
    showRewards();
    showRef();
    syncBeta();
    syncTau();
  }

  const labelsFor = (k) => (state.labels.length === k ? state.labels : Array.from({ length: k }, (_, i) => String(i)));

  function rewardChart(labels) {
    const width = 720, height = 110, left = 58, right = 8, top = 8, bottom = 18;
    const [lo0, hi0] = rewardRange();
    const lo = Math.min(lo0, state.tau), hi = Math.max(hi0, state.tau, lo + 1e-12);
    const slot = (width - left - right) / labels.length;
    const y = (v) => top + (height - top - bottom) * (1 - (v - lo) / (hi - lo));
    const points = state.rewards.flatMap((r, i) => [`${left + slot * i},${y(r)}`, `${left + slot * (i + 1)},${y(r)}`]).join(" ");
    return `<svg class="chart" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}">` +
      `<text class="tick" x="${left - 4}" y="${y(hi) + 4}" text-anchor="end">${MaraPage.short(hi)}</text>` +
      `<text class="tick" x="${left - 4}" y="${y(lo) + 4}" text-anchor="end">${MaraPage.short(lo)}</text>` +
      `<polyline fill="none" stroke="#333" stroke-width="1.5" points="${points}"/>` +
      `<line id="tau-line" stroke="#1f5fbf" stroke-dasharray="4 3" x1="${left}" x2="${width - right}" y1="${y(state.tau)}" y2="${y(state.tau)}"/>` +
      `<text class="tick" x="${width - right - 4}" y="${y(state.tau) + (y(state.tau) < height / 2 ? 13 : -4)}" text-anchor="end">reward (line), tau = ${MaraPage.short(state.tau)} (dashed)</text></svg>`;
  }

  function render() {
    try {
      result = MaraTargets.compute(state.rewards, state.refLogprobs, state.beta, state.tau, state.kl);
    } catch (err) {
      result = null;
      setError(err.message);
      return;
    }
    setError(result.maraError ? `MARA: ${result.maraError}` : "");
    const k = state.rewards.length;
    const labels = labelsFor(k);
    const reference = MaraTargets.reference(state.refLogprobs);
    const chosen = state.kl;
    const series = [
      { name: "reference", label: "reference \u03c0_ref", color: COLORS.reference, values: reference, width: 1.5 },
      { name: "reverse", label: "reverse-KL target", color: COLORS.reverse, values: result.reverse, width: chosen === "reverse" ? 3 : 1.5 },
      { name: "forward", label: "forward-KL target", color: COLORS.forward, values: result.forward, width: chosen === "forward" ? 3 : 1.5 },
    ];
    if (state.mara && result.mara) series.push({ name: "mara", label: `MARA target (${chosen} KL)`, color: COLORS.mara, values: result.mara, width: 3 });
    const good = state.rewards.flatMap((r, i) => (r >= state.tau ? [i] : []));
    $("legend").innerHTML = MaraPage.legend(series);
    $("target-chart").innerHTML = MaraPage.chart(series, labels, { marks: good });
    $("reward-chart").innerHTML = rewardChart(labels);
    $("lambda").innerHTML = `<b ${MaraPage.valueAttr(result.forwardMultiplier)}>${result.forwardMultiplier.toPrecision(8)}</b>`;

    const vanilla = result.summaries[chosen];
    const betaText = MaraTargets.formatG(state.beta);
    let headline = `<p data-target="${chosen}"><b>${chosen} KL, beta = ${betaText}:</b> ${MaraPage.escapeHtml(vanilla.sentence)}</p>`;
    if (state.mara) {
      headline += result.mara
        ? `<p data-target="mara"><b>with MARA:</b> ${MaraPage.escapeHtml(result.summaries.mara.sentence)}</p>`
        : `<p data-target="mara"><b>with MARA:</b> undefined here (${MaraPage.escapeHtml(result.maraError)})</p>`;
    }
    $("headline").innerHTML = headline;

    const rows = [["reverse", "reverse KL"], ["forward", "forward KL"]];
    if (state.mara && result.mara) rows.push(["mara", `MARA (${chosen} KL)`]);
    $("summary").tBodies[0].innerHTML = rows.map(([key, title]) => {
      const s = result.summaries[key];
      const cell = (name, value, text) => `<td data-key="${name}" ${MaraPage.valueAttr(value)}>${text}</td>`;
      return `<tr data-target="${key}"><th>${title}</th>${cell("effective_good", s.effectiveGood, s.effectiveGood.toFixed(3))}` +
        `${cell("mass_above_tau", s.massAboveTau, MaraPage.short(s.massAboveTau))}${cell("top_good_share", s.topGoodShare, MaraPage.short(s.topGoodShare))}` +
        `${cell("entropy", s.entropy, s.entropy.toFixed(3))}<td data-key="sentence">${MaraPage.escapeHtml(s.sentence)}</td></tr>`;
    }).join("");

    const columns = [["reward", "reward", state.rewards], ["reference", "\u03c0_ref", reference], ["reverse", "reverse", result.reverse],
      ["forward", "forward", result.forward]];
    if (state.mara && result.mara) columns.push(["mara", "MARA", result.mara]);
    $("numbers").tHead.innerHTML = `<tr><th>outcome</th>${columns.map(([, title]) => `<th>${title}</th>`).join("")}</tr>`;
    $("numbers").tBodies[0].innerHTML = labels.map((label, i) =>
      `<tr><th>${MaraPage.escapeHtml(label)}</th>${columns.map(([key, , values]) =>
        `<td data-key="${key}" ${MaraPage.valueAttr(values[i])}>${MaraPage.short(values[i])}</td>`).join("")}</tr>`).join("");
  }

  function onEdit(apply) {
    return (event) => {
      try {
        apply(event);
      } catch (err) {
        setError(err.message);
        return;
      }
      render();
    };
  }

  $("preset").innerHTML = Object.entries(presets).map(([key, p]) => `<option value="${key}">${MaraPage.escapeHtml(p.name)}</option>`).join("");
  $("preset").addEventListener("change", onEdit(() => loadPreset($("preset").value)));
  $("beta-slider").addEventListener("input", onEdit(() => {
    state.beta = Number((10 ** Number($("beta-slider").value)).toPrecision(3));
    $("beta-input").value = String(state.beta);
  }));
  $("beta-input").addEventListener("change", onEdit(() => {
    const beta = Number($("beta-input").value.trim());
    if (!(beta > 0) || !Number.isFinite(beta)) throw new Error(`beta must be a finite number > 0, got ${$("beta-input").value}`);
    state.beta = beta;
    syncBeta();
  }));
  $("tau-slider").addEventListener("input", onEdit(() => {
    const [lo, hi] = rewardRange();
    const step = Number($("tau-slider").value);
    // The ends are the rewards themselves: rounding must not move tau past the lowest or highest one.
    state.tau = step <= 0 ? lo : step >= 1000 ? hi : Math.min(hi, Number((lo + ((hi - lo) * step) / 1000).toPrecision(4)));
    $("tau-input").value = String(state.tau);
  }));
  $("tau-input").addEventListener("change", onEdit(() => {
    const tau = Number($("tau-input").value.trim());
    if (!Number.isFinite(tau) || $("tau-input").value.trim() === "") throw new Error(`tau must be a finite number, got ${$("tau-input").value}`);
    state.tau = tau;
    syncTau();
  }));
  document.querySelectorAll('input[name="kl"]').forEach((radio) => radio.addEventListener("change", onEdit(() => {
    state.kl = document.querySelector('input[name="kl"]:checked').value;
  })));
  $("mara-toggle").addEventListener("change", onEdit(() => { state.mara = $("mara-toggle").checked; }));
  $("ref-mode").addEventListener("change", onEdit(() => {
    try {
      applyProblem(); // pending edits are read in the mode they were typed in
    } catch (err) {
      $("ref-mode").value = state.refMode;
      throw err;
    }
    state.refMode = $("ref-mode").value;
    showRef();
  }));
  // Rewards and reference are edited one after the other: apply them once both parse with one length.
  function applyProblem() {
    const rewards = $("rewards-input").value === shownRewardsText ? state.rewards : parseList($("rewards-input").value, "rewards", false);
    let ref = state.refLogprobs;
    if ($("ref-input").value !== shownRefText) {
      const values = parseList($("ref-input").value, "reference", state.refMode === "logprobs");
      if (state.refMode === "probs" && values.some((p) => p < 0)) throw new Error("reference: probabilities must be >= 0");
      ref = state.refMode === "probs" ? values.map(Math.log) : values;
    }
    if (rewards.length !== ref.length) {
      throw new Error(`${rewards.length} rewards but ${ref.length} reference entries: give one of each per outcome`);
    }
    state.rewards = rewards;
    state.refLogprobs = ref;
    syncTau();
  }
  $("rewards-input").addEventListener("input", onEdit(applyProblem));
  $("ref-input").addEventListener("input", onEdit(applyProblem));

  loadPreset(initial.preset);
  if (initial.beta != null) state.beta = initial.beta;
  if (initial.tau != null) state.tau = initial.tau;
  if (initial.kl) state.kl = initial.kl;
  if (initial.mara != null) state.mara = initial.mara;
  document.querySelector(`input[name="kl"][value="${state.kl}"]`).checked = true;
  $("mara-toggle").checked = state.mara;
  syncBeta();
  syncTau();
  render();

  // For scripts and tests: the page's own numbers, and its state. Log-probs: null means -inf.
  window.maraExplorer = {
    compute: (rewards, refLogprobs, beta, tau, kl) => MaraTargets.compute(rewards, refLogprobs.map((l) => (l === null ? -Infinity : l)), beta, tau, kl),
    state: () => ({ ...state, refLogprobs: state.refLogprobs.map((l) => (l === -Infinity ? null : l)) }),
    result: () => result,
  };
})();
