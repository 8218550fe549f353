/**
 * The run directory: everything a training run writes, in one layout that the dashboard reads.
 *
 *   runs/<name>/
 *     config.yaml                      the resolved config (every field, defaults filled in)
 *     metrics.jsonl                    one JSON object per line: {"step": n, "time": "<ISO-8601>", ...}
 *                                      metric keys are "<group>/<metric>": planner/reward,
 *                                      worker/tokens, single/accuracy, train/loss, train/grad_norm,
 *                                      time/rollout_s, eval/accuracy, ...; event lines carry
 *                                      "event" (e.g. {"step": 7, "event": "skipped", "reason": "..."})
 *     rollouts/step-000001.jsonl       the Rollout records of step 1 (src/agents/records.ts), one per
 *                                      line, with `reward` and `advantage` filled in
 *     eval/step-000000.jsonl           per-question evaluation records at step 0 (before training), …
 *     checkpoints/step-000010/         a complete checkpoint: the model in Hugging Face format
 *                                      (policy.save), optimizer/ (policy.saveOptimizerState) and
 *                                      trainer_state.json (step, data cursor, RNG states)
 *     checkpoints/latest               text file holding the name of the newest complete checkpoint
 *                                      ("step-000010\n"), replaced atomically
 *
 * Steps are 1-based; step 0 is "before the first update". Writes of checkpoints are atomic (temp
 * dir, fsync, rename, fsync of the parent, then the `latest` pointer by rename), so a killed run
 * leaves either the previous or the new checkpoint, never a half-written one. On resume, records of
 * steps after the checkpoint (work lost with the killed process) are removed from metrics.jsonl,
 * rollouts/ and eval/ so the log reads as one continuous run.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeSync,
  appendFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { FileFormatError } from '../core/errors.ts';

export const stepName = (step: number): string => `step-${String(step).padStart(6, '0')}`;

export function parseStepName(name: string): number | null {
  const m = /^step-(\d{6,})(\.jsonl)?$/.exec(name);
  return m ? Number(m[1]) : null;
}

export interface RunPaths {
  root: string;
  config: string;
  metrics: string;
  rollouts: string;
  eval: string;
  checkpoints: string;
  latest: string;
}

export function runPaths(root: string): RunPaths {
  return {
    root,
    config: join(root, 'config.yaml'),
    metrics: join(root, 'metrics.jsonl'),
    rollouts: join(root, 'rollouts'),
    eval: join(root, 'eval'),
    checkpoints: join(root, 'checkpoints'),
    latest: join(root, 'checkpoints', 'latest'),
  };
}

export function ensureRunDir(root: string): RunPaths {
  const p = runPaths(root);
  for (const d of [p.root, p.rollouts, p.eval, p.checkpoints]) mkdirSync(d, { recursive: true });
  return p;
}

/** fsync a file or directory by path. */
export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Write a file atomically: temp file in the same directory, fsync, rename, fsync the directory. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const dir = join(path, '..');
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  fsyncPath(dir);
}

export type MetricValue = number | string | boolean | null;

/** Append one line to metrics.jsonl: {"step", "time", ...metrics}. Non-finite numbers become null. */
export function appendMetrics(paths: RunPaths, step: number, metrics: Record<string, MetricValue>, time = new Date()): void {
  const record: Record<string, MetricValue> = { step, time: time.toISOString() };
  for (const [k, v] of Object.entries(metrics)) record[k] = typeof v === 'number' && !Number.isFinite(v) ? null : v;
  appendFileSync(paths.metrics, JSON.stringify(record) + '\n');
}

/** Write a step's records (rollouts or eval) as JSONL, atomically. */
export function writeStepRecords(dir: string, step: number, records: readonly unknown[]): string {
  const file = join(dir, `${stepName(step)}.jsonl`);
  writeFileAtomic(file, records.map((r) => JSON.stringify(r)).join('\n') + (records.length ? '\n' : ''));
  return file;
}

/** Read metrics.jsonl; a bad line is an error naming the file and line (a torn last line is ignored). */
export function readMetrics(paths: RunPaths): Record<string, unknown>[] {
  if (!existsSync(paths.metrics)) return [];
  const text = readFileSync(paths.metrics, 'utf8');
  const lines = text.split('\n');
  const out: Record<string, unknown>[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    try {
      out.push(JSON.parse(line));
    } catch (err) {
      if (i === lines.length - 1) return; // torn write at the end of a killed run
      throw new FileFormatError({ file: paths.metrics, line: i + 1, message: `invalid JSON: ${(err as Error).message}` });
    }
  });
  return out;
}

/**
 * Drop everything recorded after `step` (metrics lines with a larger step, rollouts/eval files of
 * later steps): called on resume from the checkpoint of `step`.
 */
export function truncateRunAfter(paths: RunPaths, step: number): void {
  if (existsSync(paths.metrics)) {
    const kept = readMetrics(paths).filter((r) => typeof r.step === 'number' && r.step <= step);
    writeFileAtomic(paths.metrics, kept.map((r) => JSON.stringify(r) + '\n').join(''));
  }
  for (const dir of [paths.rollouts, paths.eval]) {
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) {
      const s = parseStepName(name);
      if ((s !== null && s > step) || name.includes('.tmp-')) rmSync(join(dir, name), { force: true });
    }
  }
}
