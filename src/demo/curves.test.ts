import { test } from 'node:test';
import assert from 'node:assert/strict';
import { meanCurve, rewardCurvesSvg } from './curves.ts';

/** Well-formedness without an XML library: balanced tags, no attribute given twice in one tag. */
function checkWellFormed(svg: string): void {
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-z]+)((?:\s+[a-zA-Z0-9-:]+="[^"<]*")*)\s*(\/?)>/g)) {
    const [, close, name, attrs, self] = m;
    const names = [...attrs.matchAll(/([a-zA-Z0-9-:]+)=/g)].map((a) => a[1]);
    assert.equal(new Set(names).size, names.length, `attribute repeated in <${name}${attrs}>`);
    if (close) assert.equal(stack.pop(), name);
    else if (!self) stack.push(name);
  }
  assert.deepEqual(stack, []);
  // nothing that looks like a tag was left unmatched by the pattern above
  assert.equal(svg.replace(/<(\/?)([a-z]+)((?:\s+[a-zA-Z0-9-:]+="[^"<]*")*)\s*(\/?)>/g, '').includes('<'), false);
}

test('meanCurve averages the finite values at each step, over runs of different lengths', () => {
  assert.deepEqual(meanCurve([[0, 1, 2], [2, NaN], [1]]), [1, 1, 2]);
  assert.deepEqual(meanCurve([]), []);
  assert.ok(Number.isNaN(meanCurve([[NaN]])[0]));
});

test('rewardCurvesSvg draws one thin line per seed and a mean line per mode, scaled to the data', () => {
  const svg = rewardCurvesSvg(
    [
      {
        label: 'MATPO',
        color: '#1f77b4',
        runs: [
          [0.1, 0.2, 0.3],
          [0.3, 0.2, 0.1],
        ],
      },
      { label: 'single <GRPO>', color: '#d62728', runs: [[0, NaN, 0.4]] },
    ],
    { title: 'reward & steps' },
  );
  checkWellFormed(svg);
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /reward &amp; steps/);
  assert.match(svg, /single &lt;GRPO&gt;/);
  const polylines = [...svg.matchAll(/<polyline points="([^"]+)"/g)].map((m) => m[1].split(' '));
  // MATPO: 2 seeds + mean (3 points each); single: its one seed has a gap at step 2, so two lone
  // points (circles) and a mean that is the same curve
  assert.equal(polylines.length, 3);
  assert.ok(polylines.every((p) => p.length === 3));
  assert.equal([...svg.matchAll(/<circle /g)].length, 4);
  // the MATPO mean is flat at 0.2, so its three points share one y, between the seeds' extremes
  const ys = polylines[2].map((p) => Number(p.split(',')[1]));
  assert.ok(ys.every((y) => y === ys[0]));
  const seedYs = polylines[0].map((p) => Number(p.split(',')[1]));
  assert.ok(seedYs[0] > ys[0] && seedYs[2] < ys[0], 'higher reward is drawn higher up');
  // the y axis reaches 0.5, the nice bound above the largest value 0.4
  assert.match(svg, />0.5</);
});

test('rewardCurvesSvg places values at given steps (evaluations at 0, 2, 4, …) and labels the axes', () => {
  const svg = rewardCurvesSvg([{ label: 'MATPO', color: '#1f77b4', runs: [[0.2, 0.25, 0.3, 0.3]] }], {
    yLabel: 'unseen-world accuracy',
    steps: [0, 2, 4, 8],
  });
  checkWellFormed(svg);
  assert.match(svg, />unseen-world accuracy</);
  assert.doesNotMatch(svg, /training reward/);
  const ticks = [...svg.matchAll(/<text x="([\d.]+)" y="\d+" text-anchor="middle" fill="#555">(\d+)<\/text>/g)].map((m) => [
    Number(m[1]),
    Number(m[2]),
  ]);
  assert.deepEqual(
    ticks.map((t) => t[1]),
    [0, 2, 4, 8],
  );
  // one unbroken line (no gaps), x proportional to the step: 0 at the left edge, 8 at the right
  const xs = [...svg.matchAll(/<polyline points="([^"]+)"/g)][0][1].split(' ').map((p) => Number(p.split(',')[0]));
  assert.equal(xs.length, 4);
  assert.deepEqual(
    xs,
    ticks.map((t) => t[0]),
  );
  const unit = (xs[3] - xs[0]) / 8;
  assert.ok(Math.abs(xs[1] - xs[0] - 2 * unit) < 0.11 && Math.abs(xs[2] - xs[0] - 4 * unit) < 0.11, xs.join(' '));
});
