/**
 * The Tinker protocol's cost per RL step, against the embedded engine's step time, on the demo's
 * shapes (src/demo/pipeline.ts DEMO_DEFAULTS: tiny preset, vocabulary 2048, 8 questions × 8
 * rollouts per step). Each rollout contributes a planner sequence and `workers` worker sequences of
 * realistic lengths (planner ≈ 500 tokens with a third sampled, workers ≈ 700 with a quarter
 * sampled); advantages are random, old logprobs are the model's own. Measured, per step:
 *
 *   serialise   datums → Tinker JSON (forward + forward_backward bodies) and the bytes sent
 *   embedded    EmbeddedPolicy.forwardBackward (MATPO's PPO loss) + optimStep, in-process
 *   custom      TinkerPolicy against `serveTinker` on 127.0.0.1 (same engine behind HTTP):
 *               forward + loss + forward_backward(cross_entropy) + optim_step + new sampler weights
 *   one-pass    the same with the service's ppo (no extra forward)
 *   forward     the extra forward pass of the custom path alone
 *
 * Each as wall time and as CPU time of the whole process (the server runs in-process here, so the
 * CPU time counts client and server together; on a shared machine it is the steadier number).
 *
 *   npm run bench:tinker -- [--questions 8] [--group 8] [--workers 2] [--planner-tokens 500]
 *                           [--worker-tokens 700] [--steps 2] [--threads 0]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { presetConfig } from '../src/model/config.ts';
import { buildLayout, initParams } from '../src/model/params.ts';
import { saveModelDir } from '../src/model/checkpoint.ts';
import { EmbeddedPolicy } from '../src/policy/embedded.ts';
import { serveTinker } from '../src/tinker/server.ts';
import { TinkerPolicy, toWireDatum } from '../src/tinker/policy.ts';
import { makePolicyLoss } from '../src/rl/losses.ts';
import { defaultPolicyLoss } from '../src/testing/config-defaults.ts';
import { Rng } from '../src/util/rng.ts';
import type { Datum } from '../src/core/records.ts';
import type { TrainablePolicy } from '../src/core/policy.ts';

const { values } = parseArgs({
  options: {
    questions: { type: 'string', default: '8' },
    group: { type: 'string', default: '8' },
    workers: { type: 'string', default: '2' },
    'planner-tokens': { type: 'string', default: '500' },
    'worker-tokens': { type: 'string', default: '700' },
    steps: { type: 'string', default: '2' },
    threads: { type: 'string', default: '0' },
  },
});
const Q = Number(values.questions);
const G = Number(values.group);
const W = Number(values.workers);
const plannerT = Number(values['planner-tokens']);
const workerT = Number(values['worker-tokens']);
const steps = Number(values.steps);
const threads = Number(values.threads) || undefined;
const VOCAB = 2048;

const root = mkdtempSync(join(tmpdir(), 'matpo-bench-tinker-'));
const modelDir = join(root, 'model');
const cfg = presetConfig('tiny', { vocabSize: VOCAB });
const layout = buildLayout(cfg);
const w = new Float32Array(layout.total);
initParams(w, layout, cfg, 1);
saveModelDir(modelDir, { config: cfg, layout, weights: w });

const rng = new Rng('bench-tinker');
/** A sequence of about `len` tokens (±20 %) whose last `share` part alternates sampled turns and tool output. */
function datum(q: number, g: number, k: number, len: number, share: number): Datum {
  const T = Math.max(8, Math.round(len * (0.8 + 0.4 * rng.next())));
  const tokens = Array.from({ length: T }, () => Math.floor(rng.next() * VOCAB));
  const mask = tokens.map((_, t) => (t > T * (1 - 2 * share) && Math.floor(t / 40) % 2 === 0 ? 1 : 0));
  const adv = rng.next() * 2 - 1;
  return {
    tokens,
    mask,
    advantages: mask.map((m) => (m ? adv : 0)),
    oldLogprobs: tokens.map(() => 0),
    questionId: `q${q}`,
    rolloutId: `q${q}/${g}`,
    sequenceId: `q${q}/${g}/${k}`,
    role: k === 0 ? 'planner' : 'worker',
  };
}
const datums: Datum[] = [];
for (let q = 0; q < Q; q++)
  for (let g = 0; g < G; g++) for (let k = 0; k <= W; k++) datums.push(datum(q, g, k, k === 0 ? plannerT : workerT, k === 0 ? 0.33 : 0.25));
const tokens = datums.reduce((n, d) => n + d.tokens.length, 0);
const trainable = datums.reduce((n, d) => n + d.mask.reduce((a, b) => a + b, 0), 0);

const embedded = await EmbeddedPolicy.load(modelDir, { threads });
// old logprobs = the model's own (ratios start at 1, as right after sampling)
const fwd0 = await embedded.forward(datums);
datums.forEach((d, i) => d.mask.forEach((m, t) => (d.oldLogprobs[t] = m ? fwd0.logprobs[i][t] : 0)));

console.log(
  `tinker bench: tiny preset (${(layout.total / 1e6).toFixed(2)} M parameters), ` +
    `${Q} questions × ${G} rollouts × (1 planner + ${W} workers) = ` +
    `${datums.length} datums, ${tokens} tokens (${trainable} trainable), ${steps} steps each`,
);

// Wall time, and CPU time of the whole process (client, in-process server and the engines' worker
// threads): on a shared machine the CPU time is the steadier measure.
interface Clock {
  wall: number;
  cpu: number;
}
const start = (): Clock => ({ wall: performance.now(), cpu: cpuMs() });
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
const since = (c: Clock): Clock => ({ wall: performance.now() - c.wall, cpu: cpuMs() - c.cpu });
const avg = (xs: Clock[]): Clock => ({
  wall: xs.reduce((a, b) => a + b.wall, 0) / xs.length,
  cpu: xs.reduce((a, b) => a + b.cpu, 0) / xs.length,
});
const fmt = (xs: Clock[]) => {
  const m = avg(xs);
  return `${m.wall.toFixed(0)} ms wall, ${m.cpu.toFixed(0)} ms CPU`;
};

// serialisation: both bodies of the custom path
const ser: Clock[] = [];
let bytes = 0;
for (let s = 0; s < 5; s++) {
  const t0 = start();
  const zeros = datums.map((d) => toWireDatum(d.tokens, { weights: new Float32Array(d.tokens.length) }));
  const grads = datums.map((d) => toWireDatum(d.tokens, { weights: Float32Array.from(d.mask, (m) => m * 1e-3 * (rng.next() - 0.5)) }));
  bytes =
    JSON.stringify({ forward_input: { data: zeros, loss_fn: 'cross_entropy' } }).length +
    JSON.stringify({ forward_backward_input: { data: grads, loss_fn: 'cross_entropy' } }).length;
  ser.push(since(t0));
}

const optim = { learningRate: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 };
async function step(p: TrainablePolicy, refreshSampler: boolean): Promise<Clock> {
  const t0 = start();
  await p.forwardBackward(datums, makePolicyLoss(defaultPolicyLoss(), datums));
  await p.optimStep(optim);
  // the sampler weights a Tinker policy takes before the next rollouts
  if (refreshSampler) await p.sample([1, 2, 3], { maxNewTokens: 1, stopTokenIds: [] });
  return since(t0);
}

const emb: Clock[] = [];
for (let s = 0; s < steps; s++) emb.push(await step(embedded, false));
await embedded.close();

const server = await serveTinker({ modelDir, dir: join(root, 'tinker'), port: 0, threads, maxModels: 4 });
const results: Record<string, Clock[]> = {};
const fwds: Clock[] = [];
let sent = 0;
for (const mode of ['custom', 'ppo'] as const) {
  const p = await TinkerPolicy.open({
    baseUrl: server.url,
    baseModel: modelDir,
    lora: null,
    lossMode: mode,
    ppoClip: { low: 0.2, high: 0.2 },
    log: () => {},
  });
  const loss = defaultPolicyLoss(mode === 'ppo' ? { dualClip: null } : {});
  results[mode] = [];
  for (let s = 0; s < steps; s++) {
    const before = p.client.bytesSent;
    const t0 = start();
    await p.forwardBackward(datums, makePolicyLoss(loss, datums));
    await p.optimStep(optim);
    await p.sample([1, 2, 3], { maxNewTokens: 1, stopTokenIds: [] });
    results[mode].push(since(t0));
    if (mode === 'custom') sent = p.client.bytesSent - before;
  }
  if (mode === 'custom') {
    for (let s = 0; s < steps; s++) {
      const t0 = start();
      await p.forward(datums);
      fwds.push(since(t0));
    }
  }
  await p.close();
}
await server.close();
rmSync(root, { recursive: true, force: true });

const e = avg(emb);
const ratio = (xs: Clock[]) => `${(avg(xs).wall / e.wall).toFixed(2)}× wall, ${(avg(xs).cpu / e.cpu).toFixed(2)}× CPU`;
console.log(
  `serialise (forward + forward_backward bodies): ${fmt(ser)}, ${(bytes / 1e6).toFixed(1)} MB JSON; ` +
    `bytes sent per custom step ${(sent / 1e6).toFixed(1)} MB`,
);
console.log(`embedded step (forwardBackward + optimStep):       ${fmt(emb)}`);
console.log(`tinker custom step (+ forward, + sampler weights): ${fmt(results.custom)}  (${ratio(results.custom)} of embedded)`);
console.log(`tinker one-pass ppo step (+ sampler weights):     ${fmt(results.ppo)}  (${ratio(results.ppo)} of embedded)`);
console.log(`  the custom path's extra forward alone:          ${fmt(fwds)}`);
