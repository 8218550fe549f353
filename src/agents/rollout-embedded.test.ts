/**
 * End to end with the embedded engine and random weights: a world and a micro model are made by
 * the real CLI commands, `matpo run` runs rollouts in a child process, and every rollout must end
 * with a recorded outcome and consistent token records. A second test mixes one scripted malformed
 * planner turn into the real engine's sampling, so malformed output is handled on this path for
 * certain (random weights rarely write a tool-call block).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import type { Rollout, Sequence } from '../core/records.ts';
import type { SamplingPolicy, SampleParams } from '../core/policy.ts';
import { RolloutEngine } from './rollout.ts';
import { DELEGATE_TOOL } from './rollout.ts';
import { hermesFormat } from './formats/index.ts';
import { loadPrompts } from './prompts.ts';
import { testRolloutOptions } from '../testing/config-defaults.ts';

const run = promisify(execFile);
const BIN = fileURLToPath(new URL('../../bin/matpo.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'matpo-e2e-rollout-'));
const worldDir = join(dir, 'world');
const modelDir = join(dir, 'model');

const setup = (async () => {
  await run(process.execPath, [
    BIN,
    'world',
    '--seed',
    '5',
    '--out',
    worldDir,
    '--entities',
    '80',
    '--questions',
    '40',
    '--vocab-size',
    '700',
  ]);
  await run(process.execPath, [
    BIN,
    'init-model',
    '--config',
    'micro',
    '--tokenizer',
    join(worldDir, 'tokenizer'),
    '--out',
    modelDir,
    '--seed',
    '3',
  ]);
})();

const OUTCOMES = new Set(['answered', 'no_answer', 'turn_limit', 'context_overflow', 'failed']);

function checkSequence(seq: Sequence, maxContext: number) {
  assert.ok(OUTCOMES.has(seq.outcome), `${seq.id}: outcome ${seq.outcome}`);
  assert.equal(seq.mask.length, seq.tokens.length);
  assert.equal(seq.logprobs.length, seq.tokens.length);
  const sampled = new Set<number>();
  for (const t of seq.turns) {
    assert.ok(t.promptStart <= t.sampleStart && t.sampleStart <= t.end && t.end <= seq.tokens.length, `${seq.id}: turn bounds`);
    for (let i = t.sampleStart; i < t.end; i++) sampled.add(i);
  }
  seq.mask.forEach((m, i) => {
    assert.equal(m, sampled.has(i) ? 1 : 0, `${seq.id}: mask at ${i}`);
    if (m === 1) assert.ok(Number.isFinite(seq.logprobs[i]) && seq.logprobs[i] <= 0, `${seq.id}: logprob at ${i}`);
    else assert.equal(seq.logprobs[i], 0);
  });
  assert.ok(seq.formatScore >= 0 && seq.formatScore <= 1);
  assert.ok(seq.tokens.length <= maxContext, `${seq.id}: ${seq.tokens.length} tokens > ${maxContext}`);
}

test('matpo run with a random-weight embedded model: every rollout ends with a recorded outcome and consistent records', async () => {
  await setup;
  const out = join(dir, 'rollouts.jsonl');
  const { stdout } = await run(process.execPath, [
    BIN,
    'run',
    '--model',
    modelDir,
    '--world',
    worldDir,
    '--split',
    'test',
    '--group',
    '2',
    '--questions',
    '3',
    '--max-turns',
    '2',
    '--max-new-tokens',
    '96',
    '--summary-tokens',
    '32',
    '--max-context',
    '1024',
    '--seed',
    '7',
    '--out',
    out,
  ]);
  assert.match(stdout, /^matpo run of embedded:.*: 3 questions × G=2 = 6 rollouts/m);
  assert.match(stdout, /^accuracy \d+\.\d\d% \(exact_match\) ± \d+\.\d\d/m);
  assert.match(stdout, /^format score planner \d\.\d{3}, workers/m);
  const rollouts = readFileSync(out, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Rollout);
  assert.equal(rollouts.length, 6);
  assert.deepEqual(
    rollouts.map((r) => r.index),
    [0, 1, 0, 1, 0, 1],
  );
  for (const r of rollouts) {
    assert.ok(OUTCOMES.has(r.outcome));
    assert.equal(r.root.role, 'planner');
    assert.ok(r.root.turns.length >= 1);
    checkSequence(r.root, 1024);
    for (const w of r.workers) checkSequence(w, 1024);
    assert.ok(r.timings.totalMs > 0 && r.timings.sampleMs > 0);
  }
  // Two rollouts of one question sample differently (their seeds differ).
  assert.notDeepEqual(rollouts[0].root.tokens, rollouts[1].root.tokens);
});

test(
  'embedded engine with one scripted malformed planner turn: ' + 'errors are results, the spawned worker runs on the real engine',
  async () => {
    await setup;
    const { EmbeddedPolicy } = await import('../policy/embedded.ts');
    const { loadWorld } = await import('../envs/world/world.ts');
    const { worldSearchTools } = await import('../envs/world-tools.ts');
    const embedded = await EmbeddedPolicy.load(modelDir);
    try {
      const tok = await embedded.tokenizer();
      const imEnd = tok.tokenToId('<|im_end|>')!;
      const scripted =
        `${hermesFormat.callText(DELEGATE_TOOL, { subtask: 'Find the founder of X.' })}\n` +
        '<tool_call>{"name": "delegate_subtask", "arguments": {"subtask": ';
      const mixed: SamplingPolicy = {
        name: 'mixed',
        tokenExact: true,
        tokenizer: () => embedded.tokenizer(),
        async sample(prompt: readonly number[], params: SampleParams) {
          if (params.hint?.role === 'planner' && !params.hint.messages.some((m) => m.role === 'assistant')) {
            const tokens = [...tok.encode(scripted), imEnd];
            return { tokens, logprobs: tokens.map(() => -1), finishReason: 'stop_token' };
          }
          return embedded.sample(prompt, params);
        },
        close: async () => {},
      };
      const world = loadWorld(worldDir);
      // Short prompts (the config's overrides): the micro model has 1024 positions and the tool list alone takes ~600 tokens.
      const prompts = loadPrompts({
        overrides: {
          'planner-system': 'Plan.',
          'worker-system': 'Work.',
          'worker-summary': 'Final turn: summarise.',
          'worker-summary-failed': 'Final turn ({reason}): summarise.',
        },
      });
      const engine = await RolloutEngine.create(
        mixed,
        worldSearchTools(world).tools,
        testRolloutOptions({
          prompts,
          limits: { maxTurns: 2, maxNewTokens: 48, workerSummaryTokens: 24, maxSequenceTokens: 1024, toolResultChars: 200 },
        }),
      );
      const q = world.questions[0];
      const r = await engine.run({
        question: { id: q.id, question: q.question, answers: q.answers },
        index: 0,
        rolloutId: 'e2e/0',
        mode: 'matpo',
        seed: 11,
      });
      const calls = r.root.turns[0].toolCalls;
      assert.equal(calls.length, 2);
      assert.equal(calls[0].valid, true);
      assert.equal(calls[0].workerId, 'e2e/0/w0');
      assert.equal(calls[1].valid, false);
      assert.match(calls[1].error!, /not valid JSON/);
      assert.equal(r.root.formatScore, 0.5);
      assert.equal(r.workers.length, 1);
      const w = r.workers[0];
      checkSequence(w, 1024);
      checkSequence(r.root, 1024);
      assert.ok(w.turns.length >= 1, 'the worker sampled on the real engine');
      if (w.outcome !== 'context_overflow') assert.match(w.messages[w.messages.length - 2].content, /^Final turn/);
      assert.match(w.messages.find((m) => m.role === 'user')!.content, /Your subtask: Find the founder of X\./);
      assert.ok(OUTCOMES.has(r.outcome));
      assert.ok(r.root.turns.length === 2 || r.root.outcome === 'turn_limit');
    } finally {
      await embedded.close();
    }
  },
);

test('matpo run --endpoint against matpo serve (a real HTTP server on 127.0.0.1): token-exact rollouts over the wire', async () => {
  await setup;
  const server = spawn(process.execPath, [BIN, 'serve', '--model', modelDir, '--port', '0', '--name', 'micro'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`serve did not start: ${out}`)), 60_000);
      server.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /at (http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      server.on('exit', (code) => reject(new Error(`serve exited with ${code}: ${out}`)));
    });
    const out = join(dir, 'endpoint.jsonl');
    const { stdout } = await run(process.execPath, [
      BIN,
      'run',
      '--endpoint',
      url,
      '--served',
      'micro',
      '--tokenizer',
      modelDir,
      '--world',
      worldDir,
      '--mode',
      'single',
      '--group',
      '2',
      '--questions',
      '2',
      '--max-turns',
      '2',
      '--max-new-tokens',
      '24',
      '--max-context',
      '1024',
      '--out',
      out,
    ]);
    assert.match(stdout, /^single run of openai:micro@http:\/\/127\.0\.0\.1:\d+: 2 questions × G=2 = 4 rollouts/m);
    const rollouts = readFileSync(out, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Rollout);
    assert.equal(rollouts.length, 4);
    for (const r of rollouts) {
      assert.equal(r.root.role, 'single');
      checkSequence(r.root, 1024);
      assert.ok(r.root.turns.length >= 1 && r.outcome !== 'failed', `${r.id}: ${r.outcome} ${r.error ?? ''}`);
    }
  } finally {
    server.kill();
  }
});
