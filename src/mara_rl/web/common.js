"use strict";
// Helpers shared by the explorer and the diagnose report: escaping, number formats, SVG charts.
const MaraPage = (() => {
  const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  // The data the Python side embedded in <script id="page-data">.
  const data = () => JSON.parse(document.getElementById("page-data").textContent);

  // A short display of a number; the full value travels in data-value attributes.
  function short(x) {
    if (x === null || x === undefined || Number.isNaN(x)) return "-";
    if (x === Infinity || x === "inf") return "none";
    if (x === 0) return "0";
    const a = Math.abs(x);
    return a >= 1e-3 && a < 1e5 ? String(Number(x.toPrecision(3))) : x.toExponential(2);
  }

  // "inf" / "-inf" (the JSON spelling of the Python side) back to numbers; null stays null.
  const number = (x) => (x === "inf" ? Infinity : x === "-inf" ? -Infinity : x);

  // Attribute-safe full-precision value for tests and copy-paste.
  const valueAttr = (x) => `data-value="${x === null || x === undefined ? "" : escapeHtml(String(x))}"`;

  const BAR_LIMIT = 12; // like target_report.BAR_LIMIT: up to this many outcomes, bars; above, lines

  // Probabilities of several series over the same outcomes, as one SVG: grouped bars for a few
  // outcomes, step lines for many. series: [{name, label, color, values, width?}]; labels: [K].
  function chart(series, labels, { height = 260, width = 720, yMax = null, marks = [] } = {}) {
    const k = labels.length;
    const left = 58, right = 8, top = 10, bottom = k <= BAR_LIMIT ? 34 : 24;
    const plotW = width - left - right, plotH = height - top - bottom;
    const peak = yMax ?? Math.max(1e-12, ...series.flatMap((s) => s.values.filter(Number.isFinite)));
    const y = (v) => top + plotH * (1 - Math.min(Math.max(v, 0), peak) / peak);
    const slot = plotW / k;
    const out = [`<svg class="chart" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img">`];
    for (let t = 0; t <= 4; t++) {
      const v = (peak * t) / 4;
      out.push(`<line class="grid" x1="${left}" x2="${width - right}" y1="${y(v)}" y2="${y(v)}"/>`,
        `<text class="tick" x="${left - 4}" y="${y(v) + 4}" text-anchor="end">${short(v)}</text>`);
    }
    marks.forEach((i) => out.push(`<rect class="good-mark" x="${left + slot * i}" y="${top}" width="${slot}" height="${plotH}"/>`));
    if (k <= BAR_LIMIT) {
      const barW = (slot * 0.84) / series.length;
      series.forEach((s, j) => {
        out.push(`<g class="series" data-series="${s.name}" fill="${s.color}">`);
        s.values.forEach((v, i) => {
          const x = left + slot * i + slot * 0.08 + barW * j;
          out.push(`<rect x="${x}" y="${y(v)}" width="${barW}" height="${top + plotH - y(v)}" ${valueAttr(v)}><title>${escapeHtml(s.label)}: ${v}</title></rect>`);
        });
        out.push("</g>");
      });
      labels.forEach((label, i) => out.push(`<text class="tick" x="${left + slot * (i + 0.5)}" y="${height - bottom + 16}" text-anchor="middle">${escapeHtml(label)}</text>`));
    } else {
      series.forEach((s) => {
        const points = s.values.flatMap((v, i) => [`${left + slot * i},${y(v)}`, `${left + slot * (i + 1)},${y(v)}`]).join(" ");
        out.push(`<g class="series" data-series="${s.name}"><polyline fill="none" stroke="${s.color}" stroke-width="${s.width ?? 2}" points="${points}"/></g>`);
      });
      const every = Math.ceil(k / 10);
      labels.forEach((label, i) => {
        if (i % every === 0) out.push(`<text class="tick" x="${left + slot * (i + 0.5)}" y="${height - 6}" text-anchor="middle">${escapeHtml(label)}</text>`);
      });
    }
    out.push("</svg>");
    return out.join("");
  }

  // Values over training steps as lines (a gap where a value is null), one dot per step carrying its
  // full value, and a vertical marker at steps[marker]. series: [{name, label, color, values, dash?}].
  function lineChart(series, steps, { height = 220, width = 720, marker = null } = {}) {
    const left = 58, right = 8, top = 10, bottom = 24;
    const plotW = width - left - right, plotH = height - top - bottom;
    const finite = series.flatMap((s) => s.values.filter(Number.isFinite));
    const low = Math.min(0, ...finite), high = Math.max(low + 1e-12, ...finite);
    const x = (i) => left + (steps.length > 1 ? (plotW * i) / (steps.length - 1) : plotW / 2);
    const y = (v) => top + plotH * (1 - (v - low) / (high - low));
    const out = [`<svg class="chart" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img">`];
    for (let t = 0; t <= 4; t++) {
      const v = low + ((high - low) * t) / 4;
      out.push(`<line class="grid" x1="${left}" x2="${width - right}" y1="${y(v)}" y2="${y(v)}"/>`,
        `<text class="tick" x="${left - 4}" y="${y(v) + 4}" text-anchor="end">${short(v)}</text>`);
    }
    const every = Math.ceil(steps.length / 10);
    steps.forEach((step, i) => {
      if (i % every === 0) out.push(`<text class="tick" x="${x(i)}" y="${height - 6}" text-anchor="middle">${step}</text>`);
    });
    if (marker !== null) out.push(`<line class="step-marker" data-step="${steps[marker]}" x1="${x(marker)}" x2="${x(marker)}" y1="${top}" y2="${top + plotH}"/>`);
    series.forEach((s) => {
      const runs = [[]];
      s.values.forEach((v, i) => (Number.isFinite(v) ? runs[runs.length - 1].push(`${x(i)},${y(v)}`) : runs.push([])));
      out.push(`<g class="series" data-series="${s.name}" fill="${s.color}">`,
        ...runs.filter((r) => r.length > 1).map((r) => `<polyline fill="none" stroke="${s.color}" stroke-width="1.6"${s.dash ? ` stroke-dasharray="${s.dash}"` : ""} points="${r.join(" ")}"/>`),
        ...s.values.map((v, i) => `<circle data-step="${steps[i]}" ${valueAttr(v)} cx="${x(i)}" cy="${Number.isFinite(v) ? y(v) : -99}" r="${Number.isFinite(v) ? 2.5 : 0}"><title>${escapeHtml(s.label)}, step ${steps[i]}: ${short(v)}</title></circle>`),
        "</g>");
    });
    out.push("</svg>");
    return out.join("");
  }

  const legend = (series) => `<div class="legend">${series.map((s) => `<span data-series="${s.name}"><i style="background:${s.color}"></i>${escapeHtml(s.label)}</span>`).join("")}</div>`;

  // A horizontal bar for a probability in [0, 1], with its value.
  const bar = (value, color, key) =>
    `<span class="hbar" data-key="${key}" ${valueAttr(value)}><i style="width:${(100 * Math.min(Math.max(value ?? 0, 0), 1)).toFixed(2)}%;background:${color}"></i><b>${short(value)}</b></span>`;

  return { escapeHtml, data, short, number, valueAttr, chart, lineChart, legend, bar };
})();
