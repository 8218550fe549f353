/**
 * Command-line flags are overrides of run-configuration keys (src/train/config.ts, the one home of
 * every default). A command lists the flags it takes as `flag → key`; the resolved config is
 * `--config FILE` (or the defaults), then `--set key=value`, then the flags. An invalid value is
 * reported under the flag the user typed, not the key it sets. `--help` prints both names.
 */
import { ConfigError } from '../core/errors.ts';
import { loadConfig, type TrainConfig } from '../train/config.ts';

export interface ConfigFlag {
  /** Flag name without dashes. */
  flag: string;
  /** Config key it sets ("rollout.maxTurns"). */
  key: string;
  /** A boolean flag sets `key` to `value` (default true); a string flag sets `key` to its argument. */
  boolean?: boolean;
  value?: string;
  /** Further assignments implied by the flag (e.g. --endpoint implies model.kind=endpoint). */
  implies?: string[];
}

/** Flags every command that opens a model shares. */
export const MODEL_FLAGS: ConfigFlag[] = [
  { flag: 'model', key: 'model.path' },
  { flag: 'endpoint', key: 'model.endpoint', implies: ['model.kind=endpoint'] },
  { flag: 'served', key: 'model.served' },
  { flag: 'tokenizer', key: 'model.path' },
  { flag: 'threads', key: 'model.threads' },
];

/** Flags of the question source and the workers' tools. */
export const DATA_FLAGS: ConfigFlag[] = [
  { flag: 'world', key: 'data.world' },
  { flag: 'dataset', key: 'data.dataset' },
  { flag: 'preset', key: 'data.preset' },
  { flag: 'split', key: 'data.evalSplit' },
  { flag: 'index', key: 'tools.index' },
  { flag: 'web', key: 'tools.web', boolean: true },
];

/** Flags of the rollout protocol and its limits. */
export const ROLLOUT_FLAGS: ConfigFlag[] = [
  { flag: 'mode', key: 'rollout.mode' },
  { flag: 'concurrency', key: 'rollout.concurrency' },
  { flag: 'max-turns', key: 'rollout.maxTurns' },
  { flag: 'max-new-tokens', key: 'rollout.maxNewTokens' },
  { flag: 'summary-tokens', key: 'rollout.workerSummaryTokens' },
  { flag: 'max-context', key: 'rollout.maxSequenceTokens' },
  { flag: 'overflow', key: 'rollout.overflow' },
  { flag: 'max-workers', key: 'rollout.maxWorkers' },
  { flag: 'tool-timeout-ms', key: 'rollout.toolTimeoutMs' },
  { flag: 'tool-chars', key: 'rollout.toolResultChars' },
  { flag: 'max-rollout-tokens', key: 'rollout.maxRolloutTokens' },
  { flag: 'format', key: 'rollout.toolCallFormat' },
  { flag: 'worker-result', key: 'rollout.workerResultRole' },
];

/** Flags of held-out evaluation (`matpo eval`, `matpo run`). */
export const EVAL_FLAGS: ConfigFlag[] = [
  { flag: 'repeats', key: 'run.evalRepeats' },
  { flag: 'questions', key: 'run.evalQuestions' },
  { flag: 'temperature', key: 'run.evalTemperature' },
  { flag: 'seed', key: 'run.seed' },
  { flag: 'scorer', key: 'rl.reward.scorer' },
  { flag: 'no-progress', key: 'run.progress', boolean: true, value: 'false' },
];

type ParseOptions = Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>;

/** parseArgs options for the flags, plus --config and --set. */
export function configFlagOptions(flags: readonly ConfigFlag[]): ParseOptions {
  const options: ParseOptions = { config: { type: 'string' }, set: { type: 'string', multiple: true } };
  for (const f of flags) options[f.flag] = { type: f.boolean ? 'boolean' : 'string' };
  return options;
}

/** The config file, `--set` overrides and flags, resolved and validated; errors name the flag typed. */
export function resolveConfig(
  values: Record<string, unknown>,
  flags: readonly ConfigFlag[],
  extraSets: readonly string[] = [],
): TrainConfig {
  const sets = [...((values.set as string[] | undefined) ?? []), ...extraSets];
  const flagOf = new Map<string, string>();
  for (const f of flags) {
    const v = values[f.flag];
    if (v === undefined || v === false) continue;
    sets.push(`${f.key}=${f.boolean ? (f.value ?? 'true') : String(v)}`);
    for (const implied of f.implies ?? []) sets.push(implied);
    flagOf.set(f.key, `--${f.flag}`);
  }
  try {
    return loadConfig(values.config as string | undefined, sets);
  } catch (err) {
    if (err instanceof ConfigError && flagOf.has(err.path)) {
      const message = err.message.slice(err.message.indexOf(`${err.path}: `) + err.path.length + 2);
      throw new ConfigError({ path: flagOf.get(err.path)!, message });
    }
    throw err;
  }
}

/** "--flag VALUE   config.key" lines for a command's --help. */
export function configFlagsHelp(flags: readonly ConfigFlag[]): string {
  const seen = new Set<string>();
  const rows = flags
    .filter((f) => !seen.has(f.flag) && seen.add(f.flag))
    .map((f) => [`--${f.flag}${f.boolean ? '' : ' V'}`, f.boolean ? `${f.key}=${f.value ?? 'true'}` : f.key]);
  const width = Math.max(...rows.map((r) => r[0].length));
  return [
    'flags are overrides of run-configuration keys (matpo train --help-config lists every key with its default):',
    '  --config FILE'.padEnd(width + 2) + '  a YAML run configuration',
    '  --set KEY=V'.padEnd(width + 2) + '  any key, e.g. --set rollout.maxTurns=6 (repeatable)',
    ...rows.map(([a, b]) => `  ${a.padEnd(width)}  ${b}`),
  ].join('\n');
}
