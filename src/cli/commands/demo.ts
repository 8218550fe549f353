/**
 * `matpo demo`: the whole method on a CPU in one command.
 *
 *   1. generate an offline research world, train its tokenizer, and record the scripted expert's
 *      planner–worker demonstrations through the real rollout engine      → <out>/world/
 *   2. create a tiny Qwen3-style model with the world tokenizer                  → <out>/model-init/
 *   3. warm-start it on the expert transcripts (assistant tokens only)          → <out>/model-sft/
 *   4. train it with MATPO (planner–worker rollouts, GRPO advantages, MATPO credit assignment,
 *      token-level PPO), evaluating on held-out questions before and after     → <out>/matpo/
 *   5. print a summary table, the run directory and the dashboard command.
 *
 * Every phase leaves a marker file when it completes, so running the same command again after a
 * kill continues where it stopped (training resumes from its last checkpoint).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import YAML from 'yaml';
import { intFlag, parseFlags, type Command } from '../command.ts';
import { loadCommand } from '../main.ts';
import { readMetrics, runPaths } from '../../train/run-dir.ts';

export interface DemoSettings {
  seed: number;
  world: { entities: number; questions: number; demoQuestions: number; vocabSize: number; noise: number; demoErrorRate: number };
  model: { preset: string };
  sft: { epochs: number; lr: number; batchTokens: number };
  rl: {
    steps: number; groupSize: number; questionsPerStep: number; learningRate: number; evalQuestions: number;
    maxTurns: number; maxNewTokens: number; maxSequenceTokens: number; workerSummaryTokens: number; microBatchTokens: number;
  };
}

/** Defaults chosen so the whole demo runs in minutes on two cores. */
export const DEMO_DEFAULTS: DemoSettings = {
  seed: 1,
  world: { entities: 300, questions: 1500, demoQuestions: 1200, vocabSize: 2048, noise: 0, demoErrorRate: 0.1 },
  model: { preset: 'tiny' },
  sft: { epochs: 2, lr: 2e-3, batchTokens: 16384 },
  rl: {
    steps: 20, groupSize: 8, questionsPerStep: 4, learningRate: 5e-5, evalQuestions: 100,
    maxTurns: 6, maxNewTokens: 96, maxSequenceTokens: 2048, workerSummaryTokens: 128, microBatchTokens: 8192,
  },
};

/** A few-minute smoke version of the same pipeline (used by the tests). */
export const DEMO_QUICK: DemoSettings = {
  seed: 1,
  world: { entities: 60, questions: 120, demoQuestions: 40, vocabSize: 600, noise: 0, demoErrorRate: 0.1 },
  model: { preset: 'micro' },
  sft: { epochs: 1, lr: 3e-3, batchTokens: 4096 },
  rl: {
    steps: 2, groupSize: 2, questionsPerStep: 2, learningRate: 1e-4, evalQuestions: 4,
    maxTurns: 3, maxNewTokens: 24, maxSequenceTokens: 768, workerSummaryTokens: 24, microBatchTokens: 2048,
  },
};

interface Phase {
  name: string;
  done: string; // marker file
  run(): Promise<void>;
}

async function runCommand(name: string, args: string[]): Promise<void> {
  const command = await loadCommand(name);
  const code = await command.run(args);
  if (typeof code === 'number' && code !== 0) throw new Error(`matpo ${name} exited with code ${code}`);
}

export interface DemoSummary {
  out: string;
  runDir: string;
  before: { accuracy: number; stderr: number; format: number; workers: number } | null;
  after: { accuracy: number; stderr: number; format: number; workers: number } | null;
  steps: number;
  phaseSeconds: Record<string, number>;
}

export async function runDemo(outDir: string, s: DemoSettings, options: { progress?: boolean; threads?: number } = {}): Promise<DemoSummary> {
  const out = resolve(outDir);
  mkdirSync(out, { recursive: true });
  const world = join(out, 'world');
  const modelInit = join(out, 'model-init');
  const modelSft = join(out, 'model-sft');
  const runName = 'matpo';
  const runDir = join(out, runName);
  const noProgress = options.progress === false ? ['--no-progress'] : [];
  const threads = options.threads ? ['--threads', String(options.threads)] : [];
  const timesFile = join(out, '.phase-seconds.json');
  const phaseSeconds: Record<string, number> = existsSync(timesFile) ? JSON.parse(readFileSync(timesFile, 'utf8')) : {};

  const config = {
    model: { path: modelSft, threads: options.threads ?? 0 },
    data: { world, trainSplit: 'train', evalSplit: 'test' },
    rollout: {
      mode: 'matpo', groupSize: s.rl.groupSize, questionsPerStep: s.rl.questionsPerStep, temperature: 1,
      maxTurns: s.rl.maxTurns, maxNewTokens: s.rl.maxNewTokens, maxSequenceTokens: s.rl.maxSequenceTokens,
      workerSummaryTokens: s.rl.workerSummaryTokens, concurrency: 32,
    },
    rl: { estimator: 'grpo', credit: 'matpo', loss: { name: 'ppo', clipLow: 0.2, clipHigh: 0.2, dualClip: 3, aggregation: 'token-mean' } },
    optim: { learningRate: s.rl.learningRate, maxGradNorm: 1, microBatchTokens: s.rl.microBatchTokens },
    run: {
      name: runName, dir: out, seed: s.seed, steps: s.rl.steps, evalEvery: s.rl.steps, evalQuestions: s.rl.evalQuestions,
      checkpointEvery: Math.max(1, Math.floor(s.rl.steps / 4)), keepCheckpoints: 2, progress: options.progress !== false,
    },
  };
  const configFile = join(out, 'matpo.yaml');

  const phases: Phase[] = [
    {
      name: 'world', done: join(world, '.done'),
      run: async () => {
        rmSync(world, { recursive: true, force: true });
        await runCommand('world', [
          '--seed', String(s.seed), '--out', world, '--entities', String(s.world.entities), '--questions', String(s.world.questions),
          '--noise', String(s.world.noise), '--vocab-size', String(s.world.vocabSize), '--demos', 'matpo',
          '--demo-questions', String(s.world.demoQuestions), '--demo-error-rate', String(s.world.demoErrorRate),
        ]);
      },
    },
    {
      name: 'init-model', done: join(modelInit, '.done'),
      run: async () => {
        rmSync(modelInit, { recursive: true, force: true });
        await runCommand('init-model', ['--config', s.model.preset, '--tokenizer', join(world, 'tokenizer'), '--out', modelInit, '--seed', String(s.seed)]);
      },
    },
    {
      name: 'sft', done: join(modelSft, '.done'),
      run: async () => {
        rmSync(modelSft, { recursive: true, force: true });
        await runCommand('sft', [
          '--model', modelInit, '--data', join(world, 'demos-matpo.jsonl'), '--out', modelSft, '--epochs', String(s.sft.epochs),
          '--lr', String(s.sft.lr), '--batch-tokens', String(s.sft.batchTokens),
          '--seed', String(s.seed), ...threads, ...noProgress,
        ]);
      },
    },
    {
      name: 'train', done: join(runDir, '.done'),
      run: async () => {
        if (existsSync(join(runDir, 'checkpoints', 'latest'))) {
          await runCommand('train', ['--resume', runDir]);
        } else {
          rmSync(runDir, { recursive: true, force: true });
          writeFileSync(configFile, YAML.stringify(config));
          await runCommand('train', ['--config', configFile]);
        }
      },
    },
  ];

  for (const phase of phases) {
    if (existsSync(phase.done)) {
      console.log(`demo: ${phase.name} already done (${phase.done}), skipping`);
      continue;
    }
    console.log(`\n== demo: ${phase.name}`);
    const t0 = performance.now();
    await phase.run();
    phaseSeconds[phase.name] = (phaseSeconds[phase.name] ?? 0) + (performance.now() - t0) / 1000;
    writeFileSync(timesFile, JSON.stringify(phaseSeconds));
    writeFileSync(phase.done, new Date().toISOString() + '\n');
  }

  // Held-out accuracy before (step 0) and after (last step) training, from the run's eval records.
  const metrics = readMetrics(runPaths(runDir));
  const evals = metrics.filter((m) => typeof m['eval/accuracy'] === 'number');
  const pick = (m: Record<string, unknown> | undefined) =>
    m ? {
      accuracy: Number(m['eval/accuracy']), stderr: Number(m['eval/accuracy_se'] ?? NaN),
      format: Number(m['eval/format_planner'] ?? NaN), workers: Number(m['eval/workers_per_rollout'] ?? NaN),
    } : null;
  const before = pick(evals.find((m) => m.step === 0));
  const lastStep = Math.max(0, ...evals.map((m) => Number(m.step)));
  const after = lastStep > 0 ? pick(evals.filter((m) => m.step === lastStep).at(-1)) : null;
  return { out, runDir, before, after, steps: lastStep, phaseSeconds };
}

export function formatDemoSummary(r: DemoSummary): string {
  const pct = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '—' : `${(100 * x).toFixed(1)}%`);
  const num = (x: number | undefined, d = 2) => (x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(d));
  const rows = [
    ['', 'before RL (warm-started)', `after ${r.steps} MATPO steps`],
    ['held-out accuracy', `${pct(r.before?.accuracy)} ± ${pct(r.before?.stderr)}`, `${pct(r.after?.accuracy)} ± ${pct(r.after?.stderr)}`],
    ['planner format score', num(r.before?.format), num(r.after?.format)],
    ['workers per rollout', num(r.before?.workers), num(r.after?.workers)],
  ];
  const w = [0, 1, 2].map((c) => Math.max(...rows.map((row) => row[c].length)));
  const line = (row: string[]) => `| ${row.map((cell, c) => cell.padEnd(w[c])).join(' | ')} |`;
  const table = [line(rows[0]), `|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
  const total = Object.values(r.phaseSeconds).reduce((a, b) => a + b, 0);
  const phases = Object.entries(r.phaseSeconds).map(([k, v]) => `${k} ${v.toFixed(0)} s`).join(', ');
  return [
    table,
    '',
    `wall time ${(total / 60).toFixed(1)} min (${phases})`,
    `run directory: ${r.runDir}`,
    `dashboard:     npx matpo view ${r.runDir}`,
  ].join('\n');
}

export const command: Command = {
  name: 'demo',
  summary:
    'Generate an offline research world, warm-start a tiny model on expert planner–worker demonstrations, train it with MATPO, ' +
    'and compare held-out accuracy before and after. Re-running continues an interrupted demo.',
  usage: 'demo [--out runs/demo] [--seed 1] [--steps N] [--threads N] [--quick] [--no-progress]',
  async run(argv) {
    const { values } = parseFlags(argv, {
      out: { type: 'string' }, seed: { type: 'string' }, steps: { type: 'string' }, threads: { type: 'string' },
      quick: { type: 'boolean' }, 'no-progress': { type: 'boolean' },
    });
    const base = values.quick ? DEMO_QUICK : DEMO_DEFAULTS;
    const settings: DemoSettings = structuredClone(base);
    settings.seed = intFlag(values, 'seed', base.seed);
    settings.rl.steps = intFlag(values, 'steps', base.rl.steps);
    const threads = intFlag(values, 'threads', 0);
    const out = values.out ?? join('runs', values.quick ? 'demo-quick' : 'demo');
    const summary = await runDemo(out, settings, { progress: !values['no-progress'], threads: threads || undefined });
    writeFileSync(join(summary.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
    console.log(`\n== demo: summary\n${formatDemoSummary(summary)}`);
  },
};
