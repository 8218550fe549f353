import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseConfig, type TrainConfigInput } from './config.ts';
import { trainRl, QuestionStream, miniBatches, type RlDeps } from './rl-loop.ts';
import { BigramPolicy } from '../testing/bigram-policy.ts';
import { toyQuestions, toyRunner, toyScorer, TOY_VOCAB } from '../testing/toy-task.ts';
import { readMetrics, runPaths } from './run-dir.ts';
import type { Rollout } from '../core/records.ts';
import type { Datum } from '../core/records.ts';
import type { ForwardOutput, TrainablePolicy } from '../core/policy.ts';
import { testRollout } from '../testing/rollouts.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const tmp = () => mkdtempSync(join(tmpdir(), 'matpo-rl-'));

function toyConfig(over: Record<string, Record<string, unknown>> = {}) {
  const base: TrainConfigInput = {
    model: { path: 'toy:init' },
    rollout: { groupSize: 8, questionsPerStep: 3, concurrency: 4 },
    optim: { learningRate: 0.2 },
    run: { steps: 80, evalEvery: 40, evalRepeats: 16, checkpointEvery: 40, progress: false, seed: 3 },
  };
  for (const [k, v] of Object.entries(over))
    (base as Record<string, Record<string, unknown>>)[k] = { ...(base as Record<string, Record<string, unknown>>)[k], ...v };
  return parseConfig(base);
}

function toyDeps(wrap: (p: BigramPolicy) => TrainablePolicy = (p) => p): RlDeps {
  return {
    loadPolicy: async (dir) => wrap(dir === 'toy:init' ? new BigramPolicy(TOY_VOCAB) : BigramPolicy.load(dir)),
    makeRunner: (policy) => toyRunner(policy),
    trainQuestions: toyQuestions([0, 1, 2, 3, 4, 5]),
    evalQuestions: toyQuestions([0, 1, 2]),
    scorer: toyScorer,
    log: () => {},
  };
}

const readJsonl = (file: string) =>
  readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

test('the RL loop learns the toy task in MATPO mode and writes the run-directory layout', async () => {
  const dir = join(tmp(), 'run');
  const result = await trainRl(toyConfig(), toyDeps(), { runDir: dir, resume: false });
  assert.equal(result.step, 80);
  assert.deepEqual(
    result.evals.map((e) => e.step),
    [0, 40, 80],
  );
  const before = result.evals[0].accuracy;
  const after = result.evals[2].accuracy;
  assert.ok(after >= before + 0.3, `held-out accuracy ${before} → ${after}`);

  const p = runPaths(dir);
  assert.ok(existsSync(p.config));
  assert.equal(readFileSync(p.latest, 'utf8'), 'step-000080\n');
  assert.ok(existsSync(join(p.checkpoints, 'step-000040', 'trainer_state.json')));
  assert.ok(existsSync(join(p.checkpoints, 'step-000080', 'optimizer', 'adam.f64')));
  const metrics = readMetrics(p);
  const stepLines = metrics.filter((m) => m['planner/reward'] !== undefined);
  assert.equal(stepLines.length, 80);
  for (const key of [
    'planner/reward',
    'planner/accuracy',
    'planner/format',
    'planner/tokens',
    'planner/turns',
    'planner/workers_per_rollout',
    'train/loss',
    'train/grad_norm',
    'train/clip_fraction',
    'planner/ratio_mean',
    'planner/entropy',
    'time/rollout_s',
    'time/train_s',
  ])
    assert.equal(typeof stepLines[10][key], 'number', key);
  assert.ok(metrics.every((m) => typeof m.time === 'string' && typeof m.step === 'number'));
  assert.ok(metrics.some((m) => m['eval/accuracy'] !== undefined && m.step === 0));
  assert.ok(
    metrics.some((m) => typeof m['worker/tokens'] === 'number' && typeof m['worker/reward'] === 'number'),
    'some steps have workers',
  );

  // Saved rollouts have reward and advantage; workers' datums carried the parent's advantage.
  const rollouts: Rollout[] = readJsonl(join(p.rollouts, 'step-000001.jsonl'));
  assert.equal(rollouts.length, 24);
  assert.ok(rollouts.every((r) => typeof r.reward?.total === 'number' && typeof r.advantage === 'number'));
  // every sequence records the advantage it was trained with; under matpo credit a worker's is its parent's
  assert.ok(rollouts.every((r) => r.root.advantage === r.advantage && r.workers.every((w) => w.advantage === r.advantage)));
  assert.equal(readdirSync(p.rollouts).length, 80);
  assert.deepEqual(readdirSync(p.eval).sort(), ['step-000000.jsonl', 'step-000040.jsonl', 'step-000080.jsonl']);

  // A fresh run in an occupied directory is refused.
  await assert.rejects(trainRl(toyConfig(), toyDeps(), { runDir: dir, resume: false }), /already holds a run; resume it with --resume/);
});

test('a non-finite loss skips the update and is logged; training continues', async () => {
  const dir = join(tmp(), 'run');
  let calls = 0;
  const wrap = (p: BigramPolicy): TrainablePolicy => {
    const forward = p.forward.bind(p);
    p.forward = async (datums: readonly Pick<Datum, 'tokens'>[]): Promise<ForwardOutput> => {
      const out = await forward(datums);
      if (++calls === 2) out.logprobs[0].fill(NaN); // poison step 2's forward
      return out;
    };
    return p;
  };
  const cfg = toyConfig({ run: { steps: 3, evalEvery: 0, checkpointEvery: 1, keepCheckpoints: 0 } });
  await trainRl(cfg, toyDeps(wrap), { runDir: dir, resume: false });
  const m = readMetrics(runPaths(dir));
  const skip = m.find((r) => r.event === 'skipped');
  assert.equal(skip?.step, 2);
  assert.match(String(skip?.reason), /non-finite/);
  assert.equal(m.find((r) => r.step === 2 && r['train/skipped'] !== undefined)?.['train/skipped'], 1);
  // weights after step 2 equal those after step 1; step 3 updates again
  const w = (s: string) => readFileSync(join(dir, 'checkpoints', s, 'weights.f64'));
  assert.ok(w('step-000001').equals(w('step-000002')));
  assert.ok(!w('step-000002').equals(w('step-000003')));
});

test('data stream: per-epoch seeded order, cursor advances across epochs; mini-batches keep rollouts whole', () => {
  const qs = toyQuestions([0, 1, 2, 3, 4]);
  const s = new QuestionStream(qs, 1, true);
  const st = { epoch: 0, cursor: 0 };
  const first = s.take(st, 7).map((q) => q.id);
  assert.deepEqual(st, { epoch: 1, cursor: 2 });
  assert.deepEqual(new Set(first.slice(0, 5)).size, 5);
  const again = new QuestionStream(qs, 1, true).take({ epoch: 0, cursor: 0 }, 7).map((q) => q.id);
  assert.deepEqual(first, again);
  const d = (r: string, s: string) => ({ rolloutId: r, sequenceId: s }) as Datum;
  const mb = miniBatches([d('a', '1'), d('a', '2'), d('b', '3'), d('c', '4'), d('c', '5')], 2);
  assert.deepEqual(
    mb.map((b) => b.map((x) => x.sequenceId)),
    [
      ['1', '2'],
      ['3', '4', '5'],
    ],
  );
});

// ---------------------------------------------------------------------------------------------
// Kill and resume, with real child processes

function runChild(
  runDir: string,
  delayMs: number,
  args: string[],
  onLine?: (line: string, kill: (sig: NodeJS.Signals) => void) => void,
): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(here, '..', 'testing', 'toy-train.ts'), runDir, String(delayMs), ...args],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let buf = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c;
      buf += c;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        onLine?.(line, (sig) => child.kill(sig));
      }
    });
    child.stderr.on('data', (c: Buffer) => (out += c));
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ code, signal, out }));
  });
}

function filesUnder(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else out.set(relative(dir, p), readFileSync(p));
    }
  };
  walk(dir);
  return out;
}

const stripTimes = (rs: Rollout[]) =>
  rs.map((r) => ({
    ...r,
    timings: null,
    root: { ...r.root, turns: r.root.turns.map((t) => ({ ...t, ms: 0 })) },
    workers: r.workers.map((w) => ({ ...w, turns: w.turns.map((t) => ({ ...t, ms: 0 })) })),
  }));

const SETS = [
  '--set',
  'run.steps=8',
  '--set',
  'run.checkpointEvery=2',
  '--set',
  'run.evalEvery=4',
  '--set',
  'run.keepCheckpoints=0',
  '--set',
  'rollout.groupSize=4',
  '--set',
  'rollout.questionsPerStep=2',
  '--set',
  'optim.learningRate=0.2',
  '--set',
  'run.seed=5',
];

test('SIGKILL mid-run, then --resume, ends with byte-identical checkpoints to an uninterrupted run', { timeout: 120_000 }, async () => {
  const base = tmp();
  const a = join(base, 'uninterrupted');
  const b = join(base, 'killed');
  const r1 = await runChild(a, 0, SETS);
  assert.equal(r1.code, 0, r1.out);

  // Kill while step 5 is in flight (after checkpoint step-000004 was written).
  let killedAt = '';
  const r2 = await runChild(b, 40, SETS, (line, kill) => {
    if (line.startsWith('step 5/') && !killedAt) {
      killedAt = line;
      kill('SIGKILL');
    }
  });
  assert.equal(r2.signal, 'SIGKILL', r2.out);
  assert.ok(!existsSync(join(b, 'checkpoints', 'step-000008')));
  const r3 = await runChild(b, 0, [...SETS, '--resume']);
  assert.equal(r3.code, 0, r3.out);
  assert.match(r3.out, /resuming .* from step-00000[45]/);

  for (const step of ['step-000002', 'step-000004', 'step-000006', 'step-000008']) {
    const fa = filesUnder(join(a, 'checkpoints', step));
    const fb = filesUnder(join(b, 'checkpoints', step));
    assert.deepEqual([...fb.keys()].sort(), [...fa.keys()].sort());
    for (const [k, v] of fa) assert.ok(v.equals(fb.get(k)!), `${step}/${k} differs`);
  }
  // The logs read as one continuous run: same steps, same rollouts (timings aside).
  const stepsOf = (d: string) =>
    readMetrics(runPaths(d))
      .filter((m) => m['planner/reward'] !== undefined)
      .map((m) => [m.step, m['planner/reward'], m['train/loss']]);
  assert.deepEqual(stepsOf(b), stepsOf(a));
  for (let s = 1; s <= 8; s++) {
    const f = `step-${String(s).padStart(6, '0')}.jsonl`;
    assert.deepEqual(stripTimes(readJsonl(join(b, 'rollouts', f))), stripTimes(readJsonl(join(a, 'rollouts', f))));
  }
  rmSync(base, { recursive: true, force: true });
});

test('SIGINT finishes the step in flight, checkpoints it and exits; resume completes the run', { timeout: 120_000 }, async () => {
  const base = tmp();
  const a = join(base, 'uninterrupted');
  const b = join(base, 'interrupted');
  assert.equal((await runChild(a, 0, SETS)).code, 0);
  let sent = false;
  const r = await runChild(b, 40, SETS, (line, kill) => {
    if (line.startsWith('step 3/') && !sent) {
      sent = true;
      kill('SIGINT');
    }
  });
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /stopped=true/);
  const stoppedAt = Number(/done step=(\d+)/.exec(r.out)![1]);
  assert.ok(stoppedAt >= 3 && stoppedAt < 8, r.out);
  assert.equal(readFileSync(join(b, 'checkpoints', 'latest'), 'utf8').trim(), `step-${String(stoppedAt).padStart(6, '0')}`);
  assert.equal((await runChild(b, 0, [...SETS, '--resume'])).code, 0);
  const fa = filesUnder(join(a, 'checkpoints', 'step-000008'));
  const fb = filesUnder(join(b, 'checkpoints', 'step-000008'));
  for (const [k, v] of fa) assert.ok(v.equals(fb.get(k)!), `${k} differs`);
  rmSync(base, { recursive: true, force: true });
});

test('every estimator, credit assignment, policy loss and aggregation runs in the loop, in both modes', async () => {
  const combos: Record<string, Record<string, unknown>>[] = [
    { rl: { estimator: 'grpo', credit: 'matpo', loss: { name: 'ppo', aggregation: 'token-mean' } } },
    { rl: { estimator: 'dr-grpo', credit: 'agent-wise', loss: { name: 'ppo', aggregation: 'seq-mean-token-sum', clipHigh: 0.28 } } },
    {
      rl: {
        estimator: 'rloo',
        credit: 'per-role-groups',
        loss: { name: 'gspo', aggregation: 'seq-mean-token-mean', clipLow: 0.0003, clipHigh: 0.0004, dualClip: null },
      },
    },
    {
      rl: {
        estimator: 'grpo',
        credit: 'matpo',
        dropZeroVarianceGroups: true,
        loss: { name: 'ppo', aggregation: 'seq-mean-token-sum-norm', unit: 'sequence' },
      },
    },
    { rollout: { mode: 'single' }, rl: { estimator: 'grpo', credit: 'matpo', loss: { name: 'ppo', aggregation: 'token-mean' } } },
  ];
  for (const c of combos) {
    const dir = join(tmp(), 'run');
    const cfg = toyConfig({ ...c, run: { steps: 3, evalEvery: 0, checkpointEvery: 3 } });
    const r = await trainRl(cfg, toyDeps(), { runDir: dir, resume: false });
    assert.equal(r.step, 3, JSON.stringify(c));
    const m = readMetrics(runPaths(dir)).filter((x) => x['train/tokens'] !== undefined);
    assert.equal(m.length, 3);
    const root = cfg.rollout.mode === 'single' ? 'single' : 'planner';
    assert.equal(typeof m[0][`${root}/reward`], 'number', JSON.stringify(c));
    if (root === 'single') assert.equal(m[0]['planner/reward'], undefined);
  }
});

test('old logprobs recomputed by the trainer (gap logged) and a KL term to the frozen initial policy', async () => {
  const dir = join(tmp(), 'run');
  let refLoads = 0;
  const deps = toyDeps();
  const load = deps.loadPolicy;
  deps.loadPolicy = async (d) => {
    if (d === 'toy:init') refLoads++;
    return load(d);
  };
  const cfg = toyConfig({
    rl: { recomputeOldLogprobs: true, loss: { klCoef: 0.1, klEstimator: 'k3' } },
    run: { steps: 3, evalEvery: 0, checkpointEvery: 3 },
  });
  await trainRl(cfg, deps, { runDir: dir, resume: false });
  assert.equal(refLoads, 2, 'the policy and the frozen reference');
  const m = readMetrics(runPaths(dir)).filter((x) => x['train/tokens'] !== undefined);
  // the bigram sampler's float64 logprobs vs the trainer's float32 ones: a tiny gap
  for (const x of m) assert.ok(Number(x['train/old_logprob_gap']) < 1e-5 && Number(x['train/old_logprob_gap']) >= 0);
  // step 1: the policy equals the reference → KL 0; later steps: positive
  assert.ok(Math.abs(Number(m[0]['train/kl_ref'])) < 1e-6);
  assert.ok(Number(m[2]['train/kl_ref']) > 0);
});

test('held-out evaluation samples at run.evalTemperature; training rollouts at rollout.temperature', async () => {
  const dir = join(tmp(), 'run');
  const seen: { id: string; temperature: number }[] = [];
  const deps = toyDeps();
  const makeRunner = deps.makeRunner;
  deps.makeRunner = (policy) => {
    const run = makeRunner(policy);
    return (req) => {
      seen.push({ id: req.rolloutId, temperature: req.temperature ?? NaN });
      return run(req);
    };
  };
  const cfg = toyConfig({ rollout: { temperature: 0.7 }, run: { steps: 1, evalEvery: 1, evalRepeats: 1, evalTemperature: 0 } });
  await trainRl(cfg, deps, { runDir: dir, resume: false });
  const evals = seen.filter((s) => s.id.startsWith('eval/'));
  const train = seen.filter((s) => !s.id.startsWith('eval/'));
  assert.ok(evals.length > 0 && train.length > 0);
  assert.ok(
    evals.every((s) => s.temperature === 0),
    JSON.stringify(evals),
  );
  assert.ok(
    train.every((s) => s.temperature === 0.7),
    JSON.stringify(train),
  );
  // unset, evaluation follows the rollout temperature
  assert.equal(toyConfig().run.evalTemperature, null);
});

// ---------------------------------------------------------------------------------------------
// DAPO dynamic sampling with refill, with a scripted rollout runner: every rollout of a "flat-k"
// question answers correctly (all rewards equal: the group is dropped); in a "mixed-k" group only
// rollout 0 answers correctly (unequal rewards: kept).

function scriptedDeps(order: string[], seen: string[]): RlDeps {
  const questions = order.map((id) => ({ id, question: id, answers: ['gold'] }));
  return {
    loadPolicy: async () => new BigramPolicy(TOY_VOCAB),
    makeRunner: () => async (req) => {
      seen.push(`${req.rolloutId} ${req.question.id}`);
      const right = req.question.id.startsWith('flat') || req.index === 0;
      const answer = right ? 'gold' : 'wrong';
      const { rolloutId: id, index } = req;
      return testRollout({ id, questionId: req.question.id, index, rootMask: [0, 1, 1], workerMasks: [[0, 1]], answer });
    },
    trainQuestions: questions,
    evalQuestions: [],
    scorer: toyScorer,
    log: () => {},
  };
}

function dapoConfig(refillRounds: number) {
  return parseConfig(
    {
      model: { path: 'toy:init' },
      data: { shuffle: false },
      rollout: { groupSize: 2, questionsPerStep: 2, concurrency: 1 },
      rl: { preset: 'dapo', refillRounds, reward: { formatScale: 0 } },
      run: { steps: 1, evalEvery: 0, checkpointEvery: 1, progress: false },
    },
    undefined,
    { warn: () => {} },
  );
}

test('DAPO refill: zero-variance groups are re-sampled until the batch has questionsPerStep groups', async () => {
  const order = ['flat-0', 'flat-1', 'mixed-0', 'flat-2', 'mixed-1', 'mixed-2'];
  const seen: string[] = [];
  const dir = join(tmp(), 'run');
  await trainRl(dapoConfig(3), scriptedDeps(order, seen), { runDir: dir, resume: false });
  // round 0: flat-0, flat-1 (0 kept) → round 1: 2 missing → mixed-0, flat-2 (1 kept) → round 2: 1 missing → mixed-1
  const firstOfGroup = seen.filter((s) => s.split(' ')[0].endsWith('/0')).map((s) => s.split(' ')[1]);
  assert.deepEqual(firstOfGroup, ['flat-0', 'flat-1', 'mixed-0', 'flat-2', 'mixed-1']);
  assert.ok(seen.includes('step-000001/q4/1 mixed-1'), seen.join('\n'));
  const m = readMetrics(runPaths(dir)).find((x) => x['train/datums'] !== undefined)!;
  assert.equal(m['train/refill_rounds'], 2);
  assert.equal(m['train/groups'], 5);
  assert.equal(m['train/groups_kept'], 2);
  assert.equal(m['train/datums'], 8, 'two kept groups × two rollouts × (planner + worker)');
  const saved: Rollout[] = readJsonl(join(runPaths(dir).rollouts, 'step-000001.jsonl'));
  assert.equal(saved.length, 10);
  assert.deepEqual(
    saved.filter((r) => r.advantage !== undefined).map((r) => r.questionId),
    ['mixed-0', 'mixed-0', 'mixed-1', 'mixed-1'],
  );
  // the question stream continues after the refill: step 2 would start at mixed-2
  const state = JSON.parse(readFileSync(join(dir, 'checkpoints', 'step-000001', 'trainer_state.json'), 'utf8'));
  assert.equal(state.cursor, 5);
});

test('DAPO refill is bounded by rl.refillRounds (a short batch is logged); without refill the batch shrinks', async () => {
  const order = ['flat-0', 'flat-1', 'mixed-0', 'flat-2', 'mixed-1', 'mixed-2'];
  const seen: string[] = [];
  const dir = join(tmp(), 'run');
  await trainRl(dapoConfig(1), scriptedDeps(order, seen), { runDir: dir, resume: false });
  assert.equal(seen.length, 8, 'round 0 and one refill round of two questions');
  const ms = readMetrics(runPaths(dir));
  const short = String(ms.find((x) => x.event === 'refill_short')?.reason);
  assert.match(short, /^1 of 2 groups with unequal rewards after 1 refill rounds \(rl\.refillRounds\)$/);
  assert.equal(ms.find((x) => x['train/datums'] !== undefined)?.['train/datums'], 4);

  const seen0: string[] = [];
  const dir0 = join(tmp(), 'run');
  await trainRl(dapoConfig(0), scriptedDeps(order, seen0), { runDir: dir0, resume: false });
  assert.equal(seen0.length, 4);
  const m0 = readMetrics(runPaths(dir0));
  assert.equal(m0.find((x) => x['train/datums'] !== undefined)?.['train/datums'], 0);
  assert.ok(m0.some((x) => x.event === 'no_update'));
});

test('DAPO refill draws only questions not yet rolled out in the step, and stops when the split has none left', async () => {
  const seen: string[] = [];
  const dir = join(tmp(), 'run');
  await trainRl(dapoConfig(3), scriptedDeps(['flat-0', 'mixed-0', 'flat-1'], seen), { runDir: dir, resume: false });
  // round 0: flat-0, mixed-0 (1 kept) → round 1: flat-1 (still 1 kept) → the next epoch holds only
  // questions of this step, so no round 2 (a repeated id would merge into an existing group)
  assert.deepEqual([...new Set(seen.map((s) => s.split(' ')[1]))], ['flat-0', 'mixed-0', 'flat-1']);
  assert.equal(seen.length, 6);
  const ms = readMetrics(runPaths(dir));
  assert.equal(ms.find((x) => x['train/refill_rounds'] !== undefined)?.['train/refill_rounds'], 1);
  assert.match(String(ms.find((x) => x.event === 'refill_short')?.reason), /^1 of 2 groups .* after 1 refill rounds/);

  const s = new QuestionStream(toyQuestions([0, 1, 2, 3]), 1, false);
  const st = { epoch: 0, cursor: 3 };
  assert.deepEqual(
    s.takeNew(st, 2, new Set(['toy-0'])).map((q) => q.id),
    ['toy-3', 'toy-1'],
  );
  assert.deepEqual(st, { epoch: 1, cursor: 2 });
});
