import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { createTestTokenizer } from '../model/tokenizer.ts';
import { ConfigError, FileFormatError } from '../core/errors.ts';
import type { ChatTokenizer, ToolSpec } from '../core/chat.ts';
import type { SampleHint } from '../core/policy.ts';
import { ScriptedPolicy, scriptedLogprob, type Script } from '../testing/scripted-policies.ts';
import { defineTool, type Tool } from '../tools/tool.ts';
import { toToolSpec } from '../tools/execute.ts';
import type { Rollout, Sequence } from '../core/records.ts';
import { DELEGATE_TOOL, RolloutEngine, readRolloutsJsonl, runRollouts, writeRolloutsJsonl, type RolloutOptions } from './rollout.ts';
import type { RolloutRequest } from '../core/question.ts';
import { hermesFormat, mcpFormat, type ToolCallFormat } from './formats/index.ts';
import { loadPrompts } from './prompts.ts';
import { testRolloutOptions } from '../testing/config-defaults.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'matpo-rollout-'));
const tokP = createTestTokenizer(tmp());

const lookup = defineTool({
  name: 'lookup',
  description: 'Look up the value of a key.',
  inputSchema: z.object({ key: z.string() }),
  execute: async ({ key }) => `The value of ${key} is 42.`,
});

function request(mode: 'matpo' | 'single' = 'matpo', id = 'q1'): RolloutRequest {
  return { question: { id, question: `What is the value of ${id}?`, answers: ['42'] }, index: 0, rolloutId: `${id}/0`, mode, seed: 1 };
}

const subtaskOf = (hint: SampleHint) => /Your subtask: (.*)/.exec(hint.messages.find((m) => m.role === 'user')!.content)![1];

/**
 * The tokens of a sequence must be exactly the encoding of its messages' rendering (true for the test
 * tokenizer, whose pieces split at special tokens).
 */
function assertExact(tok: ChatTokenizer, seq: Sequence, tools: ToolSpec[] | undefined) {
  const last = seq.messages[seq.messages.length - 1];
  const text =
    last.role === 'assistant'
      ? tok.applyChatTemplate(seq.messages, { tools }).slice(0, -1)
      : tok.applyChatTemplate(seq.messages, { tools, addGenerationPrompt: true });
  assert.deepEqual(seq.tokens, tok.encode(text), `${seq.id} tokens differ from the rendering`);
  assert.equal(seq.mask.length, seq.tokens.length);
  assert.equal(seq.logprobs.length, seq.tokens.length);
}

/** The trainable tokens of a sequence must be the scripted texts' tokens, each followed by <|im_end|>, with the scripted logprobs. */
function assertSampled(tok: ChatTokenizer, seq: Sequence, texts: string[]) {
  const imEnd = tok.tokenToId('<|im_end|>')!;
  const expected = texts.flatMap((t) => [...tok.encode(t), imEnd]);
  assert.deepEqual(
    seq.tokens.filter((_, i) => seq.mask[i] === 1),
    expected,
    `${seq.id} sampled tokens`,
  );
  const lps = texts.flatMap((t) => [...tok.encode(t), imEnd].map((_, i) => scriptedLogprob(i)));
  assert.deepEqual(
    seq.logprobs.filter((_, i) => seq.mask[i] === 1),
    lps,
  );
  assert.ok(seq.logprobs.every((lp, i) => seq.mask[i] === 1 || lp === 0));
  assert.equal(seq.turns.length, texts.length);
  for (const [k, turn] of seq.turns.entries()) {
    assert.deepEqual(seq.tokens.slice(turn.sampleStart, turn.end), [...tok.encode(texts[k]), imEnd]);
    assert.ok(seq.mask.slice(turn.promptStart, turn.sampleStart).every((m) => m === 0));
    assert.ok(turn.promptStart < turn.sampleStart);
  }
}

for (const format of [hermesFormat, mcpFormat()] as ToolCallFormat[]) {
  test(`scripted planner → two concurrent workers → answer, token-exact trees (${format.name} format)`, async () => {
    const tok = await tokP;
    const plannerTexts = [
      `I will split the task.\n${format.callText(DELEGATE_TOOL, { subtask: 'Find A.' })}\n` +
        `${format.callText(DELEGATE_TOOL, { subtask: 'Find B.' })}`,
      'Both are 42. The answer is \\boxed{42}.',
    ];
    const workerText = (hint: SampleHint, turn: number) => {
      const sub = subtaskOf(hint);
      if (turn === 0) return format.callText('lookup', { key: sub });
      if (turn === 1) return `${sub.slice(5, 6)} is 42.`;
      return (
        `<think>private reasoning</think>Conclusion: ${sub.slice(5, 6)} is 42.\n` +
        `Supporting information: lookup.${format.callText('lookup', { key: 'x' })}`
      );
    };
    const policy = new ScriptedPolicy(tok, { planner: plannerTexts, worker: (h, t) => workerText(h, t) });
    const engine = new RolloutEngine(
      policy,
      tok,
      [lookup],
      testRolloutOptions({ format: format.name, limits: { maxNewTokens: 256, maxSequenceTokens: 4096 } }),
    );
    const r = await engine.run(request());

    assert.equal(r.outcome, 'answered');
    assert.equal(r.answer, '42');
    assert.equal(r.root.role, 'planner');
    assert.equal(r.root.id, 'q1/0/p');
    assert.deepEqual(r.workers.map((w) => [w.id, w.parentId, w.role, w.outcome]).sort(), [
      ['q1/0/w0', 'q1/0/p', 'worker', 'answered'],
      ['q1/0/w1', 'q1/0/p', 'worker', 'answered'],
    ]);
    const plannerTools = format.templateTools ? [toToolSpec(engine['delegateTool'] as Tool)] : undefined;
    const workerTools = format.templateTools ? [toToolSpec(lookup)] : undefined;
    assertExact(tok, r.root, plannerTools);
    assertSampled(tok, r.root, plannerTexts);
    for (const w of r.workers) {
      assertExact(tok, w, workerTools);
      const hint = { role: 'worker' as const, messages: w.messages };
      assertSampled(
        tok,
        w,
        [0, 1, 2].map((t) => workerText(hint, t)),
      );
      assert.equal(w.formatScore, 1);
      assert.equal(w.turns[0].toolCalls[0].result, `The value of ${subtaskOf(hint)} is 42.`);
      // query recap, then the summary request after the last tool-free turn
      assert.match(w.messages[1].content, /^The main task is: What is the value of q1\?\n\nYour subtask: Find [AB]\./);
      assert.match(w.messages[w.messages.length - 2].content, /^This is your final turn/);
      if (!format.templateTools) assert.ok(w.messages[0].content.includes('### Tool name: lookup'));
    }
    // The planner got each worker's last message, reasoning and call blocks stripped, as a user message.
    const reports = r.root.messages.filter((m, i) => i > 1 && m.role === 'user').map((m) => m.content);
    assert.deepEqual(reports, [
      'Conclusion: A is 42.\nSupporting information: lookup.',
      'Conclusion: B is 42.\nSupporting information: lookup.',
    ]);
    assert.deepEqual(
      r.root.turns[0].toolCalls.map((c) => [c.valid, c.workerId]),
      [
        [true, 'q1/0/w0'],
        [true, 'q1/0/w1'],
      ],
    );
    assert.equal(r.root.formatScore, 1);
    // Every sample call carried the hint.
    for (const c of policy.calls) {
      assert.equal(c.params.hint!.questionId, 'q1');
      assert.ok(c.params.hint!.sequenceId!.startsWith('q1/0/'));
      assert.equal(c.params.stopTokenIds![0], tok.tokenToId('<|im_end|>'));
    }
    assert.equal(policy.calls.length, 2 + 2 * 3);
    assert.ok(r.timings.totalMs >= r.timings.sampleMs);
  });
}

test(
  'malformed planner output: broken JSON, unknown tool, schema violation, garbage; ' + 'no stop token; format score counts them',
  async () => {
    const tok = await tokP;
    const plannerTexts: Script = [
      [
        '<tool_call>{"name": "delegate_subtask", "arguments": {"subtask": "Find A."',
        '<tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call>',
        '<tool_call>{"name": "delegate_subtask", "arguments": {"subtask": 5}}</tool_call>',
        '<tool_call>garbage</tool_call>',
        '<tool_call>{"name": "delegate_subtask", "arguments": {"subtask": "Find B."}}</tool_call>',
      ].join('\n'),
      { text: 'I keep thinking and never', stop: false },
    ];
    const workerTexts: Script = ['<tool_call>{"name": "lookup", "arguments": {"key": 3}}</tool_call>', 'No value.', 'Conclusion: unknown.'];
    const policy = new ScriptedPolicy(tok, { planner: plannerTexts, worker: workerTexts });
    const engine = new RolloutEngine(policy, tok, [lookup], testRolloutOptions());
    const r = await engine.run(request());
    assert.equal(r.root.outcome, 'no_answer');
    assert.equal(r.outcome, 'no_answer');
    assert.equal(r.answer, null);
    const calls = r.root.turns[0].toolCalls;
    assert.deepEqual(
      calls.map((c) => c.valid),
      [false, false, false, false, true],
    );
    assert.equal(r.root.formatScore, 1 / 5);
    assert.equal(calls[0].workerId, 'q1/0/w0', 'the repaired call still ran');
    assert.match(calls[1].error!, /unknown tool "search"; available: delegate_subtask/);
    assert.match(calls[2].error!, /invalid arguments for tool "delegate_subtask"/);
    assert.match(calls[3].error!, /not valid JSON/);
    assert.equal(r.workers.length, 2);
    // Errors reach the planner as results, in call order.
    const results = r.root.messages.slice(3, 8).map((m) => m.content);
    assert.match(results[1], /unknown tool/);
    assert.match(results[2], /subtask/);
    // The worker's schema violation is a result too, and its format score is 0/1.
    for (const w of r.workers) {
      assert.equal(w.formatScore, 0);
      assert.match(w.turns[0].toolCalls[0].result!, /key: .*expected string/i);
    }
    // The last planner turn ended without a stop token.
    const last = r.root.turns[r.root.turns.length - 1];
    assert.equal(last.finishReason, 'length');
    assert.equal(r.root.tokens[r.root.tokens.length - 1], tok.encode(' never').at(-1));
  },
);

test('turn limits: a worker that never stops gets the failure summary; a planner that never answers ends with turn_limit', async () => {
  const tok = await tokP;
  const policy = new ScriptedPolicy(tok, {
    planner: () => hermesFormat.callText(DELEGATE_TOOL, { subtask: 'Find A.' }),
    worker: (hint) =>
      hint.messages[hint.messages.length - 1].content.startsWith('This is your final turn')
        ? 'Conclusion: not found.'
        : hermesFormat.callText('lookup', { key: 'k' }),
  });
  const engine = new RolloutEngine(policy, tok, [lookup], testRolloutOptions({ limits: { maxTurns: 2 } }));
  const r = await engine.run(request());
  assert.equal(r.root.outcome, 'turn_limit');
  assert.equal(r.outcome, 'turn_limit');
  assert.equal(r.root.turns.length, 2);
  assert.equal(r.workers.length, 2);
  for (const w of r.workers) {
    assert.equal(w.outcome, 'turn_limit');
    assert.equal(w.turns.length, 3);
    const summaryRequest = w.messages[w.messages.length - 2];
    assert.equal(summaryRequest.role, 'user');
    assert.match(summaryRequest.content, /could not finish the subtask \(you reached the limit of 2 turns\)/);
    assertExact(tok, w, [toToolSpec(lookup)]);
  }
  assert.equal(r.root.messages[3].content, 'Conclusion: not found.');
});

test('max workers per planner rollout: calls beyond the limit get an error; several calls in one turn run concurrently', async () => {
  const tok = await tokP;
  let inFlight = 0;
  let release!: () => void;
  const allIn = new Promise<void>((r) => (release = r));
  const barrier = defineTool({
    name: 'lookup',
    description: 'Waits until two lookups run at once.',
    inputSchema: z.object({ key: z.string() }),
    execute: async ({ key }) => {
      if (++inFlight === 2) release();
      await allIn;
      return `value of ${key}`;
    },
  });
  const policy = new ScriptedPolicy(tok, {
    planner: [['A', 'B', 'C'].map((s) => hermesFormat.callText(DELEGATE_TOOL, { subtask: `Find ${s}.` })).join('\n'), '\\boxed{done}'],
    worker: [hermesFormat.callText('lookup', { key: 'k' }), 'ok', 'Conclusion: ok.'],
  });
  const engine = new RolloutEngine(policy, tok, [barrier], testRolloutOptions({ limits: { maxWorkers: 2, toolTimeoutMs: 5000 } }));
  const r = await engine.run(request());
  assert.equal(r.workers.length, 2);
  const calls = r.root.turns[0].toolCalls;
  assert.match(calls[2].error!, /limit of 2 workers/);
  assert.equal(calls[2].valid, true, 'a well-formed call over the limit is not a format error');
  // Both workers' tool calls were in flight at the same time (otherwise the barrier times out).
  for (const w of r.workers) assert.equal(w.turns[0].toolCalls[0].result, 'value of k');
  assert.equal(r.answer, 'done');
});

test('context overflow: "stop" ends with context_overflow; "drop-middle" drops turns from the sequence and carries on', async () => {
  const tok = await tokP;
  const singleScript =
    (n: number): Script =>
    (_hint, turn) =>
      turn < n ? hermesFormat.callText('lookup', { key: `key number ${turn}` }) : 'Done: \\boxed{42}';
  const opts = (overflow: 'stop' | 'drop-middle'): RolloutOptions =>
    testRolloutOptions({ limits: { maxSequenceTokens: 0, maxNewTokens: 64, overflow } });
  // Find the size after the first prompt, then allow about two tool turns.
  const probe = new RolloutEngine(new ScriptedPolicy(tok, { single: singleScript(0) }), tok, [lookup], testRolloutOptions());
  const first = (await probe.run(request('single'))).root;
  const promptLen = first.turns[0].sampleStart;
  const perTurn = 60;
  const maxSequenceTokens = promptLen + 2 * perTurn + 64;

  const stop = await new RolloutEngine(
    new ScriptedPolicy(tok, { single: singleScript(6) }),
    tok,
    [lookup],
    testRolloutOptions({ limits: { ...opts('stop').limits, maxSequenceTokens } }),
  ).run(request('single'));
  assert.equal(stop.outcome, 'context_overflow');
  assert.equal(stop.answer, null);
  assert.ok(stop.root.tokens.length + 64 > maxSequenceTokens && stop.root.tokens.length <= maxSequenceTokens);
  assert.equal(stop.root.droppedTurns, undefined);

  const drop = await new RolloutEngine(
    new ScriptedPolicy(tok, { single: singleScript(6) }),
    tok,
    [lookup],
    testRolloutOptions({ limits: { ...opts('drop-middle').limits, maxSequenceTokens } }),
  ).run(request('single'));
  assert.ok((drop.root.droppedTurns ?? 0) > 0, 'turns were dropped');
  assert.ok(drop.root.tokens.length <= maxSequenceTokens);
  // The kept sequence is still exactly its messages' rendering, and starts with system + first user.
  assertExact(tok, drop.root, [toToolSpec(lookup)]);
  assert.deepEqual(
    drop.root.messages.slice(0, 2).map((m) => m.role),
    ['system', 'user'],
  );
  // Turn records only describe tokens still in the sequence.
  for (const t of drop.root.turns) assert.ok(t.end <= drop.root.tokens.length);
  const sampledKept = drop.root.turns.length;
  assert.equal(drop.root.mask.filter((m) => m === 1).length > 0, sampledKept > 0);
});

test('token budget per rollout: planner and workers share it; an agent with nothing left stops with token_budget', async () => {
  const tok = await tokP;
  const sampled = (r: Rollout) => [r.root, ...r.workers].reduce((a, q) => a + q.mask.filter((m) => m === 1).length, 0);
  const script = {
    planner: ['A', 'B'].map((s) => hermesFormat.callText(DELEGATE_TOOL, { subtask: `Find ${s}.` })).concat(['The answer is \\boxed{42}']),
    worker: [hermesFormat.callText('lookup', { key: 'k' }), 'The value of k is 42.', 'Conclusion: the value is 42.'],
  };
  // Unlimited: how many tokens the whole rollout samples.
  const free = await new RolloutEngine(new ScriptedPolicy(tok, script), tok, [lookup], testRolloutOptions()).run(request());
  const full = sampled(free);
  assert.equal(free.answer, '42');
  // A budget that covers it changes nothing.
  const enough = await new RolloutEngine(
    new ScriptedPolicy(tok, script),
    tok,
    [lookup],
    testRolloutOptions({ limits: { maxRolloutTokens: full } }),
  ).run(request());
  assert.deepEqual(enough.root.tokens, free.root.tokens);
  assert.equal(enough.outcome, 'answered');
  // A smaller one: the planner and its two workers (one after the other) never exceed it together,
  // and the agent that meets the limit stops with token_budget.
  // One token short: the planner's last turn is cut before its end-of-turn token.
  const short = await new RolloutEngine(
    new ScriptedPolicy(tok, script),
    tok,
    [lookup],
    testRolloutOptions({ limits: { maxRolloutTokens: full - 1 } }),
  ).run(request());
  assert.equal(sampled(short), full - 1);
  assert.equal(short.root.turns.at(-1)!.finishReason, 'length');
  for (const budget of [Math.floor(full / 2), 5]) {
    const r = await new RolloutEngine(
      new ScriptedPolicy(tok, script),
      tok,
      [lookup],
      testRolloutOptions({ limits: { maxRolloutTokens: budget } }),
    ).run(request());
    assert.ok(sampled(r) <= budget, `sampled ${sampled(r)} > budget ${budget}`);
    assert.notEqual(r.answer, '42');
    assert.ok(
      [r.root, ...r.workers].some((q) => q.outcome === 'token_budget'),
      `budget ${budget}: no sequence stopped on the budget`,
    );
    for (const w of r.workers) assertExact(tok, w, [toToolSpec(lookup)]);
  }
  // Workers of one planner turn run concurrently: each turn is capped by what was left when it
  // started, so the total passes the budget by at most one turn per concurrent worker.
  const together = { ...script, planner: [script.planner.slice(0, 2).join('\n'), script.planner[2]] };
  const perWorker = sampled({ ...free, root: { ...free.root, mask: [] } } as Rollout) / 2;
  const concurrent = await new RolloutEngine(
    new ScriptedPolicy(tok, together),
    tok,
    [lookup],
    testRolloutOptions({ limits: { maxRolloutTokens: full - 1 } }),
  ).run(request());
  assert.equal(concurrent.workers.length, 2);
  assert.ok(sampled(concurrent) <= full - 1 + perWorker);
  // The same budget applies to a single agent.
  const single = await new RolloutEngine(
    new ScriptedPolicy(tok, { single: [hermesFormat.callText('lookup', { key: 'k' }), 'Done: \\boxed{42}'] }),
    tok,
    [lookup],
    testRolloutOptions({ limits: { maxRolloutTokens: 8 } }),
  ).run(request('single'));
  assert.ok(sampled(single) <= 8);
  assert.equal(single.outcome, 'token_budget');
  assert.throws(
    () => new RolloutEngine(new ScriptedPolicy(tok, script), tok, [lookup], testRolloutOptions({ limits: { maxRolloutTokens: 0 } })),
    /limits\.maxRolloutTokens/,
  );
});

test('a sampler error fails only its rollout; a failing or slow tool becomes an error result', async () => {
  const tok = await tokP;
  const failing = defineTool({
    name: 'broken',
    description: 'Always fails.',
    inputSchema: z.object({}),
    execute: async () => {
      throw new Error('disk on fire');
    },
  });
  const slow = defineTool({
    name: 'slow',
    description: 'Never answers.',
    inputSchema: z.object({}),
    execute: () => new Promise<string>(() => {}),
  });
  const policy = new ScriptedPolicy(tok, {
    planner: (hint, turn) => (turn === 0 ? hermesFormat.callText(DELEGATE_TOOL, { subtask: `Find ${hint.questionId}.` }) : '\\boxed{42}'),
    worker: (hint, turn) => {
      if (subtaskOf(hint) === 'Find bad.') return { error: 'sampler exploded' };
      return [`${hermesFormat.callText('broken', {})}\n${hermesFormat.callText('slow', {})}`, 'nothing', 'Conclusion: none.'][turn];
    },
  });
  const engine = new RolloutEngine(policy, tok, [failing, slow], testRolloutOptions({ limits: { toolTimeoutMs: 50 } }));
  const rollouts = await runRollouts(
    engine,
    [
      { id: 'good', question: 'G?', answers: ['42'] },
      { id: 'bad', question: 'B?', answers: ['42'] },
    ],
    { mode: 'matpo', group: 1, concurrency: 2 },
  );
  const [good, bad] = rollouts;
  assert.equal(good.outcome, 'answered');
  const toolCalls = good.workers[0].turns[0].toolCalls;
  assert.equal(toolCalls[0].result, 'Error: disk on fire');
  assert.match(toolCalls[1].result!, /timed out after 50 ms/);
  assert.equal(good.workers[0].formatScore, 1, 'a tool failing is not a format error');
  assert.equal(bad.outcome, 'failed');
  assert.equal(bad.error, 'sampler exploded');
  assert.equal(bad.workers[0].outcome, 'failed');
  assert.equal(bad.workers[0].error, 'sampler exploded');
  assert.equal(bad.root.outcome, 'failed');
});

test('worker reports as tool messages (option), single-agent mode, prompts from files and overrides', async () => {
  const tok = await tokP;
  const policy = new ScriptedPolicy(tok, {
    planner: [hermesFormat.callText(DELEGATE_TOOL, { subtask: 'Find A.' }), '\\boxed{42}'],
    worker: ['A is 42.', 'Conclusion: A is 42.'],
    single: [hermesFormat.callText('lookup', { key: 'A' }), 'So \\boxed{42}.'],
  });
  const dir = tmp();
  writeFileSync(join(dir, 'planner-user.md'), 'QUESTION: {question} {unknown}\n');
  const prompts = loadPrompts({ dir, overrides: { 'worker-recap': 'Task {question} / Sub {subtask}' } });
  const engine = new RolloutEngine(policy, tok, [lookup], testRolloutOptions({ workerResultRole: 'tool', prompts }));
  const r = await engine.run(request());
  assert.equal(r.root.messages[1].content, 'QUESTION: What is the value of q1? {unknown}');
  assert.equal(r.workers[0].messages[1].content, 'Task What is the value of q1? / Sub Find A.');
  assert.deepEqual(r.root.messages[3], { role: 'tool', name: DELEGATE_TOOL, content: 'Conclusion: A is 42.' });
  assert.ok(tok.decode(r.root.tokens).includes('<tool_response>\nConclusion: A is 42.\n</tool_response>'));
  assert.equal(r.workers[0].turns.length, 2, 'a worker that answers at once still writes its summary');

  const s = await engine.run(request('single', 'q2'));
  assert.equal(s.mode, 'single');
  assert.equal(s.root.role, 'single');
  assert.deepEqual(s.workers, []);
  assert.equal(s.answer, '42');
  assert.equal(s.root.messages[0].content, prompts['single-system']);
  assertExact(tok, s.root, [toToolSpec(lookup)]);

  assert.throws(() => loadPrompts({ overrides: { 'planner-sys': 'x' } }), ConfigError);
  assert.throws(() => new RolloutEngine(policy, tok, [], testRolloutOptions({ limits: { maxTurns: 0 } })), /limits.maxTurns/);
});

test('runRollouts: G rollouts per question under a concurrency limit, ids and seeds, JSONL round trip', async () => {
  const tok = await tokP;
  let inFlight = 0;
  let maxInFlight = 0;
  const policy = new ScriptedPolicy(tok, { single: ['\\boxed{42}'] });
  const orig = policy.sample.bind(policy);
  policy.sample = async (p, params) => {
    maxInFlight = Math.max(maxInFlight, ++inFlight);
    await new Promise((r) => setTimeout(r, 5));
    inFlight--;
    return orig(p, params);
  };
  const engine = new RolloutEngine(policy, tok, [lookup], testRolloutOptions());
  const seen: string[] = [];
  const rollouts = await runRollouts(
    engine,
    [
      { id: 'a', question: 'A?', answers: ['42'] },
      { id: 'b', question: 'B?', answers: ['41'] },
    ],
    {
      mode: 'single',
      group: 3,
      concurrency: 2,
      idPrefix: 'step1/',
      onRollout: (r) => seen.push(r.id),
    },
  );
  assert.deepEqual(
    rollouts.map((r) => [r.id, r.questionId, r.index]),
    [
      ['step1/a/0', 'a', 0],
      ['step1/a/1', 'a', 1],
      ['step1/a/2', 'a', 2],
      ['step1/b/0', 'b', 0],
      ['step1/b/1', 'b', 1],
      ['step1/b/2', 'b', 2],
    ],
  );
  assert.equal(seen.length, 6);
  assert.equal(maxInFlight, 2);
  const seeds = new Set(policy.calls.map((c) => c.params.seed));
  assert.equal(seeds.size, 6, 'every rollout samples with its own seed');

  const file = join(tmp(), 'out', 'rollouts.jsonl');
  writeRolloutsJsonl(file, rollouts);
  const back: Rollout[] = readRolloutsJsonl(file);
  assert.deepEqual(back, JSON.parse(JSON.stringify(rollouts)));
  writeFileSync(file, `${JSON.stringify(rollouts[0])}\n{"id": 3}\n`);
  assert.throws(
    () => readRolloutsJsonl(file),
    (e: unknown) => e instanceof FileFormatError && e.line === 2,
  );
  await assert.rejects(runRollouts(engine, [], { mode: 'single', group: 0, concurrency: 1 }), ConfigError);
});
