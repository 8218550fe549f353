/**
 * Rollout options for tests and benchmarks: the run configuration's defaults (the one home of every
 * default, train/config.ts) with the given fields replaced.
 */
import type { AgentLimits, RolloutOptions } from '../agents/rollout.ts';
import { parseConfig, rolloutOptions } from '../train/config.ts';

export function testRolloutOptions(overrides: Partial<Omit<RolloutOptions, 'limits'>> & { limits?: Partial<AgentLimits> } = {}): RolloutOptions {
  const base = rolloutOptions(parseConfig({}));
  const { limits, ...rest } = overrides;
  return { ...base, ...rest, limits: { ...base.limits, ...limits } };
}
