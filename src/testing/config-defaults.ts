/**
 * The run configuration's defaults (the one home of every default, train/config.ts) for tests and
 * benchmarks that build components by hand: rollout options, reward weights and the policy loss,
 * each with the given fields replaced.
 */
import type { AgentLimits, RolloutOptions } from '../agents/rollout.ts';
import type { RewardWeights } from '../rl/rewards.ts';
import type { PolicyLossConfig } from '../rl/losses.ts';
import { lossConfig, parseConfig, rewardWeights, rolloutOptions } from '../train/config.ts';

export function testRolloutOptions(
  overrides: Partial<Omit<RolloutOptions, 'limits'>> & { limits?: Partial<AgentLimits> } = {},
): RolloutOptions {
  const base = rolloutOptions(parseConfig({}));
  const { limits, ...rest } = overrides;
  return { ...base, ...rest, limits: { ...base.limits, ...limits } };
}

/** The paper's reward weights (0.9 accuracy, 0.5·(0.1 fmt(planner) + 0.1 mean fmt(workers)), 0.1 single). */
export function defaultRewardWeights(overrides: Partial<RewardWeights> = {}): RewardWeights {
  return { ...rewardWeights(parseConfig({})), ...overrides };
}

export function defaultPolicyLoss(overrides: Partial<PolicyLossConfig> = {}): PolicyLossConfig {
  return { ...lossConfig(parseConfig({})), ...overrides };
}
