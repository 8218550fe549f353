/**
 * The run configuration's jobs as plain function calls, for every command, the demo and experiment
 * recipes and the library: supervised warm-start (`sft:`), RL training (`rl:`, resumable) and
 * held-out evaluation, each built by `buildRun` from one config (src/train/config.ts).
 */
import { appendFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../core/errors.ts';
import type { Rollout } from '../core/records.ts';
import type { Question } from '../core/question.ts';
import { renderConversation } from '../agents/renderer.ts';
import { evalTemperature, rewardWeights, type TrainConfig } from './config.ts';
import { evaluate, type EvalResult } from './evaluate.ts';
import { Progress } from './progress.ts';
import { trainRl, type RlRunResult } from './rl-loop.ts';
import { readTranscripts, trainSft, type SftResult } from './sft.ts';
import {
  buildRun,
  configLora,
  loadEmbeddedPolicy,
  openSamplingPolicy,
  policyLoader,
  rolloutRunnerFactory,
  worldQuestions,
} from './wiring.ts';
import { interleave, unseenWorlds } from '../envs/world-set.ts';
import { worldSearchTools } from '../envs/world-tools.ts';
import type { World } from '../envs/world/world.ts';

function modelMaxPositions(dir: string): number {
  try {
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { max_position_embeddings?: number };
    return Number.isInteger(cfg.max_position_embeddings) ? cfg.max_position_embeddings! : 0;
  } catch {
    return 0; // the policy's own load reports a bad model directory
  }
}

/**
 * Warm-start `config.model.path` on `config.sft.data`, writing the model to `config.sft.out`; with
 * `model.loraRank` > 0 a LoRA adapter trains on the frozen model and sft.out gets the PEFT adapter.
 */
export async function runSft(config: TrainConfig, log?: (line: string) => void): Promise<SftResult> {
  const o = config.sft;
  if (!config.model.path) throw new ConfigError({ path: '--model', message: 'is required (a model directory)' });
  if (!o.data) throw new ConfigError({ path: '--data', message: 'is required (chat transcripts, JSONL)' });
  if (!o.out) throw new ConfigError({ path: '--out', message: 'is required (where the trained model is written)' });
  const transcripts = readTranscripts(o.data);
  const lora = configLora(config);
  const policy = await loadEmbeddedPolicy(config.model.path, config.model.threads, 'model.path', lora);
  try {
    const tokenizer = await policy.tokenizer();
    mkdirSync(o.out, { recursive: true });
    const metricsFile = join(o.out, 'sft-metrics.jsonl');
    rmSync(metricsFile, { force: true });
    const t0 = performance.now();
    const result = await trainSft(policy, tokenizer, transcripts, renderConversation, {
      epochs: o.epochs,
      learningRate: o.learningRate,
      schedule: o.schedule,
      warmupFraction: o.warmupFraction,
      otherTokenWeight: o.otherTokenWeight,
      batchTokens: o.batchTokens,
      microBatchTokens: o.microBatchTokens,
      evalFraction: o.evalFraction,
      seed: config.run.seed,
      maxGradNorm: o.maxGradNorm,
      // transcripts longer than the model's context are dropped
      maxTokens: o.maxTokens > 0 ? o.maxTokens : modelMaxPositions(config.model.path),
      maxSteps: o.maxSteps,
      targetHeldOutLoss: o.targetHeldOutLoss,
      maxCycles: o.maxCycles,
      progress: config.run.progress,
      ...(log ? { log } : {}),
      onStep: (m) =>
        appendFileSync(
          metricsFile,
          JSON.stringify({
            step: m.step,
            time: new Date().toISOString(),
            'sft/loss': m.loss,
            'sft/lr': m.learningRate,
            'train/grad_norm': m.gradNorm,
            'sft/tokens': m.tokens,
            'sft/epoch': m.epoch,
          }) + '\n',
        ),
    });
    await policy.save(o.out); // the model layer writes each file atomically
    const last = result.heldOutLoss[result.heldOutLoss.length - 1];
    appendFileSync(
      metricsFile,
      JSON.stringify({
        step: result.steps,
        time: new Date().toISOString(),
        'sft/held_out_loss_before': result.heldOutLoss[0] ?? null,
        'sft/held_out_loss_after': last ?? null,
      }) + '\n',
    );
    const s = (performance.now() - t0) / 1000;
    const print = log ?? console.log;
    print(
      `sft: ${result.trainExamples} training / ${result.heldOutExamples} held-out transcripts, ` +
        `${result.steps} steps${result.cycles > 1 ? ` in ${result.cycles} cycles` : ''} (${result.skipped} skipped), ${s.toFixed(1)} s`,
    );
    if (result.heldOutLoss.length) print(`held-out loss per assistant token: ${result.heldOutLoss.map((x) => x.toFixed(4)).join(' → ')}`);
    const c = lora?.config;
    print(c ? `LoRA adapter (r=${c.rank}, alpha=${c.alpha}, PEFT layout) written to ${o.out}` : `model written to ${o.out}`);
    return result;
  } finally {
    await policy.close();
  }
}

export interface EvaluationResult extends EvalResult {
  seconds: number;
  policyName: string;
}

/** One labelled evaluation of `runEvaluations`. */
export interface LabelledEvaluation {
  /** What the accuracy measures: same-world held-out, unseen worlds (with their seeds), or a dataset. */
  label: string;
  kind: 'same-world' | 'unseen' | 'dataset';
  /** World seeds of the questions (none for a dataset). */
  seeds: number[];
  /** Where the rollouts were written, if anywhere. */
  out?: string;
  result: EvaluationResult;
}

/**
 * Held-out evaluation next to unseen-world evaluation, each labelled: the config's held-out questions
 * (a world's eval split, or the whole dataset; `run.evalQuestions` of them, 0 = all), then the unseen
 * worlds' — a world set's own (world-set.json), or for a single world the worlds generated from
 * `unseenSeeds` with its knobs (every question a test question).
 * `out` names the first evaluation's records; the unseen worlds' go to the same name with `.unseen.jsonl`.
 */
export async function runEvaluations(
  config: TrainConfig,
  options: { out?: string; unseenSeeds?: number[] } = {},
): Promise<LabelledEvaluation[]> {
  if (!config.data.world && !config.data.dataset) throw new ConfigError({ path: '--world', message: 'give --world DIR or --dataset FILE' });
  const built = await buildRun(config);
  let policy;
  try {
    policy = await openSamplingPolicy(config.model);
  } catch (err) {
    await built.close();
    throw err;
  }
  try {
    const jobs: {
      label: string;
      kind: LabelledEvaluation['kind'];
      seeds: number[];
      questions: Question[];
      runner: ReturnType<typeof built.makeRunner>;
      suffix: string;
    }[] = [];
    const worlds: World[] = built.world === null ? [] : Array.isArray(built.world) ? built.world : [built.world];
    if (built.unseen && options.unseenSeeds?.length)
      throw new ConfigError({ path: '--unseen-seeds', message: 'a world set brings its own unseen worlds (see its world-set.json)' });
    const runner = built.makeRunner(policy);
    if (!config.data.world) {
      jobs.push({
        label: `dataset ${config.data.dataset}`,
        kind: 'dataset',
        seeds: [],
        questions: [...built.eval, ...built.train],
        runner,
        suffix: '',
      });
    } else {
      const trainSeeds = built.unseen
        ? worlds.map((w) => w.options.seed).filter((x) => !built.unseen!.seeds.includes(x))
        : [worlds[0].options.seed];
      const what = built.unseen
        ? `${config.data.evalSplit} split of training seed${trainSeeds.length > 1 ? 's' : ''} ${trainSeeds.join(', ')}`
        : `world seed ${trainSeeds[0]}, ${config.data.evalSplit} split`;
      jobs.push({
        label: `same-world held-out (${what})`,
        kind: 'same-world',
        seeds: trainSeeds,
        questions: built.eval,
        runner,
        suffix: '',
      });
      if (built.unseen) {
        jobs.push({
          label: `unseen worlds (seeds ${built.unseen.seeds.join(', ')}; used by no training)`,
          kind: 'unseen',
          seeds: built.unseen.seeds,
          questions: built.unseen.questions,
          runner,
          suffix: '.unseen',
        });
      } else if (options.unseenSeeds?.length) {
        const own = worlds[0];
        if (options.unseenSeeds.includes(own.options.seed))
          throw new ConfigError({ path: '--unseen-seeds', message: `seed ${own.options.seed} is the evaluated world's own` });
        const extra = unseenWorlds(own.options, options.unseenSeeds);
        const byWorld = new Map([own, ...extra].map((w) => [w.options.seed, worldSearchTools(w).tools]));
        jobs.push({
          label: `unseen worlds (seeds ${options.unseenSeeds.join(', ')}, generated with world ${own.options.seed}'s knobs)`,
          kind: 'unseen',
          seeds: options.unseenSeeds,
          questions: interleave(extra.map((w) => worldQuestions(w, 'test'))),
          runner: rolloutRunnerFactory(config, built.otherTools, byWorld)(policy),
          suffix: '.unseen',
        });
      }
    }
    const out: LabelledEvaluation[] = [];
    for (const job of jobs) {
      const questions = config.run.evalQuestions > 0 ? job.questions.slice(0, config.run.evalQuestions) : job.questions;
      if (questions.length === 0) throw new ConfigError({ path: '--questions', message: `no questions to run (${job.label})` });
      const progress = new Progress(config.run.progress);
      const bar = progress.bar(job.kind === 'unseen' ? 'eval unseen' : 'eval', questions.length * config.run.evalRepeats);
      const t0 = performance.now();
      const r = await evaluate({
        runner: job.runner,
        questions,
        repeats: config.run.evalRepeats,
        mode: config.rollout.mode,
        seed: `${config.run.seed}/eval-cli`,
        temperature: evalTemperature(config),
        scorer: built.scorer,
        weights: rewardWeights(config),
        concurrency: config.rollout.concurrency,
        onRollout: (d) => bar.update(d),
      });
      bar.stop();
      progress.stop();
      const file = options.out && job.suffix ? options.out.replace(/(\.jsonl)?$/, `${job.suffix}.jsonl`) : options.out;
      if (file) writeFileSync(file, r.rollouts.map((x: Rollout) => JSON.stringify(x)).join('\n') + '\n');
      out.push({
        label: job.label,
        kind: job.kind,
        seeds: job.seeds,
        ...(file ? { out: file } : {}),
        result: { ...r, seconds: (performance.now() - t0) / 1000, policyName: policy.name },
      });
    }
    return out;
  } finally {
    await policy.close();
    await built.close();
  }
}

/**
 * RL training of the config's model in `runDir` (fresh, or `resume` from its newest checkpoint).
 * `stop.requested` ends the run after the step in flight, with a checkpoint.
 */
export async function runTraining(
  config: TrainConfig,
  options: { runDir: string; resume: boolean; stop?: { requested: boolean } },
): Promise<RlRunResult> {
  const built = await buildRun(config);
  try {
    return await trainRl(
      config,
      {
        loadPolicy: policyLoader(config),
        makeRunner: built.makeRunner,
        trainQuestions: built.train,
        evalQuestions: built.eval,
        ...(built.unseen ? { unseenQuestions: built.unseen.questions } : {}),
        scorer: built.scorer,
      },
      { runDir: options.runDir, resume: options.resume, ...(options.stop ? { stop: options.stop } : {}) },
    );
  } finally {
    await built.close();
  }
}
