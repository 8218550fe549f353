import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Decoder } from './decode.ts';
import { makeTestModel as makeModel, naiveLogits } from '../testing/tiny-model.ts';
import { Transformer, packSequences } from './transformer.ts';
import { referenceKernels } from '../engine/reference.ts';
import { getKernels } from '../engine/index.ts';
import type { Kernels } from '../engine/kernels.ts';
import { Rng } from '../util/rng.ts';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const kernelSets: [string, Kernels][] = [['reference', referenceKernels]];
const native = getKernels();
if (native.name === 'native') kernelSets.push(['native', native]);

for (const [kname, kernels] of kernelSets) {
  for (const family of ['qwen3', 'qwen2', 'llama'] as const) {
    test(`decode (${kname}, ${family}): mixed prefill/decode batches match a full-recompute forward`, () => {
      const { config, weights } = makeModel(family);
      const rng = new Rng(11);
      const seqs = [17, 9, 23].map((len) => Array.from({ length: len }, () => rng.int(config.vocabSize)));
      const want = seqs.map((s) => naiveLogits(config, weights, s));
      const V = config.vocabSize;
      // Start small so that both the slot count and the slot length must grow.
      for (const packedMaxRows of [0, 1000]) {
        const dec = new Decoder(config, weights, kernels, { slots: 1, capacity: 4, packedMaxRows });
        const slots = seqs.map(() => dec.allocSlot());
        let worst = 0;
        const check = (b: number, p: number, logits: Float32Array) => {
          worst = Math.max(worst, maxAbsDiff(logits, want[b].subarray(p * V, (p + 1) * V)));
        };
        // Step 1: seq 0 prefills 10 tokens with all logits; seq 1 prefills 3.
        let out = dec.forward([
          { slot: slots[0], tokens: seqs[0].slice(0, 10), startPos: 0, allLogits: true },
          { slot: slots[1], tokens: seqs[1].slice(0, 3), startPos: 0 },
        ]);
        for (let p = 0; p < 10; p++) check(0, p, out[0].subarray(p * V, (p + 1) * V));
        check(1, 2, out[1]);
        // Step 2: seq 0 decodes one token, seq 1 prefills the rest, seq 2 prefills 20.
        out = dec.forward([
          { slot: slots[0], tokens: [seqs[0][10]], startPos: 10 },
          { slot: slots[1], tokens: seqs[1].slice(3), startPos: 3 },
          { slot: slots[2], tokens: seqs[2].slice(0, 20), startPos: 0 },
        ]);
        check(0, 10, out[0]);
        check(1, seqs[1].length - 1, out[1]);
        check(2, 19, out[2]);
        // Then one token at a time for the rest.
        const posOf = [11, seqs[1].length, 20];
        for (;;) {
          const items = seqs
            .map((s, b) => ({ b, slot: slots[b], tokens: [s[posOf[b]]], startPos: posOf[b] }))
            .filter((it) => it.startPos < seqs[it.b].length);
          if (items.length === 0) break;
          out = dec.forward(items);
          items.forEach((it, i) => {
            check(it.b, it.startPos, out[i]);
            posOf[it.b]++;
          });
        }
        assert.ok(dec.S >= 23 && dec.N >= 3, `cache grew (S=${dec.S}, N=${dec.N})`);
        const tol = kname === 'reference' ? 1e-4 : 2e-3;
        assert.ok(worst < tol, `max |Δlogit| = ${worst} (packedMaxRows ${packedMaxRows})`);
      }
    });
  }

  test(`decode (${kname}): logprobs agree with the training forward (transformer.ts)`, () => {
    const { config, weights } = makeModel('qwen3', 5);
    const rng = new Rng(12);
    const seq = Array.from({ length: 30 }, () => rng.int(config.vocabSize));
    const tr = new Transformer(config, kernels, weights);
    const train = tr.forward(packSequences([seq]), { needGrad: false, entropies: false }).logprobs;
    const dec = new Decoder(config, weights, kernels);
    const slot = dec.allocSlot();
    // Prefill 12, then decode one by one.
    const logits: Float32Array[] = [];
    const all = dec.forward([{ slot, tokens: seq.slice(0, 12), startPos: 0, allLogits: true }])[0];
    const V = config.vocabSize;
    for (let p = 0; p < 12; p++) logits.push(all.slice(p * V, (p + 1) * V));
    for (let p = 12; p < seq.length - 1; p++) logits.push(dec.forward([{ slot, tokens: [seq[p]], startPos: p }])[0].slice());
    let worst = 0;
    for (let p = 0; p < seq.length - 1; p++) {
      const row = logits[p];
      let mx = -Infinity;
      for (const z of row) mx = Math.max(mx, z);
      let s = 0;
      for (const z of row) s += Math.exp(z - mx);
      const lp = row[seq[p + 1]] - mx - Math.log(s);
      worst = Math.max(worst, Math.abs(lp - train[p + 1]));
    }
    assert.ok(worst < (kname === 'reference' ? 1e-4 : 1e-3), `max |Δlogprob| = ${worst}`);
  });
}

test('decode: prefix copy, slot reuse and bad input', () => {
  const { config, weights } = makeModel('qwen3');
  // 2 slots × 8 positions = 4096 bytes; doubling either would need 8192
  const dec = new Decoder(config, weights, referenceKernels, { slots: 2, capacity: 8, maxCacheBytes: 6144 });
  const seq = [5, 6, 7, 8, 9, 10];
  const a = dec.allocSlot();
  const full = dec.forward([{ slot: a, tokens: seq, startPos: 0 }])[0].slice();
  const b = dec.allocSlot();
  dec.copyPrefix(a, b, 4);
  const viaCopy = dec.forward([{ slot: b, tokens: seq.slice(4), startPos: 4 }])[0];
  assert.deepEqual(viaCopy, full);
  assert.equal(dec.allocSlot(), -1, 'cache full at its byte limit');
  dec.freeSlot(a);
  assert.equal(dec.allocSlot(), a);
  assert.throws(
    () => dec.forward([{ slot: a, tokens: [96], startPos: 0 }]),
    /items\[0\]\.tokens\[0\]: token id 96 is out of range \[0, 96\)/,
  );
  assert.throws(() => dec.forward([{ slot: 7, tokens: [1], startPos: 0 }]), /items\[0\]\.slot: 7 is not an allocated slot/);
  assert.throws(
    () =>
      dec.forward([
        { slot: a, tokens: [1], startPos: 63 },
        { slot: b, tokens: [1, 2], startPos: 63 },
      ]),
    /position 65, beyond max_position_embeddings 64/,
  );
  assert.throws(
    () => dec.forward([{ slot: a, tokens: [1], startPos: 12 }]),
    /reaches position 13; the KV cache cannot grow past 6144 bytes/,
  );
  assert.equal(dec.maxPositions(), 8);
});
