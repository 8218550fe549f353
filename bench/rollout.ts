/**
 * Rollout engine overhead: many concurrent planner–worker rollouts with a policy that answers
 * instantly (`InstantPolicy`, token ids cached per text) and a fast in-memory tool, so nearly all
 * CPU time is the engine's own: chat-template rendering, tokenizing prompt deltas and tool results,
 * parsing tool calls, records. Reports agent turns per second and CPU time per turn (target < 1 ms).
 *
 *   npm run bench:rollout -- [--questions 64] [--group 4] [--concurrency 32] [--format hermes|mcp]
 *
 * Each planner rollout: 1 delegating turn spawning `subtasks` workers + 1 answering turn; each
 * worker: `toolTurns` tool turns + 1 finding + 1 summary. A warm-up batch runs first.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { createTestTokenizer } from '../src/model/tokenizer.ts';
import type { ChatMessage, ChatTokenizer, ToolSpec } from '../src/core/chat.ts';
import { InstantPolicy } from '../src/testing/scripted-policies.ts';
import { defineTool } from '../src/tools/tool.ts';
import { RolloutEngine, runRollouts } from '../src/agents/rollout.ts';
import { toolCallFormat } from '../src/agents/formats/index.ts';
import { testRolloutOptions } from '../src/testing/config-defaults.ts';

const { values } = parseArgs({
  options: {
    questions: { type: 'string', default: '64' },
    group: { type: 'string', default: '4' },
    concurrency: { type: 'string', default: '32' },
    subtasks: { type: 'string', default: '2' },
    'tool-turns': { type: 'string', default: '3' },
    format: { type: 'string', default: 'hermes' },
  },
});
const questions = Number(values.questions);
const group = Number(values.group);
const concurrency = Number(values.concurrency);
const format = toolCallFormat(String(values.format));

const docs = new Map<string, string>();
for (let i = 0; i < 1000; i++) docs.set(`item-${i}`, `Document item-${i}: the value of item ${i} is ${(i * 37) % 101}. `.repeat(8));
// Every result is new text (a call counter and a rotating document), so tokenizing tool output is
// measured rather than served from a cache.
let callNo = 0;
const lookup = defineTool({
  name: 'lookup',
  description: 'Look up an item by key and return its document.',
  inputSchema: z.object({ key: z.string() }),
  execute: async ({ key }) => {
    const n = callNo++;
    return `Call ${n} for ${key}:\n${docs.get(`item-${n % 1000}`)}\n${docs.get(`item-${(n * 7 + 3) % 1000}`)}`;
  },
});

const baseTok = await createTestTokenizer(mkdtempSync(join(tmpdir(), 'matpo-bench-rollout-')));
// The same tokenizer with its calls timed, for the breakdown.
const spent = { encode: 0, template: 0, decode: 0 };
const timed =
  <A extends unknown[], R>(key: keyof typeof spent, f: (...a: A) => R) =>
  (...a: A): R => {
    const t = performance.now();
    try {
      return f(...a);
    } finally {
      spent[key] += performance.now() - t;
    }
  };
const tok: ChatTokenizer = {
  vocabSize: baseTok.vocabSize,
  stopTokenIds: baseTok.stopTokenIds,
  bosTokenId: baseTok.bosTokenId,
  eosTokenId: baseTok.eosTokenId,
  encode: timed('encode', (text: string) => baseTok.encode(text)),
  decode: timed('decode', (ids: readonly number[], o?: { skipSpecialTokens?: boolean }) => baseTok.decode(ids, o)),
  tokenToId: (t) => baseTok.tokenToId(t),
  idToToken: (i) => baseTok.idToToken(i),
  applyChatTemplate: timed('template', (m: readonly ChatMessage[], o?: { tools?: readonly ToolSpec[]; addGenerationPrompt?: boolean }) =>
    baseTok.applyChatTemplate(m, o),
  ),
};
const policy = new InstantPolicy(tok, {
  subtasks: Number(values.subtasks),
  toolTurns: Number(values['tool-turns']),
  callText: format.callText,
});
const engine = new RolloutEngine(
  policy,
  tok,
  [lookup],
  testRolloutOptions({ format: format.name, limits: { maxSequenceTokens: 65536, maxNewTokens: 512 } }),
);
const qs = (n: number, tag: string) =>
  Array.from({ length: n }, (_, i) => ({
    id: `${tag}${i}`,
    question: `What is the combined value of the items in question ${i}?`,
    answers: ['42'],
  }));

async function batch(n: number, tag: string) {
  const samplesBefore = policy.samples;
  spent.encode = spent.template = spent.decode = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const rollouts = await runRollouts(engine, qs(n, tag), { mode: 'matpo', group, concurrency });
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const turns = policy.samples - samplesBefore;
  let sampleMs = 0;
  let toolMs = 0;
  let tokens = 0;
  let toolCalls = 0;
  for (const r of rollouts) {
    sampleMs += r.timings.sampleMs;
    toolMs += r.timings.toolMs;
    for (const s of [r.root, ...r.workers]) {
      tokens += s.tokens.length;
      for (const t of s.turns) toolCalls += t.toolCalls.length;
    }
    if (r.outcome !== 'answered') throw new Error(`rollout ${r.id} ended with ${r.outcome}: ${r.error ?? ''}`);
  }
  return { rollouts: rollouts.length, turns, toolCalls, tokens, wall, cpuMs: (cpu.user + cpu.system) / 1000, sampleMs, toolMs, ...spent };
}

await batch(Math.max(2, Math.ceil(questions / 8)), 'warm');
const res = await batch(questions, 'q');
// Sample and tool times are wall-clock sums over concurrent calls; with an instant policy and an
// in-memory tool they are tiny, and subtracting them bounds the engine's own CPU time from below.
const cpuPerTurn = res.cpuMs / res.turns;
console.log(
  `rollout engine bench (${format.name} format, ${questions} questions × G=${group}, concurrency ${concurrency}; ` +
    'timings are noisy when other jobs share the machine)',
);
console.log(`  rollouts ${res.rollouts}, agent turns ${res.turns}, tool calls ${res.toolCalls}, tokens recorded ${res.tokens}`);
console.log(
  `  wall ${res.wall.toFixed(0)} ms → ${(res.turns / (res.wall / 1000)).toFixed(0)} agent turns/s, ` +
    `${(res.rollouts / (res.wall / 1000)).toFixed(1)} rollouts/s`,
);
console.log(
  `  CPU ${res.cpuMs.toFixed(0)} ms → ${cpuPerTurn.toFixed(3)} ms CPU per turn (target < 1 ms); ` +
    `sampling ${(res.sampleMs / res.turns).toFixed(3)} ms/turn, tools ${(res.toolMs / res.toolCalls).toFixed(3)} ms/call (wall sums)`,
);
console.log(
  '  wall time inside tokenizer calls per turn (inflated when the machine is busy): ' +
    `tokenizing ${(res.encode / res.turns).toFixed(3)} ms (prompts, deltas and tool output), ` +
    `chat template ${(res.template / res.turns).toFixed(3)} ms, decoding samples ${(res.decode / res.turns).toFixed(3)} ms`,
);
