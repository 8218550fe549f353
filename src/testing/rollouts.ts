/**
 * Small hand-made Rollout records for the rl and train tests: sequences with a given trainable mask
 * and format score, and rollouts with given workers and reward.
 */
import type { Rollout, Sequence } from '../core/records.ts';
import type { Role } from '../core/records.ts';

export function testSequence(args: {
  id: string;
  role: Role;
  parentId?: string | null;
  mask: number[];
  formatScore?: number;
  logprob?: number;
}): Sequence {
  return {
    id: args.id,
    parentId: args.parentId ?? null,
    role: args.role,
    tokens: args.mask.map((_, t) => 1 + (t % 7)),
    mask: args.mask.slice(),
    logprobs: args.mask.map((m) => (m ? (args.logprob ?? -0.5) : 0)),
    turns: [],
    messages: [],
    outcome: 'answered',
    formatScore: args.formatScore ?? 1,
  };
}

export function testRollout(args: {
  id: string;
  questionId: string;
  index?: number;
  mode?: 'matpo' | 'single';
  rootMask: number[];
  workerMasks?: number[][];
  reward?: number;
  answer?: string | null;
  gold?: string[];
  formatPlanner?: number;
  formatWorkers?: number[];
}): Rollout {
  const mode = args.mode ?? 'matpo';
  const root = testSequence({
    id: `${args.id}/p`,
    role: mode === 'single' ? 'single' : 'planner',
    mask: args.rootMask,
    formatScore: args.formatPlanner,
  });
  const workers = (args.workerMasks ?? []).map((mask, j) =>
    testSequence({ id: `${args.id}/w${j}`, role: 'worker', parentId: root.id, mask, formatScore: args.formatWorkers?.[j] }),
  );
  return {
    id: args.id,
    questionId: args.questionId,
    index: args.index ?? 0,
    mode,
    question: `question ${args.questionId}`,
    goldAnswers: args.gold ?? ['gold'],
    root,
    workers,
    answer: args.answer ?? null,
    reward: args.reward === undefined ? undefined : { accuracy: 0, formatPlanner: 1, formatWorkers: 1, total: args.reward },
    outcome: 'answered',
    timings: { totalMs: 0, sampleMs: 0, toolMs: 0 },
  };
}
