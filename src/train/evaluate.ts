/**
 * Evaluation: every question × `repeats` rollouts with a rollout runner, scored like training
 * rollouts. Accuracy is the mean over all rollouts; its standard error treats questions as the
 * sampling unit: SE = sd_q(mean accuracy of question q over its repeats) / sqrt(#questions) (sample
 * sd, n−1). Sampling seeds come from a stream of their own, so evaluating never perturbs training.
 */
import type { Rollout } from '../core/records.ts';
import { scoreRollout, type AnswerScorer, type RewardWeights } from '../rl/rewards.ts';
import { Rng } from '../util/rng.ts';
import type { Question, RolloutRunner } from '../core/question.ts';
import { mean, standardError } from '../util/stats.ts';
import { groundingStats, type GroundingStats } from '../rl/grounding.ts';

/** Map with at most `limit` calls in flight; results keep the input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  });
  await Promise.all(workers);
  return out;
}

export interface EvalOptions {
  runner: RolloutRunner;
  questions: readonly Question[];
  repeats: number;
  mode: 'matpo' | 'single';
  /** Seed of the evaluation's sampling stream. */
  seed: number | string;
  temperature: number;
  scorer: AnswerScorer;
  weights: RewardWeights;
  concurrency: number;
  /** Called after each finished rollout (for progress bars). */
  onRollout?: (done: number, total: number) => void;
}

export interface EvalResult {
  accuracy: number;
  stderr: number;
  reward: number;
  formatPlanner: number;
  formatWorkers: number;
  workersPerRollout: number;
  /** Share of reports whose cited ids and stated value appear in their own tool output (rl/grounding.ts). */
  grounding: GroundingStats;
  questions: number;
  rollouts: Rollout[];
  /** Flat metrics named "eval/<metric>". */
  metrics: Record<string, number>;
}

export async function evaluate(o: EvalOptions): Promise<EvalResult> {
  const rng = new Rng(o.seed);
  const jobs = o.questions.flatMap((q) => Array.from({ length: o.repeats }, (_, r) => ({ q, r, seed: rng.nextU32() })));
  let done = 0;
  const rollouts = await mapLimit(jobs, o.concurrency, async ({ q, r, seed }) => {
    const rollout = await o.runner({
      question: q,
      index: r,
      rolloutId: `eval/${q.id}/${r}`,
      mode: o.mode,
      seed,
      temperature: o.temperature,
    });
    await scoreRollout(rollout, o.scorer, o.weights);
    o.onRollout?.(++done, jobs.length);
    return rollout;
  });
  const perQuestion = new Map<string, number[]>();
  for (const r of rollouts) {
    const list = perQuestion.get(r.questionId) ?? [];
    list.push(r.reward!.accuracy);
    perQuestion.set(r.questionId, list);
  }
  const accuracy = mean(rollouts.map((r) => r.reward!.accuracy));
  const stderr = standardError([...perQuestion.values()].map(mean));
  const withWorkers = rollouts.filter((r) => r.workers.length > 0);
  const result = {
    accuracy,
    stderr,
    reward: mean(rollouts.map((r) => r.reward!.total)),
    formatPlanner: mean(rollouts.map((r) => r.root.formatScore)),
    formatWorkers: mean(withWorkers.flatMap((r) => r.workers.map((w) => w.formatScore))),
    workersPerRollout: mean(rollouts.map((r) => r.workers.length)),
    grounding: groundingStats(rollouts),
    questions: perQuestion.size,
    rollouts,
  };
  return {
    ...result,
    metrics: {
      'eval/accuracy': result.accuracy,
      'eval/accuracy_se': result.stderr,
      'eval/reward': result.reward,
      'eval/format_planner': result.formatPlanner,
      'eval/format_workers': result.formatWorkers,
      'eval/workers_per_rollout': result.workersPerRollout,
      ...(result.grounding.claiming > 0 ? { 'eval/grounding': result.grounding.rate } : {}),
      'eval/grounding_reports': result.grounding.claiming,
      'eval/questions': result.questions,
      'eval/rollouts': rollouts.length,
    },
  };
}
