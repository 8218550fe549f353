/**
 * Credit assignment: from scored rollouts to one scalar advantage per sequence (planner/single and
 * every worker). A group is the rollouts of one question (same `questionId`).
 *
 *   matpo            MATPO.md: A_i from the estimator over the group's planner rewards; every
 *                    worker (i, j) gets exactly A_i. Workers have no reward and no normalisation
 *                    of their own.
 *   agent-wise       Dr. MAS: normalise per (question, role) with each role's own statistics. The
 *                    planner group is the G planner rewards; the worker group is every worker
 *                    sequence of the question, each carrying its parent rollout's reward (workers
 *                    are not judged), so a rollout with 3 workers contributes 3 samples to the
 *                    worker statistics.
 *   per-role-groups  M-GRPO-style aligned groups: planners as in matpo; workers are grouped by
 *                    (question, worker slot j): the j-th delegated worker of every rollout that
 *                    has one forms a group, again carrying parent rewards.
 *
 * The advantage is a scalar per sequence; `buildDatums` broadcasts it onto the sequence's OWN
 * trainable mask (never another sequence's mask — see MATPO.md on the reference's row-copy defect).
 */
import { Registry } from '../core/registry.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import type { Rollout } from '../core/records.ts';
import { estimatorRegistry, filterZeroVarianceGroups, type EstimatorOptions } from './advantages.ts';

export interface CreditOptions extends EstimatorOptions {
  estimator: string;
  /** DAPO: drop the rollouts of questions whose planner rewards are all equal. */
  dropZeroVarianceGroups?: boolean;
}

export interface CreditResult {
  /** sequence id → scalar advantage, for every sequence of every kept rollout. */
  sequenceAdvantages: Map<string, number>;
  /** rollout id → the planner's (or single agent's) advantage, for kept rollouts. */
  rolloutAdvantages: Map<string, number>;
  /** Ids of the rollouts that were kept (all, unless the DAPO filter dropped some). */
  keptRolloutIds: Set<string>;
  metrics: Record<string, number>;
}

export type CreditAssigner = (rollouts: readonly Rollout[], options: CreditOptions) => CreditResult;

export const creditRegistry = new Registry<CreditAssigner>('credit assignment');

function rewardOf(r: Rollout): number {
  if (r.reward === undefined) throw new InvalidArgumentError('rollouts', `rollout ${r.id} has no reward; score it first`);
  return r.reward.total;
}

/** Groups rollouts by question id, keeping first-seen order. */
export function groupByQuestion(rollouts: readonly Rollout[]): Rollout[][] {
  const groups = new Map<string, Rollout[]>();
  for (const r of rollouts) {
    let g = groups.get(r.questionId);
    if (!g) groups.set(r.questionId, (g = []));
    g.push(r);
  }
  return [...groups.values()];
}

/** Applies the optional DAPO filter; returns the surviving groups and filter metrics. */
function keptGroups(rollouts: readonly Rollout[], options: CreditOptions): { groups: Rollout[][]; metrics: Record<string, number> } {
  const all = groupByQuestion(rollouts);
  if (!options.dropZeroVarianceGroups) return { groups: all, metrics: { groups: all.length, groups_kept: all.length } };
  const { kept, metrics } = filterZeroVarianceGroups(all.map((g) => g.map(rewardOf)));
  return { groups: kept.map((i) => all[i]), metrics };
}

function plannerAdvantages(groups: Rollout[][], options: CreditOptions, out: CreditResult): void {
  const estimator = estimatorRegistry.get(options.estimator);
  for (const g of groups) {
    const { advantagesG } = estimator(g.map(rewardOf), options);
    g.forEach((r, i) => {
      out.rolloutAdvantages.set(r.id, advantagesG[i]);
      out.sequenceAdvantages.set(r.root.id, advantagesG[i]);
      out.keptRolloutIds.add(r.id);
    });
  }
}

function emptyResult(metrics: Record<string, number>): CreditResult {
  return { sequenceAdvantages: new Map(), rolloutAdvantages: new Map(), keptRolloutIds: new Set(), metrics };
}

creditRegistry.register('matpo', (rollouts, options) => {
  const { groups, metrics } = keptGroups(rollouts, options);
  const out = emptyResult(metrics);
  plannerAdvantages(groups, options, out);
  for (const g of groups) for (const r of g) for (const w of r.workers) out.sequenceAdvantages.set(w.id, out.rolloutAdvantages.get(r.id)!);
  return out;
});

/** Workers grouped by a key within each question; each worker carries its parent's reward. */
function workerGroups(groups: Rollout[][], options: CreditOptions, out: CreditResult, key: (slot: number) => string): void {
  const estimator = estimatorRegistry.get(options.estimator);
  for (const g of groups) {
    const buckets = new Map<string, { ids: string[]; rewards: number[] }>();
    for (const r of g) {
      r.workers.forEach((w, j) => {
        const k = key(j);
        let b = buckets.get(k);
        if (!b) buckets.set(k, (b = { ids: [], rewards: [] }));
        b.ids.push(w.id);
        b.rewards.push(rewardOf(r));
      });
    }
    for (const b of buckets.values()) {
      const { advantagesG } = estimator(b.rewards, options);
      b.ids.forEach((id, i) => out.sequenceAdvantages.set(id, advantagesG[i]));
    }
  }
}

creditRegistry.register('agent-wise', (rollouts, options) => {
  const { groups, metrics } = keptGroups(rollouts, options);
  const out = emptyResult(metrics);
  plannerAdvantages(groups, options, out);
  workerGroups(groups, options, out, () => 'worker');
  return out;
});

creditRegistry.register('per-role-groups', (rollouts, options) => {
  const { groups, metrics } = keptGroups(rollouts, options);
  const out = emptyResult(metrics);
  plannerAdvantages(groups, options, out);
  workerGroups(groups, options, out, (j) => `worker-${j}`);
  return out;
});
