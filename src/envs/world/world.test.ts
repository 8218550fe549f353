import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateWorld, loadWorld, saveWorld } from './world.ts';
import { extractFacts, RELATIONS } from './vocab.ts';
import { ConfigError, FileFormatError } from '../../core/errors.ts';

const small = { seed: 7, entities: 120, questions: 200 };

test('same seed gives the same world, another seed a different one', () => {
  const a = generateWorld(small);
  const b = generateWorld(small);
  assert.equal(JSON.stringify(a), JSON.stringify(b));
  const c = generateWorld({ ...small, seed: 8 });
  assert.notEqual(JSON.stringify(a.documents), JSON.stringify(c.documents));
});

test('every gold chain is stated by the documents it names and ends at the answer', () => {
  const w = generateWorld(small);
  const docs = new Map(w.documents.map((d) => [d.id, d]));
  const byHops = new Map<number, number>();
  for (const q of w.questions) {
    byHops.set(q.hops, (byHops.get(q.hops) ?? 0) + 1);
    assert.equal(q.chain.length, q.hops);
    for (let h = 0; h < q.hops; h++) {
      const step = q.chain[h];
      const doc = docs.get(step.docId)!;
      assert.equal(doc.title, step.subject);
      assert.equal(doc.distractor, false);
      const facts = extractFacts(doc.text, step.relation);
      assert.deepEqual(facts, [{ subject: step.subject, object: step.object }], `${q.id} hop ${h}: ${doc.text}`);
      if (h > 0) assert.equal(step.subject, q.chain[h - 1].object);
    }
    assert.deepEqual(q.answers, [q.chain[q.hops - 1].object]);
    // The question names the start entity and the outermost relation's wording.
    assert.ok(q.question.includes(q.chain[0].subject), q.question);
  }
  assert.deepEqual([...byHops.keys()].sort(), [1, 2, 3, 4]);
  assert.equal(new Set(w.questions.map((q) => q.question)).size, w.questions.length);
  assert.ok(w.questions.some((q) => q.split === 'test') && w.questions.some((q) => q.split === 'train'));
});

test('distractors have near-duplicate names and different facts', () => {
  const w = generateWorld({ ...small, distractors: 0.5 });
  const real = new Map(w.entities.map((e) => [e.id, e]));
  const distractors = w.documents.filter((d) => d.distractor);
  assert.equal(distractors.length, 60);
  const names = new Set(w.entities.map((e) => e.name));
  let differing = 0;
  for (const d of distractors) {
    const e = real.get(d.entityId)!;
    assert.ok(!names.has(d.title));
    const shared = d.title.split(' ').filter((x) => e.name.split(' ').includes(x)).length;
    assert.ok(shared >= e.name.split(' ').length - 1, `${d.title} vs ${e.name}`);
    for (const r of Object.keys(e.facts)) {
      const f = extractFacts(d.text, r);
      assert.equal(f.length, 1, `${r} in ${d.text}`);
      if (f[0].object !== e.facts[r]) differing++;
    }
  }
  assert.ok(differing > distractors.length * 3, 'near-miss facts differ from the real ones');
});

test('document length knob adds filler sentences without breaking fact extraction', () => {
  const short = generateWorld({ ...small, docLength: 'short' });
  const long = generateWorld({ ...small, docLength: 'long' });
  const mean = (w: typeof short) => w.documents.reduce((a, d) => a + d.text.length, 0) / w.documents.length;
  assert.ok(mean(long) > 2 * mean(short));
  const q = long.questions[0];
  const doc = long.documents.find((d) => d.id === q.chain[0].docId)!;
  assert.equal(extractFacts(doc.text, q.chain[0].relation)[0].object, q.chain[0].object);
});

test('hop limits and bad knobs', () => {
  const w = generateWorld({ ...small, minHops: 2, maxHops: 2 });
  assert.ok(w.questions.every((q) => q.hops === 2));
  assert.throws(() => generateWorld({ maxHops: 5 }), ConfigError);
  assert.throws(() => generateWorld({ distractors: 2 }), /distractors/);
  assert.throws(() => generateWorld({ docLength: 'huge' as never }), /docLength/);
});

test('save and load round trip; a bad line names file and line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'world-'));
  try {
    const w = generateWorld(small);
    saveWorld(w, dir);
    const back = loadWorld(dir);
    assert.deepEqual(back.entities, w.entities);
    assert.deepEqual(back.documents, w.documents);
    assert.deepEqual(back.questions.map((q) => q.id).sort(), w.questions.map((q) => q.id).sort());
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
    assert.equal(manifest.seed, 7);
    assert.equal(manifest.counts.questions, w.questions.length);
    const lines = readFileSync(join(dir, 'train.jsonl'), 'utf8').split('\n');
    lines[2] = '{"id": 3';
    writeFileSync(join(dir, 'train.jsonl'), lines.join('\n'));
    assert.throws(
      () => loadWorld(dir),
      (e: unknown) => e instanceof FileFormatError && e.line === 3 && e.message.includes('train.jsonl:3'),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every relation template round-trips through its own regex', () => {
  for (const [r, def] of Object.entries(RELATIONS)) {
    const o = def.value === 'year' ? '1854' : def.value === 'word' ? 'travel book' : 'Port Kelda';
    for (const t of def.facts) {
      const text = t.replace('{s}', 'The Silent River').replace('{o}', o);
      assert.deepEqual(extractFacts(text, r), [{ subject: 'The Silent River', object: o }], `${r}: ${text}`);
    }
  }
});
