/**
 * Tinker's five built-in losses, as plain SUMS over the tokens of every datum (no mean, no
 * normalisation: a client folds any averaging into its weights or advantages). Per token t:
 *
 *   ℓ_t  log p_θ(target_t | prefix), computed by the server     q_t  `logprobs` input (sampler's)
 *   A_t  `advantages` input                                     w_t  `weights` input
 *   r_t  = exp(ℓ_t − q_t)                                       sg   stop-gradient
 *
 *   cross_entropy        L = −Σ w_t·ℓ_t                                     ∂L/∂ℓ_t = −w_t
 *     (targets may be [N, K] with weights [N, K]: −Σ_t Σ_k w_tk·log p(x_tk), top-K distillation)
 *   importance_sampling  L = −Σ r_t·A_t                                     ∂L/∂ℓ_t = −r_t·A_t
 *   ppo                  L = −Σ min(r_t·A_t, clip(r_t, lo, hi)·A_t)          ∂L/∂ℓ_t = −r_t·A_t if unclipped is the min,
 *                                                                            else 0
 *                        lo = clip_low_threshold (0.8), hi = clip_high_threshold (1.2), absolute ratios
 *   cispo                L = −Σ sg(clip(r_t, lo, hi))·ℓ_t·A_t                ∂L/∂ℓ_t = −clip(r_t, lo, hi)·A_t
 *                        lo 0.0, hi 4.0 by default (Tinker's documented one-sided clip)
 *   dro                  L = −Σ (ℓ_t·A_t − ½·β·(ℓ_t − q_t)²)                ∂L/∂ℓ_t = −A_t + β·(ℓ_t − q_t)
 *                        β = `beta`, default 0.1 (Tinker's docs state none; 0.1 is the value a public reimplementation uses)
 *
 * For the four RL losses an optional `weights` input multiplies each token's term (as SkyRL's server
 * does); without it every token counts once and masking is done with A_t = 0. `cross_entropy` without
 * `weights` counts every target once. Unknown inputs and config keys are rejected by name.
 *
 * Each loss returns the summed loss, ∂L/∂ℓ per element, and the elementwise loss (the per-token term,
 * returned to clients as `elementwise_loss`). Arithmetic is float64.
 */
import { InvalidArgumentError } from '../core/errors.ts';
import type { DenseTensor } from './tensor-data.ts';

export const LOSS_NAMES = ['cross_entropy', 'importance_sampling', 'ppo', 'cispo', 'dro'] as const;
export type LossName = (typeof LOSS_NAMES)[number];

interface LossSpec {
  required: readonly string[];
  optional: readonly string[];
  config: Readonly<Record<string, number>>;
}

export const LOSS_SPECS: Readonly<Record<LossName, LossSpec>> = {
  cross_entropy: { required: ['target_tokens'], optional: ['weights'], config: {} },
  importance_sampling: { required: ['target_tokens', 'logprobs', 'advantages'], optional: ['weights'], config: {} },
  ppo: {
    required: ['target_tokens', 'logprobs', 'advantages'],
    optional: ['weights'],
    config: { clip_low_threshold: 0.8, clip_high_threshold: 1.2 },
  },
  cispo: {
    required: ['target_tokens', 'logprobs', 'advantages'],
    optional: ['weights'],
    config: { clip_low_threshold: 0.0, clip_high_threshold: 4.0 },
  },
  dro: { required: ['target_tokens', 'logprobs', 'advantages'], optional: ['weights'], config: { beta: 0.1 } },
};

export function isLossName(name: string): name is LossName {
  return (LOSS_NAMES as readonly string[]).includes(name);
}

/** Check the loss name and its config (fields named `<prefix>loss_fn…`); returns the config with defaults filled in. */
export function resolveLossConfig(name: string, config: Record<string, number> | null | undefined, prefix = ''): Record<string, number> {
  const field = `${prefix}loss_fn_config`;
  if (!isLossName(name)) throw new InvalidArgumentError(`${prefix}loss_fn`, `unknown loss "${name}"; available: ${LOSS_NAMES.join(', ')}`);
  const spec = LOSS_SPECS[name];
  const out: Record<string, number> = { ...spec.config };
  for (const [k, v] of Object.entries(config ?? {})) {
    if (!(k in spec.config)) {
      const known = Object.keys(spec.config);
      throw new InvalidArgumentError(
        `${field}.${k}`,
        `not a setting of ${name} (${known.length ? `known: ${known.join(', ')}` : 'it takes none'})`,
      );
    }
    if (typeof v !== 'number' || !Number.isFinite(v))
      throw new InvalidArgumentError(`${field}.${k}`, `expected a finite number, got ${JSON.stringify(v)}`);
    out[k] = v;
  }
  if ('clip_low_threshold' in out && !(out.clip_low_threshold <= out.clip_high_threshold)) {
    throw new InvalidArgumentError(
      `${field}.clip_low_threshold`,
      `must not exceed clip_high_threshold (${out.clip_low_threshold} > ${out.clip_high_threshold})`,
    );
  }
  return out;
}

/** One datum's loss inputs, dense, each with the target's shape ([N] or [N, K]). */
export interface LossInputs {
  target_tokens: DenseTensor;
  weights?: DenseTensor;
  logprobs?: DenseTensor;
  advantages?: DenseTensor;
}

export interface DatumLoss {
  loss: number;
  /** ∂L/∂ℓ per element of target_tokens (row-major). */
  dLogprobs: Float64Array;
  elementwise: Float64Array;
}

const clip = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, x));

/** The loss term of element `i` and its derivative ∂term/∂ℓ, given its target logprob `l`. */
export function elementLoss(
  name: LossName,
  config: Record<string, number>,
  inputs: LossInputs,
  i: number,
  l: number,
): { term: number; grad: number } {
  const wi = inputs.weights ? inputs.weights.data[i] : 1;
  if (name === 'cross_entropy') return { term: -wi * l, grad: -wi };
  const q = inputs.logprobs!.data[i];
  const A = inputs.advantages!.data[i];
  const r = Math.exp(l - q);
  let term: number;
  let grad: number;
  switch (name) {
    case 'importance_sampling':
      term = -r * A;
      grad = -r * A;
      break;
    case 'ppo': {
      const unclipped = r * A;
      const clipped = clip(r, config.clip_low_threshold, config.clip_high_threshold) * A;
      if (unclipped <= clipped) {
        term = -unclipped;
        grad = -r * A;
      } else {
        term = -clipped;
        grad = 0; // the clipped ratio is constant in ℓ (r lies outside [lo, hi] here)
      }
      break;
    }
    case 'cispo': {
      const c = clip(r, config.clip_low_threshold, config.clip_high_threshold);
      term = -c * l * A;
      grad = -c * A;
      break;
    }
    case 'dro': {
      const d = l - q;
      term = -(l * A - 0.5 * config.beta * d * d);
      grad = -A + config.beta * d;
      break;
    }
  }
  return { term: wi * term, grad: wi * grad };
}

/** Loss of one datum given its target logprobs ℓ (row-major, target_tokens' shape). */
export function datumLoss(name: LossName, config: Record<string, number>, inputs: LossInputs, logprobs: ArrayLike<number>): DatumLoss {
  const n = inputs.target_tokens.data.length;
  if (logprobs.length !== n) throw new InvalidArgumentError('logprobs', `expected ${n} target logprobs, got ${logprobs.length}`);
  const dL = new Float64Array(n);
  const el = new Float64Array(n);
  let loss = 0;
  for (let i = 0; i < n; i++) {
    const { term, grad } = elementLoss(name, config, inputs, i, logprobs[i]);
    el[i] = term;
    dL[i] = grad;
    loss += term;
  }
  return { loss, dLogprobs: dL, elementwise: el };
}
