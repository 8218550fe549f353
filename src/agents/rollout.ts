/**
 * The rollout engine: MATPO's planner–worker protocol (and the single-agent baseline) over any
 * `SamplingPolicy`, producing `Rollout` trees with every token recorded exactly as sampled.
 *
 * One agent sequence is a loop of turns (a turn = one `policy.sample` call):
 *   check the context budget → sample → parse tool calls from the sampled text →
 *   no calls: the agent is done | calls: run them and append their results (mask 0) → next turn.
 *
 * - planner: its only tool is `delegate_subtask({subtask})`; each valid call spawns a worker (all
 *   calls of one turn run concurrently, at most `maxWorkers` per rollout). The worker's last
 *   message, with reasoning and tool-call blocks stripped, comes back as a user message (default,
 *   as in the reference) or a tool message. It ends with `\boxed{answer}`.
 * - worker: fresh context with the query recap (main task + subtask) as first user message and the
 *   real tools. When it stops calling tools, hits its turn limit or runs out of context, it gets
 *   one more turn asking for the final summary (the failure variant when a limit was hit).
 * - single: one agent with the real tools that ends with `\boxed{answer}`.
 *
 * Limits: `maxTurns` generations per agent (the worker's summary turn comes on top), `maxNewTokens`
 * per turn, `maxSequenceTokens` per sequence — a turn starts only if the sequence plus
 * `maxNewTokens` fits, otherwise the overflow policy applies: `drop-middle` (the reference: keep
 * system, first user and the messages after the last assistant turn; dropped turns leave the
 * training sequence and are counted in `droppedTurns`) or `stop` (outcome `context_overflow`).
 * `maxRolloutTokens` (optional) caps the tokens sampled by the whole rollout — planner and all its
 * workers together, or the single agent — so that both modes can be given the same budget: each
 * turn may sample at most what is left when it starts, and an agent with nothing left stops
 * (`token_budget`). Turns that run at the same time (workers of one planner turn) each see what
 * was left when they started, so together they can pass the budget by at most their own sizes.
 *
 * Errors: a bad or unknown tool call, a schema violation, a failing or slow tool → error text as
 * the tool result (format score = valid calls / all calls). A sampler error marks its sequence and
 * the whole rollout `failed` with the message; other rollouts carry on.
 */
import { writeFileSync, readFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';
import { ConfigError, FileFormatError } from '../core/errors.ts';
import type { ChatMessage, ChatTokenizer, ToolSpec } from '../core/chat.ts';
import type { SamplingPolicy, SampleResult } from '../core/policy.ts';
import type { Role } from '../core/records.ts';
import type { Tool } from '../tools/tool.ts';
import { executeTool, formatSchemaError, toToolSpec } from '../tools/execute.ts';
import { extractAnswer } from './answer.ts';
import type { Rollout, Sequence, SequenceOutcome, ToolCallRecord } from '../core/records.ts';
import type { Question, RolloutRequest } from '../core/question.ts';
import { Trajectory } from './renderer.ts';
import { formatFor, stripReasoningAndCalls, type ParsedCall, type ToolCallFormat } from './formats/index.ts';
import { fillPrompt, loadPrompts, type Prompts } from './prompts.ts';

export const DELEGATE_TOOL = 'delegate_subtask';

export interface AgentLimits {
  /** Generations per agent (the worker's final-summary turn is extra). Reference: 20. */
  maxTurns: number;
  /** New tokens per turn. */
  maxNewTokens: number;
  /** New tokens for the worker's final summary. Reference: 4096. */
  workerSummaryTokens: number;
  /** Tokens per agent sequence (prompt + everything appended). */
  maxSequenceTokens: number;
  overflow: 'drop-middle' | 'stop';
  /** Workers per planner rollout. */
  maxWorkers: number;
  /** Per tool call. */
  toolTimeoutMs: number;
  /** Tool output cut-off in characters. Reference: 20000. */
  toolResultChars: number;
  /** Tokens sampled per rollout, all its sequences together; null = no limit. */
  maxRolloutTokens: number | null;
}

/**
 * How rollouts run. Every value is given: the defaults live in one place, the run configuration's
 * schema (train/config.ts `rolloutOptions(parseConfig({}))` gives them all).
 */
export interface RolloutOptions {
  limits: AgentLimits;
  /** Tool-call format: 'native' (the template's own: hermes for ChatML tool templates), 'hermes' or 'mcp'. */
  format: 'native' | 'hermes' | 'mcp';
  /** How the planner receives a worker's report: a user message (the reference) or a tool message. */
  workerResultRole: 'user' | 'tool';
  /** Sampling temperature when a request gives none. */
  temperature: number;
  topP: number;
  topK?: number;
  /** Prompts (default: loaded from prompts/). */
  prompts?: Prompts;
}

function checkLimits(limits: AgentLimits): AgentLimits {
  for (const key of [
    'maxTurns',
    'maxNewTokens',
    'workerSummaryTokens',
    'maxSequenceTokens',
    'maxWorkers',
    'toolTimeoutMs',
    'toolResultChars',
  ] as const) {
    const v = limits[key];
    if (!Number.isInteger(v) || v < (key === 'maxWorkers' ? 0 : 1))
      throw new ConfigError({ path: `limits.${key}`, message: `expected a positive integer, got ${String(v)}` });
  }
  const budget = limits.maxRolloutTokens;
  if (budget !== null && !(Number.isInteger(budget) && budget >= 1))
    throw new ConfigError({ path: 'limits.maxRolloutTokens', message: `expected a positive integer or null, got ${String(budget)}` });
  if (limits.overflow !== 'drop-middle' && limits.overflow !== 'stop')
    throw new ConfigError({ path: 'limits.overflow', message: `expected "drop-middle" or "stop", got "${String(limits.overflow)}"` });
  return limits;
}

/** Everything a rollout needs, resolved once. */
export class RolloutEngine {
  readonly limits: AgentLimits;
  readonly format: ToolCallFormat;
  readonly prompts: Prompts;
  readonly workerResultRole: 'user' | 'tool';
  private readonly toolsByName: Map<string, Tool>;
  private readonly toolSpecs: ToolSpec[];
  private readonly delegateTool: Tool<{ subtask: string }>;
  private readonly delegateSpecs: ToolSpec[];

  constructor(
    readonly policy: SamplingPolicy,
    readonly tokenizer: ChatTokenizer,
    readonly tools: readonly Tool[],
    readonly options: RolloutOptions,
  ) {
    this.limits = checkLimits({ ...options.limits });
    this.format = formatFor(tokenizer, options.format);
    this.prompts = options.prompts ?? loadPrompts();
    this.workerResultRole = options.workerResultRole;
    this.toolsByName = new Map(tools.map((t) => [t.name, t]));
    this.toolSpecs = tools.map((t) => toToolSpec(t));
    this.delegateTool = {
      name: DELEGATE_TOOL,
      description: 'Delegate a self-contained subtask to a worker, who searches and reads documents and reports back what it found.',
      inputSchema: z.object({
        subtask: z.string().min(1).describe('The subtask, stated so that it can be done without seeing the rest of the conversation.'),
      }),
      execute: async () => {
        throw new Error('delegate_subtask is run by the rollout engine');
      },
    };
    this.delegateSpecs = [toToolSpec(this.delegateTool)];
  }

  /** Create an engine, fetching the policy's tokenizer. */
  static async create(policy: SamplingPolicy, tools: readonly Tool[], options: RolloutOptions): Promise<RolloutEngine> {
    return new RolloutEngine(policy, await policy.tokenizer(), tools, options);
  }

  /** Run one rollout. Never throws for model or tool behaviour; a sampler error gives outcome `failed`. */
  async run(request: RolloutRequest): Promise<Rollout> {
    const t0 = performance.now();
    const run = new RunState(this, request);
    const role: Role = request.mode === 'single' ? 'single' : 'planner';
    const user = fillPrompt(this.prompts[request.mode === 'single' ? 'single-user' : 'planner-user'], {
      question: request.question.question,
    });
    const specs = request.mode === 'single' ? this.toolSpecs : this.delegateSpecs;
    const root = run.newSequence(role, null);
    let outcome: SequenceOutcome;
    let error: string | undefined;
    let answer: string | null = null;
    try {
      await this.agent(run, root, this.systemPrompt(role, specs), user, specs);
      const last = root.messages[root.messages.length - 1];
      if (root.outcome === 'answered' && last?.role === 'assistant') answer = extractAnswer(last.content);
      if (root.outcome === 'answered' && answer === null) root.outcome = 'no_answer';
      const failedWorker = run.workers.find((w) => w.outcome === 'failed');
      outcome = failedWorker ? 'failed' : root.outcome;
      error = failedWorker?.error;
    } catch (err) {
      outcome = 'failed';
      error = errorText(err);
      if (root.outcome !== 'failed') {
        root.outcome = 'failed';
        root.error ??= error;
      }
    }
    return {
      id: request.rolloutId,
      questionId: request.question.id,
      index: request.index,
      mode: request.mode,
      question: request.question.question,
      goldAnswers: request.question.answers,
      root,
      workers: run.workers,
      answer,
      outcome,
      ...(error !== undefined ? { error } : {}),
      timings: { totalMs: performance.now() - t0, sampleMs: run.sampleMs, toolMs: run.toolMs },
    };
  }

  private systemPrompt(role: Role, specs: readonly ToolSpec[]): string {
    const base = this.prompts[role === 'planner' ? 'planner-system' : role === 'worker' ? 'worker-system' : 'single-system'];
    const section = this.format.systemSection(specs);
    return section ? `${base}\n\n${section}` : base;
  }

  /** One agent's loop. Fills `seq` in place; throws only on sampler errors (after marking `seq` failed). */
  private async agent(run: RunState, seq: Sequence, system: string, user: string, specs: readonly ToolSpec[]): Promise<void> {
    const limits = this.limits;
    const trajectory = new Trajectory(this.tokenizer, this.format.templateTools && specs.length > 0 ? specs : undefined);
    trajectory.start([
      { role: 'system', content: system },
      { role: 'user', content: user },
    ]);
    const sync = () => {
      seq.tokens = trajectory.tokens;
      seq.mask = trajectory.mask;
      seq.logprobs = trajectory.logprobs;
      seq.messages = trajectory.messages;
    };
    sync();
    let calls = 0;
    let validCalls = 0;
    let turnsUsed = 0;
    let limitHit: 'turn_limit' | 'context_overflow' | 'token_budget' | null = null;
    try {
      for (;;) {
        if (turnsUsed >= limits.maxTurns) {
          limitHit = 'turn_limit';
          break;
        }
        if (!this.makeRoom(trajectory, seq, limits.maxNewTokens)) {
          limitHit = 'context_overflow';
          break;
        }
        const allowed = run.allowance(limits.maxNewTokens);
        if (allowed === 0) {
          limitHit = 'token_budget';
          break;
        }
        const { result, ms } = await this.sample(run, seq, trajectory, allowed, turnsUsed);
        turnsUsed++;
        const turn = trajectory.appendSample(result);
        const parsed = this.format.parse(turn.content);
        const record = {
          promptStart: turn.promptStart,
          sampleStart: turn.sampleStart,
          end: turn.end,
          text: turn.text,
          finishReason: result.finishReason,
          toolCalls: [] as ToolCallRecord[],
          ms,
        };
        seq.turns.push(record);
        if (parsed.length === 0) break;
        const { messages, records } =
          seq.role === 'planner' ? await this.delegateCalls(run, seq, parsed) : await this.toolCalls(run, parsed);
        record.toolCalls = records;
        calls += records.length;
        validCalls += records.filter((r) => r.valid).length;
        trajectory.appendMessages(messages);
        sync();
      }
      if (seq.role === 'worker') {
        // The final-summary turn (the failure variant when a limit was hit).
        const reason =
          limitHit === 'turn_limit'
            ? `you reached the limit of ${limits.maxTurns} turns`
            : limitHit === 'token_budget'
              ? 'the task ran out of its token budget'
              : 'you ran out of context';
        const prompt = limitHit === null ? this.prompts['worker-summary'] : fillPrompt(this.prompts['worker-summary-failed'], { reason });
        const maxNew = limits.workerSummaryTokens;
        trajectory.appendMessages([{ role: 'user', content: prompt }]);
        sync();
        // Drop the middle if the summary does not fit; a summary cut short is better than none.
        this.makeRoom(trajectory, seq, maxNew);
        const room = run.allowance(Math.min(maxNew, limits.maxSequenceTokens - trajectory.length));
        if (room > 0) {
          const { result, ms } = await this.sample(run, seq, trajectory, room, turnsUsed);
          const turn = trajectory.appendSample(result);
          seq.turns.push({
            promptStart: turn.promptStart,
            sampleStart: turn.sampleStart,
            end: turn.end,
            text: turn.text,
            finishReason: result.finishReason,
            toolCalls: [],
            ms,
          });
        } else {
          limitHit = limits.maxSequenceTokens - trajectory.length > 0 ? 'token_budget' : 'context_overflow';
        }
      }
      seq.outcome = limitHit ?? 'answered';
    } catch (err) {
      seq.outcome = 'failed';
      seq.error = errorText(err);
      throw err;
    } finally {
      trajectory.trimTo(limits.maxSequenceTokens);
      sync();
      seq.formatScore = calls === 0 ? 1 : validCalls / calls;
    }
  }

  /** Make sure `need` more tokens fit, dropping the middle when configured. */
  private makeRoom(trajectory: Trajectory, seq: Sequence, need: number): boolean {
    const max = this.limits.maxSequenceTokens;
    if (trajectory.length + need <= max) return true;
    if (this.limits.overflow !== 'drop-middle') return false;
    const dropped = trajectory.dropMiddle();
    if (dropped === 0) return false;
    seq.droppedTurns = (seq.droppedTurns ?? 0) + dropped;
    // The dropped turns' tokens are gone; so are their records (their positions no longer exist).
    seq.turns = [];
    return trajectory.length + need <= max;
  }

  private async sample(
    run: RunState,
    seq: Sequence,
    trajectory: Trajectory,
    maxNewTokens: number,
    turn: number,
  ): Promise<{ result: SampleResult; ms: number }> {
    const t = performance.now();
    const result = await this.policy.sample(trajectory.tokens, {
      maxNewTokens,
      temperature: run.request.temperature ?? this.options.temperature,
      topP: this.options.topP,
      topK: this.options.topK,
      stopTokenIds: this.tokenizer.stopTokenIds,
      seed: sampleSeed(run.request.seed, seq.id, turn),
      signal: run.request.signal,
      hint: { role: seq.role, messages: trajectory.messages.slice(), questionId: run.request.question.id, sequenceId: seq.id },
    });
    const ms = performance.now() - t;
    run.sampleMs += ms;
    if (!Array.isArray(result?.tokens) || result.tokens.length > maxNewTokens)
      throw new Error(`policy returned ${result?.tokens?.length ?? 'no'} tokens for maxNewTokens ${maxNewTokens}`);
    run.charge(result.tokens.length);
    return { result, ms };
  }

  /** Worker and single-agent tool calls: validate, run concurrently with timeout and cut-off. */
  private async toolCalls(run: RunState, parsed: readonly ParsedCall[]): Promise<{ messages: ChatMessage[]; records: ToolCallRecord[] }> {
    const records = await Promise.all(
      parsed.map(async (call): Promise<ToolCallRecord> => {
        const base = { name: call.name, arguments: call.arguments, raw: call.raw };
        if (call.error) return { ...base, valid: false, error: call.error, result: call.error };
        const tool = this.toolsByName.get(call.name);
        if (!tool) {
          const error = `Error: unknown tool "${call.name}"; available: ${[...this.toolsByName.keys()].join(', ') || '(none)'}.`;
          return { ...base, valid: false, error, result: error };
        }
        const res = await executeTool(tool, call.arguments, {
          timeoutMs: this.limits.toolTimeoutMs,
          maxChars: this.limits.toolResultChars,
          signal: run.request.signal,
        });
        run.toolMs += res.ms;
        const rec: ToolCallRecord = { ...base, valid: res.valid && !call.repaired, result: res.text, ms: res.ms };
        if (!res.valid) rec.error = res.text;
        return rec;
      }),
    );
    const messages = records.map((r): ChatMessage => ({ role: 'tool', name: r.name || 'unknown', content: r.result ?? '' }));
    return { messages, records };
  }

  /** Planner calls: delegate_subtask spawns workers (concurrently); anything else is an error result. */
  private async delegateCalls(
    run: RunState,
    planner: Sequence,
    parsed: readonly ParsedCall[],
  ): Promise<{ messages: ChatMessage[]; records: ToolCallRecord[] }> {
    const settled = await Promise.allSettled(
      parsed.map(async (call): Promise<ToolCallRecord> => {
        const base = { name: call.name, arguments: call.arguments, raw: call.raw };
        if (call.error) return { ...base, valid: false, error: call.error, result: call.error };
        if (call.name !== DELEGATE_TOOL) {
          const error = `Error: unknown tool "${call.name}"; available: ${DELEGATE_TOOL}.`;
          return { ...base, valid: false, error, result: error };
        }
        const input = this.delegateTool.inputSchema.safeParse(call.arguments);
        if (!input.success) {
          const error = formatSchemaError(DELEGATE_TOOL, input.error);
          return { ...base, valid: false, error, result: error };
        }
        if (run.workers.length >= this.limits.maxWorkers) {
          const error = `Error: the limit of ${this.limits.maxWorkers} workers for this task is reached; answer with what you know.`;
          return { ...base, valid: !call.repaired, error, result: error };
        }
        const t = performance.now();
        const worker = run.newSequence('worker', planner.id);
        const recap = fillPrompt(this.prompts['worker-recap'], { question: run.request.question.question, subtask: input.data.subtask });
        await this.agent(run, worker, this.systemPrompt('worker', this.toolSpecs), recap, this.toolSpecs);
        const last = worker.messages[worker.messages.length - 1];
        const report =
          last?.role === 'assistant'
            ? stripReasoningAndCalls(last.content) || '(the worker returned an empty report)'
            : 'The worker ran out of context before it could report.';
        return { ...base, valid: !call.repaired, result: report, workerId: worker.id, ms: performance.now() - t };
      }),
    );
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    const records = settled.map((s) => (s as PromiseFulfilledResult<ToolCallRecord>).value);
    const role = this.workerResultRole;
    const messages = records.map((r): ChatMessage =>
      role === 'tool'
        ? { role: 'tool', name: r.name || DELEGATE_TOOL, content: r.result ?? '' }
        : { role: 'user', content: r.result ?? '' },
    );
    return { messages, records };
  }
}

/** Mutable state of one rollout in flight. */
class RunState {
  readonly workers: Sequence[] = [];
  sampleMs = 0;
  toolMs = 0;
  private nextWorker = 0;
  /** Sampled-token budget left (Infinity: no budget). */
  private left: number;
  constructor(
    readonly engine: RolloutEngine,
    readonly request: RolloutRequest,
  ) {
    this.left = engine.limits.maxRolloutTokens ?? Infinity;
  }

  /** The new tokens a turn may sample: `want`, or what is left of the rollout's budget (0 when spent). */
  allowance(want: number): number {
    return Math.max(0, Math.min(want, this.left));
  }

  /** Charge a turn's sampled tokens to the budget. */
  charge(tokens: number): void {
    this.left -= tokens;
  }

  newSequence(role: Role, parentId: string | null): Sequence {
    const id = role === 'worker' ? `${this.request.rolloutId}/w${this.nextWorker++}` : `${this.request.rolloutId}/p`;
    const seq: Sequence = {
      id,
      parentId,
      role,
      tokens: [],
      mask: [],
      logprobs: [],
      turns: [],
      messages: [],
      outcome: 'no_answer',
      formatScore: 1,
    };
    if (role === 'worker') this.workers.push(seq);
    return seq;
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message || err.name : String(err);
}

/** A 32-bit seed per (rollout seed, sequence, turn): the same request samples the same way. */
export function sampleSeed(seed: number, sequenceId: string, turn: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  const s = `${sequenceId}#${turn}`;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export interface BatchOptions {
  mode: 'matpo' | 'single';
  /** Rollouts per question (G). */
  group: number;
  /** Rollouts in flight at once. */
  concurrency: number;
  /** Base seed; rollout k of question q gets a seed derived from it. */
  seed?: number;
  /** Rollout ids are `${prefix}${questionId}/${index}`. */
  idPrefix?: string;
  temperature?: number;
  signal?: AbortSignal;
  /** Called as each rollout finishes (progress, streaming to disk). */
  onRollout?: (rollout: Rollout) => void;
}

/** G rollouts per question for a batch of questions, `concurrency` at a time, in question-major order. */
export async function runRollouts(engine: RolloutEngine, questions: readonly Question[], options: BatchOptions): Promise<Rollout[]> {
  if (!Number.isInteger(options.group) || options.group < 1)
    throw new ConfigError({ path: 'group', message: `expected a positive integer, got ${options.group}` });
  if (!Number.isInteger(options.concurrency) || options.concurrency < 1)
    throw new ConfigError({ path: 'concurrency', message: `expected a positive integer, got ${options.concurrency}` });
  const requests: RolloutRequest[] = [];
  for (const question of questions) {
    for (let index = 0; index < options.group; index++) {
      requests.push({
        question,
        index,
        rolloutId: `${options.idPrefix ?? ''}${question.id}/${index}`,
        mode: options.mode,
        seed: sampleSeed(options.seed ?? 0, question.id, index),
        temperature: options.temperature,
        signal: options.signal,
      });
    }
  }
  const out: Rollout[] = new Array(requests.length);
  let next = 0;
  const lane = async () => {
    while (next < requests.length) {
      const i = next++;
      out[i] = await engine.run(requests[i]);
      options.onRollout?.(out[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, requests.length) }, lane));
  return out;
}

/** Write rollouts as JSONL (one rollout per line). */
export function writeRolloutsJsonl(file: string, rollouts: readonly Rollout[]): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, rollouts.map((r) => JSON.stringify(r)).join('\n') + (rollouts.length > 0 ? '\n' : ''));
}

/** Read rollouts written by `writeRolloutsJsonl`; a bad line is a one-line error naming it. */
export function readRolloutsJsonl(file: string): Rollout[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (cause) {
    throw new FileFormatError({ file, message: `cannot read: ${(cause as Error).message}`, cause });
  }
  const out: Rollout[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (cause) {
      throw new FileFormatError({ file, line: i + 1, message: `invalid JSON: ${(cause as Error).message}`, cause });
    }
    const r = row as Partial<Rollout>;
    if (!r || typeof r !== 'object' || typeof r.id !== 'string' || !r.root || !Array.isArray(r.workers)) {
      throw new FileFormatError({ file, line: i + 1, message: 'not a rollout (needs id, root, workers)' });
    }
    out.push(row as Rollout);
  });
  return out;
}
