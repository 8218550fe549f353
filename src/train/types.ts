/**
 * What the training and evaluation loops need from the layers around them, as plain types: a
 * question source, a rollout runner bound to a policy (the agents layer's rollout engine, or a toy
 * task in tests), and a policy loader.
 */
import type { Rollout } from '../agents/records.ts';
import type { Policy } from '../policy/types.ts';

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
  mode: 'matpo' | 'single';
  /** Seed of every sampling call of this rollout (the same request gives the same rollout). */
  seed: number;
  temperature: number;
  signal?: AbortSignal;
}

/** Runs one rollout (a planner with its workers, or a single agent) with a policy. */
export type RolloutRunner = (request: RolloutRequest) => Promise<Rollout>;

/** Opens a model directory as a trainable policy. */
export type PolicyLoader = (modelDir: string) => Promise<Policy>;
