// Tests of the token view's decoding: per-token pieces that join back to the decoded text (with a
// hand-made decoder that strips a leading space and splits a character across tokens, and with the
// fixture's real byte-level BPE tokenizer), and where a run's tokenizer is looked for.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Rollout } from '../core/records.ts';
import { findTokenizerDir, loadTokenDecoder, tokenPieces } from './token-decoder.ts';

const FIXTURE = join(import.meta.dirname, '..', '..', 'test', 'fixtures', 'run');

test('tokenPieces: leading-space stripping decoder and a character split over two tokens', () => {
  const bytes: Record<number, number[]> = { 1: [...Buffer.from(' the')], 2: [...Buffer.from(' cat')], 3: [0xe2], 4: [0x80, 0x93] };
  // Like a Metaspace decoder: the decoded text loses one leading space.
  const decode = (ids: number[]) => new TextDecoder().decode(new Uint8Array(ids.flatMap((i) => bytes[i]))).replace(/^ /, '');
  const ids = [1, 2, 3, 4, 1];
  const pieces = tokenPieces(decode, ids);
  assert.deepEqual(pieces, ['the', ' cat', '', '–', ' the']);
  assert.equal(pieces.join(''), decode(ids));
  // A dangling partial character at the very end is still emitted (as the replacement character).
  assert.deepEqual(tokenPieces(decode, [1, 3]), ['the', '\uFFFD']);
});

test('pieces from the fixture tokenizer join back to each sequence text', async () => {
  const dec = await loadTokenDecoder(join(FIXTURE, 'model'));
  const line = (await readFile(join(FIXTURE, 'rollouts', 'step-000001.jsonl'), 'utf8')).split('\n')[0];
  const r = JSON.parse(line) as Rollout;
  for (const s of [r.root, ...r.workers]) {
    const pieces = dec.pieces(s.tokens);
    assert.equal(pieces.length, s.tokens.length);
    const text = pieces.join('');
    assert.ok(!text.includes('\uFFFD'), s.id);
    for (const turn of s.turns) assert.equal(pieces.slice(turn.sampleStart, turn.end).join(''), `${turn.text}<|im_end|>`);
    for (const m of s.messages) assert.ok(text.includes(`<|im_start|>${m.role}\n${m.content}<|im_end|>`), `${s.id}: ${m.role} message`);
  }
});

test('findTokenizerDir: run dir, model/, config.yaml paths, newest checkpoint, explicit dir', async (t) => {
  const base = await mkdtemp(join(tmpdir(), 'matpo-tok-'));
  t.after(() => rm(base, { recursive: true, force: true }));
  const tokFiles = join(FIXTURE, 'model');
  const run = join(base, 'run');
  await mkdir(run);
  assert.equal(await findTokenizerDir(run), null);
  await mkdir(join(run, 'checkpoints', 'step-000002'), { recursive: true });
  await mkdir(join(run, 'checkpoints', 'step-000004'), { recursive: true });
  await cp(tokFiles, join(run, 'checkpoints', 'step-000002'), { recursive: true });
  await cp(tokFiles, join(run, 'checkpoints', 'step-000004'), { recursive: true });
  assert.equal(await findTokenizerDir(run), resolve(run, 'checkpoints', 'step-000004'));
  await cp(tokFiles, join(base, 'shared-model'), { recursive: true });
  await writeFile(join(run, 'config.yaml'), 'policy:\n  kind: embedded\n  model: ../shared-model\n');
  assert.equal(await findTokenizerDir(run), join(base, 'shared-model'));
  await cp(tokFiles, join(run, 'model'), { recursive: true });
  assert.equal(await findTokenizerDir(run), join(run, 'model'));
  assert.equal(await findTokenizerDir(run, join(base, 'shared-model')), join(base, 'shared-model'));
  assert.equal(await findTokenizerDir(run, join(base, 'nowhere')), null);
});
