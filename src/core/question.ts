/**
 * What a rollout is asked to do: a question with its gold answers, and one request to run a rollout
 * (planner–worker or single-agent) for it. The training and evaluation loops produce requests; the
 * agents layer's rollout engine (or a toy task in tests) runs them.
 */
import type { Mode, Rollout } from './records.ts';

export interface Question {
  id: string;
  question: string;
  answers: string[];
}

export interface RolloutRequest {
  question: Question;
  /** Index within the group (0..G-1). */
  index: number;
  /** Unique id for the rollout (e.g. "s000003/q12/2"). */
  rolloutId: string;
  mode: Mode;
  /** Seed of every sampling call of this rollout (the same request gives the same rollout). */
  seed: number;
  /** Sampling temperature of every turn; the runner's configured temperature when absent. */
  temperature?: number;
  signal?: AbortSignal;
}

/** Runs one rollout (a planner with its workers, or a single agent). */
export type RolloutRunner = (request: RolloutRequest) => Promise<Rollout>;
