// The metrics charts: every numeric key of metrics.jsonl, grouped by its prefix ("planner/reward" →
// group "planner"), one uPlot chart per key with one series per run (colour = run). Above them,
// comparison charts for metric names shared by several groups (e.g. reward of planner vs worker, or
// accuracy on the same-world held-out split "eval/" vs on unseen worlds "unseen/"),
// and groups whose keys are all durations ("*_s") are drawn as one breakdown chart. New lines are
// merged in as they stream; charts update in place with setData, and are rebuilt when new keys show up.
import uPlot from '/vendor/uPlot.esm.js';
import { h, fmt } from './util.js';

const GROUP_ORDER = ['planner', 'worker', 'single', 'eval', 'unseen', 'rollout', 'train', 'time'];
const DASHES = [[], [6, 4], [2, 3], [10, 3, 2, 3], [1, 5], [14, 4], [4, 2, 1, 2, 1, 2]];

/** Metric store of one run: step → merged numeric values, and the event lines. */
export class RunMetrics {
  constructor(name, color) {
    this.name = name;
    this.color = color;
    this.byStep = new Map();
    this.events = [];
    this.errors = [];
  }
  add(records) {
    for (const rec of records) {
      const step = rec.step;
      if (typeof rec.event === 'string') this.events.push(rec);
      let row = this.byStep.get(step);
      if (!row) this.byStep.set(step, (row = {}));
      for (const [k, v] of Object.entries(rec)) if (k !== 'step' && typeof v === 'number' && Number.isFinite(v)) row[k] = v;
    }
  }
  reset() {
    this.byStep.clear();
    this.events = [];
    this.errors = [];
  }
  keys() {
    const ks = new Set();
    for (const row of this.byStep.values()) for (const k of Object.keys(row)) ks.add(k);
    return ks;
  }
}

function groupOf(key) {
  const i = key.indexOf('/');
  return i < 0 ? 'other' : key.slice(0, i);
}
function nameOf(key) {
  const i = key.indexOf('/');
  return i < 0 ? key : key.slice(i + 1);
}
function groupRank(g) {
  const i = GROUP_ORDER.indexOf(g);
  return i < 0 ? GROUP_ORDER.length : i;
}

/** The chart specs for a set of keys: [{ id, title, section, keys }]. */
export function planCharts(keys) {
  const sorted = [...keys].sort();
  const groups = new Map();
  for (const k of sorted) {
    const g = groupOf(k);
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(k);
  }
  const specs = [];
  // Metric names shared by two or more groups: compare them in one chart.
  const byName = new Map();
  for (const k of sorted) {
    if (groupOf(k) === 'other') continue;
    const n = nameOf(k);
    if (!byName.has(n)) byName.set(n, []);
    byName.get(n).push(k);
  }
  for (const [n, ks] of byName) {
    if (ks.length < 2) continue;
    ks.sort((a, b) => groupRank(groupOf(a)) - groupRank(groupOf(b)));
    specs.push({ id: `compare:${n}`, title: `${n} by role`, section: 'compare', keys: ks });
  }
  const names = [...groups.keys()].sort((a, b) => groupRank(a) - groupRank(b) || a.localeCompare(b));
  for (const g of names) {
    const ks = groups.get(g);
    if (ks.length >= 2 && ks.every((k) => /_(s|ms)$/.test(k))) {
      specs.push({ id: `breakdown:${g}`, title: `${g} breakdown`, section: g, keys: ks });
    } else {
      for (const k of ks) specs.push({ id: k, title: k, section: g, keys: [k] });
    }
  }
  return specs;
}

/** uPlot data for a chart: x = union of steps, one series per (run, key). */
function chartData(spec, runs) {
  const steps = new Set();
  for (const r of runs) for (const [s, row] of r.byStep) if (spec.keys.some((k) => k in row)) steps.add(s);
  const xs = [...steps].sort((a, b) => a - b);
  const data = [xs];
  for (const r of runs) for (const k of spec.keys) data.push(xs.map((s) => r.byStep.get(s)?.[k] ?? null));
  return data;
}

/**
 * Y range with a floor on its span: metrics that barely move (a ratio of 0.99999999 vs 1, a std of
 * 1e-8) would otherwise ask uPlot for ticks finer than float precision.
 */
function yRange(u, min, max) {
  if (min === null || max === null || !Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
  const mag = Math.max(Math.abs(min), Math.abs(max));
  if (mag === 0) return [-1, 1];
  const minSpan = Math.max(mag * 1e-3, 1e-9);
  if (max - min < minSpan) {
    const c = (min + max) / 2;
    [min, max] = [c - minSpan / 2, c + minSpan / 2];
  }
  const pad = (max - min) * 0.08;
  return [min - pad, max + pad];
}

/** Y tick labels with as many decimals as the tick spacing needs (uPlot's default stops at 3). */
function tickValues(u, splits) {
  if (splits.length < 2) return splits.map((v) => fmt(v));
  const incr = Math.abs(splits[1] - splits[0]);
  const mag = Math.max(...splits.map(Math.abs));
  if (incr > 0 && (incr < 1e-3 || mag >= 1e6)) {
    const digits = Math.max(0, Math.min(6, Math.ceil(Math.log10(mag / incr))));
    return splits.map((v) => (v === 0 ? '0' : v.toExponential(digits)));
  }
  const s = String(Number(incr.toPrecision(6)));
  const decimals = s.includes('.') ? s.split('.')[1].length : 0;
  return splits.map((v) => v.toFixed(decimals));
}

/** Which line style stands for which key in a chart with several keys (colour stays the run's). */
function dashKey(keys, label) {
  const NS = 'http://www.w3.org/2000/svg';
  return h(
    'div.dash-key',
    null,
    keys.map((k, i) => {
      const svg = document.createElementNS(NS, 'svg');
      svg.setAttribute('width', '22');
      svg.setAttribute('height', '8');
      const line = document.createElementNS(NS, 'line');
      for (const [a, v] of Object.entries({
        x1: 0,
        y1: 4,
        x2: 22,
        y2: 4,
        stroke: '#4b5563',
        'stroke-width': 2,
        'stroke-dasharray': DASHES[i % DASHES.length].join(' '),
      }))
        line.setAttribute(a, String(v));
      svg.append(line);
      return h('span', null, svg, ` ${label(k)}`);
    }),
  );
}

/** Plot width that fits a card's content box (cards are sized by the CSS grid). */
function cardWidth(card) {
  const cs = getComputedStyle(card);
  return Math.max(240, Math.floor(card.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight)));
}

export class ChartBoard {
  constructor(root) {
    this.root = root;
    this.runs = [];
    this.charts = new Map(); // spec id → { spec, plot, card }
    this.planKey = '';
    this.width = 380;
    window.addEventListener('resize', () => this.resize());
  }
  setRuns(runs) {
    this.runs = runs;
    this.update(true);
  }
  /** Re-plan when the key set changed, otherwise push new data into the existing charts. */
  update(force = false) {
    const keys = new Set();
    for (const r of this.runs) for (const k of r.keys()) keys.add(k);
    const specs = planCharts(keys);
    const planKey = specs.map((s) => s.id).join('|') + '#' + this.runs.map((r) => r.name).join('|');
    if (force || planKey !== this.planKey) {
      this.planKey = planKey;
      this.build(specs);
    } else {
      for (const c of this.charts.values()) {
        const data = chartData(c.spec, this.runs);
        c.plot.setData(data);
        c.card.dataset.points = String(data[0].length);
      }
    }
    this.renderEvents();
  }
  build(specs) {
    for (const c of this.charts.values()) c.plot.destroy();
    this.charts.clear();
    this.root.replaceChildren();
    if (specs.length === 0) {
      this.root.append(h('p.empty', null, 'No metrics yet — waiting for metrics.jsonl lines…'));
      return;
    }
    const sections = new Map();
    const sectionEl = (name) => {
      if (!sections.has(name)) {
        const title = name === 'compare' ? 'By role' : name;
        const grid = h('div.chart-grid');
        this.root.append(h('section.chart-section', { 'data-section': name }, h('h2', null, title), grid));
        sections.set(name, grid);
      }
      return sections.get(name);
    };
    this.width = 0;
    for (const spec of specs) {
      const card = h(
        'div.chart-card',
        { 'data-chart': spec.id },
        h('h3', null, spec.title),
        spec.keys.length > 1 ? dashKey(spec.keys, spec.section === 'compare' ? groupOf : nameOf) : null,
      );
      sectionEl(spec.section).append(card);
      if (!this.width) this.width = cardWidth(card);
      const series = [{ label: 'step' }];
      for (const r of this.runs) {
        spec.keys.forEach((k, i) => {
          const label = spec.keys.length > 1 ? `${r.name} · ${k}` : r.name;
          series.push({
            label,
            stroke: r.color,
            width: 2,
            dash: DASHES[i % DASHES.length],
            spanGaps: true,
            value: (u, v) => fmt(v),
            points: { size: 5 },
          });
        });
      }
      const data = chartData(spec, this.runs);
      const plot = new uPlot(
        {
          width: this.width,
          height: 190,
          scales: { x: { time: false }, y: { range: yRange } },
          axes: [
            { label: 'step', labelSize: 18, size: 34, grid: { stroke: '#eef0f3' }, ticks: { stroke: '#d4d8de' } },
            { size: 60, grid: { stroke: '#eef0f3' }, ticks: { stroke: '#d4d8de' }, values: tickValues },
          ],
          legend: { live: true },
          cursor: { drag: { x: true, y: false } },
          series,
        },
        data,
        card,
      );
      card.dataset.points = String(data[0].length);
      card.dataset.series = String(series.length - 1);
      this.charts.set(spec.id, { spec, plot, card });
    }
    this.eventsEl = h('section.chart-section.events');
    this.root.append(this.eventsEl);
  }
  renderEvents() {
    if (!this.eventsEl) return;
    const rows = [];
    for (const r of this.runs) for (const e of r.events) rows.push({ run: r, e });
    const errs = this.runs.flatMap((r) => r.errors.map((m) => ({ run: r, m })));
    if (!rows.length && !errs.length) return this.eventsEl.replaceChildren();
    this.eventsEl.replaceChildren(
      h('h2', null, 'Events'),
      h(
        'table.events-table',
        null,
        h('tr', null, h('th', null, 'run'), h('th', null, 'step'), h('th', null, 'event'), h('th', null, 'details')),
        rows.map(({ run, e }) => {
          const { step, time, event, ...rest } = e;
          const details = Object.entries(rest)
            .filter(([, v]) => typeof v !== 'number')
            .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`)
            .join('; ');
          return h(
            'tr',
            null,
            h('td', null, h('span.swatch', { style: { background: run.color } }), run.name),
            h('td', null, step),
            h('td', null, event),
            h('td', null, details),
          );
        }),
        errs.map(({ run, m }) =>
          h('tr.error', null, h('td', null, run.name), h('td', null, ''), h('td', null, 'unreadable line'), h('td', null, m)),
        ),
      ),
    );
  }
  resize() {
    const card = this.root.querySelector('.chart-card');
    if (!card) return;
    const w = cardWidth(card);
    if (w === this.width) return;
    this.width = w;
    for (const c of this.charts.values()) c.plot.setSize({ width: w, height: 190 });
  }
}
