import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  aggregationRegistry,
  aggregationWeights,
  clippedSurrogate,
  computePolicyLoss,
  makeNllLoss,
  makePolicyLoss,
  policyLossRegistry,
  type PolicyLossConfig,
} from './losses.ts';
import type { Datum, Role } from '../core/records.ts';
import { Rng } from '../util/rng.ts';
import { defaultPolicyLoss } from '../testing/config-defaults.ts';

const close = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);
const cfg = (over: Partial<PolicyLossConfig> = {}): PolicyLossConfig => defaultPolicyLoss(over);

function datum(sequenceId: string, rolloutId: string, role: Role, mask: number[], A = 1, old = -1): Datum {
  return {
    tokens: mask.map((_, t) => t + 1),
    mask,
    advantages: mask.map((m) => (m ? A : 0)),
    oldLogprobs: mask.map((m) => (m ? old : 0)),
    questionId: 'q',
    rolloutId,
    sequenceId,
    role,
  };
}

// Mixed batch: rollout R1 = planner (3 trainable) + worker a (2) + worker b (5); rollout R2 = planner only (4).
function mixedBatch(): Datum[] {
  return [
    datum('p1', 'R1', 'planner', [0, 1, 1, 0, 1], 1),
    datum('w1a', 'R1', 'worker', [0, 1, 1], 1),
    datum('w1b', 'R1', 'worker', [0, 1, 1, 1, 1, 1, 0], 1),
    datum('p2', 'R2', 'planner', [0, 0, 1, 1, 1, 1], -0.5),
  ];
}

test('registry names', () => {
  assert.deepEqual(policyLossRegistry.names(), ['gspo', 'ppo']);
  assert.deepEqual(aggregationRegistry.names(), ['seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm', 'token-mean']);
  assert.throws(() => makePolicyLoss(cfg({ name: 'vanilla' }), []), /unknown policy loss "vanilla"; available: gspo, ppo/);
  assert.throws(() => aggregationWeights([], cfg({ aggregation: 'sum' })), /available: seq-mean-token-mean/);
});

test('ppo clipped surrogate, hand-computed (ε = 0.2, c = 3)', () => {
  const s = (r: number, A: number, lo = 0.2, hi = 0.2, c = 3) => clippedSurrogate(r, A, lo, hi, c);
  // A=1, r=1.5: s1 = −1.5, s2 = −1.2 → −1.2 (clipped, no gradient)
  assert.deepEqual(s(1.5, 1), { value: -1.2, dr: 0, clipped: true, dualClipped: false });
  // A=1, r=0.5: s1 = −0.5, s2 = −0.8 → −0.5, dℓ/dr = −A = −1
  assert.deepEqual(s(0.5, 1), { value: -0.5, dr: -1, clipped: false, dualClipped: false });
  // A=−1, r=0.5: s1 = 0.5, s2 = 0.8 → 0.8 (clipped); 0.8 < c·|A| = 3
  assert.deepEqual(s(0.5, -1), { value: 0.8, dr: 0, clipped: true, dualClipped: false });
  // A=−1, r=2: s1 = 2, s2 = 1.2 → 2 < 3: unclipped, dℓ/dr = 1
  assert.deepEqual(s(2, -1), { value: 2, dr: 1, clipped: false, dualClipped: false });
  // A=−1, r=4: s1 = 4 → dual clip caps at −c·A = 3
  assert.deepEqual(s(4, -1), { value: 3, dr: 0, clipped: false, dualClipped: true });
  // dual clip disabled (c = 0): 4
  assert.equal(s(4, -1, 0.2, 0.2, 0).value, 4);
  // asymmetric clip-higher ε_high = 0.28, A = 1: r = 1.25 is inside (−1.25), r = 1.3 clips to −1.28
  close(s(1.25, 1, 0.2, 0.28).value, -1.25);
  close(s(1.3, 1, 0.2, 0.28).value, -1.28);
  assert.equal(s(1.3, 1, 0.2, 0.28).clipped, true);
});

test('ppo loss over a sequence: token values and gradients', () => {
  // token-mean over 4 trainable tokens → w = 1/4. old = 0.
  // t1: Δ = ln 1.5, A=1 → −1.2, grad 0;  t2: Δ = ln 0.5, A=1 → −0.5, grad w·(−1)·0.5 = −0.125
  // t3: Δ = ln 4, A=−1 → dual 3, grad 0;  t4: Δ = ln 2, A=−1 → 2, grad w·1·2 = 0.5
  const d: Datum = { ...datum('s', 'R', 'single', [0, 1, 1, 1, 1]), oldLogprobs: [0, 0, 0, 0, 0], advantages: [0, 1, 1, -1, -1] };
  const lp = [0, Math.log(1.5), Math.log(0.5), Math.log(4), Math.log(2)];
  const c = cfg();
  const r = computePolicyLoss(c, aggregationWeights([d], c), [d], [lp]);
  close(r.loss, (-1.2 - 0.5 + 3 + 2) / 4);
  close(r.dLogprobs[0][2], -0.125);
  close(r.dLogprobs[0][4], 0.5);
  assert.equal(r.dLogprobs[0][1], 0);
  assert.equal(r.dLogprobs[0][3], 0);
  assert.equal(r.metrics.clipped, 1);
  assert.equal(r.metrics.dual_clipped, 1);
  close(r.metrics.ratio_sum, 1.5 + 0.5 + 4 + 2);
  assert.equal(r.metrics['single/tokens'], 4);
});

test('gspo: one sequence-level ratio, hand-computed', () => {
  // Δ = [0.2, 0] → s = exp(0.1) = 1.105170918; A = 1, inside [0.8, 1.2] → ℓ_t = −s for both tokens
  // token-mean w = 1/2 → loss = −s; d loss/dΔ_k = Σ_t w·(−A) · s/2 = −1 · s/2 = −0.552585459
  const d: Datum = { ...datum('s', 'R', 'single', [0, 1, 1]), oldLogprobs: [0, 0, 0] };
  const c = cfg({ name: 'gspo' });
  const r = computePolicyLoss(c, aggregationWeights([d], c), [d], [[0, 0.2, 0]]);
  const s = Math.exp(0.1);
  close(r.loss, -s);
  close(r.dLogprobs[0][1], -s / 2);
  close(r.dLogprobs[0][2], -s / 2);
  // Δ = [1, 0] → s = exp(0.5) = 1.6487 > 1.2 → ℓ = −1.2 per token, no gradient, 2 clipped tokens
  const r2 = computePolicyLoss(c, aggregationWeights([d], c), [d], [[0, 1, 0]]);
  close(r2.loss, -1.2);
  assert.equal(r2.dLogprobs[0][1], 0);
  assert.equal(r2.metrics.clipped, 2);
});

test('aggregation weights: mixed planner+worker batch, unit = planner rollout with its workers', () => {
  const batch = mixedBatch();
  const w = (aggregation: string, over: Partial<PolicyLossConfig> = {}) =>
    Object.fromEntries(aggregationWeights(batch, cfg({ aggregation, ...over })));
  // N = 3 + 2 + 5 + 4 = 14; U = 2 rollouts; N_R1 = 10, N_R2 = 4
  assert.deepEqual(w('token-mean'), { p1: 1 / 14, w1a: 1 / 14, w1b: 1 / 14, p2: 1 / 14 });
  assert.deepEqual(w('seq-mean-token-sum'), { p1: 1 / 2, w1a: 1 / 2, w1b: 1 / 2, p2: 1 / 2 });
  assert.deepEqual(w('seq-mean-token-mean'), { p1: 1 / 20, w1a: 1 / 20, w1b: 1 / 20, p2: 1 / 8 });
  // L = max unit tokens = 10 → 1/(2·10); explicit L = 16 → 1/32
  assert.deepEqual(w('seq-mean-token-sum-norm'), { p1: 1 / 20, w1a: 1 / 20, w1b: 1 / 20, p2: 1 / 20 });
  assert.deepEqual(w('seq-mean-token-sum-norm', { normTokens: 16 }), { p1: 1 / 32, w1a: 1 / 32, w1b: 1 / 32, p2: 1 / 32 });
  // unit = sequence: U = 4; seq-mean-token-mean → 1/(4·n_seq)
  assert.deepEqual(w('seq-mean-token-mean', { unit: 'sequence' }), { p1: 1 / 12, w1a: 1 / 8, w1b: 1 / 20, p2: 1 / 16 });
});

test('aggregated loss values at ratio 1 (loss = Σ w·(−A)): mixed and planner-only batches', () => {
  const lossAt = (batch: Datum[], aggregation: string) => {
    const c = cfg({ aggregation });
    return computePolicyLoss(
      c,
      aggregationWeights(batch, c),
      batch,
      batch.map((d) => d.oldLogprobs),
    ).loss;
  };
  const mixed = mixedBatch();
  // R1 tokens: 10 × (−1); R2: 4 × (+0.5)
  close(lossAt(mixed, 'token-mean'), (-10 + 2) / 14);
  close(lossAt(mixed, 'seq-mean-token-sum'), (-10 + 2) / 2);
  close(lossAt(mixed, 'seq-mean-token-mean'), (-1 + 0.5) / 2); // each rollout weighs the same however many workers it spawned
  close(lossAt(mixed, 'seq-mean-token-sum-norm'), (-10 + 2) / 20);
  // Planner-only batch: p2 (4 tokens, A = −0.5) and p3 (2 tokens, A = 1)
  const plannerOnly = [datum('p2', 'R2', 'planner', [0, 0, 1, 1, 1, 1], -0.5), datum('p3', 'R3', 'planner', [0, 1, 1], 1)];
  close(lossAt(plannerOnly, 'token-mean'), (2 - 2) / 6);
  close(lossAt(plannerOnly, 'seq-mean-token-sum'), (2 - 2) / 2);
  close(lossAt(plannerOnly, 'seq-mean-token-mean'), (0.5 - 1) / 2);
  close(lossAt(plannerOnly, 'seq-mean-token-sum-norm'), (2 - 2) / (2 * 4));
});

test('KL to the reference (k1, k3) and entropy bonus, hand-computed', () => {
  const d: Datum = { ...datum('s', 'R', 'single', [0, 1], 0), oldLogprobs: [0, -1], refLogprobs: [0, -1.5] };
  const lp = [0, -1];
  // A = 0 → policy term 0. k1 = lp − ref = 0.5, d/dlp = 1;
  // k3: x = ref − lp = −0.5 → e^−0.5 + 0.5 − 1 = 0.1065306597, d/dlp = 1 − e^−0.5
  for (const [est, kl, g] of [
    ['k1', 0.5, 1],
    ['k3', Math.exp(-0.5) - 0.5, 1 - Math.exp(-0.5)],
  ] as const) {
    const c = cfg({ klCoef: 0.1, klEstimator: est });
    const r = computePolicyLoss(c, aggregationWeights([d], c), [d], [lp]);
    close(r.loss, 0.1 * kl);
    close(r.dLogprobs[0][1], 0.1 * g);
    close(r.metrics.kl_ref_sum, kl);
  }
  // entropy bonus η = 0.01, H = 2 → loss −0.02, dℓ/dH = −0.01
  const c = cfg({ entropyCoef: 0.01 });
  const r = computePolicyLoss(c, aggregationWeights([d], c), [d], [lp], [[0, 2]]);
  close(r.loss, -0.02);
  close(r.dEntropies[0][1], -0.01);
  assert.throws(
    () => computePolicyLoss(cfg({ klCoef: 0.1 }), new Map([['s', 1]]), [{ ...d, refLogprobs: undefined }], [lp]),
    /refLogprobs/,
  );
});

// ---------------------------------------------------------------------------------------------
// Finite differences and micro-batch splitting

function randomBatch(rng: Rng): { datums: Datum[]; lp: Float64Array[]; ent: Float64Array[] } {
  const datums: Datum[] = [];
  for (let r = 0; r < 3; r++) {
    const A = rng.normal();
    const nw = r; // rollout r spawns r workers
    for (let s = 0; s <= nw; s++) {
      const T = 4 + rng.int(6);
      const mask = Array.from({ length: T }, (_, t) => (t > 0 && rng.next() < 0.7 ? 1 : 0));
      const old = mask.map((m) => (m ? -0.2 - rng.next() * 2 : 0));
      datums.push({
        tokens: mask.map((_, t) => t),
        mask,
        advantages: mask.map((m) => (m ? A : 0)),
        oldLogprobs: old,
        refLogprobs: old.map((o) => o + 0.3 * rng.normal()),
        questionId: 'q',
        rolloutId: `R${r}`,
        sequenceId: `R${r}/${s}`,
        role: s === 0 ? 'planner' : 'worker',
      });
    }
  }
  const lp = datums.map((d) => Float64Array.from(d.oldLogprobs, (o, t) => (d.mask[t] ? o + 0.35 * rng.normal() : 0)));
  const ent = datums.map((d) => Float64Array.from(d.tokens, () => rng.next() * 3));
  return { datums, lp, ent };
}

test('gradients match central finite differences (float64) for every loss × aggregation, with KL and entropy', () => {
  const rng = new Rng(7);
  const h = 1e-6;
  let checked = 0;
  for (const name of policyLossRegistry.names())
    for (const aggregation of aggregationRegistry.names())
      for (const extra of [
        {},
        { klCoef: 0.2, klEstimator: 'k1' as const, entropyCoef: 0.05 },
        { klCoef: 0.3, klEstimator: 'k3' as const, clipHigh: 0.28, dualClip: null },
      ]) {
        const c = cfg({ name, aggregation, ...extra });
        const { datums, lp, ent } = randomBatch(rng);
        const weights = aggregationWeights(datums, c);
        const base = computePolicyLoss(c, weights, datums, lp, ent);
        for (let i = 0; i < datums.length; i++)
          for (let t = 0; t < lp[i].length; t++) {
            if (!datums[i].mask[t]) {
              assert.equal(base.dLogprobs[i][t], 0);
              continue;
            }
            const x = lp[i][t];
            lp[i][t] = x + h;
            const up = computePolicyLoss(c, weights, datums, lp, ent).loss;
            lp[i][t] = x - h;
            const down = computePolicyLoss(c, weights, datums, lp, ent).loss;
            lp[i][t] = x;
            const fd = (up - down) / (2 * h);
            assert.ok(
              Math.abs(fd - base.dLogprobs[i][t]) <= 1e-6 * Math.max(1, Math.abs(fd)),
              `${name}/${aggregation} d[${i}][${t}]: fd ${fd} vs ${base.dLogprobs[i][t]}`,
            );
            const e = ent[i][t];
            ent[i][t] = e + h;
            const upE = computePolicyLoss(c, weights, datums, lp, ent).loss;
            ent[i][t] = e - h;
            const downE = computePolicyLoss(c, weights, datums, lp, ent).loss;
            ent[i][t] = e;
            assert.ok(Math.abs((upE - downE) / (2 * h) - base.dEntropies[i][t]) <= 1e-6);
            checked++;
          }
      }
  assert.ok(checked > 200, `checked ${checked}`);
});

test('splitting a mini-batch into micro-batches gives the same loss, gradients and metrics', () => {
  const rng = new Rng(11);
  for (const name of policyLossRegistry.names())
    for (const aggregation of aggregationRegistry.names()) {
      const c = cfg({ name, aggregation, entropyCoef: 0.01 });
      const { datums, lp, ent } = randomBatch(rng);
      const fwd = (idx: number[]) => ({
        logprobs: idx.map((i) => Float32Array.from(lp[i])),
        entropies: idx.map((i) => Float32Array.from(ent[i])),
      });
      const loss = makePolicyLoss(c, datums);
      const all = datums.map((_, i) => i);
      const whole = loss(datums, fwd(all));
      // split into three uneven micro-batches that cut rollouts apart
      const parts = [[0, 1], [2, 3, 4], all.slice(5)];
      let sum = 0;
      const grads: Float32Array[] = [];
      const metrics: Record<string, number> = {};
      for (const p of parts) {
        const out = loss(
          p.map((i) => datums[i]),
          fwd(p),
        );
        sum += out.loss;
        grads.push(...out.dLogprobs);
        for (const [k, v] of Object.entries(out.metrics)) metrics[k] = (metrics[k] ?? 0) + v;
      }
      close(sum, whole.loss, 1e-12);
      grads.forEach((g, i) => assert.deepEqual(g, whole.dLogprobs[i]));
      close(metrics.tokens, whole.metrics.tokens);
      close(metrics.clipped, whole.metrics.clipped);
      // a loss built for the micro-batch alone would normalise differently (sanity: the test can fail)
      if (aggregation !== 'seq-mean-token-sum' || name === 'gspo') {
        const own = makePolicyLoss(
          c,
          parts[0].map((i) => datums[i]),
        )(
          parts[0].map((i) => datums[i]),
          fwd(parts[0]),
        ).loss;
        const shared = loss(
          parts[0].map((i) => datums[i]),
          fwd(parts[0]),
        ).loss;
        assert.notEqual(own, shared);
      }
    }
});

test('loss rejects datums outside its mini-batch and misaligned arrays', () => {
  const batch = mixedBatch();
  const loss = makePolicyLoss(cfg(), batch.slice(0, 2));
  assert.throws(
    () => loss([batch[3]], { logprobs: [new Float32Array(6)], entropies: [new Float32Array(6)] }),
    /not part of the mini-batch/,
  );
  assert.throws(() => loss([batch[0]], { logprobs: [new Float32Array(3)], entropies: [new Float32Array(3)] }), /must all have 5 entries/);
  assert.throws(() => aggregationWeights([batch[0], batch[0]], cfg()), /appears twice/);
  assert.throws(
    () => computePolicyLoss(cfg({ dualClip: 0.5 }), new Map([['p1', 1]]), [batch[0]], [batch[0].oldLogprobs]),
    /dualClip: must be > 1/,
  );
});

test("supervised NLL: mean over the whole mini-batch's trainable tokens", () => {
  const batch = mixedBatch();
  const loss = makeNllLoss(batch);
  const lp = batch.map((d) => Float32Array.from(d.mask, (m) => (m ? -2 : -7)));
  // every trainable token has logprob −2 → mean NLL = 2; split into two parts sums to the same
  const a = loss(batch.slice(0, 2), { logprobs: lp.slice(0, 2), entropies: [] });
  const b = loss(batch.slice(2), { logprobs: lp.slice(2), entropies: [] });
  close(a.loss + b.loss, 2, 1e-12);
  close(a.dLogprobs[0][1], -1 / 14, 1e-8); // float32
  assert.equal(a.dLogprobs[0][0], 0);
});

test('supervised NLL with a weight on the other tokens: hand-computed', () => {
  // tokens a b c d, trainable c d; logprobs of b, c, d = −1, −2, −3 (position 0 has none)
  const d: Datum = {
    tokens: [5, 6, 7, 8],
    mask: [0, 0, 1, 1],
    advantages: [0, 0, 0, 0],
    oldLogprobs: [0, 0, 0, 0],
    questionId: 'q',
    rolloutId: 'r',
    sequenceId: 's',
    role: 'single',
  };
  const lp = [Float32Array.from([0, -1, -2, -3])];
  // weights 0.5 (b), 1 (c), 1 (d): loss = (0.5·1 + 2 + 3) / 2.5 = 2.2
  const r = makeNllLoss([d], { otherTokenWeight: 0.5 })([d], { logprobs: lp, entropies: [] });
  close(r.loss, 2.2, 1e-12);
  assert.deepEqual(
    Array.from(r.dLogprobs[0], (x) => +x.toFixed(6)),
    [0, -0.2, -0.4, -0.4],
  );
  // weight 0 is the plain assistant-only mean: (2 + 3) / 2
  close(makeNllLoss([d])([d], { logprobs: lp, entropies: [] }).loss, 2.5, 1e-12);
});
