import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  generateWorldSet,
  interleave,
  loadWorldSet,
  parseSeeds,
  questionSeed,
  saveWorldSet,
  worldOfQuestion,
  worldSetQuestions,
} from './world-set.ts';
import { copyDrills, readingExercises, readingSessions } from './reading-data.ts';
import { generateWorld } from './world/world.ts';
import { command as world } from '../cli/commands/world.ts';
import { ConfigError } from '../core/errors.ts';

const KNOBS = { entities: 50, questions: 30, minHops: 1, maxHops: 2 };

async function quiet<T>(f: () => Promise<T>): Promise<string> {
  const log = console.log;
  let out = '';
  console.log = (...a: unknown[]) => {
    out += a.join(' ') + '\n';
  };
  try {
    await f();
    return out;
  } finally {
    console.log = log;
  }
}

test('seeds parse as lists and ranges; bad lists name the flag', () => {
  assert.deepEqual(parseSeeds('11-13,20,12', '--seeds'), [11, 12, 13, 20]);
  assert.throws(
    () => parseSeeds('11-x', '--seeds'),
    (e: unknown) => e instanceof ConfigError && /--seeds/.test((e as Error).message),
  );
  assert.throws(() => parseSeeds('5-3', '--seeds'), /backwards/);
});

test('a world set: training worlds with both splits, unseen worlds all test, round-robin splits, question ids route to their world', () => {
  const set = generateWorldSet(KNOBS, [11, 12], [1001]);
  assert.deepEqual(
    set.train.map((w) => w.options.seed),
    [11, 12],
  );
  assert.ok(set.unseen[0].questions.every((q) => q.split === 'test'));
  const test0 = worldSetQuestions(set, 'test');
  assert.deepEqual(
    test0.slice(0, 2).map((q) => questionSeed(q.id)),
    [11, 12],
  );
  assert.ok(worldSetQuestions(set, 'unseen').every((q) => questionSeed(q.id) === 1001));
  assert.equal(worldSetQuestions(set, 'train').length + test0.length, 60);
  // the same seed gives the same world, whether generated alone or in a set
  assert.deepEqual(set.train[1].questions, generateWorld({ ...KNOBS, seed: 12 }).questions);
  const bySeed = new Map(set.train.map((w) => [w.options.seed, w]));
  assert.equal(worldOfQuestion(bySeed, 'w12-q3').options.seed, 12);
  assert.throws(() => worldOfQuestion(bySeed, 'w1001-q0'), /belongs to no loaded world \(seeds 11, 12\)/);
  assert.throws(() => generateWorldSet(KNOBS, [11, 12], [12]), /seed 12 is also a training seed/);
  assert.deepEqual(interleave([[1, 2, 3], [4], [5, 6]]), [1, 4, 5, 2, 6, 3]);
  const dir = mkdtempSync(join(tmpdir(), 'world-set-'));
  try {
    saveWorldSet(set, dir);
    const back = loadWorldSet(dir);
    assert.deepEqual(back.manifest.trainSeeds, [11, 12]);
    assert.deepEqual(back.unseen[0].questions, set.unseen[0].questions);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('reading exercises copy a value and a document id that stand in their context', () => {
  const w = generateWorld({ ...KNOBS, seed: 4 });
  const xs = readingExercises(w, { searchShare: 0.5 });
  assert.ok(xs.length > 10);
  assert.ok(xs.some((x) => x.kind === 'search') && xs.some((x) => x.kind === 'page'));
  for (const x of xs) {
    const [user, answer] = x.messages.map((m) => m.content);
    assert.ok(user.includes(x.value) && user.includes(`${x.docId}`), user);
    assert.ok(answer.includes(` is ${x.value}. Document ${x.docId} (`), answer);
    // the quoted sentence is in the context word for word
    assert.ok(user.includes(/says: "(.*)"$/.exec(answer)![1]));
  }
  assert.equal(readingExercises(w, { limit: 3 }).length, 3);
});

test('reading sessions ask about every fact their context states once, each answer copied from it', () => {
  const w = generateWorld({ ...KNOBS, seed: 5, distractors: 0.5 });
  const xs = readingSessions(w, { searchShare: 0.5 });
  assert.ok(xs.length > 0.8 * w.documents.length, `${xs.length} sessions from ${w.documents.length} documents`);
  assert.ok(xs.some((x) => x.kind === 'search') && xs.some((x) => x.kind === 'page'));
  let questions = 0;
  for (const x of xs) {
    const context = x.messages[0].content;
    const asked = new Set<string>();
    for (let i = 0; i < x.messages.length; i += 2) {
      const q = /Question: what is (.*)\? Answer/.exec(x.messages[i].content)![1];
      assert.ok(!asked.has(q), `asked twice: ${q}`);
      asked.add(q);
      const a = x.messages[i + 1].content;
      const m = /^(.*) is (.*)\. Document (d\d+) \((.*)\) says: "(.*)"$/.exec(a)!;
      assert.ok(m, a);
      assert.equal(m[1].toLowerCase(), q.toLowerCase());
      // value, document id, title and quoted sentence all stand in the context
      for (const part of [m[2], m[3], m[4], m[5]]) assert.ok(context.includes(part), `${part} not in ${context}`);
      assert.ok(m[5].includes(m[2]));
      questions++;
    }
  }
  assert.ok(questions > 2 * xs.length, `${questions} questions in ${xs.length} sessions`);
});

test('copy drills ask for the context back word for word', () => {
  const w = generateWorld({ ...KNOBS, seed: 6 });
  const drills = copyDrills(w, { sentences: 4 });
  const sentences = w.documents.reduce((n, d) => n + d.text.split(/(?<=\.)\s+/).length, 0);
  assert.equal(drills.length, Math.floor(sentences / 4));
  for (const [user, answer] of drills) assert.equal(user.content, `Copy this text exactly:\n${answer.content}`);
});

test('matpo world --seeds: one tokenizer from the training worlds only, expert transcripts from every world', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cli-world-set-'));
  try {
    const args = (out: string, unseen: string) => [
      '--seeds',
      '11-12',
      '--unseen-seeds',
      unseen,
      '--out',
      join(dir, out),
      '--entities',
      '50',
      '--questions',
      '30',
      '--hops',
      '1-2',
      '--vocab-size',
      '500',
      '--demos',
      'matpo',
      '--demo-questions',
      '4',
      '--reading',
      '5',
    ];
    const out = await quiet(() => world.run(args('a', '1001')));
    assert.match(out, /training seeds 11, 12 \(48 train \/ 12 test questions\); unseen seeds 1001 \(30 questions\)/);
    assert.match(out, /expert matpo: success 100\.0% on 8 questions from 2 worlds/);
    assert.match(out, /reading exercises: 10 /);
    await quiet(() => world.run(args('b', '1002')));
    // the unseen worlds never reach the tokenizer
    assert.equal(
      readFileSync(join(dir, 'a', 'tokenizer', 'tokenizer.json'), 'utf8'),
      readFileSync(join(dir, 'b', 'tokenizer', 'tokenizer.json'), 'utf8'),
    );
    const set = loadWorldSet(join(dir, 'a'));
    const asked = readFileSync(join(dir, 'a', 'demos-matpo.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).messages.find((m: { role: string }) => m.role === 'user').content as string);
    for (const w of set.train) {
      const qs = w.questions.filter((q) => q.split === 'train').slice(0, 4);
      for (const q of qs)
        assert.ok(
          asked.some((a) => a.includes(q.question)),
          `no transcript for ${q.id}`,
        );
    }
    await assert.rejects(() => world.run(['--seeds', '3', '--seed', '3', '--out', join(dir, 'c')]), /either --seed/);
    // reading worlds: their own seeds, copy drills and reading sessions, recorded in the manifest
    const r = await quiet(() => world.run([...args('r', '1001'), '--reading-seeds', '2001-2002']));
    assert.match(r, /reading worlds 2001…2002: \d+ copy drills, \d+ reading sessions/);
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'r', 'world-set.json'), 'utf8')).readingSeeds, [2001, 2002]);
    assert.ok(readFileSync(join(dir, 'r', 'sessions.jsonl'), 'utf8').split('\n').length > 10);
    await assert.rejects(
      () => world.run([...args('d', '1001'), '--reading-seeds', '12,2001']),
      (e: unknown) => e instanceof ConfigError && /--reading-seeds: seed 12 is also in --seeds/.test((e as Error).message),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
