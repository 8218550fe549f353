import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { command as world } from './world.ts';
import { command as initModel } from './init-model.ts';
import { command as evalCommand } from './eval.ts';
import { questionSeed } from '../../envs/world-set.ts';
import { loadChatTokenizer } from '../../envs/tokenizer-train.ts';
import type { Rollout } from '../../core/records.ts';

async function quiet(f: () => Promise<unknown>): Promise<string> {
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

const ROLLOUT = [
  '--set',
  'rollout.maxTurns=2',
  '--set',
  'rollout.maxNewTokens=12',
  '--set',
  'rollout.maxSequenceTokens=1024',
  '--set',
  'rollout.workerSummaryTokens=12',
  '--questions',
  '3',
  '--temperature',
  '1',
  '--no-progress',
];
const records = (file: string): Rollout[] =>
  readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

test('matpo eval labels same-world held-out and unseen-world accuracy, with their seeds, on a world set and on one world', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eval-unseen-'));
  try {
    await quiet(() =>
      world.run([
        '--seeds',
        '11-12',
        '--unseen-seeds',
        '1001',
        '--out',
        join(dir, 'set'),
        '--entities',
        '40',
        '--questions',
        '20',
        '--hops',
        '1-2',
        '--vocab-size',
        '420',
      ]),
    );
    await quiet(() =>
      initModel.run(['--config', 'micro', '--tokenizer', join(dir, 'set', 'tokenizer'), '--out', join(dir, 'model'), '--seed', '2']),
    );
    const out = await quiet(() =>
      evalCommand.run(['--model', join(dir, 'model'), '--world', join(dir, 'set'), '--out', join(dir, 'r.jsonl'), ...ROLLOUT]),
    );
    assert.match(out, /same-world held-out \(test split of training seeds 11, 12\)\nmatpo eval of .*: 3 questions/);
    assert.match(out, /unseen worlds \(seeds 1001; used by no training\)\nmatpo eval of .*: 3 questions/);
    assert.match(out, /grounding (—|[\d.]+%) \(\d+ of \d+ reports/);
    assert.deepEqual(
      records(join(dir, 'r.jsonl')).map((r) => questionSeed(r.questionId)),
      [11, 12, 11],
    );
    assert.deepEqual(
      records(join(dir, 'r.unseen.jsonl')).map((r) => questionSeed(r.questionId)),
      [1001, 1001, 1001],
    );

    // One world with its own tokenizer, evaluated by a model whose tokenizer is the set's (foreign to that world):
    // rollouts are rendered with the model's tokenizer, and unseen worlds are generated from the given seeds.
    await quiet(() =>
      world.run([
        '--seed',
        '31',
        '--out',
        join(dir, 'one'),
        '--entities',
        '40',
        '--questions',
        '20',
        '--hops',
        '1-2',
        '--vocab-size',
        '300',
      ]),
    );
    const one = await quiet(() =>
      evalCommand.run([
        '--model',
        join(dir, 'model'),
        '--world',
        join(dir, 'one'),
        '--unseen-seeds',
        '2001,2002',
        '--out',
        join(dir, 'o.jsonl'),
        ...ROLLOUT,
      ]),
    );
    assert.match(one, /same-world held-out \(world seed 31, test split\)/);
    assert.match(one, /unseen worlds \(seeds 2001, 2002, generated with world 31's knobs\)/);
    assert.deepEqual(
      records(join(dir, 'o.unseen.jsonl')).map((r) => questionSeed(r.questionId)),
      [2001, 2002, 2001],
    );
    const modelTok = loadChatTokenizer(join(dir, 'model'));
    for (const r of records(join(dir, 'o.jsonl'))) {
      assert.ok(r.root.tokens.every((t) => t < modelTok.vocabSize));
      assert.ok(modelTok.decode(r.root.tokens).includes(r.question), 'the prompt decodes with the model tokenizer');
    }
    await assert.rejects(
      () => evalCommand.run(['--model', join(dir, 'model'), '--world', join(dir, 'one'), '--unseen-seeds', '31', ...ROLLOUT]),
      /--unseen-seeds.*seed 31 is the evaluated world's own/,
    );
    await assert.rejects(
      () => evalCommand.run(['--model', join(dir, 'model'), '--world', join(dir, 'set'), '--unseen-seeds', '5', ...ROLLOUT]),
      /--unseen-seeds.*brings its own/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
