/**
 * Policy losses for one mini-batch of datums (planner, worker and single sequences together), in
 * float64 over plain arrays, with exact gradients d(loss)/d(logprob) (and d(loss)/d(entropy)).
 *
 * Per trainable token t with advantage A and log-ratio Δ_t = logπθ − logπ_old (clamped to ±20):
 *
 *   ppo   ρ_t = exp(Δ_t);  ℓ_t = max(−A·ρ_t, −A·clip(ρ_t, 1−ε_low, 1+ε_high));
 *         if A < 0 and dual clip c > 1: ℓ_t = min(ℓ_t, −c·A).                      (MATPO.md "Loss")
 *   gspo  one sequence-level ratio s = exp(mean_{t∈seq} Δ_t) replaces ρ_t for every token of the
 *         sequence: ℓ_t = max(−A·s, −A·clip(s, 1−ε_low, 1+ε_high)); no dual clip (`dualClip` is
 *         ignored). The gradient is the exact one through s (ds/dΔ_k = s/|y|). GSPO as its paper
 *         defines it (every sequence weighs the same) needs `seq-mean-token-mean` with unit
 *         'sequence' (config preset `gspo`); other weights make MATPO variants of GSPO.
 *
 * Optional terms per token: + β·KL_t(πθ ‖ π_ref) with k1 = logπθ − logπ_ref or
 * k3 = exp(logπ_ref − logπθ) − (logπ_ref − logπθ) − 1; − η·H_t (entropy bonus).
 *
 * Aggregation: loss = Σ_t w_t·ℓ_t with one weight per sequence, computed ONCE from the whole
 * mini-batch (`aggregationWeights`), so micro-batches can be summed. N = trainable tokens in the
 * mini-batch; a unit is, by default, one planner rollout TOGETHER with its workers (`rolloutId`;
 * MATPO.md), or one sequence with `unit: 'sequence'`; U = units with ≥ 1 trainable token, N_u =
 * trainable tokens in unit u:
 *   token-mean                w = 1/N
 *   seq-mean-token-sum        w = 1/U
 *   seq-mean-token-mean       w = 1/(U·N_u)    (the unit's planner and worker tokens pooled)
 *   seq-mean-token-sum-norm   w = 1/(U·L), L = `normTokens` or, when unset, max_u N_u (Dr.GRPO)
 *
 * Metrics are additive sums (the policy sums them over micro-batches): tokens, clipped, ratio_sum,
 * ratio_sq_sum, entropy_sum, approx_kl_sum (k3 of π_old‖πθ), kl_ref_sum, also per role
 * ("planner/tokens", …).
 */
import { Registry } from '../core/registry.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import type { Datum } from '../core/records.ts';
import type { ForwardOutput, LossFn, LossOutput } from '../core/policy.ts';

export interface PolicyLossConfig {
  /** Policy-loss registry name: "ppo" or "gspo". */
  name: string;
  clipLow: number;
  clipHigh: number;
  /** Dual-clip constant c (> 1) applied by ppo when A < 0; 0 or null disables it; gspo ignores it. */
  dualClip: number | null;
  /** Aggregation registry name. */
  aggregation: string;
  unit: 'rollout' | 'sequence';
  /** L for seq-mean-token-sum-norm; null → max trainable tokens of a unit in the mini-batch. */
  normTokens: number | null;
  klCoef: number;
  klEstimator: 'k1' | 'k3';
  entropyCoef: number;
}

const LOG_RATIO_CLAMP = 20;

// ---------------------------------------------------------------------------------------------
// Aggregation weights

export type AggregationFn = (datums: readonly Datum[], config: PolicyLossConfig) => Map<string, number>;
export const aggregationRegistry = new Registry<AggregationFn>('loss aggregation mode');

function countMask(mask: readonly number[]): number {
  let n = 0;
  for (const m of mask) n += m ? 1 : 0;
  return n;
}

/** Trainable tokens per unit (units with 0 trainable tokens omitted) and per sequence. */
function unitCounts(
  datums: readonly Datum[],
  config: PolicyLossConfig,
): { perUnit: Map<string, number>; unitOf: Map<string, string>; total: number } {
  const perUnit = new Map<string, number>();
  const unitOf = new Map<string, string>();
  let total = 0;
  for (const d of datums) {
    if (unitOf.has(d.sequenceId)) throw new InvalidArgumentError('datums', `sequence id "${d.sequenceId}" appears twice in the mini-batch`);
    const unit = config.unit === 'sequence' ? `seq:${d.sequenceId}` : `rollout:${d.rolloutId}`;
    unitOf.set(d.sequenceId, unit);
    const n = countMask(d.mask);
    total += n;
    if (n > 0) perUnit.set(unit, (perUnit.get(unit) ?? 0) + n);
  }
  return { perUnit, unitOf, total };
}

aggregationRegistry.register('token-mean', (datums, config) => {
  const { unitOf, total } = unitCounts(datums, config);
  return new Map([...unitOf.keys()].map((id) => [id, total > 0 ? 1 / total : 0]));
});

aggregationRegistry.register('seq-mean-token-sum', (datums, config) => {
  const { perUnit, unitOf } = unitCounts(datums, config);
  const U = perUnit.size;
  return new Map([...unitOf].map(([id, u]) => [id, perUnit.has(u) ? 1 / U : 0]));
});

aggregationRegistry.register('seq-mean-token-mean', (datums, config) => {
  const { perUnit, unitOf } = unitCounts(datums, config);
  const U = perUnit.size;
  return new Map([...unitOf].map(([id, u]) => [id, perUnit.has(u) ? 1 / (U * perUnit.get(u)!) : 0]));
});

aggregationRegistry.register('seq-mean-token-sum-norm', (datums, config) => {
  const { perUnit, unitOf } = unitCounts(datums, config);
  const U = perUnit.size;
  const L = config.normTokens ?? Math.max(0, ...perUnit.values());
  if (!(L > 0) && U > 0) throw new InvalidArgumentError('rl.loss.normTokens', `must be > 0, got ${L}`);
  return new Map([...unitOf].map(([id, u]) => [id, perUnit.has(u) ? 1 / (U * L) : 0]));
});

/** Per-sequence aggregation weight for the whole mini-batch. */
export function aggregationWeights(datums: readonly Datum[], config: PolicyLossConfig): Map<string, number> {
  return aggregationRegistry.get(config.aggregation)(datums, config);
}

// ---------------------------------------------------------------------------------------------
// Policy-loss terms (one sequence at a time)

export interface TermInput {
  logprobs: ArrayLike<number>;
  oldLogprobs: readonly number[];
  advantages: readonly number[];
  mask: readonly number[];
  /** Aggregation weight of every token of this sequence. */
  weight: number;
  config: PolicyLossConfig;
}

export interface TermOutput {
  /** Σ_t w·ℓ_t over the sequence's trainable tokens. */
  loss: number;
  /** d(loss)/d(logprob[t]), 0 on untrainable tokens. */
  dLogprobs: Float64Array;
  /** Counts over trainable tokens: clipped, dual_clipped, ratio_sum, ratio_sq_sum. */
  metrics: { clipped: number; dual_clipped: number; ratio_sum: number; ratio_sq_sum: number };
}

export type PolicyLossTerm = (input: TermInput) => TermOutput;
export const policyLossRegistry = new Registry<PolicyLossTerm>('policy loss');

function clampLogRatio(x: number): { v: number; inside: boolean } {
  if (x > LOG_RATIO_CLAMP) return { v: LOG_RATIO_CLAMP, inside: false };
  if (x < -LOG_RATIO_CLAMP) return { v: -LOG_RATIO_CLAMP, inside: false };
  return { v: x, inside: true };
}

/**
 * The clipped surrogate at ratio r for advantage A: value and d(value)/dr.
 * `dual` is the dual-clip constant (> 1) or 0 when disabled.
 */
export function clippedSurrogate(
  r: number,
  A: number,
  lo: number,
  hi: number,
  dual: number,
): { value: number; dr: number; clipped: boolean; dualClipped: boolean } {
  const s1 = -A * r;
  const rc = Math.min(Math.max(r, 1 - lo), 1 + hi);
  const s2 = -A * rc;
  // When s2 > s1 the ratio is outside the clip range on the side where the clipped term is constant.
  let value = s1;
  let dr = -A;
  let clipped = false;
  if (s2 > s1) {
    value = s2;
    dr = 0;
    clipped = true;
  }
  let dualClipped = false;
  if (A < 0 && dual > 0 && value > -dual * A) {
    value = -dual * A;
    dr = 0;
    dualClipped = true;
  }
  return { value, dr, clipped, dualClipped };
}

function dualOf(config: PolicyLossConfig): number {
  const c = config.dualClip ?? 0;
  if (c !== 0 && !(c > 1)) throw new InvalidArgumentError('rl.loss.dualClip', `must be > 1 (or 0/null to disable), got ${c}`);
  return c;
}

policyLossRegistry.register('ppo', ({ logprobs, oldLogprobs, advantages, mask, weight, config }) => {
  const dual = dualOf(config);
  const T = mask.length;
  const dLogprobs = new Float64Array(T);
  const metrics = { clipped: 0, dual_clipped: 0, ratio_sum: 0, ratio_sq_sum: 0 };
  let loss = 0;
  for (let t = 0; t < T; t++) {
    if (!mask[t]) continue;
    const { v, inside } = clampLogRatio(logprobs[t] - oldLogprobs[t]);
    const r = Math.exp(v);
    const s = clippedSurrogate(r, advantages[t], config.clipLow, config.clipHigh, dual);
    loss += weight * s.value;
    // dℓ/dlogπ = dℓ/dr · r (0 outside the log-ratio clamp)
    dLogprobs[t] = inside ? weight * s.dr * r : 0;
    metrics.clipped += s.clipped ? 1 : 0;
    metrics.dual_clipped += s.dualClipped ? 1 : 0;
    metrics.ratio_sum += r;
    metrics.ratio_sq_sum += r * r;
  }
  return { loss, dLogprobs, metrics };
});

policyLossRegistry.register('gspo', ({ logprobs, oldLogprobs, advantages, mask, weight, config }) => {
  const T = mask.length;
  const dLogprobs = new Float64Array(T);
  const metrics = { clipped: 0, dual_clipped: 0, ratio_sum: 0, ratio_sq_sum: 0 };
  const n = countMask(mask);
  if (n === 0) return { loss: 0, dLogprobs, metrics };
  let sumDelta = 0;
  for (let t = 0; t < T; t++) if (mask[t]) sumDelta += logprobs[t] - oldLogprobs[t];
  const { v, inside } = clampLogRatio(sumDelta / n);
  const s = Math.exp(v);
  let loss = 0;
  let dds = 0; // d(loss)/ds summed over the sequence's tokens
  for (let t = 0; t < T; t++) {
    if (!mask[t]) continue;
    const c = clippedSurrogate(s, advantages[t], config.clipLow, config.clipHigh, 0);
    loss += weight * c.value;
    dds += weight * c.dr;
    metrics.clipped += c.clipped ? 1 : 0;
  }
  // ds/dlogπ_k = s/n for every trainable k
  const g = inside ? (dds * s) / n : 0;
  for (let t = 0; t < T; t++) if (mask[t]) dLogprobs[t] = g;
  metrics.ratio_sum = s * n;
  metrics.ratio_sq_sum = s * s * n;
  return { loss, dLogprobs, metrics };
});

// ---------------------------------------------------------------------------------------------
// The whole loss over datums

export interface LossResult64 {
  loss: number;
  dLogprobs: Float64Array[];
  dEntropies: Float64Array[];
  metrics: Record<string, number>;
}

function addMetric(m: Record<string, number>, key: string, v: number): void {
  m[key] = (m[key] ?? 0) + v;
}

/**
 * The loss over some datums of a mini-batch whose aggregation weights are `weights` (by sequence
 * id), in float64. logprobs[i][t] / entropies[i][t] follow the ForwardOutput convention.
 */
export function computePolicyLoss(
  config: PolicyLossConfig,
  weights: ReadonlyMap<string, number>,
  datums: readonly Datum[],
  logprobs: readonly ArrayLike<number>[],
  entropies?: readonly ArrayLike<number>[],
): LossResult64 {
  const term = policyLossRegistry.get(config.name);
  if (config.klCoef !== 0 && config.klEstimator !== 'k1' && config.klEstimator !== 'k3')
    throw new InvalidArgumentError('rl.loss.klEstimator', `must be "k1" or "k3", got "${config.klEstimator}"`);
  if (logprobs.length !== datums.length)
    throw new InvalidArgumentError('forward', `${logprobs.length} logprob rows for ${datums.length} datums`);
  const metrics: Record<string, number> = {};
  const dLogprobs: Float64Array[] = [];
  const dEntropies: Float64Array[] = [];
  let loss = 0;
  datums.forEach((d, i) => {
    const T = d.tokens.length;
    const lp = logprobs[i];
    if (lp.length !== T || d.mask.length !== T || d.advantages.length !== T || d.oldLogprobs.length !== T)
      throw new InvalidArgumentError(
        `datum ${d.sequenceId}`,
        `arrays must all have ${T} entries (logprobs ${lp.length}, mask ${d.mask.length}, ` +
          `advantages ${d.advantages.length}, oldLogprobs ${d.oldLogprobs.length})`,
      );
    const w = weights.get(d.sequenceId);
    if (w === undefined) throw new InvalidArgumentError(`datum ${d.sequenceId}`, 'is not part of the mini-batch this loss was built for');
    const out = term({ logprobs: lp, oldLogprobs: d.oldLogprobs, advantages: d.advantages, mask: d.mask, weight: w, config });
    loss += out.loss;
    const dE = new Float64Array(T);
    const ent = entropies?.[i];
    const ref = d.refLogprobs;
    if (config.klCoef !== 0 && (ref === undefined || ref.length !== T))
      throw new InvalidArgumentError(`datum ${d.sequenceId}`, 'a KL term needs refLogprobs with one entry per token');
    let n = 0;
    let entSum = 0;
    let approxKl = 0;
    let klRef = 0;
    for (let t = 0; t < T; t++) {
      if (!d.mask[t]) continue;
      n++;
      const delta = lp[t] - d.oldLogprobs[t];
      approxKl += Math.exp(delta) - 1 - delta; // k3 of KL(π_old ‖ πθ)
      if (ent) entSum += ent[t];
      if (config.klCoef !== 0) {
        const x = ref![t] - lp[t];
        const kl = config.klEstimator === 'k1' ? -x : Math.exp(x) - x - 1;
        const dkl = config.klEstimator === 'k1' ? 1 : 1 - Math.exp(x);
        klRef += kl;
        loss += config.klCoef * w * kl;
        out.dLogprobs[t] += config.klCoef * w * dkl;
      }
      if (config.entropyCoef !== 0) {
        if (!ent) throw new InvalidArgumentError('forward', 'an entropy bonus needs entropies from the forward pass');
        loss -= config.entropyCoef * w * ent[t];
        dE[t] = -config.entropyCoef * w;
      }
    }
    dLogprobs.push(out.dLogprobs);
    dEntropies.push(dE);
    for (const prefix of ['', `${d.role}/`]) {
      addMetric(metrics, `${prefix}tokens`, n);
      addMetric(metrics, `${prefix}clipped`, out.metrics.clipped);
      addMetric(metrics, `${prefix}dual_clipped`, out.metrics.dual_clipped);
      addMetric(metrics, `${prefix}ratio_sum`, out.metrics.ratio_sum);
      addMetric(metrics, `${prefix}ratio_sq_sum`, out.metrics.ratio_sq_sum);
      addMetric(metrics, `${prefix}entropy_sum`, entSum);
      addMetric(metrics, `${prefix}approx_kl_sum`, approxKl);
      addMetric(metrics, `${prefix}kl_ref_sum`, klRef);
    }
  });
  metrics.loss = loss;
  return { loss, dLogprobs, dEntropies, metrics };
}

/**
 * Build the LossFn for one mini-batch: aggregation weights are computed here from ALL of the
 * mini-batch's datums, so the policy may call the returned function on any split into
 * micro-batches and sum the results. A micro-batch whose loss is not finite returns NaN
 * gradients, so the optimizer step is skipped rather than applied with garbage.
 */
export function makePolicyLoss(config: PolicyLossConfig, allDatums: readonly Datum[]): LossFn {
  policyLossRegistry.get(config.name);
  const weights = aggregationWeights(allDatums, config);
  return (datums: readonly Datum[], forward: ForwardOutput): LossOutput => {
    const r = computePolicyLoss(config, weights, datums, forward.logprobs, forward.entropies);
    // A non-finite loss poisons its gradient, so the policy's optimStep skips the update (the
    // trainable policy contract: a non-finite gradient is not applied).
    const poison = !Number.isFinite(r.loss);
    return {
      loss: r.loss,
      dLogprobs: r.dLogprobs.map((a) => (poison ? new Float32Array(a.length).fill(NaN) : Float32Array.from(a))),
      dEntropies: config.entropyCoef !== 0 ? r.dEntropies.map((a) => Float32Array.from(a)) : undefined,
      metrics: r.metrics,
    };
  };
}

/**
 * Supervised loss for the warm-start: mean negative log-likelihood over the trainable tokens of
 * the whole mini-batch (w = 1/N, N computed up front, so micro-batches sum). With
 * `otherTokenWeight` > 0 the other predicted tokens count too, at that weight, in a weighted mean.
 */
export function makeNllLoss(allDatums: readonly Datum[], options: { otherTokenWeight?: number } = {}): LossFn {
  // weight of each predicted token (t ≥ 1): 1 where the mask is set, otherTokenWeight elsewhere
  // (0 by default: only the trainable tokens); the loss is the weighted mean over all datums
  const other = options.otherTokenWeight ?? 0;
  const weightOf = (d: Datum, t: number) => (d.mask[t] ? 1 : t > 0 ? other : 0);
  let N = 0;
  for (const d of allDatums) for (let t = 0; t < d.tokens.length; t++) N += weightOf(d, t);
  const w = N > 0 ? 1 / N : 0;
  return (datums, forward) => {
    let loss = 0;
    let tokens = 0;
    const dLogprobs = datums.map((d, i) => {
      const g = new Float32Array(d.tokens.length);
      const lp = forward.logprobs[i];
      for (let t = 0; t < d.tokens.length; t++) {
        const k = weightOf(d, t);
        if (!k) continue;
        loss -= w * k * lp[t];
        g[t] = -w * k;
        tokens++;
      }
      return g;
    });
    return { loss, dLogprobs, metrics: { loss, tokens, nll_sum: loss / (w || 1) } };
  };
}
