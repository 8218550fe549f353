// Tests of the training path: full-model gradient check against central finite differences in
// float64 (reference kernels) for the Qwen3, Qwen2 (biases) and Llama (untied) families, chunked
// LM head equivalence, native-vs-reference agreement when the addon is built, and memorisation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { reference } from '../engine/reference.ts';
import type { Kernels } from '../engine/kernels.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import { presetConfig } from './config.ts';
import { buildLayout } from './params.ts';
import { Transformer, packSequences, type PackedBatch } from './transformer.ts';
import { Rng } from '../util/rng.ts';
import { FAMILIES, randomWeights } from '../testing/tiny-model.ts';

function lossOf(lp: ArrayLike<number>, ent: ArrayLike<number>, wl: Float64Array, we: Float64Array): number {
  let s = 0;
  for (let t = 0; t < wl.length; t++) s += wl[t] * lp[t] + we[t] * ent[t];
  return s;
}

for (const [name, overrides] of Object.entries(FAMILIES)) {
  test(`float64 gradient check vs central differences (micro, ${name})`, () => {
    const cfg = presetConfig('micro', { ...overrides, vocabSize: 64, ropeTheta: 500 });
    const layout = buildLayout(cfg);
    const w = randomWeights(cfg, new Float64Array(layout.total), 7);
    const model = new Transformer(cfg, reference, w);
    const batch = packSequences([[1, 5, 9, 2, 33, 60], [4], [7, 7, 12, 40, 3, 8, 8, 63, 0]]);
    const T = batch.tokens.length;
    const rng = new Rng(3);
    const wl = new Float64Array(T).map(() => rng.next() - 0.5);
    const we = new Float64Array(T).map(() => rng.next() - 0.5);
    model.zeroGrads();
    const f = model.forward(batch);
    const base = lossOf(f.logprobs, f.entropies, wl, we);
    assert.ok(Number.isFinite(base));
    model.backward(f.ctx, wl, we);
    const grads = Float64Array.from(model.grads);

    const h = 1e-5;
    let maxRel = 0;
    let maxAbs = 0;
    let checked = 0;
    for (const t of layout.tensors) {
      // 6 random entries per tensor plus, for the embeddings, rows of tokens that occur
      const idx: number[] = [];
      for (let i = 0; i < 6; i++) idx.push(t.offset + rng.int(t.size));
      if (t.name.includes('embed') || t.name.includes('lm_head')) {
        for (const tok of [7, 8, 63]) idx.push(t.offset + tok * cfg.hiddenSize + rng.int(cfg.hiddenSize));
      }
      for (const i of idx) {
        const orig = w[i];
        w[i] = orig + h;
        const fp = model.forward(batch, { needGrad: false });
        const lp = lossOf(fp.logprobs, fp.entropies, wl, we);
        w[i] = orig - h;
        const fm = model.forward(batch, { needGrad: false });
        const lm = lossOf(fm.logprobs, fm.entropies, wl, we);
        w[i] = orig;
        const num = (lp - lm) / (2 * h);
        const an = grads[i];
        const abs = Math.abs(num - an);
        maxAbs = Math.max(maxAbs, abs);
        const denom = Math.max(Math.abs(num), Math.abs(an));
        if (denom > 1e-6) maxRel = Math.max(maxRel, abs / denom);
        checked++;
      }
    }
    console.log(`# gradcheck ${name}: ${checked} params, max rel err ${maxRel.toExponential(2)}, max abs err ${maxAbs.toExponential(2)}`);
    assert.ok(maxRel < 1e-6, `max relative error ${maxRel}`);
  });
}

test('first token of each sequence gets logprob 0; logprobs match a one-sequence-at-a-time forward', () => {
  const cfg = presetConfig('micro', { vocabSize: 64 });
  const w = randomWeights(cfg, new Float64Array(buildLayout(cfg).total), 11);
  const model = new Transformer(cfg, reference, w);
  const seqs = [
    [1, 2, 3, 4],
    [5, 6],
    [9, 10, 11, 12, 13],
  ];
  const packed = model.forward(packSequences(seqs), { needGrad: false });
  const all = Array.from(packed.logprobs);
  let o = 0;
  for (const s of seqs) {
    const single = Array.from(model.forward(packSequences([s]), { needGrad: false }).logprobs);
    assert.equal(all[o], 0);
    for (let i = 0; i < s.length; i++) assert.ok(Math.abs(all[o + i] - single[i]) < 1e-12);
    o += s.length;
  }
});

test('LM head chunking: a batch longer than one chunk gives the same logprobs and gradients as row-by-row', () => {
  // vocab 4096 → chunk of 512 tokens; a 600-token batch spans two chunks
  const cfg = presetConfig('micro', { vocabSize: 4096, numLayers: 1 });
  const w = randomWeights(cfg, new Float32Array(buildLayout(cfg).total), 5);
  const model = new Transformer(cfg, reference as unknown as Kernels, w);
  const rng = new Rng(9);
  const seq = Array.from({ length: 600 }, () => rng.int(4096));
  const f = model.forward(packSequences([seq.slice(0, 550), seq.slice(550)]));
  const lp = Float64Array.from(f.logprobs);
  const d = new Float32Array(600).fill(1);
  model.backward(f.ctx, d);
  const g1 = Float64Array.from(model.grads);
  // same sequences one at a time (each fits in a chunk-sized pass at different offsets)
  model.zeroGrads();
  const a = model.forward(packSequences([seq.slice(0, 550)]));
  for (let i = 0; i < 550; i++) assert.ok(Math.abs(a.logprobs[i] - lp[i]) < 1e-4);
  model.backward(a.ctx, new Float32Array(550).fill(1));
  const b = model.forward(packSequences([seq.slice(550)]));
  for (let i = 0; i < 50; i++) assert.ok(Math.abs(b.logprobs[i] - lp[550 + i]) < 1e-4);
  model.backward(b.ctx, new Float32Array(50).fill(1));
  let maxDiff = 0;
  let maxG = 0;
  for (let i = 0; i < g1.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(g1[i] - model.grads[i]));
    maxG = Math.max(maxG, Math.abs(g1[i]));
  }
  assert.ok(maxDiff < 1e-4 * maxG, `grad diff ${maxDiff} vs max ${maxG}`);
});

test('out-of-range token ids are an InvalidArgumentError naming the index', () => {
  const cfg = presetConfig('micro', { vocabSize: 64 });
  const model = new Transformer(cfg, reference as unknown as Kernels, new Float32Array(buildLayout(cfg).total));
  assert.throws(
    () =>
      model.forward(
        packSequences([
          [1, 2],
          [3, 64],
        ]),
      ),
    (e: unknown) => e instanceof InvalidArgumentError && /tokens\[3\]/.test(e.message),
  );
  assert.throws(() => model.forward(packSequences([[1, -1]])), InvalidArgumentError);
  const bad: PackedBatch = { tokens: new Int32Array([1, 2]), cuSeqlens: new Int32Array([0, 3]) };
  assert.throws(() => model.forward(bad), InvalidArgumentError);
});

test('native (float32) forward and backward agree with the reference kernels', async (t) => {
  let native: Kernels;
  try {
    native = (await import('../engine/native.ts')).loadNativeKernels();
  } catch (err) {
    t.skip(`native addon not built: ${(err as Error).message.split('\n')[0]}`);
    return;
  }
  for (const [name, overrides] of Object.entries(FAMILIES)) {
    const cfg = presetConfig('micro', { ...overrides, vocabSize: 300 });
    const w = randomWeights(cfg, new Float32Array(buildLayout(cfg).total), 21);
    const a = new Transformer(cfg, native, w);
    const b = new Transformer(cfg, reference as unknown as Kernels, Float32Array.from(w));
    const rng = new Rng(4);
    const seqs = [37, 3, 61, 1].map((n) => Array.from({ length: n }, () => rng.int(300)));
    const fa = a.forward(packSequences(seqs));
    const fb = b.forward(packSequences(seqs));
    let maxLp = 0;
    for (let i = 0; i < fa.logprobs.length; i++) {
      maxLp = Math.max(maxLp, Math.abs(fa.logprobs[i] - fb.logprobs[i]), Math.abs(fa.entropies[i] - fb.entropies[i]));
    }
    const dl = new Float32Array(fa.logprobs.length).map((_, i) => Math.sin(i));
    const de = new Float32Array(fa.logprobs.length).map((_, i) => Math.cos(i) * 0.3);
    a.backward(fa.ctx, dl, de);
    b.backward(fb.ctx, dl, de);
    let maxG = 0;
    let maxDiff = 0;
    for (let i = 0; i < a.grads.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(a.grads[i] - b.grads[i]));
      maxG = Math.max(maxG, Math.abs(b.grads[i]));
    }
    console.log(
      `# native vs reference ${name}: logprob/entropy max abs ${maxLp.toExponential(2)}, ` +
        `grad max abs ${maxDiff.toExponential(2)} (max |grad| ${maxG.toFixed(2)})`,
    );
    assert.ok(maxLp < 1e-4, `${name}: logprob diff ${maxLp}`);
    assert.ok(maxDiff < 1e-5 * Math.max(1, maxG) * 10, `${name}: grad diff ${maxDiff}`);
  }
});
