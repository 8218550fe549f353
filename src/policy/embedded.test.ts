// EmbeddedPolicy end to end with a real worker thread and a real model directory on disk: forward
// matches the in-process engine, forwardBackward + optimStep match it too, concurrent sample() calls
// run in one decode batch and are seed-reproducible, greedy decoding equals the argmax path of the
// logprobs, bad token ids are one-line errors, and the main thread keeps running while it computes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getKernels } from '../engine/index.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import { presetConfig } from '../model/config.ts';
import { buildLayout, initParams } from '../model/params.ts';
import { saveModelDir } from '../model/checkpoint.ts';
import { Engine } from '../model/engine.ts';
import { createTestTokenizer } from '../model/tokenizer.ts';
import type { Datum } from '../core/records.ts';
import type { LossFn } from '../core/policy.ts';
import { EmbeddedPolicy } from './embedded.ts';

let dir: string;
let policy: EmbeddedPolicy;
let vocab: number;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'matpo-embedded-'));
  const tok = await createTestTokenizer(dir);
  vocab = tok.vocabSize;
  const cfg = presetConfig('micro', { vocabSize: vocab });
  const layout = buildLayout(cfg);
  const w = new Float32Array(layout.total);
  initParams(w, layout, { ...cfg, initializerRange: 0.3 }, 42);
  saveModelDir(dir, { config: cfg, layout, weights: w });
  policy = await EmbeddedPolicy.load(dir, { seed: 1 });
});

after(async () => {
  await policy?.close();
  rmSync(dir, { recursive: true, force: true });
});

function datum(tokens: number[], adv = 1): Datum {
  return {
    tokens,
    mask: tokens.map((_, i) => (i === 0 ? 0 : 1)),
    advantages: tokens.map(() => adv),
    oldLogprobs: tokens.map(() => 0),
    questionId: 'q',
    rolloutId: 'r',
    sequenceId: 's',
    role: 'single',
  };
}

const pgLoss =
  (total: number): LossFn =>
  (datums, fwd) => {
    let loss = 0;
    const dLogprobs = datums.map((d, i) => {
      const g = new Float32Array(d.tokens.length);
      for (let t = 0; t < d.tokens.length; t++) {
        if (!d.mask[t]) continue;
        loss -= (d.advantages[t] * fwd.logprobs[i][t]) / total;
        g[t] = -d.advantages[t] / total;
      }
      return g;
    });
    return { loss, dLogprobs, metrics: { n: datums.length } };
  };

test('forward and forwardBackward + optimStep match the in-process engine', async () => {
  const local = Engine.load(dir, getKernels());
  const seqs = [
    [1, 2, 3, 4, 5, 6],
    [7, 8, 9],
    [10, 11, 12, 13, 14, 15, 16, 17],
  ];
  const f = await policy.forward(seqs.map((tokens) => ({ tokens })));
  const g = local.forward(seqs);
  for (let i = 0; i < seqs.length; i++) {
    assert.equal(f.logprobs[i].length, seqs[i].length);
    for (let t = 0; t < seqs[i].length; t++) assert.ok(Math.abs(f.logprobs[i][t] - g.logprobs[i][t]) < 1e-5);
  }
  const ds = seqs.map((s, i) => datum(s, i - 1));
  const r = await policy.forwardBackward(ds, pgLoss(14), { microBatchTokens: 9 });
  const rl = local.forwardBackward(ds, pgLoss(14), { microBatchTokens: 1000 });
  assert.equal(r.microBatches, 2);
  assert.equal(r.tokens, 17);
  assert.equal(r.metrics.n, 3);
  assert.ok(Math.abs(r.loss - rl.loss) < 1e-5);
  const o = await policy.optimStep({ learningRate: 1e-2, maxGradNorm: 1 });
  const ol = local.optimStep({ learningRate: 1e-2, maxGradNorm: 1 });
  assert.equal(o.applied, true);
  assert.equal(o.step, 1);
  assert.ok(Math.abs(o.gradNorm - ol.gradNorm) < 1e-4 * ol.gradNorm);
  const f2 = await policy.forward(seqs.map((tokens) => ({ tokens })));
  const g2 = local.forward(seqs);
  for (let i = 0; i < seqs.length; i++) {
    for (let t = 0; t < seqs[i].length; t++) assert.ok(Math.abs(f2.logprobs[i][t] - g2.logprobs[i][t]) < 1e-4);
  }
  assert.notDeepEqual(Array.from(f2.logprobs[0]), Array.from(f.logprobs[0]));
});

test('concurrent samples: seeded reproducible, greedy equals the argmax path of logprobs', async () => {
  const prompt = [3, 17, 29, 4];
  const many = await Promise.all(
    Array.from({ length: 12 }, (_, i) => policy.sample(prompt, { maxNewTokens: 12, temperature: 1, seed: 100 + (i % 6) })),
  );
  for (let i = 0; i < 6; i++) assert.deepEqual(many[i].tokens, many[i + 6].tokens);
  assert.ok(many.every((r) => r.tokens.length === 12 && r.finishReason === 'length'));
  const distinct = new Set(many.map((r) => r.tokens.join(',')));
  assert.ok(distinct.size > 1);
  // the sampler's logprobs are the model's logprobs of the sampled tokens
  const f = await policy.forward([{ tokens: [...prompt, ...many[0].tokens] }]);
  for (let j = 0; j < 12; j++) assert.ok(Math.abs(f.logprobs[0][prompt.length + j] - many[0].logprobs[j]) < 1e-4);

  const greedy = await policy.sample(prompt, { maxNewTokens: 10, temperature: 0 });
  // argmax path: at each step the greedy token has the highest logprob among all candidates
  const seq = [...prompt, ...greedy.tokens];
  const cands = Array.from({ length: vocab }, (_, v) => ({ tokens: [...seq.slice(0, prompt.length), v] }));
  const fc = await policy.forward(cands);
  let best = 0;
  for (let v = 1; v < vocab; v++) if (fc.logprobs[v][prompt.length] > fc.logprobs[best][prompt.length]) best = v;
  assert.equal(greedy.tokens[0], best);
  const full = await policy.forward([{ tokens: seq }]);
  for (let j = 0; j < greedy.tokens.length; j++) assert.ok(Math.abs(full.logprobs[0][prompt.length + j] - greedy.logprobs[j]) < 1e-4);

  const stop = await policy.sample(prompt, { maxNewTokens: 10, temperature: 0, stopTokenIds: [greedy.tokens[2]] });
  assert.equal(stop.finishReason, 'stop_token');
  assert.deepEqual(stop.tokens, greedy.tokens.slice(0, stop.tokens.length));
});

test('stop strings end a sample at the first token whose text contains them', async () => {
  const tok = await policy.tokenizer();
  const prompt = [5, 9, 14];
  const greedy = await policy.sample(prompt, { maxNewTokens: 16, temperature: 0 });
  const text = tok.decode(greedy.tokens);
  assert.ok(text.length >= 4, `greedy text too short: ${JSON.stringify(text)}`);
  const mid = Math.floor(text.length / 2);
  const stop = text.slice(mid, mid + 2);
  const r = await policy.sample(prompt, { maxNewTokens: 16, temperature: 0, stopStrings: [stop] });
  assert.equal(r.finishReason, 'stop_string');
  assert.deepEqual(r.tokens, greedy.tokens.slice(0, r.tokens.length));
  assert.ok(tok.decode(r.tokens).includes(stop));
  assert.ok(!tok.decode(r.tokens.slice(0, -1)).includes(stop));
});

test('abort signal ends a sample early', async () => {
  const ac = new AbortController();
  const p = policy.sample([1, 2, 3], { maxNewTokens: 5000, temperature: 1, signal: ac.signal });
  setTimeout(() => ac.abort(), 30);
  const r = await p;
  assert.equal(r.finishReason, 'abort');
  assert.ok(r.tokens.length < 5000);
});

test('out-of-range token ids are InvalidArgumentErrors naming the index; the policy keeps working', async () => {
  await assert.rejects(
    policy.forward([{ tokens: [1, 2] }, { tokens: [1, vocab] }]),
    (e: unknown) => e instanceof InvalidArgumentError && e.message.startsWith('datums[1].tokens[1]'),
  );
  await assert.rejects(policy.sample([1, -3], { maxNewTokens: 2 }), InvalidArgumentError);
  await assert.rejects(policy.forwardBackward([datum([1, 2.5])], pgLoss(1)), InvalidArgumentError);
  const ok = await policy.forward([{ tokens: [1, 2] }]);
  assert.equal(ok.logprobs[0].length, 2);
});

test('the main thread keeps running while the worker computes', async () => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const seqs = Array.from({ length: 24 }, (_, i) => datum(Array.from({ length: 200 }, (_, t) => (t * 7 + i) % vocab)));
  const t0 = Date.now();
  await policy.forwardBackward(seqs, pgLoss(4800), { microBatchTokens: 2400 });
  await policy.zeroGrads();
  clearInterval(timer);
  const ms = Date.now() - t0;
  assert.ok(ticks >= Math.floor(ms / 5 / 4), `only ${ticks} timer ticks in ${ms} ms`);
});

test('save writes a model directory that reloads with the trained weights; optimizer state round-trips', async () => {
  const out = mkdtempSync(join(tmpdir(), 'matpo-embedded-save-'));
  try {
    await policy.save(out);
    await policy.saveOptimizerState(out);
    const again = await EmbeddedPolicy.load(out, { kernels: 'reference' });
    try {
      const a = await policy.forward([{ tokens: [5, 6, 7, 8] }]);
      const b = await again.forward([{ tokens: [5, 6, 7, 8] }]);
      for (let t = 0; t < 4; t++) assert.ok(Math.abs(a.logprobs[0][t] - b.logprobs[0][t]) < 1e-4);
      await again.loadOptimizerState(out);
      const r = await again.optimStep({ learningRate: 0 });
      assert.equal(r.step, 2);
      await (await again.tokenizer()).encode('hello');
    } finally {
      await again.close();
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('serving: sampleStreaming reports each token as sample() returns it; topLogprobs is the full distribution of forward', async () => {
  const prompt = [5, 17, 33, 2, 9];
  const seen: [number, number][] = [];
  const streamed = await policy.sampleStreaming(prompt, { maxNewTokens: 12, seed: 77 }, (token, logprob) => seen.push([token, logprob]));
  const plain = await policy.sample(prompt, { maxNewTokens: 12, seed: 77 });
  assert.deepEqual(streamed, plain);
  assert.deepEqual(
    seen,
    plain.tokens.map((t, i) => [t, plain.logprobs[i]]),
  );

  const seq = [...prompt, ...plain.tokens];
  const scores = await policy.topLogprobs(seq, vocab);
  const [reference] = (await policy.forward([{ tokens: seq }])).logprobs;
  assert.equal(scores.length, seq.length - 1);
  scores.forEach((s, i) => {
    const t = i + 1;
    assert.ok(Math.abs(s.logprob - reference[t]) < 1e-4, `position ${t}: ${s.logprob} vs ${reference[t]}`);
    assert.equal(s.top.length, vocab);
    const total = s.top.reduce((a, x) => a + Math.exp(x.logprob), 0);
    assert.ok(Math.abs(total - 1) < 1e-9, `position ${t}: probabilities sum to ${total}`);
    for (let j = 1; j < s.top.length; j++) assert.ok(s.top[j - 1].logprob >= s.top[j].logprob);
    assert.equal(s.top.find((x) => x.id === seq[t])!.logprob, s.logprob);
  });
  // Scoring between the sampler's steps leaves running samples untouched.
  const [during, again] = await Promise.all([policy.sample(prompt, { maxNewTokens: 12, seed: 77 }), policy.topLogprobs(seq, 3)]);
  assert.deepEqual(during, plain);
  again.forEach((s, i) => assert.deepEqual(s.top, scores[i].top.slice(0, 3)));
  // The sampler's logprobs are the same distribution's, at the sampled positions.
  plain.logprobs.forEach((lp, j) => assert.ok(Math.abs(lp - scores[prompt.length - 1 + j].logprob) < 1e-4, `sampled ${j}`));
  await assert.rejects(
    policy.topLogprobs([1, vocab], 2),
    (e: unknown) => e instanceof InvalidArgumentError && e.argument === 'sequences[0].tokens[1]',
  );
});
