import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { command as world } from './world.ts';
import { command as index } from './index.ts';
import { loadWorld } from '../../envs/world/world.ts';
import { SearchIndex } from '../../tools/search/search-index.ts';
import { ConfigError } from '../../core/errors.ts';

async function quiet<T>(f: () => Promise<T>): Promise<{ value: T; out: string }> {
  const log = console.log;
  let out = '';
  console.log = (...a: unknown[]) => {
    out += a.join(' ') + '\n';
  };
  try {
    return { value: await f(), out };
  } finally {
    console.log = log;
  }
}

test('matpo world writes a world, its tokenizer, demos and held-out worlds; matpo index indexes it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cli-world-'));
  try {
    const { out } = await quiet(() =>
      world.run([
        '--seed',
        '3',
        '--out',
        dir,
        '--entities',
        '80',
        '--questions',
        '40',
        '--hops',
        '1-2',
        '--heldout',
        '1',
        '--vocab-size',
        '600',
        '--demos',
        'both',
        '--demo-questions',
        '6',
      ]),
    );
    assert.match(out, /questions 40 \(train 32, test 8\); by hops: 1-hop 20, 2-hop 20/);
    assert.match(out, /expert matpo \(error rate 0\): success 100\.0% on 6 questions/);
    assert.match(out, /expert single \(error rate 0\): success 100\.0% on 6 questions/);
    const w = loadWorld(dir);
    assert.equal(w.manifest.seed, 3);
    assert.ok(w.questions.every((q) => q.hops <= 2));
    assert.ok(existsSync(join(dir, 'tokenizer', 'tokenizer.json')));
    assert.equal(readFileSync(join(dir, 'demos-single.jsonl'), 'utf8').trim().split('\n').length, 6);
    // With guesses, the planner answers some questions from memory; every subtask still has a worker transcript.
    const guessed = await quiet(() =>
      world.run([
        '--seed',
        '3',
        '--out',
        join(dir, 'guess'),
        '--entities',
        '80',
        '--questions',
        '40',
        '--hops',
        '1-2',
        '--vocab-size',
        '600',
        '--demos',
        'matpo',
        '--demo-questions',
        '20',
        '--demo-guess-rate',
        '0.5',
      ]),
    );
    const m = /expert matpo \(error rate 0, guess rate 0\.5\): success ([\d.]+)%, answered from memory ([\d.]+)% on 20 questions/.exec(
      guessed.out,
    );
    assert.ok(m, guessed.out);
    assert.equal(Number(m[1]) + Number(m[2]), 100);
    assert.ok(Number(m[2]) > 0 && Number(m[2]) < 100);
    const lines = readFileSync(join(dir, 'guess', 'demos-matpo.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const train = loadWorld(join(dir, 'guess'))
      .questions.filter((q) => q.split === 'train')
      .slice(0, 20);
    const guessedIds = new Set(
      lines
        .filter((l) => l.role === 'planner' && l.messages.filter((x: { role: string }) => x.role === 'assistant').length === 1)
        .map((l) => l.questionId),
    );
    assert.equal(guessedIds.size, Math.round(0.2 * Number(m[2])));
    assert.equal(
      lines.filter((l) => l.role === 'worker').length,
      train.reduce((a, q) => a + q.hops, 0),
    );
    const held = loadWorld(join(dir, 'heldout-1003'));
    assert.equal(held.manifest.seed, 1003);
    assert.ok(held.questions.length === 40 && held.questions.every((q) => q.split === 'test'));

    const idx = join(dir, 'index');
    const r = await quiet(() => index.run([dir, '--out', idx, '--query', w.entities[0].name, '--top-k', '2']));
    assert.match(r.out, new RegExp(`indexed ${w.documents.length} documents`));
    assert.match(r.out, new RegExp(`\\] ${w.entities[0].name}: `));
    assert.equal(SearchIndex.load(idx).size, w.documents.length);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad flags are one-line config errors naming the flag', async () => {
  await assert.rejects(world.run(['--out', '/tmp/x', '--hops', '0-9']), (e: unknown) => e instanceof ConfigError && /hops/.test(e.message));
  await assert.rejects(world.run(['--seed', '1']), /--out: is required/);
  await assert.rejects(world.run(['--out', '/tmp/x', '--doc-length', 'huge']), /--doc-length/);
  await assert.rejects(world.run(['--out', '/tmp/x', '--demos', 'all']), /--demos/);
  await assert.rejects(
    world.run(['--out', '/tmp/x', '--demos', 'matpo', '--demo-guess-rate', '1.5']),
    (e: unknown) => e instanceof ConfigError && /--demo-guess-rate: expected a fraction in \[0, 1\], got 1\.5/.test(e.message),
  );
  await assert.rejects(index.run(['--out', '/tmp/x']), /expected exactly one corpus/);
});
