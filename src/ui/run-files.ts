/**
 * Reading a run directory for the dashboard: the metrics log read incrementally from a byte offset
 * (a run being written may end in a partial line), the per-step JSONL files under `rollouts/` and
 * `eval/`, rollout group summaries, and the one function that maps a requested relative path to a
 * file inside a run directory (or refuses it).
 *
 * Layout (written by the trainer): `config.yaml`, `metrics.jsonl`, `rollouts/step-NNNNNN.jsonl`,
 * `eval/step-NNNNNN.jsonl`, `checkpoints/…`.
 */
import { open, readdir, readFile, realpath, stat } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { Rollout, Sequence } from '../core/records.ts';

/** One parsed line of metrics.jsonl: `step`, maybe `time` / `event`, numeric `group/metric` keys. */
export type MetricRecord = Record<string, unknown> & { step: number };

export interface MetricsChunk {
  records: MetricRecord[];
  /** Byte offset just past the last consumed line; pass it back to continue. */
  offset: number;
  /** Number of lines consumed so far (for error line numbers). */
  line: number;
  /** One-line messages for lines that did not parse (`metrics.jsonl:7: …`). */
  errors: string[];
  /** True when the file shrank below the given offset, or was replaced, and was re-read from the start. */
  reset: boolean;
  /** Inode of the file read (a resumed run rewrites metrics.jsonl by rename); 0 when missing. */
  ino: number;
}

function parseMetricLine(text: string): MetricRecord | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return `invalid JSON (${(err as Error).message})`;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'expected a JSON object';
  const step = (value as Record<string, unknown>).step;
  if (typeof step !== 'number' || !Number.isFinite(step)) return 'field "step": expected a number';
  return value as MetricRecord;
}

/**
 * Read metrics.jsonl from `offset` (bytes) to the end. Complete lines are parsed; a last fragment
 * without a newline is taken only when it already parses as a whole JSON object (a proper prefix of
 * a JSON object never does), otherwise it is left for the next read. A missing file reads as empty.
 */
export async function readMetricsFrom(file: string, offset = 0, line = 0, ino = 0): Promise<MetricsChunk> {
  const out: MetricsChunk = { records: [], offset, line, errors: [], reset: false, ino };
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw err;
  }
  try {
    const st = await fh.stat();
    const size = st.size;
    out.ino = st.ino;
    if (size < offset || (ino !== 0 && st.ino !== ino)) {
      out.reset = true;
      out.offset = offset = 0;
      out.line = line = 0;
    }
    if (size === offset) return out;
    const buf = Buffer.alloc(size - offset);
    const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
    const data = buf.subarray(0, bytesRead);
    let start = 0;
    const name = file.split(sep).slice(-1)[0];
    while (start < data.length) {
      const nl = data.indexOf(10, start);
      const last = nl < 0;
      const end = last ? data.length : nl;
      const text = data.subarray(start, end).toString('utf8').trim();
      if (last) {
        // Partial last line: keep it only if it is already a whole record.
        if (text === '') break;
        const parsed = parseMetricLine(text);
        if (typeof parsed === 'string') break;
        out.records.push(parsed);
        out.line += 1;
        out.offset = offset + data.length;
        break;
      }
      out.line += 1;
      if (text !== '') {
        const parsed = parseMetricLine(text);
        if (typeof parsed === 'string') out.errors.push(`${name}:${out.line}: ${parsed}`);
        else out.records.push(parsed);
      }
      start = nl + 1;
      out.offset = offset + start;
    }
    return out;
  } finally {
    await fh.close();
  }
}

/** Steps that have a `<sub>/step-NNNNNN.jsonl` file, ascending. */
export async function listSteps(runDir: string, sub: 'rollouts' | 'eval'): Promise<number[]> {
  let names: string[];
  try {
    names = await readdir(join(runDir, sub));
  } catch {
    return [];
  }
  const steps: number[] = [];
  for (const n of names) {
    const m = /^step-(\d+)\.jsonl$/.exec(n);
    if (m) steps.push(Number(m[1]));
  }
  return steps.sort((a, b) => a - b);
}

export function stepFile(runDir: string, sub: 'rollouts' | 'eval', step: number): string {
  return join(runDir, sub, `step-${String(step).padStart(6, '0')}.jsonl`);
}

export interface JsonlFile<T> {
  records: T[];
  errors: string[];
}

const jsonlCache = new Map<string, { key: string; value: JsonlFile<unknown> }>();

/**
 * Parse a JSONL file of objects; bad lines become one-line errors (`file:line: …`) and are skipped,
 * and a partial last line (no newline, not yet valid) is ignored. Cached by size and mtime.
 */
export async function readJsonl<T>(file: string, label = file): Promise<JsonlFile<T>> {
  const st = await stat(file);
  const key = `${st.size}:${st.mtimeMs}`;
  const hit = jsonlCache.get(file);
  if (hit && hit.key === key) return hit.value as JsonlFile<T>;
  const text = await readFile(file, 'utf8');
  const lines = text.split('\n');
  const out: JsonlFile<T> = { records: [], errors: [] };
  lines.forEach((raw, i) => {
    const t = raw.trim();
    if (t === '') return;
    const isLast = i === lines.length - 1;
    try {
      const v = JSON.parse(t) as unknown;
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('expected a JSON object');
      out.records.push(v as T);
    } catch (err) {
      if (!isLast) out.errors.push(`${label}:${i + 1}: ${(err as Error).message}`);
    }
  });
  jsonlCache.set(file, { key, value: out as JsonlFile<unknown> });
  if (jsonlCache.size > 64) jsonlCache.delete(jsonlCache.keys().next().value as string);
  return out;
}

export interface RolloutSummary {
  id: string;
  index: number;
  mode: string;
  answer: string | null;
  outcome: string;
  error?: string;
  reward: Record<string, number> | null;
  advantage: number | null;
  workers: number;
  turns: number;
  toolCalls: number;
  tokens: number;
  trainableTokens: number;
  timings: Rollout['timings'] | null;
}

export interface QuestionGroup {
  questionId: string;
  question: string;
  goldAnswers: string[];
  meanReward: number | null;
  meanAccuracy: number | null;
  /** Rollouts sorted by total reward, best first. */
  rollouts: RolloutSummary[];
}

function count(seq: Sequence | undefined, f: (s: Sequence) => number): number {
  return seq ? f(seq) : 0;
}

function sumMask(seq: Sequence): number {
  let n = 0;
  for (const m of seq.mask ?? []) n += m === 1 ? 1 : 0;
  return n;
}

function mean(xs: number[]): number | null {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
}

/** Group a step's rollouts by question (in file order) and summarise each rollout. */
export function summariseStep(rollouts: Rollout[]): QuestionGroup[] {
  const groups = new Map<string, QuestionGroup>();
  for (const r of rollouts) {
    const qid = String(r.questionId ?? '?');
    let g = groups.get(qid);
    if (!g) {
      g = {
        questionId: qid,
        question: String(r.question ?? ''),
        goldAnswers: Array.isArray(r.goldAnswers) ? r.goldAnswers : [],
        meanReward: null,
        meanAccuracy: null,
        rollouts: [],
      };
      groups.set(qid, g);
    }
    const seqs = [r.root, ...(r.workers ?? [])].filter(Boolean);
    g.rollouts.push({
      id: String(r.id),
      index: r.index,
      mode: r.mode,
      answer: r.answer ?? null,
      outcome: r.outcome,
      error: r.error,
      reward: r.reward ? { ...r.reward } : null,
      advantage: typeof r.advantage === 'number' ? r.advantage : null,
      workers: (r.workers ?? []).length,
      turns: count(r.root, (s) => (s.turns ?? []).length),
      toolCalls: seqs.reduce((a, s) => a + (s.turns ?? []).reduce((b, t) => b + (t.toolCalls ?? []).length, 0), 0),
      tokens: seqs.reduce((a, s) => a + (s.tokens ?? []).length, 0),
      trainableTokens: seqs.reduce((a, s) => a + sumMask(s), 0),
      timings: r.timings ?? null,
    });
  }
  for (const g of groups.values()) {
    g.rollouts.sort((a, b) => (b.reward?.total ?? -Infinity) - (a.reward?.total ?? -Infinity) || a.index - b.index);
    g.meanReward = mean(g.rollouts.flatMap((r) => (r.reward ? [r.reward.total] : [])));
    g.meanAccuracy = mean(g.rollouts.flatMap((r) => (r.reward ? [r.reward.accuracy] : [])));
  }
  return [...groups.values()];
}

/** Why a requested path was refused: 'forbidden' (escapes the run dir) or 'missing'. */
export type ResolveResult = { ok: true; file: string } | { ok: false; status: 403 | 404; reason: string };

/**
 * Map URL path segments (still percent-encoded, as split from the request line) to a regular file
 * inside `root`. Refuses `.`/`..` segments (also when percent-encoded), empty segments (which would
 * make an absolute path), encoded separators, NUL bytes, and any file whose real path (after
 * following symlinks) is outside the real path of `root`.
 */
export async function resolveInside(root: string, rawSegments: string[]): Promise<ResolveResult> {
  const parts: string[] = [];
  for (const raw of rawSegments) {
    let seg: string;
    try {
      seg = decodeURIComponent(raw);
    } catch {
      return { ok: false, status: 403, reason: 'bad percent-encoding' };
    }
    if (seg === '' || seg === '.' || seg === '..' || /[/\\\0]/.test(seg) || isAbsolute(seg)) {
      return { ok: false, status: 403, reason: `refused path segment "${raw}"` };
    }
    parts.push(seg);
  }
  if (parts.length === 0) return { ok: false, status: 404, reason: 'no file named' };
  const rootAbs = resolve(root);
  const candidate = resolve(rootAbs, ...parts);
  const rel = relative(rootAbs, candidate);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) return { ok: false, status: 403, reason: 'outside the run directory' };
  let real: string, rootReal: string;
  try {
    [real, rootReal] = await Promise.all([realpath(candidate), realpath(rootAbs)]);
  } catch {
    return { ok: false, status: 404, reason: 'not found' };
  }
  if (!real.startsWith(rootReal + sep)) return { ok: false, status: 403, reason: 'outside the run directory (symlink)' };
  const st = await stat(real);
  if (!st.isFile()) return { ok: false, status: 404, reason: 'not a file' };
  return { ok: true, file: real };
}
