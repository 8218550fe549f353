// `matpo sft --max-steps N` as a real process: training stops after N optimizer steps (here inside
// the first of two epochs), sft-metrics.jsonl has exactly those steps, and the written model is a
// complete directory (weights moved, tokenizer alongside). A negative limit is a one-line error naming the flag.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { presetConfig } from '../../model/config.ts';
import { buildLayout, initParams } from '../../model/params.ts';
import { loadModelDir, saveModelDir } from '../../model/checkpoint.ts';
import { createTestTokenizer } from '../../model/tokenizer.ts';

const BIN = fileURLToPath(new URL('../../../bin/matpo.js', import.meta.url));

test('sft --max-steps stops after that many optimizer steps and writes a complete model', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-sft-cli-'));
  try {
    const model = join(dir, 'model');
    const tok = await createTestTokenizer(model);
    const cfg = presetConfig('micro', { vocabSize: tok.vocabSize });
    const layout = buildLayout(cfg);
    const weights = new Float32Array(layout.total);
    initParams(weights, layout, cfg, 5);
    saveModelDir(model, { config: cfg, layout, weights });
    const data = join(dir, 'transcripts.jsonl');
    const lines = Array.from({ length: 24 }, (_, i) =>
      JSON.stringify({
        messages: [
          { role: 'user', content: `What is ${i} plus one?` },
          { role: 'assistant', content: `It is ${i + 1}.` },
        ],
      }),
    );
    writeFileSync(data, lines.join('\n') + '\n');
    const out = join(dir, 'out');
    // one transcript is ~20 tokens: 64-token batches give several steps per epoch
    const args = [
      'sft',
      '--model',
      model,
      '--data',
      data,
      '--out',
      out,
      '--epochs',
      '2',
      '--batch-tokens',
      '64',
      '--lr',
      '1e-2',
      '--threads',
      '1',
      '--no-progress',
    ];
    const r = spawnSync(process.execPath, [BIN, ...args, '--max-steps', '3'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /, 3 steps \(0 skipped\)/);
    assert.match(r.stderr, /sft: epoch 1\/2 train loss/);
    assert.doesNotMatch(r.stderr, /epoch 2\/2/);
    const metrics = readFileSync(join(out, 'sft-metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      metrics.filter((m) => m['sft/loss'] !== undefined).map((m) => m.step),
      [1, 2, 3],
    );
    assert.equal(metrics.at(-1).step, 3);
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) assert.ok(existsSync(join(out, f)), f);
    const trained = loadModelDir(out).weights;
    assert.ok(trained.some((w, i) => w !== weights[i]));

    const bad = spawnSync(process.execPath, [BIN, ...args, '--max-steps=-1'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(bad.status, 1);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    assert.match(bad.stderr, /^matpo sft: --max-steps: /);
    // written with a space, node's parser takes "-1" for a flag: still one line, naming the flag
    const spaced = spawnSync(process.execPath, [BIN, ...args, '--max-steps', '-1'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(spaced.status, 1);
    assert.equal(spaced.stderr.trim().split('\n').length, 1, spaced.stderr);
    assert.match(spaced.stderr, /^matpo sft: Option '--max-steps' argument is ambiguous\. .*--max-steps=-XYZ/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
