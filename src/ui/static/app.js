// The dashboard page: loads the run list, streams each run's metrics.jsonl over Server-Sent Events
// into the chart board, and routes between the views by the URL hash:
//   #/charts   #/rollouts/<run>/<step>/<questionId>/<rolloutId>   #/eval/<run>/<step>/…   #/config/<run>
import { h, getJson, PALETTE } from './util.js';
import { ChartBoard, RunMetrics } from './charts.js';
import { renderRollouts } from './rollouts.js';

const state = { runs: [], metrics: new Map(), board: null, sources: [] };
window.matpoDashboard = state;

const main = document.getElementById('main');
const chartsRoot = h('div#charts');
const viewRoot = h('div#view');
main.append(chartsRoot, viewRoot);

function go(hash) {
  location.hash = hash;
}

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const [page = 'charts', run, step, qid, rid] = parts;
  return { page, run, step, qid, rid };
}

function renderLegend() {
  const legend = document.getElementById('run-legend');
  legend.replaceChildren(
    ...state.runs.map((r) => {
      const m = state.metrics.get(r.name);
      const steps = m ? [...m.byStep.keys()] : [];
      const last = steps.length ? Math.max(...steps) : null;
      return h(
        'span.run-chip',
        { 'data-run': r.name, title: r.dir },
        h('span.swatch', { style: { background: r.color } }),
        r.name,
        h('span.meta', null, last === null ? ' · no steps yet' : ` · step ${last}`),
      );
    }),
  );
}

function connect(run) {
  const m = state.metrics.get(run.name);
  const src = new EventSource(`/api/runs/${encodeURIComponent(run.name)}/metrics/stream`);
  src.onmessage = (ev) => {
    const chunk = JSON.parse(ev.data);
    if (chunk.reset) m.reset();
    m.add(chunk.records);
    m.errors.push(...chunk.errors);
    state.board.update();
    renderLegend();
    document.body.dataset.live = String(Number(document.body.dataset.live ?? 0) + 1);
  };
  src.onerror = () => document.getElementById('status').replaceChildren('reconnecting…');
  src.onopen = () => document.getElementById('status').replaceChildren('live');
  state.sources.push(src);
}

async function refreshRuns() {
  const runs = await getJson('/api/runs');
  runs.forEach((r, i) => (r.color = PALETTE[i % PALETTE.length]));
  state.runs = runs;
  return runs;
}

let renderSeq = 0;
async function route() {
  const seq = ++renderSeq;
  const r = parseRoute();
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.page === r.page);
  chartsRoot.hidden = r.page !== 'charts';
  viewRoot.hidden = r.page === 'charts';
  if (r.page === 'charts') {
    document.body.dataset.rendered = location.hash;
    return;
  }
  // Render into a detached element and show it only if no newer route started meanwhile, so a slow
  // earlier render can never overwrite a later one.
  const out = h('div');
  try {
    await refreshRuns(); // steps may have been added while the run trains
    if (r.page === 'rollouts') await renderRollouts(out, state.runs, r, go);
    else if (r.page === 'eval') await renderRollouts(out, state.runs, r, go, 'eval');
    else if (r.page === 'config') {
      const run = state.runs.find((x) => x.name === r.run) ?? state.runs[0];
      const text = await fetch(`/api/runs/${encodeURIComponent(run.name)}/config`).then((res) =>
        res.ok ? res.text() : '(no config.yaml)',
      );
      out.replaceChildren(
        h(
          'div.toolbar',
          null,
          h(
            'label',
            null,
            'run ',
            h(
              'select',
              { onchange: (e) => go(`#/config/${encodeURIComponent(e.target.value)}`) },
              state.runs.map((x) => h('option', { value: x.name, selected: x.name === run.name }, x.name)),
            ),
          ),
        ),
        h('pre.config', null, text),
      );
    } else out.replaceChildren(h('p.empty', null, `Unknown page "${r.page}".`));
  } catch (err) {
    out.replaceChildren(h('div.errors', null, String(err.message ?? err)));
  }
  if (seq !== renderSeq) return;
  viewRoot.replaceChildren(...out.childNodes);
  document.body.dataset.rendered = location.hash;
}

async function start() {
  await refreshRuns();
  for (const r of state.runs) state.metrics.set(r.name, new RunMetrics(r.name, r.color));
  state.board = new ChartBoard(chartsRoot);
  state.board.setRuns([...state.metrics.values()]);
  renderLegend();
  for (const r of state.runs) connect(r);
  window.addEventListener('hashchange', route);
  await route();
}

start().catch((err) => main.replaceChildren(h('div.errors', null, `Could not load the dashboard: ${err.message}`)));
