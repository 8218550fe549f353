/**
 * The training run configuration: one typed zod schema, grouped (model, data, rollout, rl, optim,
 * run), with a default and help text for every field. Loaded from YAML; unknown keys are rejected;
 * every error names the field path (and the file); `--set a.b=c` overrides are applied before
 * validation with values parsed as YAML scalars. The resolved config (all defaults filled in) is
 * what gets saved as `runs/<name>/config.yaml`.
 *
 * Method presets (`rl.preset`): each named method is a complete assignment of the RL algorithm's
 * fields (estimator, credit, dynamic sampling, every policy-loss field) as its paper defines it:
 *
 *   matpo    MATPO (Mo et al. 2025, arXiv 2510.04678; MATPO.md): grpo advantages, the planner's
 *            advantage broadcast to its workers, PPO with ε = 0.2/0.2 and dual clip c = 3, token-mean,
 *            no KL. These are also the schema defaults of the fields below.
 *   gspo     GSPO (Zheng et al. 2025, arXiv 2507.18071): sequence ratio s_i = exp(mean_t Δ_t),
 *            loss = mean over sequences of max(−s_i·A_i, −clip(s_i, 1−3e-4, 1+4e-4)·A_i), i.e.
 *            `seq-mean-token-mean` with `unit: sequence`; no dual clip, no KL.
 *   dapo     DAPO (Yu et al. 2025, arXiv 2503.14476): clip-higher ε_low 0.2 / ε_high 0.28, token-mean
 *            over the batch, dynamic sampling (drop groups with equal rewards, re-sample to refill
 *            the batch, at most `refillRounds` extra rounds), no KL, no dual clip.
 *   dr-grpo  Dr. GRPO (Liu et al. 2025, arXiv 2503.20783): A_i = R_i − mean R (no std),
 *            Σ_t ℓ_t / L per sequence with a constant L = the maximum generation length of a sequence
 *            (`rollout.maxSequenceTokens`, or `rollout.maxRolloutTokens` when smaller), mean over
 *            sequences; no dual clip, no KL.
 *   dr-mas   Dr. MAS (Feng et al. 2026, arXiv 2602.08847): GRPO with agent-wise normalisation (each
 *            role normalised with its own reward statistics per question); the loss as in matpo.
 *
 * Expansion happens before validation: a field the user sets (YAML or --set) wins over the preset's
 * value, and the resolved config shows the expanded values. A field that differs from its preset's
 * value makes a variant of the method, not the method: parseConfig reports each such field through
 * `warn` (one line naming the field; stderr by default). The matpo preset is the project's own method
 * and the base of its variants: overriding its fields is not reported.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import YAML from 'yaml';
import { ConfigError, UnknownNameError } from '../core/errors.ts';
import { estimatorRegistry } from '../rl/advantages.ts';
import { creditRegistry } from '../rl/credit.ts';
import { aggregationRegistry, policyLossRegistry } from '../rl/losses.ts';
import { scorers } from '../rl/scoring.ts';
import type { RolloutOptions } from '../agents/rollout.ts';
import type { RewardWeights } from '../rl/rewards.ts';
import type { PolicyLossConfig } from '../rl/losses.ts';

/** The RL algorithm fields a preset assigns (a subset of the `rl` section). */
export interface RlPresetFields {
  estimator: string;
  credit: string;
  dropZeroVarianceGroups: boolean;
  refillRounds: number;
  loss: {
    name: string;
    clipLow: number;
    clipHigh: number;
    dualClip: number | null;
    aggregation: string;
    unit: 'rollout' | 'sequence';
    /** 'max-generation': the constant L = the maximum generated tokens of one sequence (Dr. GRPO). */
    normTokens: number | null | 'max-generation';
    klCoef: number;
    entropyCoef: number;
  };
}

export const PRESET_NAMES = ['matpo', 'gspo', 'dapo', 'dr-grpo', 'dr-mas'] as const;
export type PresetName = (typeof PRESET_NAMES)[number];

const MATPO_FIELDS: RlPresetFields = {
  estimator: 'grpo',
  credit: 'matpo',
  dropZeroVarianceGroups: false,
  refillRounds: 0,
  loss: {
    name: 'ppo',
    clipLow: 0.2,
    clipHigh: 0.2,
    dualClip: 3,
    aggregation: 'token-mean',
    unit: 'rollout',
    normTokens: null,
    klCoef: 0,
    entropyCoef: 0,
  },
};

/** Every method preset: its paper and its fields. */
export const RL_PRESETS: Record<PresetName, { method: string; paper: string; fields: RlPresetFields }> = {
  matpo: { method: 'MATPO', paper: 'Mo et al. 2025, arXiv 2510.04678', fields: MATPO_FIELDS },
  gspo: {
    method: 'GSPO',
    paper: 'Zheng et al. 2025, arXiv 2507.18071',
    fields: {
      ...MATPO_FIELDS,
      loss: {
        ...MATPO_FIELDS.loss,
        name: 'gspo',
        clipLow: 3e-4,
        clipHigh: 4e-4,
        dualClip: null,
        aggregation: 'seq-mean-token-mean',
        unit: 'sequence',
      },
    },
  },
  dapo: {
    method: 'DAPO',
    paper: 'Yu et al. 2025, arXiv 2503.14476',
    fields: {
      ...MATPO_FIELDS,
      dropZeroVarianceGroups: true,
      refillRounds: 9,
      loss: { ...MATPO_FIELDS.loss, clipHigh: 0.28, dualClip: null },
    },
  },
  'dr-grpo': {
    method: 'Dr. GRPO',
    paper: 'Liu et al. 2025, arXiv 2503.20783',
    fields: {
      ...MATPO_FIELDS,
      estimator: 'dr-grpo',
      loss: {
        ...MATPO_FIELDS.loss,
        dualClip: null,
        aggregation: 'seq-mean-token-sum-norm',
        unit: 'sequence',
        normTokens: 'max-generation',
      },
    },
  },
  'dr-mas': { method: 'Dr. MAS', paper: 'Feng et al. 2026, arXiv 2602.08847', fields: { ...MATPO_FIELDS, credit: 'agent-wise' } },
};

const isMapping = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/**
 * Fill the fields of `rl.preset` (default matpo) that the raw config leaves unset, in a copy.
 * Dr. GRPO's `normTokens: max-generation` stays symbolic here and is resolved after validation.
 */
export function expandPreset(raw: unknown, file?: string): unknown {
  if (!isMapping(raw)) return raw;
  const rl = raw.rl ?? {};
  if (!isMapping(rl)) return raw;
  const name = rl.preset ?? 'matpo';
  if (typeof name !== 'string' || !(PRESET_NAMES as readonly string[]).includes(name))
    throw new ConfigError({
      path: 'rl.preset',
      message: `unknown preset ${JSON.stringify(name)}; available: ${PRESET_NAMES.join(', ')}`,
      file,
    });
  const { loss: presetLoss, ...presetTop } = RL_PRESETS[name as PresetName].fields;
  const loss = rl.loss ?? {};
  if (!isMapping(loss)) return raw;
  const filledLoss: Record<string, unknown> = { ...presetLoss, ...loss };
  if (filledLoss.normTokens === 'max-generation' && !('normTokens' in loss)) delete filledLoss.normTokens;
  return { ...raw, rl: { ...presetTop, ...rl, loss: filledLoss } };
}

/** The maximum number of tokens one sequence can generate (Dr. GRPO's constant L). */
export function maxGenerationTokens(rollout: { maxSequenceTokens: number; maxRolloutTokens: number | null }): number {
  return Math.min(rollout.maxSequenceTokens, rollout.maxRolloutTokens ?? Infinity);
}

/** The resolved config's departures from its preset, one line each (none for the matpo preset). */
export function presetDeviations(config: TrainConfig): string[] {
  const out: string[] = [];
  const preset = RL_PRESETS[config.rl.preset];
  if (config.rl.preset !== 'matpo') {
    const { loss: presetLoss, ...presetTop } = preset.fields;
    const differs = (path: string, have: unknown, want: unknown) => {
      if (want === 'max-generation') want = maxGenerationTokens(config.rollout);
      if (have !== want)
        out.push(
          `${path}: ${JSON.stringify(have)} instead of the ${config.rl.preset} preset's ${JSON.stringify(want)} makes a variant ` +
            `of ${preset.method}, not ${preset.method} as its paper (${preset.paper}) defines it`,
        );
    };
    for (const [k, v] of Object.entries(presetTop)) differs(`rl.${k}`, config.rl[k as keyof typeof presetTop], v);
    for (const [k, v] of Object.entries(presetLoss)) differs(`rl.loss.${k}`, config.rl.loss[k as keyof typeof presetLoss], v);
  }
  const loss = config.rl.loss;
  if (loss.name === 'gspo' && config.rl.preset !== 'gspo' && (loss.aggregation !== 'seq-mean-token-mean' || loss.unit !== 'sequence'))
    out.push(
      `rl.loss.name: gspo with aggregation ${loss.aggregation}, unit ${loss.unit} is a MATPO variant of GSPO; ` +
        'GSPO itself weights every sequence equally (rl.preset: gspo)',
    );
  return out;
}

const num = (def: number, help: string) => z.number().default(def).describe(help);
const pos = (def: number, help: string) => z.number().positive().default(def).describe(help);
const int = (def: number, help: string, min = 0) => z.number().int().min(min).default(def).describe(help);

export const ModelSchema = z
  .strictObject({
    path: z.string().default('').describe('model directory (Hugging Face layout) for the embedded policy'),
    kind: z
      .enum(['embedded', 'endpoint', 'tinker'])
      .default('embedded')
      .describe(
        'embedded: our engine in-process; endpoint: an OpenAI-compatible server (sampling only); ' +
          'tinker: a Tinker-compatible training service',
      ),
    endpoint: z.string().default('').describe('base URL of an OpenAI-compatible server (kind: endpoint)'),
    served: z.string().default('').describe('the model name sent to the endpoint (kind: endpoint)'),
    threads: int(0, 'compute threads for the embedded engine (0 = all cores)'),
    loraRank: int(0, 'LoRA rank: train only a LoRA adapter on the frozen model, checkpoints hold the PEFT adapter (0 = full fine-tuning)'),
    loraAlpha: pos(32, 'LoRA alpha: the adapter update is scaled by loraAlpha / loraRank'),
    loraUnembed: z
      .boolean()
      .default(false)
      .describe("LoRA on lm_head too (Tinker's train_unembed; vLLM refuses lm_head adapters, transformers loads them)"),
    baseUrl: z.string().default('').describe('root URL of the Tinker-compatible service (kind: tinker), e.g. http://127.0.0.1:8000'),
    baseModel: z
      .string()
      .default('')
      .describe("the service's name of the base model (kind: tinker; empty: the absolute model.path, as matpo serve --tinker names it)"),
    apiKey: z.string().default('').describe('X-API-Key of the service (kind: tinker; empty: env TINKER_API_KEY)'),
    tokenizerDir: z
      .string()
      .default('')
      .describe('local tokenizer directory (kind: tinker; empty: model.path); the service serves no tokenizer'),
    tinkerLoss: z
      .enum(['custom', 'ppo'])
      .default('custom')
      .describe(
        'kind tinker: custom = any rl.loss through forward + cross-entropy surrogate (2 passes); ' +
          "ppo = the service's ppo in one pass (rl.loss ppo, no dualClip/KL/entropy)",
      ),
  })
  .prefault({});

export const DataSchema = z
  .strictObject({
    world: z.string().default('').describe('directory of an offline research world (matpo world)'),
    dataset: z.string().default('').describe('a JSONL question file instead of a world ({id, problem|question, answer})'),
    trainSplit: z.string().default('train').describe('split used for training questions'),
    evalSplit: z.string().default('test').describe('held-out split used for periodic evaluation'),
    shuffle: z.boolean().default(true).describe('reshuffle the training questions every epoch (seeded)'),
    maxQuestions: int(0, 'use at most this many training questions (0 = all)'),
    preset: z
      .string()
      .default('')
      .describe('column mapping of a known QA set for data.dataset (frames, simpleqa, musique, …; empty: detect)'),
  })
  .prefault({});

/** An MCP server whose tools the workers (or the single agent) get: a command to spawn, or a URL. */
export const McpServerSchema = z
  .strictObject({
    name: z.string().min(1).describe("server name (MATPO's <server_name>)"),
    command: z.string().min(1).optional().describe('executable of a stdio server'),
    args: z.array(z.string()).default([]).describe('its arguments'),
    env: z.record(z.string(), z.string()).default({}).describe('extra environment variables'),
    cwd: z.string().optional().describe('its working directory'),
    url: z.string().url().optional().describe('streamable HTTP endpoint of a remote server'),
    headers: z.record(z.string(), z.string()).default({}).describe('HTTP headers sent to a remote server'),
  })
  .refine((m) => (m.command === undefined) !== (m.url === undefined), { message: 'give exactly one of command (stdio) or url (HTTP)' });

export const ToolsSchema = z
  .strictObject({
    world: z.boolean().default(true).describe("the world's search and open tools (with data.world)"),
    index: z.string().default('').describe('a BM25 index directory built by `matpo index` (search and open over your corpus)'),
    web: z.boolean().default(false).describe('web_search (Serper-compatible; key in SERPER_API_KEY) and web_fetch'),
    mcp: z.array(McpServerSchema).default([]).describe('MCP servers: [{name, command, args, env} | {name, url, headers}]'),
    mcpPrefix: z.boolean().default(false).describe('prefix each MCP tool name with "<server>__" (keeps several servers apart)'),
  })
  .prefault({});

export const SftSchema = z
  .strictObject({
    data: z.string().default('').describe("chat transcripts, JSONL {messages, tools?} (e.g. a world's demos-matpo.jsonl)"),
    out: z.string().default('').describe('directory the trained model is written to'),
    epochs: int(2, 'passes over the transcripts', 1),
    learningRate: pos(1e-4, 'peak learning rate'),
    schedule: z.enum(['cosine', 'linear', 'constant']).default('cosine').describe('learning-rate schedule after warm-up'),
    warmupFraction: z.number().min(0).lt(1).default(0.03).describe('fraction of the steps spent warming up linearly'),
    otherTokenWeight: z
      .number()
      .min(0)
      .default(0)
      .describe('loss weight of non-assistant tokens (system, user, tool output); 0 = assistant only'),
    batchTokens: int(8192, 'tokens per optimizer step', 1),
    microBatchTokens: int(4096, 'token budget of one forward/backward micro-batch', 1),
    evalFraction: z.number().min(0).lt(1).default(0.1).describe('transcripts held out for the held-out loss'),
    maxGradNorm: z.number().min(0).default(1).describe('clip the global gradient norm (0 = off)'),
    maxTokens: int(0, "drop transcripts longer than this (0 = the model's context)"),
    maxSteps: int(0, 'stop after this many optimizer steps (0 = all epochs)'),
    targetHeldOutLoss: z
      .number()
      .min(0)
      .default(0)
      .describe('while the held-out loss ends a cycle of the scheduled steps above this, run another cycle (0 = off)'),
    maxCycles: int(1, 'most cycles of the scheduled steps with targetHeldOutLoss', 1),
  })
  .prefault({});

export const RolloutSchema = z
  .strictObject({
    mode: z.enum(['matpo', 'single']).default('matpo').describe('planner–worker rollouts (matpo) or a single tool-using agent (single)'),
    groupSize: int(8, 'G: rollouts per question (one group)', 1),
    questionsPerStep: int(4, 'questions per training step (batch = questionsPerStep × groupSize rollouts)', 1),
    temperature: z.number().min(0).default(1).describe('sampling temperature (1.0 keeps the sampler on-policy)'),
    topP: z.number().gt(0).max(1).default(1).describe('nucleus sampling p'),
    maxTurns: int(20, 'generations per agent before the turn limit', 1),
    maxNewTokens: int(512, 'tokens per generation (one turn)', 1),
    maxSequenceTokens: int(4096, 'context limit of one agent sequence', 1),
    workerSummaryTokens: int(512, "token limit of a worker's final summary turn", 1),
    toolResultChars: int(20000, 'tool results are cut to this many characters', 1),
    toolTimeoutMs: int(30000, 'time limit of one tool call, in milliseconds', 1),
    maxWorkers: int(8, 'workers a planner rollout may spawn'),
    maxRolloutTokens: z
      .number()
      .int()
      .min(1)
      .nullable()
      .default(null)
      .describe('tokens sampled per rollout, planner and workers together (null: no limit); equal budgets for matpo and single'),
    overflow: z
      .enum(['drop-middle', 'stop'])
      .default('drop-middle')
      .describe('context overflow: drop middle turns (the reference) or stop the agent'),
    toolCallFormat: z
      .enum(['native', 'hermes', 'mcp'])
      .default('native')
      .describe("tool-call format: the chat template's own, Hermes <tool_call>, or MCP XML"),
    workerResultRole: z
      .enum(['user', 'tool'])
      .default('user')
      .describe("how the planner receives a worker's report (user message as in the reference, or tool message)"),
    concurrency: int(8, 'rollouts (and their tool calls) in flight at once', 1),
  })
  .prefault({});

export const RewardSchema = z
  .strictObject({
    scorer: z
      .string()
      .default('exact_match')
      .describe('answer scorer: exact_match (normalised), f1, cover_em, or judge (an LLM grader, rl.reward.judge)'),
    judge: z
      .strictObject({
        endpoint: z.string().default('').describe('OpenAI-compatible server of the judge model'),
        served: z.string().default('').describe('model name sent to the judge endpoint'),
        path: z.string().default('').describe('a local model directory as judge (embedded engine), when no endpoint'),
        maxNewTokens: int(16, "tokens of the judge's reply", 1),
      })
      .prefault({})
      .describe('the LLM judge (SimpleQA grader: A correct, B incorrect, C not attempted)'),
    accuracy: num(0.9, 'weight of accuracy'),
    formatScale: num(0.5, 'outer factor on the MATPO format term'),
    formatPlanner: num(0.1, 'weight of fmt(planner) inside the MATPO format term'),
    formatWorkers: num(0.1, 'weight of mean_j fmt(worker_j) inside the MATPO format term'),
    formatSingle: num(0.1, 'weight of fmt(agent) in the single-agent reward'),
    noWorkerFormat: z.number().min(0).max(1).default(1).describe('mean_j fmt(worker_j) for a rollout with no workers'),
  })
  .prefault({});

const M = MATPO_FIELDS;

export const LossSchema = z
  .strictObject({
    name: z
      .string()
      .default(M.loss.name)
      .describe('policy loss: ppo (token ratio, dual clip) or gspo (sequence ratio; GSPO itself needs seq-mean-token-mean, unit sequence)'),
    clipLow: z.number().min(0).max(1).default(M.loss.clipLow).describe('ε_low: ratio clipped below at 1 − ε_low'),
    clipHigh: z.number().min(0).default(M.loss.clipHigh).describe('ε_high: ratio clipped above at 1 + ε_high (DAPO clip-higher: 0.28)'),
    dualClip: z
      .number()
      .nullable()
      .default(M.loss.dualClip)
      .describe('dual-clip constant c > 1 for A < 0 (null disables); ppo only, gspo ignores it'),
    aggregation: z
      .string()
      .default(M.loss.aggregation)
      .describe('token-mean | seq-mean-token-sum | seq-mean-token-mean | seq-mean-token-sum-norm'),
    unit: z
      .enum(['rollout', 'sequence'])
      .default(M.loss.unit)
      .describe('unit of the seq-mean modes: a planner rollout with its workers (MATPO) or one sequence (GSPO, Dr. GRPO)'),
    normTokens: z
      .number()
      .positive()
      .nullable()
      .default(null)
      .describe('L of seq-mean-token-sum-norm (null: max unit tokens in the mini-batch; dr-grpo preset: the max generation length)'),
    klCoef: z.number().min(0).default(M.loss.klCoef).describe('β of a KL term to the frozen initial policy (0 = none)'),
    klEstimator: z.enum(['k1', 'k3']).default('k3').describe('KL estimator'),
    entropyCoef: z.number().min(0).default(M.loss.entropyCoef).describe('entropy bonus coefficient'),
  })
  .prefault({});

export const RlSchema = z
  .strictObject({
    preset: z
      .enum(PRESET_NAMES)
      .default('matpo')
      .describe('method preset filling the fields below that are not set: matpo, gspo, dapo, dr-grpo, dr-mas (listed after the fields)'),
    reward: RewardSchema,
    estimator: z.string().default(M.estimator).describe('advantage estimator: grpo, dr-grpo, rloo'),
    eps: pos(1e-6, 'ε added to the std in grpo'),
    credit: z.string().default(M.credit).describe('credit assignment: matpo, agent-wise (Dr. MAS), per-role-groups'),
    dropZeroVarianceGroups: z
      .boolean()
      .default(M.dropZeroVarianceGroups)
      .describe('DAPO dynamic sampling: drop groups whose rewards are all equal (needs rollout.groupSize ≥ 2)'),
    refillRounds: int(M.refillRounds, 'DAPO dynamic sampling: extra generation rounds refilling the dropped groups (0: the batch shrinks)'),
    loss: LossSchema,
    recomputeOldLogprobs: z
      .boolean()
      .default(false)
      .describe("recompute old logprobs with the trainer instead of using the sampler's (the gap is logged either way when available)"),
  })
  .prefault({});

export const OptimSchema = z
  .strictObject({
    learningRate: pos(1e-5, 'AdamW learning rate'),
    beta1: z.number().min(0).lt(1).default(0.9).describe('AdamW β1'),
    beta2: z.number().min(0).lt(1).default(0.999).describe('AdamW β2'),
    eps: pos(1e-8, 'AdamW ε'),
    weightDecay: z.number().min(0).default(0).describe('AdamW weight decay'),
    maxGradNorm: z.number().min(0).default(1).describe('clip the global gradient norm (0 = off)'),
    miniBatches: int(1, 'optimizer steps per training step (the batch is split into this many mini-batches)', 1),
    epochs: int(1, 'PPO epochs over the batch', 1),
    microBatchTokens: int(8192, 'token budget of one forward/backward micro-batch', 1),
  })
  .prefault({});

export const RunSchema = z
  .strictObject({
    name: z.string().default('run').describe('run name: the run directory is <dir>/<name>'),
    dir: z.string().default('runs').describe('parent directory of run directories'),
    seed: int(1, 'seed of every random stream (data order, sampling)'),
    steps: int(100, 'training steps', 1),
    evalEvery: int(10, 'evaluate every N steps (0 = never; also before step 1 and at the end)'),
    evalQuestions: int(50, 'held-out questions per evaluation (0 = whole split)'),
    evalRepeats: int(1, 'rollouts per held-out question', 1),
    evalTemperature: z
      .number()
      .min(0)
      .nullable()
      .default(null)
      .describe('sampling temperature of held-out evaluation (0 = greedy; null = rollout.temperature)'),
    checkpointEvery: int(10, 'checkpoint every N steps (and at the end)', 1),
    keepCheckpoints: int(3, 'complete checkpoints kept on disk (0 = all)'),
    saveRollouts: z.boolean().default(true).describe("write each step's rollouts to rollouts/step-NNNNNN.jsonl"),
    progress: z.boolean().default(true).describe('progress bars on the terminal'),
  })
  .prefault({});

export const TrainConfigSchema = z.strictObject({
  model: ModelSchema,
  data: DataSchema,
  rollout: RolloutSchema,
  tools: ToolsSchema,
  rl: RlSchema,
  optim: OptimSchema,
  sft: SftSchema,
  run: RunSchema,
});

export type TrainConfig = z.infer<typeof TrainConfigSchema>;

/** The agents layer's rollout options from a config. */
export function rolloutOptions(config: TrainConfig): RolloutOptions {
  const r = config.rollout;
  return {
    limits: {
      maxTurns: r.maxTurns,
      maxNewTokens: r.maxNewTokens,
      workerSummaryTokens: r.workerSummaryTokens,
      maxSequenceTokens: r.maxSequenceTokens,
      overflow: r.overflow,
      maxWorkers: r.maxWorkers,
      toolTimeoutMs: r.toolTimeoutMs,
      toolResultChars: r.toolResultChars,
      maxRolloutTokens: r.maxRolloutTokens,
    },
    format: r.toolCallFormat,
    workerResultRole: r.workerResultRole,
    temperature: r.temperature,
    topP: r.topP,
  };
}

/** The reward weights of `rl.reward` (the scorer's settings aside). */
export function rewardWeights(config: TrainConfig): RewardWeights {
  const { scorer: _scorer, judge: _judge, ...w } = config.rl.reward;
  return w;
}

/** The policy loss of `rl.loss`. */
export function lossConfig(config: TrainConfig): PolicyLossConfig {
  return { ...config.rl.loss };
}

/** Sampling temperature of held-out evaluation: run.evalTemperature, or the rollouts' when unset. */
export function evalTemperature(config: TrainConfig): number {
  return config.run.evalTemperature ?? config.rollout.temperature;
}
export type TrainConfigInput = z.input<typeof TrainConfigSchema>;

function issuePath(path: readonly PropertyKey[]): string {
  return path.map(String).join('.');
}

export interface ParseOptions {
  /** Receives one line per departure from the preset (presetDeviations); stderr by default. */
  warn?: (message: string) => void;
}

const warnOnStderr = (message: string) => process.stderr.write(`warning: ${message}\n`);

/**
 * What a Tinker-compatible service cannot do, refused before a run starts (model.kind: tinker):
 * it returns no entropies (so no entropy bonus), and its one-pass `ppo` matches our loss only for
 * PPO without dual clip or KL term, with ε_low, ε_high > 0 (see src/tinker/policy.ts).
 */
function checkTinker(c: TrainConfig, file?: string): void {
  const m = c.model;
  const refuse = (path: string, message: string) => new ConfigError({ path, message, file });
  if (!m.baseUrl) throw refuse('model.baseUrl', 'is required when model.kind is tinker (the service root URL)');
  try {
    new URL(m.baseUrl);
  } catch {
    throw refuse('model.baseUrl', `not a valid URL: ${m.baseUrl}`);
  }
  if (!m.baseModel && !m.path)
    throw refuse('model.baseModel', 'is required when model.kind is tinker (or model.path: the directory the server was started with)');
  if (!m.tokenizerDir && !m.path)
    throw refuse('model.tokenizerDir', 'a Tinker service serves no tokenizer: set it (or model.path) to a local tokenizer directory');
  const l = c.rl.loss;
  if (l.entropyCoef !== 0)
    throw refuse('rl.loss.entropyCoef', 'must be 0 with model.kind tinker: the service returns no per-token entropies');
  if (m.tinkerLoss === 'ppo') {
    const why = (path: string, what: string) =>
      refuse(path, `${what} with model.tinkerLoss ppo (the service's ppo has no such term); use model.tinkerLoss custom`);
    if (l.name !== 'ppo') throw why('rl.loss.name', `must be ppo, not ${l.name},`);
    if (l.dualClip !== null && l.dualClip !== 0) throw why('rl.loss.dualClip', 'must be null');
    if (l.klCoef !== 0) throw why('rl.loss.klCoef', 'must be 0');
    if (!(l.clipLow > 0)) throw why('rl.loss.clipLow', 'must be > 0');
    if (!(l.clipHigh > 0)) throw why('rl.loss.clipHigh', 'must be > 0');
  }
}

/**
 * Validate a raw config object after expanding its preset; the first problem becomes a ConfigError
 * naming its field path. Departures from the preset go to `options.warn`.
 */
export function parseConfig(raw: unknown, file?: string, options: ParseOptions = {}): TrainConfig {
  const result = TrainConfigSchema.safeParse(expandPreset(raw ?? {}, file));
  if (result.success) {
    const c = result.data;
    const names: [string, { get(name: string): unknown }, string][] = [
      ['rl.estimator', estimatorRegistry, c.rl.estimator],
      ['rl.credit', creditRegistry, c.rl.credit],
      ['rl.loss.name', policyLossRegistry, c.rl.loss.name],
      ['rl.loss.aggregation', aggregationRegistry, c.rl.loss.aggregation],
    ];
    for (const [path, registry, name] of names) {
      try {
        registry.get(name);
      } catch (err) {
        if (err instanceof UnknownNameError) throw new ConfigError({ path, message: err.message, file });
        throw err;
      }
    }
    if (c.rl.reward.scorer !== 'judge') {
      try {
        scorers.get(c.rl.reward.scorer);
      } catch (err) {
        if (err instanceof UnknownNameError) throw new ConfigError({ path: 'rl.reward.scorer', message: `${err.message}, judge`, file });
        throw err;
      }
    } else if (!c.rl.reward.judge.endpoint && !c.rl.reward.judge.path) {
      throw new ConfigError({
        path: 'rl.reward.judge',
        message:
          'the judge scorer needs rl.reward.judge.endpoint (an OpenAI-compatible server) or rl.reward.judge.path (a model directory)',
        file,
      });
    }
    if (c.rl.loss.dualClip !== null && c.rl.loss.dualClip !== 0 && !(c.rl.loss.dualClip > 1))
      throw new ConfigError({ path: 'rl.loss.dualClip', message: `must be > 1 (or null to disable), got ${c.rl.loss.dualClip}`, file });
    if (c.rl.dropZeroVarianceGroups && c.rollout.groupSize < 2)
      throw new ConfigError({
        path: 'rl.dropZeroVarianceGroups',
        message:
          'needs rollout.groupSize ≥ 2: a group of one always has zero reward variance, so every group would be dropped ' +
          'and no step would update',
        file,
      });
    if (c.rl.refillRounds > 0 && !c.rl.dropZeroVarianceGroups)
      throw new ConfigError({
        path: 'rl.refillRounds',
        message: 'refills the groups dropped by rl.dropZeroVarianceGroups, which is false',
        file,
      });
    // Dr. GRPO's constant L, when the preset supplies it: the longest generation one sequence can have.
    if (RL_PRESETS[c.rl.preset].fields.loss.normTokens === 'max-generation' && isMapping(raw) && !hasLossField(raw, 'normTokens'))
      c.rl.loss.normTokens = maxGenerationTokens(c.rollout);
    if (c.model.kind === 'tinker') checkTinker(c, file);
    for (const line of presetDeviations(c)) (options.warn ?? warnOnStderr)(line);
    return c;
  }
  const issue = result.error.issues[0];
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0];
    throw new ConfigError({
      path: issuePath([...issue.path, key]),
      message: `unknown key${issue.keys.length > 1 ? ` (also: ${issue.keys.slice(1).join(', ')})` : ''}`,
      file,
    });
  }
  throw new ConfigError({ path: issuePath(issue.path) || '(root)', message: issue.message, file });
}

function hasLossField(raw: Record<string, unknown>, key: string): boolean {
  return isMapping(raw.rl) && isMapping(raw.rl.loss) && key in raw.rl.loss;
}

/** Set `a.b.c` in a plain object tree, creating objects on the way; the value is parsed as a YAML scalar. */
export function applyOverride(raw: Record<string, unknown>, assignment: string): void {
  const eq = assignment.indexOf('=');
  if (eq <= 0) throw new ConfigError({ path: '--set', message: `expected key.path=value, got "${assignment}"` });
  const path = assignment.slice(0, eq).trim();
  const text = assignment.slice(eq + 1);
  let value: unknown;
  try {
    value = text === '' ? '' : YAML.parse(text);
  } catch (err) {
    throw new ConfigError({ path, message: `--set value "${text}" is not a YAML scalar: ${(err as Error).message}` });
  }
  const keys = path.split('.');
  let node: Record<string, unknown> = raw;
  keys.slice(0, -1).forEach((k, i) => {
    const next = node[k];
    if (next === undefined || next === null) node[k] = {};
    else if (typeof next !== 'object' || Array.isArray(next))
      throw new ConfigError({ path: keys.slice(0, i + 1).join('.'), message: 'is not a section; cannot set a field inside it' });
    node = node[k] as Record<string, unknown>;
  });
  node[keys[keys.length - 1]] = value;
}

/** Read a YAML file (or start empty), apply overrides, validate. */
export function loadConfig(file: string | undefined, overrides: readonly string[] = [], options: ParseOptions = {}): TrainConfig {
  let raw: unknown = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError({ path: '', file, message: `cannot read: ${(err as Error).message}` });
    }
    try {
      raw = YAML.parse(text) ?? {};
    } catch (err) {
      throw new ConfigError({ path: '', file, message: `invalid YAML: ${(err as Error).message.split('\n')[0]}` });
    }
    if (typeof raw !== 'object' || Array.isArray(raw))
      throw new ConfigError({ path: '(root)', file, message: 'expected a mapping of sections' });
  }
  for (const o of overrides) applyOverride(raw as Record<string, unknown>, o);
  return parseConfig(raw, file, options);
}

/** The resolved config as YAML (every field, defaults included). */
export function configToYaml(config: TrainConfig): string {
  return YAML.stringify(config);
}

/** Each preset's fields that differ from the matpo preset, as "rl.loss.name=gspo, ...". */
function presetSummary(name: PresetName): string {
  const { loss, ...top } = RL_PRESETS[name].fields;
  const { loss: mLoss, ...mTop } = MATPO_FIELDS;
  const diffs: string[] = [];
  for (const [k, v] of Object.entries(top)) if (v !== mTop[k as keyof typeof mTop]) diffs.push(`rl.${k}=${v}`);
  for (const [k, v] of Object.entries(loss)) {
    if (v === mLoss[k as keyof typeof mLoss]) continue;
    diffs.push(v === 'max-generation' ? `rl.loss.${k}=min(rollout.maxSequenceTokens, rollout.maxRolloutTokens)` : `rl.loss.${k}=${v}`);
  }
  return diffs.length ? diffs.join(', ') : 'the defaults above';
}

/**
 * Help text for every field: "section.field  (default)  description", then the method presets
 * (what each sets besides the matpo defaults).
 */
export function configHelp(): string {
  const lines: string[] = [];
  const def = parseConfig({}, undefined, { warn: () => {} });
  const walk = (schema: z.ZodType, prefix: string): void => {
    const s = schema as unknown as {
      def: { type: string; innerType?: z.ZodType; shape?: Record<string, z.ZodType> };
      description?: string;
    };
    if (s.def.type === 'default' || s.def.type === 'prefault' || s.def.type === 'nullable') return walk(s.def.innerType!, prefix);
    if (s.def.type === 'object') {
      for (const [k, v] of Object.entries(s.def.shape!)) {
        const inner = v as unknown as { def: { type: string }; description?: string };
        if (inner.def.type === 'prefault' || (inner.def.type === 'object' && !inner.description)) walk(v, prefix ? `${prefix}.${k}` : k);
        else {
          const value = (prefix ? `${prefix}.${k}` : k).split('.').reduce<unknown>((o, key) => (o as Record<string, unknown>)[key], def);
          lines.push(`${(prefix ? `${prefix}.${k}` : k).padEnd(34)} ${JSON.stringify(value).padEnd(12)} ${inner.description ?? ''}`);
        }
      }
    }
  };
  walk(TrainConfigSchema, '');
  lines.push('', 'rl.preset values  each expands into these fields unless the config sets them; a field set otherwise makes a variant');
  for (const name of PRESET_NAMES) {
    const p = RL_PRESETS[name];
    lines.push(`  ${name.padEnd(9)} ${`${p.method} (${p.paper})`.padEnd(46)} ${presetSummary(name)}`);
  }
  lines.push('  variants  e.g. gspo with rl.loss.unit=rollout: a MATPO variant of GSPO (a planner rollout and its workers share a weight)');
  return lines.join('\n');
}
