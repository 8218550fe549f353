/**
 * Connects the training loops to the real components: policies (the embedded engine, or an
 * OpenAI-compatible endpoint for sampling only), question sources (an offline world's split or a
 * QA dataset file) and answer scorers. Components that a build may lack are imported lazily, so a
 * missing one is a one-line error when it is asked for, not a crash at start-up.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, MatpoError } from '../core/errors.ts';
import { loadWorld, type World } from '../envs/world/world.ts';
import { OpenAIPolicy } from '../policy/openai.ts';
import { EmbeddedPolicy } from '../policy/embedded.ts';
import type { SamplingPolicy, TrainablePolicy } from '../core/policy.ts';
import { RolloutEngine, type RolloutOptions } from '../agents/rollout.ts';
import { worldSearchTools } from '../envs/world-tools.ts';
import type { TrainConfig } from './config.ts';
import type { Question, RolloutRunner } from '../core/question.ts';

async function importOptional<T>(spec: string, what: string): Promise<T> {
  try {
    return (await import(spec)) as T;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && String((err as Error).message).includes(spec.replace(/^\.\.\//, '')))
      throw new MatpoError('unavailable', `${what} is not available in this build (${spec})`);
    throw err;
  }
}

/** Open a model directory with the embedded engine (trainable). */
export async function loadEmbeddedPolicy(dir: string, threads = 0): Promise<TrainablePolicy> {
  if (!dir) throw new ConfigError({ path: 'model.path', message: 'is required (a model directory)' });
  if (!existsSync(join(dir, 'config.json'))) throw new ConfigError({ path: 'model.path', message: `${dir} is not a model directory (no config.json)` });
  return EmbeddedPolicy.load(dir, threads > 0 ? { threads } : {});
}

/**
 * Refuse a rollout context larger than the model's: sequences would fail in the middle of a run.
 * (Reads max_position_embeddings from the model directory's config.json when there is one.)
 */
export function checkModelContext(config: TrainConfig): void {
  const file = join(config.model.path, 'config.json');
  if (config.model.kind !== 'embedded' || !existsSync(file)) return;
  let max: unknown;
  try {
    max = (JSON.parse(readFileSync(file, 'utf8')) as { max_position_embeddings?: unknown }).max_position_embeddings;
  } catch {
    return; // the policy's own loader reports a malformed config.json
  }
  if (typeof max === 'number' && config.rollout.maxSequenceTokens > max)
    throw new ConfigError({ path: 'rollout.maxSequenceTokens', message: `${config.rollout.maxSequenceTokens} exceeds the model's context (max_position_embeddings ${max} in ${file})` });
}

/** The sampling policy for evaluation: embedded (model.path) or an OpenAI-compatible endpoint. */
export async function openSamplingPolicy(model: TrainConfig['model']): Promise<SamplingPolicy> {
  if (model.kind === 'endpoint') {
    if (!model.endpoint) throw new ConfigError({ path: 'model.endpoint', message: 'is required when model.kind is endpoint' });
    return new OpenAIPolicy({ baseUrl: model.endpoint, model: model.served || 'default', tokenizerDir: model.path || undefined });
  }
  return loadEmbeddedPolicy(model.path, model.threads);
}

export function worldQuestions(world: World, split: string): Question[] {
  if (split !== 'train' && split !== 'test') throw new ConfigError({ path: 'data.split', message: `a world has splits "train" and "test", not "${split}"` });
  return world.questions.filter((q) => q.split === split).map((q) => ({ id: q.id, question: q.question, answers: q.answers }));
}

interface DatasetsModule {
  loadQaDataset(file: string, options?: { preset?: string }): Promise<{ id: string; question: string; answers: string[] }[]>;
}

/** Questions of a QA dataset file (JSONL/JSON/CSV/TSV/Parquet; see envs/datasets.ts). */
export async function datasetQuestions(file: string, preset?: string): Promise<Question[]> {
  const mod = await importOptional<DatasetsModule>('../envs/datasets.ts', 'the QA dataset loader');
  return (await mod.loadQaDataset(file, preset ? { preset } : {})).map((r) => ({ id: r.id, question: r.question, answers: r.answers }));
}

/** Training and held-out questions for a config (a world, or a dataset split 90/10 by position). */
export async function configQuestions(config: TrainConfig): Promise<{ train: Question[]; eval: Question[]; world: World | null }> {
  if (config.data.world) {
    const world = loadWorld(config.data.world);
    return { train: worldQuestions(world, config.data.trainSplit), eval: worldQuestions(world, config.data.evalSplit), world };
  }
  if (config.data.dataset) {
    const all = await datasetQuestions(config.data.dataset);
    const nEval = Math.max(1, Math.round(all.length * 0.1));
    return { train: all.slice(nEval), eval: all.slice(0, nEval), world: null };
  }
  throw new ConfigError({ path: 'data', message: 'set data.world (a world directory) or data.dataset (a QA file)' });
}

/** The agents layer's rollout options from a config. */
export function rolloutOptions(config: TrainConfig): RolloutOptions {
  const r = config.rollout;
  return {
    limits: {
      maxTurns: r.maxTurns,
      maxNewTokens: r.maxNewTokens,
      summaryMaxNewTokens: r.workerSummaryTokens,
      maxContextTokens: r.maxSequenceTokens,
      overflow: r.overflow,
      maxWorkers: r.maxWorkers,
      toolMaxChars: r.toolResultChars,
      maxRolloutTokens: r.maxRolloutTokens,
    },
    format: r.toolCallFormat,
    workerResultRole: r.workerResultRole,
    temperature: r.temperature,
    topP: r.topP,
  };
}

/**
 * A factory of rollout runners for a config: binds the agents layer's rollout engine (planner–worker
 * or single-agent) with the world's search tools (built once) to a policy.
 */
export async function rolloutRunnerFactory(config: TrainConfig, world: World | null): Promise<(policy: SamplingPolicy) => RolloutRunner> {
  // planners need workers with tools; without a world there are no offline tools to give them
  if (config.rollout.mode === 'matpo' && !world) throw new ConfigError({ path: 'data.world', message: 'planner–worker rollouts need tools: set data.world (an offline world), or use rollout.mode single' });
  const tools = world ? worldSearchTools(world).tools : [];
  const options = rolloutOptions(config);
  return (policy) => {
    const engine = RolloutEngine.create(policy, tools, options);
    return async (request) => (await engine).run(request);
  };
}
