/**
 * The one builder from a run configuration to the real components: policies (the embedded engine,
 * an OpenAI-compatible endpoint for sampling only, or a Tinker-compatible training service), question sources (an offline world's split
 * or a QA dataset file), the workers' tools (world, BM25 index, web, MCP) and the answer scorer
 * (a rule or an LLM judge). Components that a build may lack are imported lazily, so a
 * missing one is a one-line error when it is asked for, not a crash at start-up.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigError, MatpoError } from '../core/errors.ts';
import { loadWorld, type World } from '../envs/world/world.ts';
import { OpenAIPolicy } from '../policy/openai.ts';
import { EmbeddedPolicy } from '../policy/embedded.ts';
import type { PolicyLoader, SamplingPolicy, TrainablePolicy } from '../core/policy.ts';
import { CHECKPOINT_FILE, TinkerPolicy, readCheckpointRecord } from '../tinker/policy.ts';
import { RolloutEngine } from '../agents/rollout.ts';
import type { Tool } from '../tools/tool.ts';
import type { McpServerConfig } from '../tools/mcp.ts';
import { registeredScorer, type AnswerScorer } from '../rl/rewards.ts';
import { parseLoraConfig, type LoraConfig } from '../model/lora.ts';
import { ADAPTER_CONFIG_FILE } from '../model/peft.ts';
import { worldSearchTools } from '../envs/world-tools.ts';
import { isWorldSet, loadWorldSet, questionSeed, worldOfQuestion, worldSetQuestions, type WorldSetSplit } from '../envs/world-set.ts';
import { rolloutOptions, type TrainConfig } from './config.ts';
import type { Question, RolloutRunner } from '../core/question.ts';

async function importOptional<T>(spec: string, what: string): Promise<T> {
  try {
    return (await import(spec)) as T;
  } catch (err) {
    if (
      (err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' &&
      String((err as Error).message).includes(spec.replace(/^\.\.\//, ''))
    )
      throw new MatpoError('unavailable', `${what} is not available in this build (${spec})`);
    throw err;
  }
}

/**
 * Open a model directory with the embedded engine (trainable). With `lora`, the model freezes and a
 * LoRA adapter trains: a fresh one on `dir`, or, when `dir` is a PEFT adapter directory (a LoRA
 * checkpoint), that adapter on the base model `lora.base`.
 */
export async function loadEmbeddedPolicy(
  dir: string,
  threads = 0,
  field = 'model.path',
  lora?: { config: LoraConfig; base: string },
): Promise<TrainablePolicy> {
  if (!dir) throw new ConfigError({ path: field, message: 'is required (a model directory)' });
  const opts = threads > 0 ? { threads } : {};
  if (lora && existsSync(join(dir, ADAPTER_CONFIG_FILE))) {
    if (!existsSync(join(lora.base, 'config.json'))) {
      throw new ConfigError({ path: field, message: `${lora.base} is not a model directory (no config.json)` });
    }
    return EmbeddedPolicy.load(lora.base, { ...opts, adapter: dir });
  }
  if (!existsSync(join(dir, 'config.json')))
    throw new ConfigError({ path: field, message: `${dir} is not a model directory (no config.json)` });
  return EmbeddedPolicy.load(dir, lora ? { ...opts, lora: lora.config } : opts);
}

/** The LoRA settings of a run config (undefined for full fine-tuning). */
export function configLora(config: TrainConfig): { config: LoraConfig; base: string } | undefined {
  if (config.model.loraRank <= 0) return undefined;
  const lora = parseLoraConfig(
    {
      rank: config.model.loraRank,
      alpha: config.model.loraAlpha,
      trainUnembed: config.model.loraUnembed,
      seed: config.run.seed >>> 0,
    },
    'model',
  );
  return { config: lora, base: config.model.path };
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
    throw new ConfigError({
      path: 'rollout.maxSequenceTokens',
      message: `${config.rollout.maxSequenceTokens} exceeds the model's context (max_position_embeddings ${max} in ${file})`,
    });
}

/**
 * A training client on a Tinker-compatible service. `dir` is where the run loads weights from: a
 * checkpoint directory holding tinker.json (resume: its training state is loaded into a new model)
 * or the model directory (a fresh model of model.baseModel).
 */
export async function loadTinkerPolicy(
  model: TrainConfig['model'],
  dir: string,
  options: { seed: number; loss?: Pick<TrainConfig['rl']['loss'], 'clipLow' | 'clipHigh'> },
): Promise<TinkerPolicy> {
  const m = model;
  const restoreDir = dir && existsSync(join(dir, CHECKPOINT_FILE)) ? dir : undefined;
  // a checkpoint directory as model.path (evaluation): its record names the base model
  const record = restoreDir !== undefined && resolve(restoreDir) === resolve(m.path) ? readCheckpointRecord(restoreDir) : null;
  return TinkerPolicy.open({
    baseUrl: m.baseUrl,
    apiKey: m.apiKey || undefined,
    baseModel: m.baseModel || (record ? record.baseModel : resolve(m.path)),
    tokenizerDir: m.tokenizerDir || m.path,
    lora: record
      ? record.lora
      : m.loraRank > 0
        ? { rank: m.loraRank, alpha: m.loraAlpha, seed: options.seed >>> 0, trainAttn: true, trainMlp: true, trainUnembed: m.loraUnembed }
        : null,
    lossMode: m.tinkerLoss,
    ppoClip: options.loss ? { low: options.loss.clipLow, high: options.loss.clipHigh } : undefined,
    restoreDir,
  });
}

/** The loader of the run's trainable policy (and of the KL reference policy) for a config. */
export function policyLoader(config: TrainConfig): PolicyLoader {
  if (config.model.kind === 'tinker') return (dir) => loadTinkerPolicy(config.model, dir, { seed: config.run.seed, loss: config.rl.loss });
  if (config.model.kind === 'endpoint') {
    return async () => {
      throw new ConfigError({ path: 'model.kind', message: 'endpoint policies sample only and cannot be trained; use embedded or tinker' });
    };
  }
  const lora = configLora(config);
  return (dir) => loadEmbeddedPolicy(dir, config.model.threads, 'model.path', lora);
}

/** The sampling policy for evaluation: embedded (model.path), an OpenAI-compatible endpoint, or a Tinker service. */
export async function openSamplingPolicy(model: TrainConfig['model'], seed = 1): Promise<SamplingPolicy> {
  if (model.kind === 'tinker') return loadTinkerPolicy(model, model.path, { seed });
  if (model.kind === 'endpoint') {
    if (!model.endpoint) throw new ConfigError({ path: 'model.endpoint', message: 'is required when model.kind is endpoint' });
    return new OpenAIPolicy({ baseUrl: model.endpoint, model: model.served || 'default', tokenizerDir: model.path || undefined });
  }
  return loadEmbeddedPolicy(model.path, model.threads);
}

export function worldQuestions(world: World, split: string): Question[] {
  if (split !== 'train' && split !== 'test')
    throw new ConfigError({ path: 'data.split', message: `a world has splits "train" and "test", not "${split}"` });
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

const asQuestions = (qs: readonly { id: string; question: string; answers: string[] }[]): Question[] =>
  qs.map((q) => ({ id: q.id, question: q.question, answers: q.answers }));

/** A world set's split (train, test = same-world held-out, unseen = worlds no training used), its worlds and the split's seeds. */
export function worldSetSplitQuestions(dir: string, split: string): { questions: Question[]; worlds: World[]; seeds: number[] } {
  if (split !== 'train' && split !== 'test' && split !== 'unseen')
    throw new ConfigError({ path: 'data.split', message: `a world set has splits "train", "test" and "unseen", not "${split}"` });
  const set = loadWorldSet(dir);
  const questions = asQuestions(worldSetQuestions(set, split as WorldSetSplit));
  return {
    questions,
    worlds: [...set.train, ...set.unseen],
    seeds: split === 'unseen' ? set.manifest.unseenSeeds : set.manifest.trainSeeds,
  };
}

/** Questions of a config's source; `unseen` holds a world set's unseen-world questions (evaluated next to the held-out split). */
export interface ConfigQuestions {
  train: Question[];
  eval: Question[];
  /** One world, the worlds of a world set (training and unseen), or none. */
  world: World | World[] | null;
  unseen?: { questions: Question[]; seeds: number[] };
}

/**
 * Training and held-out questions for a config (a world, a world set written by `matpo world
 * --seeds`, or a dataset split 90/10 by position).
 */
export async function configQuestions(config: TrainConfig): Promise<ConfigQuestions> {
  if (config.data.world && config.data.dataset)
    throw new ConfigError({ path: 'data.dataset', message: 'give data.world or data.dataset, not both' });
  if (config.data.world && isWorldSet(config.data.world)) {
    const set = loadWorldSet(config.data.world);
    const split = (name: string) => worldSetSplitQuestions(config.data.world, name).questions;
    return {
      train: split(config.data.trainSplit),
      eval: split(config.data.evalSplit),
      world: [...set.train, ...set.unseen],
      unseen:
        set.unseen.length > 0 && config.data.evalSplit !== 'unseen'
          ? { questions: split('unseen'), seeds: set.manifest.unseenSeeds }
          : undefined,
    };
  }
  if (config.data.world) {
    const world = loadWorld(config.data.world);
    return { train: worldQuestions(world, config.data.trainSplit), eval: worldQuestions(world, config.data.evalSplit), world };
  }
  if (config.data.dataset) {
    const all = await datasetQuestions(config.data.dataset, config.data.preset || undefined);
    const nEval = Math.max(1, Math.round(all.length * 0.1));
    return { train: all.slice(nEval), eval: all.slice(0, nEval), world: null };
  }
  throw new ConfigError({ path: 'data', message: 'set data.world (a world directory) or data.dataset (a QA file)' });
}

/** The workers' (or the single agent's) tools, and how to release them (MCP processes, connections). */
export interface ToolSet {
  tools: Tool[];
  /**
   * With many worlds: each world's search and open by seed. A question then runs with its own
   * world's tools (its id names the seed) plus `others`; `tools` lists the first world's.
   */
  worldTools?: Map<number, Tool[]>;
  /** The tools that are not a world's (index, web, MCP). */
  others: Tool[];
  close(): Promise<void>;
}

/**
 * The tools of `config.tools`: the world's search and open (with a world), a BM25 index built by
 * `matpo index`, web search and fetch, and every MCP server's tools. Tool names must be unique.
 */
export async function openTools(config: TrainConfig, world: World | readonly World[] | null): Promise<ToolSet> {
  const t = config.tools;
  const tools: Tool[] = [];
  const worlds: readonly World[] = world === null ? [] : Array.isArray(world) ? world : [world as World];
  const worldTools = t.world && worlds.length > 1 ? new Map(worlds.map((w) => [w.options.seed, worldSearchTools(w).tools])) : undefined;
  let worldToolCount = 0;
  const closers: (() => Promise<void>)[] = [];
  const add = (path: string, more: readonly Tool[]) => {
    for (const tool of more) {
      if (tools.some((x) => x.name === tool.name))
        throw new ConfigError({
          path,
          message:
            `tool "${tool.name}" is already given by another tool source; drop one of them` +
            `${path === 'tools.mcp' ? ' or set tools.mcpPrefix' : ''}`,
        });
      tools.push(tool);
    }
  };
  const close = async () => {
    await Promise.all(closers.map((c) => c()));
  };
  try {
    if (worlds.length > 0 && t.world) {
      const first = worldTools ? worldTools.get(worlds[0].options.seed)! : worldSearchTools(worlds[0]).tools;
      add('tools.world', first);
      worldToolCount = first.length;
    }
    if (t.index) {
      const { SearchIndex } = await import('../tools/search/search-index.ts');
      const { createSearchTools } = await import('../tools/search/tools.ts');
      add('tools.index', createSearchTools(SearchIndex.load(t.index)));
    }
    if (t.web) {
      const { createWebSearchTool } = await import('../tools/web-search.ts');
      const { createWebFetchTool } = await import('../tools/web-fetch.ts');
      add('tools.web', [createWebSearchTool() as Tool, createWebFetchTool() as Tool]);
    }
    if (t.mcp.length > 0) {
      const { connectMcpServers } = await import('../tools/mcp.ts');
      const servers = t.mcp.map((m): McpServerConfig =>
        m.command !== undefined
          ? { name: m.name, command: m.command, args: m.args, env: m.env, ...(m.cwd !== undefined ? { cwd: m.cwd } : {}) }
          : { name: m.name, url: m.url!, headers: m.headers },
      );
      const mcp = await connectMcpServers(servers, { prefixWithServerName: t.mcpPrefix });
      closers.push(() => mcp.close());
      add('tools.mcp', mcp.tools as Tool[]);
    }
  } catch (err) {
    await close();
    throw err;
  }
  if (config.rollout.mode === 'matpo' && tools.length === 0)
    throw new ConfigError({
      path: 'tools',
      message:
        'planner–worker rollouts need worker tools: set data.world, tools.index, tools.web or tools.mcp (or use rollout.mode single)',
    });
  return { tools, worldTools, others: tools.slice(worldToolCount), close };
}

/** The answer scorer of `rl.reward`: a registered rule (exact_match, f1, cover_em) or the LLM judge. */
export async function openScorer(config: TrainConfig): Promise<{ scorer: AnswerScorer; close(): Promise<void> }> {
  const r = config.rl.reward;
  if (r.scorer !== 'judge') return { scorer: registeredScorer(r.scorer), close: async () => {} };
  const j = r.judge;
  const judge: SamplingPolicy = j.endpoint
    ? new OpenAIPolicy({ baseUrl: j.endpoint, model: j.served || 'default', tokenizerDir: j.path || undefined })
    : await loadEmbeddedPolicy(j.path, config.model.threads, 'rl.reward.judge.path');
  const { createJudgeScorer } = await import('../rl/judge.ts');
  const scorer = createJudgeScorer(judge, { maxNewTokens: j.maxNewTokens });
  return {
    scorer: async (prediction, golds, question) => (await scorer({ prediction, answers: golds, question })).score,
    close: () => judge.close(),
  };
}

/**
 * A factory of rollout runners: binds the agents layer's rollout engine and the tools to a policy.
 * With `worldTools` (many worlds), each question runs with the tools of the world its id names
 * (`w<seed>-q<n>`) followed by `tools` (the tools that are not a world's).
 */
export function rolloutRunnerFactory(
  config: TrainConfig,
  tools: readonly Tool[],
  worldTools?: ReadonlyMap<number, readonly Tool[]>,
): (policy: SamplingPolicy) => RolloutRunner {
  const options = rolloutOptions(config);
  if (worldTools) {
    return (policy) => {
      const engines = new Map<number, ReturnType<typeof RolloutEngine.create>>();
      return async (request) => {
        const own = worldOfQuestion(worldTools, request.question.id);
        const seed = questionSeed(request.question.id)!;
        if (!engines.has(seed)) engines.set(seed, RolloutEngine.create(policy, [...own, ...tools], options));
        return (await engines.get(seed)!).run(request);
      };
    };
  }
  return (policy) => {
    const engine = RolloutEngine.create(policy, tools, options);
    return async (request) => (await engine).run(request);
  };
}

/**
 * Everything a run needs apart from the policy, built from one config: the questions (train and
 * held-out), the world if any, the tools, the scorer and a rollout-runner factory. Every command
 * (train, eval, run, the demo and experiment phases) and the library build through this.
 */
export interface RunComponents {
  train: Question[];
  eval: Question[];
  world: World | World[] | null;
  /** A world set's unseen-world questions and seeds (see configQuestions). */
  unseen?: { questions: Question[]; seeds: number[] };
  tools: Tool[];
  /** The tools that are not a world's (for runners over other worlds, see rolloutRunnerFactory). */
  otherTools: Tool[];
  scorer: AnswerScorer;
  makeRunner: (policy: SamplingPolicy) => RolloutRunner;
  close(): Promise<void>;
}

export async function buildRun(config: TrainConfig): Promise<RunComponents> {
  checkModelContext(config);
  const questions = await configQuestions(config);
  const toolSet = await openTools(config, questions.world);
  let scorer;
  try {
    scorer = await openScorer(config);
  } catch (err) {
    await toolSet.close();
    throw err;
  }
  return {
    ...questions,
    tools: toolSet.tools,
    otherTools: toolSet.others,
    scorer: scorer.scorer,
    makeRunner: toolSet.worldTools
      ? rolloutRunnerFactory(config, toolSet.others, toolSet.worldTools)
      : rolloutRunnerFactory(config, toolSet.tools),
    close: async () => {
      await Promise.all([toolSet.close(), scorer.close()]);
    },
  };
}
