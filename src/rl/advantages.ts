/**
 * Group-relative advantage estimators over one group's scalar rewards (a group is the G rollouts of
 * one question; MATPO.md "Advantages and credit assignment"), and the DAPO zero-variance filter.
 *
 *   grpo:    A_i = (R_i − mean R) / (std R + ε), std unbiased (n−1), ε = 1e-6.
 *            A group of one uses mean 0, std 1 (the reference's convention): A = R / (1 + ε).
 *   dr-grpo: A_i = R_i − mean R (no std division). A group of one uses mean 0: A = R.
 *   rloo:    A_i = R_i − mean_{j≠i} R_j = n/(n−1)·(R_i − mean R). A group of one: A = R.
 *
 * Every estimator is a pure function `(rewardsG, options) → { advantagesG, metrics }`.
 */
import { Registry } from '../core/registry.ts';
import { mean, sampleStd } from '../util/stats.ts';

export interface EstimatorOptions {
  /** Added to the std in grpo (1e-6 by default). */
  eps?: number;
}

export interface EstimatorResult {
  advantagesG: number[];
  metrics: Record<string, number>;
}

export type AdvantageEstimator = (rewardsG: readonly number[], options?: EstimatorOptions) => EstimatorResult;

export const estimatorRegistry = new Registry<AdvantageEstimator>('advantage estimator');

function checkRewards(rewardsG: readonly number[]): void {
  if (rewardsG.length === 0) throw new RangeError('advantage estimator: empty group');
  for (const r of rewardsG) if (!Number.isFinite(r)) throw new RangeError(`advantage estimator: reward ${r} is not finite`);
}

estimatorRegistry.register('grpo', (rewardsG, options = {}) => {
  checkRewards(rewardsG);
  const eps = options.eps ?? 1e-6;
  const n = rewardsG.length;
  const m = n === 1 ? 0 : mean(rewardsG);
  const std = n === 1 ? 1 : sampleStd(rewardsG);
  return { advantagesG: rewardsG.map((r) => (r - m) / (std + eps)), metrics: { reward_mean: m, reward_std: std } };
});

estimatorRegistry.register('dr-grpo', (rewardsG) => {
  checkRewards(rewardsG);
  const m = rewardsG.length === 1 ? 0 : mean(rewardsG);
  return { advantagesG: rewardsG.map((r) => r - m), metrics: { reward_mean: m } };
});

estimatorRegistry.register('rloo', (rewardsG) => {
  checkRewards(rewardsG);
  const n = rewardsG.length;
  if (n === 1) return { advantagesG: [rewardsG[0]], metrics: { reward_mean: 0 } };
  let sum = 0;
  for (const r of rewardsG) sum += r;
  // baseline_i = (sum − R_i) / (n − 1)
  return { advantagesG: rewardsG.map((r) => r - (sum - r) / (n - 1)), metrics: { reward_mean: sum / n } };
});

/**
 * DAPO's dynamic-sampling filter: keep only groups whose rewards are not all equal (a group with
 * zero reward variance has all-zero group-relative advantages and contributes no gradient). A group
 * of one always has zero variance and is dropped. Returns the indices of the kept groups. DAPO then
 * re-samples new groups until the batch is full again; the training loop does that part
 * (`rl.refillRounds`).
 */
export function filterZeroVarianceGroups(
  groupsRewards: readonly (readonly number[])[],
  tolerance = 0,
): {
  kept: number[];
  metrics: Record<string, number>;
} {
  const kept: number[] = [];
  groupsRewards.forEach((g, i) => {
    let lo = Infinity;
    let hi = -Infinity;
    for (const r of g) {
      lo = Math.min(lo, r);
      hi = Math.max(hi, r);
    }
    if (g.length > 1 && hi - lo > tolerance) kept.push(i);
  });
  return { kept, metrics: { groups: groupsRewards.length, groups_kept: kept.length, groups_dropped: groupsRewards.length - kept.length } };
}
