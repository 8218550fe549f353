// Tests of the dashboard server over real HTTP on 127.0.0.1: the JSON API on the fixture run, raw
// request paths that try to leave the run directory, the live metrics stream (Server-Sent Events)
// picking up appended and half-written lines, and `matpo view` as a real process printing its URL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { spawn } from 'node:child_process';
import { appendFile, cp, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startViewServer } from './server.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const FIXTURE = join(ROOT, 'test', 'fixtures', 'run');

/** GET with the path sent exactly as given (fetch and URL would normalise `..` away). */
function rawGet(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((ok, fail) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => ok({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', fail);
    req.end();
  });
}

async function copyFixture(t: { after: (f: () => Promise<void>) => void }): Promise<{ base: string; run: string }> {
  const base = await mkdtemp(join(tmpdir(), 'matpo-view-'));
  t.after(() => rm(base, { recursive: true, force: true }));
  const run = join(base, 'fixture');
  await cp(FIXTURE, run, { recursive: true });
  return { base, run };
}

test('API serves runs, metrics, step summaries, rollouts with decoded tokens, eval and config', async (t) => {
  const { run } = await copyFixture(t);
  const srv = await startViewServer({ runDirs: [run], port: 0 });
  t.after(() => srv.close());
  assert.match(srv.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const get = async (p: string) => {
    const res = await fetch(new URL(p, srv.url));
    assert.equal(res.status, 200, p);
    return res.json() as Promise<any>;
  };
  const runs = await get('/api/runs');
  assert.equal(runs.length, 1);
  assert.equal(runs[0].name, 'fixture');
  assert.deepEqual(runs[0].rolloutSteps, [1, 2]);
  assert.deepEqual(runs[0].evalSteps, [0, 2, 4, 6]);
  assert.equal(runs[0].tokenizer, join(run, 'model'));

  const metrics = await get('/api/runs/fixture/metrics');
  assert.equal(metrics.records.length, 12); // 6 steps, 4 eval lines, a checkpoint and a skipped-step event
  assert.deepEqual(
    metrics.records.filter((r: any) => r.event).map((r: any) => `${r.step}:${r.event}`),
    ['3:checkpoint', '4:skipped'],
  );

  const step = await get('/api/runs/fixture/rollouts/1');
  assert.equal(step.questions.length, 2);
  assert.equal(step.questions[0].rollouts.length, 4);
  const id = step.questions[0].rollouts[0].id;
  const one = await get(`/api/runs/fixture/rollouts/1/${id}`);
  assert.equal(one.rollout.id, id);
  // Token pieces come from the run's tokenizer and decode back to the rendered conversation.
  const pieces: string[] = one.pieces[one.rollout.root.id];
  assert.equal(pieces.length, one.rollout.root.tokens.length);
  assert.ok(pieces.join('').startsWith('<|im_start|>system\nYou are a planner.'));
  const t0 = one.rollout.root.turns[0];
  assert.equal(pieces.slice(t0.sampleStart, t0.end).join(''), `${t0.text}<|im_end|>`);
  for (const w of one.rollout.workers) assert.equal(one.pieces[w.id].length, w.tokens.length);

  // Eval files hold Rollout records too (ids with slashes, as the trainer names them).
  const ev = await get('/api/runs/fixture/eval/2');
  assert.deepEqual(
    ev.questions.map((q: any) => q.rollouts.length),
    [2, 2],
  );
  const evId = ev.questions[0].rollouts[0].id;
  assert.match(evId, /^eval\/q-\d+\/\d$/);
  assert.equal((await get(`/api/runs/fixture/eval/2/${encodeURIComponent(evId)}`)).rollout.id, evId);
  const config = await fetch(new URL('/api/runs/fixture/config', srv.url)).then((r) => r.text());
  assert.match(config, /groupSize: 4/);
  // Page, scripts and the locally bundled chart library.
  for (const p of [
    '/',
    '/static/app.js',
    '/static/charts.js',
    '/static/rollouts.js',
    '/static/style.css',
    '/vendor/uPlot.esm.js',
    '/vendor/uPlot.min.css',
  ]) {
    assert.equal((await fetch(new URL(p, srv.url))).status, 200, p);
  }
  // Unknowns are 404s with a reason, bad steps 400.
  assert.equal((await fetch(new URL('/api/runs/nope/metrics', srv.url))).status, 404);
  assert.equal((await fetch(new URL('/api/runs/fixture/rollouts/7', srv.url))).status, 404);
  assert.equal((await fetch(new URL('/api/runs/fixture/rollouts/1/no-such-id', srv.url))).status, 404);
  assert.equal((await rawGet(srv.port, '/api/runs/fixture/rollouts/..')).status, 400);
  assert.equal((await rawGet(srv.port, '/api/runs/fixture/rollouts/1/..%2F..%2Fconfig.yaml')).status, 404);
  assert.equal((await fetch(new URL('/static/server.ts', srv.url))).status, 404);
});

test('raw paths that leave the run directory are refused over HTTP', async (t) => {
  const { base, run } = await copyFixture(t);
  await writeFile(join(base, 'secret.txt'), 'top secret');
  await symlink(join(base, 'secret.txt'), join(run, 'leak.txt'));
  await symlink(base, join(run, 'parent'));
  const srv = await startViewServer({ runDirs: [run], port: 0 });
  t.after(() => srv.close());
  const ok = await rawGet(srv.port, '/files/fixture/metrics.jsonl');
  assert.equal(ok.status, 200);
  assert.match(ok.body, /"step":1/);
  assert.equal((await rawGet(srv.port, '/files/fixture/rollouts/step-000001.jsonl')).status, 200);
  for (const p of [
    '/files/fixture/../secret.txt',
    '/files/fixture/%2e%2e/secret.txt',
    '/files/fixture/%2E%2E%2Fsecret.txt',
    '/files/fixture/rollouts/../../secret.txt',
    '/files/fixture//etc/passwd',
    '/files/fixture/%2Fetc%2Fpasswd',
    '/files/fixture/leak.txt',
    '/files/fixture/parent/secret.txt',
    '/files/fixture/%00',
    '/files/fixture/%zz',
  ]) {
    const res = await rawGet(srv.port, p);
    assert.equal(res.status, 403, `${p} → ${res.status} ${res.body}`);
    assert.doesNotMatch(res.body, /top secret|root:/);
  }
  // A request addressed to another host name (DNS rebinding) is refused on a loopback server.
  assert.equal((await rawGet(srv.port, '/files/fixture/metrics.jsonl', { host: 'evil.example:80' })).status, 403);
  assert.equal((await rawGet(srv.port, '/api/runs', { host: `localhost:${srv.port}` })).status, 200);
  assert.equal((await rawGet(srv.port, '/api/runs', { host: `[::1]:${srv.port}` })).status, 200);
  for (const p of ['/files/other/secret.txt', '/../secret.txt', '/static/../server.ts', '/vendor/../../package.json', '/etc/passwd']) {
    const res = await rawGet(srv.port, p);
    assert.equal(res.status, 404, `${p} → ${res.status}`);
  }
});

/** Read Server-Sent Events from a streaming fetch body. */
function sseReader(body: ReadableStream<Uint8Array>) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  return async function next(timeoutMs = 5000): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = buf.indexOf('\n\n');
      if (i >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = block
          .split('\n')
          .filter((l) => l.startsWith('data: '))
          .map((l) => l.slice(6))
          .join('\n');
        if (data) return JSON.parse(data);
        continue;
      }
      if (Date.now() > deadline) throw new Error('no event in time');
      const { value, done } = await reader.read();
      if (done) throw new Error('stream ended');
      buf += dec.decode(value, { stream: true });
    }
  };
}

test('metrics stream sends existing lines, then appended ones, and waits out a half-written line', async (t) => {
  const { run } = await copyFixture(t);
  const srv = await startViewServer({ runDirs: [run], port: 0, pollMs: 50 });
  t.after(() => srv.close());
  const ac = new AbortController();
  t.after(() => ac.abort());
  const res = await fetch(new URL('/api/runs/fixture/metrics/stream', srv.url), { signal: ac.signal });
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  const next = sseReader(res.body!);
  const first = await next();
  assert.equal(first.records.length, 12);
  const f = join(run, 'metrics.jsonl');
  await appendFile(f, '{"step":7,"planner/reward":0.93,"train/entropy":1.1}\n{"step":8,"planner/rew');
  const second = await next();
  assert.deepEqual(second.records, [{ step: 7, 'planner/reward': 0.93, 'train/entropy': 1.1 }]);
  await appendFile(f, 'ard":0.95}\n');
  const third = await next();
  assert.deepEqual(third.records, [{ step: 8, 'planner/reward': 0.95 }]);
  assert.equal(third.line, 14);
});

test('matpo view prints its URL, binds to 127.0.0.1 and serves the run', { timeout: 30_000 }, async (t) => {
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'matpo.js'), 'view', FIXTURE, '--port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGTERM');
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const url = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`no URL printed; stderr: ${err}`)), 20_000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /serving (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    });
    child.on('exit', (code) => fail(new Error(`exited ${code}: ${err}`)));
  });
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const runs = (await fetch(new URL('/api/runs', url)).then((r) => r.json())) as { name: string }[];
  assert.deepEqual(
    runs.map((r) => r.name),
    ['run'],
  );
  const exited = new Promise<number | null>((ok) => child.on('exit', (code) => ok(code)));
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
});

test('matpo view rejects a missing run directory with a one-line error', { timeout: 30_000 }, async () => {
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'matpo.js'), 'view', '/nonexistent/run'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const code = await new Promise<number | null>((ok) => child.on('exit', (c) => ok(c)));
  assert.equal(code, 1);
  assert.equal(err.trim(), 'matpo view: RUN_DIR: "/nonexistent/run" is not a directory');
});
