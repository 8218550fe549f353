/**
 * The expert through the real rollout engine: success rate ≈ 1 − errorRate in both modes, and the
 * single agent's longest sequence is clearly longer than the longest planner or worker sequence.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExpertPolicy, writeTranscripts } from './expert.ts';
import { runExpert } from './expert-runs.ts';
import { generateWorld } from './world/world.ts';
import { trainTokenizerForWorld } from './world-tokenizer.ts';
import { worldSearchTools, worldToolSpecs } from './world-tools.ts';
import { RolloutEngine, runRollouts } from '../agents/rollout.ts';
import { exactMatch } from '../rl/scoring.ts';
import type { Rollout } from '../core/records.ts';
import { testRolloutOptions } from '../testing/config-defaults.ts';

const world = generateWorld({ seed: 21, entities: 200, questions: 240 });
const { tokenizer } = trainTokenizerForWorld(world, 1500);
const { tools } = worldSearchTools(world);
const questions = world.questions.filter((q) => q.split === 'train').slice(0, 60);
const limits = { maxNewTokens: 256, workerSummaryTokens: 256, maxSequenceTokens: 8192 };

type Run = { rollouts: Rollout[]; success: number; planned: number; expert: ExpertPolicy };
const runs = new Map<string, Promise<Run>>();
function run(errorRate: number, mode: 'matpo' | 'single'): Promise<Run> {
  const key = `${errorRate}:${mode}`;
  if (!runs.has(key)) runs.set(key, runOnce(errorRate, mode));
  return runs.get(key)!;
}

async function runOnce(errorRate: number, mode: 'matpo' | 'single'): Promise<Run> {
  const expert = new ExpertPolicy({ world, tokenizer, errorRate, seed: 3 });
  const engine = await RolloutEngine.create(expert, tools, testRolloutOptions({ limits }));
  const rollouts = await runRollouts(engine, questions, { mode, group: 1, concurrency: 4 });
  const success = rollouts.reduce((a, r, i) => a + exactMatch(r.answer, questions[i].answers), 0) / rollouts.length;
  const planned = questions.filter((q) => expert.errorPlan(q) !== null).length / questions.length;
  return { rollouts, success, planned, expert };
}

test('expert success ≈ 1 − errorRate in both modes through the rollout engine', async () => {
  for (const mode of ['matpo', 'single'] as const) {
    const perfect = await run(0, mode);
    assert.ok(
      perfect.rollouts.every((r) => r.outcome === 'answered'),
      perfect.rollouts.find((r) => r.outcome !== 'answered')?.error,
    );
    assert.equal(perfect.success, 1, `${mode} perfect expert`);
    assert.ok(perfect.rollouts.every((r) => r.root.formatScore === 1 && r.workers.every((w) => w.formatScore === 1)));
    if (mode === 'matpo') {
      for (const [i, r] of perfect.rollouts.entries()) {
        assert.equal(r.workers.length, questions[i].hops, 'one worker per hop');
        for (const w of r.workers)
          assert.match(
            w.messages[w.messages.length - 1].content,
            /^Conclusion: [\s\S]*\nSupporting information: [\s\S]*\nObservations: [\s\S]*\nContribution to the main task: /,
          );
      }
    }
    const flawed = await run(0.25, mode);
    console.log(
      `${mode}: errorRate 0.25 → planned mistakes ${flawed.planned.toFixed(3)}, success ${flawed.success.toFixed(3)} ` +
        `(errorRate 0 → ${perfect.success.toFixed(3)})`,
    );
    assert.ok(Math.abs(flawed.success - (1 - flawed.planned)) <= 0.04, `${mode}: success ${flawed.success} vs ${1 - flawed.planned}`);
    assert.ok(Math.abs(flawed.planned - 0.25) < 0.1);
  }
});

test('the single agent context is clearly larger than planner and worker contexts', async () => {
  const single = await run(0, 'single');
  const matpo = await run(0, 'matpo');
  const longest = (xs: number[]) => Math.max(...xs);
  const maxSingle = longest(single.rollouts.map((r) => r.root.tokens.length));
  const maxPlanner = longest(matpo.rollouts.map((r) => r.root.tokens.length));
  const maxWorker = longest(matpo.rollouts.flatMap((r) => r.workers.map((w) => w.tokens.length)));
  console.log(`longest sequences in tokens: single ${maxSingle}, planner ${maxPlanner}, worker ${maxWorker}`);
  assert.ok(maxSingle > 1.5 * Math.max(maxPlanner, maxWorker), `single ${maxSingle}, planner ${maxPlanner}, worker ${maxWorker}`);
  // The expert's turns are trainable tokens of their sequences.
  const r = matpo.rollouts[0];
  assert.ok(r.root.mask.some((m) => m === 1) && r.workers[0].mask.some((m) => m === 1));

  const dir = mkdtempSync(join(tmpdir(), 'sft-'));
  try {
    const file = join(dir, 'sft.jsonl');
    const specs = worldToolSpecs(tools);
    const written = writeTranscripts([...matpo.rollouts.slice(0, 5), ...single.rollouts.slice(0, 5)], file, { tools: specs });
    const lines = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.equal(lines.length, written.lines);
    assert.equal(lines.length, 5 + matpo.rollouts.slice(0, 5).reduce((a, x) => a + x.workers.length, 0) + 5);
    // A transcript re-rendered with its tools has the same tokens as the sequence the engine built.
    const line = lines.find((l) => l.role === 'worker');
    const seq = matpo.rollouts.flatMap((x) => x.workers).find((w) => w.id === line.sequenceId)!;
    // (The template ends every turn with a newline after <|im_end|>; the sequence stops at <|im_end|>.)
    const rendered = tokenizer.encode(tokenizer.applyChatTemplate(line.messages, { tools: line.tools }));
    assert.deepEqual(rendered.slice(0, seq.tokens.length), seq.tokens);
    assert.equal(tokenizer.decode(rendered.slice(seq.tokens.length)), '\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('guessRate: the root answers those questions at once and wrongly; workers are still demonstrated on every subtask', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'guess-'));
  try {
    for (const mode of ['matpo', 'single'] as const) {
      const file = join(dir, `demos-${mode}.jsonl`);
      const r = await runExpert({
        world,
        tokenizer,
        mode,
        questions,
        guessRate: 0.5,
        seed: 3,
        transcripts: file,
        rollout: testRolloutOptions({ limits }),
      });
      const expert = new ExpertPolicy({ world, tokenizer, guessRate: 0.5, seed: 3 });
      const guessedIds = new Set(questions.filter((q) => expert.guessPlan(q) !== null).map((q) => q.id));
      assert.equal(r.guessed, guessedIds.size / questions.length);
      assert.ok(Math.abs(r.guessed - 0.5) < 0.2, `guessed ${r.guessed}`);
      for (const [i, x] of r.rollouts.entries()) {
        const guessed = guessedIds.has(questions[i].id);
        // A guess is one assistant turn with no tool call, boxing the entity the question names.
        assert.equal(
          x.workers.length === 0 && x.root.messages.filter((m) => m.role === 'assistant').length === 1,
          guessed,
          `${mode} ${questions[i].id}`,
        );
        if (guessed) {
          assert.equal(x.root.messages.at(-1)!.content, `I know this without searching: \\boxed{${questions[i].chain[0].subject}}.`);
          assert.equal(exactMatch(x.answer, questions[i].answers), 0);
        }
      }
      assert.ok(Math.abs(r.success - (1 - r.guessed)) < 1e-9, `${mode}: success ${r.success}, guessed ${r.guessed}`);
      const lines = readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      assert.equal(lines.filter((l) => l.role !== 'worker').length, questions.length);
      assert.equal(r.transcriptLines, lines.length);
      if (mode === 'matpo') {
        // Every hop of every question has a worker transcript, guessed questions included.
        const workers = lines.filter((l) => l.role === 'worker');
        assert.equal(
          workers.length,
          questions.reduce((a, q) => a + q.hops, 0),
        );
        assert.ok(workers.some((l) => guessedIds.has(l.questionId)));
      }
    }
    // guessMaxHops: only the one-hop questions are ever answered from memory.
    const simple = new ExpertPolicy({ world, tokenizer, guessRate: 1, guessMaxHops: 1, seed: 3 });
    assert.ok(questions.some((q) => q.hops > 1));
    for (const q of questions) assert.equal(simple.guessPlan(q) !== null, q.hops === 1, q.id);
    assert.throws(() => new ExpertPolicy({ world, tokenizer, guessRate: -0.1 }), /guessRate/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
