// The dashboard in headless Chromium (Debian's /usr/bin/chromium driven by playwright-core) against
// the real server on 127.0.0.1: two runs overlaid (the fixture run with its tokenizer, and a second
// generated run without one), charts drawn with data, a live metrics line appearing without reload,
// question → rollout → worker transcript navigation, the token view's colours in both modes, path
// refusal over HTTP, and screenshots under the OS temp dir (paths printed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { appendFile, cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Page } from 'playwright-core';
import { startViewServer } from './server.ts';
import { writeFixtureRun } from '../testing/fixture-run.ts';

const CHROMIUM = '/usr/bin/chromium';
const FIXTURE = join(import.meta.dirname, '..', '..', 'test', 'fixtures', 'run');
const SHOTS = join(tmpdir(), 'matpo-dashboard');

function rawStatus(port: number, path: string): Promise<number> {
  return new Promise((ok, fail) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      res.resume();
      res.on('end', () => ok(res.statusCode ?? 0));
    });
    req.on('error', fail);
    req.end();
  });
}

/** Pixels of a chart's canvas close to an RGB colour (the run's series stroke). */
async function colouredPixels(page: Page, chartId: string, rgb: [number, number, number]): Promise<number> {
  return page.evaluate(
    ({ chartId, rgb }) => {
      const canvas = document.querySelector(`[data-chart="${chartId}"] canvas`) as HTMLCanvasElement;
      const d = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4)
        if (Math.abs(d[i] - rgb[0]) + Math.abs(d[i + 1] - rgb[1]) + Math.abs(d[i + 2] - rgb[2]) < 40 && d[i + 3] > 200) n++;
      return n;
    },
    { chartId, rgb },
  );
}

/** Wait until the page has finished rendering the view for its current hash. */
async function rendered(page: Page): Promise<void> {
  await page.waitForFunction(() => document.body.dataset.rendered === location.hash);
}

/** Click a link of the page's views and wait for the view it leads to. */
async function follow(page: Page, selector: string): Promise<void> {
  const href = await page.locator(selector).first().getAttribute('href');
  await page.locator(selector).first().click();
  await page.waitForFunction((href) => location.hash === href && document.body.dataset.rendered === href, href);
}

test(
  // Skipped only on a developer machine without Chromium; under CI a missing browser is a failure.
  'dashboard in headless Chromium: charts, live update, rollout → worker transcript, token view',
  { skip: existsSync(CHROMIUM) || process.env.CI ? false : `${CHROMIUM} not installed (apt-get install chromium)`, timeout: 60_000 },
  async (t) => {
    const base = await mkdtemp(join(tmpdir(), 'matpo-dash-'));
    t.after(() => rm(base, { recursive: true, force: true }));
    const alpha = join(base, 'alpha');
    const beta = join(base, 'beta');
    await cp(FIXTURE, alpha, { recursive: true });
    await writeFixtureRun(beta, { seed: 2, tokenizer: false });
    const srv = await startViewServer({ runDirs: [alpha, beta], port: 0, pollMs: 100 });
    t.after(() => srv.close());

    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      // playwright gives every launch a fresh temporary user-data-dir of its own.
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    t.after(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') pageErrors.push(m.text());
    });

    // Charts: one per metric key, grouped by prefix, one series per run; comparisons and the time breakdown.
    await page.goto(`${srv.url}#/charts`);
    await page.waitForFunction(() => Number(document.body.dataset.live ?? 0) >= 2); // both runs streamed in
    for (const id of [
      'planner/reward',
      'worker/reward',
      'planner/accuracy',
      'planner/tokens',
      'worker/tokens',
      'planner/workers_per_rollout',
      'train/clip_fraction',
      'train/entropy',
      'train/grad_norm',
      'eval/accuracy',
      'compare:reward',
      'compare:accuracy',
      'breakdown:time',
      'eval/grounding',
      'unseen/accuracy',
    ]) {
      assert.equal(await page.locator(`[data-chart="${id}"] canvas`).count(), 1, `chart ${id}`);
    }
    const chartInfo = (id: string) =>
      page.evaluate((id) => {
        const c = (window as any).matpoDashboard.board.charts.get(id);
        return { series: c.plot.series.length - 1, labels: c.plot.series.slice(1).map((s: any) => s.label), data: c.plot.data };
      }, id);
    const reward = await chartInfo('planner/reward');
    assert.equal(reward.series, 2);
    assert.deepEqual(reward.labels, ['alpha', 'beta']);
    assert.deepEqual(reward.data[0], [1, 2, 3, 4, 5, 6]);
    assert.ok(reward.data[1].every((v: number | null) => typeof v === 'number'));
    assert.equal((await chartInfo('compare:reward')).series, 6); // 2 runs × planner/worker/eval
    assert.equal((await chartInfo('breakdown:time')).series, 10); // 2 runs × rollout/train/step/eval/checkpoint
    assert.deepEqual((await chartInfo('eval/accuracy')).data[0], [0, 2, 4, 6]);
    // same-world held-out and unseen-world accuracy share the accuracy comparison chart
    assert.equal((await chartInfo('compare:accuracy')).series, 6); // 2 runs × planner/eval/unseen
    assert.equal(await page.locator('[data-section="planner"] h2').textContent(), 'planner');
    assert.equal(await page.locator('.run-chip').count(), 2);
    const events = (await page.locator('.events-table').textContent()) ?? '';
    assert.match(events, /skipped/);
    assert.match(events, /checkpoint/);
    // Both runs' lines are actually drawn, in their colours (#2563eb, #dc2626).
    assert.ok((await colouredPixels(page, 'planner/reward', [37, 99, 235])) > 100);
    assert.ok((await colouredPixels(page, 'planner/reward', [220, 38, 38])) > 100);
    await mkdir(SHOTS, { recursive: true });
    const chartsShot = join(SHOTS, 'charts.png');
    await page.screenshot({ path: chartsShot });

    // Live: a new metrics line (and a new key) shows up without a reload.
    const before = await page.evaluate(() => (window as any).matpoDashboard.board.charts.get('planner/reward').plot);
    assert.ok(before);
    await appendFile(
      join(alpha, 'metrics.jsonl'),
      '{"step":7,"time":"2026-11-20T09:12:40Z","planner/reward":0.97,"custom/new_metric":3}\n',
    );
    await page.waitForFunction(() => {
      const c = (window as any).matpoDashboard.board.charts.get('planner/reward');
      return c && c.plot.data[0].length === 7;
    });
    const after = await chartInfo('planner/reward');
    assert.equal(after.data[1][6], 0.97);
    assert.equal(after.data[2][6], null); // beta has no step 7
    await page.waitForSelector('[data-chart="custom/new_metric"] canvas');
    assert.match((await page.locator('.run-chip[data-run="alpha"]').textContent()) ?? '', /step 7/);

    // Rollouts: question → rollouts sorted by reward → planner transcript → worker transcript.
    await page.click('nav a[data-page="rollouts"]');
    await page.waitForSelector('.qitem');
    await page.selectOption('#run-select', 'alpha');
    await page.waitForSelector('#step-select');
    await page.selectOption('#step-select', '1');
    await page.waitForFunction(() => location.hash === '#/rollouts/alpha/1');
    await rendered(page);
    assert.equal(await page.locator('.qitem').count(), 2);
    await follow(page, '.qitem[data-qid="q-0007"]');
    assert.equal(await page.locator('.ritem').count(), 4);
    const totals = await page.locator('.ritem .rhead b').allTextContents();
    assert.deepEqual(
      totals.map(Number),
      totals.map(Number).sort((a, b) => b - a),
    );
    await follow(page, '.ritem');
    const rolloutText = (await page.locator('.rollout').textContent()) ?? '';
    assert.match(rolloutText, /advantage \+/);
    assert.match(rolloutText, /accuracy 1/);
    assert.match(rolloutText, /decoded with/);
    const worker = page.locator('details.worker').first();
    const workerId = await worker.getAttribute('data-worker');
    assert.ok(workerId);
    assert.equal(await page.locator(`.seq[data-seq="${workerId}"]`).isVisible(), false);
    await worker.locator('summary').first().click();
    const workerSeq = page.locator(`.seq[data-seq="${workerId}"]`);
    await workerSeq.waitFor({ state: 'visible' });
    assert.equal(await workerSeq.locator('.role').first().textContent(), 'worker');
    assert.ok((await workerSeq.locator('.tool[data-tool="search"]').count()) >= 1);
    assert.match((await workerSeq.locator('.tool[data-tool="search"] .result summary').first().textContent()) ?? '', /result · \d+ chars/);
    const transcriptShot = join(SHOTS, 'transcript.png');
    await page.screenshot({ path: transcriptShot, fullPage: true });

    // Token view with the run's tokenizer: one span per token, trainable and masked in different colours.
    const planner = page.locator('.rollout > .seq');
    await planner.locator('.seq-head button.tokens-toggle').first().click();
    const tokBox = planner.locator('.token-box.decoded').first();
    await tokBox.waitFor();
    const counts = await planner.evaluate((el) => {
      // (no named helpers in here: the page function is serialised as written)
      const box = el.querySelector(':scope > .seq-tokens .token-box')!;
      return {
        m1: box.querySelectorAll('.tok.m1').length,
        m0: box.querySelectorAll('.tok.m0').length,
        bg1: getComputedStyle(box.querySelector('.tok.m1')!).backgroundColor,
        bg0: getComputedStyle(box.querySelector('.tok.m0')!).backgroundColor,
        text: box.textContent,
      };
    });
    const api = (await fetch(
      new URL(`/api/runs/alpha/rollouts/1/${await page.locator('.rollout').getAttribute('data-rollout')}`, srv.url),
    ).then((r) => r.json())) as any;
    const mask: number[] = api.rollout.root.mask;
    assert.equal(counts.m1, mask.filter((m) => m === 1).length);
    assert.equal(counts.m0, mask.filter((m) => m === 0).length);
    assert.equal(counts.bg1, 'rgb(199, 240, 210)');
    assert.equal(counts.bg0, 'rgb(236, 238, 241)');
    assert.match(counts.text ?? '', /<\|im_start\|>/);
    const tokensShot = join(SHOTS, 'tokens.png');
    await page.screenshot({ path: tokensShot });

    // Run without a tokenizer: turn texts split at the recorded prompt/sample boundaries, and a mask strip.
    await page.goto(`${srv.url}#/rollouts/beta/2`);
    await rendered(page);
    await follow(page, '.qitem');
    await follow(page, '.ritem');
    assert.match((await page.locator('.rollout').textContent()) ?? '', /no tokenizer\.json found/);
    await page.locator('.rollout > .seq > .seq-head button.tokens-toggle').click();
    await page.waitForSelector('.token-box.spans');
    const spans = await page.evaluate(() => {
      const seq = document.querySelector('.rollout > .seq')!;
      const box = seq.querySelector(':scope > .seq-tokens')!;
      return {
        m1: box.querySelectorAll('.span.m1').length,
        m0: box.querySelectorAll('.span.m0').length,
        cells: box.querySelectorAll('.mask-strip i').length,
        green: box.querySelectorAll('.mask-strip i.m1').length,
        bg1: getComputedStyle(box.querySelector('.span.m1')!).backgroundColor,
        bg0: getComputedStyle(box.querySelector('.span.m0')!).backgroundColor,
      };
    });
    const betaApi = (await fetch(
      new URL(`/api/runs/beta/rollouts/2/${await page.locator('.rollout').getAttribute('data-rollout')}`, srv.url),
    ).then((r) => r.json())) as any;
    assert.equal(betaApi.pieces, null);
    const root = betaApi.rollout.root;
    assert.equal(spans.m1, root.turns.length);
    assert.equal(spans.m0, root.turns.length);
    assert.equal(spans.cells, root.tokens.length);
    assert.equal(spans.green, root.mask.filter((m: number) => m === 1).length);
    assert.notEqual(spans.bg1, spans.bg0);

    // Eval rollouts browse the same way.
    await page.goto(`${srv.url}#/eval/alpha/0`);
    await rendered(page);
    assert.equal(await page.locator('.qitem').count(), 2);
    await follow(page, '.qitem');
    assert.equal(await page.locator('.ritem').count(), 2);
    await follow(page, '.ritem');
    assert.match((await page.locator('.rollout h2').first().textContent()) ?? '', /Rollout \d/);

    // Only files under the run directories: traversal refused over HTTP.
    for (const p of ['/files/alpha/../beta/metrics.jsonl', '/files/alpha/%2e%2e/beta/metrics.jsonl', '/files/alpha//etc/passwd'])
      assert.equal(await rawStatus(srv.port, p), 403, p);
    assert.equal(await rawStatus(srv.port, '/files/alpha/metrics.jsonl'), 200);

    assert.deepEqual(pageErrors, []);
    t.diagnostic(`screenshots: ${chartsShot} ${transcriptShot} ${tokensShot}`);
  },
);
