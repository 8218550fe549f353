/**
 * Atomic checkpoints in a run directory (layout in run-dir.ts):
 *
 *   1. write everything into checkpoints/.tmp-step-NNNNNN-<pid>/: the model (policy.save, Hugging
 *      Face format), optimizer/ (policy.saveOptimizerState) and trainer_state.json;
 *   2. fsync every file and the temp directory, rename it to checkpoints/step-NNNNNN, fsync
 *      checkpoints/;
 *   3. replace checkpoints/latest (temp file, fsync, rename, fsync) with "step-NNNNNN";
 *   4. delete older checkpoints beyond `keep`.
 *
 * A step-* directory therefore always holds a complete checkpoint; `latest` names the newest one,
 * and when `latest` is missing or stale the newest complete step-* directory is used. Nothing
 * time-dependent is written, so the same seed gives byte-identical checkpoints (resume is tested
 * that way).
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FileFormatError } from '../core/errors.ts';
import type { TrainablePolicy } from '../core/policy.ts';
import { fsyncPath, parseStepName, stepName, writeFileAtomic, type RunPaths } from './run-dir.ts';

export interface TrainerState {
  /** Last completed step (the checkpoint holds the weights after it). */
  step: number;
  /** Data stream position: epoch number and index of the next question in that epoch's order. */
  epoch: number;
  cursor: number;
  /** Saved RNG states by stream name (Rng.getState()). */
  rng: Record<string, number[]>;
  seed: number;
}

export const TRAINER_STATE_FILE = 'trainer_state.json';
export const OPTIMIZER_DIR = 'optimizer';

function fsyncTree(dir: string): void {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) fsyncTree(p);
    else fsyncPath(p);
  }
  fsyncPath(dir);
}

export async function saveCheckpoint(paths: RunPaths, policy: TrainablePolicy, state: TrainerState, keep = 0): Promise<string> {
  const name = stepName(state.step);
  const tmp = join(paths.checkpoints, `.tmp-${name}-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  await policy.save(tmp);
  mkdirSync(join(tmp, OPTIMIZER_DIR), { recursive: true });
  await policy.saveOptimizerState(join(tmp, OPTIMIZER_DIR));
  writeFileAtomic(join(tmp, TRAINER_STATE_FILE), JSON.stringify(state, null, 2) + '\n');
  fsyncTree(tmp);
  const final = join(paths.checkpoints, name);
  rmSync(final, { recursive: true, force: true });
  renameSync(tmp, final);
  fsyncPath(paths.checkpoints);
  writeFileAtomic(paths.latest, `${name}\n`);
  if (keep > 0) pruneCheckpoints(paths, keep);
  return final;
}

/** Complete checkpoints (step-* directories with trainer_state.json), oldest first. */
export function listCheckpoints(paths: RunPaths): { step: number; dir: string }[] {
  if (!existsSync(paths.checkpoints)) return [];
  return readdirSync(paths.checkpoints)
    .map((n) => ({ step: parseStepName(n), dir: join(paths.checkpoints, n) }))
    .filter((c): c is { step: number; dir: string } => c.step !== null && existsSync(join(c.dir, TRAINER_STATE_FILE)))
    .sort((a, b) => a.step - b.step);
}

function pruneCheckpoints(paths: RunPaths, keep: number): void {
  const all = listCheckpoints(paths);
  for (const c of all.slice(0, Math.max(0, all.length - keep))) rmSync(c.dir, { recursive: true, force: true });
  for (const n of readdirSync(paths.checkpoints))
    if (n.startsWith('.tmp-')) rmSync(join(paths.checkpoints, n), { recursive: true, force: true });
}

export function readTrainerState(dir: string): TrainerState {
  const file = join(dir, TRAINER_STATE_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new FileFormatError({ file, message: `cannot read trainer state: ${(err as Error).message}` });
  }
  const s = raw as Partial<TrainerState>;
  for (const k of ['step', 'epoch', 'cursor', 'seed'] as const)
    if (typeof s[k] !== 'number' || !Number.isInteger(s[k])) throw new FileFormatError({ file, field: k, message: 'expected an integer' });
  if (typeof s.rng !== 'object' || s.rng === null)
    throw new FileFormatError({ file, field: 'rng', message: 'expected an object of RNG states' });
  return s as TrainerState;
}

/** The newest complete checkpoint: the one `latest` names if it is complete, else the newest step-* dir. */
export function findLatestCheckpoint(paths: RunPaths): { dir: string; state: TrainerState } | null {
  if (existsSync(paths.latest)) {
    const name = readFileSync(paths.latest, 'utf8').trim();
    const dir = join(paths.checkpoints, name);
    if (parseStepName(name) !== null && existsSync(join(dir, TRAINER_STATE_FILE))) return { dir, state: readTrainerState(dir) };
  }
  const all = listCheckpoints(paths);
  if (all.length === 0) return null;
  const last = all[all.length - 1];
  return { dir: last.dir, state: readTrainerState(last.dir) };
}
