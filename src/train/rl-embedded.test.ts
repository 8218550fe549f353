// The RL loop wired to the real components: a generated world with its search tools, the agents'
// rollout engine (planner–worker protocol), the embedded engine policy (worker thread, native or
// reference kernels) and the registered exact-match scorer. A tiny random model, two steps.
// Checks the run layout, Hugging Face checkpoints the engine can load again, an update that really
// changed the weights (entropy bonus, so even all-equal rewards give a gradient), and that resuming
// from step 1 reproduces step 2's checkpoint bytes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from './config.ts';
import { trainRl, type RlDeps } from './rl-loop.ts';
import { readMetrics, runPaths } from './run-dir.ts';
import { buildRun, loadEmbeddedPolicy } from './wiring.ts';
import { buildWorldModel } from '../testing/world-model.ts';
import { EmbeddedPolicy } from '../policy/embedded.ts';
import type { Rollout } from '../core/records.ts';

let dir: string;
let worldDir: string;
let modelDir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'matpo-rl-embedded-'));
  ({ worldDir, modelDir } = await buildWorldModel(dir, { entities: 60, questions: 60, vocab: 600, expertQuestions: 0 }));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function config(name: string, steps: number) {
  return parseConfig({
    model: { path: modelDir, threads: 1 },
    data: { world: worldDir },
    rollout: {
      mode: 'matpo',
      groupSize: 2,
      questionsPerStep: 1,
      maxTurns: 2,
      maxNewTokens: 12,
      workerSummaryTokens: 12,
      maxSequenceTokens: 1000,
      concurrency: 2,
    },
    rl: { loss: { entropyCoef: 0.01 } },
    optim: { learningRate: 1e-3, microBatchTokens: 512 },
    run: { name, dir, steps, evalEvery: 2, evalQuestions: 2, checkpointEvery: 1, keepCheckpoints: 0, progress: false, seed: 4 },
  });
}

async function deps(cfg: ReturnType<typeof config>): Promise<RlDeps> {
  const built = await buildRun(cfg);
  return {
    loadPolicy: (d) => loadEmbeddedPolicy(d, 1),
    makeRunner: built.makeRunner,
    trainQuestions: built.train,
    evalQuestions: built.eval,
    scorer: built.scorer,
    log: () => {},
  };
}

test(
  'two MATPO steps with the embedded engine and the real rollout engine; resume reproduces the checkpoint',
  { timeout: 300_000 },
  async () => {
    const a = config('a', 2);
    const ra = await trainRl(a, await deps(a), { runDir: join(dir, 'a'), resume: false });
    assert.equal(ra.step, 2);
    const p = runPaths(join(dir, 'a'));
    const steps = readMetrics(p).filter((m) => m['planner/reward'] !== undefined);
    assert.deepEqual(
      steps.map((m) => m.step),
      [1, 2],
    );
    for (const m of steps) {
      assert.equal(typeof m['train/grad_norm'], 'number');
      assert.ok(Number(m['train/tokens']) > 0);
      assert.equal(m['train/skipped'], 0);
    }
    const rollouts: Rollout[] = readFileSync(join(p.rollouts, 'step-000001.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.equal(rollouts.length, 2);
    assert.ok(rollouts.every((r) => r.root.role === 'planner' && typeof r.advantage === 'number' && r.reward !== undefined));
    assert.ok(existsSync(join(p.eval, 'step-000000.jsonl')) && existsSync(join(p.eval, 'step-000002.jsonl')));

    // checkpoints are Hugging Face model directories the engine loads again, and the weights moved
    const ck = join(p.checkpoints, 'step-000002');
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'trainer_state.json']) assert.ok(existsSync(join(ck, f)), f);
    assert.ok(!readFileSync(join(ck, 'model.safetensors')).equals(readFileSync(join(modelDir, 'model.safetensors'))));
    const reloaded = await EmbeddedPolicy.load(ck, { threads: 1 });
    await reloaded.close();

    // one step, then resume to two: same bytes as the uninterrupted run
    const b1 = config('b', 1);
    await trainRl(b1, await deps(b1), { runDir: join(dir, 'b'), resume: false });
    const b2 = config('b', 2);
    await trainRl(b2, await deps(b2), { runDir: join(dir, 'b'), resume: true });
    const bytes = (run: string, f: string) => readFileSync(join(dir, run, 'checkpoints', 'step-000002', f));
    assert.ok(bytes('b', 'model.safetensors').equals(bytes('a', 'model.safetensors')), 'model.safetensors differs after resume');
    assert.ok(bytes('b', 'trainer_state.json').equals(bytes('a', 'trainer_state.json')));
  },
);

test(
  'the embedded engine: the policy loss over micro-batches gives the same loss and gradient norm as one batch',
  { timeout: 120_000 },
  async () => {
    const { makePolicyLoss } = await import('../rl/losses.ts');
    const { defaultPolicyLoss } = await import('../testing/config-defaults.ts');
    const { Rng } = await import('../util/rng.ts');
    const rng = new Rng(9);
    const a = await EmbeddedPolicy.load(modelDir, { threads: 1 });
    const b = await EmbeddedPolicy.load(modelDir, { threads: 1 });
    try {
      const datums = Array.from({ length: 6 }, (_, i) => {
        const T = 20 + rng.int(30);
        const tokens = Array.from({ length: T }, () => rng.int(500));
        const mask = tokens.map((_, t) => (t > 3 && rng.next() < 0.6 ? 1 : 0));
        const A = rng.normal();
        return {
          tokens,
          mask,
          advantages: mask.map((m) => (m ? A : 0)),
          oldLogprobs: [] as number[],
          questionId: 'q',
          rolloutId: `r${i >> 1}`,
          sequenceId: `s${i}`,
          role: (i % 2 ? 'worker' : 'planner') as 'worker' | 'planner',
        };
      });
      const fwd = await a.forward!(datums);
      datums.forEach((d, i) => (d.oldLogprobs = Array.from(fwd.logprobs[i], (x, t) => (d.mask[t] ? x + 0.2 * rng.normal() : 0))));
      for (const aggregation of ['token-mean', 'seq-mean-token-mean']) {
        const cfg = defaultPolicyLoss({ aggregation, entropyCoef: 0.01 });
        const whole = await a.forwardBackward!(datums, makePolicyLoss(cfg, datums), { microBatchTokens: 100_000 });
        const split = await b.forwardBackward!(datums, makePolicyLoss(cfg, datums), { microBatchTokens: 60 });
        assert.equal(whole.microBatches, 1);
        assert.ok(split.microBatches >= 3);
        assert.ok(
          Math.abs(whole.loss - split.loss) < 1e-5 * Math.max(1, Math.abs(whole.loss)),
          `${aggregation}: ${whole.loss} vs ${split.loss}`,
        );
        const ga = await a.optimStep!({ learningRate: 0 });
        const gb = await b.optimStep!({ learningRate: 0 });
        assert.ok(ga.gradNorm > 0);
        assert.ok(Math.abs(ga.gradNorm - gb.gradNorm) < 1e-4 * ga.gradNorm, `${aggregation}: grad norm ${ga.gradNorm} vs ${gb.gradNorm}`);
      }
    } finally {
      await a.close();
      await b.close();
    }
  },
);
