/**
 * Test helpers for the model code: a small random model whose every parameter matters (random norms
 * and biases), and a naive full-recompute forward (no KV cache, float64, reference kernels) that
 * gives the logits of every position — the independent reference for decode and sampling tests.
 */
import { presetConfig, type ModelConfig } from '../model/config.ts';
import { buildLayout, initParams, viewsOf } from '../model/params.ts';
import { reference } from '../engine/reference.ts';
import { Rng } from '../util/rng.ts';

export function makeTestModel(family: 'qwen3' | 'qwen2' | 'llama', seed = 3) {
  const config: ModelConfig = presetConfig('micro', {
    family,
    qkNorm: family === 'qwen3',
    qkvBias: family === 'qwen2',
    vocabSize: 96,
    maxPositionEmbeddings: 64,
    tieWordEmbeddings: family === 'llama',
    initializerRange: 0.2,
  });
  const layout = buildLayout(config);
  const weights = new Float32Array(layout.total);
  initParams(weights, layout, config, seed);
  // Random (not 1/0) norms and biases so every parameter matters.
  const rng = new Rng(seed + 1);
  for (const t of layout.tensors) {
    if (t.init === 'ones') for (let i = 0; i < t.size; i++) weights[t.offset + i] = 1 + 0.3 * rng.normal();
    if (t.init === 'zeros') for (let i = 0; i < t.size; i++) weights[t.offset + i] = 0.1 * rng.normal();
  }
  return { config, layout, weights };
}

/**
 * Naive full-recompute forward of one sequence with the reference kernels (no cache, causal
 * attention over the whole sequence): logits [T×V] for every position.
 */
export function naiveLogits(cfg: ModelConfig, weights: Float32Array, tokens: number[]): Float64Array {
  const k = reference;
  const layout = buildLayout(cfg);
  const W = viewsOf(Float64Array.from(weights), layout, cfg);
  const { hiddenSize: C, numHeads: H, numKvHeads: KV, headDim: D, intermediateSize: F, vocabSize: V, rmsNormEps: eps } = cfg;
  const T = tokens.length;
  const f = (n: number) => new Float64Array(n);
  const x = f(T * C),
    xn = f(T * C),
    rstd = f(T * H);
  const q = f(T * H * D),
    kk = f(T * KV * D),
    v = f(T * KV * D),
    att = f(T * H * D),
    lse = f(T * H);
  const gate = f(T * F),
    up = f(T * F),
    hh = f(T * F);
  const pos = Int32Array.from(tokens, (_, i) => i);
  k.embeddingForward(x, W.embed, Int32Array.from(tokens), T, C);
  const bias = (a: Float64Array, b: Float64Array | null, N: number) => {
    if (b) for (let t = 0; t < T; t++) for (let j = 0; j < N; j++) a[t * N + j] += b[j];
  };
  for (const w of W.layers) {
    k.rmsnormForward(xn, rstd, x, w.inputNorm, T, C, eps);
    k.sgemm(false, true, T, H * D, C, xn, w.qProj, q, false);
    k.sgemm(false, true, T, KV * D, C, xn, w.kProj, kk, false);
    k.sgemm(false, true, T, KV * D, C, xn, w.vProj, v, false);
    bias(q, w.qBias, H * D);
    bias(kk, w.kBias, KV * D);
    bias(v, w.vBias, KV * D);
    if (w.qNorm && w.kNorm) {
      const q2 = f(T * H * D),
        k2 = f(T * KV * D);
      k.rmsnormForward(q2, rstd, q, w.qNorm, T * H, D, eps);
      q.set(q2);
      k.rmsnormForward(k2, rstd, kk, w.kNorm, T * KV, D, eps);
      kk.set(k2);
    }
    k.ropeForward(q, pos, T, H, D, cfg.ropeTheta);
    k.ropeForward(kk, pos, T, KV, D, cfg.ropeTheta);
    k.attentionForward(att, lse, q, kk, v, Int32Array.from([0, T]), 1, H, KV, D, 1 / Math.sqrt(D));
    k.sgemm(false, true, T, C, H * D, att, w.oProj, x, true);
    k.rmsnormForward(xn, rstd, x, w.postNorm, T, C, eps);
    k.sgemm(false, true, T, F, C, xn, w.gateProj, gate, false);
    k.sgemm(false, true, T, F, C, xn, w.upProj, up, false);
    k.swigluForward(hh, gate, up, T * F);
    k.sgemm(false, true, T, C, F, hh, w.downProj, x, true);
  }
  k.rmsnormForward(xn, rstd, x, W.finalNorm, T, C, eps);
  const logits = f(T * V);
  k.sgemm(false, true, T, V, C, xn, W.lmHead, logits, false);
  return logits;
}

/** The model families the engine supports, as config overrides (qwen3 with and without tied embeddings). */
export const FAMILIES: Record<string, Partial<ModelConfig>> = {
  qwen3: { family: 'qwen3', qkNorm: true, qkvBias: false, tieWordEmbeddings: false },
  'qwen3-tied': { family: 'qwen3', qkNorm: true, qkvBias: false, tieWordEmbeddings: true },
  qwen2: { family: 'qwen2', qkNorm: false, qkvBias: true, tieWordEmbeddings: false },
  llama: { family: 'llama', qkNorm: false, qkvBias: false, tieWordEmbeddings: false },
};

/** Weights with enough spread that every nonlinearity matters (norm weights and biases not at their init). */
export function randomWeights<A extends Float32Array | Float64Array>(cfg: ModelConfig, buf: A, seed: number): A {
  const layout = buildLayout(cfg);
  initParams(buf, layout, { ...cfg, initializerRange: 0.25 }, seed);
  const rng = new Rng(seed + 1);
  for (const t of layout.tensors) {
    if (t.init === 'normal') continue;
    for (let i = t.offset; i < t.offset + t.size; i++) buf[i] += (rng.next() - 0.5) * 0.6;
  }
  return buf;
}
