// `matpo logprobs` as a real process through bin/matpo.js (tsx registered by the bin, engine on a
// worker thread): exact output form (n−1 numbers per line), values equal to the in-process engine,
// and one-line errors for bad input.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { referenceKernels } from '../../engine/reference.ts';
import { presetConfig } from '../../model/config.ts';
import { buildLayout, initParams } from '../../model/params.ts';
import { saveModelDir } from '../../model/checkpoint.ts';
import { Engine } from '../../model/engine.ts';

const BIN = fileURLToPath(new URL('../../../bin/matpo.js', import.meta.url));
let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'matpo-logprobs-'));
  const cfg = presetConfig('micro', { vocabSize: 100, family: 'qwen2', qkNorm: false, qkvBias: true });
  const layout = buildLayout(cfg);
  const w = new Float32Array(layout.total);
  initParams(w, layout, { ...cfg, initializerRange: 0.3 }, 5);
  saveModelDir(join(dir, 'model'), { config: cfg, layout, weights: w });
});
after(() => rmSync(dir, { recursive: true, force: true }));

function run(args: string[]) {
  return spawnSync(process.execPath, [BIN, 'logprobs', ...args], { encoding: 'utf8', timeout: 60_000 });
}

test('prints n−1 logprobs per input line, equal to the in-process engine', () => {
  const seqs = [[1, 2, 3, 4, 5], [9], [10, 20, 30, 40, 50, 60, 70, 80, 90, 99, 0], [7, 7]];
  const input = join(dir, 'in.jsonl');
  writeFileSync(input, seqs.map((tokens) => JSON.stringify({ tokens })).join('\n') + '\n');
  const r = run(['--model', join(dir, 'model'), '--input', input, '--batch-tokens', '8', '--kernels', 'reference']);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { logprobs: number[] });
  assert.equal(lines.length, seqs.length);
  const engine = Engine.load(join(dir, 'model'), referenceKernels);
  const ref = engine.forward(seqs);
  lines.forEach((l, i) => {
    assert.deepEqual(Object.keys(l), ['logprobs']);
    assert.equal(l.logprobs.length, seqs[i].length - 1);
    l.logprobs.forEach((v, t) => assert.ok(Math.abs(v - ref.logprobs[i][t + 1]) < 1e-6));
  });
});

test('bad input is a one-line error naming the file, line and field', () => {
  const input = join(dir, 'bad.jsonl');
  writeFileSync(input, '{"tokens":[1,2]}\n{"tokens":[1,"x"]}\n');
  let r = run(['--model', join(dir, 'model'), '--input', input]);
  assert.equal(r.status, 1);
  assert.match(r.stderr.trim(), /^matpo logprobs: .*bad\.jsonl:2: field "tokens\[1\]": expected a non-negative integer/);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  writeFileSync(input, '{"tokens":[1,2]}\n{"tokens":[1,100]}\n');
  r = run(['--model', join(dir, 'model'), '--input', input]);
  assert.equal(r.status, 1);
  assert.match(r.stderr.trim(), /bad\.jsonl:2: field "tokens\[1\]": token id 100 is out of range \[0, 100\)/);
  r = run(['--model', join(dir, 'nope'), '--input', input]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /model directory not found/);
});
