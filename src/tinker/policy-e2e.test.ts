// TinkerPolicy ↔ the real `matpo serve --tinker` (a child process on 127.0.0.1) with a tiny random
// model over the toy planner–worker task's 16 tokens: MATPO steps through the RL loop (rollouts
// with delegation, credit assignment, datums, the PPO loss with dual clip, AdamW with clipping,
// checkpoints) produce the same weights and the same rollouts as the same steps in-process with
// EmbeddedPolicy (same seeds), and a checkpoint directory evaluates like the engine's; the one-pass
// built-in ppo matches our PPO without dual clip; the server killed in the middle of a step and
// restarted on the same checkpoint directory gives a clear error, and --resume continues from the
// last checkpoint to the same weights. The same with LoRA (rank 4, alpha 8): the same adapter.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { presetConfig } from '../model/config.ts';
import { buildLayout, initParams } from '../model/params.ts';
import { loadModelDir, saveModelDir } from '../model/checkpoint.ts';
import { EmbeddedPolicy } from '../policy/embedded.ts';
import { parseConfig, type TrainConfigInput } from '../train/config.ts';
import { trainRl, type RlDeps } from '../train/rl-loop.ts';
import { readMetrics, runPaths } from '../train/run-dir.ts';
import { loadTinkerPolicy, openSamplingPolicy, policyLoader } from '../train/wiring.ts';
import { toyQuestions, toyRunner, toyScorer, TOY_VOCAB } from '../testing/toy-task.ts';
import { CHECKPOINT_FILE } from './policy.ts';
import { EndpointError } from '../core/errors.ts';

const bin = join(import.meta.dirname, '../../bin/matpo.js');
let root: string;
let modelDir: string;

before(() => {
  root = mkdtempSync(join(tmpdir(), 'matpo-tinker-e2e-'));
  modelDir = join(root, 'model');
  const cfg = presetConfig('micro', { vocabSize: TOY_VOCAB });
  const layout = buildLayout(cfg);
  const w = new Float32Array(layout.total);
  initParams(w, layout, { ...cfg, initializerRange: 0.3 }, 17);
  saveModelDir(modelDir, { config: cfg, layout, weights: w });
});
after(() => rmSync(root, { recursive: true, force: true }));

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** `matpo serve --tinker` as a child process; resolves once it listens. */
async function startServer(port: number, tinkerDir: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [bin, 'serve', '--tinker', '--model', modelDir, '--port', String(port), '--tinker-dir', tinkerDir, '--threads', '1'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('Tinker API')) resolve();
    });
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    child.on('exit', (code) => reject(new Error(`server exited (${code}): ${out}`)));
  });
  return child;
}

async function stopServer(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill(signal);
  await exited;
}

function config(
  name: string,
  kind: 'embedded' | 'tinker',
  port: number,
  extra: { loss?: Record<string, unknown>; model?: Record<string, unknown>; optim?: Record<string, unknown> } = {},
) {
  const raw: TrainConfigInput = {
    model: { kind, path: modelDir, threads: 1, baseUrl: `http://127.0.0.1:${port}`, ...extra.model },
    rollout: { mode: 'matpo', groupSize: 4, questionsPerStep: 2, temperature: 1 },
    rl: { loss: { aggregation: 'seq-mean-token-mean', ...extra.loss } },
    optim: { learningRate: 0.05, maxGradNorm: 1, beta2: 0.99, ...extra.optim },
    run: { name, dir: root, steps: 3, evalEvery: 0, checkpointEvery: 1, keepCheckpoints: 0, progress: false, seed: 5 },
  };
  return parseConfig(raw);
}

function deps(cfg: ReturnType<typeof config>, wrap: (r: ReturnType<typeof toyRunner>) => ReturnType<typeof toyRunner> = (r) => r): RlDeps {
  return {
    loadPolicy:
      cfg.model.kind === 'tinker'
        ? (d) => loadTinkerPolicy(cfg.model, d, { seed: cfg.run.seed, loss: cfg.rl.loss })
        : (d) => EmbeddedPolicy.load(d, { threads: 1 }),
    makeRunner: (policy) => wrap(toyRunner(policy)),
    trainQuestions: toyQuestions([0, 1, 2, 3, 4, 5, 6, 7]),
    evalQuestions: [],
    scorer: toyScorer,
    log: () => {},
  };
}

/** Final weights of a run: the embedded checkpoint's model directory, or the server's copy named by tinker.json. */
function finalWeights(runDir: string, tinkerDir?: string): Float32Array {
  const ck = join(runDir, 'checkpoints', 'step-000003');
  if (!tinkerDir) return loadModelDir(ck).weights;
  const { weights } = JSON.parse(readFileSync(join(ck, CHECKPOINT_FILE), 'utf8')) as { weights: string };
  const m = /^tinker:\/\/([^/]+)\/weights\/([^/]+)$/.exec(weights);
  assert.ok(m, weights);
  return loadModelDir(join(tinkerDir, 'runs', m[1], 'weights', m[2])).weights;
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

function gradNorms(runDir: string): number[] {
  return readMetrics(runPaths(runDir))
    .filter((m) => m['train/grad_norm'] !== undefined)
    .map((m) => Number(m['train/grad_norm']));
}

function stepRewards(runDir: string): number[] {
  return readMetrics(runPaths(runDir))
    .filter((m) => m['planner/reward'] !== undefined)
    .map((m) => Number(m['planner/reward']));
}

test(
  'MATPO steps through the Tinker protocol give the same rollouts and weights as in-process; one-pass ppo too; kill, clear error, resume',
  { timeout: 300_000 },
  async () => {
    const port = await freePort();
    const tinkerDir = join(root, 'tinker');
    let server = await startServer(port, tinkerDir);
    try {
      const initial = loadModelDir(modelDir).weights;

      // 1. custom loss (PPO with dual clip, seq-mean-token-mean over planner+workers) through the surrogate
      const e = config('embedded', 'embedded', port);
      const t = config('tinker', 'tinker', port);
      await trainRl(e, deps(e), { runDir: join(root, 'embedded'), resume: false });
      await trainRl(t, deps(t), { runDir: join(root, 'tinker'), resume: false });
      assert.deepEqual(
        stepRewards(join(root, 'tinker')),
        stepRewards(join(root, 'embedded')),
        'same rollouts: the sampler follows every optim step',
      );
      const we = finalWeights(join(root, 'embedded'));
      const wt = finalWeights(join(root, 'tinker'), tinkerDir);
      assert.ok(maxDiff(we, initial) > 1e-3, 'training changed the weights');
      const d = maxDiff(wt, we);
      assert.ok(d < 1e-5, `weights differ by ${d}`);

      // evaluation from a checkpoint directory (model.path = the run's step-3 checkpoint) samples the trained weights
      const fromCk = await openSamplingPolicy({ ...t.model, path: join(root, 'tinker', 'checkpoints', 'step-000003') }, 5);
      const emb = await EmbeddedPolicy.load(join(root, 'embedded', 'checkpoints', 'step-000003'), { threads: 1 });
      for (const seed of [1, 2, 3]) {
        const params = { maxNewTokens: 8, seed, stopTokenIds: [] };
        assert.deepEqual((await fromCk.sample([0, 9], params)).tokens, (await emb.sample([0, 9], params)).tokens);
      }
      await fromCk.close();
      await emb.close();

      // 2. one pass with the service's ppo = our PPO without dual clip. The service computes the ratio
      //    from float32 old logprobs, so gradients agree to float32 precision (checked through the
      //    gradient norms); AdamW's ε is raised to 1e-4 here because with ε = 1e-8 a parameter whose
      //    gradient is ~1e-9 moves by ~lr·sign(g), turning float32 noise into 1e-4 weight differences.
      const loss = { dualClip: null, clipLow: 0.2, clipHigh: 0.28 };
      const e1 = config('embedded-1p', 'embedded', port, { loss, optim: { eps: 1e-4 } });
      const t1 = config('tinker-1p', 'tinker', port, { loss, model: { tinkerLoss: 'ppo' }, optim: { eps: 1e-4 } });
      await trainRl(e1, deps(e1), { runDir: join(root, 'embedded-1p'), resume: false });
      await trainRl(t1, deps(t1), { runDir: join(root, 'tinker-1p'), resume: false });
      assert.deepEqual(stepRewards(join(root, 'tinker-1p')), stepRewards(join(root, 'embedded-1p')));
      const d1 = maxDiff(finalWeights(join(root, 'tinker-1p'), tinkerDir), finalWeights(join(root, 'embedded-1p')));
      assert.ok(d1 < 1e-5, `one-pass weights differ by ${d1}`);
      const [g1, g0] = [gradNorms(join(root, 'tinker-1p')), gradNorms(join(root, 'embedded-1p'))];
      assert.equal(g1.length, 3);
      g1.forEach((g, i) => assert.ok(Math.abs(g - g0[i]) <= 1e-5 * Math.max(1, g0[i]), `step ${i + 1} gradient norm ${g} vs ${g0[i]}`));
      assert.ok(
        g0.some((g) => g > 0.1),
        'a real gradient',
      );

      // 3. the server dies in the middle of step 2's rollouts and comes back on the same directory
      const k = config('killed', 'tinker', port);
      let calls = 0;
      let restarted: Promise<void> | null = null;
      const killing =
        (r: ReturnType<typeof toyRunner>): ReturnType<typeof toyRunner> =>
        async (req) => {
          if (++calls === 8 + 3) {
            // step 1 ran 8 rollouts; the 4th rollout of step 2 finds the server gone
            await stopServer(server, 'SIGKILL');
            restarted = (async () => {
              await new Promise((res) => setTimeout(res, 300));
              server = await startServer(port, tinkerDir);
            })();
          }
          return r(req);
        };
      const kdeps = deps(k, killing);
      const err = await trainRl(k, kdeps, { runDir: join(root, 'killed'), resume: false }).then(
        () => null,
        (x: unknown) => x,
      );
      await restarted;
      assert.ok(err instanceof EndpointError, `expected an EndpointError, got ${String(err)}`);
      assert.match(err.message, /HTTP 404: .*unknown.*did it restart\? continue from the last checkpoint with --resume/);
      assert.equal(err.message.split('\n').length, 1);
      const resumed = await trainRl(k, deps(k), { runDir: join(root, 'killed'), resume: true });
      assert.equal(resumed.step, 3);
      assert.deepEqual(
        readMetrics(runPaths(join(root, 'killed')))
          .filter((m) => m['planner/reward'] !== undefined)
          .map((m) => m.step),
        [1, 2, 3],
      );
      const dk = maxDiff(finalWeights(join(root, 'killed'), tinkerDir), wt);
      assert.ok(dk < 1e-6, `resumed weights differ from the uninterrupted run by ${dk}`);
    } finally {
      await stopServer(server);
    }
  },
);

test('the same with LoRA: MATPO steps through the protocol train the same adapter as in-process', { timeout: 300_000 }, async () => {
  const port = await freePort();
  const tinkerDir = join(root, 'tinker-lora');
  const server = await startServer(port, tinkerDir);
  try {
    const lora = { model: { loraRank: 4, loraAlpha: 8 } };
    const e = config('embedded-lora', 'embedded', port, lora);
    const t = config('tinker-lora', 'tinker', port, lora);
    await trainRl(e, { ...deps(e), loadPolicy: policyLoader(e) }, { runDir: join(root, 'embedded-lora'), resume: false });
    await trainRl(t, deps(t), { runDir: join(root, 'tinker-lora'), resume: false });
    assert.deepEqual(stepRewards(join(root, 'tinker-lora')), stepRewards(join(root, 'embedded-lora')));
    const [gt, ge] = [gradNorms(join(root, 'tinker-lora')), gradNorms(join(root, 'embedded-lora'))];
    gt.forEach((g, i) => assert.ok(Math.abs(g - ge[i]) <= 1e-5 * Math.max(1, ge[i]), `step ${i + 1} gradient norm ${g} vs ${ge[i]}`));
    assert.ok(
      ge.some((g) => g > 0),
      'a real gradient',
    );
    // both final checkpoints (an adapter in-process, a tinker:// state on the server) give the same logprobs
    const ck = (run: string) => join(root, run, 'checkpoints', 'step-000003');
    const pe = await policyLoader(e)(ck('embedded-lora'));
    const pt = await policyLoader(t)(ck('tinker-lora'));
    const base = await policyLoader(e)(modelDir);
    try {
      const probes = [{ tokens: [0, 8, 1, 7, 2, 6, 3] }, { tokens: [0, 11, 6, 0, 11, 4, 7, 5] }];
      const [le, lt, lb] = [await pe.forward(probes), await pt.forward(probes), await base.forward(probes)];
      let moved = 0;
      probes.forEach((p, i) =>
        p.tokens.forEach((_, k) => {
          assert.ok(
            Math.abs(le.logprobs[i][k] - lt.logprobs[i][k]) < 1e-5,
            `probe ${i} token ${k}: ${lt.logprobs[i][k]} vs ${le.logprobs[i][k]}`,
          );
          moved = Math.max(moved, Math.abs(le.logprobs[i][k] - lb.logprobs[i][k]));
        }),
      );
      assert.ok(moved > 1e-3, 'the adapter changed the logprobs');
    } finally {
      await Promise.all([pe.close(), pt.close(), base.close()]);
    }
  } finally {
    await stopServer(server);
  }
});
