/**
 * The scripted expert for the research world: a `SamplingPolicy` that writes the next assistant message
 * of a planner, a worker or a single agent from the conversation so far (`params.hint`), so its
 * demonstrations go through the same rollout engine, tools and message formats a learning agent
 * sees. It returns the message's tokens (`tokenizer.encode(text)` + `<|im_end|>`) with logprob 0.
 *
 * - planner: delegates one subtask per hop with `delegate_subtask` ({subtask}), reads the value the
 *   worker reported (never the gold), builds the next subtask from it, and finally answers `\boxed{}`.
 * - worker: reads its subtask from the query recap (its first user message), calls `search` with the
 *   entity's name, reads the fact from the snippet of the hit whose title matches (or `open`s that
 *   hit when the snippet does not state it), states the fact it read, and when asked for
 *   its final summary writes the sections Conclusion / Supporting information / Observations /
 *   Contribution to the main task.
 * - single: does every hop itself with search and open, then boxes the answer.
 *
 * The expert knows each question's relation sequence (from the world) but takes every entity and
 * value from actual tool output. With `errorRate` = e, a seeded draw per question makes one hop
 * go wrong with probability e (it opens a wrong hit, or copies a wrong value), so the success
 * rate is about 1 − e in both modes. With `guessRate` = g, another seeded draw per question (of at
 * most `guessMaxHops` hops) makes the planner (or single agent) answer at once "from memory",
 * without a tool call, by boxing the entity the question names, which is not the answer: the
 * shortcut an untuned planner takes on questions that look simple, which reward can train away.
 * Tool calls use the Qwen/Hermes form `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`.
 */
import { appendFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { InvalidArgumentError } from '../core/errors.ts';
import { Rng } from '../util/rng.ts';
import type { ChatMessage, ChatTokenizer, ToolSpec } from '../core/chat.ts';
import type { SamplingPolicy, SampleParams, SampleResult, SampleHint } from '../core/policy.ts';
import type { Role } from '../core/records.ts';
import type { Rollout, Sequence } from '../core/records.ts';
import type { World, WorldQuestion } from './world/world.ts';
import { RELATIONS, SUBTASK_TEMPLATES, WORD_VALUES, extractFacts, splitSentences } from './world/vocab.ts';

export interface ExpertOptions {
  world: World;
  tokenizer: ChatTokenizer;
  /** Probability that a question's trajectory contains one wrong step. Default 0. */
  errorRate?: number;
  /** Probability that the planner (or single agent) answers a question from memory, without any tool call (always wrong). Default 0. */
  guessRate?: number;
  /** Only questions of at most this many hops are answered from memory. Default: any. */
  guessMaxHops?: number;
  seed?: number;
  /** Name of the planner's delegate tool. Default `delegate_subtask`. */
  delegateTool?: string;
}

type ErrorPlan = { hop: number; kind: 'wrong_hit' | 'wrong_copy' } | null;

interface HopTask {
  entity: string;
  relation: string;
  /** "the founder of Tarnis Institute" */
  np: string;
  /** When this hop is the planned wrong step: the kind of mistake and the gold value to avoid. */
  error?: { kind: 'wrong_hit' | 'wrong_copy'; gold: string; rng: Rng };
}

type HopStep =
  | { kind: 'call'; name: 'search' | 'open'; args: Record<string, unknown> }
  | { kind: 'done'; value: string | null; docId?: string; title?: string; sentence?: string; others: string[] };

/** A Hermes tool-call block, JSON spaced like Python's json.dumps: `{"name": "search", "arguments": {"query": "x"}}`. */
export function toolCallText(name: string, args: Record<string, unknown>): string {
  const argText = `{${Object.entries(args)
    .map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`)
    .join(', ')}}`;
  return `<tool_call>\n{"name": ${JSON.stringify(name)}, "arguments": ${argText}}\n</tool_call>`;
}

function cap(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** The noun phrase "the founder of X" for a relation and a subject name. */
export function nounPhrase(relation: string, entity: string): string {
  return RELATIONS[relation].np.replace('{x}', entity);
}

/** Relation names by the noun-phrase prefix ("the founder of" → organisation.founder). */
const RELATION_BY_PREFIX = new Map<string, string>();
for (const [r, def] of Object.entries(RELATIONS)) {
  const prefix = def.np.replace(' {x}', '');
  if (!RELATION_BY_PREFIX.has(prefix)) RELATION_BY_PREFIX.set(prefix, r);
}

/** Parse a subtask like "Find the founder of Tarnis Institute." (the last one in `text`). */
export function parseSubtask(text: string): { relation: string; entity: string } | null {
  const re = /(?:Find|Look up) (the [a-z ]+? of) ([^.\n]+?)\./g;
  let found: { relation: string; entity: string } | null = null;
  for (const m of text.matchAll(re)) {
    const relation = RELATION_BY_PREFIX.get(m[1]);
    if (relation) found = { relation, entity: m[2] };
  }
  return found;
}

/** Search hits as listed by the `search` tool: `[id] title: snippet`. */
function parseHits(text: string): { id: string; title: string; snippet: string }[] {
  const hits: { id: string; title: string; snippet: string }[] = [];
  for (const line of text.split('\n')) {
    const m = /^\[([^\]]+)\] (.+?): (.*)$/.exec(line) ?? /^\[([^\]]+)\] (.+)$/.exec(line);
    if (m) hits.push({ id: m[1], title: m[2], snippet: m[3] ?? '' });
  }
  return hits;
}

/**
 * The task's fact as stated in `text` (a page or a snippet of document `title`): its value and the
 * sentence stating it. Only a statement about the task's entity counts, unless `anySubject`
 * (a page opened for the hop, whose title may differ from the entity).
 */
function readFact(text: string, task: HopTask, title: string, anySubject = false): { value: string; sentence?: string } | null {
  const facts = extractFacts(text, task.relation);
  const fact = facts.find((f) => f.subject === title) ?? (anySubject ? facts[0] : undefined);
  if (!fact) return null;
  const sentence = splitSentences(text).find((s) => s.includes(fact.subject) && s.includes(fact.object));
  return { value: fact.object, sentence };
}

/** A snippet without the cut-off sentence pieces at either end (marked by `…`). */
function wholeSentences(snippet: string): string {
  let text = snippet;
  if (text.startsWith('…')) {
    const first = text.indexOf('. ');
    text = first < 0 ? '' : text.slice(first + 2);
  }
  if (text.endsWith('…')) text = text.slice(0, text.lastIndexOf('.') + 1);
  return text;
}

function isSearchResult(text: string): boolean {
  return text.startsWith('Results for ') || text.startsWith('No results for ');
}

/** An opened page as formatted by the `open` tool: `Document <id>: <title>\n<text>\n(...)`. */
function parsePage(text: string): { id: string; title: string; body: string } | null {
  const m = /^Document (\S+): (.*)\n([\s\S]*?)(?:\n\(characters [^\n]*\))?$/.exec(text);
  return m ? { id: m[1], title: m[2], body: m[3] } : null;
}

/** The content of tool results in a conversation: role 'tool', or a user turn holding <tool_response> blocks. */
export function toolResults(messages: readonly ChatMessage[]): string[] {
  const out: string[] = [];
  for (const m of messages) {
    if (m.role === 'tool') out.push(m.content);
    else if (m.role === 'user' && m.content.includes('<tool_response>')) {
      for (const b of m.content.matchAll(/<tool_response>\n?([\s\S]*?)\n?<\/tool_response>/g)) out.push(b[1]);
    }
  }
  return out;
}

/** A wrong value of the relation's type, different from `gold`. */
function wrongValue(world: World, relation: string, gold: string, rng: Rng): string {
  const def = RELATIONS[relation];
  for (let attempt = 0; attempt < 50; attempt++) {
    let v: string;
    if (typeof def.value === 'object') {
      const kind = def.value.entity;
      v = rng.pick(world.entities.filter((e) => e.kind === kind)).name;
    } else if (def.value === 'year') v = String(Number(gold) + (rng.next() < 0.5 ? -1 : 1) * (1 + rng.int(20)));
    else v = rng.pick(WORD_VALUES[relation]);
    if (v !== gold) return v;
  }
  return `${gold}x`;
}

/** An answer given at once, from memory. */
function guessText(value: string): string {
  return `I know this without searching: \\boxed{${value}}.`;
}

/** The worker's final summary when it found the fact (the sections MATPO asks for). */
export function workerSummaryText(a: {
  np: string;
  value: string;
  docId: string;
  title: string;
  sentence?: string;
  other?: string;
}): string {
  return [
    `Conclusion: ${cap(a.np)} is ${a.value}.`,
    `Supporting information: Document ${a.docId} (${a.title}) says: "${a.sentence ?? `${cap(a.np)} is ${a.value}.`}"`,
    `Observations: ${a.other !== undefined ? `The search also returned ${a.other}, a different entry.` : 'No other close matches.'}`,
    `Contribution to the main task: ${a.value} is ${a.np}.`,
  ].join('\n');
}

export class ExpertPolicy implements SamplingPolicy {
  readonly name = 'expert';
  readonly tokenExact = true;
  readonly errorRate: number;
  readonly guessRate: number;
  readonly guessMaxHops: number;
  private readonly world: World;
  private readonly tok: ChatTokenizer;
  private readonly seed: number;
  private readonly delegateTool: string;
  private readonly questions: Map<string, WorldQuestion>;
  private readonly imEnd: number;

  constructor(options: ExpertOptions) {
    this.world = options.world;
    this.tok = options.tokenizer;
    this.errorRate = options.errorRate ?? 0;
    if (!(this.errorRate >= 0 && this.errorRate <= 1))
      throw new InvalidArgumentError('errorRate', `expected a fraction in [0, 1], got ${this.errorRate}`);
    this.guessRate = options.guessRate ?? 0;
    if (!(this.guessRate >= 0 && this.guessRate <= 1))
      throw new InvalidArgumentError('guessRate', `expected a fraction in [0, 1], got ${this.guessRate}`);
    this.guessMaxHops = options.guessMaxHops ?? Infinity;
    this.seed = options.seed ?? 0;
    this.delegateTool = options.delegateTool ?? 'delegate_subtask';
    this.questions = new Map(options.world.questions.map((q) => [q.id, q]));
    const imEnd = this.tok.tokenToId('<|im_end|>') ?? this.tok.stopTokenIds[0];
    if (imEnd === undefined) throw new InvalidArgumentError('tokenizer', 'has no <|im_end|> or stop token');
    this.imEnd = imEnd;
  }

  async tokenizer(): Promise<ChatTokenizer> {
    return this.tok;
  }

  async sample(_promptTokens: readonly number[], params: SampleParams): Promise<SampleResult> {
    if (!params.hint) throw new InvalidArgumentError('params.hint', 'the expert policy needs a sample hint (role, messages, questionId)');
    const text = this.respond(params.hint);
    let tokens = [...this.tok.encode(text), this.imEnd];
    let finishReason: SampleResult['finishReason'] = 'stop_token';
    if (tokens.length > params.maxNewTokens) {
      tokens = tokens.slice(0, params.maxNewTokens);
      finishReason = 'length';
    }
    return { tokens, logprobs: tokens.map(() => 0), finishReason };
  }

  async close(): Promise<void> {}

  /** The planned mistake for a question (the same for every call about it). */
  errorPlan(question: WorldQuestion): ErrorPlan {
    const rng = new Rng(`expert:${this.seed}:${question.id}`);
    if (rng.next() >= this.errorRate) return null;
    return { hop: rng.int(question.hops), kind: rng.next() < 0.5 ? 'wrong_hit' : 'wrong_copy' };
  }

  /**
   * The value the planner or single agent gives "from memory" for a question, or null when it uses
   * the tools: the entity the question names, echoed back (never the answer). A value drawn at
   * random instead would teach the model that a boxed answer need not come from its context.
   */
  guessPlan(question: WorldQuestion): string | null {
    if (this.guessRate === 0 || question.hops > this.guessMaxHops) return null;
    const rng = new Rng(`expert-guess:${this.seed}:${question.id}`);
    if (rng.next() >= this.guessRate) return null;
    const named = question.chain[0].subject;
    if (!question.answers.some((a) => a.toLowerCase() === named.toLowerCase())) return named;
    const last = question.chain[question.hops - 1];
    return wrongValue(this.world, last.relation, last.object, rng);
  }

  /** The next assistant message, as text. */
  respond(hint: SampleHint): string {
    const question = hint.questionId === undefined ? undefined : this.questions.get(hint.questionId);
    if (hint.role === 'worker') return this.worker(hint.messages, question);
    if (question === undefined) return 'I cannot answer this question. \\boxed{unknown}';
    return hint.role === 'planner' ? this.planner(hint.messages, question) : this.single(hint.messages, question);
  }

  private hopTask(question: WorldQuestion, hop: number, entity: string, plan: ErrorPlan): HopTask {
    const step = question.chain[hop];
    const task: HopTask = { entity, relation: step.relation, np: nounPhrase(step.relation, entity) };
    if (plan && plan.hop === hop && entity === step.subject) {
      task.error = { kind: plan.kind, gold: step.object, rng: new Rng(`expert-error:${this.seed}:${question.id}:${hop}`) };
    }
    return task;
  }

  /** One hop of search → open → read, driven by the tool results seen so far for this hop. */
  private hopStep(task: HopTask, results: readonly string[]): HopStep {
    const searches = results.filter(isSearchResult).length;
    const last = results[results.length - 1];
    if (last === undefined) return { kind: 'call', name: 'search', args: { query: task.entity } };
    if (isSearchResult(last)) {
      const hits = parseHits(last);
      const exact = hits.find((h) => h.title === task.entity);
      if (task.error?.kind === 'wrong_hit') {
        const wrong = hits.find((h) => h.title !== task.entity);
        if (wrong) return { kind: 'call', name: 'open', args: { id: wrong.id } };
      }
      if (exact) {
        // The snippet may already state the fact (short documents are shown whole): read it there.
        const read = readFact(wholeSentences(exact.snippet), task, exact.title);
        if (read) return this.found(task, read.value, exact.id, exact.title, read.sentence, results);
        return { kind: 'call', name: 'open', args: { id: exact.id } };
      }
      if (searches < 2) return { kind: 'call', name: 'search', args: { query: task.np } };
      if (hits.length > 0) return { kind: 'call', name: 'open', args: { id: hits[0].id } };
      return { kind: 'done', value: null, others: [] };
    }
    const page = parsePage(last);
    if (page === null) {
      // An error from a tool: search again once, else give up.
      if (searches < 2) return { kind: 'call', name: 'search', args: { query: task.np } };
      return { kind: 'done', value: null, others: [] };
    }
    const read = readFact(page.body, task, page.title, true);
    return this.found(task, read?.value ?? null, page.id, page.title, read?.sentence, results);
  }

  /** The end of a hop: the value read from document `docId` (or a planned wrong value instead). */
  private found(
    task: HopTask,
    read: string | null,
    docId: string,
    title: string,
    sentence: string | undefined,
    results: readonly string[],
  ): HopStep {
    let value = read;
    const others = results
      .filter(isSearchResult)
      .flatMap((r) => parseHits(r).map((h) => h.title))
      .filter((t) => t !== title);
    if (task.error && (task.error.kind === 'wrong_copy' || value === null || value === task.error.gold)) {
      value = wrongValue(this.world, task.relation, task.error.gold, task.error.rng);
    }
    return { kind: 'done', value, docId, title, sentence, others: [...new Set(others)] };
  }

  private worker(messages: readonly ChatMessage[], question: WorldQuestion | undefined): string {
    const firstUser = messages.findIndex((m) => m.role === 'user');
    const recap = firstUser >= 0 ? messages[firstUser].content : '';
    const sub = parseSubtask(recap);
    const last = messages[messages.length - 1];
    const summaryRequested =
      last !== undefined && last.role === 'user' && messages.indexOf(last) > firstUser && !last.content.includes('<tool_response>');
    if (sub === null) {
      const text = 'I could not understand the subtask.';
      return summaryRequested ? this.summary(null, null, text) : text;
    }
    let task: HopTask = { entity: sub.entity, relation: sub.relation, np: nounPhrase(sub.relation, sub.entity) };
    if (question) {
      const plan = this.errorPlan(question);
      const hop = question.chain.findIndex((c) => RELATIONS[c.relation].np === RELATIONS[sub.relation].np && c.subject === sub.entity);
      if (hop >= 0) task = this.hopTask(question, hop, sub.entity, plan);
    }
    const results = toolResults(messages.slice(firstUser + 1));
    const step = this.hopStep(task, results);
    if (summaryRequested) return this.summary(task, step.kind === 'done' ? step : null, null);
    if (step.kind === 'call') return toolCallText(step.name, step.args);
    return step.value === null ? `I could not find ${task.np} in the documents.` : `${cap(task.np)} is ${step.value}.`;
  }

  private summary(task: HopTask | null, done: Extract<HopStep, { kind: 'done' }> | null, problem: string | null): string {
    if (task === null || done === null || done.value === null) {
      const what = task ? task.np : 'the requested fact';
      return [
        `Conclusion: I could not find ${what}.`,
        `Supporting information: ${problem ?? 'No document I opened stated it.'}`,
        'Observations: The answer is uncertain; do not rely on a guess.',
        `Contribution to the main task: ${cap(what)} is still unknown.`,
      ].join('\n');
    }
    return workerSummaryText({
      np: task.np,
      value: done.value,
      docId: done.docId ?? '?',
      title: done.title ?? '?',
      sentence: done.sentence,
      other: done.others[0],
    });
  }

  /** The value a worker reported for `np`, read from its final message. */
  static readWorkerValue(text: string, np: string): string | null {
    const escaped = np.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const m = new RegExp(`${escaped} is ([^\\n]+?)\\.(?:\\s|$|")`, 'i').exec(text);
    return m ? m[1] : null;
  }

  private subtaskText(question: WorldQuestion, hop: number, np: string): string {
    const rng = new Rng(`expert-subtask:${this.seed}:${question.id}:${hop}`);
    return rng.pick(SUBTASK_TEMPLATES).replace('{np}', np);
  }

  private planner(messages: readonly ChatMessage[], question: WorldQuestion): string {
    const firstUser = messages.findIndex((m) => m.role === 'user');
    // Worker results arrive as user or tool messages after the question; the planner's own turns are assistant messages.
    const reports = messages
      .slice(firstUser + 1)
      .filter((m) => m.role === 'user' || m.role === 'tool')
      .map((m) => m.content);
    const guess = reports.length === 0 ? this.guessPlan(question) : null;
    if (guess !== null) return guessText(guess);
    let entity = question.chain[0].subject;
    for (let hop = 0; hop < question.hops; hop++) {
      const np = nounPhrase(question.chain[hop].relation, entity);
      if (hop >= reports.length) return toolCallText(this.delegateTool, { subtask: this.subtaskText(question, hop, np) });
      const value = ExpertPolicy.readWorkerValue(reports[hop], np);
      if (value === null) return `The worker could not find ${np}, so I cannot complete the chain. \\boxed{unknown}`;
      if (hop === question.hops - 1) return `${cap(np)} is ${value}. The answer is \\boxed{${value}}.`;
      entity = value;
    }
    return '\\boxed{unknown}';
  }

  private single(messages: readonly ChatMessage[], question: WorldQuestion): string {
    const firstUser = messages.findIndex((m) => m.role === 'user');
    const results = toolResults(messages.slice(firstUser + 1));
    const guess = results.length === 0 ? this.guessPlan(question) : null;
    if (guess !== null) return guessText(guess);
    const plan = this.errorPlan(question);
    let entity = question.chain[0].subject;
    let used = 0;
    let prefix = '';
    for (let hop = 0; hop < question.hops; hop++) {
      const task = this.hopTask(question, hop, entity, plan);
      // Replay this hop over the results it consumed, until it asks for a call not yet answered or is done.
      let step = this.hopStep(task, []);
      let k = 0;
      while (step.kind === 'call' && used + k < results.length) {
        k++;
        step = this.hopStep(task, results.slice(used, used + k));
      }
      if (step.kind === 'call') return (k === 0 ? prefix : '') + toolCallText(step.name, step.args);
      used += k;
      if (step.value === null) return `I could not find ${task.np}. \\boxed{unknown}`;
      const fact = `${cap(task.np)} is ${step.value}.`;
      if (hop === question.hops - 1) return `${fact} The answer is \\boxed{${step.value}}.`;
      prefix = `${fact}\n`;
      entity = step.value;
    }
    return '\\boxed{unknown}';
  }
}

export interface TranscriptLine {
  messages: ChatMessage[];
  tools: ToolSpec[];
  role: Role;
  questionId: string;
  rolloutId: string;
  sequenceId: string;
  outcome: string;
  answer: string | null;
  reward?: number;
}

/**
 * Write rollouts as chat transcripts for supervised warm-start, one JSONL line per planner,
 * worker or single-agent sequence. `tools` gives the tool specs each role was offered;
 * `sequences` keeps only the root (planner or single agent) or only the workers; `append` adds to
 * the file instead of replacing it.
 */
export function writeTranscripts(
  rollouts: readonly Rollout[],
  file: string,
  options: {
    tools: Partial<Record<Role, ToolSpec[]>>;
    filter?: (r: Rollout) => boolean;
    sequences?: 'all' | 'root' | 'workers';
    append?: boolean;
  },
): { lines: number; rollouts: number } {
  const lines: string[] = [];
  let kept = 0;
  const sequences = options.sequences ?? 'all';
  for (const r of rollouts) {
    if (options.filter && !options.filter(r)) continue;
    kept++;
    const line = (s: Sequence): TranscriptLine => ({
      messages: s.messages,
      tools: options.tools[s.role] ?? [],
      role: s.role,
      questionId: r.questionId,
      rolloutId: r.id,
      sequenceId: s.id,
      outcome: s.outcome,
      answer: s === r.root ? r.answer : null,
      ...(r.reward ? { reward: r.reward.total } : {}),
    });
    if (sequences !== 'workers') lines.push(JSON.stringify(line(r.root)));
    if (sequences !== 'root') for (const w of r.workers) lines.push(JSON.stringify(line(w)));
  }
  mkdirSync(dirname(file), { recursive: true });
  const text = lines.join('\n') + (lines.length ? '\n' : '');
  if (options.append) appendFileSync(file, text);
  else writeFileSync(file, text);
  return { lines: lines.length, rollouts: kept };
}
