/**
 * The end-to-end pipeline behind `matpo demo` and `matpo experiment`, on one CPU machine:
 *
 *   world phase   generate a world set (src/envs/world-set.ts): the training worlds (one, or many
 *                 from fresh seeds), one tokenizer across them, the scripted expert's demonstrations
 *                 (planner–worker and/or single-agent) through the real rollout engine, optional
 *                 reading exercises, and unseen worlds from seeds no training uses  → <dir>/world/
 *   mode phases   for one mode (matpo | single): create a tiny model with the world tokenizer,
 *                 warm-start it on that mode's transcripts, then train it with RL (MATPO credit
 *                 assignment for planner–worker rollouts, plain GRPO for the single agent),
 *                 evaluating before and after on the training worlds' held-out questions (same-world)
 *                 and on the unseen worlds                                       → <dir>/<mode>/
 *
 * Seeds: one training world is seed S itself; K > 1 training worlds are seeds 100·S+1 … 100·S+K;
 * the unseen worlds are 100·S+99, 100·S+98, … (`worldSeeds`). They are recorded in
 * <dir>/world/world-set.json and in the summary.
 *
 * Each phase calls the same function the matching command calls (writeWorldDir, initModelDir,
 * runSft, runTraining, runEvaluations) with one typed run configuration, and leaves a marker file
 * when it completes, so running again after a kill continues where it stopped (training resumes
 * from its last checkpoint).
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { configToYaml, loadConfig, parseConfig, rolloutOptions, type TrainConfigInput } from '../train/config.ts';
import { runEvaluations, runSft, runTraining } from '../train/run-config.ts';
import { initModelDir } from '../model/init.ts';
import { writeWorldSetDir } from '../envs/world-dir.ts';
import { groundingStats } from '../rl/grounding.ts';
import { ConfigError } from '../core/errors.ts';
import type { WorldOptions } from '../envs/world/world.ts';
import { parseStepName, readMetrics, runPaths, stepName } from '../train/run-dir.ts';
import { findLatestCheckpoint } from '../train/checkpoint.ts';
import { loadModelDir } from '../model/checkpoint.ts';
import { MatpoError } from '../core/errors.ts';
import { readRolloutsJsonl } from '../agents/rollout.ts';
import type { Rollout } from '../core/records.ts';
import { mean, standardError } from '../util/stats.ts';

export type Mode = 'matpo' | 'single';

export interface PipelineSettings {
  seed: number;
  world: {
    entities: number;
    questions: number;
    demoQuestions: number;
    vocabSize: number;
    demoErrorRate: number;
    /** Fraction of questions the expert planner (or single agent) answers from memory, wrongly, in the demonstrations. */
    demoGuessRate: number;
    /** ... among questions of at most this many hops. */
    demoGuessMaxHops: number;
    /** Fewest and most hops of a question. */
    hops: [number, number];
    noise: number;
    distractors: number;
    docLength: WorldOptions['docLength'];
  };
  model: { preset: string };
  /**
   * Training worlds and unseen (evaluation-only) worlds. Default: one training world, two unseen.
   * With K > 1 training worlds, `world.questions` and `world.demoQuestions` are totals, split evenly.
   */
  worlds?: { train: number; unseen: number };
  /**
   * A reading curriculum before the warm-start, on reading worlds of its own (seeds no question,
   * demonstration or evaluation uses; src/envs/reading-data.ts): `copySteps` optimizer steps of copy
   * drills, then `sessionSteps` of reading sessions (questions answered from a page or a result list).
   * When the drills end with a held-out loss above `copyTargetLoss`, another cycle of `copySteps`
   * runs, up to `copyMaxCycles` in all: copying either forms or the model never reads, and how many
   * steps it takes depends on the worlds. None when null or absent.
   */
  reading?: {
    worlds: number;
    copySteps: number;
    copyTargetLoss?: number;
    copyMaxCycles?: number;
    sessionSteps: number;
    batchTokens: number;
    lr: number;
    otherTokenWeight: number;
  } | null;
  /**
   * Warm-start: epochs (or at most `maxSteps` optimizer steps, 0 = no limit), peak learning rate
   * (cosine decay), optimizer batch and the loss weight of non-assistant tokens.
   */
  sft: { epochs: number; lr: number; batchTokens: number; otherTokenWeight: number; maxSteps?: number };
  rl: {
    steps: number;
    groupSize: number;
    questionsPerStep: number;
    learningRate: number;
    evalQuestions: number;
    evalTemperature: number;
    /** Sampling temperature of the training rollouts. */
    temperature: number;
    maxTurns: number;
    maxNewTokens: number;
    maxSequenceTokens: number;
    workerSummaryTokens: number;
    microBatchTokens: number;
    overflow: 'drop-middle' | 'stop';
    /** Tokens sampled per rollout (planner and workers together, or the single agent); null = no limit. */
    maxRolloutTokens: number | null;
    /** Evaluate (same-world and unseen) every this many RL steps; default: only before and after. */
    evalEvery?: number;
    /** Advantage estimator (rl.estimator). */
    estimator: 'grpo' | 'dr-grpo' | 'rloo';
    /**
     * Keep the paper's format terms in the reward. Off, the reward is accuracy alone: when a small
     * model rarely succeeds, most groups differ only by format, which favours not delegating (no
     * workers, no malformed calls). See docs/matpo.md, "Rewards".
     */
    formatReward: boolean;
    /** DAPO: drop groups whose rewards are all equal (they carry no signal, only dilute the batch). */
    dropZeroVarianceGroups: boolean;
  };
}

/**
 * Defaults of `matpo demo`: training that cannot be memorised, within about 20 minutes on two cores.
 * Twelve training worlds (125 questions each, 100 of them demonstrated by an expert that makes no
 * planted mistakes), a reading curriculum on twenty-four reading worlds of its own (copy drills, then
 * reading sessions), a warm-start on the demonstrations, and 12 MATPO steps; evaluated on two
 * unseen worlds and on the training worlds' test splits. Small optimizer batches (1,024 tokens):
 * copying from the context emerged with the number of updates, not of tokens. Every choice and the
 * runs behind it: docs/research-recipe.md.
 */
export const DEMO_DEFAULTS: PipelineSettings = {
  seed: 1,
  world: {
    entities: 300,
    questions: 1500,
    demoQuestions: 1200,
    vocabSize: 2048,
    demoErrorRate: 0,
    demoGuessRate: 0,
    demoGuessMaxHops: 1,
    hops: [1, 2],
    noise: 0,
    distractors: 0.2,
    docLength: 'short',
  },
  model: { preset: 'tiny' },
  worlds: { train: 12, unseen: 2 },
  reading: {
    worlds: 24,
    copySteps: 800,
    copyTargetLoss: 0.2,
    copyMaxCycles: 3,
    sessionSteps: 1000,
    batchTokens: 1024,
    lr: 2e-3,
    otherTokenWeight: 0.1,
  },
  sft: { epochs: 2, lr: 2e-3, batchTokens: 1024, otherTokenWeight: 0.1, maxSteps: 2400 },
  rl: {
    steps: 12,
    groupSize: 8,
    questionsPerStep: 8,
    learningRate: 1e-4,
    evalQuestions: 50,
    evalTemperature: 0,
    temperature: 0.6,
    maxTurns: 6,
    maxNewTokens: 96,
    maxSequenceTokens: 2048,
    workerSummaryTokens: 128,
    microBatchTokens: 8192,
    overflow: 'stop',
    maxRolloutTokens: null,
    estimator: 'grpo',
    formatReward: false,
    dropZeroVarianceGroups: true,
  },
};

/**
 * `matpo demo --recipe long`: the demo's recipe with twice its training worlds and demonstrations
 * (24 worlds, 2,400 demonstrated questions), twice its warm-start steps and twice its MATPO steps,
 * with evaluations every 6 steps. The unseen worlds are the demo's own (seeds 199 and 198), so the
 * two recipes' figures compare directly. More warm-start steps were still helping when the demo's
 * budget ran out (docs/research-recipe.md, R11 → R13).
 */
export const LONG: PipelineSettings = {
  ...DEMO_DEFAULTS,
  world: { ...DEMO_DEFAULTS.world, questions: 3000, demoQuestions: 2400 },
  worlds: { train: 24, unseen: 2 },
  sft: { ...DEMO_DEFAULTS.sft, maxSteps: 4800 },
  rl: { ...DEMO_DEFAULTS.rl, steps: 24, evalEvery: 6 },
};

/**
 * `matpo demo --recipe one-world`: the demo before it trained on many worlds. One world, 1,200
 * questions demonstrated, 70 % of the one-hop ones answered "from memory" (a planted habit for RL to
 * remove), two warm-start epochs in 4,096-token batches. Same-world held-out accuracy reaches 26 %
 * after MATPO, unseen worlds 2 %: the model memorises its world and does not read.
 */
export const ONE_WORLD: PipelineSettings = {
  ...DEMO_DEFAULTS,
  world: { ...DEMO_DEFAULTS.world, demoErrorRate: 0.1, demoGuessRate: 0.7 },
  worlds: { train: 1, unseen: 2 },
  reading: null,
  sft: { epochs: 2, lr: 2e-3, batchTokens: 4096, otherTokenWeight: 0.3 },
};

/** A smoke-sized version of the same pipeline (tests, `--quick`). */
/**
 * `--quick`: a smoke run of every phase in about a minute. A mini model warm-started for one epoch
 * on 40 demonstrations does not answer yet, so accuracy stays at zero; the format terms stay in the
 * reward so that groups differ (a malformed or overflowing call against a clean one) and the two RL
 * steps make real updates (the summary prints how far they moved the weights).
 */
export const QUICK: PipelineSettings = {
  seed: 1,
  world: {
    entities: 60,
    questions: 120,
    demoQuestions: 40,
    vocabSize: 600,
    demoErrorRate: 0.1,
    demoGuessRate: 0,
    demoGuessMaxHops: 4,
    hops: [1, 4],
    noise: 0,
    distractors: 0.2,
    docLength: 'short',
  },
  model: { preset: 'mini' },
  // a target no 4 steps reach, so the smoke run goes through the copy drills' second cycle too
  reading: {
    worlds: 1,
    copySteps: 4,
    copyTargetLoss: 1e-6,
    copyMaxCycles: 2,
    sessionSteps: 4,
    batchTokens: 1024,
    lr: 3e-3,
    otherTokenWeight: 0.1,
  },
  sft: { epochs: 1, lr: 3e-3, batchTokens: 4096, otherTokenWeight: 1 },
  rl: {
    steps: 2,
    evalEvery: 1,
    groupSize: 8,
    questionsPerStep: 2,
    learningRate: 1e-4,
    evalQuestions: 4,
    evalTemperature: 0,
    temperature: 1,
    maxTurns: 3,
    maxNewTokens: 48,
    maxSequenceTokens: 768,
    workerSummaryTokens: 24,
    microBatchTokens: 2048,
    overflow: 'stop',
    maxRolloutTokens: 256,
    estimator: 'grpo',
    formatReward: true,
    dropZeroVarianceGroups: false,
  },
};

/**
 * Defaults of `matpo experiment`: the demo's world made noisy (misleading search hits, more
 * distractor documents) under a context limit, where a single agent's context fills with tool
 * output — the setting MATPO's planner–worker split is meant for.
 */
// Why each value: docs/results.md, "Why the experiment's settings are what they are".
export const EXPERIMENT_DEFAULTS: PipelineSettings = {
  ...ONE_WORLD,
  world: { ...ONE_WORLD.world, demoGuessRate: 0, demoGuessMaxHops: 2, noise: 0.3, distractors: 0.5 },
  rl: {
    ...ONE_WORLD.rl,
    steps: 10,
    questionsPerStep: 4,
    learningRate: 3e-5,
    temperature: 1,
    maxSequenceTokens: 1024,
    maxRolloutTokens: 512,
  },
};

/**
 * `matpo experiment --recipe reading`: MATPO against single-agent GRPO with the demo's recipe (twelve
 * training worlds, the reading curriculum, 2,400 warm-start steps, each mode on its own expert's
 * transcripts of the same questions), the experiment's noisy search and context limits, the demo's
 * RL phase (the one measured to move unseen-world accuracy: 12 steps of 8 questions × 8 rollouts,
 * lr 1e-4, temperature 0.6), and evaluations every 2 RL steps for learning curves on the unseen
 * worlds. The one-world experiment's gentler RL (10 steps of 4 questions, lr 3e-5, temperature 1)
 * left both modes' curves flat on three seeds (docs/results.md).
 */
export const EXPERIMENT_READING: PipelineSettings = {
  ...DEMO_DEFAULTS,
  // On these noisier worlds 800 steps of copy drills ended at held-out loss 0.63 (the demo's reach
  // 0.09) and the agent never read; 1,600 reached 0.03 (docs/research-recipe.md, "What is left").
  reading: { ...DEMO_DEFAULTS.reading!, copySteps: 1600, copyMaxCycles: 2 },
  world: { ...DEMO_DEFAULTS.world, noise: EXPERIMENT_DEFAULTS.world.noise, distractors: EXPERIMENT_DEFAULTS.world.distractors },
  rl: {
    ...DEMO_DEFAULTS.rl,
    maxSequenceTokens: EXPERIMENT_DEFAULTS.rl.maxSequenceTokens,
    maxRolloutTokens: EXPERIMENT_DEFAULTS.rl.maxRolloutTokens,
    evalEvery: 2,
  },
};

export interface RunSummary {
  mode: Mode;
  runDir: string;
  steps: number;
  /** The freshly initialised model, before any training (same questions and settings). */
  /** Same-world held-out: the training worlds' test splits. */
  untrained: EvalSummary | null;
  before: EvalSummary | null;
  after: EvalSummary | null;
  /** Unseen worlds (seeds no training used): the same three evaluations. */
  unseenUntrained?: EvalSummary | null;
  unseenBefore?: EvalSummary | null;
  unseenAfter?: EvalSummary | null;
  /** The world seeds (training and unseen). */
  seeds?: { train: number[]; unseen: number[]; reading?: number[] };
  /** Training reward per step (the root role's mean reward). */
  rewardCurve: number[];
  /** Greedy accuracy at every evaluation step: the training worlds' test splits and the unseen worlds (null when none). */
  learningCurve?: { step: number; sameWorld: number; unseen: number | null }[];
  /** How far RL moved the weights: ‖w_final − w_warm‖ / ‖w_warm‖ (L2 over all parameters); null without both models. */
  weightChange: number | null;
  phaseSeconds: Record<string, number>;
}

export interface EvalSummary {
  accuracy: number;
  stderr: number;
  format: number;
  workersPerRollout: number;
  /** Fraction of rollouts answered without any tool call (no worker, no search). */
  noToolRate: number;
  /** Fraction of rollouts in which some sequence hit the context limit (stopped or had turns dropped). */
  overflowRate: number;
  /** Fraction of rollouts that ran out of their sampled-token budget. */
  budgetRate: number;
  /** Tokens sampled per question (planner + workers, or the single agent). */
  sampledTokens: number;
  /** Tokens in the largest context of the rollout (the longest sequence), averaged. */
  longestContext: number;
  /** Share of reports with a claim whose ids and value appear in their own tool output (rl/grounding.ts); null when none claims. */
  grounding: number | null;
}

interface Phase {
  name: string;
  done: string;
  run(): Promise<void>;
}

async function runPhases(phases: Phase[], timesFile: string, label: string): Promise<Record<string, number>> {
  const seconds: Record<string, number> = existsSync(timesFile) ? JSON.parse(readFileSync(timesFile, 'utf8')) : {};
  for (const phase of phases) {
    if (existsSync(phase.done)) {
      console.log(`${label}: ${phase.name} already done, skipping`);
      continue;
    }
    console.log(`\n== ${label}: ${phase.name}`);
    const t0 = performance.now();
    await phase.run();
    seconds[phase.name] = (seconds[phase.name] ?? 0) + (performance.now() - t0) / 1000;
    writeFileSync(timesFile, JSON.stringify(seconds));
    writeFileSync(phase.done, new Date().toISOString() + '\n');
  }
  return seconds;
}

/** The training and unseen world seeds of a pipeline run (see the top of this file). */
export function worldSeeds(s: PipelineSettings): { train: number[]; unseen: number[]; reading: number[] } {
  const { train, unseen } = s.worlds ?? { train: 1, unseen: 2 };
  if (!(Number.isInteger(train) && train >= 1 && train <= 90))
    throw new ConfigError({ path: 'worlds.train', message: `expected 1..90 training worlds, got ${train}` });
  if (!(Number.isInteger(unseen) && unseen >= 0 && unseen <= 9))
    throw new ConfigError({ path: 'worlds.unseen', message: `expected 0..9 unseen worlds, got ${unseen}` });
  const reading = s.reading?.worlds ?? 0;
  if (!(Number.isInteger(reading) && reading >= 0 && reading <= 999))
    throw new ConfigError({ path: 'reading.worlds', message: `expected 0..999 reading worlds, got ${reading}` });
  return {
    train: train === 1 ? [s.seed] : Array.from({ length: train }, (_, k) => 100 * s.seed + 1 + k),
    unseen: Array.from({ length: unseen }, (_, k) => 100 * s.seed + 99 - k),
    reading: Array.from({ length: reading }, (_, k) => 10_000 * s.seed + 5_000 + k),
  };
}

/** `a.b.c` paths of the leaves where two settings objects differ, with both values. */
function settingsDiff(had: unknown, now: unknown, path = ''): string[] {
  if (had !== null && now !== null && typeof had === 'object' && typeof now === 'object' && !Array.isArray(had) && !Array.isArray(now)) {
    const keys = [...new Set([...Object.keys(had), ...Object.keys(now)])];
    return keys.flatMap((k) =>
      settingsDiff((had as Record<string, unknown>)[k], (now as Record<string, unknown>)[k], path ? `${path}.${k}` : k),
    );
  }
  return JSON.stringify(had) === JSON.stringify(now) ? [] : [`${path}: ${JSON.stringify(had)} there, ${JSON.stringify(now)} now`];
}

/**
 * A run directory holds one recipe. Phases that are done are skipped on the next call, so resuming
 * a directory with other settings would build on phases of another recipe: refuse, and say which
 * settings differ. The first call records them in `<dir>/settings.json`.
 */
export function claimRunDir(dir: string, s: PipelineSettings): void {
  const file = join(resolve(dir), 'settings.json');
  if (existsSync(file)) {
    const diff = settingsDiff(JSON.parse(readFileSync(file, 'utf8')), JSON.parse(JSON.stringify(s)));
    if (diff.length)
      throw new ConfigError({
        path: resolve(dir),
        message:
          `holds a run made with other settings (${file}): ${diff.join('; ')}. ` +
          'Resume it with the same recipe and flags, or give another --out.',
      });
    return;
  }
  mkdirSync(resolve(dir), { recursive: true });
  writeFileSync(file, JSON.stringify(s, null, 2) + '\n');
}

/** Generate the world set, its tokenizer, the expert's demonstrations for the given modes and the unseen worlds. */
export async function worldPhase(
  dir: string,
  s: PipelineSettings,
  demos: 'matpo' | 'single' | 'both',
  label = 'demo',
): Promise<Record<string, number>> {
  const world = join(resolve(dir), 'world');
  const seeds = worldSeeds(s);
  claimRunDir(dir, s);
  const k = seeds.train.length;
  return runPhases(
    [
      {
        name: 'world',
        done: join(world, '.done'),
        run: async () => {
          const [minHops, maxHops] = s.world.hops;
          await writeWorldSetDir(
            {
              out: world,
              options: {
                entities: s.world.entities,
                questions: Math.ceil(s.world.questions / k),
                minHops,
                maxHops,
                noise: s.world.noise,
                distractors: s.world.distractors,
                docLength: s.world.docLength,
              },
              trainSeeds: seeds.train,
              unseenSeeds: seeds.unseen,
              vocabSize: s.world.vocabSize,
              demos: demos === 'both' ? ['matpo', 'single'] : [demos],
              demoQuestions: Math.ceil(s.world.demoQuestions / k),
              demoErrorRate: s.world.demoErrorRate,
              demoGuessRate: s.world.demoGuessRate,
              ...(s.world.demoGuessRate > 0 ? { demoGuessMaxHops: s.world.demoGuessMaxHops } : {}),
              readingSeeds: seeds.reading,
            },
            rolloutOptions(parseConfig({})),
          );
        },
      },
    ],
    join(resolve(dir), '.world-seconds.json'),
    label,
  );
}

/** Model init, warm-start and RL for one mode, on the world under `dir/world`. */
export async function modePhases(
  dir: string,
  s: PipelineSettings,
  mode: Mode,
  options: { progress?: boolean; threads?: number; label?: string } = {},
): Promise<RunSummary> {
  const root = resolve(dir);
  const world = join(root, 'world');
  const base = join(root, mode);
  mkdirSync(base, { recursive: true });
  const modelInit = join(base, 'model-init');
  // The reading curriculum does not depend on the mode (same init seed, same tokenizer, same
  // reading worlds), so both modes of an experiment share it: the second finds it done.
  const modelCopy = join(root, 'reading', 'model-copy');
  const modelRead = join(root, 'reading', 'model-read');
  const modelSft = join(base, 'model-sft');
  const runDir = join(base, 'run');
  const label = options.label ?? mode;
  const progress = options.progress !== false;
  // The run configuration of this mode, checked by the compiler against the schema; everything not
  // set here (the loss, the clip ranges, the rest of the rollout limits) is the schema's default.
  const input = {
    model: { path: modelSft, threads: options.threads ?? 0 },
    data: { world, trainSplit: 'train', evalSplit: 'test' },
    rollout: {
      mode,
      groupSize: s.rl.groupSize,
      questionsPerStep: s.rl.questionsPerStep,
      temperature: s.rl.temperature,
      maxTurns: s.rl.maxTurns,
      maxNewTokens: s.rl.maxNewTokens,
      maxSequenceTokens: s.rl.maxSequenceTokens,
      workerSummaryTokens: s.rl.workerSummaryTokens,
      overflow: s.rl.overflow,
      maxRolloutTokens: s.rl.maxRolloutTokens,
      concurrency: 32,
    },
    rl: {
      estimator: s.rl.estimator,
      credit: 'matpo',
      dropZeroVarianceGroups: s.rl.dropZeroVarianceGroups,
      reward: s.rl.formatReward ? {} : { formatScale: 0, formatSingle: 0 },
    },
    optim: { learningRate: s.rl.learningRate, maxGradNorm: 1, microBatchTokens: s.rl.microBatchTokens },
    sft: {
      data: join(world, `demos-${mode}.jsonl`),
      out: modelSft,
      epochs: s.sft.epochs,
      learningRate: s.sft.lr,
      batchTokens: s.sft.batchTokens,
      otherTokenWeight: s.sft.otherTokenWeight,
      maxSteps: s.sft.maxSteps ?? 0,
      evalFraction: 0.05,
    },
    run: {
      name: 'run',
      dir: base,
      seed: s.seed,
      steps: s.rl.steps,
      evalEvery: s.rl.evalEvery ?? s.rl.steps,
      evalQuestions: s.rl.evalQuestions,
      evalTemperature: s.rl.evalTemperature,
      checkpointEvery: Math.max(1, Math.floor(s.rl.steps / 4)),
      keepCheckpoints: 2,
      progress,
    },
  } satisfies TrainConfigInput;
  const config = parseConfig(input);
  const configFile = join(base, 'train.yaml');
  writeFileSync(configFile, configToYaml(config));
  const initEval = join(base, 'eval-untrained.jsonl');
  const phaseSeconds = await runPhases(
    [
      {
        name: 'init-model',
        done: join(modelInit, '.done'),
        run: async () => {
          rmSync(modelInit, { recursive: true, force: true });
          await initModelDir(modelInit, { config: s.model.preset, tokenizerDir: join(world, 'tokenizer'), seed: s.seed });
        },
      },
      {
        // The same held-out questions (same-world, then unseen worlds) and rollout settings as the training run's evaluations.
        name: 'eval-untrained',
        done: `${initEval}.done`,
        run: async () => {
          await runEvaluations({ ...config, model: { ...config.model, path: modelInit } }, { out: initEval });
        },
      },
      ...(s.reading
        ? [
            {
              name: 'copy',
              data: 'copy.jsonl',
              from: modelInit,
              out: modelCopy,
              steps: s.reading.copySteps,
              targetLoss: s.reading.copyTargetLoss ?? 0,
              maxCycles: s.reading.copyMaxCycles ?? 1,
            },
            {
              name: 'reading',
              data: 'sessions.jsonl',
              from: modelCopy,
              out: modelRead,
              steps: s.reading.sessionSteps,
              targetLoss: 0,
              maxCycles: 1,
            },
          ].map((stage) => ({
            name: stage.name,
            done: join(stage.out, '.done'),
            run: async () => {
              rmSync(stage.out, { recursive: true, force: true });
              const r = s.reading!;
              await runSft({
                ...config,
                model: { ...config.model, path: stage.from },
                sft: {
                  ...config.sft,
                  data: join(world, stage.data),
                  out: stage.out,
                  // as many passes as the step budget needs; the schedule spans the budget
                  epochs: 20,
                  maxSteps: stage.steps,
                  targetHeldOutLoss: stage.targetLoss,
                  maxCycles: stage.maxCycles,
                  evalFraction: 0.02,
                  learningRate: r.lr,
                  batchTokens: r.batchTokens,
                  otherTokenWeight: r.otherTokenWeight,
                },
              });
            },
          }))
        : []),
      {
        name: 'sft',
        done: join(modelSft, '.done'),
        run: async () => {
          rmSync(modelSft, { recursive: true, force: true });
          await runSft({ ...config, model: { ...config.model, path: s.reading ? modelRead : modelInit } });
        },
      },
      {
        name: 'train',
        done: join(runDir, '.done'),
        run: async () => {
          const resume = existsSync(join(runDir, 'checkpoints', 'latest'));
          if (!resume) rmSync(runDir, { recursive: true, force: true });
          const result = await runTraining(resume ? loadConfig(runPaths(runDir).config) : config, { runDir, resume });
          console.log(`${result.stopped ? 'stopped' : 'finished'} at step ${result.step}; run directory ${runDir}`);
        },
      },
    ],
    join(base, '.phase-seconds.json'),
    label,
  );
  const summary = summarizeRun(runDir, mode, phaseSeconds);
  summary.untrained = existsSync(initEval) ? evalSummary(readRolloutsJsonl(initEval)) : null;
  const final = findLatestCheckpoint(runPaths(runDir));
  summary.weightChange = final && existsSync(join(modelSft, 'config.json')) ? relativeWeightChange(modelSft, final.dir) : null;
  const initUnseen = initEval.replace(/\.jsonl$/, '.unseen.jsonl');
  summary.unseenUntrained = existsSync(initUnseen) ? evalSummary(readRolloutsJsonl(initUnseen)) : null;
  summary.seeds = worldSeeds(s);
  return summary;
}

/** ‖b − a‖ / ‖a‖ over all parameters of two model directories of the same architecture (float64 sums). */
export function relativeWeightChange(a: string, b: string): number {
  const wa = loadModelDir(a).weights;
  const wb = loadModelDir(b).weights;
  if (wa.length !== wb.length)
    throw new MatpoError('shape', `${a} and ${b} hold different architectures (${wa.length} vs ${wb.length} parameters)`);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < wa.length; i++) {
    diff += (wb[i] - wa[i]) ** 2;
    norm += wa[i] ** 2;
  }
  return Math.sqrt(diff) / Math.sqrt(norm);
}

/**
 * Held-out results from scored evaluation rollouts (one per question). Accuracy and its standard
 * error come from the run's metrics when given, else from the rollouts (standard error over them).
 */
export function evalSummary(rollouts: readonly Rollout[], logged?: { accuracy: number; stderr: number }): EvalSummary | null {
  if (rollouts.length === 0) return null;
  const sequences = (r: Rollout) => [r.root, ...r.workers];
  const sampled = (r: Rollout) => sequences(r).reduce((a, q) => a + q.mask.reduce((x, y) => x + y, 0), 0);
  const correct = rollouts.map((r) => r.reward?.accuracy ?? 0);
  const accuracy = mean(correct);
  return {
    accuracy: logged?.accuracy ?? accuracy,
    stderr: logged?.stderr ?? standardError(correct),
    format: mean(rollouts.map((r) => r.root.formatScore)),
    workersPerRollout: mean(rollouts.map((r) => r.workers.length)),
    noToolRate: mean(rollouts.map((r) => (r.root.turns.every((t) => t.toolCalls.length === 0) ? 1 : 0))),
    overflowRate: mean(
      rollouts.map((r) => (sequences(r).some((q) => q.outcome === 'context_overflow' || (q.droppedTurns ?? 0) > 0) ? 1 : 0)),
    ),
    budgetRate: mean(rollouts.map((r) => (sequences(r).some((q) => q.outcome === 'token_budget') ? 1 : 0))),
    sampledTokens: mean(rollouts.map(sampled)),
    longestContext: mean(rollouts.map((r) => Math.max(...sequences(r).map((q) => q.tokens.length)))),
    grounding: ((g) => (g.claiming > 0 ? g.rate : null))(groundingStats(rollouts)),
  };
}

/** Held-out results before (step 0) and after (last step) training, from a run's own records. */
export function summarizeRun(runDir: string, mode: Mode, phaseSeconds: Record<string, number> = {}): RunSummary {
  const paths = runPaths(runDir);
  const metrics = readMetrics(paths);
  const evalSteps = existsSync(paths.eval)
    ? readdirSync(paths.eval)
        .map(parseStepName)
        .filter((n): n is number => n !== null)
        .sort((a, b) => a - b)
    : [];
  // The last record at `step` that carries `key`.
  const recordAt = (step: number, key: string) => metrics.filter((x) => x.step === step && typeof x[key] === 'number').at(-1);
  const evalAt = (step: number): EvalSummary | null => {
    const file = join(paths.eval, `${stepName(step)}.jsonl`);
    const rollouts = existsSync(file) ? readRolloutsJsonl(file) : [];
    const m = recordAt(step, 'eval/accuracy');
    return evalSummary(rollouts, m ? { accuracy: Number(m['eval/accuracy']), stderr: Number(m['eval/accuracy_se']) } : undefined);
  };
  const first = evalSteps[0];
  const last = evalSteps.at(-1);
  const root = mode === 'matpo' ? 'planner' : 'single';
  const rewardCurve = metrics
    .filter((m) => typeof m[`${root}/reward`] === 'number' && Number(m.step) > 0)
    .map((m) => Number(m[`${root}/reward`]));
  const unseenAt = (step: number): EvalSummary | null => {
    const file = join(paths.root, 'eval-unseen', `${stepName(step)}.jsonl`);
    const m = recordAt(step, 'unseen/accuracy');
    return existsSync(file)
      ? evalSummary(
          readRolloutsJsonl(file),
          m ? { accuracy: Number(m['unseen/accuracy']), stderr: Number(m['unseen/accuracy_se']) } : undefined,
        )
      : null;
  };
  return {
    mode,
    runDir,
    steps: last ?? 0,
    untrained: null,
    before: first === 0 ? evalAt(0) : null,
    after: last !== undefined && last > 0 ? evalAt(last) : null,
    unseenBefore: first === 0 ? unseenAt(0) : null,
    unseenAfter: last !== undefined && last > 0 ? unseenAt(last) : null,
    rewardCurve,
    learningCurve: evalSteps.map((step) => {
      const at = (key: string) => recordAt(step, key)?.[key];
      const unseen = at('unseen/accuracy');
      return { step, sameWorld: Number(at('eval/accuracy') ?? NaN), unseen: unseen === undefined ? null : Number(unseen) };
    }),
    phaseSeconds,
    weightChange: null,
  };
}

const pct = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '—' : `${(100 * x).toFixed(1)}%`);
const fix = (x: number | undefined, d = 2) => (x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(d));

/** A Markdown table (aligned for the terminal). */
export function table(rows: string[][]): string {
  const w = rows[0].map((_, c) => Math.max(...rows.map((row) => (row[c] ?? '').length)));
  const line = (row: string[]) => `| ${row.map((cell, c) => (cell ?? '').padEnd(w[c])).join(' | ')} |`;
  return [line(rows[0]), `|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
}

export function formatRunSummary(r: RunSummary, worldSeconds: Record<string, number> = {}, s?: PipelineSettings): string {
  const cols = [r.untrained, r.before, r.after];
  const unseen = [r.unseenUntrained ?? null, r.unseenBefore ?? null, r.unseenAfter ?? null];
  const row = (label: string, f: (e: EvalSummary | null) => string, es = cols) => [label, ...es.map(f)];
  const acc = (e: EvalSummary | null) => `${pct(e?.accuracy)} ± ${pct(e?.stderr)}`;
  const seeds = r.seeds;
  // A planted habit is part of what the warm-start learned; say so where the numbers are.
  const planted =
    s && s.world.demoGuessRate > 0
      ? `* the demonstrations plant a guessing habit: ${Math.round(100 * s.world.demoGuessRate)}% of ` +
        `${s.world.demoGuessMaxHops}-hop questions answered from memory, for RL to train away`
      : '';
  const rows = [
    ['', 'untrained', `warm-started (before RL)${planted ? '*' : ''}`, `after ${r.steps} ${r.mode === 'matpo' ? 'MATPO' : 'GRPO'} steps`],
    ...(unseen.some((e) => e !== null)
      ? [
          row(`unseen-world accuracy${seeds ? ` (seeds ${seeds.unseen.join(', ')})` : ''}`, acc, unseen),
          row('unseen-world grounding of reports', (e) => pct(e?.grounding ?? undefined), unseen),
        ]
      : []),
    row(`same-world held-out accuracy${seeds ? ` (seed${seeds.train.length > 1 ? 's' : ''} ${seedList(seeds.train)})` : ''}`, acc),
    row('same-world grounding of reports', (e) => pct(e?.grounding ?? undefined)),
    row('format score', (e) => fix(e?.format)),
    row('workers per rollout', (e) => fix(e?.workersPerRollout)),
    row('answered without a tool call', (e) => pct(e?.noToolRate)),
    row('context overflow rate', (e) => pct(e?.overflowRate)),
    row('sampled tokens per question', (e) => fix(e?.sampledTokens, 0)),
  ];
  const seconds = { ...worldSeconds, ...r.phaseSeconds };
  const total = Object.values(seconds).reduce((a, b) => a + b, 0);
  const phases = Object.entries(seconds)
    .map(([k, v]) => `${k} ${v.toFixed(0)} s`)
    .join(', ');
  const curve = r.rewardCurve.length ? `training reward by step: ${r.rewardCurve.map((x) => x.toFixed(2)).join(' ')}` : '';
  const moved =
    r.weightChange === null || r.weightChange === undefined
      ? ''
      : `RL moved the weights by ${r.weightChange.toExponential(2)} of their norm (warm-started → final checkpoint)`;
  const readingLine = seeds?.reading?.length
    ? `reading curriculum on worlds ${seedList(seeds.reading)} (copy drills and reading sessions only; no question of theirs is asked)`
    : '';
  return [
    table(rows),
    planted,
    readingLine,
    '',
    curve,
    moved,
    `wall time ${(total / 60).toFixed(1)} min (${phases})`,
    `run directory: ${r.runDir}`,
    `dashboard:     npx matpo view ${r.runDir}`,
  ]
    .filter((l) => l !== '')
    .join('\n');
}

/** "101-112" for a consecutive run of seeds, else a comma list. */
export function seedList(seeds: readonly number[]): string {
  const consecutive = seeds.length > 2 && seeds.every((x, i) => i === 0 || x === seeds[i - 1] + 1);
  return consecutive ? `${seeds[0]}-${seeds.at(-1)}` : seeds.join(', ');
}
