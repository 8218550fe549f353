/**
 * Generator of the dashboard's fixture run (`test/fixtures/run/`): a small but realistic run
 * directory, consistent with the record types in src/agents/records.ts.
 *
 * - `model/tokenizer.json` — a byte-level BPE tokenizer with ChatML special tokens, its merges
 *   learned here from the fixture's own texts (so token pieces look like real subwords);
 * - `rollouts/step-00000{1,2}.jsonl` — 2 questions × 4 rollouts per step; each planner delegates to
 *   one or two workers that call `search` and `open`; token streams are the ChatML rendering of the
 *   conversation encoded with that tokenizer, prompt parts mask 0, sampled parts mask 1; one
 *   rollout per group has an invalid tool call, one worker runs out of turns;
 * - `eval/step-00000{0,2,4,6}.jsonl` — eval rollouts (2 repeats per question, ids "eval/<q>/<i>");
 * - `metrics.jsonl` — steps 1–2 computed from those rollouts, steps 3–6 synthetic, eval lines
 *   every 2 steps computed from the eval rollouts, a checkpoint and a skipped-step event, in the
 *   metric names the trainer writes (src/train/rl-loop.ts); `config.yaml`.
 *
 * Regenerate: `node --import tsx src/testing/fixture-run.ts test/fixtures/run` (deterministic).
 */
import { groundingStats } from '../rl/grounding.ts';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import type { ChatMessage } from '../core/chat.ts';
import type { Role } from '../core/records.ts';
import type { Rollout, RewardParts, Sequence, ToolCallRecord, TurnRecord } from '../core/records.ts';
import { stepFile } from '../ui/run-files.ts';
import { standardError } from '../util/stats.ts';

const SPECIALS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'];
const SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's byte → printable character table. */
function byteChars(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const out: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + extra++);
  return out;
}

/** Learn `nMerges` BPE merges over `texts` and build a Hugging Face tokenizer.json object. */
export function buildTokenizerJson(texts: string[], nMerges: number): object {
  const table = byteChars();
  const enc = new TextEncoder();
  const counts = new Map<string, number>();
  for (const t of texts)
    for (const piece of t.split(/<\|[a-z_]+\|>/)) for (const w of piece.match(SPLIT) ?? []) counts.set(w, (counts.get(w) ?? 0) + 1);
  const words = [...counts].map(([w, n]) => ({ syms: [...enc.encode(w)].map((b) => table[b]), n }));
  const vocab: Record<string, number> = {};
  table.forEach((c, i) => (vocab[c] = i));
  const merges: string[] = [];
  for (let k = 0; k < nMerges; k++) {
    const pairs = new Map<string, number>();
    for (const { syms, n } of words)
      for (let i = 0; i + 1 < syms.length; i++) {
        const key = `${syms[i]} ${syms[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + n);
      }
    let best = '';
    let bestN = 1;
    for (const [key, n] of pairs) if (n > bestN || (n === bestN && best !== '' && key < best)) [best, bestN] = [key, n];
    if (best === '') break;
    const [a, b] = best.split(' ');
    merges.push(best);
    vocab[a + b] = Object.keys(vocab).length;
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) {
          out.push(a + b);
          i++;
        } else out.push(w.syms[i]);
      }
      w.syms = out;
    }
  }
  const base = Object.keys(vocab).length;
  SPECIALS.forEach((s, i) => (vocab[s] = base + i));
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIALS.map((s, i) => ({
      id: base + i,
      content: s,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

const CHAT_TEMPLATE =
  '{% for message in messages %}' +
  "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** A small deterministic generator (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Question {
  id: string;
  question: string;
  gold: string[];
  wrong: string;
  entity: string;
  doc: { id: string; title: string; text: string };
  hop: { query: string; summary: string };
}

const QUESTIONS: Question[] = [
  {
    id: 'q-0007',
    question: 'In which city is the observatory founded by the astronomer Ilse Marek located?',
    gold: ['Tarnow'],
    wrong: 'Krosno',
    entity: 'Ilse Marek',
    doc: {
      id: 'doc-0412',
      title: 'Marek Observatory',
      text:
        'The Marek Observatory was founded in 1931 by the astronomer Ilse Marek. ' +
        'It stands on a hill north of Tarnow and houses a 60 cm reflector.',
    },
    hop: {
      query: 'Ilse Marek astronomer',
      summary: 'Ilse Marek (1889–1960) was an astronomer who founded the Marek Observatory in 1931.',
    },
  },
  {
    id: 'q-0019',
    question: 'What river flows through the birthplace of the composer of "Winter Lanterns"?',
    gold: ['Vessa', 'the Vessa'],
    wrong: 'Orla',
    entity: 'Winter Lanterns',
    doc: {
      id: 'doc-1188',
      title: 'Holmvik',
      text: 'Holmvik is a market town on the Vessa river. The composer Anders Lund was born in Holmvik in 1902.',
    },
    hop: {
      query: 'Winter Lanterns composer',
      summary: '"Winter Lanterns" (1934) is a suite by the composer Anders Lund, who was born in Holmvik.',
    },
  },
  {
    id: 'q-0023',
    question: 'Which company built the first bridge designed by the engineer Teodor Ruud?',
    gold: ['Brekke & Sons'],
    wrong: 'Nordstal',
    entity: 'Teodor Ruud',
    doc: {
      id: 'doc-0950',
      title: 'Sandvik Bridge',
      text: 'The Sandvik Bridge, the first work of the engineer Teodor Ruud, was built by Brekke & Sons in 1911.',
    },
    hop: { query: 'Teodor Ruud engineer first bridge', summary: 'Teodor Ruud designed the Sandvik Bridge (1911), his first bridge.' },
  },
];

const SYSTEM: Record<Role, string> = {
  planner:
    'You are a planner. Break the question into subtasks and give each to a worker with the delegate tool. ' +
    'Answer inside <answer></answer>.',
  worker: 'You are a worker. Use search and open to complete the task, then reply with a short summary of what you found.',
  single: 'You are a research agent. Use search and open, then answer inside <answer></answer>.',
};

function call(name: string, args: unknown): string {
  return `<tool_call>\n${JSON.stringify({ name, arguments: args })}\n</tool_call>`;
}

/** Builds one Sequence turn by turn, with ChatML token streams from the fixture tokenizer. */
class SeqBuilder {
  seq: Sequence;
  private pendingPrompt: string;
  constructor(
    private tok: Tokenizer,
    private imEnd: number,
    private rand: () => number,
    id: string,
    parentId: string | null,
    role: Role,
    user: string,
  ) {
    const messages: ChatMessage[] = [
      { role: 'system', content: SYSTEM[role] },
      { role: 'user', content: user },
    ];
    this.seq = { id, parentId, role, tokens: [], mask: [], logprobs: [], turns: [], messages, outcome: 'answered', formatScore: 1 };
    this.pendingPrompt = messages.map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join('') + '<|im_start|>assistant\n';
  }
  private push(ids: number[], sampled: boolean) {
    for (const id of ids) {
      this.seq.tokens.push(id);
      this.seq.mask.push(sampled ? 1 : 0);
      this.seq.logprobs.push(sampled ? -Math.round(this.rand() ** 3 * 4000) / 1000 : 0);
    }
  }
  /** One assistant turn: prompt part (mask 0), the sampled text + <|im_end|> (mask 1), then tool results. */
  turn(text: string, toolCalls: ToolCallRecord[], finishReason = 'stop_token'): TurnRecord {
    const promptStart = this.seq.tokens.length;
    this.push(this.tok.encode(this.pendingPrompt, { add_special_tokens: false }).ids, false);
    const sampleStart = this.seq.tokens.length;
    this.push([...this.tok.encode(text, { add_special_tokens: false }).ids, ...(finishReason === 'stop_token' ? [this.imEnd] : [])], true);
    const ms = Math.round(200 + this.rand() * 900);
    const turn: TurnRecord = { promptStart, sampleStart, end: this.seq.tokens.length, text, finishReason, toolCalls, ms };
    this.seq.turns.push(turn);
    this.seq.messages.push({ role: 'assistant', content: text });
    this.pendingPrompt = '\n';
    for (const c of toolCalls) {
      const content = c.error ? `Error: ${c.error}` : (c.result ?? '');
      this.seq.messages.push({ role: 'tool', name: c.name, content });
      this.pendingPrompt += `<|im_start|>tool\n${content}<|im_end|>\n`;
    }
    this.pendingPrompt += '<|im_start|>assistant\n';
    return turn;
  }
  finish(outcome: Sequence['outcome']): Sequence {
    this.seq.outcome = outcome;
    const calls = this.seq.turns.flatMap((t) => t.toolCalls);
    this.seq.formatScore = calls.length ? calls.filter((c) => c.valid).length / calls.length : 1;
    return this.seq;
  }
}

function searchResult(q: Question, query: string): string {
  return [
    `[${q.doc.id}] ${q.doc.title} — ${q.doc.text.slice(0, 60)}…`,
    `[doc-${(Number(q.doc.id.slice(4)) + 37).toString().padStart(4, '0')}] ${q.entity} (disambiguation) — Other uses of "${query}".`,
  ].join('\n');
}

function buildRollout(
  tok: Tokenizer,
  imEnd: number,
  rand: () => number,
  q: Question,
  step: number,
  index: number,
  rolloutId?: string,
): Rollout {
  const id = rolloutId ?? `s${step}-${q.id}-r${index}`;
  const planner = new SeqBuilder(tok, imEnd, rand, `${id}-p`, null, 'planner', q.question);
  const workers: Sequence[] = [];
  const skill = rand() * 0.6 + step * 0.12;
  const delegate = (task: string, onWorker: (w: SeqBuilder) => string): ToolCallRecord => {
    const wid = `${id}-w${workers.length}`;
    const w = new SeqBuilder(tok, imEnd, rand, wid, planner.seq.id, 'worker', task);
    const summary = onWorker(w);
    workers.push(w.seq);
    return {
      name: 'delegate',
      arguments: { task },
      raw: call('delegate', { task }),
      valid: true,
      result: summary,
      workerId: wid,
      ms: Math.round(1500 + rand() * 3000),
    };
  };
  const research = (w: SeqBuilder, query: string, open: boolean, summary: string, outOfTurns = false): string => {
    w.turn(`I will search for ${query}.\n${call('search', { query })}`, [
      {
        name: 'search',
        arguments: { query },
        raw: call('search', { query }),
        valid: true,
        result: searchResult(q, query),
        ms: Math.round(5 + rand() * 30),
      },
    ]);
    if (open) {
      w.turn(`The first hit looks relevant. ${call('open', { id: q.doc.id })}`, [
        {
          name: 'open',
          arguments: { id: q.doc.id },
          raw: call('open', { id: q.doc.id }),
          valid: true,
          result: `# ${q.doc.title}\n${q.doc.text}`,
          ms: Math.round(2 + rand() * 10),
        },
      ]);
    }
    if (outOfTurns) {
      const bad = `${call('open', { id: 'doc-9999' }).slice(0, -4)}`;
      w.turn(`Let me open another page. ${bad}`, [
        { name: 'open', arguments: null, raw: bad, valid: false, error: 'tool call did not parse: unterminated <tool_call> block' },
      ]);
      w.finish('turn_limit');
      return 'The worker stopped without a summary (turn_limit).';
    }
    w.turn(summary, []);
    w.finish('answered');
    return summary;
  };

  // Turn 1: look up the first hop.
  const t1 = delegate(`Find out who or what "${q.entity}" is and what it is linked to.`, (w) =>
    research(w, q.hop.query, false, q.hop.summary, index === 2 && step === 1),
  );
  planner.turn(`First I need to know more about ${q.entity}.\n${t1.raw}`, [t1]);
  // Turn 2: the second hop (only when the first worker brought something back).
  const good = index !== 2 || step !== 1;
  if (good) {
    const t2 = delegate(`Open the page about ${q.doc.title} and report what it says that answers: ${q.question}`, (w) =>
      research(w, q.doc.title, true, `${q.doc.text.split('. ')[0]}.`),
    );
    planner.turn(`The worker says: ${q.hop.summary.slice(0, 60)}… Next, the details from ${q.doc.title}.\n${t2.raw}`, [t2]);
  }
  // An invalid call in one rollout per group.
  if (index === 3) {
    const raw = '<tool_call>\n{"name": "delegate", "arguments": {"task": }\n</tool_call>';
    planner.turn(`Let me double-check.\n${raw}`, [
      { name: 'delegate', arguments: null, raw, valid: false, error: 'arguments are not valid JSON' },
    ]);
  }
  const correct = good && skill > 0.45;
  const answer = correct ? q.gold[0] : q.wrong;
  planner.turn(`Putting it together, the answer is <answer>${answer}</answer>`, []);
  const root = planner.finish('answered');
  const accuracy = correct ? 1 : 0;
  const formatWorkers = workers.length ? workers.reduce((a, w) => a + w.formatScore, 0) / workers.length : 1;
  const reward: RewardParts = {
    accuracy,
    formatPlanner: root.formatScore,
    formatWorkers,
    total: Math.round((accuracy - 0.1 * (1 - root.formatScore) - 0.1 * (1 - formatWorkers)) * 1e6) / 1e6,
  };
  const all = [root, ...workers];
  const sampleMs = all.reduce((a, s) => a + s.turns.reduce((b, t) => b + t.ms, 0), 0);
  const toolMs = all.reduce(
    (a, s) => a + s.turns.reduce((b, t) => b + t.toolCalls.reduce((c, x) => c + (x.name === 'delegate' ? 0 : (x.ms ?? 0)), 0), 0),
    0,
  );
  return {
    id,
    questionId: q.id,
    index,
    mode: 'matpo',
    question: q.question,
    goldAnswers: q.gold,
    root,
    workers,
    answer,
    reward,
    outcome: 'answered',
    timings: { totalMs: sampleMs + toolMs + 40, sampleMs, toolMs },
  };
}

function groupAdvantages(group: Rollout[]): void {
  const r = group.map((x) => x.reward!.total);
  const m = r.reduce((a, b) => a + b, 0) / r.length;
  const sd = Math.sqrt(r.reduce((a, b) => a + (b - m) ** 2, 0) / r.length);
  group.forEach((x, i) => (x.advantage = Math.round(((r[i] - m) / (sd + 1e-6)) * 1e6) / 1e6));
}

const meanOf = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);
const round = (x: number) => Math.round(x * 1e4) / 1e4;

/** Metrics of one step computed from its rollouts (the rollout part of a metrics line). */
function rolloutMetrics(rollouts: Rollout[]): Record<string, number> {
  const workers = rollouts.flatMap((r) => r.workers);
  const sampled = (s: Sequence) => s.mask.reduce((a, b) => a + b, 0);
  return {
    'planner/reward': round(meanOf(rollouts.map((r) => r.reward!.total))),
    'worker/reward': round(meanOf(workers.map((w) => rollouts.find((r) => r.workers.includes(w))!.reward!.total))),
    'planner/accuracy': round(meanOf(rollouts.map((r) => r.reward!.accuracy))),
    'planner/format': round(meanOf(rollouts.map((r) => r.root.formatScore))),
    'worker/format': round(meanOf(workers.map((w) => w.formatScore))),
    'planner/tokens': round(meanOf(rollouts.map((r) => sampled(r.root)))),
    'worker/tokens': round(meanOf(workers.map(sampled))),
    'planner/turns': round(meanOf(rollouts.map((r) => r.root.turns.length))),
    'planner/workers_per_rollout': round(workers.length / rollouts.length),
    'worker/turns': round(meanOf(workers.map((w) => w.turns.length))),
  };
}

/** Eval rollouts of a step (2 repeats per question, ids like the trainer's "eval/<question>/<repeat>") and their metrics. */
async function writeEval(
  dir: string,
  tok: Tokenizer,
  imEnd: number,
  rand: () => number,
  questions: Question[],
  step: number,
): Promise<Record<string, number>> {
  const rollouts = questions.flatMap((q) => [0, 1].map((i) => buildRollout(tok, imEnd, rand, q, step, i, `eval/${q.id}/${i}`)));
  await writeFile(stepFile(dir, 'eval', step), rollouts.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const perQ = questions.map((q) => meanOf(rollouts.filter((r) => r.questionId === q.id).map((r) => r.reward!.accuracy)));
  const se = standardError(perQ);
  const workers = rollouts.flatMap((r) => r.workers);
  return {
    'eval/accuracy': round(meanOf(rollouts.map((r) => r.reward!.accuracy))),
    'eval/accuracy_se': round(se),
    'eval/reward': round(meanOf(rollouts.map((r) => r.reward!.total))),
    'eval/format_planner': round(meanOf(rollouts.map((r) => r.root.formatScore))),
    'eval/format_workers': round(meanOf(workers.map((w) => w.formatScore))),
    'eval/workers_per_rollout': round(workers.length / rollouts.length),
    // grounding of the fixture's worker reports (rl/grounding.ts); an unseen-world accuracy below the same-world one
    'eval/grounding': ((g) => round(g.claiming > 0 ? g.rate : 0))(groundingStats(rollouts)),
    'unseen/accuracy': round(0.4 * meanOf(rollouts.map((r) => r.reward!.accuracy))),
    'time/eval_s': round(8 + rand() * 3),
  };
}

export interface FixtureOptions {
  seed?: number;
  /** Write model/tokenizer.json (default true). Without it the dashboard shows turn texts. */
  tokenizer?: boolean;
  /** Number of metric steps (default 6; rollouts are written for steps 1 and 2). */
  steps?: number;
  /** Fixed start time (ISO) of the run. */
  start?: string;
}

/** Write the fixture run into `dir`. */
export async function writeFixtureRun(dir: string, opts: FixtureOptions = {}): Promise<void> {
  const seed = opts.seed ?? 1;
  const rand = rng(seed * 7919);
  const questions = [QUESTIONS[(seed - 1) % 3], QUESTIONS[seed % 3]];
  const texts = [
    ...Object.values(SYSTEM),
    ...QUESTIONS.flatMap((q) => [
      q.question,
      q.doc.text,
      q.hop.summary,
      searchResult(q, q.hop.query),
      call('delegate', { task: q.entity }),
    ]),
    'I will search for the first hit looks relevant. Putting it together, the answer is <answer></answer>',
    'system\nuser\nassistant\ntool\nThe worker says: Next, the details from Let me double-check. ' +
      'Open the page about and report what it says that answers:',
  ];
  const tokJson = buildTokenizerJson(texts, 400);
  const tokConfig = {
    add_bos_token: false,
    bos_token: null,
    eos_token: '<|im_end|>',
    pad_token: '<|endoftext|>',
    model_max_length: 4096,
    chat_template: CHAT_TEMPLATE,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
  const tok = new Tokenizer(tokJson, tokConfig);
  const imEnd = tok.token_to_id('<|im_end|>')!;

  await mkdir(join(dir, 'rollouts'), { recursive: true });
  await mkdir(join(dir, 'eval'), { recursive: true });
  if (opts.tokenizer ?? true) {
    await mkdir(join(dir, 'model'), { recursive: true });
    await writeFile(join(dir, 'model', 'tokenizer.json'), JSON.stringify(tokJson));
    await writeFile(join(dir, 'model', 'tokenizer_config.json'), JSON.stringify(tokConfig, null, 2) + '\n');
  }
  const G = 4;
  const t0 = Date.parse(opts.start ?? '2026-11-20T09:00:00Z');
  const lines: string[] = [];
  const nSteps = opts.steps ?? 6;
  let last: Record<string, number> = {};
  lines.push(JSON.stringify({ step: 0, time: new Date(t0).toISOString(), ...(await writeEval(dir, tok, imEnd, rand, questions, 0)) }));
  for (let step = 1; step <= nSteps; step++) {
    let m: Record<string, number>;
    if (step <= 2) {
      const rollouts: Rollout[] = [];
      for (const q of questions) {
        const group = Array.from({ length: G }, (_, i) => buildRollout(tok, imEnd, rand, q, step, i));
        groupAdvantages(group);
        rollouts.push(...group);
      }
      await writeFile(stepFile(dir, 'rollouts', step), rollouts.map((r) => JSON.stringify(r)).join('\n') + '\n');
      m = rolloutMetrics(rollouts);
    } else {
      const p = Math.min(0.95, last['planner/accuracy'] + 0.08 + (rand() - 0.5) * 0.1);
      m = {
        'planner/reward': round(p - 0.03 * rand()),
        'worker/reward': round(p - 0.03 * rand()),
        'planner/accuracy': round(p),
        'planner/format': round(Math.min(1, last['planner/format'] + 0.03)),
        'worker/format': round(Math.min(1, last['worker/format'] + 0.02)),
        'planner/tokens': round(last['planner/tokens'] * (0.95 + 0.1 * rand())),
        'worker/tokens': round(last['worker/tokens'] * (0.95 + 0.1 * rand())),
        'planner/turns': round(2 + rand() * 1.5),
        'planner/workers_per_rollout': round(1.5 + rand() * 0.6),
        'worker/turns': round(2 + rand()),
      };
    }
    last = m;
    const rolloutS = round(40 + rand() * 15);
    const trainS = round(25 + rand() * 8);
    const time = new Date(t0 + step * 95_000).toISOString();
    if (step === 4) {
      lines.push(JSON.stringify({ step, time, event: 'skipped', reason: 'every group had equal rewards; no gradient' }));
      lines.push(JSON.stringify({ step, time, ...m, 'time/rollout_s': rolloutS, 'time/step_s': round(rolloutS + 1.2) }));
      lines.push(JSON.stringify({ step, time, ...(await writeEval(dir, tok, imEnd, rand, questions, step)) }));
      continue;
    }
    const train = {
      'train/loss': round(-0.02 + (rand() - 0.5) * 0.05),
      'train/clip_fraction': round(0.02 + rand() * 0.08),
      'train/entropy': round(1.9 - step * 0.12 + rand() * 0.05),
      'train/grad_norm': round(0.6 + rand() * 0.5),
      'train/ratio_mean': round(1 + (rand() - 0.5) * 0.02),
      'train/lr': 0.00002,
    };
    lines.push(
      JSON.stringify({
        step,
        time,
        ...m,
        ...train,
        'time/rollout_s': rolloutS,
        'time/train_s': trainS,
        'time/step_s': round(rolloutS + trainS + 1.5),
      }),
    );
    if (step % 2 === 0) lines.push(JSON.stringify({ step, time, ...(await writeEval(dir, tok, imEnd, rand, questions, step)) }));
    if (step === 3) lines.push(JSON.stringify({ step, time, event: 'checkpoint', 'time/checkpoint_s': 0.84 }));
  }
  await writeFile(join(dir, 'metrics.jsonl'), lines.join('\n') + '\n');
  const config = [
    '# Resolved configuration of the dashboard fixture run (generated by src/testing/fixture-run.ts).',
    `name: fixture-seed${seed}`,
    `seed: ${seed}`,
    'mode: matpo',
    'model:',
    '  dir: model',
    'rl:',
    '  groupSize: 4',
    '  questionsPerStep: 2',
    '  advantage: grpo',
    '  loss: ppo-clip',
    '  clipLow: 0.2',
    '  clipHigh: 0.28',
    'agents:',
    '  maxPlannerTurns: 4',
    '  maxWorkerTurns: 3',
    '',
  ].join('\n');
  await writeFile(join(dir, 'config.yaml'), config);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const out = process.argv[2];
  if (!out) {
    console.error('usage: node --import tsx src/testing/fixture-run.ts OUT_DIR');
    process.exit(1);
  }
  await writeFixtureRun(out);
  console.log(`wrote ${out}`);
}
