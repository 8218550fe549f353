/**
 * A static SVG line chart of training reward by step, for the experiment's report (results.md
 * links it; the README embeds it). One colour per mode: a thin line per seed and a thick line for
 * the mean over seeds at each step. Self-contained (no fonts, scripts or external references), so
 * it renders the same on GitHub, in a browser and in an image viewer.
 */
import { finiteMean } from '../util/stats.ts';

export interface CurveSeries {
  label: string;
  color: string;
  /** One array per seed: the value at step 1, 2, ... or at the chart's `steps` (non-finite values leave a gap). */
  runs: number[][];
}

const W = 640;
const H = 320;
const PAD = { left: 52, right: 16, top: 28, bottom: 40 };

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const num = (x: number) => (Math.round(x * 10) / 10).toString();

/** Mean over the runs that have a finite value at each step. */
export function meanCurve(runs: readonly number[][]): number[] {
  const n = Math.max(0, ...runs.map((r) => r.length));
  return Array.from({ length: n }, (_, i) => finiteMean(runs.map((r) => r[i])));
}

/** "Nice" upper bound for the y axis: the smallest of 0.1, 0.2, 0.25, 0.5, 1, 2, ... × 10^k above max. */
function niceMax(max: number): number {
  if (!(max > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

/**
 * `steps`: the step each value stands at (increasing; default 1, 2, …), e.g. 0, 2, 4, … for
 * evaluations every 2 steps that start before the first one.
 */
export function rewardCurvesSvg(
  series: readonly CurveSeries[],
  opts: { title?: string; yLabel?: string; steps?: readonly number[] } = {},
): string {
  const n = Math.max(1, ...series.flatMap((s) => s.runs.map((r) => r.length)));
  const xs = opts.steps ?? Array.from({ length: n }, (_, i) => i + 1);
  const values = series.flatMap((s) => s.runs.flat()).filter(Number.isFinite);
  const yMax = niceMax(Math.max(0, ...values));
  const yMin = Math.min(0, ...values);
  const [x0, x1] = [xs[0] ?? 1, xs.at(-1) ?? 1];
  const px = (i: number) => PAD.left + (x1 === x0 ? 0.5 : ((xs[i - 1] ?? x0) - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const py = (y: number) => PAD.top + (1 - (y - yMin) / (yMax - yMin)) * (H - PAD.top - PAD.bottom);
  /** Polylines for one curve, split at gaps. */
  const lines = (ys: readonly number[], color: string, width: number, opacity: number) => {
    const c = esc(color);
    const parts: [string, string][][] = [[]];
    ys.forEach((y, i) => {
      if (Number.isFinite(y)) parts.at(-1)!.push([num(px(i + 1)), num(py(y))]);
      else if (parts.at(-1)!.length) parts.push([]);
    });
    return parts
      .filter((p) => p.length)
      .map((p) =>
        p.length === 1
          ? `<circle cx="${p[0][0]}" cy="${p[0][1]}" r="${width}" fill="${c}" fill-opacity="${opacity}"/>`
          : `<polyline points="${p.map((xy) => xy.join(',')).join(' ')}" fill="none" stroke="${c}" ` +
            `stroke-width="${width}" stroke-opacity="${opacity}"/>`,
      );
  };
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
  ];
  if (opts.title) out.push(`<text x="${W / 2}" y="18" text-anchor="middle" font-size="14">${esc(opts.title)}</text>`);
  for (let k = 0; k <= 4; k++) {
    const y = yMin + ((yMax - yMin) * k) / 4;
    out.push(`<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${num(py(y))}" y2="${num(py(y))}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${PAD.left - 6}" y="${num(py(y) + 4)}" text-anchor="end" fill="#555">${Number(y.toFixed(3))}</text>`);
  }
  const tick = Math.max(1, Math.ceil(xs.length / 10));
  for (let i = 1; i <= xs.length; i += tick)
    out.push(`<text x="${num(px(i))}" y="${H - PAD.bottom + 16}" text-anchor="middle" fill="#555">${xs[i - 1]}</text>`);
  out.push(`<text x="${(PAD.left + W - PAD.right) / 2}" y="${H - 6}" text-anchor="middle" fill="#333">RL step</text>`);
  out.push(
    `<text transform="translate(14 ${(PAD.top + H - PAD.bottom) / 2}) rotate(-90)" text-anchor="middle" fill="#333">` +
      `${esc(opts.yLabel ?? 'training reward')}</text>`,
  );
  out.push(`<line x1="${PAD.left}" x2="${PAD.left}" y1="${PAD.top}" y2="${H - PAD.bottom}" stroke="#999"/>`);
  series.forEach((s, i) => {
    for (const run of s.runs) out.push(...lines(run, s.color, 1, 0.35));
    out.push(...lines(meanCurve(s.runs), s.color, 2.5, 1));
    const lx = PAD.left + 10 + i * 280;
    out.push(`<line x1="${lx}" x2="${lx + 20}" y1="${PAD.top + 8}" y2="${PAD.top + 8}" stroke="${esc(s.color)}" stroke-width="2.5"/>`);
    out.push(
      `<text x="${lx + 26}" y="${PAD.top + 12}" fill="#333">${esc(`${s.label} (mean of ${s.runs.length}; thin: each seed)`)}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
