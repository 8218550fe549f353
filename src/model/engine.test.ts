// Engine tests: a tiny model memorises a short text; micro-batch gradient accumulation equals one
// big batch; non-finite gradients skip the step; optimizer state round-trips exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { referenceKernels } from '../engine/reference.ts';
import { FileFormatError, InvalidArgumentError } from '../core/errors.ts';
import type { Datum } from '../core/records.ts';
import type { LossFn } from '../core/policy.ts';
import { presetConfig } from './config.ts';
import { buildLayout, initParams } from './params.ts';
import { Engine, splitByTokens } from './engine.ts';
import { saveModelDir } from './checkpoint.ts';
import { createTestTokenizer, loadTokenizer } from './tokenizer.ts';
import { CHATML_TOOLS_TEMPLATE } from './chat-template.ts';

function datum(tokens: number[]): Datum {
  return {
    tokens,
    mask: tokens.map((_, i) => (i === 0 ? 0 : 1)),
    advantages: tokens.map(() => 0),
    oldLogprobs: tokens.map(() => 0),
    questionId: 'q',
    rolloutId: 'r',
    sequenceId: 's',
    role: 'single',
  };
}

/** Mean negative log-likelihood over all predicted tokens of the whole batch (normalised by a batch constant). */
function nllLoss(totalTokens: number): LossFn {
  return (datums, fwd) => {
    let loss = 0;
    const dLogprobs = datums.map((d, i) => {
      const g = new Float32Array(d.tokens.length);
      for (let t = 0; t < d.tokens.length; t++) {
        if (!d.mask[t]) continue;
        loss -= fwd.logprobs[i][t] / totalTokens;
        g[t] = -1 / totalTokens;
      }
      return g;
    });
    return { loss, dLogprobs, metrics: { tokens: datums.reduce((a, d) => a + d.tokens.length, 0) } };
  };
}

function microEngine(seed = 1, vocab = 64): Engine {
  const cfg = presetConfig('micro', { vocabSize: vocab });
  const w = new Float32Array(buildLayout(cfg).total);
  initParams(w, buildLayout(cfg), { ...cfg, initializerRange: 0.1 }, seed);
  return new Engine(cfg, w, referenceKernels);
}

test('splitByTokens packs consecutive sequences under the budget', () => {
  assert.deepEqual(splitByTokens([3, 3, 3, 10, 1], 6), [[0, 1], [2], [3], [4]]);
  assert.throws(() => splitByTokens([1], 0), InvalidArgumentError);
});

test('a tiny model memorises a short text (loss → near 0); greedy sampling then reproduces it', async () => {
  const text = 'the planner delegates; the worker searches and reports back.';
  const chars = [...new Set(text)].sort();
  const ids = [...text].map((c) => chars.indexOf(c) + 1);
  const engine = microEngine(2);
  // the sampler exists (weights packed) before training: it must see the trained weights afterwards
  const before = await engine.sampler().generate([0], { maxNewTokens: ids.length, temperature: 0 });
  assert.notDeepEqual(before.tokens, ids);
  const d = [datum([0, ...ids])];
  const loss = nllLoss(ids.length);
  const t0 = Date.now();
  let first = 0;
  let last = 0;
  for (let step = 0; step < 200; step++) {
    const r = engine.forwardBackward(d, loss);
    if (step === 0) first = r.loss;
    last = r.loss;
    engine.optimStep({ learningRate: 1e-2, maxGradNorm: 1 });
    if (last < 0.02) break;
  }
  console.log(`# memorise: loss ${first.toFixed(3)} → ${last.toFixed(4)} in ${engine.step} steps, ${Date.now() - t0} ms`);
  assert.ok(first > 3, `initial loss ${first}`);
  assert.ok(last < 0.05, `final loss ${last}`);
  // greedy continuation reproduces the text: every position's target is the argmax
  const f = engine.forward([[0, ...ids]]);
  for (let t = 1; t <= ids.length; t++) assert.ok(f.logprobs[0][t] > Math.log(0.5), `position ${t}`);
  const after = await engine.sampler().generate([0], { maxNewTokens: ids.length, temperature: 0 });
  assert.deepEqual(after.tokens, ids);
});

test('gradients accumulated over micro-batches equal one big batch', () => {
  const seqs = [
    [1, 2, 3, 4, 5],
    [6, 7, 8],
    [9, 10, 11, 12, 13, 14, 15],
    [2, 4],
  ];
  const ds = seqs.map(datum);
  const loss = nllLoss(17);
  const a = microEngine(3);
  const ra = a.forwardBackward(ds, loss, { microBatchTokens: 1000 });
  const b = microEngine(3);
  const rb = b.forwardBackward(ds, loss, { microBatchTokens: 6 });
  assert.equal(ra.microBatches, 1);
  assert.equal(rb.microBatches, 4);
  assert.ok(Math.abs(ra.loss - rb.loss) < 1e-5);
  assert.equal(ra.metrics.tokens, rb.metrics.tokens);
  let maxDiff = 0;
  let maxG = 0;
  for (let i = 0; i < a.grads.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(a.grads[i] - b.grads[i]));
    maxG = Math.max(maxG, Math.abs(a.grads[i]));
  }
  assert.ok(maxG > 0 && maxDiff < 1e-5 * maxG, `diff ${maxDiff} max ${maxG}`);
  assert.equal(b.accumulatedTokens(), 17);
});

test('non-finite gradient norm skips the step and zeroes gradients', () => {
  const e = microEngine(4);
  const before = Float32Array.from(e.weights);
  e.grads[10] = NaN;
  const r = e.optimStep({ learningRate: 0.1 });
  assert.equal(r.applied, false);
  assert.ok(Number.isNaN(r.gradNorm));
  assert.equal(r.step, 0);
  assert.deepEqual(e.weights, before);
  assert.ok(e.grads.every((g) => g === 0));
});

test('clipping: the reported norm is pre-clip and the update uses the clipped gradient', () => {
  const e = microEngine(5);
  e.grads.fill(0);
  e.grads[0] = 3;
  e.grads[1] = 4;
  const w0 = e.weights[0];
  const r = e.optimStep({ learningRate: 0.1, maxGradNorm: 1, beta1: 0, beta2: 0, eps: 0 });
  assert.ok(Math.abs(r.gradNorm - 5) < 1e-6);
  // with beta1 = beta2 = 0 Adam's update is lr·sign(g) regardless of scale
  assert.ok(Math.abs(e.weights[0] - (w0 - 0.1)) < 1e-6);
  assert.equal(e.weightsVersion, 1);
});

test('optimizer state round-trips exactly and bad state is a one-line error', () => {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-opt-'));
  try {
    const a = microEngine(6);
    const ds = [datum([1, 2, 3, 4])];
    for (let i = 0; i < 3; i++) {
      a.forwardBackward(ds, nllLoss(3));
      a.optimStep({ learningRate: 1e-3 });
    }
    a.saveOptimizerState(dir);
    const b = microEngine(6);
    b.setWeights(a.weights);
    b.loadOptimizerState(dir);
    assert.equal(b.step, 3);
    assert.deepEqual(b.m, a.m);
    assert.deepEqual(b.v, a.v);
    a.forwardBackward(ds, nllLoss(3));
    a.optimStep({ learningRate: 1e-3 });
    b.forwardBackward(ds, nllLoss(3));
    b.optimStep({ learningRate: 1e-3 });
    assert.deepEqual(b.weights, a.weights);
    const other = microEngine(6, 128);
    assert.throws(
      () => other.loadOptimizerState(dir),
      (e: unknown) => e instanceof FileFormatError && /params/.test(e.message),
    );
    writeFileSync(join(dir, 'optimizer.bin'), Buffer.alloc(8));
    assert.throws(() => b.loadOptimizerState(dir), FileFormatError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('out-of-range token ids name the sequence and position', () => {
  const e = microEngine(7);
  assert.throws(
    () =>
      e.forward([
        [1, 2],
        [3, 4, 99],
      ]),
    (err: unknown) => err instanceof InvalidArgumentError && err.message.startsWith('sequences[1].tokens[2]: token id 99'),
  );
});

test('the tokenizer and chat template travel with the engine: a save after the source directory is gone is complete', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-engine-tok-'));
  try {
    const src = join(dir, 'src');
    const tok = await createTestTokenizer(src);
    writeFileSync(join(src, 'chat_template.jinja'), CHATML_TOOLS_TEMPLATE);
    const cfg = presetConfig('micro', { vocabSize: tok.vocabSize });
    const layout = buildLayout(cfg);
    const w = new Float32Array(layout.total);
    initParams(w, layout, cfg, 2);
    saveModelDir(src, { config: cfg, layout, weights: w });
    const files = new Map(['tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja'].map((f) => [f, readFileSync(join(src, f))]));
    const e = Engine.load(src, referenceKernels);
    rmSync(src, { recursive: true });
    e.save(join(dir, 'a'));
    e.save(join(dir, 'b')); // and again, from a save: nothing depends on the source directory
    for (const out of ['a', 'b']) {
      for (const [f, bytes] of files) assert.ok(readFileSync(join(dir, out, f)).equals(bytes), `${out}/${f}`);
      const again = await loadTokenizer(join(dir, out));
      const messages = [{ role: 'user' as const, content: 'In which year?' }];
      assert.equal(
        again.applyChatTemplate(messages, { addGenerationPrompt: true }),
        tok.applyChatTemplate(messages, { addGenerationPrompt: true }),
      );
    }
    // a bare weights directory (no tokenizer) saves bare weights
    const bare = join(dir, 'bare');
    saveModelDir(bare, { config: cfg, layout, weights: w });
    Engine.load(bare, referenceKernels).save(join(dir, 'bare-out'));
    assert.ok(!existsSync(join(dir, 'bare-out', 'tokenizer.json')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
