import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { ExpertPolicy, nounPhrase, parseSubtask, toolCallText, writeTranscripts } from './expert.ts';
import { generateWorld, type WorldQuestion } from './world/world.ts';
import { createChatTokenizer, trainWorldTokenizer } from './tokenizer-train.ts';
import { SearchIndex } from '../tools/search/search-index.ts';
import { createSearchTools } from '../tools/search/tools.ts';
import { executeTool, toToolSpec } from '../tools/execute.ts';
import { defineTool, type Tool } from '../tools/tool.ts';
import { exactMatch } from '../rl/scoring.ts';
import { extractAnswer } from '../agents/answer.ts';
import type { ChatMessage, ChatTokenizer, ToolSpec } from '../core/chat.ts';
import type { Role } from '../core/records.ts';
import type { Rollout, Sequence } from '../core/records.ts';

const world = generateWorld({ seed: 11, entities: 150, questions: 120 });
const trained = trainWorldTokenizer(
  world.documents.map((d) => d.text),
  { vocabSize: 800 },
);
const tokenizer = createChatTokenizer(trained.tokenizerJson, trained.tokenizerConfig);
const index = SearchIndex.build(world.documents);
const searchTools = createSearchTools(index, { defaultTopK: 4 });
const delegate = defineTool({
  name: 'delegate_subtask',
  description: 'Give a subtask to a worker.',
  inputSchema: z.object({ subtask: z.string() }),
  async execute() {
    return '';
  },
});
const specs: Record<Role, ToolSpec[]> = {
  planner: [toToolSpec(delegate)],
  worker: searchTools.map(toToolSpec),
  single: searchTools.map(toToolSpec),
};

/** A minimal stand-in for the rollout loop: generate, run tool calls, append results, repeat. */
async function converse(
  expert: ExpertPolicy,
  role: Role,
  q: WorldQuestion,
  messages: ChatMessage[],
  tools: Tool[],
  onDelegate?: (subtask: string) => Promise<string>,
) {
  for (let turn = 0; turn < 20; turn++) {
    // The expert reads the hint, not the prompt tokens (encoding every prompt would only slow the test).
    const out = await expert.sample([], { maxNewTokens: 512, hint: { role, messages, questionId: q.id } });
    assert.equal(out.tokens[out.tokens.length - 1], tokenizer.tokenToId('<|im_end|>'));
    assert.ok(out.logprobs.every((l) => l === 0));
    const text = tokenizer.decode(out.tokens, { skipSpecialTokens: true });
    messages.push({ role: 'assistant', content: text });
    const call = /<tool_call>\n([\s\S]*?)\n<\/tool_call>/.exec(text);
    if (!call) return text;
    const { name, arguments: args } = JSON.parse(call[1]);
    if (name === 'delegate_subtask') messages.push({ role: 'user', content: await onDelegate!(args.subtask) });
    else
      messages.push({
        role: 'tool',
        name,
        content: (
          await executeTool(
            tools.find((t) => t.name === name)!,
            args,
            { timeoutMs: 1000, maxChars: 20000 },
          )
        ).text,
      });
  }
  throw new Error('turn limit');
}

function tokensOf(messages: ChatMessage[], role: Role, tok: ChatTokenizer): number {
  return tok.encode(tok.applyChatTemplate(messages, { tools: specs[role] })).length;
}

async function runSingle(expert: ExpertPolicy, q: WorldQuestion) {
  const messages: ChatMessage[] = [
    { role: 'system', content: 'Answer with tools.' },
    { role: 'user', content: q.question },
  ];
  const final = await converse(expert, 'single', q, messages, searchTools);
  return { answer: extractAnswer(final), messages };
}

async function runMatpo(expert: ExpertPolicy, q: WorldQuestion) {
  const workers: ChatMessage[][] = [];
  const planner: ChatMessage[] = [
    { role: 'system', content: 'Plan and delegate.' },
    { role: 'user', content: q.question },
  ];
  const final = await converse(expert, 'planner', q, planner, [], async (subtask) => {
    const w: ChatMessage[] = [
      { role: 'system', content: 'Find facts.' },
      { role: 'user', content: `Main task: ${q.question}\nYour subtask: ${subtask}\nAnswer in detail for the planner.` },
    ];
    await converse(expert, 'worker', q, w, searchTools);
    w.push({ role: 'user', content: 'This is your final turn. Write the summary.' });
    await converse(expert, 'worker', q, w, searchTools);
    workers.push(w);
    return w[w.length - 1].content;
  });
  return { answer: extractAnswer(final), planner, workers };
}

test('subtask parsing reads the last subtask of a recap', () => {
  assert.deepEqual(parseSubtask('Main task: What is the founder of X?\nYour subtask: Find the founder of Tarnis Institute.'), {
    relation: 'organisation.founder',
    entity: 'Tarnis Institute',
  });
  assert.deepEqual(parseSubtask('Look up the birthplace of Ada Kelmar. Then report.'), {
    relation: 'person.born_in',
    entity: 'Ada Kelmar',
  });
  assert.equal(parseSubtask('no subtask here'), null);
});

test('worker on a hand-built conversation: search, open the matching hit, state the fact, summarise', () => {
  const expert = new ExpertPolicy({ world, tokenizer });
  const q = world.questions.find((x) => x.hops === 2)!;
  const step = q.chain[0];
  const subtask = `Find ${nounPhrase(step.relation, step.subject)}.`;
  const msgs: ChatMessage[] = [
    { role: 'system', content: 'Find facts.' },
    { role: 'user', content: `Main task: ${q.question}\nYour subtask: ${subtask}` },
  ];
  const first = expert.respond({ role: 'worker', messages: msgs });
  assert.equal(first, toolCallText('search', { query: step.subject }));
  msgs.push(
    { role: 'assistant', content: first },
    { role: 'tool', name: 'search', content: `Results for "${step.subject}":\n[d999] Someone Else: x\n[${step.docId}] ${step.subject}: y` },
  );
  const second = expert.respond({ role: 'worker', messages: msgs });
  assert.equal(second, toolCallText('open', { id: step.docId }));
  const doc = world.documents.find((d) => d.id === step.docId)!;
  // Tool results may also arrive inside a user turn.
  msgs.push(
    { role: 'assistant', content: second },
    {
      role: 'user',
      content:
        `<tool_response>\nDocument ${doc.id}: ${doc.title}\n${doc.text}\n` +
        `(characters 0-${doc.text.length} of ${doc.text.length}; end of document)\n</tool_response>`,
    },
  );
  const third = expert.respond({ role: 'worker', messages: msgs });
  assert.ok(third.endsWith(` is ${step.object}.`), third);
  msgs.push({ role: 'assistant', content: third }, { role: 'user', content: 'Final turn: summarise.' });
  const summary = expert.respond({ role: 'worker', messages: msgs });
  const lines = summary.split('\n');
  assert.deepEqual(
    lines.map((l) => l.split(':')[0]),
    ['Conclusion', 'Supporting information', 'Observations', 'Contribution to the main task'],
  );
  assert.ok(lines[0].endsWith(` is ${step.object}.`));
  assert.ok(lines[2].includes('Someone Else'));
  // The fact comes from the tool output: a doctored document changes the reported value.
  const doctored = msgs
    .slice(0, 4)
    .concat([{ role: 'tool', content: `Document ${doc.id}: ${doc.title}\n${doc.text.replaceAll(step.object, 'Zzyzx Qqq')}` }]);
  assert.ok(expert.respond({ role: 'worker', messages: doctored }).endsWith(' is Zzyzx Qqq.'));
});

test('worker reads the fact from a search snippet that states it, and opens the page when the snippet cuts it off', () => {
  const expert = new ExpertPolicy({ world, tokenizer });
  const q = world.questions.find((x) => x.hops === 2)!;
  const step = q.chain[0];
  const doc = world.documents.find((d) => d.id === step.docId)!;
  const sentence = doc.text.split(/(?<=\.) /).find((x) => x.includes(step.object))!;
  const msgs: ChatMessage[] = [
    { role: 'system', content: 'Find facts.' },
    { role: 'user', content: `Main task: ${q.question}\nYour subtask: Find ${nounPhrase(step.relation, step.subject)}.` },
  ];
  msgs.push({ role: 'assistant', content: toolCallText('search', { query: step.subject }) });
  const withSnippet = (snippet: string): ChatMessage[] => [
    ...msgs,
    {
      role: 'tool',
      name: 'search',
      content: `Results for "${step.subject}":\n[d999] Someone Else: x\n[${step.docId}] ${step.subject}: ${snippet}`,
    },
  ];
  // The whole sentence is in the snippet: state the fact without opening the page.
  const direct = withSnippet(`…filler words. ${sentence} More…`);
  assert.equal(
    expert.respond({ role: 'worker', messages: direct }),
    `${nounPhrase(step.relation, step.subject).replace(/^t/, 'T')} is ${step.object}.`,
  );
  direct.push({ role: 'assistant', content: 'ok' }, { role: 'user', content: 'Final turn: summarise.' });
  const summary = expert.respond({ role: 'worker', messages: direct });
  assert.ok(summary.includes(`Document ${step.docId} (${step.subject}) says: "${sentence}"`), summary);
  // The snippet stops inside the sentence: the value might be cut, so open the page.
  const cut = sentence.slice(0, sentence.lastIndexOf(' '));
  assert.equal(expert.respond({ role: 'worker', messages: withSnippet(`${cut}…`) }), toolCallText('open', { id: step.docId }));
  // A sentence about another entity does not answer the subtask.
  assert.equal(
    expert.respond({ role: 'worker', messages: withSnippet(sentence.replaceAll(step.subject, 'Someone Else')) }),
    toolCallText('open', { id: step.docId }),
  );
});

test('planner uses what the worker reported, not the gold', () => {
  const expert = new ExpertPolicy({ world, tokenizer });
  const q = world.questions.find((x) => x.hops === 2 && x.chain[0].objectId !== undefined)!;
  const msgs: ChatMessage[] = [
    { role: 'system', content: 'Plan.' },
    { role: 'user', content: q.question },
  ];
  const first = expert.respond({ role: 'planner', messages: msgs, questionId: q.id });
  assert.match(
    first,
    /^<tool_call>\n\{"name": "delegate_subtask", "arguments": \{"subtask": "(Find|Look up) the [a-z ]+ of .+\."\}\}\n<\/tool_call>$/,
  );
  const np0 = nounPhrase(q.chain[0].relation, q.chain[0].subject);
  assert.ok(first.includes(np0));
  msgs.push(
    { role: 'assistant', content: first },
    { role: 'user', content: `Conclusion: ${np0.charAt(0).toUpperCase() + np0.slice(1)} is Wrong Name.\nSupporting information: -` },
  );
  const second = expert.respond({ role: 'planner', messages: msgs, questionId: q.id });
  assert.ok(second.includes(nounPhrase(q.chain[1].relation, 'Wrong Name')), second);
  msgs.push(
    { role: 'assistant', content: second },
    { role: 'user', content: `Conclusion: ${nounPhrase(q.chain[1].relation, 'Wrong Name')} is 1234.` },
  );
  assert.equal(extractAnswer(expert.respond({ role: 'planner', messages: msgs, questionId: q.id })), '1234');
});

async function successRate(expert: ExpertPolicy, mode: 'single' | 'matpo', qs: WorldQuestion[]) {
  let correct = 0;
  for (const q of qs) {
    const r = mode === 'single' ? await runSingle(expert, q) : await runMatpo(expert, q);
    correct += exactMatch(r.answer, q.answers);
  }
  return correct / qs.length;
}

test('success rate is about 1 − errorRate in both modes; the single agent context is the largest', async () => {
  const qs = world.questions.slice(0, 80);
  const perfect = new ExpertPolicy({ world, tokenizer });
  assert.equal(await successRate(perfect, 'single', qs), 1);
  assert.equal(await successRate(perfect, 'matpo', qs), 1);
  const flawed = new ExpertPolicy({ world, tokenizer, errorRate: 0.3, seed: 4 });
  const planned = qs.filter((q) => flawed.errorPlan(q) !== null).length / qs.length;
  const single = await successRate(flawed, 'single', qs);
  const matpo = await successRate(flawed, 'matpo', qs);
  assert.ok(Math.abs(planned - 0.3) < 0.12, `planned error fraction ${planned}`);
  assert.ok(Math.abs(single - (1 - planned)) < 0.05, `single ${single} vs ${1 - planned}`);
  assert.ok(Math.abs(matpo - (1 - planned)) < 0.05, `matpo ${matpo} vs ${1 - planned}`);
  console.log(`errorRate 0.3: planned ${planned.toFixed(3)}, single success ${single.toFixed(3)}, matpo success ${matpo.toFixed(3)}`);

  const four = world.questions.filter((q) => q.hops === 4).slice(0, 10);
  let maxSingle = 0,
    maxPlanner = 0,
    maxWorker = 0;
  for (const q of four) {
    const s = await runSingle(perfect, q);
    maxSingle = Math.max(maxSingle, tokensOf(s.messages, 'single', tokenizer));
    const m = await runMatpo(perfect, q);
    maxPlanner = Math.max(maxPlanner, tokensOf(m.planner, 'planner', tokenizer));
    for (const w of m.workers) maxWorker = Math.max(maxWorker, tokensOf(w, 'worker', tokenizer));
  }
  console.log(`longest transcripts in tokens (4-hop): single ${maxSingle}, planner ${maxPlanner}, worker ${maxWorker}`);
  assert.ok(maxSingle > 1.5 * Math.max(maxPlanner, maxWorker), `single ${maxSingle}, planner ${maxPlanner}, worker ${maxWorker}`);
});

test('writeTranscripts writes one line per sequence with tools and role', async () => {
  const expert = new ExpertPolicy({ world, tokenizer });
  const q = world.questions.find((x) => x.hops === 2)!;
  const m = await runMatpo(expert, q);
  const seq = (id: string, role: Role, messages: ChatMessage[]): Sequence => ({
    id,
    parentId: null,
    role,
    tokens: [],
    mask: [],
    logprobs: [],
    turns: [],
    messages,
    outcome: 'answered',
    formatScore: 1,
  });
  const rollout: Rollout = {
    id: 'r0',
    questionId: q.id,
    index: 0,
    mode: 'matpo',
    question: q.question,
    goldAnswers: q.answers,
    root: seq('p', 'planner', m.planner),
    workers: m.workers.map((w, i) => seq(`w${i}`, 'worker', w)),
    answer: extractAnswer(m.planner[m.planner.length - 1].content),
    outcome: 'answered',
    timings: { totalMs: 0, sampleMs: 0, toolMs: 0 },
  };
  const dir = mkdtempSync(join(tmpdir(), 'tr-'));
  try {
    const file = join(dir, 'sft.jsonl');
    assert.deepEqual(writeTranscripts([rollout], file, { tools: specs }), { lines: 3, rollouts: 1 });
    const lines = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.map((l) => l.role),
      ['planner', 'worker', 'worker'],
    );
    assert.equal(lines[0].tools[0].function.name, 'delegate_subtask');
    assert.equal(lines[1].tools.length, 2);
    assert.equal(lines[0].answer, q.answers[0]);
    assert.equal(lines[2].questionId, q.id);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('sample: tokens end with <|im_end|>, a token budget cuts the message, a hint is required', async () => {
  const expert = new ExpertPolicy({ world, tokenizer });
  const q = world.questions[0];
  const hint = { role: 'single' as const, messages: [{ role: 'user' as const, content: q.question }], questionId: q.id };
  const full = await expert.sample([], { maxNewTokens: 512, hint });
  assert.equal(full.finishReason, 'stop_token');
  assert.equal(tokenizer.decode(full.tokens), `${toolCallText('search', { query: q.chain[0].subject })}<|im_end|>`);
  const cut = await expert.sample([], { maxNewTokens: 3, hint });
  assert.deepEqual(cut, { tokens: full.tokens.slice(0, 3), logprobs: [0, 0, 0], finishReason: 'length' });
  await assert.rejects(expert.sample([], { maxNewTokens: 8 }), /hint/);
  assert.throws(() => new ExpertPolicy({ world, tokenizer, errorRate: 2 }), /errorRate/);
});
