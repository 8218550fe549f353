/**
 * Rewards of one rollout (MATPO.md, "Rewards"). Only the planner's (or single agent's) final answer
 * is judged; workers get no reward of their own.
 *
 *   matpo:  R = wAcc·acc + wFmtScale·(wFmtPlanner·fmt(planner) + wFmtWorkers·mean_j fmt(worker_j))
 *           defaults 0.9, 0.5, 0.1, 0.1  →  R = 0.9·acc + 0.5·(0.1·fmt(p) + 0.1·mean_j fmt(w_j))
 *   single: R = wAcc·acc + wFmt·fmt(agent)                 defaults 0.9, 0.1
 *
 * `acc` comes from an answer scorer (exact match, F1, cover-EM or a judge) comparing the extracted
 * answer with the gold answers; `fmt(x)` is the sequence's format score (fraction of tool-call
 * blocks that parsed and matched their schema, 1 when there were none; computed by the agents layer
 * and stored on the Sequence).
 *
 * A rollout with no workers: mean_j fmt(worker_j) over an empty set is undefined. We use
 * `noWorkerFormat` (default 1.0), the same convention as fmt() itself ("1.0 when there are no
 * tool calls": no worker wrote a malformed call). This keeps a planner that answers directly from
 * being penalised on format relative to one that delegates; set it to 0 to reward delegation.
 */
import { Registry } from '../core/registry.ts';
import type { RewardParts, Rollout } from '../core/records.ts';
import { scorers } from './scoring.ts';
import { mean } from '../util/stats.ts';

/** Scores a predicted answer against the gold answers, in [0, 1] (a judge may be asynchronous). */
export type AnswerScorer = (prediction: string | null, golds: readonly string[], question?: string) => number | Promise<number>;

/** An AnswerScorer from the scorer registry of rl/scoring.ts (exact_match, f1, cover_em). */
export function registeredScorer(name: string): AnswerScorer {
  const scorer = scorers.get(name);
  return async (prediction, golds, question) => (await scorer({ prediction, answers: golds, question })).score;
}

export interface RewardWeights {
  accuracy: number;
  /** Outer factor on the MATPO format term (0.5 in the paper). */
  formatScale: number;
  formatPlanner: number;
  formatWorkers: number;
  /** Single-agent format weight. */
  formatSingle: number;
  /** Value of mean_j fmt(worker_j) for a rollout that spawned no workers. */
  noWorkerFormat: number;
}

export interface RewardInput {
  accuracy: number;
  formatPlanner: number;
  /** Format scores of the worker sequences, one per worker (may be empty). */
  formatWorkers: readonly number[];
}

export interface RewardResult {
  reward: RewardParts;
  metrics: Record<string, number>;
}

export type RewardFn = (input: RewardInput, weights: RewardWeights) => RewardResult;

export const rewardRegistry = new Registry<RewardFn>('reward');

rewardRegistry.register('matpo', (input, w) => {
  const fw = input.formatWorkers.length > 0 ? mean(input.formatWorkers) : w.noWorkerFormat;
  const total = w.accuracy * input.accuracy + w.formatScale * (w.formatPlanner * input.formatPlanner + w.formatWorkers * fw);
  return {
    reward: { accuracy: input.accuracy, formatPlanner: input.formatPlanner, formatWorkers: fw, total },
    metrics: { reward: total, accuracy: input.accuracy, format_planner: input.formatPlanner, format_workers: fw },
  };
});

rewardRegistry.register('single', (input, w) => {
  const total = w.accuracy * input.accuracy + w.formatSingle * input.formatPlanner;
  // A single agent has no workers: formatWorkers is recorded as 0 and carries no weight.
  return {
    reward: { accuracy: input.accuracy, formatPlanner: input.formatPlanner, formatWorkers: 0, total },
    metrics: { reward: total, accuracy: input.accuracy, format_planner: input.formatPlanner },
  };
});

/** Check a format score or accuracy is a finite number in [0, 1]. */
function checkUnit(name: string, x: number, rolloutId: string): void {
  if (!Number.isFinite(x) || x < 0 || x > 1) throw new RangeError(`rollout ${rolloutId}: ${name} must be in [0, 1], got ${x}`);
}

/**
 * Score a rollout and fill in `rollout.reward` (returns it too). The reward function is chosen by
 * name ("matpo" or "single"); by default it follows the rollout's mode.
 */
export async function scoreRollout(
  rollout: Rollout,
  scorer: AnswerScorer,
  weights: RewardWeights,
  rewardName: string = rollout.mode,
): Promise<RewardResult> {
  const accuracy = await scorer(rollout.answer, rollout.goldAnswers, rollout.question);
  checkUnit('accuracy', accuracy, rollout.id);
  checkUnit('planner format score', rollout.root.formatScore, rollout.id);
  for (const w of rollout.workers) checkUnit(`worker ${w.id} format score`, w.formatScore, rollout.id);
  const result = rewardRegistry.get(rewardName)(
    { accuracy, formatPlanner: rollout.root.formatScore, formatWorkers: rollout.workers.map((w) => w.formatScore) },
    weights,
  );
  rollout.reward = result.reward;
  return result;
}
