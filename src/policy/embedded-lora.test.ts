// EmbeddedPolicy with LoRA through a real worker thread: load with a fresh adapter (outputs equal the
// base), train steps, `save` writes the PEFT adapter, loading base + that adapter reproduces the
// trained logprobs and samples, `saveMerged` writes a plain model with the same logprobs, and
// `loadAdapter` swaps adapters in a running policy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '../core/errors.ts';
import { presetConfig } from '../model/config.ts';
import { buildLayout, initParams } from '../model/params.ts';
import { saveModelDir } from '../model/checkpoint.ts';
import { createTestTokenizer } from '../model/tokenizer.ts';
import { EmbeddedPolicy } from './embedded.ts';
import { maxDiff, plainDatum, summedNll } from '../testing/datums.ts';

test('EmbeddedPolicy with LoRA: train, save the adapter, reload base + adapter, merged export', async () => {
  const root = mkdtempSync(join(tmpdir(), 'matpo-embedded-lora-'));
  const dir = join(root, 'base');
  const policies: EmbeddedPolicy[] = [];
  try {
    const tok = await createTestTokenizer(dir);
    const cfg = presetConfig('micro', { vocabSize: tok.vocabSize });
    const layout = buildLayout(cfg);
    const w = new Float32Array(layout.total);
    initParams(w, layout, { ...cfg, initializerRange: 0.3 }, 42);
    saveModelDir(dir, { config: cfg, layout, weights: w, tokenizerDir: dir });
    const seqs = [
      [5, 9, 14, 3, 22, 8],
      [7, 7, 30, 2],
    ].map((t) => plainDatum(t, 1));

    const base = await EmbeddedPolicy.load(dir, { seed: 1 });
    policies.push(base);
    const baseLp = (await base.forward(seqs)).logprobs;
    assert.equal(base.lora, null);
    await assert.rejects(base.saveAdapter(join(root, 'x')), InvalidArgumentError);

    const lora = { rank: 4, alpha: 16, trainAttn: true, trainMlp: true, trainUnembed: false, seed: 7 };
    const p = await EmbeddedPolicy.load(dir, { seed: 1, lora });
    policies.push(p);
    assert.deepEqual(p.lora, lora);
    assert.ok(p.info.params < layout.total / 4, `adapter params ${p.info.params} vs model ${layout.total}`);
    assert.deepEqual((await p.forward(seqs)).logprobs, baseLp, 'a fresh adapter leaves the model unchanged');
    for (let s = 0; s < 5; s++) {
      await p.forwardBackward(seqs, summedNll);
      await p.optimStep({ learningRate: 1e-2 });
    }
    const trained = (await p.forward(seqs)).logprobs;
    assert.ok(maxDiff(trained, baseLp) > 1e-2);
    const sample = await p.sample([5, 9], { maxNewTokens: 6, temperature: 0 });

    await p.save(join(root, 'ckpt'));
    assert.deepEqual(readdirSync(join(root, 'ckpt')).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
    await p.saveMerged(join(root, 'merged'));
    assert.ok(existsSync(join(root, 'merged', 'config.json')) && existsSync(join(root, 'merged', 'tokenizer.json')));

    const q = await EmbeddedPolicy.load(dir, { seed: 1, adapter: join(root, 'ckpt') });
    policies.push(q);
    assert.deepEqual(q.lora, lora);
    assert.deepEqual((await q.forward(seqs)).logprobs, trained);
    assert.deepEqual(await q.sample([5, 9], { maxNewTokens: 6, temperature: 0 }), sample);

    const m = await EmbeddedPolicy.load(join(root, 'merged'), { seed: 1 });
    policies.push(m);
    assert.ok(maxDiff((await m.forward(seqs)).logprobs, trained) < 1e-4);

    // swap adapters in a running policy: the base policy takes the trained adapter
    assert.deepEqual(await base.loadAdapter(join(root, 'ckpt')), lora);
    assert.deepEqual((await base.forward(seqs)).logprobs, trained);
    assert.deepEqual(await base.sample([5, 9], { maxNewTokens: 6, temperature: 0 }), sample);

    await assert.rejects(EmbeddedPolicy.load(dir, { lora, adapter: join(root, 'ckpt') }), /adapter: give either lora/);
  } finally {
    for (const p of policies) await p.close();
    rmSync(root, { recursive: true, force: true });
  }
});
