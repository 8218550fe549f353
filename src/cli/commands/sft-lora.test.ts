// `matpo sft --lora-rank` as a real process: a tiny model with a real tokenizer trains a LoRA adapter
// on chat transcripts; --out holds the PEFT adapter (not a model), the held-out loss falls, base +
// adapter loads in the embedded engine, and `matpo merge-lora` writes a model with the same logprobs.
// Bad LoRA flags are one-line errors naming the flag.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { presetConfig } from '../../model/config.ts';
import { buildLayout, initParams } from '../../model/params.ts';
import { saveModelDir } from '../../model/checkpoint.ts';
import { createTestTokenizer } from '../../model/tokenizer.ts';
import { EmbeddedPolicy } from '../../policy/embedded.ts';

const BIN = fileURLToPath(new URL('../../../bin/matpo.js', import.meta.url));

test('sft --lora-rank trains a PEFT adapter on the frozen model', { timeout: 120_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'matpo-sft-lora-'));
  try {
    const model = join(root, 'base');
    const tok = await createTestTokenizer(model);
    const cfg = presetConfig('micro', { vocabSize: tok.vocabSize });
    const layout = buildLayout(cfg);
    const w = new Float32Array(layout.total);
    initParams(w, layout, cfg, 3);
    saveModelDir(model, { config: cfg, layout, weights: w, tokenizerDir: model });
    const lines = Array.from({ length: 20 }, (_, i) =>
      JSON.stringify({
        messages: [
          { role: 'user', content: `What is ${i} plus one?` },
          { role: 'assistant', content: `It is ${i + 1}.` },
        ],
      }),
    );
    writeFileSync(join(root, 't.jsonl'), lines.join('\n') + '\n');
    const out = join(root, 'out');
    const base = ['sft', '--model', model, '--data', join(root, 't.jsonl'), '--out', out, '--threads', '1', '--no-progress'];
    const run = (extra: string[]) => spawnSync(process.execPath, [BIN, ...base, ...extra], { encoding: 'utf8', timeout: 100_000 });
    const bad = run(['--lora-rank', '2.5']);
    assert.equal(bad.status, 1);
    assert.equal(bad.stderr.trim(), 'matpo sft: --lora-rank: Invalid input: expected int, received number');
    const r = run([
      '--lora-rank',
      '4',
      '--lora-alpha',
      '16',
      '--epochs',
      '3',
      '--lr',
      '5e-3',
      '--eval-fraction',
      '0.2',
      '--batch-tokens',
      '256',
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /LoRA adapter \(r=4, alpha=16, PEFT layout\) written to /);
    const losses = /held-out loss per assistant token: (.*)/.exec(r.stdout)![1].split(' → ').map(Number);
    assert.ok(losses[losses.length - 1] < losses[0], `held-out loss ${losses.join(' → ')}`);
    assert.ok(existsSync(join(out, 'adapter_model.safetensors')) && !existsSync(join(out, 'model.safetensors')));
    const c = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    assert.deepEqual([c.r, c.lora_alpha, c.peft_type], [4, 16, 'LORA']);
    assert.deepEqual(
      c.target_modules,
      ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
      'no lm_head without --lora-unembed',
    );
    const p = await EmbeddedPolicy.load(model, { threads: 1, adapter: out });
    assert.equal(p.lora?.rank, 4);
    // matpo merge-lora: a plain model directory with the same logprobs as base + adapter
    const merged = join(root, 'merged');
    const mergeArgs = ['merge-lora', '--model', model, '--lora', out, '--out', merged];
    const m = spawnSync(process.execPath, [BIN, ...mergeArgs], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(m.status, 0, m.stderr);
    assert.match(m.stdout, /LoRA r=4, alpha=16 on q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, merged \(F32\)/);
    const badDtype = spawnSync(process.execPath, [BIN, ...mergeArgs, '--dtype', 'f8'], { encoding: 'utf8' });
    assert.equal(badDtype.stderr.trim(), 'matpo merge-lora: --dtype: expected f32, bf16 or f16, got "f8"');
    const mp = await EmbeddedPolicy.load(merged, { threads: 1 });
    const seqs = [{ tokens: tok.encode('What is 3 plus one? It is 4.') }];
    const a = (await p.forward(seqs)).logprobs[0];
    const b = (await mp.forward(seqs)).logprobs[0];
    a.forEach((x, i) => assert.ok(Math.abs(x - b[i]) < 1e-4, `token ${i}: ${x} vs ${b[i]}`));
    assert.ok(existsSync(join(merged, 'tokenizer.json')));
    await mp.close();
    await p.close();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('train --lora-rank / --lora-alpha: bad values are one-line errors naming the flag or the config field', () => {
  const root = mkdtempSync(join(tmpdir(), 'matpo-train-lora-'));
  try {
    const cfgFile = join(root, 'run.yaml');
    writeFileSync(cfgFile, 'run:\n  steps: 1\n');
    const run = (extra: string[]) =>
      spawnSync(process.execPath, [BIN, 'train', '--config', cfgFile, ...extra], { encoding: 'utf8', timeout: 60_000 });
    const a = run(['--lora-rank', 'four']);
    assert.equal(a.status, 1);
    assert.equal(a.stderr.trim(), 'matpo train: --lora-rank: expected an integer, got "four"');
    const b = run(['--lora-rank', '4', '--lora-alpha=-2']);
    assert.equal(b.status, 1);
    assert.match(b.stderr.trim(), /^matpo train: .*model\.loraAlpha: /);
    assert.equal(b.stderr.trim().split('\n').length, 1);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
