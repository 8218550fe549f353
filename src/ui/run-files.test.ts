// Tests of run-directory reading: incremental metrics with partial lines, path refusal (.., encoded
// .., absolute paths, symlinks out), step summaries, and that the committed fixture run is what the
// generator writes and is consistent with the record types.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, mkdir, readFile, readdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import type { Rollout } from '../core/records.ts';
import { readJsonl, readMetricsFrom, resolveInside, summariseStep, listSteps } from './run-files.ts';
import { writeFixtureRun } from '../testing/fixture-run.ts';

const FIXTURE = join(import.meta.dirname, '..', '..', 'test', 'fixtures', 'run');

test('readMetricsFrom: complete lines, a partial last line, then its completion', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'matpo-ui-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const f = join(dir, 'metrics.jsonl');
  const l1 = '{"step":1,"a/x":0.5}\n';
  const l2 = '{"step":2,"a/x":0.7,"event":"skipped"}\n';
  await writeFile(f, l1 + l2 + '{"step":3,"a/');
  const c1 = await readMetricsFrom(f);
  assert.deepEqual(
    c1.records.map((r) => r.step),
    [1, 2],
  );
  assert.equal(c1.offset, Buffer.byteLength(l1 + l2));
  assert.equal(c1.line, 2);
  assert.deepEqual(c1.errors, []);
  // Nothing new yet: the partial line stays unread.
  const c2 = await readMetricsFrom(f, c1.offset, c1.line);
  assert.deepEqual(c2.records, []);
  assert.equal(c2.offset, c1.offset);
  // The writer finishes the line, but without a newline: a whole object is taken.
  await appendFile(f, 'x":0.9}');
  const c3 = await readMetricsFrom(f, c2.offset, c2.line);
  assert.deepEqual(c3.records, [{ step: 3, 'a/x': 0.9 }]);
  // Then the newline and a bad line and a good one: the bad one is reported with its line number.
  await appendFile(f, '\nnot json\n{"no_step":1}\n{"step":4}\n');
  const c4 = await readMetricsFrom(f, c3.offset, c3.line);
  assert.deepEqual(c4.records, [{ step: 4 }]);
  assert.equal(c4.errors.length, 2);
  assert.match(c4.errors[0], /^metrics\.jsonl:5: invalid JSON/);
  assert.match(c4.errors[1], /^metrics\.jsonl:6: field "step"/);
  // Truncated (run restarted): read again from the start.
  await writeFile(f, l1);
  const c5 = await readMetricsFrom(f, c4.offset, c4.line);
  assert.equal(c5.reset, true);
  assert.deepEqual(c5.records, [{ step: 1, 'a/x': 0.5 }]);
  // Replaced by rename (a resumed run rewrites the log), even when longer: read again from the start.
  await writeFile(join(dir, 'tmp.jsonl'), l1 + l2 + l2);
  await rename(join(dir, 'tmp.jsonl'), f);
  const c6 = await readMetricsFrom(f, c5.offset, c5.line, c5.ino);
  assert.equal(c6.reset, true);
  assert.deepEqual(
    c6.records.map((r) => r.step),
    [1, 2, 2],
  );
  // A missing file reads as empty.
  assert.deepEqual((await readMetricsFrom(join(dir, 'nope.jsonl'))).records, []);
});

test('resolveInside refuses .., encoded .., absolute paths and symlinks that leave the run dir', async (t) => {
  const base = await mkdtemp(join(tmpdir(), 'matpo-ui-'));
  t.after(() => rm(base, { recursive: true, force: true }));
  const run = join(base, 'run');
  await mkdir(join(run, 'rollouts'), { recursive: true });
  await writeFile(join(run, 'metrics.jsonl'), '{"step":1}\n');
  await writeFile(join(base, 'secret.txt'), 'secret');
  await symlink(join(base, 'secret.txt'), join(run, 'leak.txt'));
  await symlink(base, join(run, 'up'));
  await symlink(join(run, 'metrics.jsonl'), join(run, 'inside-link.jsonl'));

  const ok = await resolveInside(run, ['metrics.jsonl']);
  assert.deepEqual(ok, { ok: true, file: join(run, 'metrics.jsonl') });
  assert.equal((await resolveInside(run, ['inside-link.jsonl'])).ok, true);
  for (const segs of [
    ['..', 'secret.txt'],
    ['%2e%2e', 'secret.txt'],
    ['%2E%2E', 'secret.txt'],
    ['rollouts', '..', '..', 'secret.txt'],
    ['', 'etc', 'passwd'],
    ['%2Fetc%2Fpasswd'],
    ['..%2Fsecret.txt'],
    ['a%00b'],
    ['leak.txt'],
    ['up', 'secret.txt'],
    ['.'],
  ]) {
    const r = await resolveInside(run, segs);
    assert.equal(r.ok, false, segs.join('/'));
    if (!r.ok) assert.equal(r.status, 403, `${segs.join('/')}: ${r.reason}`);
  }
  const missing = await resolveInside(run, ['nothing.txt']);
  assert.equal(!missing.ok && missing.status, 404);
  const dirItself = await resolveInside(run, ['rollouts']);
  assert.equal(!dirItself.ok && dirItself.status, 404);
});

test('summariseStep groups by question and sorts rollouts by reward', async () => {
  const { records, errors } = await readJsonl<Rollout>(join(FIXTURE, 'rollouts', 'step-000001.jsonl'));
  assert.deepEqual(errors, []);
  const groups = summariseStep(records);
  assert.equal(groups.length, 2);
  for (const g of groups) {
    assert.equal(g.rollouts.length, 4);
    const totals = g.rollouts.map((r) => r.reward!.total);
    assert.deepEqual(
      totals,
      [...totals].sort((a, b) => b - a),
    );
    const src = records.filter((r) => r.questionId === g.questionId);
    assert.ok(Math.abs(g.meanReward! - src.reduce((a, r) => a + r.reward!.total, 0) / src.length) < 1e-12);
    for (const s of g.rollouts) {
      const r = src.find((x) => x.id === s.id)!;
      assert.equal(s.workers, r.workers.length);
      assert.equal(s.tokens, r.root.tokens.length + r.workers.reduce((a, w) => a + w.tokens.length, 0));
    }
  }
});

test('readJsonl reports bad lines by number and ignores a partial last line', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'matpo-ui-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const f = join(dir, 'step-000001.jsonl');
  await writeFile(f, '{"id":"a"}\n[1]\n{"id":"b"}\n{"id":');
  const { records, errors } = await readJsonl<{ id: string }>(f, 'rollouts/step-000001.jsonl');
  assert.deepEqual(
    records.map((r) => r.id),
    ['a', 'b'],
  );
  assert.deepEqual(errors, ['rollouts/step-000001.jsonl:2: expected a JSON object']);
});

async function listFiles(dir: string, root = dir): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(p, root)));
    else out.push(relative(root, p));
  }
  return out.sort();
}

test('the committed fixture run is exactly what src/testing/fixture-run.ts writes', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'matpo-ui-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFixtureRun(dir);
  const committed = (await listFiles(FIXTURE)).filter((f) => f !== 'README.md');
  assert.deepEqual(committed, await listFiles(dir));
  for (const f of committed)
    assert.ok((await readFile(join(FIXTURE, f))).equals(await readFile(join(dir, f))), `${f} differs; regenerate the fixture`);
});

test('fixture rollouts are consistent with the record types', async () => {
  assert.deepEqual(await listSteps(FIXTURE, 'rollouts'), [1, 2]);
  assert.deepEqual(await listSteps(FIXTURE, 'eval'), [0, 2, 4, 6]);
  const files = [
    ...[1, 2].map((s) => ({ file: join('rollouts', `step-00000${s}.jsonl`), n: 8, train: true })),
    ...[0, 2, 4, 6].map((s) => ({ file: join('eval', `step-00000${s}.jsonl`), n: 4, train: false })),
  ];
  for (const { file, n, train } of files) {
    const { records, errors } = await readJsonl<Rollout>(join(FIXTURE, file));
    assert.deepEqual(errors, []);
    assert.equal(records.length, n);
    let delegates = 0;
    let invalid = 0;
    for (const r of records) {
      for (const s of [r.root, ...r.workers]) {
        assert.equal(s.mask.length, s.tokens.length);
        assert.equal(s.logprobs.length, s.tokens.length);
        let prev = 0;
        for (const turn of s.turns) {
          assert.equal(turn.promptStart, prev, `${s.id}: turns must tile the sequence`);
          assert.ok(turn.promptStart <= turn.sampleStart && turn.sampleStart < turn.end);
          for (let i = turn.promptStart; i < turn.end; i++) assert.equal(s.mask[i], i >= turn.sampleStart ? 1 : 0);
          for (let i = turn.sampleStart; i < turn.end; i++) assert.ok(s.logprobs[i] <= 0);
          prev = turn.end;
          for (const c of turn.toolCalls) {
            if (!c.valid) invalid++;
            if (c.workerId) {
              delegates++;
              const w = r.workers.find((x) => x.id === c.workerId);
              assert.ok(w, `${c.workerId} links to a worker`);
              assert.equal(w.parentId, r.root.id);
              assert.equal(w.role, 'worker');
            }
          }
        }
        assert.equal(prev, s.tokens.length);
        const calls = s.turns.flatMap((x) => x.toolCalls);
        assert.equal(s.formatScore, calls.length ? calls.filter((c) => c.valid).length / calls.length : 1);
      }
      assert.equal(r.workers.length, r.root.turns.flatMap((x) => x.toolCalls).filter((c) => c.workerId).length);
      assert.equal(r.reward!.accuracy, r.goldAnswers.includes(r.answer!) ? 1 : 0);
    }
    assert.ok(delegates >= n && (invalid > 0 || !train));
    if (!train) continue;
    // Advantages are group-normalised: they sum to ~0 within each question.
    for (const q of new Set(records.map((r) => r.questionId))) {
      const adv = records.filter((r) => r.questionId === q).map((r) => r.advantage!);
      assert.ok(Math.abs(adv.reduce((a, b) => a + b, 0)) < 1e-4);
    }
  }
});
