import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SearchIndex, loadCorpus, snippet } from './search-index.ts';
import { createSearchTools } from './tools.ts';
import { executeTool } from '../execute.ts';
import { generateWorld } from '../../envs/world/world.ts';
import { FileFormatError } from '../../core/errors.ts';

const docs = [
  { id: 'a', title: 'Tarnis Institute', text: 'Tarnis Institute was founded by Alor Venmit. It is based in Kelda.' },
  { id: 'b', title: 'Tarnos Institute', text: 'Tarnos Institute was founded by Bram Oldar. It is based in Port Kelda.' },
  { id: 'c', title: 'Kelda', text: 'Kelda is a city in Velmia. ' + 'Kelda has a long history. '.repeat(10) },
  { id: 'd', title: 'Velmia', text: 'The capital of Velmia is Kelda.' },
];

test('ranks the title match first and returns snippets with ids and titles', () => {
  const index = SearchIndex.build(docs);
  const hits = index.search('founder of Tarnis Institute', 3);
  assert.equal(hits[0].id, 'a');
  assert.equal(hits[0].title, 'Tarnis Institute');
  assert.ok(hits[0].score > hits[1].score);
  assert.ok(hits.length <= 3);
  assert.ok(hits.every((h) => h.noise === undefined));
  assert.deepEqual(index.search('zzzz', 3), []);
});

test('open pages a document by character offset', () => {
  const index = SearchIndex.build(docs);
  const total = docs[2].text.length;
  const p1 = index.open('c', 0, 100);
  assert.equal(p1.text, docs[2].text.slice(0, 100));
  assert.equal(p1.remaining, total - 100);
  const p2 = index.open('c', 100, 1000);
  assert.equal(p1.text + p2.text, docs[2].text);
  assert.equal(p2.remaining, 0);
  assert.equal(index.open('c', total + 5).text, '');
  assert.throws(() => index.open('zz'), /no document/);
});

test('save and load give the same rankings', () => {
  const dir = mkdtempSync(join(tmpdir(), 'idx-'));
  try {
    const index = SearchIndex.build(docs);
    index.save(dir, 'test');
    const back = SearchIndex.load(dir);
    for (const q of ['Kelda', 'founded by Bram', 'capital of Velmia']) assert.deepEqual(back.search(q, 4), index.search(q, 4));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('search noise is seeded per query and mixes in hits', () => {
  const w = generateWorld({ seed: 3, entities: 100, questions: 10 });
  const index = SearchIndex.build(w.documents);
  const q = w.questions[0].chain[0].subject;
  const clean = index.search(q, 5);
  const a = index.search(q, 5, { noise: 0.5, noiseSeed: 1 });
  const b = index.search(q, 5, { noise: 0.5, noiseSeed: 1 });
  assert.deepEqual(a, b);
  let noisy = 0;
  let kept = 0;
  for (const e of w.entities.slice(0, 40)) {
    const hits = index.search(e.name, 5, { noise: 0.5, noiseSeed: 1 });
    assert.ok(hits.length >= Math.min(5, index.search(e.name, 5).length) && hits.length <= 5);
    noisy += hits.filter((h) => h.noise).length;
    // Noise is inserted ahead of real hits, which keep their order.
    const real = hits.filter((h) => !h.noise).map((h) => h.id);
    assert.deepEqual(
      real,
      index
        .search(e.name, 5)
        .map((h) => h.id)
        .slice(0, real.length),
    );
    if (hits.some((h) => h.title === e.name)) kept++;
  }
  assert.ok(noisy > 60 && noisy < 140, `noisy hits ${noisy} of 200`);
  assert.ok(kept >= 38, `the best hit survived in ${kept} of 40`);
  assert.equal(clean[0].title, q);
});

test('agent tools: search and open as text, errors as text', async () => {
  const [search, open] = createSearchTools(SearchIndex.build(docs), { pageChars: 50 });
  assert.equal(search.name, 'search');
  assert.equal(open.name, 'open');
  const opts = { timeoutMs: 1000, maxChars: 10000 };
  const s = await executeTool(search, { query: 'Tarnis Institute', top_k: 2 }, opts);
  assert.ok(s.ok);
  assert.match(s.text, /^Results for "Tarnis Institute":\n\[a\] Tarnis Institute: /);
  assert.equal(s.text.split('\n').length, 3);
  const o = await executeTool(open, { id: 'c', offset: 0 }, opts);
  assert.match(o.text, /^Document c: Kelda\n/);
  assert.match(o.text, /open with offset 50\)$/);
  const bad = await executeTool(open, { id: 'nope' }, opts);
  assert.match(bad.text, /no document with id "nope"/);
  const invalid = await executeTool(search, { q: 'x' }, opts);
  assert.equal(invalid.valid, false);
});

test('corpus loading: JSON array without ids, JSONL with ids, bad rows', () => {
  const dir = mkdtempSync(join(tmpdir(), 'corpus-'));
  try {
    writeFileSync(
      join(dir, 'a.json'),
      JSON.stringify([
        { title: 'X', text: 'x' },
        { title: 'Y', text: 'y' },
      ]),
    );
    assert.deepEqual(
      loadCorpus(join(dir, 'a.json')).map((d) => d.id),
      ['0', '1'],
    );
    writeFileSync(join(dir, 'b.jsonl'), '{"id":"p","title":"X","text":"x"}\n{"id":"q","title":"Y"}\n');
    assert.throws(
      () => loadCorpus(join(dir, 'b.jsonl')),
      (e: unknown) => e instanceof FileFormatError && e.line === 2 && e.field === 'text',
    );
    writeFileSync(join(dir, 'c.jsonl'), '{"title":"X","text":"x"}\nnot json\n');
    assert.throws(() => loadCorpus(join(dir, 'c.jsonl')), /c\.jsonl:2: invalid JSON/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('snippet windows around the first matched term', () => {
  const text = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu';
  const s = snippet(text, ['iota'], 20);
  assert.ok(s.includes('iota') && s.startsWith('…'));
  assert.equal(snippet('short', ['x'], 20), 'short');
});
