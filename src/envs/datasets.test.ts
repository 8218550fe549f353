import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { QA_PRESETS, loadQaDataset } from './datasets.ts';
import { FileFormatError, UnknownNameError } from '../core/errors.ts';

const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));
const shared = fileURLToPath(new URL('../../../shared/data/', import.meta.url));

test('FRAMES and SimpleQA from ../shared/data', async (t) => {
  if (!existsSync(join(shared, 'frames_824.jsonl'))) {
    t.skip(`no ${shared}frames_824.jsonl`);
    return;
  }
  const frames = await loadQaDataset(join(shared, 'frames_824.jsonl'), { preset: 'frames' });
  assert.equal(frames.length, 824);
  assert.equal(frames[0].id, '0');
  assert.deepEqual(frames[0].answers, ['Jane Ballou']);
  assert.equal(frames[0].metadata.reasoning_type, 'Multiple constraints');
  assert.ok(frames.every((r) => r.question.length > 0 && r.answers.length === 1));
  const simpleqa = await loadQaDataset(join(shared, 'simpleqa_800.jsonl'), { preset: 'simpleqa' });
  assert.equal(simpleqa.length, 800);
  assert.deepEqual(simpleqa[0], { id: '3612', question: simpleqa[0].question, answers: ['Paul Benedict Cullen'], metadata: {} });
  // Without a preset the default mapping finds the same fields.
  const auto = await loadQaDataset(join(shared, 'frames_824.jsonl'));
  assert.deepEqual(
    auto.map((r) => [r.id, r.question, r.answers]),
    frames.map((r) => [r.id, r.question, r.answers]),
  );
});

test('every preset loads a fixture in its real field layout', async () => {
  const cases: [string, string, (r: Awaited<ReturnType<typeof loadQaDataset>>) => void][] = [
    [
      'frames',
      'frames.tsv',
      (r) => {
        assert.equal(r.length, 2);
        assert.deepEqual(r[1].answers, ['42']);
        assert.equal(r[1].metadata.reasoning_types, 'Numerical reasoning | Temporal reasoning');
        assert.equal(r[0].id, '0');
      },
    ],
    [
      'simpleqa',
      'simpleqa.csv',
      (r) => {
        assert.equal(r[1].question, 'In what year did the painter Ada Kelmar finish "The Quiet Harbour"?');
        assert.deepEqual(r[1].answers, ['1874']);
        assert.match(String(r[0].metadata.metadata), /Geography/);
      },
    ],
    [
      'gaia',
      'gaia.parquet',
      (r) => {
        assert.deepEqual(
          r.map((x) => x.id),
          ['00000000-fixture-0001', '00000000-fixture-0002'],
        );
        assert.deepEqual(r[1].answers, ['Kelmar']);
        assert.equal(r[0].metadata.Level, 1);
        assert.equal(r[0].metadata.file_name, 'lighthouses.xlsx');
      },
    ],
    [
      'webwalkerqa',
      'webwalkerqa.jsonl',
      (r) => {
        assert.deepEqual(r[1].answers, ['Lena Ortal']);
        assert.equal((r[0].metadata.Info as { Difficulty_Level: string }).Difficulty_Level, 'Medium');
        assert.equal(r[0].id, '0');
      },
    ],
    [
      'musique',
      'musique.jsonl',
      (r) => {
        assert.deepEqual(r[0].answers, ['Port Alder', 'Alder Port', 'Port of Alder']);
        assert.deepEqual(r[1].answers, ['Bram Oldar']);
        assert.equal(r[0].id, '2hop__100_200');
        assert.equal(r[0].metadata.answerable, true);
      },
    ],
    [
      'hotpotqa',
      'hotpotqa.json',
      (r) => {
        assert.equal(r[0].id, '5a8b57f25542995d1e6f1371');
        assert.deepEqual(r[0].answers, ['yes']);
        assert.equal(r[1].metadata.type, 'bridge');
      },
    ],
    [
      '2wikimultihopqa',
      '2wikimultihopqa.json',
      (r) => {
        assert.deepEqual(r[0].answers, ['Milo Dane']);
        assert.equal((r[0].metadata.evidences as string[][])[1][1], 'father');
      },
    ],
    [
      'bamboogle',
      'bamboogle.csv',
      (r) => {
        assert.deepEqual(r[1].answers, ['1801, Port Alder']);
        assert.equal(r[1].question, 'In what year was the founder of the Tarnis Guild born, and where?');
      },
    ],
    [
      'nq',
      'nq.jsonl',
      (r) => {
        assert.deepEqual(r[0].answers, ['Lena Ortal', 'Ortal']);
        assert.equal(r[1].id, 'test_1');
      },
    ],
  ];
  assert.deepEqual(cases.map((c) => c[0]).sort(), Object.keys(QA_PRESETS).sort());
  for (const [preset, file, check] of cases) {
    const records = await loadQaDataset(join(fixtures, file), { preset });
    assert.equal(records.length, 2, preset);
    for (const r of records) assert.ok(r.question.length > 0 && r.answers.length > 0, preset);
    check(records);
  }
});

test('explicit mapping with dotted paths, list strings and a limit', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qa-'));
  try {
    const f = join(dir, 'x.jsonl');
    writeFileSync(
      f,
      [
        JSON.stringify({ q: { text: 'A?' }, gold: "['x', 'y']", key: 7, extra: 1 }),
        JSON.stringify({ q: { text: 'B?' }, gold: '["z"]', key: 8 }),
        JSON.stringify({ q: { text: 'C?' }, gold: 'w', key: 9 }),
      ].join('\n'),
    );
    const r = await loadQaDataset(f, { mapping: { question: ['q.text'], answers: ['gold'], id: ['key'], metadata: ['extra'] }, limit: 2 });
    assert.deepEqual(r, [
      { id: '7', question: 'A?', answers: ['x', 'y'], metadata: { extra: 1 } },
      { id: '8', question: 'B?', answers: ['z'], metadata: {} },
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad rows and missing fields name file, line, field and mapping', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qa-'));
  try {
    const jsonl = join(dir, 'bad.jsonl');
    writeFileSync(jsonl, '{"question": "a", "answer": "b"}\n\n{"question": "c", "answer": \n');
    await assert.rejects(
      loadQaDataset(jsonl),
      (e: unknown) => e instanceof FileFormatError && e.line === 3 && /bad\.jsonl:3: invalid JSON/.test(e.message),
    );
    const missing = join(dir, 'missing.jsonl');
    writeFileSync(missing, '{"problem": "a", "answer": "b"}\n{"problem": "c"}\n');
    await assert.rejects(
      loadQaDataset(missing, { preset: 'simpleqa' }),
      (e: unknown) =>
        e instanceof FileFormatError &&
        e.line === 2 &&
        e.field === 'answer' &&
        e.message.includes('mapping: question ← problem, answers ← answer, id ← id'),
    );
    const csv = join(dir, 'bad.csv');
    writeFileSync(csv, 'Question,Answer\n"a,b\n');
    await assert.rejects(
      loadQaDataset(csv, { preset: 'bamboogle' }),
      (e: unknown) => e instanceof FileFormatError && /bad\.csv/.test(e.message),
    );
    const noQuestion = join(dir, 'noq.csv');
    writeFileSync(noQuestion, 'Q,Answer\nx,y\n');
    await assert.rejects(
      loadQaDataset(noQuestion, { preset: 'bamboogle' }),
      (e: unknown) => e instanceof FileFormatError && e.line === 2 && e.field === 'Question|question',
    );
    const pq = join(dir, 'bad.parquet');
    writeFileSync(pq, new Uint8Array(parquetWriteBuffer({ columnData: [{ name: 'Question', data: ['q'], type: 'STRING' }] })));
    await assert.rejects(
      loadQaDataset(pq, { preset: 'gaia' }),
      (e: unknown) => e instanceof FileFormatError && /row 0: missing/.test(e.message) && e.field === 'Final answer',
    );
    writeFileSync(join(dir, 'junk.parquet'), 'not parquet');
    await assert.rejects(loadQaDataset(join(dir, 'junk.parquet')), /not a readable Parquet file/);
    await assert.rejects(loadQaDataset(jsonl, { preset: 'trivia' }), UnknownNameError);
    const none = join(dir, 'none.jsonl');
    writeFileSync(none, '{"query": "a", "answer": "b"}\n');
    await assert.rejects(
      loadQaDataset(none),
      new RegExp(
        String.raw`field "question\|Question\|problem\|Prompt": missing \(mapping: ` +
          String.raw`question ← question\|Question\|problem\|Prompt, answers ← answer\+Answer`,
      ),
    );
    await assert.rejects(loadQaDataset(join(dir, 'x.xml')), /cannot tell the format/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
