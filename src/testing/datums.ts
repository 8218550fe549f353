/**
 * Datums and losses for engine and policy tests: a datum that trains every token after the first,
 * the summed negative log-likelihood as a LossFn, and the largest elementwise difference of two
 * lists of per-token arrays.
 */
import type { Datum } from '../core/records.ts';
import type { LossFn } from '../core/policy.ts';

export function plainDatum(tokens: number[], advantage = 0): Datum {
  return {
    tokens,
    mask: tokens.map((_, i) => (i === 0 ? 0 : 1)),
    advantages: tokens.map(() => advantage),
    oldLogprobs: tokens.map(() => 0),
    questionId: 'q',
    rolloutId: 'r',
    sequenceId: 's',
    role: 'single',
  };
}

/** −Σ logprob over every token after the first of every datum (no normalisation). */
export const summedNll: LossFn = (datums, fwd) => {
  let loss = 0;
  const dLogprobs = datums.map((d, i) => {
    const g = new Float32Array(d.tokens.length);
    for (let t = 1; t < d.tokens.length; t++) {
      loss -= fwd.logprobs[i][t];
      g[t] = -1;
    }
    return g;
  });
  return { loss, dLogprobs, metrics: {} };
};

export function maxDiff(a: readonly ArrayLike<number>[], b: readonly ArrayLike<number>[]): number {
  let m = 0;
  a.forEach((x, i) => {
    for (let t = 0; t < x.length; t++) m = Math.max(m, Math.abs(x[t] - b[i][t]));
  });
  return m;
}
