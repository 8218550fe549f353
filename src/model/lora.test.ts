// LoRA in the training path: float64 gradients of A and B against central finite differences (four
// families, all modules), the base untouched by backward, B = 0 leaves outputs bit-identical, the
// native kernels agree with the float64 reference, and config validation names the field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { reference } from '../engine/reference.ts';
import { getKernels } from '../engine/index.ts';
import { ConfigError } from '../core/errors.ts';
import { presetConfig } from './config.ts';
import { LoraAdapter, loraConfigFromTinker, parseLoraConfig, targetModulesOf } from './lora.ts';
import { buildLayout } from './params.ts';
import { Transformer, packSequences } from './transformer.ts';
import { Rng } from '../util/rng.ts';
import { FAMILIES, randomWeights } from '../testing/tiny-model.ts';

/** Non-zero B (and A) so that every adapter entry has a gradient. */
function randomiseAdapter(a: LoraAdapter<Float32Array | Float64Array>, seed: number, scale = 0.3): void {
  const rng = new Rng(seed);
  for (let i = 0; i < a.params.length; i++) a.params[i] = (rng.next() - 0.5) * scale;
}

function lossOf(lp: ArrayLike<number>, ent: ArrayLike<number>, wl: Float64Array, we: Float64Array): number {
  let s = 0;
  for (let t = 0; t < wl.length; t++) s += wl[t] * lp[t] + we[t] * ent[t];
  return s;
}

for (const [name, overrides] of Object.entries(FAMILIES)) {
  test(`LoRA float64 gradients of A and B vs central differences (micro, ${name}, all modules)`, () => {
    const cfg = presetConfig('micro', { ...overrides, vocabSize: 64, ropeTheta: 500 });
    const layout = buildLayout(cfg);
    const w = randomWeights(cfg, new Float64Array(layout.total), 7);
    const wCopy = Float64Array.from(w);
    const model = new Transformer(cfg, reference, w);
    const all = { rank: 3, alpha: 5, trainAttn: true, trainMlp: true, trainUnembed: true, seed: 4 };
    const adapter = new LoraAdapter(cfg, all, { like: new Float64Array(0) });
    randomiseAdapter(adapter, 9);
    model.setLora(adapter);
    const batch = packSequences([[1, 5, 9, 2, 33, 60], [4], [7, 7, 12, 40, 3, 8, 8, 63, 0]]);
    const T = batch.tokens.length;
    const rng = new Rng(3);
    const wl = new Float64Array(T).map(() => rng.next() - 0.5);
    const we = new Float64Array(T).map(() => rng.next() - 0.5);
    model.zeroGrads();
    adapter.zeroGrads();
    const f = model.forward(batch);
    model.backward(f.ctx, wl, we);
    const grads = Float64Array.from(adapter.grads);
    // the frozen base: no weight gradient is computed (norm-weight gradients are a by-product of dx)
    for (const t of layout.tensors) {
      if (t.name.includes('norm')) continue;
      for (let i = t.offset; i < t.offset + t.size; i++) assert.equal(model.grads[i], 0, `${t.name} got a gradient`);
    }
    const h = 1e-5;
    let maxRel = 0;
    let maxAbs = 0;
    let checked = 0;
    for (const t of adapter.tensors) {
      for (let j = 0; j < 5; j++) {
        const i = t.offset + rng.int(t.size);
        const p = adapter.params;
        const orig = p[i];
        p[i] = orig + h;
        const fp = model.forward(batch, { needGrad: false });
        const lp = lossOf(fp.logprobs, fp.entropies, wl, we);
        p[i] = orig - h;
        const fm = model.forward(batch, { needGrad: false });
        const lm = lossOf(fm.logprobs, fm.entropies, wl, we);
        p[i] = orig;
        const num = (lp - lm) / (2 * h);
        const abs = Math.abs(num - grads[i]);
        maxAbs = Math.max(maxAbs, abs);
        if (Math.abs(num) > 1e-6) maxRel = Math.max(maxRel, abs / Math.abs(num));
        assert.ok(abs < 1e-6 + 1e-5 * Math.abs(num), `${t.name}[${i - t.offset}]: analytic ${grads[i]} vs numeric ${num}`);
        checked++;
      }
    }
    assert.deepEqual(w, wCopy, 'base weights changed');
    const errs = `max abs err ${maxAbs.toExponential(2)}, max rel err ${maxRel.toExponential(2)}`;
    process.stdout.write(`# lora fd ${name}: ${checked} entries, ${errs}\n`);
  });
}

test('LoRA with B = 0 (fresh adapter) leaves logprobs and entropies bit-identical; removing it restores the plain path', () => {
  const cfg = presetConfig('micro', { vocabSize: 64 });
  const w = randomWeights(cfg, new Float32Array(buildLayout(cfg).total), 2);
  const kernels = getKernels();
  const model = new Transformer(cfg, kernels, w);
  const batch = packSequences([
    [3, 9, 27, 1, 50],
    [8, 8, 2],
  ]);
  const f0 = model.forward(batch);
  const lp0 = Float32Array.from(f0.logprobs);
  const ent0 = Float32Array.from(f0.entropies);
  const adapter = new LoraAdapter(cfg, { rank: 4, alpha: 32, trainAttn: true, trainMlp: true, trainUnembed: true, seed: 1 });
  assert.ok(adapter.linears.every((l) => l.B.every((b) => b === 0)) && adapter.linears.every((l) => l.A.some((a) => a !== 0)));
  model.setLora(adapter);
  const f1 = model.forward(batch);
  assert.deepEqual(Float32Array.from(f1.logprobs), lp0);
  assert.deepEqual(Float32Array.from(f1.entropies), ent0);
  randomiseAdapter(adapter, 5);
  const f2 = model.forward(batch);
  assert.notDeepEqual(Float32Array.from(f2.logprobs), lp0, 'a non-zero adapter must change the output');
  model.setLora(null);
  assert.deepEqual(Float32Array.from(model.forward(batch).logprobs), lp0);
});

test('LoRA init follows PEFT: A ~ U(-1/sqrt(in), 1/sqrt(in)) seeded by config.seed, B = 0', () => {
  const cfg = presetConfig('micro', { vocabSize: 64 });
  const c = { rank: 8, alpha: 16, trainAttn: true, trainMlp: true, trainUnembed: false, seed: 11 };
  const a = new LoraAdapter(cfg, c);
  const b = new LoraAdapter(cfg, c);
  const other = new LoraAdapter(cfg, { ...c, seed: 12 });
  assert.deepEqual(a.params, b.params);
  assert.notDeepEqual(a.params, other.params);
  assert.equal(a.scale, 2);
  for (const lin of a.linears) {
    const bound = 1 / Math.sqrt(lin.inF);
    let maxAbs = 0;
    for (const x of lin.A) maxAbs = Math.max(maxAbs, Math.abs(x));
    assert.ok(maxAbs <= bound && maxAbs > 0.8 * bound, `${lin.module}: max |A| ${maxAbs} vs bound ${bound}`);
  }
  assert.deepEqual(a.targets, ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
  assert.equal(a.head, null);
});

const noNative = getKernels().name !== 'native' && 'native addon not built';
test('LoRA native kernels agree with the float64 reference (forward and adapter gradients)', { skip: noNative }, () => {
  const cfg = presetConfig('micro', { vocabSize: 64, tieWordEmbeddings: true });
  const layout = buildLayout(cfg);
  const w64 = randomWeights(cfg, new Float64Array(layout.total), 3);
  const w32 = Float32Array.from(w64);
  const c = { rank: 4, alpha: 8, trainAttn: true, trainMlp: true, trainUnembed: true, seed: 2 };
  const a64 = new LoraAdapter(cfg, c, { like: new Float64Array(0) });
  randomiseAdapter(a64, 6);
  const a32 = new LoraAdapter(cfg, c);
  a32.params.set(a64.params);
  const m64 = new Transformer(cfg, reference, w64);
  const m32 = new Transformer(cfg, getKernels(), w32);
  m64.setLora(a64);
  m32.setLora(a32);
  const batch = packSequences([
    [1, 2, 3, 4, 5, 6, 7],
    [9, 10, 11],
  ]);
  const T = batch.tokens.length;
  const dl = new Float64Array(T).fill(-1);
  const f64 = m64.forward(batch);
  m64.backward(f64.ctx, dl);
  const f32 = m32.forward(batch);
  m32.backward(f32.ctx, Float32Array.from(dl));
  let lpErr = 0;
  for (let t = 0; t < T; t++) lpErr = Math.max(lpErr, Math.abs(f64.logprobs[t] - f32.logprobs[t]));
  let gErr = 0;
  let gMax = 0;
  for (let i = 0; i < a64.total; i++) {
    gErr = Math.max(gErr, Math.abs(a64.grads[i] - a32.grads[i]));
    gMax = Math.max(gMax, Math.abs(a64.grads[i]));
  }
  assert.ok(lpErr < 1e-4, `logprob diff ${lpErr}`);
  assert.ok(gErr < 1e-4 * Math.max(1, gMax), `grad diff ${gErr} (max grad ${gMax})`);
});

test('LoRA config: defaults, Tinker names, and one-line errors naming the field', () => {
  assert.deepEqual(parseLoraConfig({ rank: 8 }), { rank: 8, alpha: 32, trainAttn: true, trainMlp: true, trainUnembed: true, seed: 0 });
  assert.deepEqual(loraConfigFromTinker({ rank: 16, seed: 3, train_attn: true, train_mlp: false, train_unembed: false }), {
    rank: 16,
    alpha: 32,
    trainAttn: true,
    trainMlp: false,
    trainUnembed: false,
    seed: 3,
  });
  const names = (re: RegExp) => (e: unknown) => e instanceof ConfigError && re.test(e.message) && !e.message.includes('\n');
  assert.throws(() => parseLoraConfig({ rank: 0 }), names(/^lora\.rank: /));
  assert.throws(() => parseLoraConfig({ rank: 4, alpha: -1 }), names(/^lora\.alpha: /));
  assert.throws(() => parseLoraConfig({ rank: 4, dropout: 0.1 }), names(/^lora: .*dropout/));
  const none = { rank: 4, trainAttn: false, trainMlp: false, trainUnembed: false };
  assert.throws(() => parseLoraConfig(none), names(/^lora\.trainAttn: at least one/));
  assert.throws(() => loraConfigFromTinker({ rank: 2.5 }), names(/^lora_config\.rank: /));
  assert.throws(() => loraConfigFromTinker({ rank: 2, train_mlp: 'yes' }), names(/^lora_config\.train_mlp: /));
  assert.throws(() => loraConfigFromTinker({ rank: 2, dropout: 0 }), names(/^lora_config\.dropout: unknown field/));
  const groups = targetModulesOf({ trainAttn: false, trainMlp: true, trainUnembed: true });
  assert.deepEqual(groups, ['gate_proj', 'up_proj', 'down_proj', 'lm_head']);
});
