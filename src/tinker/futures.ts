/**
 * Futures of the Tinker protocol, and the per-model order they run in.
 *
 * `FutureStore`: every future endpoint answers `{request_id}` at once; the work runs in the
 * background and its outcome — a result object, or `{error, category}` for a failure — is kept
 * under that id. `wait(id, ms)` resolves with the outcome as soon as it exists, or with `null` after
 * `ms` (the server then answers `try_again`: a long poll, so the SDK, which re-polls at once, does
 * not spin). Outcomes are dropped `ttlMs` after they complete.
 *
 * `SeqQueue`: one per training model. Requests carry `seq_id` 1, 2, 3, … and are EXECUTED strictly
 * in that order, one at a time: a request whose predecessor has not arrived yet waits (the SDK sends
 * the chunks of one forward_backward concurrently, the first one last). A repeat of a `seq_id` with
 * the same body returns the same request id (a retry); with a different body it is refused. A gap
 * that stays open for `gapTimeoutMs` fails the requests waiting behind it (naming the missing
 * seq_id) and the queue moves past them, so a client that lost a request is told instead of hanging.
 *
 * `Dedup`: the same identity rule for the other idempotent calls (create_model by
 * `(session_id, model_seq_id)`, sampling by `(sampling_session_id, seq_id)`, …).
 */
import { createHash, randomUUID } from 'node:crypto';
import { InvalidArgumentError, MatpoError } from '../core/errors.ts';

export type FailureCategory = 'user' | 'server' | 'unknown';
export interface FailedResult {
  error: string;
  category: FailureCategory;
}

/** Errors of the caller's making (bad input, unknown ids, wrong state) are `user`; anything else is `server`. */
export function failureOf(err: unknown): FailedResult {
  if (err instanceof MatpoError && err.code !== 'engine') return { error: err.message, category: 'user' };
  const e = err as Error;
  return { error: e?.message ?? String(err), category: 'server' };
}

/** Canonical hash of a request body (for "same body" checks). */
export function bodyHash(body: unknown): string {
  return createHash('sha256').update(stableJson(body)).digest('hex');
}

function stableJson(x: unknown): string {
  if (Array.isArray(x)) return `[${x.map(stableJson).join(',')}]`;
  if (x && typeof x === 'object') {
    const keys = Object.keys(x as object).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${stableJson((x as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(x) ?? 'null';
}

interface FutureEntry {
  kind: string;
  modelId?: string;
  outcome: unknown;
  done: boolean;
  waiters: Set<(outcome: unknown) => void>;
  doneAt: number;
}

export class FutureStore {
  private readonly entries = new Map<string, FutureEntry>();
  private readonly ttlMs: number;

  constructor(options: { ttlMs?: number } = {}) {
    this.ttlMs = options.ttlMs ?? 60 * 60 * 1000;
  }

  /** A new pending future; settle it with `complete`. */
  create(kind: string, modelId?: string): string {
    this.sweep();
    const id = `${kind}-${randomUUID()}`;
    this.entries.set(id, { kind, modelId, outcome: undefined, done: false, waiters: new Set(), doneAt: 0 });
    return id;
  }

  /** Run `work` as future `id`: its value, or `failureOf` its error, becomes the outcome. */
  settle(id: string, work: Promise<unknown>): void {
    work.then(
      (v) => this.complete(id, v),
      (err) => this.complete(id, failureOf(err)),
    );
  }

  complete(id: string, outcome: unknown): void {
    const e = this.entries.get(id);
    if (!e || e.done) return;
    e.done = true;
    e.outcome = outcome;
    e.doneAt = Date.now();
    for (const w of e.waiters) w(outcome);
    e.waiters.clear();
  }

  has(id: string): boolean {
    return this.entries.has(id);
  }

  /** The outcome, waiting up to `ms`; null when it is still pending then. Throws for an unknown id. */
  async wait(id: string, ms: number): Promise<{ outcome: unknown } | null> {
    const e = this.entries.get(id);
    if (!e) throw new InvalidArgumentError('request_id', `unknown request id "${id}" (never issued, or expired)`);
    if (e.done) return { outcome: e.outcome };
    return new Promise((resolve) => {
      const onDone = (outcome: unknown) => {
        clearTimeout(timer);
        resolve({ outcome });
      };
      const timer = setTimeout(() => {
        e.waiters.delete(onDone);
        resolve(null);
      }, ms);
      e.waiters.add(onDone);
    });
  }

  /** Futures not completed yet. */
  pendingCount(): number {
    let n = 0;
    for (const e of this.entries.values()) if (!e.done) n++;
    return n;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [id, e] of this.entries) if (e.done && now - e.doneAt > this.ttlMs) this.entries.delete(id);
  }
}

/** Identity of idempotent calls: the same key and body give back the first answer; another body is refused. */
export class Dedup<T> {
  private readonly seen = new Map<string, { hash: string; value: T }>();

  /** The earlier value for `key` when the body matches; undefined when new. Throws when the body differs. */
  check(key: string, hash: string, field: string): T | undefined {
    const s = this.seen.get(key);
    if (!s) return undefined;
    if (s.hash !== hash) throw new InvalidArgumentError(field, `${key} was already used for a different request body`);
    return s.value;
  }

  remember(key: string, hash: string, value: T): void {
    this.seen.set(key, { hash, value });
  }
}

interface Waiting {
  seqId: number;
  requestId: string;
  run: () => Promise<unknown>;
}

export class SeqQueue {
  private next = 1;
  private readonly waiting = new Map<number, Waiting>();
  private readonly dedup = new Dedup<string>();
  private running = false;
  private gapTimer: NodeJS.Timeout | null = null;
  private closedWith: FailedResult | null = null;

  constructor(
    private readonly futures: FutureStore,
    private readonly modelId: string,
    private readonly gapTimeoutMs = 120_000,
  ) {}

  /** Queue `run` as `seqId`; returns its request id (the earlier one for a retried identical request). */
  submit(seqId: number, hash: string, kind: string, run: () => Promise<unknown>): string {
    if (!(Number.isInteger(seqId) && seqId >= 1))
      throw new InvalidArgumentError('seq_id', `expected an integer ≥ 1, got ${JSON.stringify(seqId)}`);
    const earlier = this.dedup.check(`seq_id ${seqId} of model ${this.modelId}`, hash, 'seq_id');
    if (earlier !== undefined) return earlier;
    if (seqId < this.next)
      throw new InvalidArgumentError('seq_id', `${seqId} of model ${this.modelId} comes too late: the queue is at ${this.next}`);
    const requestId = this.futures.create(kind, this.modelId);
    this.dedup.remember(`seq_id ${seqId} of model ${this.modelId}`, hash, requestId);
    if (this.closedWith) {
      this.futures.complete(requestId, this.closedWith);
      return requestId;
    }
    this.waiting.set(seqId, { seqId, requestId, run });
    this.pump();
    return requestId;
  }

  /** Fail everything waiting and everything submitted later (the model was unloaded). */
  close(reason: string): void {
    this.closedWith = { error: reason, category: 'user' };
    for (const w of this.waiting.values()) this.futures.complete(w.requestId, this.closedWith);
    this.waiting.clear();
    this.clearGapTimer();
  }

  /** Nothing running and nothing waiting. */
  idle(): boolean {
    return !this.running && this.waiting.size === 0;
  }

  /** The next seq_id this queue will run. */
  expected(): number {
    return this.next;
  }

  private pump(): void {
    if (this.running) return;
    const item = this.waiting.get(this.next);
    if (!item) {
      this.armGapTimer();
      return;
    }
    this.clearGapTimer();
    this.waiting.delete(this.next);
    this.running = true;
    let work: Promise<unknown>;
    try {
      work = item.run();
    } catch (err) {
      work = Promise.reject(err);
    }
    work
      .then(
        (v) => this.futures.complete(item.requestId, v),
        (err) => this.futures.complete(item.requestId, failureOf(err)),
      )
      .finally(() => {
        this.running = false;
        this.next++;
        this.pump();
      });
  }

  private armGapTimer(): void {
    if (this.waiting.size === 0) {
      this.clearGapTimer();
      return;
    }
    if (this.gapTimer) return;
    this.gapTimer = setTimeout(() => {
      this.gapTimer = null;
      if (this.running || this.waiting.has(this.next) || this.waiting.size === 0) return;
      const ids = [...this.waiting.keys()].sort((a, b) => a - b);
      const failure: FailedResult = {
        error:
          `seq_id ${this.next} of model ${this.modelId} never arrived within ${Math.round(this.gapTimeoutMs / 1000)} s; ` +
          `seq_id ${ids.join(', ')} waited behind it and did not run`,
        category: 'user',
      };
      for (const w of this.waiting.values()) this.futures.complete(w.requestId, failure);
      this.waiting.clear();
      this.next = ids[ids.length - 1] + 1;
    }, this.gapTimeoutMs);
    this.gapTimer.unref();
  }

  private clearGapTimer(): void {
    if (this.gapTimer) clearTimeout(this.gapTimer);
    this.gapTimer = null;
  }
}
