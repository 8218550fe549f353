// Independent numerical reference: the same weights and tokens through plain eager PyTorch
// (bench/engine_torch.py, which reads our safetensors directly) must give the same logprobs as our
// engine, for Qwen3 (tied, q/k norm), Qwen2 (qkv bias) and Llama (untied). Skipped when no python3
// can import torch (Debian: apt-get install python3-torch).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getKernels } from '../engine/index.ts';
import { presetConfig, type ModelConfig } from './config.ts';
import { buildLayout, initParams } from './params.ts';
import { saveModelDir } from './checkpoint.ts';
import { Engine } from './engine.ts';
import { Rng } from '../util/rng.ts';

const SCRIPT = fileURLToPath(new URL('../../bench/engine_torch.py', import.meta.url));

function torchPython(): string | null {
  for (const python of ['/usr/bin/python3', 'python3']) {
    if (spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0) return python;
  }
  return null;
}

const python = torchPython();
const FAMILIES: Record<string, Partial<ModelConfig>> = {
  'qwen3 tied': { family: 'qwen3', qkNorm: true, qkvBias: false, tieWordEmbeddings: true },
  'qwen2 bias': { family: 'qwen2', qkNorm: false, qkvBias: true, tieWordEmbeddings: false },
  'llama untied': { family: 'llama', qkNorm: false, qkvBias: false, tieWordEmbeddings: false, ropeTheta: 500000 },
};

for (const [name, overrides] of Object.entries(FAMILIES)) {
  test(
    `logprobs agree with an eager PyTorch build of the same model (${name})`,
    { skip: python ? false : 'python3 with torch not found' },
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'matpo-torchref-'));
      try {
        const cfg = presetConfig('micro', { ...overrides, vocabSize: 300 });
        const layout = buildLayout(cfg);
        const w = new Float32Array(layout.total);
        initParams(w, layout, { ...cfg, initializerRange: 0.3 }, 13);
        const rng = new Rng(2);
        // norm weights and biases away from their init so they matter
        for (const t of layout.tensors)
          if (t.init !== 'normal') for (let i = t.offset; i < t.offset + t.size; i++) w[i] += (rng.next() - 0.5) * 0.5;
        saveModelDir(dir, { config: cfg, layout, weights: w });
        const seqs = [40, 2, 97].map((n) => Array.from({ length: n }, () => rng.int(300)));
        writeFileSync(join(dir, 'in.jsonl'), seqs.map((tokens) => JSON.stringify({ tokens })).join('\n') + '\n');
        const r = spawnSync(python!, [SCRIPT, '--model', dir, '--threads', '1', 'logprobs', join(dir, 'in.jsonl')], { encoding: 'utf8' });
        assert.equal(r.status, 0, r.stderr);
        const ref = JSON.parse(r.stdout).logprobs as number[][];
        const ours = new Engine(cfg, w, getKernels()).forward(seqs);
        let maxDiff = 0;
        ref.forEach((lp, i) => {
          assert.equal(lp.length, seqs[i].length - 1);
          lp.forEach((v, t) => {
            maxDiff = Math.max(maxDiff, Math.abs(v - ours.logprobs[i][t + 1]));
          });
        });
        console.log(`# PyTorch vs matpo (${name}): max |Δ logprob| ${maxDiff.toExponential(2)}`);
        assert.ok(maxDiff < 2e-4, `max diff ${maxDiff}`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
}
